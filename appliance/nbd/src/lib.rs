//! abri-nbd: a userspace NBD client, so the agent can image VM disks served by `qemu-nbd`
//! without the kernel's nbd module. Blocking std I/O, no async runtime: the agent calls it
//! from worker threads, one [`Client`] per thread.
//!
//! # What it speaks
//!
//! - Addresses as NBD URIs ([`Address::parse`]): `nbd+unix:///EXPORT?socket=/path/to.sock`
//!   and `nbd://HOST[:PORT]/EXPORT` (port 10809 by default). Anything else — TLS schemes
//!   and parameters, user info, unknown parameters — is refused with the reason.
//! - Fixed newstyle handshake: `NBD_OPT_STRUCTURED_REPLY`, `NBD_OPT_SET_META_CONTEXT` for
//!   the contexts asked for (`base:allocation`, `qemu:dirty-bitmap:NAME`), then
//!   `NBD_OPT_GO` asking for the block size constraints (falling back to
//!   `NBD_OPT_EXPORT_NAME` if the server lacks `NBD_OPT_GO`). The export's size, flags
//!   and minimum/preferred/maximum block sizes are reported ([`Client::size`],
//!   [`Client::block_sizes`]).
//! - Transmission: `NBD_CMD_READ` ([`Client::read_at`]) with simple or structured
//!   replies (data chunks, hole chunks read as zeros, error chunks become
//!   [`NbdError::Command`]); `NBD_CMD_BLOCK_STATUS` ([`Client::block_status`],
//!   [`Client::allocated_ranges`], [`Client::dirty_ranges`]); `NBD_CMD_DISC`
//!   ([`Client::disconnect`], or best effort on drop).
//!
//! # Limits
//!
//! - Read-only: no write, trim, flush or cache commands.
//! - No TLS (`NBD_OPT_STARTTLS`): the server is `qemu-nbd` on a Unix socket on the same
//!   machine, where TLS would protect nothing. `nbds://` URIs are refused.
//! - No extended headers (64-bit lengths): read requests are at most 32 MiB (or the
//!   server's maximum) and block status requests at most 4 GiB, asked again as needed.
//! - Reads are split into pieces with up to 4 requests in flight on the one connection;
//!   more parallelism means more connections (qemu-nbd `--shared=N`).
//!
//! # Trust
//!
//! Every length and offset from the server is checked before use: chunks must lie inside
//! their request and not overlap, a successful read reply must cover every byte, payloads
//! are bounded (64 KiB for option replies and error chunks, 8 MiB for block status) and
//! handshake and reply loops are bounded. A malformed reply gives
//! [`NbdError::Protocol`] — never a panic or an unbounded allocation — and the
//! connection is then unusable ([`NbdError::Broken`]). An error the server reports for a
//! command ([`NbdError::Command`]) leaves the connection usable.
//!
//! # Example
//!
//! ```no_run
//! use abri_nbd::{Address, BASE_ALLOCATION, Client, dirty_bitmap_context};
//!
//! # fn main() -> Result<(), abri_nbd::NbdError> {
//! let address = Address::parse("nbd+unix:///disk?socket=/run/abri/vm1.sock")?;
//! let bitmap = dirty_bitmap_context("abri-0");
//! let mut client = Client::connect(&address, &[BASE_ALLOCATION, &bitmap])?;
//! let mut buf = vec![0u8; 4 << 20];
//! for range in client.dirty_ranges("abri-0")? {
//!     let mut at = range.start;
//!     while at < range.end {
//!         let n = (range.end - at).min(buf.len() as u64) as usize;
//!         client.read_at(at, &mut buf[..n])?;
//!         at += n as u64;
//!     }
//! }
//! client.disconnect()?;
//! # Ok(())
//! # }
//! ```

mod address;
mod client;
mod conn;
mod coverage;
mod error;
mod handshake;
mod wire;

#[cfg(test)]
mod tests;

pub use address::{Address, AddressError, AddressProblem, DEFAULT_PORT, Endpoint};
pub use client::{
    BASE_ALLOCATION, Client, ConnectOptions, Extent, STATE_DIRTY, STATE_HOLE, STATE_ZERO,
    dirty_bitmap_context,
};
pub use error::NbdError;
pub use wire::BlockSizes;
