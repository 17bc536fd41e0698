//! Restoring files and folders from inside an image backup: the volume's ext4 or NTFS file
//! system is read from the box's chunks (abri-fsread over `ImageReader`), nothing is
//! mounted, and the chosen paths are recreated under a target directory.
//!
//! Safety as in file-mode restores: names from the image are untrusted, so each must be a
//! single clean component, and everything is created relative to directory handles opened
//! with `O_NOFOLLOW`, new files with `O_EXCL`: a symlink is never followed. Existing
//! files are left alone (and counted). Owners are restored as root only; modes and
//! modification times always.
//!
//! On Windows (see [`Dir`]) folders are created by `\\?\` path, a folder that already
//! exists is entered only when it is a real folder (no junction or link), new files are
//! created with `CREATE_NEW`, and names Windows cannot hold (`a:b`, `x?`) are skipped with
//! a warning. Symbolic links are skipped (they need a privilege and mean another thing
//! there); times are restored, Unix modes and owners are not.

use abri_fsread::{EntryKind, FileSystem, FsEntry, ReadAt, Slice};
use abri_store::{ChunkSource, Digest, ImageInfo, ImageReader};
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;

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
    // `/` (the original place) means nothing for a Linux volume's files on Windows.
    if cfg!(windows) && !target.is_absolute() {
        return Err(RestoreError::Target {
            path: target.to_path_buf(),
            source: std::io::Error::other("give a folder such as D:\\restored"),
        });
    }
    std::fs::create_dir_all(target).map_err(|e| RestoreError::Target {
        path: target.to_path_buf(),
        source: e,
    })?;
    let root = Dir::open_root(target).map_err(|e| RestoreError::Target {
        path: target.to_path_buf(),
        source: e,
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
            w.children(&clean, &root, 0)?;
        } else {
            w.entry(&clean, &entry, &root, 0)?;
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

/// A name from the image, usable as one path component here.
fn safe_name(e: &FsEntry) -> Option<&[u8]> {
    let n = e.raw_name.as_slice();
    let ok = !n.is_empty() && n != b"." && n != b".." && !n.contains(&b'/') && !n.contains(&0);
    (ok && (cfg!(unix) || windows_name_ok(n))).then_some(n)
}

/// Whether Windows can hold `name` (with `\\?\` paths, so reserved device names and
/// trailing dots are fine): no separator, no `:` (a stream), no wildcard or control
/// character.
fn windows_name_ok(name: &[u8]) -> bool {
    !name
        .iter()
        .any(|&b| b < 0x20 || matches!(b, b'\\' | b':' | b'*' | b'?' | b'"' | b'<' | b'>' | b'|'))
}

struct Writer<'a> {
    fs: &'a dyn FileSystem,
    /// Restore owners (Unix only: Unix owners mean nothing on Windows).
    #[cfg_attr(not(unix), allow(dead_code))]
    as_root: bool,
    counters: &'a Counters,
    report: RestoreReport,
}

impl Writer<'_> {
    fn children(&mut self, dir: &[u8], fd: &Dir, depth: usize) -> Result<(), RestoreError> {
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
        parent: &Dir,
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
                // A symlink (or file) where a folder goes is never followed.
                let dir = parent.subdir(name).map_err(|err| io(path, err))?;
                self.children(path, &dir, depth)?;
                self.meta(dir.meta_target(), e, mode.unwrap_or(0o755));
                self.report.entries += 1;
            }
            EntryKind::File => {
                let file = match parent.create_file(name) {
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
                self.meta(MetaTarget::File(&file), e, mode.unwrap_or(0o644));
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
                match parent.symlink(name, &target) {
                    Ok(()) => self.report.entries += 1,
                    Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                        self.report.skipped_existing += 1;
                    }
                    Err(err) if err.kind() == std::io::ErrorKind::Unsupported => {
                        self.counters.warn(format!(
                            "skipped the symbolic link {:?}: {err}",
                            String::from_utf8_lossy(path)
                        ));
                        self.report.warnings += 1;
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

    #[cfg(unix)]
    fn meta(&mut self, target: MetaTarget<'_>, e: &FsEntry, mode: u32) {
        use crate::platform;
        use std::os::fd::AsFd;
        let fd = match target {
            MetaTarget::File(f) => f.as_fd(),
            MetaTarget::Dir(d) => d.0.as_fd(),
        };
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

    /// Times only: Unix modes and owners mean nothing to Windows.
    #[cfg(windows)]
    fn meta(&mut self, target: MetaTarget<'_>, e: &FsEntry, _mode: u32) {
        let Some(mtime) = e.mtime_ns else { return };
        let atime = e.atime_ns.unwrap_or(mtime);
        let at = |ns: i64| {
            let d = std::time::Duration::from_nanos(ns.unsigned_abs());
            if ns >= 0 {
                std::time::UNIX_EPOCH + d
            } else {
                std::time::UNIX_EPOCH - d
            }
        };
        let times = std::fs::FileTimes::new()
            .set_modified(at(mtime))
            .set_accessed(at(atime));
        let result = match target {
            MetaTarget::File(f) => f.set_times(times),
            MetaTarget::Dir(d) => d.open_for_times().and_then(|f| f.set_times(times)),
        };
        if let Err(err) = result {
            self.counters
                .warn(format!("cannot set the times of {}: {err}", e.name));
        }
    }
}

/// What restored metadata is set on.
enum MetaTarget<'a> {
    File(&'a File),
    Dir(&'a Dir),
}

/// A folder being restored into: a handle opened with `O_NOFOLLOW` (Unix), or a `\\?\`
/// path checked to be a real folder (Windows).
#[cfg(unix)]
struct Dir(std::os::fd::OwnedFd);

#[cfg(unix)]
impl Dir {
    fn open_root(target: &Path) -> std::io::Result<Dir> {
        use std::os::unix::ffi::OsStrExt;
        crate::platform::open_dir_at(None, target.as_os_str().as_bytes()).map(Dir)
    }

    fn subdir(&self, name: &[u8]) -> std::io::Result<Dir> {
        use crate::platform;
        use std::os::fd::AsFd;
        match platform::mkdir_at(self.0.as_fd(), name, 0o700) {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(err),
        }
        platform::open_dir_at(Some(self.0.as_fd()), name).map(Dir)
    }

    fn create_file(&self, name: &[u8]) -> std::io::Result<File> {
        use std::os::fd::AsFd;
        crate::platform::create_file_at(self.0.as_fd(), name, 0o600)
    }

    fn symlink(&self, name: &[u8], target: &[u8]) -> std::io::Result<()> {
        use std::os::fd::AsFd;
        crate::platform::symlink_at(self.0.as_fd(), name, target)
    }

    fn meta_target(&self) -> MetaTarget<'_> {
        MetaTarget::Dir(self)
    }
}

#[cfg(windows)]
struct Dir(std::path::PathBuf);

#[cfg(windows)]
impl Dir {
    fn open_root(target: &Path) -> std::io::Result<Dir> {
        let dir = Dir(crate::platform::windows::verbatim(target));
        dir.check_real_folder()?;
        Ok(dir)
    }

    /// A folder, not a link, a junction or a file.
    fn check_real_folder(&self) -> std::io::Result<()> {
        use std::os::windows::fs::MetadataExt;
        const REPARSE_POINT: u32 = 0x400;
        let m = std::fs::symlink_metadata(&self.0)?;
        if !m.is_dir() || m.file_attributes() & REPARSE_POINT != 0 {
            return Err(std::io::Error::other(format!(
                "{} is not a folder (a link, a junction or a file): not entered",
                self.0.display()
            )));
        }
        Ok(())
    }

    fn child(&self, name: &[u8]) -> std::path::PathBuf {
        self.0.join(crate::platform::bytes_os(name))
    }

    fn subdir(&self, name: &[u8]) -> std::io::Result<Dir> {
        let dir = Dir(self.child(name));
        match std::fs::create_dir(&dir.0) {
            Ok(()) => Ok(dir),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                dir.check_real_folder()?;
                Ok(dir)
            }
            Err(err) => Err(err),
        }
    }

    fn create_file(&self, name: &[u8]) -> std::io::Result<File> {
        // CREATE_NEW: fails on any existing name, a link included, never opens through it.
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(self.child(name))
    }

    fn symlink(&self, _name: &[u8], _target: &[u8]) -> std::io::Result<()> {
        Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "Linux symbolic links are not recreated on Windows",
        ))
    }

    fn meta_target(&self) -> MetaTarget<'_> {
        MetaTarget::Dir(self)
    }

    fn open_for_times(&self) -> std::io::Result<File> {
        use std::os::windows::fs::OpenOptionsExt;
        const FILE_WRITE_ATTRIBUTES: u32 = 0x100;
        const FILE_FLAG_BACKUP_SEMANTICS: u32 = 0x0200_0000;
        const FILE_FLAG_OPEN_REPARSE_POINT: u32 = 0x0020_0000;
        std::fs::OpenOptions::new()
            .access_mode(FILE_WRITE_ATTRIBUTES)
            .custom_flags(FILE_FLAG_BACKUP_SEMANTICS | FILE_FLAG_OPEN_REPARSE_POINT)
            .open(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_names_are_checked() {
        assert!(windows_name_ok(b"CON"));
        assert!(windows_name_ok("été.txt".as_bytes()));
        assert!(windows_name_ok(b"trailing."));
        for bad in [&b"a:b"[..], b"x?", b"back\\slash", b"tab\t", b"p|q", b"<>"] {
            assert!(!windows_name_ok(bad), "{bad:?}");
        }
    }

    #[test]
    fn paths_are_cleaned_and_dot_dot_refused() {
        assert_eq!(clean_path("").unwrap(), b"/");
        assert_eq!(clean_path("/home//ann/").unwrap(), b"/home/ann");
        assert!(clean_path("/home/../etc").is_err());
    }
}
