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
//!
//! This module holds the restorer's state and its walk over the catalog; each step of the
//! walk has its own module: `folders` (the directories on the way), `names` (where an
//! object goes in its folder), `objects` (creating files, folders and links) and
//! `set_metadata` (times, attributes and security descriptors).

mod folders;
mod names;
mod objects;
mod set_metadata;

use abri_store::{CatalogReader, ChunkSource, Digest, Entry, EntryKind};
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::File;
use std::io;
use std::os::windows::ffi::OsStringExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use crate::platform::winpath;
use crate::progress::Counters;
use crate::restore::{RestoreError, RestoreOptions, RestoreReport, is_under, split_parent, text};
use crate::restore_chunks::RestoreChunks;
use folders::open_dir;

pub(crate) use objects::set_sparse;

/// Restores `catalog` with extents from `chunks` according to `opts`.
pub(crate) fn restore_from<S: ChunkSource>(
    chunks: RestoreChunks<'_, S>,
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
    let source = chunks.source();
    let mut r = Restorer {
        chunks,
        opts,
        counters,
        root,
        chain: Vec::new(),
        dirs: Vec::new(),
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
    chunks: RestoreChunks<'a, S>,
    opts: &'a RestoreOptions,
    counters: &'a Counters,
    /// The target folder; `None` for the original place (the first name is a drive).
    root: Option<Frame>,
    chain: Vec<Frame>,
    dirs: Vec<OpenDir>,
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

    fn warn_io(&self, what: &str, entry: &Entry, e: io::Error) {
        crate::restore::warn_io(self.counters, what, &entry.path, e);
    }
}
