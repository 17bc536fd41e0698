//! Memory aligned for direct I/O (`O_DIRECT`), which needs the buffer's address, the
//! file offset and the length to be multiples of the device's block size. Used by the
//! store's chunk writes and by the agent's restores.

/// Alignment of direct I/O: address, offset and length. 4 KiB covers 512-byte and 4 KiB
/// sectors and every common file system block.
pub const ALIGN: usize = 4096;

/// A buffer of `len` usable bytes starting at an [`ALIGN`]ed address.
pub struct AlignedBuf {
    buf: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    pub fn new(len: usize) -> Self {
        let buf = vec![0u8; len + ALIGN];
        let start = buf.as_ptr().align_offset(ALIGN).min(ALIGN);
        AlignedBuf { buf, start, len }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.buf[self.start..self.start + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.start + self.len]
    }
}

/// Bytes placed in memory at a chosen alignment: byte 0 sits `lead` bytes past an
/// [`ALIGN`]ed address (`lead < ALIGN`). A restore decodes a chunk so placed when it knows
/// the file offset the chunk's bytes go to: the chunk's whole blocks then already lie
/// where a direct write needs them, and are written without a copy.
///
/// The placement is only ever a hint: [`PlacedChunk::from_vec`] takes bytes wherever they
/// are, and a writer checks the actual address.
pub struct PlacedChunk {
    buf: Vec<u8>,
    start: usize,
}

impl PlacedChunk {
    /// `bytes` where they already are.
    pub fn from_vec(bytes: Vec<u8>) -> Self {
        PlacedChunk {
            buf: bytes,
            start: 0,
        }
    }

    /// A copy of `bytes` placed at `lead` (modulo [`ALIGN`]).
    pub fn copied(bytes: &[u8], lead: usize) -> Self {
        let mut placed = PlacedChunk::with_room(bytes.len(), lead);
        let (buf, start) = placed.filler();
        buf.resize(start, 0);
        buf.extend_from_slice(bytes);
        placed
    }

    /// An empty buffer with room for `len` bytes placed at `lead` (modulo [`ALIGN`]), for
    /// [`Self::filler`]. At most `2 * ALIGN` bytes more are allocated, and none are written.
    pub(crate) fn with_room(len: usize, lead: usize) -> Self {
        let buf: Vec<u8> = Vec::with_capacity(len + 2 * ALIGN);
        let start = buf.as_ptr().align_offset(ALIGN).min(ALIGN) + lead % ALIGN;
        PlacedChunk { buf, start }
    }

    /// The buffer and the position of byte 0, for a writer that fills it from there (at
    /// most `len` bytes, as given to [`Self::with_room`]).
    pub(crate) fn filler(&mut self) -> (&mut Vec<u8>, usize) {
        (&mut self.buf, self.start)
    }

    /// The bytes, as a vector of their own (a copy unless they start the buffer).
    pub fn into_vec(self) -> Vec<u8> {
        if self.start == 0 {
            return self.buf;
        }
        self.buf[self.start..].to_vec()
    }
}

impl std::ops::Deref for PlacedChunk {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        self.buf.get(self.start..).unwrap_or(&[])
    }
}

impl std::fmt::Debug for PlacedChunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PlacedChunk({} bytes)", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placed_bytes_sit_at_their_lead() {
        let bytes: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
        for lead in [0, 1, 2000, 4095, 4097] {
            let placed = PlacedChunk::copied(&bytes, lead);
            assert_eq!(&placed[..], &bytes[..]);
            assert_eq!(placed.as_ptr() as usize % ALIGN, lead % ALIGN);
            assert_eq!(placed.into_vec(), bytes);
        }
        assert_eq!(&PlacedChunk::from_vec(bytes.clone())[..], &bytes[..]);
        assert!(PlacedChunk::copied(&[], 5).is_empty());
    }

    #[test]
    fn the_usable_bytes_start_aligned() {
        for len in [0, 1, 4096, 100_000] {
            let mut b = AlignedBuf::new(len);
            assert_eq!(b.len(), len);
            assert_eq!(b.as_slice().as_ptr() as usize % ALIGN, 0);
            assert_eq!(b.as_mut_slice().len(), len);
        }
    }
}
