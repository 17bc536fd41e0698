//! Writing restored chunks to the target: consecutive chunks are gathered into runs in an
//! aligned buffer, and a run is written with one call, bypassing the page cache
//! (`O_DIRECT`) where the target allows it.
//!
//! Why direct: a restore writes every used byte of a disk once and reads none of it back.
//! Through the page cache, each written page is first a freshly allocated page of memory:
//! on the bench machine (a VM whose host hands out guest memory on first touch) those
//! copies alone took up to a third of a restore's CPU, and the final `fsync` then waited
//! for all of it. Direct writes go from a buffer the worker reuses, the disk works while
//! the next chunks are fetched and verified, and a restore does not push the protected
//! machine's working set out of its page cache. A run whose offset or length is not a
//! multiple of [`ALIGN`] (in practice the run that ends at the tail of an image whose size
//! is not), and every run on a target that refuses `O_DIRECT` (tmpfs, Windows), is written
//! whole through the page cache; the restore's final `fsync` covers both.
//!
//! Direct writes from several workers go to the disk at once; buffered writes take turns
//! (they serialise on the file's inode lock anyway, and the kernel spins for it: 8 threads
//! writing at once spent a quarter of a restore's CPU spinning). On a file target, each
//! segment's ranges are first allocated with `fallocate` ([`Target::preallocate`]): a direct
//! write into allocated blocks is an overwrite, which Linux (6.6 and later, for writes
//! aligned to the block size) lets run beside others under a shared inode lock, whereas a
//! write that allocates holds the lock until its data is on the disk, so the writes went to
//! the disk one at a time. Allocating first also finds a full file system before any chunk
//! is fetched for that segment.

use std::fs::File;
use std::io;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use super::ranges::Ranges;
use super::source::write_all_at;

pub use abri_store::{ALIGN, AlignedBuf};

/// Largest run gathered before it is written.
pub const RUN_BYTES: usize = 4 << 20;

/// Writes `bytes` at `offset` through the direct descriptor `direct` while `ok` holds:
/// `Ok(true)` when written, `Ok(false)` when direct writes are (or were earlier) refused,
/// and the caller writes through the page cache. A refusal (alignment rules stricter than
/// [`ALIGN`], a file system without direct I/O) clears `ok` for the rest of the restore.
pub fn write_direct(direct: &File, bytes: &[u8], offset: u64, ok: &AtomicBool) -> io::Result<bool> {
    if !ok.load(Ordering::Relaxed) {
        return Ok(false);
    }
    match write_all_at(direct, bytes, offset) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
            ok.store(false, Ordering::Relaxed);
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// The opened target: the file (or device) and, where it could be opened so, the same
/// file for direct writes.
pub struct Target {
    file: File,
    direct: Option<File>,
    /// Cleared when a direct write is refused: the rest goes through the page cache.
    direct_ok: AtomicBool,
    /// Buffered writes take turns (see the module's text).
    buffered_turn: Mutex<()>,
    /// Cleared when the file system cannot preallocate: the rest is allocated as written.
    prealloc_ok: AtomicBool,
}

impl Target {
    /// Wraps the opened `file` at `path`; tries a second, direct descriptor, kept only if
    /// it is the same file (the path could have been replaced in between).
    pub fn new(file: File, path: &Path) -> Target {
        let direct = open_direct(path).filter(|d| same_file(&file, d));
        Target {
            direct_ok: AtomicBool::new(direct.is_some()),
            file,
            direct,
            buffered_turn: Mutex::new(()),
            prealloc_ok: AtomicBool::new(true),
        }
    }

    /// Allocates `ranges` of a file target before they are written (never call it on a
    /// device). A file system that cannot (`EOPNOTSUPP`: no `fallocate`) is no error: its
    /// blocks are then allocated by the writes. Out of space is an error, reported before
    /// the chunks are fetched.
    pub fn preallocate(&self, ranges: &Ranges) -> io::Result<()> {
        for r in ranges.as_slice() {
            if !self.prealloc_ok.load(Ordering::Relaxed) {
                return Ok(());
            }
            match allocate(&self.file, r.start, r.end - r.start) {
                Ok(()) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
                    ) =>
                {
                    return Err(io::Error::new(
                        e.kind(),
                        format!(
                            "the target's file system has no room for the {} bytes at {}: {e}",
                            r.end - r.start,
                            r.start
                        ),
                    ));
                }
                Err(_) => self.prealloc_ok.store(false, Ordering::Relaxed),
            }
        }
        Ok(())
    }

    /// The buffered descriptor (for `sync_all`, zeroing holes).
    pub fn file(&self) -> &File {
        &self.file
    }

    fn write(&self, bytes: &[u8], offset: u64) -> io::Result<()> {
        let aligned = offset.is_multiple_of(ALIGN as u64)
            && bytes.len().is_multiple_of(ALIGN)
            && (bytes.as_ptr() as usize).is_multiple_of(ALIGN);
        if let Some(direct) = &self.direct
            && aligned
            && write_direct(direct, bytes, offset, &self.direct_ok)?
        {
            return Ok(());
        }
        // The guarded value is (): a panic elsewhere cannot leave it inconsistent.
        let _turn = self.buffered_turn.lock().unwrap_or_else(|p| p.into_inner());
        write_all_at(&self.file, bytes, offset)
    }
}

/// One worker's run: consecutive bytes waiting in an aligned buffer.
pub struct RunWriter<'a> {
    target: &'a Target,
    buf: AlignedBuf,
    len: usize,
    offset: u64,
}

impl<'a> RunWriter<'a> {
    pub fn new(target: &'a Target) -> Self {
        RunWriter {
            target,
            buf: AlignedBuf::new(RUN_BYTES),
            len: 0,
            offset: 0,
        }
    }

    /// Forgets the run without writing it (after an error in its batch).
    pub fn discard(&mut self) {
        self.len = 0;
    }

    /// Adds `bytes` to be written at `offset`; writes the run first when `bytes` do not
    /// follow it or do not fit.
    pub fn push(&mut self, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let follows = self.len > 0 && self.offset + self.len as u64 == offset;
        if self.len > 0 && (!follows || self.len + bytes.len() > RUN_BYTES) {
            self.flush()?;
        }
        if bytes.len() > RUN_BYTES {
            return self
                .target
                .write(bytes, offset)
                .map_err(|e| at(e, bytes.len(), offset));
        }
        if self.len == 0 {
            self.offset = offset;
        }
        let at = self.len;
        self.buf.as_mut_slice()[at..at + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
        Ok(())
    }

    /// The first `len` bytes of the (empty) run buffer, for a caller that decodes chunks
    /// straight into it and then calls [`RunWriter::write_pieces`]; `None` when the run is
    /// not empty or `len` exceeds [`RUN_BYTES`].
    pub fn space(&mut self, len: usize) -> Option<&mut [u8]> {
        if self.len != 0 || len > RUN_BYTES {
            return None;
        }
        self.buf.as_mut_slice().get_mut(..len)
    }

    /// Writes the buffer filled through [`RunWriter::space`]: it holds `pieces` (target
    /// offset, length) one after the other, in order; pieces that follow each other on
    /// the target go in one write.
    pub fn write_pieces(
        &mut self,
        pieces: impl IntoIterator<Item = (u64, usize)>,
    ) -> io::Result<()> {
        let mut at = 0usize;
        let mut group: Option<(u64, usize, usize)> = None; // target offset, buffer start, len
        for (offset, len) in pieces {
            match &mut group {
                Some((o, _, n)) if *o + *n as u64 == offset => *n += len,
                _ => {
                    if let Some((o, start, n)) = group.take() {
                        self.write_slice(start, n, o)?;
                    }
                    group = Some((offset, at, len));
                }
            }
            at += len;
        }
        match group {
            Some((o, start, n)) => self.write_slice(start, n, o),
            None => Ok(()),
        }
    }

    fn write_slice(&self, start: usize, len: usize, offset: u64) -> io::Result<()> {
        let bytes =
            self.buf.as_slice().get(start..start + len).ok_or_else(|| {
                io::Error::other(format!("{len} bytes at {start} exceed the run"))
            })?;
        self.target
            .write(bytes, offset)
            .map_err(|e| at(e, len, offset))
    }

    /// Writes the run.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.len == 0 {
            return Ok(());
        }
        let run = &self.buf.as_slice()[..self.len];
        let result = self
            .target
            .write(run, self.offset)
            .map_err(|e| at(e, self.len, self.offset));
        self.len = 0;
        result
    }
}

/// `e` with the write it failed.
fn at(e: io::Error, len: usize, offset: u64) -> io::Error {
    io::Error::new(e.kind(), format!("writing {len} bytes at {offset}: {e}"))
}

#[cfg(target_os = "linux")]
use crate::platform::same_file;

#[cfg(not(target_os = "linux"))]
fn same_file(_a: &File, _b: &File) -> bool {
    false
}

#[cfg(target_os = "linux")]
fn open_direct(path: &Path) -> Option<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .ok()
}

#[cfg(not(target_os = "linux"))]
fn open_direct(_path: &Path) -> Option<File> {
    None
}

/// Allocates `len` bytes at `offset` without changing the file's size.
#[cfg(target_os = "linux")]
fn allocate(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use nix::fcntl::{FallocateFlags, fallocate};
    let too_big = || io::Error::from(io::ErrorKind::InvalidInput);
    let offset = libc::off_t::try_from(offset).map_err(|_| too_big())?;
    let len = libc::off_t::try_from(len).map_err(|_| too_big())?;
    fallocate(file, FallocateFlags::FALLOC_FL_KEEP_SIZE, offset, len).map_err(io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn allocate(_file: &File, _offset: u64, _len: u64) -> io::Result<()> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize, seed: u8) -> Vec<u8> {
        (0..n).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect()
    }

    /// Writes runs of every shape through `target` and checks the file's bytes.
    fn write_and_check(target: &Target, path: &Path, size: u64) {
        let mut expected = vec![0u8; size as usize];
        let mut w = RunWriter::new(target);
        // Consecutive 64 KiB pieces (gathered into runs, flushed when full), a gap, a
        // piece larger than a run, a piece discarded unwritten, and an unaligned tail.
        let mut at = 0u64;
        for i in 0..70u8 {
            let piece = pattern(64 << 10, i);
            w.push(at, &piece).unwrap();
            expected[at as usize..at as usize + piece.len()].copy_from_slice(&piece);
            at += piece.len() as u64;
        }
        let big = pattern(RUN_BYTES + 8192, 99);
        let big_at = at + 65536;
        w.push(big_at, &big).unwrap();
        expected[big_at as usize..big_at as usize + big.len()].copy_from_slice(&big);
        w.push(big_at + big.len() as u64 + 4096, &pattern(8192, 5))
            .unwrap();
        w.discard();
        let tail = pattern(5 * 512, 7);
        let tail_at = size - tail.len() as u64;
        w.push(tail_at, &tail).unwrap();
        expected[tail_at as usize..].copy_from_slice(&tail);
        w.flush().unwrap();
        target.file().sync_all().unwrap();
        assert_eq!(std::fs::read(path).unwrap(), expected);
    }

    fn new_target(dir: &Path, size: u64) -> (std::path::PathBuf, File) {
        let path = dir.join("disk.img");
        let file = File::create(&path).unwrap();
        file.set_len(size).unwrap();
        (path, file)
    }

    const SIZE: u64 = 3 * RUN_BYTES as u64 + 5 * 512;

    /// Runs of any shape land where they belong, aligned or not; where the file system
    /// takes direct I/O, aligned runs go direct without falling back.
    #[test]
    fn runs_write_every_byte_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let (path, file) = new_target(dir.path(), SIZE);
        let target = Target::new(file, &path);
        let direct = target.direct.is_some();
        write_and_check(&target, &path, SIZE);
        if direct {
            assert!(
                target.direct_ok.load(Ordering::Relaxed),
                "direct writes fell back"
            );
        } else {
            eprintln!(
                "{}: no O_DIRECT here, buffered path only",
                dir.path().display()
            );
        }
    }

    /// Without a direct descriptor every run goes through the page cache.
    #[test]
    fn runs_without_direct_io_are_written_buffered() {
        let dir = tempfile::tempdir().unwrap();
        let (path, file) = new_target(dir.path(), SIZE);
        let target = Target {
            file,
            direct: None,
            direct_ok: AtomicBool::new(false),
            buffered_turn: Mutex::new(()),
            prealloc_ok: AtomicBool::new(true),
        };
        write_and_check(&target, &path, SIZE);
    }

    /// Pieces decoded into the run buffer land at their offsets, contiguous ones in one
    /// write and the others after their gap; a run with bytes waiting gives no space.
    #[test]
    fn pieces_placed_in_the_buffer_are_written_where_they_belong() {
        let dir = tempfile::tempdir().unwrap();
        let (path, file) = new_target(dir.path(), SIZE);
        let target = Target::new(file, &path);
        let mut w = RunWriter::new(&target);
        let pieces = [
            (0u64, 65536usize),
            (65536, 65536),
            (262_144, 8192),
            (SIZE - 2560, 2560),
        ];
        let total: usize = pieces.iter().map(|p| p.1).sum();
        let data = pattern(total, 42);
        w.space(total).unwrap().copy_from_slice(&data);
        w.write_pieces(pieces).unwrap();
        target.file().sync_all().unwrap();
        let mut expected = vec![0u8; SIZE as usize];
        let mut at = 0;
        for (offset, len) in pieces {
            expected[offset as usize..offset as usize + len].copy_from_slice(&data[at..at + len]);
            at += len;
        }
        assert_eq!(std::fs::read(&path).unwrap(), expected);

        assert!(w.space(RUN_BYTES + 1).is_none());
        w.push(0, &[1; 512]).unwrap();
        assert!(w.space(512).is_none(), "bytes wait in the run");
    }

    /// Preallocated ranges keep the file's size and its other ranges holes; writers on
    /// several threads then fill them (direct writes side by side), every byte in place.
    #[cfg(target_os = "linux")]
    #[test]
    fn preallocated_ranges_are_filled_by_parallel_writers() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let size = 16 * RUN_BYTES as u64;
        let (path, file) = new_target(dir.path(), size);
        let target = Target::new(file, &path);
        let run = RUN_BYTES as u64;
        // Every other run: 8 runs of data, 8 holes.
        let ranges =
            Ranges::from_unsorted((0..8).map(|i| 2 * i * run..(2 * i + 1) * run).collect());
        target.preallocate(&ranges).unwrap();
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.len(), size, "the size is unchanged");
        if target.prealloc_ok.load(Ordering::Relaxed) {
            assert!(
                meta.blocks() * 512 >= 8 * run,
                "{} bytes allocated",
                meta.blocks() * 512
            );
        }
        std::thread::scope(|s| {
            for r in ranges.as_slice() {
                let target = &target;
                s.spawn(move || {
                    let mut w = RunWriter::new(target);
                    w.push(r.start, &pattern(RUN_BYTES, (r.start / run) as u8))
                        .unwrap();
                    w.flush().unwrap();
                });
            }
        });
        target.file().sync_all().unwrap();
        let written = std::fs::read(&path).unwrap();
        for i in 0..16u64 {
            let got = &written[(i * run) as usize..((i + 1) * run) as usize];
            if i % 2 == 0 {
                assert!(got == pattern(RUN_BYTES, i as u8).as_slice(), "run {i}");
            } else {
                assert!(got.iter().all(|&b| b == 0), "hole {i}");
            }
        }
        let blocks = std::fs::metadata(&path).unwrap().blocks() * 512;
        assert!(
            blocks < 9 * run,
            "holes stay holes: {blocks} bytes allocated"
        );
    }

    /// A path replaced between the two opens gets no direct descriptor.
    #[cfg(unix)]
    #[test]
    fn a_replaced_path_gets_no_direct_descriptor() {
        let dir = tempfile::tempdir().unwrap();
        let (path, file) = new_target(dir.path(), SIZE);
        std::fs::rename(&path, dir.path().join("moved.img")).unwrap();
        File::create(&path).unwrap();
        let target = Target::new(file, &path);
        assert!(target.direct.is_none());
    }
}
