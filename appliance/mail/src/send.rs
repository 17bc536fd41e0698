//! Handing a message to the relay, and turning lettre's errors into [`MailError`]s.

use std::time::Duration;

use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::{self, AsyncSmtpTransport};
use lettre::{AsyncTransport, Tokio1Executor};

use crate::{MailError, Message, RelaySettings, Security};

/// How long [`send`] waits for the relay in all: a dead relay must not hang the console.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(20);

/// Closing the connection (QUIT) after sending gets this much more time.
const QUIT_TIMEOUT: Duration = Duration::from_secs(2);

/// SMTP replies that mean "who you are was not accepted" (RFC 4954).
const AUTH_REPLY_CODES: &[u16] = &[530, 534, 535, 538];

/// Sends `message` through the relay of `settings`, waiting at most [`SEND_TIMEOUT`].
pub async fn send(settings: &RelaySettings, message: &Message) -> Result<(), MailError> {
    send_with_timeout(settings, message, SEND_TIMEOUT).await
}

/// [`send`] with another time limit (for tests, or a caller with its own deadline).
pub async fn send_with_timeout(
    settings: &RelaySettings,
    message: &Message,
    timeout: Duration,
) -> Result<(), MailError> {
    settings.validate().map_err(MailError::InvalidSettings)?;
    let email = message.build(&settings.sender)?;
    let transport =
        transport(settings, timeout).map_err(|err| classify(&err, settings, timeout))?;
    let outcome = tokio::time::timeout(timeout, transport.send(email)).await;
    // Say QUIT now rather than leave a pooled connection idling on the relay.
    let _ = tokio::time::timeout(QUIT_TIMEOUT, transport.shutdown()).await;
    match outcome {
        Ok(Ok(_)) => {
            tracing::info!(
                "mail '{}' sent to {} recipient(s) through {}",
                message.subject,
                message.to.len(),
                settings.relay_name()
            );
            Ok(())
        }
        Ok(Err(err)) => Err(classify(&err, settings, timeout)),
        Err(_elapsed) => Err(timed_out(settings, timeout)),
    }
}

fn transport(
    settings: &RelaySettings,
    timeout: Duration,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, smtp::Error> {
    let builder = match settings.security {
        Security::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&settings.host),
        // Required, not opportunistic: a relay that drops STARTTLS fails the send.
        Security::Starttls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&settings.host)?,
        Security::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&settings.host)?,
    };
    let mut builder = builder.port(settings.port).timeout(Some(timeout));
    if let Some((user, password)) = settings.credentials() {
        builder = builder.credentials(Credentials::new(user.to_string(), password.to_string()));
    }
    Ok(builder.build())
}

/// Sorts a lettre error by what the user must fix.
fn classify(err: &smtp::Error, settings: &RelaySettings, timeout: Duration) -> MailError {
    let relay = settings.relay_name();
    let detail = redact(source_text(err), settings);
    if err.is_timeout() {
        return timed_out(settings, timeout);
    }
    if err.is_tls() {
        return MailError::Tls { relay, detail };
    }
    if let Some(code) = err.status() {
        let code = u16::from(code);
        let response = format!("{code} {detail}");
        let auth =
            AUTH_REPLY_CODES.contains(&code) || (code == 454 && settings.credentials().is_some());
        return if auth {
            MailError::AuthRefused { relay, response }
        } else {
            MailError::Rejected {
                relay,
                code: Some(code),
                response,
            }
        };
    }
    if err.is_client() {
        // lettre reports these two refusals only as text.
        if detail.contains("STARTTLS") {
            return MailError::Tls { relay, detail };
        }
        if detail.contains("authentication mechanism") {
            return MailError::AuthRefused {
                relay,
                response: "it offers no login method Abri supports (PLAIN, LOGIN)".into(),
            };
        }
        return MailError::Protocol { relay, detail };
    }
    if err.is_response() {
        return MailError::Protocol { relay, detail };
    }
    if settings.security != Security::None && is_tls_failure(err) {
        return MailError::Tls { relay, detail };
    }
    MailError::Connection { relay, detail }
}

fn timed_out(settings: &RelaySettings, timeout: Duration) -> MailError {
    MailError::Timeout {
        relay: settings.relay_name(),
        seconds: timeout.as_secs().max(1),
    }
}

/// lettre files TLS handshake failures under "connection"; rustls reports them through
/// an `io::Error` of kind InvalidData (bad certificate, not TLS at all), which a plain TCP
/// failure never is.
fn is_tls_failure(err: &smtp::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(inner) = source {
        if let Some(io) = inner.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::InvalidData;
        }
        source = inner.source();
    }
    false
}

/// The innermost useful text: the relay's response, or the OS/TLS error, without
/// lettre's category prefix.
fn source_text(err: &smtp::Error) -> String {
    // lettre wraps its own errors (a TLS upgrade failure is a connection error holding a
    // connection error): unwrap those before taking the text.
    let mut current = err;
    while let Some(inner) = std::error::Error::source(current) {
        match inner.downcast_ref::<smtp::Error>() {
            Some(wrapped) => current = wrapped,
            None => return inner.to_string(),
        }
    }
    current.to_string()
}

/// A relay may echo what it was sent; the password must not reach a log through it.
fn redact(text: String, settings: &RelaySettings) -> String {
    match settings.password.as_deref() {
        Some(password) if !password.is_empty() => text.replace(password, "<redacted>"),
        _ => text,
    }
}
