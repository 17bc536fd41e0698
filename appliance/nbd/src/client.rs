//! One connection to one export: opening it, what the server said about it, and a clean
//! goodbye. Reads live in `client/read.rs`, block status in `client/status.rs`.

mod read;
mod status;

use std::time::Duration;

use crate::address::Address;
use crate::conn::Wire;
use crate::error::NbdError;
use crate::handshake;
use crate::wire::{BlockSizes, CMD_DISC, TFLAG_CAN_MULTI_CONN, TFLAG_READ_ONLY, request};

pub use status::{
    BASE_ALLOCATION, Extent, STATE_DIRTY, STATE_HOLE, STATE_ZERO, dirty_bitmap_context,
};

/// How to open a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Metadata contexts to ask for (`base:allocation`, `qemu:dirty-bitmap:NAME`, ...).
    /// Contexts the server does not grant are simply absent: see [`Client::has_context`].
    pub meta_contexts: Vec<String>,
    /// Limit on every socket read and write (and on a TCP connect); `None` waits forever.
    pub io_timeout: Option<Duration>,
}

impl ConnectOptions {
    /// The default timeout: generous, since one request may read 32 MiB from a slow disk.
    pub const DEFAULT_IO_TIMEOUT: Duration = Duration::from_secs(120);
}

impl Default for ConnectOptions {
    fn default() -> ConnectOptions {
        ConnectOptions {
            meta_contexts: Vec::new(),
            io_timeout: Some(ConnectOptions::DEFAULT_IO_TIMEOUT),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Ready,
    /// A failure left unread bytes or an unknown server state behind.
    Broken,
    /// `NBD_CMD_DISC` was sent.
    Closed,
}

/// A connection to one NBD export in the transmission phase. Calls block; one call at a
/// time (`&mut self`). Open one `Client` per worker thread (qemu-nbd needs `--shared=N`
/// to accept N clients).
pub struct Client {
    wire: Wire,
    address: Address,
    size: u64,
    flags: u16,
    block_sizes: BlockSizes,
    structured: bool,
    contexts: Vec<(u32, String)>,
    next_handle: u64,
    state: State,
}

impl Client {
    /// Connects with the default options plus the given metadata contexts.
    pub fn connect(address: &Address, meta_contexts: &[&str]) -> Result<Client, NbdError> {
        let options = ConnectOptions {
            meta_contexts: meta_contexts.iter().map(|c| c.to_string()).collect(),
            ..ConnectOptions::default()
        };
        Client::connect_with(address, &options)
    }

    /// Connects, negotiates and opens the export.
    pub fn connect_with(address: &Address, options: &ConnectOptions) -> Result<Client, NbdError> {
        let wire = Wire::open(address, options.io_timeout)?;
        Client::start(wire, address.clone(), &options.meta_contexts)
    }

    /// Runs the handshake on an open stream.
    pub(crate) fn start(
        mut wire: Wire,
        address: Address,
        contexts: &[String],
    ) -> Result<Client, NbdError> {
        let negotiated = match handshake::negotiate(&mut wire, &address.export, contexts) {
            Ok(negotiated) => negotiated,
            Err(err) => {
                // Still in option haggling after a refusal: say goodbye properly.
                if matches!(
                    err,
                    NbdError::Refused { .. } | NbdError::InvalidRequest { .. }
                ) {
                    handshake::abort(&mut wire);
                }
                return Err(err);
            }
        };
        // Offsets are signed 64-bit in every real server; refusing larger sizes keeps all
        // offset arithmetic below far from overflow.
        if negotiated.size > i64::MAX as u64 {
            return Err(wire.protocol(format!(
                "export size {} is beyond 2^63 - 1",
                negotiated.size
            )));
        }
        Ok(Client {
            wire,
            address,
            size: negotiated.size,
            flags: negotiated.flags,
            block_sizes: negotiated.block_sizes,
            structured: negotiated.structured,
            contexts: negotiated.contexts,
            next_handle: 1,
            state: State::Ready,
        })
    }

    /// Opens a client over any stream (tests use scripted in-memory servers).
    #[cfg(test)]
    pub(crate) fn over(
        stream: Box<dyn crate::conn::Transport>,
        contexts: &[&str],
    ) -> Result<Client, NbdError> {
        let address = Address::unix("/test.sock", "disk");
        let contexts: Vec<String> = contexts.iter().map(|c| c.to_string()).collect();
        Client::start(Wire::new(stream, address.to_string()), address, &contexts)
    }

    /// The export this client reads.
    pub fn address(&self) -> &Address {
        &self.address
    }

    /// The export's size in bytes.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The server's block size constraints (the protocol's defaults, minimum 1, preferred
    /// 4096, maximum unstated, if it gave none).
    pub fn block_sizes(&self) -> BlockSizes {
        self.block_sizes
    }

    /// The largest single read request this client sends: 32 MiB or the server's
    /// maximum, whichever is smaller, rounded down to the minimum block size.
    pub fn max_request(&self) -> u32 {
        let min = self.block_sizes.minimum;
        let cap = self.block_sizes.maximum.min(read::MAX_READ_REQUEST);
        // maximum >= minimum (checked in the handshake) and 32 MiB is a multiple of any
        // minimum (a power of two up to 64 KiB), so this is at least `min`.
        cap - cap % min
    }

    /// Whether the server says the export is read-only.
    pub fn is_read_only(&self) -> bool {
        self.flags & TFLAG_READ_ONLY != 0
    }

    /// Whether the server allows several connections to the export to be used together.
    pub fn can_multi_conn(&self) -> bool {
        self.flags & TFLAG_CAN_MULTI_CONN != 0
    }

    /// Whether structured replies were negotiated (needed for block status and holes).
    pub fn structured_replies(&self) -> bool {
        self.structured
    }

    /// Whether the server granted this metadata context.
    pub fn has_context(&self, name: &str) -> bool {
        self.contexts.iter().any(|(_, n)| n == name)
    }

    /// The metadata contexts the server granted.
    pub fn contexts(&self) -> impl Iterator<Item = &str> {
        self.contexts.iter().map(|(_, n)| n.as_str())
    }

    /// Ends the session with `NBD_CMD_DISC` and waits (within the I/O timeout) for the
    /// server to close the socket. A connection broken by an earlier error is just closed.
    pub fn disconnect(mut self) -> Result<(), NbdError> {
        if self.state != State::Ready {
            return Ok(());
        }
        self.state = State::Closed;
        let handle = self.take_handle();
        self.wire.write_all(
            &request(CMD_DISC, handle, 0, 0),
            "sending the disconnect request",
        )?;
        self.wire.wait_closed()
    }

    /// Runs `op` unless the connection is already broken, and marks it broken when `op`
    /// fails in a way that leaves the stream out of step.
    fn guarded<T>(
        &mut self,
        op: impl FnOnce(&mut Client) -> Result<T, NbdError>,
    ) -> Result<T, NbdError> {
        if self.state != State::Ready {
            return Err(NbdError::Broken {
                target: self.wire.target.clone(),
            });
        }
        let result = op(self);
        if let Err(err) = &result {
            let usable = matches!(
                err,
                NbdError::Command { .. }
                    | NbdError::OutOfRange { .. }
                    | NbdError::InvalidRequest { .. }
                    | NbdError::ContextNotNegotiated { .. }
            );
            if !usable {
                self.state = State::Broken;
            }
        }
        result
    }

    fn take_handle(&mut self) -> u64 {
        let handle = self.next_handle;
        self.next_handle = self.next_handle.wrapping_add(1);
        handle
    }

    fn send_request(&mut self, command: u16, offset: u64, length: u32) -> Result<u64, NbdError> {
        let handle = self.take_handle();
        self.wire.write_all(
            &request(command, handle, offset, length),
            "sending a request",
        )?;
        Ok(handle)
    }

    /// Checks that `offset..offset + length` lies within the export.
    fn check_range(&self, offset: u64, length: u64) -> Result<(), NbdError> {
        match offset.checked_add(length) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(NbdError::OutOfRange {
                target: self.wire.target.clone(),
                offset,
                length,
                size: self.size,
            }),
        }
    }
}

impl Drop for Client {
    /// Best-effort `NBD_CMD_DISC`, so the server does not log an abrupt hang-up.
    fn drop(&mut self) {
        if self.state == State::Ready {
            self.state = State::Closed;
            let handle = self.take_handle();
            let _ = self.wire.write_all(
                &request(CMD_DISC, handle, 0, 0),
                "sending the disconnect request",
            );
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("address", &self.wire.target)
            .field("size", &self.size)
            .field("block_sizes", &self.block_sizes)
            .field("structured", &self.structured)
            .field("contexts", &self.contexts)
            .field("state", &self.state)
            .finish()
    }
}
