//! Why a mail could not be sent, in words a partner admin can act on.

/// A mail that was not handed to the relay. Each variant names the relay (`host:port`)
/// and, when the relay answered, quotes its response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MailError {
    /// The settings do not validate; the message names the field.
    #[error("invalid mail settings: {0}")]
    InvalidSettings(String),

    /// A recipient of the message is not a mail address.
    #[error("invalid recipient address '{address}': {reason}")]
    InvalidAddress { address: String, reason: String },

    /// The message has no recipient, or too many.
    #[error("invalid message: {0}")]
    InvalidMessage(String),

    /// The relay could not be reached (name not found, refused, reset, unreachable).
    #[error("cannot reach the mail relay {relay}: {detail}")]
    Connection { relay: String, detail: String },

    /// TLS failed: no STARTTLS offered, certificate not trusted, handshake error.
    #[error("TLS with the mail relay {relay} failed: {detail}")]
    Tls { relay: String, detail: String },

    /// The relay refused the credentials, or requires some it was not given.
    #[error("the mail relay {relay} refused authentication: {response}")]
    AuthRefused { relay: String, response: String },

    /// The relay answered a command with an error (sender or recipient refused, ...).
    #[error("the mail relay {relay} rejected the message: {response}")]
    Rejected {
        relay: String,
        /// The SMTP reply code, such as 550.
        code: Option<u16>,
        response: String,
    },

    /// The relay did not answer in time.
    #[error("the mail relay {relay} did not answer within {seconds} s")]
    Timeout { relay: String, seconds: u64 },

    /// The relay answered something that is not SMTP, or the client failed otherwise.
    #[error("mail relay {relay}: {detail}")]
    Protocol { relay: String, detail: String },
}
