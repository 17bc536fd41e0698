//! The errors of this crate. Each names the export (its URI) it failed on, so a message in a
//! job log says which disk and which server without more context.

use std::io;

use crate::address::AddressError;

/// Something went wrong talking to an NBD server.
#[derive(Debug, thiserror::Error)]
pub enum NbdError {
    #[error(transparent)]
    Address(#[from] AddressError),

    /// The socket could not be opened (no server there, permission denied, ...).
    #[error("{target}: cannot connect: {source}")]
    Connect {
        target: String,
        #[source]
        source: io::Error,
    },

    /// Reading or writing the socket failed (including a timeout).
    #[error("{target}: I/O error while {during}: {source}")]
    Io {
        target: String,
        during: &'static str,
        #[source]
        source: io::Error,
    },

    /// The server closed the connection while more was expected from it.
    #[error("{target}: the server closed the connection while {during}")]
    ServerClosed {
        target: String,
        during: &'static str,
    },

    /// The server sent something the protocol forbids; the connection is dropped.
    #[error("{target}: protocol violation by the server: {detail}")]
    Protocol { target: String, detail: String },

    /// The server does not speak what this client needs (oldstyle handshake, ...).
    #[error("{target}: unsupported server: {detail}")]
    Unsupported { target: String, detail: String },

    /// The server refused to open the export.
    #[error(
        "{target}: the server refused {option}: {reply}{}",
        message_suffix(message)
    )]
    Refused {
        target: String,
        option: &'static str,
        /// The reply type, as named by the protocol (`NBD_REP_ERR_UNKNOWN`, ...).
        reply: String,
        message: String,
    },

    /// The server answered a command with an error; the connection stays usable.
    #[error(
        "{target}: {command} of {length} bytes at offset {offset} failed: {}{}",
        errno_name(*errno),
        message_suffix(message)
    )]
    Command {
        target: String,
        command: &'static str,
        offset: u64,
        length: u64,
        errno: u32,
        message: String,
    },

    /// A request beyond the end of the export.
    #[error(
        "{target}: {length} bytes at offset {offset} go past the end of the export ({size} bytes)"
    )]
    OutOfRange {
        target: String,
        offset: u64,
        length: u64,
        size: u64,
    },

    /// The caller asked for something the protocol cannot express.
    #[error("{target}: invalid request: {detail}")]
    InvalidRequest { target: String, detail: String },

    /// Block status was asked for a metadata context that the server did not grant.
    #[error(
        "{target}: metadata context '{context}' was not negotiated (ask for it when connecting; for a dirty bitmap, export it with qemu-nbd -B NAME)"
    )]
    ContextNotNegotiated { target: String, context: String },

    /// An earlier failure left the connection in an unknown state.
    #[error("{target}: the connection is unusable after an earlier error; reconnect")]
    Broken { target: String },
}

impl NbdError {
    /// True when the server answered a command with an error but the connection is
    /// still usable (the next call may succeed).
    pub fn is_command_error(&self) -> bool {
        matches!(self, NbdError::Command { .. })
    }
}

fn message_suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(" ({message})")
    }
}

/// The protocol's error values, by name.
pub(crate) fn errno_name(errno: u32) -> String {
    match errno {
        1 => "EPERM (operation not permitted)".into(),
        5 => "EIO (input/output error)".into(),
        12 => "ENOMEM (cannot allocate memory)".into(),
        22 => "EINVAL (invalid argument)".into(),
        28 => "ENOSPC (no space left on device)".into(),
        75 => "EOVERFLOW (value too large)".into(),
        95 => "ENOTSUP (operation not supported)".into(),
        108 => "ESHUTDOWN (server is shutting down)".into(),
        other => format!("error {other}"),
    }
}

/// Server-provided text, made safe for a log line: lossy UTF-8, control characters
/// replaced, at most 512 characters.
pub(crate) fn server_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(512)
        .collect()
}
