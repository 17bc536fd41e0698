//! A small SMTP server for the tests: real SMTP (RFC 5321 commands, dot-stuffing) over
//! TCP on 127.0.0.1, recording what the client said. One connection per server; every
//! read is bounded in time so a confused client cannot hang a test.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// How the server answers.
#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// Advertise AUTH PLAIN LOGIN and answer AUTH with this line (None: no AUTH offered).
    pub auth_reply: Option<&'static str>,
    /// Answer every RCPT TO with this line instead of 250.
    pub rcpt_reply: Option<&'static str>,
    /// Accept the connection but never say anything.
    pub silent: bool,
}

/// What one client session sent.
#[derive(Debug, Default)]
pub struct Session {
    pub ehlo: Option<String>,
    pub auth: Vec<String>,
    pub mail_from: Option<String>,
    pub rcpt_to: Vec<String>,
    /// The message as received, dot-stuffing undone, lines joined with CRLF.
    pub data: Option<String>,
    pub quit: bool,
}

/// Starts a server on an ephemeral loopback port; the handle yields the session.
pub async fn start(behaviour: Behaviour) -> (SocketAddr, JoinHandle<Session>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let handle = tokio::spawn(async move {
        let accepted = tokio::time::timeout(READ_TIMEOUT, listener.accept()).await;
        let Ok(Ok((stream, _))) = accepted else {
            return Session::default();
        };
        if behaviour.silent {
            tokio::time::sleep(READ_TIMEOUT).await;
            return Session::default();
        }
        serve(stream, &behaviour).await
    });
    (address, handle)
}

async fn serve(stream: tokio::net::TcpStream, behaviour: &Behaviour) -> Session {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read);
    let mut session = Session::default();
    reply(&mut write, "220 test.invalid ESMTP ready\r\n").await;
    while let Some(line) = read_line(&mut lines).await {
        let upper = line.to_ascii_uppercase();
        if upper.starts_with("EHLO ") {
            session.ehlo = Some(line[5..].to_string());
            let auth = if behaviour.auth_reply.is_some() {
                "250-AUTH PLAIN LOGIN\r\n"
            } else {
                ""
            };
            let text = format!("250-test.invalid\r\n{auth}250-8BITMIME\r\n250 SIZE 1000000\r\n");
            reply(&mut write, &text).await;
        } else if upper.starts_with("AUTH ") {
            session.auth.push(line.clone());
            let answer = behaviour.auth_reply.unwrap_or("503 5.5.1 AUTH not offered");
            reply(&mut write, &format!("{answer}\r\n")).await;
        } else if upper.starts_with("MAIL FROM:") {
            session.mail_from = Some(angle_address(&line[10..]));
            reply(&mut write, "250 2.1.0 Ok\r\n").await;
        } else if upper.starts_with("RCPT TO:") {
            session.rcpt_to.push(angle_address(&line[8..]));
            let answer = behaviour.rcpt_reply.unwrap_or("250 2.1.5 Ok");
            reply(&mut write, &format!("{answer}\r\n")).await;
        } else if upper == "DATA" {
            reply(&mut write, "354 End data with <CR><LF>.<CR><LF>\r\n").await;
            session.data = read_data(&mut lines).await;
            reply(&mut write, "250 2.0.0 Ok: queued as TEST1\r\n").await;
        } else if upper == "QUIT" {
            session.quit = true;
            reply(&mut write, "221 2.0.0 Bye\r\n").await;
            break;
        } else if upper == "RSET" || upper == "NOOP" {
            reply(&mut write, "250 2.0.0 Ok\r\n").await;
        } else {
            reply(&mut write, "502 5.5.2 Error: command not recognized\r\n").await;
        }
    }
    session
}

/// Writes one reply; a client that went away is seen at the next read.
async fn reply(write: &mut tokio::net::tcp::OwnedWriteHalf, text: &str) {
    let _ = write.write_all(text.as_bytes()).await;
}

/// One CRLF-terminated line without its terminator; None at EOF, on error or timeout.
async fn read_line<R: AsyncBufReadExt + Unpin>(reader: &mut R) -> Option<String> {
    let mut bytes = Vec::new();
    match tokio::time::timeout(READ_TIMEOUT, reader.read_until(b'\n', &mut bytes)).await {
        Ok(Ok(n)) if n > 0 => {
            let text = String::from_utf8_lossy(&bytes);
            Some(text.trim_end_matches(['\r', '\n']).to_string())
        }
        _ => None,
    }
}

async fn read_data<R: AsyncBufReadExt + Unpin>(reader: &mut R) -> Option<String> {
    let mut lines = Vec::new();
    loop {
        let line = read_line(reader).await?;
        if line == "." {
            return Some(lines.join("\r\n"));
        }
        // RFC 5321 4.5.2: a leading dot was doubled by the client.
        lines.push(line.strip_prefix('.').map_or(line.clone(), str::to_string));
    }
}

/// `<a@b.fr> SIZE=123` -> `a@b.fr`.
fn angle_address(text: &str) -> String {
    let text = text.trim();
    match (text.find('<'), text.find('>')) {
        (Some(open), Some(close)) if open < close => text[open + 1..close].to_string(),
        _ => text.to_string(),
    }
}
