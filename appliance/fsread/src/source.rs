//! Random-access byte sources: the one thing every reader in this crate needs.
//!
//! A [`ReadAt`] is a fixed-size run of bytes that can be read anywhere without a cursor, so
//! one source can serve several readers at once (a disk image file, a partition inside it,
//! or a backup image whose bytes come from the chunk store).

use std::io;
use std::sync::Arc;

/// A fixed-size byte source readable at any offset.
///
/// `read_at` has `read_exact` semantics: it fills the whole buffer or fails. Reading past
/// [`ReadAt::size`] is an error (`UnexpectedEof`), never a short read.
pub trait ReadAt: Send + Sync {
    /// Total size in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` with the bytes at `offset..offset + buf.len()`.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
}

impl ReadAt for std::fs::File {
    /// The size when asked: a block device reports it through `seek(End)`, a file through
    /// its metadata. A source whose size cannot be learnt reports 0 (and so reads nothing).
    fn size(&self) -> u64 {
        use std::io::Seek;
        match self.metadata() {
            Ok(meta) if meta.is_file() => meta.len(),
            _ => {
                // Block devices: metadata().len() is 0. `seek` on `&File` moves the shared
                // cursor, which `read_at` (pread) does not use, so this is harmless.
                let mut file = self;
                file.seek(io::SeekFrom::End(0)).unwrap_or(0)
            }
        }
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_bounds(self.size(), offset, buf.len())?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::FileExt;
            self.read_exact_at(buf, offset)
        }
        #[cfg(windows)]
        {
            // seek_read may return short; loop until the buffer is full.
            use std::os::windows::fs::FileExt;
            let mut done = 0;
            while done < buf.len() {
                let n = self.seek_read(&mut buf[done..], offset + done as u64)?;
                if n == 0 {
                    return Err(io::Error::from(io::ErrorKind::UnexpectedEof));
                }
                done += n;
            }
            Ok(())
        }
    }
}

impl ReadAt for Vec<u8> {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.as_slice().read_at(offset, buf)
    }
}

impl ReadAt for [u8] {
    fn size(&self) -> u64 {
        self.len() as u64
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_bounds(self.size(), offset, buf.len())?;
        // check_bounds proved offset + len <= self.len(), so both fit in usize.
        let start = offset as usize;
        buf.copy_from_slice(&self[start..start + buf.len()]);
        Ok(())
    }
}

impl<T: ReadAt + ?Sized> ReadAt for Arc<T> {
    fn size(&self) -> u64 {
        (**self).size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, buf)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn size(&self) -> u64 {
        (**self).size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        (**self).read_at(offset, buf)
    }
}

/// A window of another source: a partition inside a disk.
#[derive(Clone)]
pub struct Slice {
    inner: Arc<dyn ReadAt>,
    offset: u64,
    len: u64,
}

impl Slice {
    /// The bytes `offset..offset + len` of `inner`. Fails when the window does not lie
    /// inside `inner` (a partition table that points past the end of its disk).
    pub fn new(inner: Arc<dyn ReadAt>, offset: u64, len: u64) -> io::Result<Slice> {
        match offset.checked_add(len) {
            Some(end) if end <= inner.size() => Ok(Slice { inner, offset, len }),
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "window {offset}+{len} lies outside a source of {} bytes",
                    inner.size()
                ),
            )),
        }
    }

    /// Start of the window in the inner source.
    pub fn offset(&self) -> u64 {
        self.offset
    }
}

impl std::fmt::Debug for Slice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Slice")
            .field("offset", &self.offset)
            .field("len", &self.len)
            .finish()
    }
}

impl ReadAt for Slice {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        check_bounds(self.len, offset, buf.len())?;
        // check_bounds proved offset + len <= self.len, and Slice::new proved
        // self.offset + self.len fits in u64.
        self.inner.read_at(self.offset + offset, buf)
    }
}

/// `UnexpectedEof` unless `offset..offset + len` lies inside `0..size`.
pub(crate) fn check_bounds(size: u64, offset: u64, len: usize) -> io::Result<()> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= size => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            format!("read of {len} bytes at offset {offset} passes the end ({size} bytes)"),
        )),
    }
}

/// A `Read + Seek` cursor over a [`ReadAt`], for parsers that want one.
///
/// It keeps the last aligned window it read, because such parsers read many small fields
/// in a row and each `read_at` of a chunk-store source may cost a decompression.
pub(crate) struct Cursor<'a> {
    src: &'a dyn ReadAt,
    pos: u64,
    window_start: u64,
    window: Vec<u8>,
}

const WINDOW: u64 = 64 * 1024;

impl<'a> Cursor<'a> {
    pub(crate) fn new(src: &'a dyn ReadAt) -> Cursor<'a> {
        Cursor {
            src,
            pos: 0,
            window_start: 0,
            window: Vec::new(),
        }
    }
}

impl io::Read for Cursor<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let size = self.src.size();
        if self.pos >= size || buf.is_empty() {
            return Ok(0);
        }
        let in_window = self.pos >= self.window_start
            && self.pos < self.window_start + self.window.len() as u64;
        if !in_window {
            let start = self.pos - self.pos % WINDOW;
            let len = (size - start).min(WINDOW) as usize;
            self.window.resize(len, 0);
            if let Err(err) = self.src.read_at(start, &mut self.window) {
                self.window.clear();
                return Err(err);
            }
            self.window_start = start;
        }
        // pos lies inside the window now, so the subtraction cannot underflow.
        let at = (self.pos - self.window_start) as usize;
        let n = buf.len().min(self.window.len() - at);
        buf[..n].copy_from_slice(&self.window[at..at + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl io::Seek for Cursor<'_> {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        let target = match pos {
            io::SeekFrom::Start(p) => Some(p),
            io::SeekFrom::End(d) => self.src.size().checked_add_signed(d),
            io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match target {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start or past 2^64",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, SeekFrom};

    #[test]
    fn slice_reads_its_window_and_refuses_past_its_end() {
        let data: Arc<dyn ReadAt> = Arc::new((0u8..100).collect::<Vec<u8>>());
        let slice = Slice::new(data.clone(), 10, 20).unwrap();
        let mut buf = [0u8; 5];
        slice.read_at(15, &mut buf).unwrap();
        assert_eq!(buf, [25, 26, 27, 28, 29]);
        assert!(slice.read_at(16, &mut buf).is_err());
        assert!(slice.read_at(u64::MAX, &mut buf).is_err());
        assert!(Slice::new(data.clone(), 90, 11).is_err());
        assert!(Slice::new(data, u64::MAX, 2).is_err());
    }

    #[test]
    fn cursor_reads_across_windows() {
        let data: Vec<u8> = (0..(3 * WINDOW as usize + 7))
            .map(|i| (i % 251) as u8)
            .collect();
        let mut cursor = Cursor::new(&data);
        cursor.seek(SeekFrom::Start(WINDOW - 3)).unwrap();
        let mut buf = vec![0u8; 10];
        cursor.read_exact(&mut buf).unwrap();
        assert_eq!(buf, data[(WINDOW - 3) as usize..(WINDOW + 7) as usize]);
        let mut rest = Vec::new();
        cursor.seek(SeekFrom::End(-20)).unwrap();
        cursor.read_to_end(&mut rest).unwrap();
        assert_eq!(rest, data[data.len() - 20..]);
        assert!(
            cursor
                .seek(SeekFrom::Current(-(data.len() as i64) - 1))
                .is_err()
        );
    }
}
