//! Restores a snapshot's entries (all, or those under some paths) into a target directory.
//!
//! Safety: a catalog is untrusted input. Every path is checked with
//! [`abri_store::validate_path`] (no absolute path, no `..`), and every object is created
//! relative to a directory handle opened component by component with `O_NOFOLLOW`, so a
//! symlink — one already at the target, or one this very restore just created from the
//! catalog — is never followed: an entry below one is refused, and the restore ends with an
//! error naming it. Existing non-directories are replaced only with `overwrite`; an
//! existing directory is kept (its metadata is restored only with `overwrite`).
//!
//! Files are written extent by extent at their offsets and then sized with `set_len`, so
//! holes stay holes. Directories get their mode, owner and times after their children.
//!
//! This file holds what both systems share and the Unix restorer; the Windows restorer
//! (`platform/windows/restore.rs`) keeps the same rules with Windows handles and metadata.

use abri_store::{CatalogReader, ChunkSource, Digest, EntryKind};
#[cfg(unix)]
use abri_store::{Entry, Extent};
#[cfg(unix)]
use std::collections::{HashMap, HashSet};
#[cfg(unix)]
use std::fs::File;
#[cfg(unix)]
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
#[cfg(unix)]
use std::path::Path;
use std::path::PathBuf;
#[cfg(unix)]
use std::sync::atomic::Ordering;

#[cfg(unix)]
use crate::platform;
#[cfg(windows)]
use crate::platform::windows::restore::restore_from;
use crate::progress::Counters;
#[cfg(unix)]
use crate::restore_bulk::{BulkFile, BulkLane, run_with_bulk_lane};
#[cfg(unix)]
use crate::restore_chunks::data_end;
use crate::restore_chunks::{RestoreChunks, RestorePlan};
#[cfg(unix)]
use crate::restore_writers::{FileDone, FileFeed, OpenFile, Writers, apply_fd_meta};

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("invalid path {path:?} to restore: {reason}")]
    BadPath { path: String, reason: String },
    #[error("cannot use {} as the restore target: {source}", path.display())]
    Target {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the snapshot cannot be read: {0}; nothing more was restored (what was restored \
         before stays)"
    )]
    Catalog(abri_store::StoreError),
    #[error(
        "refused {count} entries that would have been written through a symbolic link, \
         first {first:?}; a restore never writes outside its target"
    )]
    Unsafe { count: u64, first: String },
    #[error("cannot restore {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("the restore was cancelled")]
    Cancelled,
    /// A writer thread failed; its own error is the one reported.
    #[error("the restore stopped after a write error")]
    WritersStopped,
}

/// What to restore where.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    /// The directory under which catalog paths are recreated (`/` for the original place).
    pub target: PathBuf,
    /// Catalog paths to restore with their subtrees; empty = everything.
    pub paths: Vec<Vec<u8>>,
    /// Replace existing non-directories (and restore metadata of existing directories).
    pub overwrite: bool,
    /// Restore owners and device nodes (needs root).
    pub as_root: bool,
}

/// What a restore did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RestoreReport {
    pub entries: u64,
    pub files: u64,
    pub bytes: u64,
    /// Existing objects left alone (no `overwrite`).
    pub skipped_existing: u64,
    pub warnings: u64,
}

/// Turns user-given paths (`/srv/data`, `srv/data/`) into catalog paths.
pub fn selection_paths(paths: &[String]) -> Result<Vec<Vec<u8>>, RestoreError> {
    paths
        .iter()
        .map(|p| {
            let rel = p.trim_start_matches('/').trim_end_matches('/');
            abri_store::validate_path(rel.as_bytes())
                .map(|()| rel.as_bytes().to_vec())
                .map_err(|e| RestoreError::BadPath {
                    path: p.clone(),
                    reason: e.to_string(),
                })
        })
        .collect()
}

pub(crate) fn is_under(path: &[u8], ancestor: &[u8]) -> bool {
    path.len() > ancestor.len() && path.starts_with(ancestor) && path[ancestor.len()] == b'/'
}

pub(crate) fn text(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}

/// The warning for a piece of metadata (`what`) of the entry at `path` that could not be
/// restored.
pub(crate) fn warn_io(counters: &Counters, what: &str, path: &[u8], e: std::io::Error) {
    counters.warn(format!("cannot restore the {what} of {}: {e}", text(path)));
}

pub(crate) fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|&b| b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

/// What a restore will fetch (the data chunks of the files it will write, in the order it
/// will ask for them) and keep.
fn chunk_plan<S: ChunkSource>(
    source: &S,
    catalog: Vec<Digest>,
    paths: &[Vec<u8>],
) -> Result<RestorePlan, RestoreError> {
    let mut files: Vec<Vec<abri_store::Extent>> = Vec::new();
    for entry in CatalogReader::new(source, catalog) {
        let entry = entry.map_err(RestoreError::Catalog)?;
        let selected = paths.is_empty()
            || paths
                .iter()
                .any(|p| *p == entry.path || is_under(&entry.path, p));
        if selected && matches!(entry.kind, EntryKind::File) && !entry.extents.is_empty() {
            files.push(entry.extents);
        }
    }
    // Only the Unix restorer has a bulk lane (`restore_bulk`).
    Ok(RestorePlan::of(files.iter().map(Vec::as_slice), cfg!(unix)))
}

/// Restores the catalog made of `catalog` chunks from `source` according to `opts`, with
/// the files' chunks fetched ahead in parallel (`prefetch`).
pub fn run_restore<S: ChunkSource + Sync>(
    source: &S,
    catalog: Vec<Digest>,
    opts: &RestoreOptions,
    counters: &Counters,
) -> Result<RestoreReport, RestoreError> {
    let plan = chunk_plan(source, catalog.clone(), &opts.paths)?;
    #[cfg(unix)]
    let bulk_digests = plan.bulk_digests();
    crate::prefetch::with_prefetch(
        source,
        plan.fetches,
        crate::prefetch::WORKERS,
        crate::prefetch::WINDOW,
        |p| {
            let chunks = RestoreChunks::new(p, plan.keep);
            #[cfg(unix)]
            return crate::prefetch::with_prefetch(
                source,
                plan.bulk,
                crate::restore_bulk::WORKERS,
                crate::restore_bulk::WINDOW,
                |b| restore_from(chunks, (b, bulk_digests), catalog, opts, counters),
            );
            #[cfg(windows)]
            restore_from(chunks, catalog, opts, counters)
        },
    )
}

/// `bulk`: the bulk lane's chunk source and the digests it serves (`restore_bulk`).
#[cfg(unix)]
fn restore_from<S: ChunkSource, B: ChunkSource + Sync>(
    chunks: RestoreChunks<'_, S>,
    bulk: (&B, HashSet<Digest>),
    catalog: Vec<Digest>,
    opts: &RestoreOptions,
    counters: &Counters,
) -> Result<RestoreReport, RestoreError> {
    if opts.target != Path::new("/") {
        std::fs::create_dir_all(&opts.target).map_err(|source| RestoreError::Target {
            path: opts.target.clone(),
            source,
        })?;
    }
    // The target itself is the user's choice and may be reached through a symlink.
    let root: OwnedFd = File::open(&opts.target)
        .and_then(|f| {
            if f.metadata()?.is_dir() {
                Ok(f)
            } else {
                Err(std::io::Error::from_raw_os_error(libc::ENOTDIR))
            }
        })
        .map_err(|source| RestoreError::Target {
            path: opts.target.clone(),
            source,
        })?
        .into();
    let mut report = crate::restore_writers::run_with_writers(
        counters,
        crate::restore_writers::QUEUE,
        |writers| {
            run_with_bulk_lane(bulk.0, bulk.1, counters, |lane| {
                restore_entries(chunks, catalog, opts, counters, root, writers, lane)
            })
        },
    )?;
    report.warnings = counters.warnings.load(Ordering::Relaxed);
    Ok(report)
}

#[cfg(unix)]
fn restore_entries<S: ChunkSource>(
    chunks: RestoreChunks<'_, S>,
    catalog: Vec<Digest>,
    opts: &RestoreOptions,
    counters: &Counters,
    root: OwnedFd,
    writers: &Writers,
    bulk: &BulkLane,
) -> Result<RestoreReport, RestoreError> {
    let source = chunks.source();
    let mut r = Restorer {
        chunks,
        opts,
        counters,
        writers,
        bulk,
        // Unknown, every bit counts as masked: every file's mode is then set.
        umask: platform::umask().unwrap_or(0o777),
        root,
        chain: Vec::new(),
        dirs: Vec::new(),
        ids: IdCache::default(),
        restored: HashMap::new(),
        unselected_links: HashMap::new(),
        report: RestoreReport::default(),
        refused: 0,
        first_refused: None,
    };
    let reader = CatalogReader::new(source, catalog);
    for entry in reader {
        if counters.is_cancelled() {
            return Err(RestoreError::Cancelled);
        }
        if writers.stopped() || bulk.stopped() {
            return Err(RestoreError::WritersStopped);
        }
        let entry = entry.map_err(RestoreError::Catalog)?;
        r.entry(entry)?;
    }
    r.finish_dirs(&[])?;
    if r.refused > 0 {
        return Err(RestoreError::Unsafe {
            count: r.refused,
            first: r.first_refused.unwrap_or_default(),
        });
    }
    Ok(r.report)
}

/// Caches user and group names -> ids of this machine: a restore meets the same few names
/// over and over, and each lookup through NSS opens and reads `/etc/passwd` or `/etc/group`.
#[cfg(unix)]
#[derive(Default)]
struct IdCache {
    users: std::cell::RefCell<HashMap<String, Option<u32>>>,
    groups: std::cell::RefCell<HashMap<String, Option<u32>>>,
}

#[cfg(unix)]
impl IdCache {
    fn lookup(
        map: &std::cell::RefCell<HashMap<String, Option<u32>>>,
        name: &str,
        find: impl FnOnce(&str) -> Option<u32>,
    ) -> Option<u32> {
        if let Some(found) = map.borrow().get(name) {
            return *found;
        }
        let found = find(name);
        map.borrow_mut().insert(name.to_string(), found);
        found
    }

    fn user(&self, name: &str, find: impl FnOnce(&str) -> Option<u32>) -> Option<u32> {
        Self::lookup(&self.users, name, find)
    }

    fn group(&self, name: &str, find: impl FnOnce(&str) -> Option<u32>) -> Option<u32> {
        Self::lookup(&self.groups, name, find)
    }
}

/// A directory whose metadata is applied once its subtree is done.
#[cfg(unix)]
struct OpenDir {
    path: Vec<u8>,
    fd: OwnedFd,
    entry: Entry,
    apply: bool,
}

#[cfg(unix)]
struct Restorer<'a, S: ChunkSource> {
    chunks: RestoreChunks<'a, S>,
    opts: &'a RestoreOptions,
    counters: &'a Counters,
    /// Where created files go to be filled in.
    writers: &'a Writers,
    /// Where the extents of the bulk lane's chunks go.
    bulk: &'a BulkLane,
    /// This process's umask, which the mode of every created file went through.
    umask: u32,
    root: OwnedFd,
    /// Open directories from the target down to the last parent used: (name, fd).
    chain: Vec<(Vec<u8>, OwnedFd)>,
    dirs: Vec<OpenDir>,
    /// Owner and group names already looked up on this machine.
    ids: IdCache,
    /// Catalog path of a restored file -> where it was restored (for hard links).
    restored: HashMap<Vec<u8>, Vec<u8>>,
    /// Unselected files with several links, in case a selected hard link names them.
    unselected_links: HashMap<Vec<u8>, Entry>,
    report: RestoreReport,
    refused: u64,
    first_refused: Option<String>,
}

#[cfg(unix)]
enum Parent {
    Open,
    /// Not restorable (a file is where a directory should be): warned already.
    Skip,
    /// A symlink is on the way: refused.
    Refused,
}

#[cfg(unix)]
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
        self.finish_dirs(&entry.path)?;
        let (parent, name) = split_parent(&entry.path);
        let (parent, name) = (parent.to_vec(), name.to_vec());
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

    fn refuse(&mut self, path: &[u8], via: &[u8]) {
        self.counters.warn(format!(
            "refused {}: {} is a symbolic link, and a restore never writes through one",
            text(path),
            text(via)
        ));
        self.refused += 1;
        if self.first_refused.is_none() {
            self.first_refused = Some(text(path));
        }
    }

    fn parent_fd(&self) -> BorrowedFd<'_> {
        self.chain
            .last()
            .map_or(self.root.as_fd(), |(_, fd)| fd.as_fd())
    }

    /// Makes `chain` the open directories of `parent`, creating missing ones (0700).
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
            .take_while(|((have, _), want)| have.as_slice() == **want)
            .count();
        self.chain.truncate(common);
        for (i, comp) in wanted.iter().enumerate().skip(common) {
            let here = wanted[..=i].join(&b'/');
            let dir = self.parent_fd();
            let fd = match platform::open_dir_at(Some(dir), comp) {
                Ok(fd) => fd,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    platform::mkdir_at(dir, comp, 0o700).map_err(|source| RestoreError::Io {
                        path: text(&here),
                        source,
                    })?;
                    platform::open_dir_at(Some(self.parent_fd()), comp).map_err(|source| {
                        RestoreError::Io {
                            path: text(&here),
                            source,
                        }
                    })?
                }
                Err(e) => {
                    let is_link = platform::lstat_at(dir, comp)
                        .ok()
                        .flatten()
                        .is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFLNK);
                    if is_link {
                        self.chain.truncate(common);
                        return Ok(Parent::Refused);
                    }
                    self.counters.warn(format!(
                        "cannot restore below {}: {e}; its contents are skipped",
                        text(&here)
                    ));
                    return Ok(Parent::Skip);
                }
            };
            self.chain.push((comp.to_vec(), fd));
        }
        Ok(Parent::Open)
    }

    /// Applies the metadata of finished directories: those that are not ancestors of `next`.
    fn finish_dirs(&mut self, next: &[u8]) -> Result<(), RestoreError> {
        while let Some(top) = self.dirs.last() {
            if !next.is_empty() && is_under(next, &top.path) {
                break;
            }
            if let Some(d) = self.dirs.pop()
                && d.apply
            {
                let owner = self.owner_to_set(&d.entry);
                apply_fd_meta(self.counters, d.fd.as_fd(), &d.entry, owner, None);
            }
        }
        Ok(())
    }

    fn warn_io(&self, what: &str, entry: &Entry, e: std::io::Error) {
        warn_io(self.counters, what, &entry.path, e);
    }

    fn owner(&self, entry: &Entry) -> (u32, u32) {
        let uid = entry
            .user
            .as_deref()
            .and_then(|n| self.ids.user(n, platform::uid_of))
            .unwrap_or(entry.uid);
        let gid = entry
            .group
            .as_deref()
            .and_then(|n| self.ids.group(n, platform::gid_of))
            .unwrap_or(entry.gid);
        (uid, gid)
    }

    /// The owner to give an object: only restores as root set owners.
    fn owner_to_set(&self, entry: &Entry) -> Option<(u32, u32)> {
        self.opts.as_root.then(|| self.owner(entry))
    }

    /// Owner, mode, xattrs and times of `name` in the current parent (not opened: symlinks,
    /// fifos, devices).
    fn apply_at_meta(&self, name: &[u8], entry: &Entry, symlink: bool) {
        let dir = self.parent_fd();
        if self.opts.as_root {
            let (uid, gid) = self.owner(entry);
            if let Err(e) = platform::chown_at(dir, name, uid, gid) {
                self.warn_io("owner", entry, e);
            }
        }
        if !symlink && let Err(e) = platform::chmod_at(dir, name, entry.mode & 0o7777) {
            self.warn_io("mode", entry, e);
        }
        for (k, v) in &entry.xattrs {
            if let Err(e) = platform::set_xattr_at(dir, name, k, v) {
                // Linux allows only trusted.* and security.* on symlinks: not worth a warning.
                if !(symlink && e.raw_os_error() == Some(libc::EPERM)) {
                    self.warn_io(&format!("attribute {}", text(k)), entry, e);
                }
            }
        }
        if let Err(e) = platform::set_times_at(dir, name, entry.atime_ns, entry.mtime_ns) {
            self.warn_io("times", entry, e);
        }
    }

    /// Handles what is already at `name`: `Ok(true)` to go on creating, `Ok(false)` to skip.
    fn clear_place(&mut self, name: &[u8], entry: &Entry) -> Result<bool, RestoreError> {
        let dir = self.parent_fd();
        let existing = platform::lstat_at(dir, name).map_err(|source| RestoreError::Io {
            path: text(&entry.path),
            source,
        })?;
        let Some(st) = existing else {
            return Ok(true);
        };
        if !self.opts.overwrite {
            self.report.skipped_existing += 1;
            return Ok(false);
        }
        if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
            self.counters.warn(format!(
                "{} is a directory at the target: not replaced by the snapshot's non-directory",
                text(&entry.path)
            ));
            return Ok(false);
        }
        platform::unlink_at(dir, name).map_err(|source| RestoreError::Io {
            path: text(&entry.path),
            source,
        })?;
        Ok(true)
    }

    fn create(&mut self, name: &[u8], entry: Entry) -> Result<(), RestoreError> {
        let io = |path: &[u8]| {
            let path = text(path);
            move |source| RestoreError::Io { path, source }
        };
        match &entry.kind {
            EntryKind::Dir => {
                let dir = self.parent_fd();
                let created = match platform::mkdir_at(dir, name, 0o700) {
                    Ok(()) => true,
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        let is_dir = platform::lstat_at(dir, name)
                            .ok()
                            .flatten()
                            .is_some_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR);
                        if !is_dir {
                            if !self.clear_place(name, &entry)? {
                                return Ok(());
                            }
                            platform::mkdir_at(self.parent_fd(), name, 0o700)
                                .map_err(io(&entry.path))?;
                            true
                        } else {
                            false
                        }
                    }
                    Err(e) => return Err(io(&entry.path)(e)),
                };
                match platform::open_dir_at(Some(self.parent_fd()), name) {
                    Ok(fd) => {
                        let apply = created || self.opts.overwrite;
                        self.dirs.push(OpenDir {
                            path: entry.path.clone(),
                            fd,
                            entry,
                            apply,
                        });
                    }
                    Err(e) => self.warn_io("directory", &entry, e),
                }
            }
            EntryKind::File => {
                let path = entry.path.clone();
                if self.write_file(name, entry)? {
                    self.restored.insert(path.clone(), path);
                }
            }
            EntryKind::HardLink { target } => {
                abri_store::validate_path(target).map_err(|e| RestoreError::BadPath {
                    path: text(target),
                    reason: e.to_string(),
                })?;
                if !self.clear_place(name, &entry)? {
                    return Ok(());
                }
                if let Some(first) = self.restored.get(target).cloned() {
                    self.link_to(&first, name, &entry)?;
                } else if let Some(mut first) = self.unselected_links.remove(target) {
                    // The first link is outside the selection: this one carries the data.
                    first.path = entry.path.clone();
                    if self.write_file(name, first)? {
                        self.restored.insert(target.clone(), entry.path.clone());
                    }
                } else {
                    self.counters.warn(format!(
                        "cannot restore hard link {}: its target {} was not restored",
                        text(&entry.path),
                        text(target)
                    ));
                }
            }
            EntryKind::Symlink { target } => {
                if !self.clear_place(name, &entry)? {
                    return Ok(());
                }
                platform::symlink_at(self.parent_fd(), name, target).map_err(io(&entry.path))?;
                self.apply_at_meta(name, &entry, true);
            }
            EntryKind::Fifo | EntryKind::Socket => {
                if !self.clear_place(name, &entry)? {
                    return Ok(());
                }
                let kind = if matches!(entry.kind, EntryKind::Fifo) {
                    libc::S_IFIFO
                } else {
                    libc::S_IFSOCK
                };
                platform::mknod_at(self.parent_fd(), name, kind | 0o600, 0)
                    .map_err(io(&entry.path))?;
                self.apply_at_meta(name, &entry, false);
            }
            EntryKind::CharDevice { rdev } | EntryKind::BlockDevice { rdev } => {
                if !self.opts.as_root {
                    self.counters.warn(format!(
                        "device node {} skipped: only root can create it",
                        text(&entry.path)
                    ));
                    return Ok(());
                }
                if !self.clear_place(name, &entry)? {
                    return Ok(());
                }
                let kind = if matches!(entry.kind, EntryKind::CharDevice { .. }) {
                    libc::S_IFCHR
                } else {
                    libc::S_IFBLK
                };
                platform::mknod_at(self.parent_fd(), name, kind | 0o600, *rdev)
                    .map_err(io(&entry.path))?;
                self.apply_at_meta(name, &entry, false);
            }
        }
        Ok(())
    }

    fn link_to(&mut self, first: &[u8], name: &[u8], entry: &Entry) -> Result<(), RestoreError> {
        // Open the first link's directory safely on a separate chain, then link.
        let (tparent, tname) = split_parent(first);
        let mut dir: Option<OwnedFd> = None;
        if !tparent.is_empty() {
            for comp in tparent.split(|&b| b == b'/') {
                let base = dir.as_ref().map_or(self.root.as_fd(), |d| d.as_fd());
                match platform::open_dir_at(Some(base), comp) {
                    Ok(fd) => dir = Some(fd),
                    Err(e) => {
                        self.warn_io("hard link", entry, e);
                        return Ok(());
                    }
                }
            }
        }
        let from = dir.as_ref().map_or(self.root.as_fd(), |d| d.as_fd());
        if let Err(e) = platform::link_at(from, tname, self.parent_fd(), name) {
            self.warn_io("hard link", entry, e);
        }
        Ok(())
    }

    /// Creates the file and hands its data and metadata to the writers; `false` if
    /// something already there stays (see [`Self::clear_place`]).
    ///
    /// The file is created with its permission bits (less the umask), so the writers change
    /// its mode only when they differ from those; it is created first and looked at only if
    /// the name is taken, which spares a restore into an empty directory a `stat` per file.
    fn write_file(&mut self, name: &[u8], mut entry: Entry) -> Result<bool, RestoreError> {
        let io = |path: &[u8]| {
            let path = text(path);
            move |source| RestoreError::Io { path, source }
        };
        let create_mode = entry.mode & 0o777;
        let file = match platform::create_file_at(self.parent_fd(), name, create_mode) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                if !self.clear_place(name, &entry)? {
                    return Ok(false);
                }
                platform::create_file_at(self.parent_fd(), name, create_mode)
                    .map_err(io(&entry.path))?
            }
            Err(e) => return Err(io(&entry.path)(e)),
        };
        let dir = self.parent_fd();
        let direct = if self.writers.wants_direct(entry.size) {
            platform::reopen_direct_at(dir, name, &file)
        } else {
            None
        };
        let extents = std::mem::take(&mut entry.extents);
        if direct.is_some() {
            preallocate(&file, &extents, &entry.path)?;
        }
        let done = FileDone {
            owner: self.owner_to_set(&entry),
            mode_set: create_mode & !self.umask,
            data_end: data_end(&extents),
        };
        let mut feed = FileFeed::new(self.writers, OpenFile::new(file, direct, entry, done));
        let (bulk, own): (Vec<Extent>, Vec<Extent>) =
            extents.into_iter().partition(|e| self.bulk.takes(e));
        if !bulk.is_empty() {
            self.report.bytes += bulk.iter().map(|e| u64::from(e.len)).sum::<u64>();
            self.bulk.send(BulkFile {
                file: feed.share(),
                extents: bulk,
            })?;
        }
        for ext in &own {
            if !self.chunks.holds(ext) {
                // The fetch may wait: the writers get what is gathered first.
                self.writers.flush()?;
            }
            let piece = self.chunks.piece(ext, feed.path())?;
            feed.push(&piece.chunk, piece.start, piece.end, ext.file_offset)?;
            self.report.bytes += u64::from(ext.len);
        }
        feed.finish()?;
        self.report.files += 1;
        Ok(true)
    }
}

/// Allocates a large file's data before it is written, when its extents cover it from 0
/// without a hole (a sparse file keeps its holes). Direct writes into allocated blocks
/// within the file's size are overwrites, which Linux runs side by side under a shared
/// inode lock; writes that allocate or extend the file hold the lock until their data is
/// on the disk, one at a time. A full file system is the restore's error; one that cannot
/// allocate ahead leaves the blocks to the writes.
#[cfg(unix)]
fn preallocate(file: &File, extents: &[Extent], path: &[u8]) -> Result<(), RestoreError> {
    let mut end = 0u64;
    for e in extents {
        if e.file_offset != end {
            return Ok(());
        }
        end += u64::from(e.len);
    }
    match platform::preallocate(file, end) {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded
            ) =>
        {
            Err(RestoreError::Io {
                path: text(path),
                source: e,
            })
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests;
