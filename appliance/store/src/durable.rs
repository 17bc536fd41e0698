//! Small file-system helpers shared by the store and the snapshots: writing a new file
//! without leaving a partial one, and making a rename durable.

use std::fs;
use std::io::Write;
use std::path::Path;

use crate::error::{Result, StoreError};

/// Writes `bytes` to a new file at `path` (which must not exist), optionally fsyncing it.
/// On any error the file is removed, so no partial file is ever left behind.
pub(crate) fn write_new(path: &Path, bytes: &[u8], fsync: bool) -> Result<()> {
    let result = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .and_then(|mut f| {
            f.write_all(bytes)?;
            if fsync {
                f.sync_all()?;
            }
            Ok(())
        });
    result.map_err(|e| {
        let _ = fs::remove_file(path);
        StoreError::io("cannot write", path, e)
    })
}

/// Writes `bytes` to a new file at `path` with no temporary name: an unnamed file
/// (`O_TMPFILE`) in `path`'s directory, linked in once complete, so a crash leaves nothing
/// behind and writers of different directories never share one. `Ok(false)` when that
/// cannot be done here (no `O_TMPFILE` on this file system, no `/proc`, the directory or the
/// name exists): the caller then uses tmp + rename.
#[cfg(target_os = "linux")]
pub(crate) fn link_new(path: &Path, bytes: &[u8]) -> Result<bool> {
    use nix::errno::Errno;
    use nix::fcntl::{AT_FDCWD, AtFlags, OFlag};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;

    let Some(dir) = path.parent() else {
        return Ok(false);
    };
    let opened = fs::OpenOptions::new()
        .write(true)
        .custom_flags(OFlag::O_TMPFILE.bits())
        .open(dir);
    let file = match opened {
        Ok(f) => f,
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                || matches!(
                    Errno::from_raw(e.raw_os_error().unwrap_or(0)),
                    Errno::EOPNOTSUPP | Errno::EISDIR | Errno::EINVAL
                ) =>
        {
            return Ok(false);
        }
        Err(e) => return Err(StoreError::io("cannot create an unnamed file in", dir, e)),
    };
    direct::write(&file, bytes).map_err(|e| StoreError::io("cannot write", path, e))?;
    let fd_path = format!("/proc/self/fd/{}", file.as_raw_fd());
    match nix::unistd::linkat(
        AT_FDCWD,
        fd_path.as_str(),
        AT_FDCWD,
        path,
        AtFlags::AT_SYMLINK_FOLLOW,
    ) {
        Ok(()) => Ok(true),
        Err(Errno::EEXIST | Errno::ENOENT) => Ok(false),
        Err(e) => Err(StoreError::io("cannot link", path, e.into())),
    }
}

/// Chunk files written around the page cache.
///
/// A backup writes gigabytes of chunks that the box will not read again soon (a restore
/// comes days later, if ever). Through the page cache, every written page is first a
/// freshly allocated page of memory, and filling those was most of the box's kernel time
/// (on the bench machine, a VM whose host hands out guest memory on first touch: 3.1–3.7 s
/// of system time per GiB written as 1 MiB files, 0.2 s with direct writes). So a chunk of
/// [`direct::MIN`] or more has its aligned head written with `O_DIRECT` (switched on the
/// unnamed file's descriptor with `fcntl`) from an aligned buffer, and its tail through the
/// page cache. A file system that refuses direct I/O gets the whole chunk buffered. The
/// store's fsync discipline is unchanged: `syncfs` before a commit covers both kinds.
///
/// Reading is the mirror image: a restore reads gigabytes of chunks once, so a chunk file
/// of [`direct::MIN`] or more is read with `O_DIRECT` into an aligned buffer and copied
/// out (reading it into fresh page-cache pages cost a restore 2.8 s of the box's CPU per
/// GiB on the bench machine); the kernel writes back any of its pages still dirty first.
#[cfg(target_os = "linux")]
pub(crate) mod direct {
    use std::fs::{File, OpenOptions};
    use std::io::{self, Read};
    use std::os::unix::fs::{FileExt, OpenOptionsExt};
    use std::path::Path;
    use std::sync::Mutex;

    use nix::fcntl::{FcntlArg, OFlag, fcntl};

    use crate::aligned::{ALIGN, AlignedBuf};

    /// Chunks at least this long go direct; smaller ones (image chunks) are not worth it.
    pub const MIN: usize = 256 << 10;
    /// Size of the aligned buffers; a longer chunk is written in pieces of this size.
    const PIECE: usize = 4 << 20;
    /// Buffers kept between writes; more writers at once use buffers of their own.
    const KEPT: usize = 4;

    static BUFFERS: Mutex<Vec<AlignedBuf>> = Mutex::new(Vec::new());

    /// Writes `bytes` to the new, empty `file` from offset 0.
    pub fn write(file: &File, bytes: &[u8]) -> io::Result<()> {
        let head = if bytes.len() >= MIN {
            bytes.len() / ALIGN * ALIGN
        } else {
            0
        };
        let done = if head > 0 && set_direct(file, true) {
            let result = write_head(file, &bytes[..head]);
            if !set_direct(file, false) {
                return Err(io::Error::other("cannot switch direct I/O off again"));
            }
            match result {
                Ok(()) => head,
                // Alignment rules stricter than ALIGN: everything through the page cache.
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => 0,
                Err(e) => return Err(e),
            }
        } else {
            0
        };
        file.write_all_at(&bytes[done..], done as u64)
    }

    /// Appends the whole file at `path` to `out`; a long one read around the page cache.
    /// On an error, `out` is as it was.
    pub fn read_into(path: &Path, out: &mut Vec<u8>) -> io::Result<()> {
        let before = out.len();
        let result = append(path, out);
        if result.is_err() {
            out.truncate(before);
        }
        result
    }

    fn append(path: &Path, out: &mut Vec<u8>) -> io::Result<()> {
        let mut file = match OpenOptions::new()
            .read(true)
            .custom_flags(OFlag::O_DIRECT.bits())
            .open(path)
        {
            Ok(f) => f,
            // A file system without direct I/O (tmpfs before Linux 6.6).
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => File::open(path)?,
            Err(e) => return Err(e),
        };
        let size = usize::try_from(file.metadata()?.len())
            .map_err(|_| io::Error::other("the chunk file is too large"))?;
        out.reserve(size);
        let start = out.len();
        if size < MIN {
            if !set_direct(&file, false) {
                file = File::open(path)?;
            }
            file.read_to_end(out)?;
            return Ok(());
        }
        let mut buf = take_buffer();
        let result = loop {
            let done = out.len() - start;
            if done >= size {
                break Ok(());
            }
            if !done.is_multiple_of(ALIGN) {
                // A short read before the end (some file systems do that): the rest
                // through the page cache, where any offset will do.
                if !set_direct(&file, false) {
                    break Err(io::Error::other("cannot switch direct I/O off"));
                }
                break read_rest(&file, out, start);
            }
            // Whole aligned pieces; the last read returns what is left of the file.
            let want = read_len(size, done, buf.len());
            match file.read_at(&mut buf.as_mut_slice()[..want], done as u64) {
                Ok(0) => break Ok(()),
                Ok(n) => out.extend_from_slice(&buf.as_slice()[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        give_back(buf);
        match result {
            Ok(()) => Ok(()),
            // Alignment rules stricter than ALIGN: read it through the page cache.
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                out.truncate(start);
                File::open(path)?.read_to_end(out).map(|_| ())
            }
            Err(e) => Err(e),
        }
    }

    /// How much a direct read at `done` of a file of `size` bytes asks for, with a buffer
    /// of `buf_len` (a multiple of [`ALIGN`]): the rest of the file rounded up to [`ALIGN`],
    /// never the whole buffer. For the part of a direct read past the end of the file, the
    /// kernel zero-fills the buffer before cutting the read short: reading 1 MiB chunks
    /// into the 4 MiB buffer spent an eighth of the box's CPU in a restore on that.
    pub(super) fn read_len(size: usize, done: usize, buf_len: usize) -> usize {
        size.saturating_sub(done)
            .next_multiple_of(ALIGN)
            .min(buf_len)
    }

    /// Appends the rest of `file`, whose bytes start at `out[start]`, read through the page
    /// cache.
    fn read_rest(file: &File, out: &mut Vec<u8>, start: usize) -> io::Result<()> {
        let mut piece = vec![0u8; 64 << 10];
        loop {
            match file.read_at(&mut piece, (out.len() - start) as u64) {
                Ok(0) => return Ok(()),
                Ok(n) => out.extend_from_slice(&piece[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Switches `O_DIRECT` on or off; false when the file system refuses.
    fn set_direct(file: &File, on: bool) -> bool {
        let Ok(bits) = fcntl(file, FcntlArg::F_GETFL) else {
            return false;
        };
        let mut flags = OFlag::from_bits_truncate(bits);
        flags.set(OFlag::O_DIRECT, on);
        fcntl(file, FcntlArg::F_SETFL(flags)).is_ok()
    }

    /// `head` (a multiple of [`ALIGN`] long) through an aligned buffer, piece by piece.
    fn write_head(file: &File, head: &[u8]) -> io::Result<()> {
        let mut buf = take_buffer();
        let mut result = Ok(());
        for (i, piece) in head.chunks(PIECE).enumerate() {
            let out = &mut buf.as_mut_slice()[..piece.len()];
            out.copy_from_slice(piece);
            result = file.write_all_at(out, (i * PIECE) as u64);
            if result.is_err() {
                break;
            }
        }
        give_back(buf);
        result
    }

    /// A kept aligned buffer of [`PIECE`] bytes, or a new one.
    fn take_buffer() -> AlignedBuf {
        BUFFERS
            .lock()
            .ok()
            .and_then(|mut kept| kept.pop())
            .unwrap_or_else(|| AlignedBuf::new(PIECE))
    }

    /// Keeps `buf` for the next write or read, unless [`KEPT`] are kept already.
    fn give_back(buf: AlignedBuf) {
        if let Ok(mut kept) = BUFFERS.lock()
            && kept.len() < KEPT
        {
            kept.push(buf);
        }
    }
}

/// Fsyncs a directory so that renames and unlinks in it survive a power cut.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("cannot sync directory", dir, e))
}

/// Creates a directory (and parents) if missing.
pub(crate) fn ensure_dir(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir).map_err(|e| StoreError::io("cannot create directory", dir, e))
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn link_new_writes_a_whole_file_and_never_replaces_a_name() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chunk");
        // The test directory's file system may lack O_TMPFILE: then nothing is written.
        if !link_new(&path, b"content").unwrap() {
            assert!(!path.exists());
            return;
        }
        assert_eq!(fs::read(&path).unwrap(), b"content");
        assert!(!link_new(&path, b"other").unwrap());
        assert_eq!(fs::read(&path).unwrap(), b"content");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(!link_new(&dir.path().join("no-such-dir/chunk"), b"x").unwrap());
    }

    /// A direct read asks for the file's rest rounded up to the alignment, never for more
    /// of the buffer: the kernel would zero-fill what lies past the end of the file.
    #[cfg(target_os = "linux")]
    #[test]
    fn direct_reads_ask_for_the_rest_of_the_file_only() {
        let piece = 4 << 20;
        assert_eq!(direct::read_len(1_000_000, 0, piece), 1_003_520);
        assert_eq!(direct::read_len(4096, 0, piece), 4096);
        assert_eq!(direct::read_len(9 << 20, 0, piece), piece);
        assert_eq!(direct::read_len(9 << 20, 8 << 20, piece), 1 << 20);
        assert_eq!(direct::read_len((9 << 20) - 3, 8 << 20, piece), 1 << 20);
        assert_eq!(direct::read_len(100, 4096, piece), 0);
    }

    /// Chunks of every length around the direct-I/O limits are written whole (short ones
    /// buffered, long ones with a direct head, in pieces past 4 MiB, and a buffered tail)
    /// and read back whole.
    #[test]
    fn chunk_files_of_every_length_are_written_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut x = 7u64;
        let data: Vec<u8> = (0..9 << 20)
            .map(|_| {
                x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
                (x >> 56) as u8
            })
            .collect();
        let lens = [
            0,
            1,
            direct::MIN - 1,
            direct::MIN,
            direct::MIN + 1,
            4 << 20,
            (4 << 20) + 4096,
            (9 << 20) - 3,
        ];
        for (i, len) in lens.into_iter().enumerate() {
            let path = dir.path().join(format!("chunk{i}"));
            let file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
                .unwrap();
            direct::write(&file, &data[..len]).unwrap();
            drop(file);
            assert!(fs::read(&path).unwrap() == data[..len], "length {len}");
            let mut out = b"before".to_vec();
            direct::read_into(&path, &mut out).unwrap();
            assert!(out[6..] == data[..len], "read back, length {len}");
            assert_eq!(&out[..6], b"before", "appended");
        }
    }
}
