//! Restoring files and folders from inside an image backup: the volume's ext4 or NTFS file
//! system is read from the box's chunks (abri-fsread over `ImageReader`), nothing is
//! mounted, and the chosen paths are recreated under a target directory.
//!
//! Safety as in file-mode restores: names from the image are untrusted, so each must be a
//! single clean component, and everything is created relative to directory handles opened
//! with `O_NOFOLLOW`, new files with `O_EXCL`: a symlink is never followed. Existing
//! files are left alone (and counted). Owners are restored as root only; modes and
//! modification times always.

use abri_fsread::{EntryKind, FileSystem, FsEntry, ReadAt, Slice};
use abri_store::{ChunkSource, Digest, ImageInfo, ImageReader};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::platform;
use crate::progress::Counters;
use crate::restore::{RestoreError, RestoreReport};

/// Deepest folder nesting restored (a hostile image cannot make the walk unbounded).
const MAX_DEPTH: usize = 256;

struct ImageBytes<S: ChunkSource>(ImageReader<S>);

impl<S: ChunkSource + Send + Sync> ReadAt for ImageBytes<S> {
    fn size(&self) -> u64 {
        self.0.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.0
            .read_at(offset, buf)
            .map_err(|e| std::io::Error::other(e.to_string()))
    }
}

fn io(path: &[u8], source: std::io::Error) -> RestoreError {
    RestoreError::Io {
        path: String::from_utf8_lossy(path).into_owned(),
        source,
    }
}

/// Opens the file system of volume `number` of an image.
pub fn open_volume<S: ChunkSource + Send + Sync + 'static>(
    source: S,
    catalog: Vec<Digest>,
    info: ImageInfo,
    number: u32,
) -> Result<Box<dyn FileSystem>, RestoreError> {
    let volume = info
        .volumes
        .iter()
        .find(|v| v.number == number)
        .cloned()
        .ok_or_else(|| RestoreError::BadPath {
            path: format!("{}#{number}", info.name),
            reason: "the image has no such volume".into(),
        })?;
    let reader = ImageReader::open(source, catalog, info).map_err(RestoreError::Catalog)?;
    let whole: Arc<dyn ReadAt> = Arc::new(ImageBytes(reader));
    let slice =
        Slice::new(whole, volume.start, volume.size).map_err(|e| io(volume.label.as_bytes(), e))?;
    abri_fsread::open_fs(Arc::new(slice)).map_err(|e| RestoreError::BadPath {
        path: format!("volume {number}"),
        reason: format!("its file system cannot be read: {e}"),
    })
}

/// Restores `paths` (file system paths such as `/home/ann`; `/` for everything) of `fs`
/// into `target`, each under its own name.
pub fn restore_paths(
    fs: &dyn FileSystem,
    paths: &[String],
    target: &Path,
    as_root: bool,
    counters: &Counters,
) -> Result<RestoreReport, RestoreError> {
    std::fs::create_dir_all(target).map_err(|e| RestoreError::Target {
        path: target.to_path_buf(),
        source: e,
    })?;
    let root = platform::open_dir_at(None, target.as_os_str().as_bytes()).map_err(|e| {
        RestoreError::Target {
            path: target.to_path_buf(),
            source: e,
        }
    })?;
    let mut w = Writer {
        fs,
        as_root,
        counters,
        report: RestoreReport::default(),
    };
    let wanted: Vec<String> = if paths.is_empty() {
        vec!["/".into()]
    } else {
        paths.to_vec()
    };
    for p in wanted {
        let clean = clean_path(&p)?;
        let entry = fs.stat(&clean).map_err(|e| RestoreError::BadPath {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        if clean == b"/" {
            // The volume's root: its children go straight into the target.
            w.children(&clean, root.as_fd(), 0)?;
        } else {
            w.entry(&clean, &entry, root.as_fd(), 0)?;
        }
    }
    Ok(w.report)
}

/// `/a/b` from user text; refuses `.`/`..` components.
fn clean_path(p: &str) -> Result<Vec<u8>, RestoreError> {
    let mut out = Vec::new();
    for part in p.split('/').filter(|s| !s.is_empty()) {
        if part == "." || part == ".." || part.contains('\0') {
            return Err(RestoreError::BadPath {
                path: p.into(),
                reason: "'.' and '..' are not allowed".into(),
            });
        }
        out.push(b'/');
        out.extend_from_slice(part.as_bytes());
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Ok(out)
}

/// A name from the image, usable as one path component.
fn safe_name(e: &FsEntry) -> Option<&[u8]> {
    let n = e.raw_name.as_slice();
    let ok = !n.is_empty() && n != b"." && n != b".." && !n.contains(&b'/') && !n.contains(&0);
    ok.then_some(n)
}

struct Writer<'a> {
    fs: &'a dyn FileSystem,
    as_root: bool,
    counters: &'a Counters,
    report: RestoreReport,
}

impl Writer<'_> {
    fn children(
        &mut self,
        dir: &[u8],
        fd: BorrowedFd<'_>,
        depth: usize,
    ) -> Result<(), RestoreError> {
        if depth > MAX_DEPTH {
            return Err(RestoreError::BadPath {
                path: String::from_utf8_lossy(dir).into_owned(),
                reason: "folders are nested too deep".into(),
            });
        }
        let entries = self.fs.list_dir(dir).map_err(|e| RestoreError::BadPath {
            path: String::from_utf8_lossy(dir).into_owned(),
            reason: e.to_string(),
        })?;
        for e in entries {
            let mut p = dir.to_vec();
            if p.last() != Some(&b'/') {
                p.push(b'/');
            }
            p.extend_from_slice(&e.raw_name);
            self.entry(&p, &e, fd, depth + 1)?;
        }
        Ok(())
    }

    fn entry(
        &mut self,
        path: &[u8],
        e: &FsEntry,
        parent: BorrowedFd<'_>,
        depth: usize,
    ) -> Result<(), RestoreError> {
        if self.counters.is_cancelled() {
            return Err(RestoreError::Cancelled);
        }
        let Some(name) = safe_name(e) else {
            self.counters.warn(format!(
                "skipped {:?}: its name cannot be a file name here",
                String::from_utf8_lossy(path)
            ));
            self.report.warnings += 1;
            return Ok(());
        };
        self.counters.files_scanned.fetch_add(1, Ordering::Relaxed);
        let mode = e.mode.map(|m| m & 0o7777);
        match e.kind {
            EntryKind::Dir => {
                match platform::mkdir_at(parent, name, 0o700) {
                    Ok(()) => {}
                    Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(err) => return Err(io(path, err)),
                }
                let fd: OwnedFd = platform::open_dir_at(Some(parent), name).map_err(|err| {
                    // A symlink (or file) where a folder goes: never followed.
                    io(path, err)
                })?;
                self.children(path, fd.as_fd(), depth)?;
                self.meta_fd(fd.as_fd(), e, mode.unwrap_or(0o755));
                self.report.entries += 1;
            }
            EntryKind::File => {
                let file = match platform::create_file_at(parent, name, 0o600) {
                    Ok(f) => f,
                    Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                        self.report.skipped_existing += 1;
                        return Ok(());
                    }
                    Err(err) => return Err(io(path, err)),
                };
                self.counters.set_current(&String::from_utf8_lossy(path));
                let mut reader = self
                    .fs
                    .read_file(path)
                    .map_err(|err| RestoreError::BadPath {
                        path: String::from_utf8_lossy(path).into_owned(),
                        reason: err.to_string(),
                    })?;
                let mut buf = vec![0u8; 1 << 20];
                let mut out = &file;
                loop {
                    let n = reader.read(&mut buf).map_err(|err| io(path, err))?;
                    if n == 0 {
                        break;
                    }
                    std::io::Write::write_all(&mut out, &buf[..n]).map_err(|err| io(path, err))?;
                    self.counters
                        .bytes_read
                        .fetch_add(n as u64, Ordering::Relaxed);
                    self.report.bytes += n as u64;
                }
                self.meta_fd(file.as_fd(), e, mode.unwrap_or(0o644));
                self.report.files += 1;
                self.report.entries += 1;
            }
            EntryKind::Symlink => {
                let target = self
                    .fs
                    .read_link(path)
                    .map_err(|err| RestoreError::BadPath {
                        path: String::from_utf8_lossy(path).into_owned(),
                        reason: err.to_string(),
                    })?;
                match platform::symlink_at(parent, name, &target) {
                    Ok(()) => self.report.entries += 1,
                    Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                        self.report.skipped_existing += 1;
                    }
                    Err(err) => return Err(io(path, err)),
                }
            }
            EntryKind::Other => {
                self.counters.warn(format!(
                    "skipped {:?}: special files are not restored from images",
                    String::from_utf8_lossy(path)
                ));
                self.report.warnings += 1;
            }
        }
        Ok(())
    }

    fn meta_fd(&mut self, fd: BorrowedFd<'_>, e: &FsEntry, mode: u32) {
        if self.as_root
            && let (Some(uid), Some(gid)) = (e.uid, e.gid)
            && let Err(err) = platform::chown_fd(fd, uid, gid)
        {
            self.counters
                .warn(format!("cannot set the owner of {}: {err}", e.name));
        }
        if let Err(err) = platform::chmod_fd(fd, mode) {
            self.counters
                .warn(format!("cannot set the mode of {}: {err}", e.name));
        }
        if let Some(mtime) = e.mtime_ns {
            let atime = e.atime_ns.unwrap_or(mtime);
            if let Err(err) = platform::set_times_fd(fd, atime, mtime) {
                self.counters
                    .warn(format!("cannot set the times of {}: {err}", e.name));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_cleaned_and_dot_dot_refused() {
        assert_eq!(clean_path("").unwrap(), b"/");
        assert_eq!(clean_path("/home//ann/").unwrap(), b"/home/ann");
        assert!(clean_path("/home/../etc").is_err());
    }
}
