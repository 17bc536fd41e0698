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
