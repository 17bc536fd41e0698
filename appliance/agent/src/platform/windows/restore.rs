//! The Windows restorer: the rules of `crate::restore` with Windows handles and metadata.
//!
//! Where things go. With the target `/` (the original place) a catalog path `C/Users/x`
//! is restored to `C:\Users\x`; with a folder target it goes to `<target>\C\Users\x`.
//!
//! Never through a link. Each directory on the way is opened as itself
//! (`FILE_FLAG_OPEN_REPARSE_POINT`) and refused when it is a symbolic link or a junction,
//! and its handle is kept open without delete sharing while the restore works below it, so
//! nobody can swap it for a link meanwhile: the path-based calls below stay inside.
//!
//! Names that differ only by case. Windows directories ignore case, a catalog (made on
//! Linux, or from a case-sensitive directory) may not: the second of `README.txt` and
//! `Readme.txt` is restored as `Readme (case 2).txt` with a warning naming both.
//!
//! Metadata. Files get their data (a sparse file stays sparse), then times and attributes
//! through one handle, then the security descriptor (owner, group, DACL; without the
//! privilege to set another owner, the DACL alone, with a warning). Directories get theirs
//! after their children, so a read-only DACL does not stop the restore below it.

use abri_store::{CatalogReader, ChunkSource, Digest, Entry, EntryKind};
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::windows::ffi::OsStringExt;
use std::os::windows::fs::{FileExt, OpenOptionsExt};
use std::os::windows::io::AsRawHandle;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;

use windows_sys::Win32::Security as sec;
use windows_sys::Win32::Storage::FileSystem as fs;
use windows_sys::Win32::System::IO::DeviceIoControl;
use windows_sys::Win32::System::Ioctl as ioctl;

use super::metadata::{SECURITY_PARTS, ns_to_filetime};
use super::win::check;
use crate::platform::reparse::{self, Link};
use crate::platform::winpath;
use crate::prefetch::ChunkCache;
use crate::progress::Counters;
use crate::restore::{RestoreError, RestoreOptions, RestoreReport, is_under, split_parent, text};

/// Attributes a restore sets (the others describe the object and follow from its kind).
const SETTABLE_ATTRIBUTES: u32 = fs::FILE_ATTRIBUTE_READONLY
    | fs::FILE_ATTRIBUTE_HIDDEN
    | fs::FILE_ATTRIBUTE_SYSTEM
    | fs::FILE_ATTRIBUTE_ARCHIVE
    | fs::FILE_ATTRIBUTE_TEMPORARY
    | fs::FILE_ATTRIBUTE_OFFLINE
    | fs::FILE_ATTRIBUTE_NOT_CONTENT_INDEXED;

/// Restores `catalog` from `source` according to `opts`.
pub fn restore_from<S: ChunkSource>(
    source: &S,
    catalog: Vec<Digest>,
    opts: &RestoreOptions,
    counters: &Counters,
) -> Result<RestoreReport, RestoreError> {
    super::enable_backup_privileges();
    let t = opts.target.as_os_str();
    let root = if t == "/" || t == "\\" {
        None
    } else {
        let target = super::verbatim(
            &std::path::absolute(&opts.target).unwrap_or_else(|_| opts.target.clone()),
        );
        std::fs::create_dir_all(&target).map_err(|source| RestoreError::Target {
            path: opts.target.clone(),
            source,
        })?;
        // The target itself is the user's choice and may be reached through a link.
        let handle = open_dir(&target, true).map_err(|source| RestoreError::Target {
            path: opts.target.clone(),
            source,
        })?;
        Some(Frame::new(Vec::new(), target, handle))
    };
    let mut r = Restorer {
        source,
        opts,
        counters,
        root,
        chain: Vec::new(),
        dirs: Vec::new(),
        cache: ChunkCache::new(),
        restored: HashMap::new(),
        unselected_links: HashMap::new(),
        report: RestoreReport::default(),
        refused: 0,
        first_refused: None,
        owner_warned: false,
    };
    for entry in CatalogReader::new(source, catalog) {
        if counters.is_cancelled() {
            return Err(RestoreError::Cancelled);
        }
        let entry = entry.map_err(RestoreError::Catalog)?;
        r.entry(entry)?;
    }
    r.finish_dirs(&[]);
    r.report.warnings = counters.warnings.load(Ordering::Relaxed);
    if r.refused > 0 {
        return Err(RestoreError::Unsafe {
            count: r.refused,
            first: r.first_refused.unwrap_or_default(),
        });
    }
    Ok(r.report)
}

/// An open directory on the way down, with the names this restore gave its children.
struct Frame {
    /// Catalog name of this directory.
    name: Vec<u8>,
    path: PathBuf,
    /// Kept open without delete sharing: the directory cannot be renamed or replaced.
    _handle: File,
    /// Case keys of the names restored here by this run.
    keys: HashSet<Vec<u16>>,
    /// Catalog name -> the name actually used, when a case collision renamed it.
    renamed: HashMap<Vec<u8>, OsString>,
}

impl Frame {
    fn new(name: Vec<u8>, path: PathBuf, handle: File) -> Self {
        Frame {
            name,
            path,
            _handle: handle,
            keys: HashSet::new(),
            renamed: HashMap::new(),
        }
    }

    fn child(&self, name: &[u8]) -> PathBuf {
        match self.renamed.get(name) {
            Some(actual) => self.path.join(actual),
            None => self
                .path
                .join(OsString::from_wide(&winpath::bytes_to_utf16(name))),
        }
    }
}

/// Opens a directory as itself; refuses a link unless `follow` (the target only).
fn open_dir(path: &Path, follow: bool) -> io::Result<File> {
    let mut flags = fs::FILE_FLAG_BACKUP_SEMANTICS;
    if !follow {
        flags |= fs::FILE_FLAG_OPEN_REPARSE_POINT;
    }
    let file = OpenOptions::new()
        .access_mode(fs::FILE_READ_ATTRIBUTES)
        .share_mode(fs::FILE_SHARE_READ | fs::FILE_SHARE_WRITE)
        .custom_flags(flags)
        .open(path)?;
    let attrs = file.metadata()?.file_attributes_raw();
    if attrs & fs::FILE_ATTRIBUTE_REPARSE_POINT != 0 && !follow {
        return Err(io::Error::new(io::ErrorKind::Other, LinkOnTheWay));
    }
    if attrs & fs::FILE_ATTRIBUTE_DIRECTORY == 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotADirectory,
            "not a directory",
        ));
    }
    Ok(file)
}

/// The error of [`open_dir`] for a link where a directory should be.
#[derive(Debug)]
struct LinkOnTheWay;

impl std::fmt::Display for LinkOnTheWay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a symbolic link or junction")
    }
}

impl std::error::Error for LinkOnTheWay {}

trait RawAttributes {
    fn file_attributes_raw(&self) -> u32;
}

impl RawAttributes for std::fs::Metadata {
    fn file_attributes_raw(&self) -> u32 {
        std::os::windows::fs::MetadataExt::file_attributes(self)
    }
}

/// A directory whose metadata is applied once its subtree is done.
struct OpenDir {
    catalog: Vec<u8>,
    path: PathBuf,
    entry: Entry,
    apply: bool,
}

enum Parent {
    Open,
    Skip,
    Refused,
}

struct Restorer<'a, S: ChunkSource> {
    source: &'a S,
    opts: &'a RestoreOptions,
    counters: &'a Counters,
    /// The target folder; `None` for the original place (the first name is a drive).
    root: Option<Frame>,
    chain: Vec<Frame>,
    dirs: Vec<OpenDir>,
    cache: ChunkCache<Arc<Vec<u8>>>,
    /// Catalog path of a restored file -> where it was restored (for hard links).
    restored: HashMap<Vec<u8>, PathBuf>,
    unselected_links: HashMap<Vec<u8>, Entry>,
    report: RestoreReport,
    refused: u64,
    first_refused: Option<String>,
    owner_warned: bool,
}

impl<S: ChunkSource> Restorer<'_, S> {
    fn entry(&mut self, entry: Entry) -> Result<(), RestoreError> {
        abri_store::validate_path(&entry.path).map_err(|e| RestoreError::BadPath {
            path: text(&entry.path),
            reason: e.to_string(),
        })?;
        let paths = &self.opts.paths;
        let selected = paths.is_empty()
            || paths
                .iter()
                .any(|p| *p == entry.path || is_under(&entry.path, p));
        let ancestor = !selected && paths.iter().any(|p| is_under(p, &entry.path));
        if !selected && !ancestor {
            if matches!(entry.kind, EntryKind::File) && entry.nlink > 1 {
                self.unselected_links.insert(entry.path.clone(), entry);
            }
            return Ok(());
        }
        if ancestor && !matches!(entry.kind, EntryKind::Dir) {
            return Ok(());
        }
        self.finish_dirs(&entry.path);
        let (parent, name) = split_parent(&entry.path);
        let (parent, name) = (parent.to_vec(), name.to_vec());
        if self.root.is_none() && parent.is_empty() {
            // A volume itself, restored in place: it is there already.
            return self.volume_root(&name, entry);
        }
        match self.open_parent(&parent)? {
            Parent::Open => {}
            Parent::Skip => return Ok(()),
            Parent::Refused => {
                self.refuse(&entry.path, &parent);
                return Ok(());
            }
        }
        self.counters.set_current(&text(&entry.path));
        self.counters.files_scanned.fetch_add(1, Ordering::Relaxed);
        let skipped = self.report.skipped_existing;
        self.create(&name, entry)?;
        if self.report.skipped_existing == skipped {
            self.report.entries += 1;
        }
        Ok(())
    }

    fn volume_root(&mut self, name: &[u8], entry: Entry) -> Result<(), RestoreError> {
        let letter = String::from_utf8_lossy(name).into_owned();
        if !(letter.len() == 1 && letter.as_bytes()[0].is_ascii_alphabetic()) {
            return Err(RestoreError::BadPath {
                path: text(&entry.path),
                reason: "to restore in place on Windows, the first name must be a drive letter"
                    .into(),
            });
        }
        if matches!(entry.kind, EntryKind::Dir) && self.opts.overwrite {
            self.dirs.push(OpenDir {
                catalog: entry.path.clone(),
                path: PathBuf::from(format!(r"\\?\{letter}:\")),
                entry,
                apply: true,
            });
        }
        Ok(())
    }

    fn refuse(&mut self, path: &[u8], via: &[u8]) {
        self.counters.warn(format!(
            "refused {}: {} is a symbolic link or junction, and a restore never writes \
             through one",
            text(path),
            text(via)
        ));
        self.refused += 1;
        if self.first_refused.is_none() {
            self.first_refused = Some(text(path));
        }
    }

    fn parent(&self) -> &Frame {
        match self.chain.last() {
            Some(f) => f,
            None => self
                .root
                .as_ref()
                .expect("open_parent succeeded, so the chain or the target folder is open"),
        }
    }

    fn parent_mut(&mut self) -> &mut Frame {
        match self.chain.last_mut() {
            Some(f) => f,
            None => self
                .root
                .as_mut()
                .expect("open_parent succeeded, so the chain or the target folder is open"),
        }
    }

    /// Makes `chain` the open directories of `parent`, creating missing ones.
    fn open_parent(&mut self, parent: &[u8]) -> Result<Parent, RestoreError> {
        let wanted: Vec<&[u8]> = if parent.is_empty() {
            Vec::new()
        } else {
            parent.split(|&b| b == b'/').collect()
        };
        let common = self
            .chain
            .iter()
            .zip(&wanted)
            .take_while(|(have, want)| have.name.as_slice() == **want)
            .count();
        self.chain.truncate(common);
        for (i, comp) in wanted.iter().enumerate().skip(common) {
            let here = wanted[..=i].join(&b'/');
            let path = if i == 0 && self.root.is_none() {
                PathBuf::from(format!(r"\\?\{}:\", String::from_utf8_lossy(comp)))
            } else {
                self.parent().child(comp)
            };
            let handle = match open_dir(&path, false) {
                Ok(h) => h,
                Err(e) if e.kind() == io::ErrorKind::NotFound => std::fs::create_dir(&path)
                    .and_then(|()| open_dir(&path, false))
                    .map_err(|source| RestoreError::Io {
                        path: text(&here),
                        source,
                    })?,
                Err(e) if e.get_ref().is_some_and(|r| r.is::<LinkOnTheWay>()) => {
                    return Ok(Parent::Refused);
                }
                Err(e) => {
                    self.counters.warn(format!(
                        "cannot restore below {}: {e}; its contents are skipped",
                        text(&here)
                    ));
                    return Ok(Parent::Skip);
                }
            };
            self.chain.push(Frame::new(comp.to_vec(), path, handle));
        }
        Ok(Parent::Open)
    }

    fn finish_dirs(&mut self, next: &[u8]) {
        while let Some(top) = self.dirs.last() {
            if !next.is_empty() && is_under(next, &top.catalog) {
                break;
            }
            if let Some(d) = self.dirs.pop()
                && d.apply
            {
                match open_for_metadata(&d.path) {
                    Ok(f) => self.apply_meta(&f, &d.path, &d.entry),
                    Err(e) => self.warn_io("metadata", &d.entry, e),
                }
            }
        }
    }

    fn warn_io(&self, what: &str, entry: &Entry, e: io::Error) {
        crate::restore::warn_io(self.counters, what, &entry.path, e);
    }

    /// Times, attributes and security descriptor through `file` (at `path`).
    fn apply_meta(&mut self, file: &File, path: &Path, entry: &Entry) {
        let Some(w) = &entry.windows else {
            // A catalog from Linux: times only.
            if let Err(e) = set_basic(file, entry, None) {
                self.warn_io("times", entry, e);
            }
            return;
        };
        let attributes = w.attributes & SETTABLE_ATTRIBUTES;
        let sd = w.security_descriptor.clone();
        // The descriptor first: where the file system derives anything from it (Wine maps
        // the DACL to Unix permission bits) the attributes set after it still win.
        if !sd.is_empty() {
            self.apply_security(file, entry, &sd);
        }
        match set_basic(file, entry, Some(attributes)) {
            Ok(()) => {
                if let Err(e) = set_attributes(path, attributes) {
                    tracing::debug!("attributes of {} by path: {e}", path.display());
                }
            }
            Err(e) => self.warn_io("times and attributes", entry, e),
        }
    }

    fn apply_security(&mut self, file: &File, entry: &Entry, sd: &[u8]) {
        match set_security(file, sd, SECURITY_PARTS) {
            Ok(()) => {}
            Err(_) => match set_security(file, sd, sec::DACL_SECURITY_INFORMATION) {
                Ok(()) => {
                    if !self.owner_warned {
                        self.owner_warned = true;
                        self.counters.warn(format!(
                            "owners are not restored (first: {}): only an administrator or \
                             the agent's service may give files to another account; \
                             permissions are",
                            text(&entry.path)
                        ));
                    }
                }
                Err(e) => self.warn_io("permissions", entry, e),
            },
        }
    }

    /// The name to use for catalog name `name` in the current parent: itself, or a
    /// renamed one when it collides by case with a name restored here before.
    fn place(&mut self, name: &[u8], entry: &Entry) -> PathBuf {
        let units = winpath::bytes_to_utf16(name);
        let frame = self.parent_mut();
        let mut key = winpath::case_key(&units);
        let mut actual = units.clone();
        let mut n = 2;
        while frame.keys.contains(&key) {
            actual = winpath::collision_name(&units, n);
            key = winpath::case_key(&actual);
            n += 1;
        }
        frame.keys.insert(key);
        let path = frame.path.join(OsString::from_wide(&actual));
        if actual != units {
            frame
                .renamed
                .insert(name.to_vec(), OsString::from_wide(&actual));
            self.counters.warn(format!(
                "{} differs only by case from a name restored before in the same folder: \
                 restored as {}",
                text(&entry.path),
                String::from_utf16_lossy(&actual)
            ));
        }
        path
    }

    /// Handles what is already at `path`: `Ok(true)` to go on creating, `Ok(false)` to skip.
    fn clear_place(&mut self, path: &Path, entry: &Entry) -> Result<bool, RestoreError> {
        let existing = match std::fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(true),
            Err(source) => {
                return Err(RestoreError::Io {
                    path: text(&entry.path),
                    source,
                });
            }
        };
        if !self.opts.overwrite {
            self.report.skipped_existing += 1;
            return Ok(false);
        }
        let attrs = existing.file_attributes_raw();
        let is_link = attrs & fs::FILE_ATTRIBUTE_REPARSE_POINT != 0;
        let is_dir = attrs & fs::FILE_ATTRIBUTE_DIRECTORY != 0;
        if is_dir && !is_link {
            self.counters.warn(format!(
                "{} is a folder at the target: not replaced by the snapshot's non-folder",
                text(&entry.path)
            ));
            return Ok(false);
        }
        if attrs & fs::FILE_ATTRIBUTE_READONLY != 0 {
            let mut p = existing.permissions();
            p.set_readonly(false);
            let _ = std::fs::set_permissions(path, p);
        }
        let removed = if is_dir {
            std::fs::remove_dir(path) // a directory link: the link only
        } else {
            std::fs::remove_file(path)
        };
        removed.map_err(|source| RestoreError::Io {
            path: text(&entry.path),
            source,
        })?;
        Ok(true)
    }

    fn create(&mut self, name: &[u8], entry: Entry) -> Result<(), RestoreError> {
        let path = self.place(name, &entry);
        let io_err = |p: &[u8]| {
            let path = text(p);
            move |source| RestoreError::Io { path, source }
        };
        match &entry.kind {
            EntryKind::Dir => {
                let created = match std::fs::create_dir(&path) {
                    Ok(()) => true,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        match open_dir(&path, false) {
                            Ok(_) => false,
                            Err(_) => {
                                if !self.clear_place(&path, &entry)? {
                                    return Ok(());
                                }
                                std::fs::create_dir(&path).map_err(io_err(&entry.path))?;
                                true
                            }
                        }
                    }
                    Err(e) => return Err(io_err(&entry.path)(e)),
                };
                let apply = created || self.opts.overwrite;
                self.dirs.push(OpenDir {
                    catalog: entry.path.clone(),
                    path,
                    entry,
                    apply,
                });
            }
            EntryKind::File => {
                if !self.clear_place(&path, &entry)? {
                    return Ok(());
                }
                self.write_file(&path, &entry)?;
                self.restored.insert(entry.path.clone(), path);
            }
            EntryKind::HardLink { target } => {
                abri_store::validate_path(target).map_err(|e| RestoreError::BadPath {
                    path: text(target),
                    reason: e.to_string(),
                })?;
                if !self.clear_place(&path, &entry)? {
                    return Ok(());
                }
                if let Some(first) = self.restored.get(target).cloned() {
                    if let Err(e) = std::fs::hard_link(&first, &path) {
                        self.warn_io("hard link", &entry, e);
                    }
                } else if let Some(mut first) = self.unselected_links.remove(target) {
                    first.path = entry.path.clone();
                    self.write_file(&path, &first)?;
                    self.restored.insert(target.clone(), path);
                } else {
                    self.counters.warn(format!(
                        "cannot restore hard link {}: its target {} was not restored",
                        text(&entry.path),
                        text(target)
                    ));
                }
            }
            EntryKind::Symlink { target } => {
                if !self.clear_place(&path, &entry)? {
                    return Ok(());
                }
                let is_dir = entry
                    .windows
                    .as_ref()
                    .is_some_and(|w| w.attributes & fs::FILE_ATTRIBUTE_DIRECTORY != 0);
                let link = Link::from_target(winpath::bytes_to_utf16(target));
                match make_link(&path, &link, is_dir) {
                    Ok(()) => match open_for_metadata(&path) {
                        Ok(f) => self.apply_meta(&f, &path, &entry),
                        Err(e) => self.warn_io("metadata", &entry, e),
                    },
                    Err(e) => self.warn_io("link", &entry, e),
                }
            }
            EntryKind::Fifo
            | EntryKind::Socket
            | EntryKind::CharDevice { .. }
            | EntryKind::BlockDevice { .. } => {
                self.counters.warn(format!(
                    "{} skipped: Windows has no fifos, sockets or device nodes",
                    text(&entry.path)
                ));
            }
        }
        Ok(())
    }

    fn write_file(&mut self, path: &Path, entry: &Entry) -> Result<(), RestoreError> {
        let io_err = |source| RestoreError::Io {
            path: text(&entry.path),
            source,
        };
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .access_mode(
                fs::FILE_GENERIC_WRITE | fs::FILE_GENERIC_READ | fs::WRITE_DAC | fs::WRITE_OWNER,
            )
            .custom_flags(fs::FILE_FLAG_BACKUP_SEMANTICS | fs::FILE_FLAG_OPEN_REPARSE_POINT)
            .open(path)
            .map_err(io_err)?;
        let sparse = entry
            .windows
            .as_ref()
            .is_some_and(|w| w.attributes & fs::FILE_ATTRIBUTE_SPARSE_FILE != 0);
        if sparse && let Err(e) = set_sparse(&file) {
            tracing::debug!("cannot make {} sparse: {e}", path.display());
        }
        for ext in &entry.extents {
            let chunk = self.chunk(&ext.digest)?;
            let start = ext.chunk_offset as usize;
            let end = start + ext.len as usize;
            let Some(bytes) = chunk.get(start..end) else {
                return Err(RestoreError::Catalog(
                    abri_store::StoreError::InvalidCatalog {
                        reason: format!(
                            "file {:?} names bytes {start}..{end} of chunk {}, which has {} bytes",
                            text(&entry.path),
                            ext.digest,
                            chunk.len()
                        ),
                    },
                ));
            };
            write_all_at(&file, bytes, ext.file_offset).map_err(io_err)?;
            self.report.bytes += u64::from(ext.len);
            self.counters
                .bytes_scanned
                .fetch_add(u64::from(ext.len), Ordering::Relaxed);
        }
        file.set_len(entry.size).map_err(io_err)?;
        self.report.files += 1;
        self.apply_meta(&file, path, entry);
        Ok(())
    }

    fn chunk(&mut self, digest: &Digest) -> Result<Arc<Vec<u8>>, RestoreError> {
        if let Some(c) = self.cache.get(digest) {
            return Ok(c);
        }
        let data = Arc::new(
            self.source
                .read_chunk(digest)
                .map_err(RestoreError::Catalog)?,
        );
        self.cache.insert(*digest, data.clone());
        Ok(data)
    }
}

fn write_all_at(file: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        let n = file.seek_write(buf, offset)?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        buf = &buf[n..];
        offset += n as u64;
    }
    Ok(())
}

/// Opens an object as itself to set its times, attributes and security descriptor.
fn open_for_metadata(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .access_mode(
            fs::FILE_READ_ATTRIBUTES | fs::FILE_WRITE_ATTRIBUTES | fs::WRITE_DAC | fs::WRITE_OWNER,
        )
        .share_mode(super::SHARE_ALL)
        .custom_flags(fs::FILE_FLAG_BACKUP_SEMANTICS | fs::FILE_FLAG_OPEN_REPARSE_POINT)
        .open(path)
}

/// Sets creation, access and modification times and (when given) attributes.
fn set_basic(file: &File, entry: &Entry, attributes: Option<u32>) -> io::Result<()> {
    let creation = entry
        .windows
        .as_ref()
        .map(|w| ns_to_filetime(w.creation_time_ns))
        .unwrap_or(0);
    let info = fs::FILE_BASIC_INFO {
        CreationTime: creation,
        LastAccessTime: ns_to_filetime(entry.atime_ns),
        LastWriteTime: ns_to_filetime(entry.mtime_ns),
        ChangeTime: 0, // 0 = leave as is
        // 0 = leave as is; FILE_ATTRIBUTE_NORMAL stands for "none of them".
        FileAttributes: match attributes {
            Some(0) => fs::FILE_ATTRIBUTE_NORMAL,
            Some(a) => a,
            None => 0,
        },
    };
    // SAFETY: info is a FILE_BASIC_INFO of the size given; the handle is open.
    check(unsafe {
        fs::SetFileInformationByHandle(
            file.as_raw_handle(),
            fs::FileBasicInfo,
            (&raw const info).cast(),
            size_of::<fs::FILE_BASIC_INFO>() as u32,
        )
    })
}

/// Sets the attributes by path as well: some file systems (and Wine) take the read-only
/// bit only this way.
fn set_attributes(path: &Path, attributes: u32) -> io::Result<()> {
    let p = super::wide(path);
    let a = if attributes == 0 {
        fs::FILE_ATTRIBUTE_NORMAL
    } else {
        attributes
    };
    // SAFETY: p is NUL-terminated.
    check(unsafe { fs::SetFileAttributesW(p.as_ptr(), a) })
}

fn set_security(file: &File, sd: &[u8], parts: u32) -> io::Result<()> {
    // The descriptor comes from the catalog: check it before handing it to the system.
    // SAFETY: IsValidSecurityDescriptor reads a buffer we own; length checked first.
    let valid =
        sd.len() >= 20 && unsafe { sec::IsValidSecurityDescriptor(sd.as_ptr() as *mut _) } != 0;
    if !valid {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the snapshot holds an invalid security descriptor",
        ));
    }
    // SAFETY: sd is a valid self-relative descriptor; the handle has WRITE_DAC/WRITE_OWNER.
    check(unsafe {
        sec::SetKernelObjectSecurity(file.as_raw_handle(), parts, sd.as_ptr() as *mut _)
    })
}

pub(crate) fn set_sparse(file: &File) -> io::Result<()> {
    let mut returned = 0u32;
    // SAFETY: no buffers; the handle is open for writing.
    check(unsafe {
        DeviceIoControl(
            file.as_raw_handle(),
            ioctl::FSCTL_SET_SPARSE,
            std::ptr::null(),
            0,
            std::ptr::null_mut(),
            0,
            &mut returned,
            std::ptr::null_mut(),
        )
    })
}

/// Creates a symbolic link or a junction at `path` (which does not exist).
fn make_link(path: &Path, link: &Link, is_dir: bool) -> io::Result<()> {
    match link {
        Link::Symlink(target) => {
            let p = super::wide(path);
            let t: Vec<u16> = target.iter().copied().chain([0]).collect();
            let mut flags = fs::SYMBOLIC_LINK_FLAG_ALLOW_UNPRIVILEGED_CREATE;
            if is_dir {
                flags |= fs::SYMBOLIC_LINK_FLAG_DIRECTORY;
            }
            // SAFETY: both strings are NUL-terminated.
            if unsafe { fs::CreateSymbolicLinkW(p.as_ptr(), t.as_ptr(), flags) } {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        }
        Link::Junction(target) => {
            let buf = reparse::junction_buffer(target).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "junction target too long")
            })?;
            std::fs::create_dir(path)?;
            let dir = OpenOptions::new()
                .access_mode(fs::FILE_GENERIC_WRITE)
                .custom_flags(fs::FILE_FLAG_BACKUP_SEMANTICS | fs::FILE_FLAG_OPEN_REPARSE_POINT)
                .open(path)?;
            let mut returned = 0u32;
            // SAFETY: buf is a complete mount-point reparse buffer of the length given.
            let set = check(unsafe {
                DeviceIoControl(
                    dir.as_raw_handle(),
                    ioctl::FSCTL_SET_REPARSE_POINT,
                    buf.as_ptr().cast(),
                    buf.len() as u32,
                    std::ptr::null_mut(),
                    0,
                    &mut returned,
                    std::ptr::null_mut(),
                )
            });
            if set.is_err() {
                drop(dir);
                let _ = std::fs::remove_dir(path);
            }
            set
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::windows::metadata::{NameCache, capture};

    fn captured(path: &Path) -> Entry {
        let meta = std::fs::symlink_metadata(path).unwrap();
        capture(path, b"x".to_vec(), &meta, &mut NameCache)
            .unwrap()
            .0
    }

    #[test]
    fn attributes_times_and_security_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            super::super::verbatim(&dir.path().join("a.txt")),
            super::super::verbatim(&dir.path().join("b.txt")),
        );
        std::fs::write(&a, b"data").unwrap();
        std::fs::write(&b, b"data").unwrap();
        let mut entry = captured(&a);
        let w = entry.windows.as_mut().unwrap();
        w.attributes |= fs::FILE_ATTRIBUTE_HIDDEN | fs::FILE_ATTRIBUTE_READONLY;
        entry.mtime_ns = 1_600_000_000_123_456_700;
        entry.atime_ns = 1_600_000_100_000_000_000;
        let sd = w.security_descriptor.clone();
        let attrs = w.attributes & SETTABLE_ATTRIBUTES;
        {
            let f = open_for_metadata(&b).unwrap();
            set_security(&f, &sd, sec::DACL_SECURITY_INFORMATION).unwrap();
            set_basic(&f, &entry, Some(attrs)).unwrap();
            set_attributes(&b, attrs).unwrap();
            assert!(set_security(&f, &[1, 2, 3], sec::DACL_SECURITY_INFORMATION).is_err());
            assert!(set_security(&f, &[0; 40], sec::DACL_SECURITY_INFORMATION).is_err());
        }
        let back = captured(&b);
        let wb = back.windows.unwrap();
        assert_eq!(
            wb.attributes & SETTABLE_ATTRIBUTES,
            attrs,
            "{:#x}",
            wb.attributes
        );
        assert_eq!(back.mtime_ns, entry.mtime_ns);
        assert_eq!(back.mode, 0o100444);
        assert!(!wb.security_descriptor.is_empty());
    }
}
