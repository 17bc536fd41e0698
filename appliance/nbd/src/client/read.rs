//! `NBD_CMD_READ`: a read is split into pieces no larger than the server accepts, up to
//! [`IN_FLIGHT`] of them outstanding at once; replies may come back in any order and as
//! any mix of simple replies, data chunks, hole chunks (zeros) and error chunks.

use super::Client;
use crate::coverage::Coverage;
use crate::error::{NbdError, server_text};
use crate::wire::*;

/// The protocol's advice for the largest read a client should send without knowing better.
pub(crate) const MAX_READ_REQUEST: u32 = 32 * 1024 * 1024;
/// Read requests outstanding at once, so the server works while the client copies.
const IN_FLIGHT: usize = 4;
/// Pieces are not cut smaller than this (unless the server's maximum is smaller).
const MIN_PIECE: usize = 256 * 1024;
const DURING: &str = "reading a read reply";

/// One outstanding read request.
struct Pending {
    handle: u64,
    /// Export offset of the request.
    offset: u64,
    /// Where its bytes go in the caller's buffer.
    start: usize,
    len: usize,
    coverage: Coverage,
    /// The first error chunk the server sent for it.
    error: Option<NbdError>,
}

impl Client {
    /// Reads `buf.len()` bytes at `offset`. Holes come back as zeros. Fails if the range
    /// passes the end of the export, or if the server reports an error for any part (then
    /// `buf` holds unspecified bytes, and the connection stays usable). Requests are
    /// aligned to the server's minimum block size: unaligned edges are read whole into a
    /// small scratch buffer.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), NbdError> {
        self.guarded(|client| client.read_checked(offset, buf))
    }

    fn read_checked(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), NbdError> {
        let len = buf.len() as u64;
        self.check_range(offset, len)?;
        if buf.is_empty() {
            return Ok(());
        }
        // check_range proved offset + len <= size <= i64::MAX, so nothing below overflows.
        let end = offset + len;
        let min = u64::from(self.block_sizes.minimum);
        if offset.is_multiple_of(min) && end.is_multiple_of(min) {
            return self.read_aligned(offset, buf);
        }
        let head_end = offset.next_multiple_of(min).min(end);
        let tail_start = (end - end % min).max(head_end);
        let (head, rest) = buf.split_at_mut((head_end - offset) as usize);
        let (middle, tail) = rest.split_at_mut((tail_start - head_end) as usize);
        if !head.is_empty() {
            self.read_within_block(offset, head)?;
        }
        if !middle.is_empty() {
            self.read_aligned(head_end, middle)?;
        }
        if !tail.is_empty() {
            self.read_within_block(tail_start, tail)?;
        }
        Ok(())
    }

    /// Reads a range that lies inside one minimum-size block by reading that block.
    fn read_within_block(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), NbdError> {
        let min = u64::from(self.block_sizes.minimum);
        let start = offset - offset % min;
        // A final block may be short when the export size is not a multiple of it.
        let stop = (start + min).min(self.size);
        // At most 64 KiB (the largest minimum block size).
        let mut scratch = vec![0u8; (stop - start) as usize];
        self.read_aligned(start, &mut scratch)?;
        let skip = (offset - start) as usize;
        buf.copy_from_slice(&scratch[skip..skip + buf.len()]);
        Ok(())
    }

    /// Size of each request for a read of `len` bytes: about a quarter of it so that
    /// [`IN_FLIGHT`] requests overlap, rounded to the preferred block size, at least
    /// [`MIN_PIECE`], at most [`Client::max_request`].
    fn piece_size(&self, len: usize) -> usize {
        let max = self.max_request() as usize;
        let preferred = self.block_sizes.preferred as usize;
        let want = len.div_ceil(IN_FLIGHT).next_multiple_of(preferred);
        let min = self.block_sizes.minimum as usize;
        let piece = want.max(MIN_PIECE).min(max);
        // Every term is a multiple of the minimum (powers of two at least as large, or
        // max_request, which is rounded to it), so this only guards the invariant.
        piece - piece % min
    }

    fn read_aligned(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), NbdError> {
        let piece = self.piece_size(buf.len());
        let mut next = 0usize;
        let mut pending: Vec<Pending> = Vec::with_capacity(IN_FLIGHT);
        let mut failure: Option<NbdError> = None;
        loop {
            // After a command error, stop sending but collect what is in flight so the
            // connection stays in step.
            while failure.is_none() && pending.len() < IN_FLIGHT && next < buf.len() {
                let len = piece.min(buf.len() - next);
                let at = offset + next as u64;
                // len <= max_request, a u32.
                let handle = self.send_request(CMD_READ, at, len as u32)?;
                pending.push(Pending {
                    handle,
                    offset: at,
                    start: next,
                    len,
                    coverage: Coverage::default(),
                    error: None,
                });
                next += len;
            }
            if pending.is_empty() {
                break;
            }
            self.receive_read_reply(&mut pending, buf, &mut failure)?;
        }
        match failure {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }

    /// Reads one reply message (a simple reply or one chunk) and applies it.
    fn receive_read_reply(
        &mut self,
        pending: &mut Vec<Pending>,
        buf: &mut [u8],
        failure: &mut Option<NbdError>,
    ) -> Result<(), NbdError> {
        let magic = self.wire.read_u32(DURING)?;
        match magic {
            SIMPLE_REPLY_MAGIC => {
                let errno = self.wire.read_u32(DURING)?;
                let handle = self.wire.read_u64(DURING)?;
                let index = self.find_pending(pending, handle)?;
                let p = pending.swap_remove(index);
                if errno != 0 {
                    failure.get_or_insert(self.command_error(&p, errno, Vec::new()));
                } else if self.structured {
                    return Err(self.wire.protocol(
                        "simple reply to a read after structured replies were negotiated",
                    ));
                } else {
                    self.wire
                        .read_exact(&mut buf[p.start..p.start + p.len], DURING)?;
                }
                Ok(())
            }
            STRUCTURED_REPLY_MAGIC if self.structured => {
                let header = ChunkHeader::parse(&self.wire.read_array(DURING)?);
                let index = self.find_pending(pending, header.handle)?;
                self.apply_chunk(&header, &mut pending[index], buf)?;
                if header.done() {
                    let p = pending.swap_remove(index);
                    if let Some(err) = p.error {
                        failure.get_or_insert(err);
                    } else if p.coverage.total() != p.len as u64 {
                        return Err(self.wire.protocol(format!(
                            "read reply at offset {} ended after describing {} of {} bytes",
                            p.offset,
                            p.coverage.total(),
                            p.len
                        )));
                    }
                }
                Ok(())
            }
            other => Err(self
                .wire
                .protocol(format!("unexpected reply magic {other:#x} during a read"))),
        }
    }

    fn find_pending(&self, pending: &[Pending], handle: u64) -> Result<usize, NbdError> {
        pending
            .iter()
            .position(|p| p.handle == handle)
            .ok_or_else(|| {
                self.wire
                    .protocol(format!("reply for handle {handle}, which is not in flight"))
            })
    }

    fn command_error(&self, p: &Pending, errno: u32, message: Vec<u8>) -> NbdError {
        NbdError::Command {
            target: self.wire.target.clone(),
            command: "read",
            offset: p.offset,
            length: p.len as u64,
            errno,
            message: server_text(&message),
        }
    }

    /// Checks that `offset..offset + length` lies inside request `p` and not over an
    /// earlier chunk; returns the start relative to the request.
    fn claim(&self, p: &mut Pending, offset: u64, length: u64) -> Result<usize, NbdError> {
        let relative = offset.checked_sub(p.offset);
        let inside = relative
            .and_then(|r| r.checked_add(length))
            .is_some_and(|e| e <= p.len as u64);
        let Some(relative) = relative.filter(|_| inside) else {
            return Err(self.wire.protocol(format!(
                "chunk of {length} bytes at offset {offset} lies outside the read of {} bytes at offset {}",
                p.len, p.offset
            )));
        };
        if !p.coverage.insert(relative, relative + length) {
            return Err(self.wire.protocol(format!(
                "chunk of {length} bytes at offset {offset} overlaps an earlier chunk"
            )));
        }
        // relative + length <= p.len, a usize.
        Ok(relative as usize)
    }

    fn apply_chunk(
        &mut self,
        header: &ChunkHeader,
        p: &mut Pending,
        buf: &mut [u8],
    ) -> Result<(), NbdError> {
        match header.kind {
            REPLY_TYPE_NONE => {
                if header.length != 0 || !header.done() {
                    return Err(self
                        .wire
                        .protocol("NBD_REPLY_TYPE_NONE chunk with a payload or without DONE"));
                }
            }
            REPLY_TYPE_OFFSET_DATA => {
                if header.length < 9 {
                    return Err(self.wire.protocol(format!(
                        "data chunk of {} bytes (at least 9 expected)",
                        header.length
                    )));
                }
                let offset = self.wire.read_u64(DURING)?;
                let length = u64::from(header.length - 8);
                let relative = self.claim(p, offset, length)?;
                let at = p.start + relative;
                self.wire
                    .read_exact(&mut buf[at..at + length as usize], DURING)?;
            }
            REPLY_TYPE_OFFSET_HOLE => {
                if header.length != 12 {
                    return Err(self.wire.protocol(format!(
                        "hole chunk of {} bytes (12 expected)",
                        header.length
                    )));
                }
                let offset = self.wire.read_u64(DURING)?;
                let length = u64::from(self.wire.read_u32(DURING)?);
                if length == 0 {
                    return Err(self.wire.protocol("hole chunk of length 0"));
                }
                let relative = self.claim(p, offset, length)?;
                let at = p.start + relative;
                buf[at..at + length as usize].fill(0);
            }
            kind if header.is_error() => {
                if header.length < 6 || header.length > MAX_ERROR_CHUNK {
                    return Err(self
                        .wire
                        .protocol(format!("error chunk of {} bytes", header.length)));
                }
                let payload = self.wire.read_vec(header.length, DURING)?;
                let chunk = parse_error_chunk(kind, &payload).map_err(|d| self.wire.protocol(d))?;
                if p.error.is_none() {
                    let mut message = chunk.message;
                    if let Some(at) = chunk.offset {
                        message.extend_from_slice(format!(" [at offset {at}]").as_bytes());
                    }
                    p.error = Some(self.command_error(p, chunk.errno, message));
                }
            }
            other => {
                return Err(self
                    .wire
                    .protocol(format!("chunk type {other} in a read reply")));
            }
        }
        Ok(())
    }
}
