//! The previous snapshot's catalog, read alongside the walk.
//!
//! Both are in catalog path order, so one forward pass suffices: for each regular file the
//! walk finds, [`Previous::reusable`] advances the previous catalog to that path and, when
//! size, mtime, ctime and inode are unchanged, hands back its extents so the file is not
//! read. A previous catalog that cannot be read (chunk unavailable, corrupt) only turns
//! the rest of this run into a full one; it never fails the backup.

use abri_store::{CatalogReader, ChunkSource, Entry, Extent};

use crate::metadata::unchanged;

/// The previous catalog of the same plan, or nothing (first run, or a full run).
pub struct Previous<S: ChunkSource> {
    reader: Option<CatalogReader<S>>,
    warning: Option<String>,
}

impl<S: ChunkSource> Previous<S> {
    /// No previous snapshot: every file is read.
    pub fn none() -> Self {
        Previous {
            reader: None,
            warning: None,
        }
    }

    /// Reads `reader` alongside the walk.
    pub fn new(reader: CatalogReader<S>) -> Self {
        Previous {
            reader: Some(reader),
            warning: None,
        }
    }

    /// The previous extents of `current` (a file entry being walked) when it is unchanged.
    pub fn reusable(&mut self, current: &Entry) -> Option<Vec<Extent>> {
        let reader = self.reader.as_mut()?;
        match reader.find(&current.path) {
            Ok(Some(prev)) if unchanged(&prev, current) => Some(prev.extents),
            Ok(_) => None,
            Err(e) => {
                self.warning = Some(format!(
                    "the previous snapshot's catalog cannot be read ({e}): the rest of this \
                     backup reads every file"
                ));
                self.reader = None;
                None
            }
        }
    }

    /// A warning to log once, if the previous catalog failed.
    pub fn take_warning(&mut self) -> Option<String> {
        self.warning.take()
    }
}

impl<S: ChunkSource> Default for Previous<S> {
    fn default() -> Self {
        Self::none()
    }
}
