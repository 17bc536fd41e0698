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

#[cfg(test)]
mod tests {
    use super::*;

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
