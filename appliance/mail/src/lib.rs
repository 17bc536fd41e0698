//! Outgoing mail of the box: alerts, digests and the activation password, sent through
//! the partner's SMTP relay.
//!
//! The box never delivers mail itself (no MX lookups, no queue): it hands each message to
//! one configured relay and reports at once whether the relay took it, so the console can
//! tell the user what is wrong with the settings. The password never appears in a log, an
//! error or a `Debug` output.

mod error;
mod message;
mod send;
mod settings;

pub use error::MailError;
pub use message::Message;
pub use send::{SEND_TIMEOUT, send, send_with_timeout};
pub use settings::{MAX_RECIPIENTS, RelaySettings, Security};
