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
    let mut file = match opened {
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
    file.write_all(bytes)
        .map_err(|e| StoreError::io("cannot write", path, e))?;
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
}
