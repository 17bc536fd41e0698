//! Sector-aligned reads: Windows disk and volume devices accept only reads whose offset and
//! length are multiples of the sector size, into sector-aligned memory. [`AlignedSource`]
//! turns any read into such reads, through a bounce buffer when the caller's is not
//! aligned. The device's last sector may be short of a full alignment unit (a volume of
//! 512-byte sectors read in 4 KiB units): reads stop at the device's end.

use std::io;

use super::ranges::Ranges;
use super::source::BlockSource;

/// Largest bounce read (the engine reads 1 MiB at a time).
const BOUNCE_BYTES: u64 = 1 << 20;

/// A device read only in multiples of `align` bytes.
pub struct AlignedSource<S: BlockSource> {
    inner: S,
    align: u64,
}

impl<S: BlockSource> AlignedSource<S> {
    /// `align` is the sector size (or a multiple of it), a power of two.
    pub fn new(inner: S, align: u64) -> io::Result<Self> {
        if !align.is_power_of_two() || align > BOUNCE_BYTES {
            return Err(io::Error::other(format!(
                "sector size {align} is not a power of two up to 1 MiB"
            )));
        }
        Ok(AlignedSource { inner, align })
    }

    fn is_aligned(&self, offset: u64, buf: &[u8]) -> bool {
        let a = self.align;
        offset.is_multiple_of(a)
            && ((buf.len() as u64).is_multiple_of(a)
                || offset + buf.len() as u64 == self.inner.size())
            && (buf.as_ptr() as usize as u64).is_multiple_of(a)
    }
}

/// A buffer of `len` bytes starting at an address that is a multiple of `align`.
struct Bounce {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl Bounce {
    fn new(len: usize, align: usize) -> Self {
        let storage = vec![0u8; len + align];
        let misalign = storage.as_ptr() as usize % align;
        let start = if misalign == 0 { 0 } else { align - misalign };
        Bounce {
            storage,
            start,
            len,
        }
    }

    fn slice(&mut self, len: usize) -> &mut [u8] {
        let len = len.min(self.len);
        &mut self.storage[self.start..self.start + len]
    }
}

impl<S: BlockSource> BlockSource for AlignedSource<S> {
    fn size(&self) -> u64 {
        self.inner.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let size = self.inner.size();
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= size)
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!(
                        "read of {} bytes at {offset} past the end ({size})",
                        buf.len()
                    ),
                )
            })?;
        if buf.is_empty() {
            return Ok(());
        }
        if self.is_aligned(offset, buf) {
            return self.inner.read_at(offset, buf);
        }
        let a = self.align;
        let mut bounce = Bounce::new((BOUNCE_BYTES + 2 * a) as usize, a as usize);
        let mut pos = offset;
        while pos < end {
            let first = pos - pos % a;
            let want_end = end.min(first + BOUNCE_BYTES);
            // Whole units, except at the device's end.
            let last = want_end.div_ceil(a).saturating_mul(a).min(size);
            let chunk = bounce.slice((last - first) as usize);
            self.inner.read_at(first, chunk)?;
            let from = (pos - first) as usize;
            let to = (want_end - first) as usize;
            let out = (pos - offset) as usize;
            buf[out..out + (to - from)].copy_from_slice(&chunk[from..to]);
            pos = want_end;
        }
        Ok(())
    }

    fn allocated(&self) -> io::Result<Option<Ranges>> {
        self.inner.allocated()
    }

    fn changed(&self) -> io::Result<Option<Ranges>> {
        self.inner.changed()
    }

    fn allocation_method(&self) -> &'static str {
        self.inner.allocation_method()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;

    /// An in-memory device that refuses unaligned reads, as Windows devices do, and
    /// records the reads it served.
    pub(crate) struct Device {
        pub data: Vec<u8>,
        pub sector: u64,
        pub reads: Mutex<Vec<(u64, usize)>>,
    }

    impl Device {
        pub fn new(data: Vec<u8>, sector: u64) -> Self {
            Device {
                data,
                sector,
                reads: Mutex::new(Vec::new()),
            }
        }
    }

    impl BlockSource for Device {
        fn size(&self) -> u64 {
            self.data.len() as u64
        }

        fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
            let s = self.sector;
            let at_end = offset + buf.len() as u64 == self.size();
            if !offset.is_multiple_of(s)
                || (!(buf.len() as u64).is_multiple_of(s) && !at_end)
                || !(buf.as_ptr() as usize as u64).is_multiple_of(s)
            {
                return Err(io::Error::from_raw_os_error(87)); // ERROR_INVALID_PARAMETER
            }
            let start = offset as usize;
            let src = self
                .data
                .get(start..start + buf.len())
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
            buf.copy_from_slice(src);
            if let Ok(mut r) = self.reads.lock() {
                r.push((offset, buf.len()));
            }
            Ok(())
        }
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    #[test]
    fn any_read_becomes_aligned_reads() {
        // 3 MiB + 1.5 KiB: 512-byte sectors, read in 4 KiB units, with a short last unit.
        let len = (3 << 20) + 1536;
        let data = pattern(len);
        let src = AlignedSource::new(Device::new(data.clone(), 512), 4096).unwrap();
        for (offset, n) in [
            (0u64, 1usize),
            (1, 4095),
            (4095, 2),
            (4096, 4096),
            (100_000, 1 << 20),
            (12_345, (2 << 20) + 777),
            (len as u64 - 700, 700),
            (len as u64 - 1536, 1536),
            (0, len),
        ] {
            let mut buf = vec![0u8; n];
            src.read_at(offset, &mut buf).unwrap();
            assert!(
                buf == data[offset as usize..offset as usize + n],
                "{offset}+{n}"
            );
        }
        let reads = src.inner.reads.lock().unwrap();
        assert!(
            reads.iter().all(|&(o, _)| o.is_multiple_of(4096)),
            "{reads:?}"
        );
        assert!(reads.iter().all(|&(_, n)| n as u64 <= BOUNCE_BYTES + 4096));
    }

    #[test]
    fn reads_past_the_end_and_bad_sector_sizes_are_refused() {
        let src = AlignedSource::new(Device::new(pattern(8192), 512), 512).unwrap();
        let mut buf = [0u8; 10];
        assert!(src.read_at(8190, &mut buf).is_err());
        assert!(src.read_at(u64::MAX - 2, &mut buf).is_err());
        assert!(AlignedSource::new(Device::new(vec![], 512), 1000).is_err());
        // Without the wrapper the device itself refuses an unaligned read.
        assert!(src.inner.read_at(1, &mut buf).is_err());
    }
}
