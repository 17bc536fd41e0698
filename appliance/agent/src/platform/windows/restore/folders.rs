//! The directories on the way down to what is restored. Each is opened as itself and
//! refused when it is a link, and stays open (without delete sharing) while the restore
//! works below it, so it cannot be swapped for a link meanwhile. A directory's own metadata
//! waits until its subtree is done, so a read-only DACL does not stop the restore below it.

use abri_store::ChunkSource;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::windows::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use windows_sys::Win32::Storage::FileSystem as fs;

use super::set_metadata::open_for_metadata;
use super::{Frame, Parent, Restorer};
use crate::restore::{RestoreError, is_under, text};

/// Opens a directory as itself; refuses a link unless `follow` (the target only).
pub(super) fn open_dir(path: &Path, follow: bool) -> io::Result<File> {
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

pub(super) trait RawAttributes {
    fn file_attributes_raw(&self) -> u32;
}

impl RawAttributes for std::fs::Metadata {
    fn file_attributes_raw(&self) -> u32 {
        std::os::windows::fs::MetadataExt::file_attributes(self)
    }
}

impl<S: ChunkSource> Restorer<'_, S> {
    fn parent(&self) -> &Frame {
        match self.chain.last() {
            Some(f) => f,
            None => self
                .root
                .as_ref()
                .expect("open_parent succeeded, so the chain or the target folder is open"),
        }
    }

    pub(super) fn parent_mut(&mut self) -> &mut Frame {
        match self.chain.last_mut() {
            Some(f) => f,
            None => self
                .root
                .as_mut()
                .expect("open_parent succeeded, so the chain or the target folder is open"),
        }
    }

    /// Makes `chain` the open directories of `parent`, creating missing ones.
    pub(super) fn open_parent(&mut self, parent: &[u8]) -> Result<Parent, RestoreError> {
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

    pub(super) fn finish_dirs(&mut self, next: &[u8]) {
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
}
