//! Sending through a real SMTP conversation on 127.0.0.1, and each way it can fail.

mod support;

use std::time::{Duration, Instant};

use abri_mail::{MailError, Message, RelaySettings, Security, send, send_with_timeout};
use support::{Behaviour, start};

fn settings(port: u16) -> RelaySettings {
    RelaySettings {
        host: "127.0.0.1".into(),
        port,
        security: Security::None,
        user: None,
        password: None,
        sender: "backup-abcd@partner.example".into(),
        recipients: vec!["alerts@partner.example".into()],
    }
}

fn message() -> Message {
    Message {
        to: vec![
            "alerts@partner.example".into(),
            "it@customer.example".into(),
        ],
        subject: "Abri: test mail".into(),
        body: "Hello from the box.\n.leading dot line\nBye.\n".into(),
    }
}

#[tokio::test]
async fn delivers_envelope_headers_and_body() {
    let (address, server) = start(Behaviour::default()).await;
    send(&settings(address.port()), &message()).await.unwrap();
    let session = server.await.unwrap();

    assert!(session.ehlo.is_some());
    assert_eq!(
        session.mail_from.as_deref(),
        Some("backup-abcd@partner.example")
    );
    assert_eq!(
        session.rcpt_to,
        ["alerts@partner.example", "it@customer.example"]
    );
    let data = session.data.expect("DATA received");
    assert!(data.contains("Subject: Abri: test mail\r\n"), "{data}");
    assert!(
        data.contains("From: backup-abcd@partner.example\r\n"),
        "{data}"
    );
    assert!(data.contains("Date: "), "{data}");
    assert!(data.contains("Message-ID: <"), "{data}");
    assert!(
        data.contains("\r\n\r\nHello from the box.\r\n.leading dot line\r\nBye.\r\n"),
        "{data}"
    );
    assert!(session.quit, "the connection is closed with QUIT");
}

#[tokio::test]
async fn utf8_subject_and_body_survive() {
    let (address, server) = start(Behaviour::default()).await;
    let french = Message {
        subject: "Sauvegarde échouée".into(),
        body: "La sauvegarde a échoué.\n".into(),
        ..message()
    };
    send(&settings(address.port()), &french).await.unwrap();
    let data = server.await.unwrap().data.unwrap();
    assert!(data.contains("charset=utf-8"), "{data}");
    // Non-ASCII goes out encoded (RFC 2047 words, quoted-printable or base64), never raw.
    assert!(data.is_ascii(), "{data}");
}

#[tokio::test]
async fn sends_credentials_when_set() {
    let behaviour = Behaviour {
        auth_reply: Some("235 2.7.0 Authentication successful"),
        ..Behaviour::default()
    };
    let (address, server) = start(behaviour).await;
    let with_login = RelaySettings {
        user: Some("box".into()),
        password: Some("pw-123456".into()),
        ..settings(address.port())
    };
    send(&with_login, &message()).await.unwrap();
    let session = server.await.unwrap();
    assert_eq!(session.auth.len(), 1);
    assert!(
        session.auth[0].starts_with("AUTH PLAIN "),
        "{:?}",
        session.auth
    );
    assert!(session.data.is_some());
}

#[tokio::test]
async fn refused_credentials_are_an_auth_error_without_the_password() {
    let behaviour = Behaviour {
        auth_reply: Some("535 5.7.8 Authentication credentials invalid"),
        ..Behaviour::default()
    };
    let (address, server) = start(behaviour).await;
    let with_login = RelaySettings {
        user: Some("box".into()),
        password: Some("pw-123456".into()),
        ..settings(address.port())
    };
    let err = send(&with_login, &message()).await.unwrap_err();
    assert!(matches!(err, MailError::AuthRefused { .. }), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("535"), "{text}");
    assert!(text.contains("credentials invalid"), "{text}");
    assert!(!format!("{err:?}").contains("pw-123456"));
    assert!(
        server.await.unwrap().data.is_none(),
        "nothing sent after a refusal"
    );
}

#[tokio::test]
async fn a_rejected_recipient_quotes_the_relay() {
    let behaviour = Behaviour {
        rcpt_reply: Some("550 5.1.1 <alerts@partner.example>: Recipient address rejected"),
        ..Behaviour::default()
    };
    let (address, server) = start(behaviour).await;
    let err = send(&settings(address.port()), &message())
        .await
        .unwrap_err();
    match &err {
        MailError::Rejected { code, response, .. } => {
            assert_eq!(*code, Some(550));
            assert!(
                response.contains("Recipient address rejected"),
                "{response}"
            );
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(err.to_string().contains("127.0.0.1:"), "{err}");
    let _ = server.await;
}

#[tokio::test]
async fn connection_refused_fails_fast() {
    // A port that was just free: bind, note it, release it.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let started = Instant::now();
    let err = send(&settings(port), &message()).await.unwrap_err();
    assert!(matches!(err, MailError::Connection { .. }), "{err:?}");
    assert!(
        err.to_string()
            .contains("cannot reach the mail relay 127.0.0.1:"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn a_silent_relay_times_out() {
    let (address, server) = start(Behaviour {
        silent: true,
        ..Behaviour::default()
    })
    .await;
    let started = Instant::now();
    let err = send_with_timeout(
        &settings(address.port()),
        &message(),
        Duration::from_secs(1),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, MailError::Timeout { .. }), "{err:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
    server.abort();
}

#[tokio::test]
async fn starttls_is_required_when_asked_for() {
    let (address, server) = start(Behaviour::default()).await;
    let starttls = RelaySettings {
        security: Security::Starttls,
        ..settings(address.port())
    };
    let err = send(&starttls, &message()).await.unwrap_err();
    assert!(matches!(err, MailError::Tls { .. }), "{err:?}");
    assert!(
        server.await.unwrap().mail_from.is_none(),
        "nothing sent in clear"
    );
}

#[tokio::test]
async fn implicit_tls_to_a_plain_server_is_a_tls_error() {
    let (address, server) = start(Behaviour::default()).await;
    let tls = RelaySettings {
        security: Security::Tls,
        ..settings(address.port())
    };
    let err = send_with_timeout(&tls, &message(), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(err, MailError::Tls { .. }), "{err:?}");
    server.abort();
}

#[tokio::test]
async fn invalid_settings_are_refused_before_connecting() {
    let bad = RelaySettings {
        sender: "nobody".into(),
        ..settings(25)
    };
    let err = send(&bad, &message()).await.unwrap_err();
    assert_eq!(
        err,
        MailError::InvalidSettings(
            "sender: 'nobody' is not a mail address (Missing domain or user)".into()
        )
    );
}

#[test]
fn the_send_future_can_run_on_any_task() {
    // axum handlers and tokio::spawn need Send futures.
    fn sendable<F: std::future::Future + Send>(_: F) {}
    let settings = settings(25);
    let message = message();
    sendable(send(&settings, &message));
}
