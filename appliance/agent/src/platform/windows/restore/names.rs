//! Where an object goes in its folder: its own name, or a renamed one when it differs only
//! by case from a name this restore put there before (Windows folders ignore case, a
//! catalog may not); and what to do with what is already at that place.

use abri_store::{ChunkSource, Entry};
use std::ffi::OsString;
use std::io;
use std::os::windows::ffi::OsStringExt;
use std::path::{Path, PathBuf};

use windows_sys::Win32::Storage::FileSystem as fs;

use super::Restorer;
use super::folders::RawAttributes;
use crate::platform::winpath;
use crate::restore::{RestoreError, text};

impl<S: ChunkSource> Restorer<'_, S> {
    /// The name to use for catalog name `name` in the current parent: itself, or a
    /// renamed one when it collides by case with a name restored here before.
    pub(super) fn place(&mut self, name: &[u8], entry: &Entry) -> PathBuf {
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
    pub(super) fn clear_place(&mut self, path: &Path, entry: &Entry) -> Result<bool, RestoreError> {
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
}
