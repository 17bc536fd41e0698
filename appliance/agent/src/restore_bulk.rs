//! The bulk lane of a Unix file restore.
//!
//! A tree alternates between stretches of many small files, where the restorer's one
//! thread (creating files, checking paths) is the limit and the disk waits, and stretches
//! of large files, where fetching, decoding and the disk are the limit and the restorer
//! waits for them. Walked in one line, the two kinds of work take turns.
//!
//! The bulk lane lets them overlap: the chunks that only one extent of the restore uses, in
//! a file written directly (see [`RestorePlan::bulk`]), are fetched by a prefetcher of
//! their own and written by a feeder thread with writers of its own. The restorer still
//! creates every file, in catalog order, with all its checks; for a large file it writes
//! the extents of shared chunks itself (a file's first and last chunk usually hold bytes of
//! its neighbours too) and hands the file with its other extents to the lane, then walks on.
//! A file is sized and gets its metadata once both have written their part
//! ([`FileFeed::share`]).
//!
//! At most [`FILES_QUEUED`] files wait for the lane (each holds two open descriptors).
//! A failure on either side stops both; the lane's own error is the one reported.
//!
//! [`RestorePlan::bulk`]: crate::restore_chunks::RestorePlan::bulk

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use abri_store::{ChunkSource, Digest, Extent};
use crossbeam_channel::{Receiver, Sender, bounded};

use crate::progress::Counters;
use crate::restore::RestoreError;
use crate::restore_chunks::{Piece, lead};
use crate::restore_writers::{FileFeed, SharedFile, Writers, run_with_writers};

/// Files handed to the lane and not yet fed to its writers.
const FILES_QUEUED: usize = 32;
/// Workers fetching the lane's chunks ahead, and how many chunks ahead.
pub(crate) const WORKERS: usize = 4;
pub(crate) const WINDOW: usize = 6;
/// Jobs waiting for the lane's writers: its jobs are mostly whole chunks written directly,
/// and the disk, not the queue, sets their pace.
const QUEUE: usize = 4;

/// A file's extents for the lane to write.
pub(crate) struct BulkFile {
    pub file: SharedFile,
    pub extents: Vec<Extent>,
}

/// The restorer's end of the lane.
pub(crate) struct BulkLane {
    queue: Sender<BulkFile>,
    digests: HashSet<Digest>,
    failed: Arc<AtomicBool>,
}

impl BulkLane {
    /// Whether the lane writes `ext`: its chunk is one of the lane's.
    pub(crate) fn takes(&self, ext: &Extent) -> bool {
        self.digests.contains(&ext.digest)
    }

    /// Whether the lane failed: the restore must stop.
    pub(crate) fn stopped(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }

    pub(crate) fn send(&self, file: BulkFile) -> Result<(), RestoreError> {
        if self.stopped() || self.queue.send(file).is_err() {
            return Err(RestoreError::WritersStopped);
        }
        Ok(())
    }
}

/// Runs `restore` with a bulk lane fetching the chunks `digests` names from `source` (a
/// prefetcher planned for them); when `restore` returns, waits until the lane has written
/// every file it was given. The lane's failure comes before the restore's own result.
pub(crate) fn run_with_bulk_lane<S: ChunkSource + Sync, R>(
    source: &S,
    digests: HashSet<Digest>,
    counters: &Counters,
    restore: impl FnOnce(&BulkLane) -> Result<R, RestoreError>,
) -> Result<R, RestoreError> {
    run_with_writers(counters, QUEUE, |writers| {
        let (tx, rx) = bounded::<BulkFile>(FILES_QUEUED);
        let failed = Arc::new(AtomicBool::new(false));
        let abandon = AtomicBool::new(false);
        std::thread::scope(|scope| {
            let feeder = {
                let (failed, abandon) = (failed.clone(), &abandon);
                scope.spawn(move || {
                    let fed = feed(source, rx, writers, counters, abandon);
                    if fed.is_err() {
                        failed.store(true, Ordering::Release);
                    }
                    fed
                })
            };
            let lane = BulkLane {
                queue: tx,
                digests,
                failed,
            };
            let result = restore(&lane);
            if result.is_err() {
                abandon.store(true, Ordering::Release);
            }
            drop(lane);
            let fed = match feeder.join() {
                Ok(fed) => fed,
                Err(panic) => std::panic::resume_unwind(panic),
            };
            fed.and(result)
        })
    })
}

/// The feeder: each file's extents, in order, from the lane's chunks to its writers.
/// Stops at the first error or a cancel; once the restore `abandon`ed, only empties the
/// queue.
fn feed<S: ChunkSource>(
    source: &S,
    files: Receiver<BulkFile>,
    writers: &Writers,
    counters: &Counters,
    abandon: &AtomicBool,
) -> Result<(), RestoreError> {
    'files: for BulkFile { file, extents } in files {
        let mut feed = FileFeed::resume(writers, file);
        for ext in &extents {
            // A large file is many chunks: a cancel or the restore's failure stops it here,
            // and a file left unfinished gets neither its size nor its metadata.
            if abandon.load(Ordering::Acquire) {
                continue 'files;
            }
            if counters.is_cancelled() {
                return Err(RestoreError::Cancelled);
            }
            writers.flush()?;
            let chunk = source
                .read_chunk_placed(&ext.digest, lead(ext))
                .map_err(RestoreError::Catalog)?;
            let piece = Piece::of(Arc::new(chunk), ext, feed.path())?;
            feed.push(&piece.chunk, piece.start, piece.end, ext.file_offset)?;
        }
        feed.finish()?;
    }
    Ok(())
}
