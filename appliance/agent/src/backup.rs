//! One file-mode backup: walk, read what changed, pack, upload, write the catalog, commit.
//!
//! The reader thread walks the selections in catalog order, captures each object's
//! metadata, reuses the previous extents of unchanged files (see `incremental`), and feeds
//! the data regions of the others to the `FilePacker`. The packer reports a file's extents
//! only once its last chunk is cut, so entries wait in a small queue and enter the
//! `CatalogWriter` in walk order once complete. Chunks (data and catalog) go to the upload
//! stages (see `upload`). Nothing is visible on the box before the final commit, so a
//! crash or a cancel at any point leaves no snapshot, and the next run finds the chunks
//! already uploaded through the missing-query.

use abri_proto::agent::{BackupSpec, CommitSnapshot, SnapshotStatsWire, SnapshotSummary};
use abri_store::{
    CatalogWriter, ChunkKey, ChunkSource, ChunkerParams, Digest, Entry, EntryKind, FilePacker,
    Packed,
};
use crossbeam_channel::{Sender, bounded};
use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::Ordering;

use crate::exclude::Excludes;
use crate::incremental::Previous;
use crate::metadata::{self, NameCache};
use crate::platform;
use crate::progress::Counters;
use crate::upload::{Abort, Destination, Outgoing, Stages, UploadStats, ZSTD_LEVEL};
use crate::walk::{Walk, WalkEvent};

/// Read block size.
const READ_BLOCK: usize = 1024 * 1024;
/// In-flight uploads.
pub const UPLOADERS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("the backup was cancelled; nothing was committed")]
    Cancelled,
    #[error("the backup failed, nothing was committed: {0}")]
    Failed(String),
    #[error("the box refused the snapshot: {0}")]
    Commit(String),
}

/// What to back up and how.
#[derive(Debug, Clone)]
pub struct BackupJob {
    pub job_id: String,
    pub spec: BackupSpec,
    /// `/` normally; tests back up a temporary tree as if it were the root.
    pub root: PathBuf,
    pub key: ChunkKey,
    pub params: ChunkerParams,
    /// This machine's name (the snapshot's `source`).
    pub source: String,
    /// Unix seconds when the job started.
    pub started: u64,
}

/// The outcome of a committed backup.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BackupReport {
    pub snapshot: SnapshotSummary,
    pub stats: SnapshotStatsWire,
    /// Bytes read from files (unchanged files of an incremental run cost nothing).
    pub bytes_read: u64,
    pub warnings: u64,
}

/// Runs a backup to `dest`, reading `previous` alongside; blocks until committed.
pub fn run_backup<D, S>(
    job: &BackupJob,
    dest: &D,
    previous: Previous<S>,
    counters: &Counters,
) -> Result<BackupReport, BackupError>
where
    D: Destination + ?Sized,
    S: ChunkSource + Send,
{
    // Held until the commit: a volume snapshot is released on every way out (Drop).
    let snapshots = platform::VolumeSnapshots::take(&job.root, &job.spec.selections, counters);
    let abort = Abort::default();
    let upload_stats = UploadStats::default();
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let stages = Stages {
        dest,
        abort: &abort,
        counters,
        stats: &upload_stats,
        level: ZSTD_LEVEL,
    };
    // File chunks are large (512 KiB-8 MiB): short queues keep the agent's memory a few
    // chunks deep. With faster compression the queues run full, and 4 raw chunks waiting
    // for the query plus 8 compressed ones for the uploaders put the agent's peak RSS
    // over restic's in the bench.
    let (to_query, query_in) = bounded::<Outgoing>(2);
    let (to_compress, compress_in) = bounded::<Outgoing>(workers);
    let (to_upload, upload_in) = bounded(UPLOADERS / 2);

    let read_result = std::thread::scope(|s| {
        let stages = &stages;
        s.spawn(move || stages.query(query_in, to_compress));
        for _ in 0..workers {
            let (i, o) = (compress_in.clone(), to_upload.clone());
            s.spawn(move || stages.compress(i, o));
        }
        drop((compress_in, to_upload));
        for _ in 0..UPLOADERS {
            let i = upload_in.clone();
            s.spawn(move || stages.upload(i));
        }
        drop(upload_in);
        let reader = Reader {
            job,
            counters,
            abort: &abort,
            out: to_query,
            stats: ReadStats::default(),
            mounts: snapshots.mounts(),
        };
        reader.run(previous)
    });
    if counters.is_cancelled() {
        return Err(BackupError::Cancelled);
    }
    if let Some(e) = abort.error() {
        return Err(BackupError::Failed(e));
    }
    let (catalog, read_stats) = read_result?;
    let stats = SnapshotStatsWire {
        files: read_stats.files,
        dirs: read_stats.dirs,
        bytes: read_stats.bytes,
        new_bytes: upload_stats.new_bytes.load(Ordering::Relaxed),
        chunks: upload_stats.chunks.load(Ordering::Relaxed),
        new_chunks: upload_stats.new_chunks.load(Ordering::Relaxed),
        reused_files: read_stats.reused_files,
        // The box measures what the snapshot added to its store.
        stored_new_bytes: 0,
    };
    let commit = CommitSnapshot {
        job_id: job.job_id.clone(),
        plan: job.spec.plan.clone(),
        full: job.spec.full,
        started: job.started,
        catalog: catalog.iter().map(Digest::to_hex).collect(),
        source: job.source.clone(),
        stats,
        images: Vec::new(),
        without_snapshot: snapshots.missing(),
    };
    let snapshot = dest
        .commit(&commit)
        .map_err(|e| BackupError::Commit(e.to_string()))?;
    // The box's account of the snapshot is authoritative (it adds what it stored).
    Ok(BackupReport {
        stats: snapshot.stats.clone(),
        snapshot,
        bytes_read: counters.bytes_read.load(Ordering::Relaxed),
        warnings: counters.warnings.load(Ordering::Relaxed),
    })
}

#[derive(Debug, Default)]
struct ReadStats {
    files: u64,
    dirs: u64,
    bytes: u64,
    reused_files: u64,
}

/// An entry waiting in walk order for the catalog.
enum Pending {
    Ready(Entry),
    /// A file whose extents the packer has not reported yet.
    Packing {
        id: u64,
        entry: Entry,
        skip: bool,
    },
    /// A file that could not be read: left out of the catalog.
    Dropped,
}

/// The reader stage: walk, metadata, incremental reuse, packer, catalog.
struct Reader<'a> {
    job: &'a BackupJob,
    counters: &'a Counters,
    abort: &'a Abort,
    out: Sender<Outgoing>,
    stats: ReadStats,
    /// Top-level names read from a volume snapshot instead of the live volume.
    mounts: Vec<(Vec<u8>, PathBuf)>,
}

struct ReadState {
    packer: FilePacker,
    catalog: CatalogWriter,
    pending: VecDeque<Pending>,
    next_id: u64,
}

impl Reader<'_> {
    fn run<S: ChunkSource>(
        mut self,
        mut previous: Previous<S>,
    ) -> Result<(Vec<Digest>, ReadStats), BackupError> {
        let result = self.walk(&mut previous);
        if let Err(e) = &result {
            // Unblocks and stops the other stages.
            self.abort.fail(e.to_string());
        }
        result.map(|d| (d, self.stats))
    }

    fn stopped(&self) -> Result<(), BackupError> {
        if self.counters.is_cancelled() {
            self.abort.fail("cancelled".into());
            return Err(BackupError::Cancelled);
        }
        if self.abort.is_set() {
            return Err(BackupError::Failed(self.abort.error().unwrap_or_default()));
        }
        Ok(())
    }

    fn walk<S: ChunkSource>(
        &mut self,
        previous: &mut Previous<S>,
    ) -> Result<Vec<Digest>, BackupError> {
        let spec = &self.job.spec;
        let mut walk = Walk::with_root(
            &self.job.root,
            &spec.selections,
            Excludes::for_this_system(&spec.excludes),
        );
        for (name, path) in &self.mounts {
            walk = walk.mount(name.clone(), path.clone());
        }
        let mut st = ReadState {
            packer: FilePacker::new(self.job.key.clone(), self.job.params),
            catalog: CatalogWriter::new(self.job.key.clone(), self.job.params, ZSTD_LEVEL),
            pending: VecDeque::new(),
            next_id: 0,
        };
        let mut names = NameCache::default();
        let mut first_links: HashMap<(u64, u64), Vec<u8>> = HashMap::new();
        for event in walk {
            self.stopped()?;
            let item = match event {
                WalkEvent::Warning(w) => {
                    self.counters.warn(w);
                    continue;
                }
                WalkEvent::Item(item) => item,
            };
            self.counters.files_scanned.fetch_add(1, Ordering::Relaxed);
            let (mut entry, warning) =
                match metadata::capture(&item.abs, item.rel, &item.meta, &mut names) {
                    Ok(x) => x,
                    Err(e) => {
                        self.counters
                            .warn(format!("cannot read {}: {e}; skipped", item.abs.display()));
                        continue;
                    }
                };
            if let Some(w) = warning {
                self.counters.warn(w);
            }
            match entry.kind {
                EntryKind::Dir => {
                    self.stats.dirs += 1;
                    st.pending.push_back(Pending::Ready(entry));
                }
                EntryKind::File => {
                    self.stats.files += 1;
                    let link_key = (entry.dev, entry.inode);
                    if entry.nlink > 1 {
                        if let Some(first) = first_links.get(&link_key) {
                            entry.kind = EntryKind::HardLink {
                                target: first.clone(),
                            };
                            st.pending.push_back(Pending::Ready(entry));
                            self.flush(&mut st)?;
                            continue;
                        }
                        first_links.insert(link_key, entry.path.clone());
                    }
                    let path_text = String::from_utf8_lossy(&entry.path).into_owned();
                    self.counters.set_current(&path_text);
                    self.counters
                        .bytes_scanned
                        .fetch_add(entry.size, Ordering::Relaxed);
                    self.stats.bytes += entry.size;
                    let reuse = if spec.full {
                        None
                    } else {
                        previous.reusable(&entry)
                    };
                    if let Some(w) = previous.take_warning() {
                        self.counters.warn(w);
                    }
                    if let Some(extents) = reuse {
                        self.stats.reused_files += 1;
                        entry.extents = extents;
                        st.pending.push_back(Pending::Ready(entry));
                    } else {
                        let id = st.next_id;
                        st.next_id += 1;
                        st.packer.begin_file(id).map_err(store_err)?;
                        let read = self.read_file(&item.abs, entry.size, &mut st);
                        st.packer.end_file().map_err(store_err)?;
                        let skip = match read {
                            Ok(()) => false,
                            Err(ReadFailure::Stop(e)) => return Err(e),
                            Err(ReadFailure::Io(e)) => {
                                self.counters.warn(format!(
                                    "cannot read {}: {e}; skipped",
                                    item.abs.display()
                                ));
                                first_links.remove(&link_key);
                                true
                            }
                        };
                        st.pending.push_back(Pending::Packing { id, entry, skip });
                    }
                }
                _ => st.pending.push_back(Pending::Ready(entry)),
            }
            self.flush(&mut st)?;
        }
        self.stopped()?;
        st.packer.finish().map_err(store_err)?;
        self.flush(&mut st)?;
        if !st.pending.is_empty() {
            return Err(BackupError::Failed(
                "internal error: the packer did not report every file".into(),
            ));
        }
        let finished = st.catalog.finish();
        for c in finished.chunks {
            self.send(Outgoing::Encoded(c))?;
        }
        Ok(finished.digests)
    }

    /// Feeds the data regions of one file to the packer, leaving holes as holes.
    fn read_file(
        &self,
        abs: &std::path::Path,
        size: u64,
        st: &mut ReadState,
    ) -> Result<(), ReadFailure> {
        let mut file = platform::open_for_backup(abs).map_err(ReadFailure::Io)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(size);
        let mut pos = 0u64;
        while let Some((start, end)) =
            platform::next_data_region(&file, pos, size).map_err(ReadFailure::Io)?
        {
            st.packer
                .skip_hole(start)
                .map_err(|e| ReadFailure::Stop(store_err(e)))?;
            use std::io::Seek;
            file.seek(std::io::SeekFrom::Start(start))
                .map_err(ReadFailure::Io)?;
            pos = start;
            while pos < end {
                self.stopped().map_err(ReadFailure::Stop)?;
                let want = usize::try_from(end - pos).map_or(READ_BLOCK, |n| n.min(READ_BLOCK));
                // Read straight into the chunker's window: no copy through a buffer.
                let n = st.packer.write_from(want, |room: &mut [u8]| {
                    file.read(room).map_err(ReadFailure::Io)
                })?;
                if n == 0 {
                    // Shrunk while reading: what is left is a hole.
                    pos = end;
                    break;
                }
                pos += n as u64;
                self.counters
                    .bytes_read
                    .fetch_add(n as u64, Ordering::Relaxed);
                self.flush(st).map_err(ReadFailure::Stop)?;
            }
        }
        st.packer
            .skip_hole(size.max(pos))
            .map_err(|e| ReadFailure::Stop(store_err(e)))?;
        Ok(())
    }

    /// Moves packer outputs on: chunks to the upload stages, extents into waiting entries,
    /// and the complete front of the queue into the catalog.
    fn flush(&self, st: &mut ReadState) -> Result<(), BackupError> {
        while let Some(out) = st.packer.next_output() {
            match out {
                Packed::Chunk(c) => self.send(Outgoing::Raw(c))?,
                Packed::File(f) => {
                    let slot = st
                        .pending
                        .iter_mut()
                        .find(|p| matches!(p, Pending::Packing { id, .. } if *id == f.id));
                    if let Some(slot) = slot
                        && let Pending::Packing {
                            mut entry, skip, ..
                        } = std::mem::replace(slot, Pending::Dropped)
                        && !skip
                    {
                        entry.size = f.size;
                        entry.extents = f.extents;
                        *slot = Pending::Ready(entry);
                    }
                }
            }
        }
        loop {
            match st.pending.front() {
                Some(Pending::Packing { .. }) | None => break,
                Some(Pending::Dropped) => {
                    st.pending.pop_front();
                }
                Some(Pending::Ready(_)) => {
                    if let Some(Pending::Ready(entry)) = st.pending.pop_front() {
                        st.catalog.push(&entry).map_err(store_err)?;
                    }
                }
            }
        }
        for c in st.catalog.take_chunks() {
            self.send(Outgoing::Encoded(c))?;
        }
        Ok(())
    }

    fn send(&self, c: Outgoing) -> Result<(), BackupError> {
        self.out.send(c).map_err(|_| {
            BackupError::Failed(
                self.abort
                    .error()
                    .unwrap_or_else(|| "the upload stages stopped".into()),
            )
        })
    }
}

enum ReadFailure {
    /// The file could not be read: skip it.
    Io(std::io::Error),
    /// The backup must stop.
    Stop(BackupError),
}

impl From<abri_store::StoreError> for ReadFailure {
    fn from(e: abri_store::StoreError) -> Self {
        ReadFailure::Stop(store_err(e))
    }
}

fn store_err(e: abri_store::StoreError) -> BackupError {
    BackupError::Failed(e.to_string())
}
