//! `NBD_CMD_BLOCK_STATUS`: extents of one metadata context over a range, asked again from
//! where the server stopped until the range is covered (servers may answer short), and
//! the two questions the agent asks of them: which bytes hold data, which are dirty.

use std::ops::Range;

use super::Client;
use crate::error::{NbdError, server_text};
use crate::wire::*;

/// The protocol's allocation context.
pub const BASE_ALLOCATION: &str = "base:allocation";
/// `base:allocation`: the range is not allocated in the backing store (a hole). Says
/// nothing by itself about the content: qemu sets it together with [`STATE_ZERO`] for
/// unallocated ranges; a hole *without* `STATE_ZERO` has unspecified content.
pub const STATE_HOLE: u32 = 1 << 0;
/// `base:allocation`: the range reads as zeros (allocated or not).
pub const STATE_ZERO: u32 = 1 << 1;
/// `qemu:dirty-bitmap:NAME`: the range was written since the bitmap was enabled (the
/// bitmap tracks whole granules, 64 KiB by default).
pub const STATE_DIRTY: u32 = 1 << 0;

/// The metadata context name qemu-nbd uses for a bitmap exported with `-B NAME`.
pub fn dirty_bitmap_context(bitmap: &str) -> String {
    format!("qemu:dirty-bitmap:{bitmap}")
}

/// A run of bytes sharing the same status flags in one metadata context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
    /// The context's flags (for `base:allocation`: [`STATE_HOLE`], [`STATE_ZERO`]).
    pub flags: u32,
}

impl Extent {
    /// The first byte after the extent.
    pub fn end(&self) -> u64 {
        self.offset + self.length
    }
}

/// Most chunks accepted in one block status reply (one per context, plus errors).
const MAX_STATUS_CHUNKS: usize = 1024;
const DURING: &str = "reading a block status reply";

impl Client {
    /// Status of `offset..offset + length` in the negotiated metadata `context`: sorted,
    /// contiguous extents covering exactly that range (neighbours with equal flags are
    /// merged). Asks again from where the server stopped until the range is covered.
    pub fn block_status(
        &mut self,
        offset: u64,
        length: u64,
        context: &str,
    ) -> Result<Vec<Extent>, NbdError> {
        self.guarded(|client| client.block_status_checked(offset, length, context))
    }

    /// Byte ranges that may hold data, over the whole export, sorted and merged: every
    /// `base:allocation` extent *not* marked [`STATE_ZERO`]. Ranges that read as zeros are
    /// left out whether or not they are holes; a hole without `STATE_ZERO` is kept,
    /// because its content is not known to be zeros. Needs `base:allocation` negotiated.
    pub fn allocated_ranges(&mut self) -> Result<Vec<Range<u64>>, NbdError> {
        let extents = self.block_status(0, self.size, BASE_ALLOCATION)?;
        Ok(ranges_where(&extents, |flags| flags & STATE_ZERO == 0))
    }

    /// Byte ranges marked dirty in qemu's bitmap `bitmap`, over the whole export, sorted
    /// and merged (granule-aligned, as qemu tracks them). Needs the context
    /// [`dirty_bitmap_context`]`(bitmap)` negotiated, and qemu-nbd started with `-B bitmap`.
    pub fn dirty_ranges(&mut self, bitmap: &str) -> Result<Vec<Range<u64>>, NbdError> {
        let extents = self.block_status(0, self.size, &dirty_bitmap_context(bitmap))?;
        Ok(ranges_where(&extents, |flags| flags & STATE_DIRTY != 0))
    }

    fn context_id(&self, context: &str) -> Result<u32, NbdError> {
        self.contexts
            .iter()
            .find(|(_, name)| name == context)
            .map(|(id, _)| *id)
            .ok_or_else(|| NbdError::ContextNotNegotiated {
                target: self.wire.target.clone(),
                context: context.to_string(),
            })
    }

    fn block_status_checked(
        &mut self,
        offset: u64,
        length: u64,
        context: &str,
    ) -> Result<Vec<Extent>, NbdError> {
        let id = self.context_id(context)?;
        self.check_range(offset, length)?;
        // check_range proved offset + length <= size <= i64::MAX.
        let end = offset + length;
        let min = u64::from(self.block_sizes.minimum);
        let max_ask = u64::from(u32::MAX) - u64::from(u32::MAX) % min;
        let mut extents: Vec<Extent> = Vec::new();
        let mut at = offset;
        // Every reply covers at least one byte (descriptors have non-zero length), so the
        // loop ends.
        while at < end {
            let ask = (end - at).min(max_ask);
            let stop = at + ask;
            // ask <= max_ask, which fits in u32.
            for (len, flags) in self.block_status_once(at, ask as u32, id, context)? {
                if at >= stop {
                    break; // The protocol lets the last extent run past the request.
                }
                let len = u64::from(len).min(stop - at);
                push_merged(
                    &mut extents,
                    Extent {
                        offset: at,
                        length: len,
                        flags,
                    },
                );
                at += len;
            }
        }
        Ok(extents)
    }

    /// One request; the descriptors of context `id`.
    fn block_status_once(
        &mut self,
        offset: u64,
        length: u32,
        id: u32,
        context: &str,
    ) -> Result<Vec<(u32, u32)>, NbdError> {
        let handle = self.send_request(CMD_BLOCK_STATUS, offset, length)?;
        let command_error = |client: &Client, errno: u32, message: &[u8]| NbdError::Command {
            target: client.wire.target.clone(),
            command: "block status",
            offset,
            length: u64::from(length),
            errno,
            message: server_text(message),
        };
        let mut found: Option<Vec<(u32, u32)>> = None;
        let mut error: Option<NbdError> = None;
        for _ in 0..MAX_STATUS_CHUNKS {
            let magic = self.wire.read_u32(DURING)?;
            if magic == SIMPLE_REPLY_MAGIC {
                let errno = self.wire.read_u32(DURING)?;
                let answered = self.wire.read_u64(DURING)?;
                if answered != handle || errno == 0 {
                    return Err(self.wire.protocol(format!(
                        "simple reply (handle {answered}, error {errno}) to block status request {handle}"
                    )));
                }
                return Err(command_error(self, errno, &[]));
            }
            if magic != STRUCTURED_REPLY_MAGIC {
                return Err(self.wire.protocol(format!(
                    "unexpected reply magic {magic:#x} during block status"
                )));
            }
            let header = ChunkHeader::parse(&self.wire.read_array(DURING)?);
            if header.handle != handle {
                return Err(self.wire.protocol(format!(
                    "reply for handle {}, which is not in flight",
                    header.handle
                )));
            }
            match header.kind {
                REPLY_TYPE_BLOCK_STATUS => {
                    if header.length > MAX_STATUS_CHUNK {
                        return Err(self.wire.protocol(format!(
                            "block status chunk of {} bytes (limit {MAX_STATUS_CHUNK})",
                            header.length
                        )));
                    }
                    let payload = self.wire.read_vec(header.length, DURING)?;
                    let (chunk_id, descriptors) =
                        parse_block_status(&payload).map_err(|d| self.wire.protocol(d))?;
                    if chunk_id == id {
                        if found.is_some() {
                            return Err(self.wire.protocol(format!(
                                "two block status chunks for context '{context}'"
                            )));
                        }
                        found = Some(descriptors);
                    } else if !self.contexts.iter().any(|(known, _)| *known == chunk_id) {
                        return Err(self.wire.protocol(format!(
                            "block status for context id {chunk_id}, which was not negotiated"
                        )));
                    }
                }
                REPLY_TYPE_NONE => {
                    if header.length != 0 || !header.done() {
                        return Err(self
                            .wire
                            .protocol("NBD_REPLY_TYPE_NONE chunk with a payload or without DONE"));
                    }
                }
                kind if header.is_error() => {
                    if header.length < 6 || header.length > MAX_ERROR_CHUNK {
                        return Err(self
                            .wire
                            .protocol(format!("error chunk of {} bytes", header.length)));
                    }
                    let payload = self.wire.read_vec(header.length, DURING)?;
                    let chunk =
                        parse_error_chunk(kind, &payload).map_err(|d| self.wire.protocol(d))?;
                    if error.is_none() {
                        error = Some(command_error(self, chunk.errno, &chunk.message));
                    }
                }
                other => {
                    return Err(self
                        .wire
                        .protocol(format!("chunk type {other} in a block status reply")));
                }
            }
            if header.done() {
                if let Some(err) = error {
                    return Err(err);
                }
                return found.ok_or_else(|| {
                    self.wire.protocol(format!(
                        "block status reply without extents for context '{context}'"
                    ))
                });
            }
        }
        Err(self.wire.protocol(format!(
            "more than {MAX_STATUS_CHUNKS} chunks in one block status reply"
        )))
    }
}

/// Appends `extent`, merging it into the last one when they touch and share flags.
fn push_merged(extents: &mut Vec<Extent>, extent: Extent) {
    if let Some(last) = extents.last_mut()
        && last.end() == extent.offset
        && last.flags == extent.flags
    {
        last.length += extent.length;
        return;
    }
    extents.push(extent);
}

/// The byte ranges of sorted extents whose flags satisfy `keep`, touching ranges merged.
pub(crate) fn ranges_where(extents: &[Extent], keep: impl Fn(u32) -> bool) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = Vec::new();
    for e in extents.iter().filter(|e| keep(e.flags) && e.length > 0) {
        match out.last_mut() {
            Some(last) if last.end == e.offset => last.end = e.end(),
            _ => out.push(e.offset..e.end()),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ext(offset: u64, length: u64, flags: u32) -> Extent {
        Extent {
            offset,
            length,
            flags,
        }
    }

    #[test]
    fn ranges_merge_and_follow_the_zero_flag() {
        let extents = [
            ext(0, 10, 0),
            ext(10, 5, STATE_HOLE),
            ext(15, 5, STATE_ZERO),
            ext(20, 5, STATE_HOLE | STATE_ZERO),
            ext(25, 5, 0),
            ext(30, 5, 0),
        ];
        assert_eq!(
            ranges_where(&extents, |f| f & STATE_ZERO == 0),
            vec![0..15, 25..35]
        );
        assert_eq!(
            ranges_where(&extents, |f| f & STATE_DIRTY != 0),
            vec![10..15, 20..25]
        );
        assert_eq!(ranges_where(&[], |_| true), Vec::<Range<u64>>::new());
    }

    #[test]
    fn push_merged_joins_equal_neighbours_only() {
        let mut v = Vec::new();
        push_merged(&mut v, ext(0, 4, 1));
        push_merged(&mut v, ext(4, 4, 1));
        push_merged(&mut v, ext(8, 4, 0));
        push_merged(&mut v, ext(12, 4, 0));
        assert_eq!(v, vec![ext(0, 8, 1), ext(8, 8, 0)]);
    }
}
