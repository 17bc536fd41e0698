//! Content-defined chunking (FastCDC 2020) of a byte stream that arrives in pieces.
//!
//! Invariant: the chunk boundaries depend only on the bytes of the stream, never on how the
//! caller sliced them into `push` calls, so the same data always gives the same chunks.
//! A cut is decided as soon as `max` bytes are pending, because FastCDC never looks
//! further than `max` bytes past a chunk's start; so fewer than `max` bytes wait between
//! calls.

use std::collections::VecDeque;

use fastcdc::v2020;

use crate::error::{Result, StoreError};

/// Minimum, average and maximum chunk sizes of the content-defined chunker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkerParams {
    min: u32,
    avg: u32,
    max: u32,
}

impl ChunkerParams {
    /// The store's sizes: 512 KiB / 2 MiB / 8 MiB.
    pub const DEFAULT: ChunkerParams = ChunkerParams {
        min: 512 * 1024,
        avg: 2 * 1024 * 1024,
        max: 8 * 1024 * 1024,
    };

    /// Other sizes (tests use small ones). All must be even, with
    /// `64 <= min < avg < max`, `256 <= avg`, `1024 <= max <= 16 MiB` and `min <= 1 MiB`,
    /// `avg <= 4 MiB` (FastCDC's limits).
    pub fn new(min: u32, avg: u32, max: u32) -> Result<Self> {
        let ok_range = (v2020::MINIMUM_MIN..=v2020::MINIMUM_MAX).contains(&(min as usize))
            && (v2020::AVERAGE_MIN..=v2020::AVERAGE_MAX).contains(&(avg as usize))
            && (v2020::MAXIMUM_MIN..=v2020::MAXIMUM_MAX).contains(&(max as usize));
        if !ok_range {
            return Err(StoreError::InvalidParams(
                "a size is outside FastCDC's limits",
            ));
        }
        if !(min < avg && avg < max) {
            return Err(StoreError::InvalidParams("need min < avg < max"));
        }
        if !(min.is_multiple_of(2) && avg.is_multiple_of(2) && max.is_multiple_of(2)) {
            return Err(StoreError::InvalidParams("sizes must be even"));
        }
        Ok(ChunkerParams { min, avg, max })
    }

    /// Smallest chunk (except the last of a stream).
    pub fn min(&self) -> u32 {
        self.min
    }

    /// Target average chunk size.
    pub fn avg(&self) -> u32 {
        self.avg
    }

    /// Largest chunk.
    pub fn max(&self) -> u32 {
        self.max
    }
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams::DEFAULT
    }
}

/// Cuts a stream pushed in arbitrary pieces into content-defined chunks.
///
/// Memory: one window of `2 * max` bytes, allocated on first use and reused; each
/// finished chunk is copied out of it into a `Vec` of its exact size. Callers that read
/// from a file can fill the window directly with [`Chunker::push_from`] and skip a copy.
#[derive(Debug)]
pub struct Chunker {
    params: ChunkerParams,
    mask_s: u64,
    mask_l: u64,
    /// The window: empty until the first push, then `2 * max` bytes long. `buf[start..end]`
    /// are the bytes not yet in a finished chunk (fewer than `max` between calls).
    buf: Vec<u8>,
    start: usize,
    end: usize,
    ready: VecDeque<Vec<u8>>,
}

impl Chunker {
    /// A chunker with the given sizes.
    pub fn new(params: ChunkerParams) -> Self {
        let (mask_s, mask_l) =
            v2020::select_masks(params.avg as usize, v2020::Normalization::Level1);
        Chunker {
            params,
            mask_s,
            mask_l,
            buf: Vec::new(),
            start: 0,
            end: 0,
            ready: VecDeque::new(),
        }
    }

    /// Appends bytes to the stream; finished chunks become available from [`Chunker::pop`].
    pub fn push(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let room = self.room();
            let take = room.len().min(data.len());
            room[..take].copy_from_slice(&data[..take]);
            data = &data[take..];
            self.appended(take);
        }
    }

    /// Appends up to `max_len` bytes that `read` writes at the front of the slice it is
    /// given (at most `max_len` long, at least one byte if `max_len > 0`); `read` returns
    /// how many it wrote. Returns that count (0 if `read` wrote nothing) or `read`'s error,
    /// after which the stream is as before the call.
    pub fn push_from<E>(
        &mut self,
        max_len: usize,
        read: impl FnOnce(&mut [u8]) -> std::result::Result<usize, E>,
    ) -> std::result::Result<usize, E> {
        if max_len == 0 {
            return Ok(0);
        }
        let room = self.room();
        let len = room.len().min(max_len);
        // Clamp: a reader that claims more than it was given must not corrupt the window.
        let n = read(&mut room[..len])?.min(len);
        self.appended(n);
        Ok(n)
    }

    /// Ends the stream: the buffered bytes become the last chunk(s).
    pub fn finish(&mut self) {
        while self.buffered() > 0 {
            self.cut_one();
        }
        self.start = 0;
        self.end = 0;
    }

    /// The next finished chunk, in stream order.
    pub fn pop(&mut self) -> Option<Vec<u8>> {
        self.ready.pop_front()
    }

    /// Bytes pushed but not yet in a finished chunk.
    pub fn buffered(&self) -> usize {
        self.end - self.start
    }

    /// The free tail of the window, never empty: allocates the window on first use and
    /// slides the pending bytes (fewer than `max`) to the front when the tail is used up.
    fn room(&mut self) -> &mut [u8] {
        let window = 2 * self.params.max as usize;
        if self.buf.len() != window {
            self.buf = vec![0; window];
        }
        if self.end == window {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        &mut self.buf[self.end..]
    }

    /// Takes `n` bytes just written into [`Chunker::room`] into the stream and cuts every
    /// chunk that is now decided.
    fn appended(&mut self, n: usize) {
        self.end += n;
        while self.buffered() >= self.params.max as usize {
            self.cut_one();
        }
    }

    fn cut_one(&mut self) {
        let pending = &self.buf[self.start..self.end];
        let (_, cut) = v2020::cut(
            pending,
            self.params.min as usize,
            self.params.avg as usize,
            self.params.max as usize,
            self.mask_s,
            self.mask_l,
            self.mask_s << 1,
            self.mask_l << 1,
        );
        // `cut` returns a length in 1..=pending.len() for non-empty input; clamp anyway so a
        // library change can never make a caller loop forever or slice out of bounds.
        let cut = cut.clamp(1, pending.len());
        self.ready.push_back(pending[..cut].to_vec());
        self.start += cut;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn small() -> ChunkerParams {
        ChunkerParams::new(256, 1024, 4096).unwrap()
    }

    fn noise(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn chunks(params: ChunkerParams, data: &[u8], piece: usize) -> Vec<Vec<u8>> {
        let mut c = Chunker::new(params);
        let mut out = vec![];
        for p in data.chunks(piece.max(1)) {
            c.push(p);
            assert!(c.buffered() < params.max() as usize);
            while let Some(x) = c.pop() {
                out.push(x);
            }
        }
        c.finish();
        while let Some(x) = c.pop() {
            out.push(x);
        }
        out
    }

    #[test]
    fn params_are_checked() {
        assert!(ChunkerParams::new(256, 1024, 4096).is_ok());
        assert!(ChunkerParams::new(1024, 1024, 4096).is_err());
        assert!(ChunkerParams::new(255, 1024, 4096).is_err());
        assert!(ChunkerParams::new(256, 1024, 32 << 20).is_err());
        assert_eq!(ChunkerParams::default().avg(), 2 << 20);
    }

    #[test]
    fn sizes_respect_limits_and_concatenate_back() {
        let data = noise(200_000, 1);
        let out = chunks(small(), &data, 777);
        assert_eq!(out.concat(), data);
        for c in &out[..out.len() - 1] {
            assert!(c.len() >= 256 && c.len() <= 4096, "{}", c.len());
        }
        let zeros = vec![0u8; 20_000];
        let out = chunks(small(), &zeros, 1000);
        assert!(out[..out.len() - 1].iter().all(|c| c.len() == 4096));
    }

    #[test]
    fn matches_fastcdc_over_the_whole_buffer() {
        let data = noise(100_000, 9);
        let ours: Vec<usize> = chunks(small(), &data, 313).iter().map(Vec::len).collect();
        let theirs: Vec<usize> = v2020::FastCDC::new(&data, 256, 1024, 4096)
            .map(|c| c.length)
            .collect();
        assert_eq!(ours, theirs);
    }

    #[test]
    fn push_from_cuts_like_push() {
        let data = noise(150_000, 5);
        let by_push = chunks(small(), &data, 1000);
        let mut c = Chunker::new(small());
        let mut out = vec![];
        let mut rest = &data[..];
        let mut step = 1usize;
        while !rest.is_empty() {
            // Uneven reads, sometimes short: like read(2) on a file or a pipe.
            step = step * 7 % 3001 + 1;
            let n = c
                .push_from(step, |room: &mut [u8]| {
                    let k = room.len().min(rest.len()).min(step / 2 + 1);
                    room[..k].copy_from_slice(&rest[..k]);
                    Ok::<_, ()>(k)
                })
                .unwrap();
            rest = &rest[n..];
            assert!(c.buffered() < small().max() as usize);
            while let Some(x) = c.pop() {
                out.push(x);
            }
        }
        c.finish();
        while let Some(x) = c.pop() {
            out.push(x);
        }
        assert_eq!(out, by_push);
    }

    #[test]
    fn push_from_error_or_overclaim_changes_nothing_it_should_not() {
        let mut c = Chunker::new(small());
        c.push(&[1, 2, 3]);
        let err = c.push_from(10, |room: &mut [u8]| {
            room[0] = 9;
            Err::<usize, _>("read failed")
        });
        assert_eq!(err, Err("read failed"));
        assert_eq!(c.buffered(), 3);
        // A reader claiming more than the room it got only adds what it was given.
        let n = c.push_from(4, |_room: &mut [u8]| Ok::<_, ()>(100)).unwrap();
        assert_eq!(n, 4);
        assert_eq!(c.buffered(), 7);
        assert_eq!(c.push_from(0, |_: &mut [u8]| Ok::<_, ()>(5)), Ok(0));
        c.finish();
        assert_eq!(c.pop().map(|v| v.len()), Some(7));
    }

    #[test]
    fn empty_stream_has_no_chunks() {
        assert!(chunks(small(), &[], 10).is_empty());
    }
}
