//! The writer threads of a Unix file restore.
//!
//! The restorer (`restore.rs`) walks the catalog on one thread: it checks every path, opens
//! every parent without following symlinks, creates each file (`O_CREAT | O_EXCL |
//! O_NOFOLLOW`) and fetches its chunks in plan order. What is left of a file once it exists —
//! copying its bytes into it, sizing it, its owner, mode, xattrs and times — needs only open
//! descriptors, and goes to [`WRITERS`] threads here. No writer resolves a path: the safety
//! rules stay entirely with the restorer.
//!
//! Files of at least [`DIRECT_MIN`] bytes are written around the page cache (`O_DIRECT`),
//! like image restores (see `image/writeout.rs` for why). A chunk decoded at the alignment
//! of its bytes' file offset (as the restore plan places it) has its whole blocks written
//! straight from it; the bytes around them, and pieces of chunks placed for another file,
//! are copied into aligned run buffers from a small pool, and a writer writes each run's
//! aligned part directly and its unaligned edges through the page cache. Smaller files, and
//! every file on a file system that refuses direct writes, go through the page cache whole.
//!
//! A file's data may be split over several jobs, which writers may write at the same time
//! (the restorer allocates a large file's blocks first, so its direct writes are overwrites
//! that Linux runs side by side); the writer that finishes its last job sizes the file and
//! applies its metadata. The first write error stops the restore: the writers
//! drop what is still queued, and the restorer returns that error.

use abri_store::{Entry, PlacedChunk};
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_channel::{Receiver, Sender, bounded};

use crate::image::writeout::{ALIGN, AlignedBuf, write_direct};
use crate::platform;
use crate::progress::Counters;
use crate::restore::{RestoreError, text, warn_io};

/// Threads writing restored bytes into files.
const WRITERS: usize = 2;
/// Batches of jobs waiting for a writer. A job holds a decoded chunk (2 MiB on average,
/// 8 MiB at most) until it is written, so the queue is short: it only has to keep the
/// writers busy.
pub(crate) const QUEUE: usize = 8;
/// Jobs sent to the writers at once, at most. Handing one job at a time woke a sleeping
/// writer for nearly every small file (15–20 thousand context switches a second in the
/// bench's restore); the restorer gathers jobs and sends them together, and sends what it
/// has before it may wait for a chunk ([`Writers::flush`]).
const BATCH: usize = 32;
/// Bytes of data in a batch at which it is sent without waiting for more jobs.
const BATCH_BYTES: usize = 256 << 10;
pub(crate) use crate::restore_chunks::DIRECT_MIN;
/// Run buffers at most: direct writes hold at most `RUNS` × [`RUN_BYTES`] of memory.
const RUNS: usize = 6;
/// Bytes of a run buffer. Runs hold the bytes around a chunk's whole blocks and pieces of
/// chunks placed for another file: rarely more than a few hundred KiB in a row.
const RUN_BYTES: usize = 1 << 20;
/// Fewest bytes written directly from a chunk: a shorter span is copied into a run (where
/// it joins its neighbours in one write).
const DIRECT_SPAN_MIN: usize = 64 << 10;

/// What the restorer knows of a created file that spares the writers work at its end.
pub(crate) struct FileDone {
    /// Owner and group ids to set (restores as root only), resolved by the restorer.
    pub owner: Option<(u32, u32)>,
    /// The permission bits the file was created with (after the umask): its mode is set
    /// only if the entry's differs.
    pub mode_set: u32,
    /// Where the file's data ends: it is sized only if that is not its size (a hole at its
    /// end, or no data at all).
    pub data_end: u64,
}

/// A file the restorer created, with what the writers still have to do to it.
pub(crate) struct OpenFile {
    file: File,
    /// The same file opened for direct writes, when it is large and the file system agrees.
    direct: Option<File>,
    /// The catalog entry, without its extents (they travel in the jobs).
    entry: Entry,
    done: FileDone,
    /// Jobs of this file not finished yet, counting the one [`FileFeed`] holds back.
    jobs_left: AtomicUsize,
}

impl OpenFile {
    /// `entry` is the file's entry without its extents.
    pub(crate) fn new(file: File, direct: Option<File>, entry: Entry, done: FileDone) -> Self {
        OpenFile {
            file,
            direct,
            entry,
            done,
            jobs_left: AtomicUsize::new(1),
        }
    }

    pub(crate) fn path(&self) -> &[u8] {
        &self.entry.path
    }

    fn io_error(&self, source: io::Error) -> RestoreError {
        RestoreError::Io {
            path: text(&self.entry.path),
            source,
        }
    }
}

/// Consecutive bytes of a file in a run buffer: `buf.bytes()[lead..lead + len]` go to
/// `offset`, with `lead = offset % ALIGN`, so a position in the buffer is aligned exactly
/// where its file offset is.
struct Run {
    buf: AlignedBuf,
    lead: usize,
    len: usize,
    offset: u64,
}

enum Data {
    /// Nothing to write (an empty file, or only holes).
    None,
    /// Bytes of a decoded chunk (`chunk[start..end]`, checked by the restorer) to write at
    /// `offset` through the page cache.
    Piece {
        chunk: Arc<PlacedChunk>,
        start: usize,
        end: usize,
        offset: u64,
    },
    /// Whole blocks of a decoded chunk (`chunk[start..end]`) that lie in memory at the
    /// alignment of `offset`, their place in the file: written directly, without a copy.
    Direct {
        chunk: Arc<PlacedChunk>,
        start: usize,
        end: usize,
        offset: u64,
    },
    Run(Run),
}

/// One job: some of a file's data, and its completion.
struct Job {
    file: Arc<OpenFile>,
    data: Data,
}

impl Job {
    /// The bytes it writes.
    fn len(&self) -> usize {
        match &self.data {
            Data::None => 0,
            Data::Piece { start, end, .. } | Data::Direct { start, end, .. } => end - start,
            Data::Run(run) => run.len,
        }
    }
}

/// Jobs gathered for the writers, not sent yet.
#[derive(Default)]
struct Batch {
    jobs: Vec<Job>,
    bytes: usize,
}

/// What the writers share with the restorer.
struct Shared {
    stopped: AtomicBool,
    /// Cleared when a direct write is refused: the rest goes through the page cache.
    direct_ok: AtomicBool,
    failure: Mutex<Option<RestoreError>>,
}

impl Shared {
    fn new() -> Self {
        Shared {
            stopped: AtomicBool::new(false),
            direct_ok: AtomicBool::new(true),
            failure: Mutex::new(None),
        }
    }

    fn fail(&self, e: RestoreError) {
        let mut slot = self.failure.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            *slot = Some(e);
        }
        self.stopped.store(true, Ordering::Release);
    }
}

/// The restorer's end of the writer threads.
pub(crate) struct Writers {
    queue: Sender<Vec<Job>>,
    /// Jobs gathered for the next batch (only the thread feeding these writers adds to it;
    /// the lock is never contended).
    batch: Mutex<Batch>,
    /// Run buffers the writers gave back.
    free_runs: Receiver<AlignedBuf>,
    /// Run buffers made so far (at most [`RUNS`]; a restore of small files makes none).
    runs_made: AtomicUsize,
    shared: Arc<Shared>,
}

impl Writers {
    /// Whether a writer failed: the restore must stop (and [`run_with_writers`] returns the
    /// writer's error).
    pub(crate) fn stopped(&self) -> bool {
        self.shared.stopped.load(Ordering::Acquire)
    }

    /// Whether a file of `size` bytes should be written directly.
    pub(crate) fn wants_direct(&self, size: u64) -> bool {
        size >= DIRECT_MIN && self.shared.direct_ok.load(Ordering::Relaxed)
    }

    /// Adds `job` to the batch, which goes to the writers once it is full.
    fn send(&self, job: Job) -> Result<(), RestoreError> {
        if self.stopped() {
            return Err(RestoreError::WritersStopped);
        }
        let full = {
            let mut batch = self.batch.lock().unwrap_or_else(|p| p.into_inner());
            batch.bytes += job.len();
            batch.jobs.push(job);
            batch.jobs.len() >= BATCH || batch.bytes >= BATCH_BYTES
        };
        if full { self.flush() } else { Ok(()) }
    }

    /// Sends the jobs gathered so far. The feeding thread calls it before anything that
    /// may wait (fetching a chunk), so that the writers never idle on jobs it holds.
    pub(crate) fn flush(&self) -> Result<(), RestoreError> {
        let jobs = {
            let mut batch = self.batch.lock().unwrap_or_else(|p| p.into_inner());
            batch.bytes = 0;
            std::mem::take(&mut batch.jobs)
        };
        if jobs.is_empty() {
            return Ok(());
        }
        if self.stopped() || self.queue.send(jobs).is_err() {
            return Err(RestoreError::WritersStopped);
        }
        Ok(())
    }

    /// A run buffer: a free one, a new one while fewer than [`RUNS`] exist, or the next one
    /// a writer gives back.
    fn run_buf(&self) -> Result<AlignedBuf, RestoreError> {
        if self.stopped() {
            return Err(RestoreError::WritersStopped);
        }
        if let Ok(buf) = self.free_runs.try_recv() {
            return Ok(buf);
        }
        if self.runs_made.load(Ordering::Relaxed) < RUNS {
            self.runs_made.fetch_add(1, Ordering::Relaxed);
            return Ok(AlignedBuf::new(RUN_BYTES));
        }
        // Every run may be in the batch: the writers can give one back only once they have it.
        self.flush()?;
        self.free_runs
            .recv()
            .map_err(|_| RestoreError::WritersStopped)
    }
}

/// A file shared by a [`FileFeed`] with another one (see [`FileFeed::share`]).
pub(crate) struct SharedFile(Arc<OpenFile>);

/// Feeds one file's data to the writers. The latest job is held back until the next one or
/// [`finish`], so the file's count of jobs cannot reach zero before all of them are sent.
///
/// [`finish`]: FileFeed::finish
pub(crate) struct FileFeed<'w> {
    writers: &'w Writers,
    file: Arc<OpenFile>,
    held: Option<Data>,
    /// The run being filled (direct files only).
    run: Option<Run>,
}

impl<'w> FileFeed<'w> {
    pub(crate) fn new(writers: &'w Writers, file: OpenFile) -> Self {
        FileFeed {
            writers,
            file: Arc::new(file),
            held: None,
            run: None,
        }
    }

    /// Resumes a file another feed [`share`]d: this feed writes its own extents of it, and
    /// the file is finished once both feeds are.
    ///
    /// [`share`]: FileFeed::share
    pub(crate) fn resume(writers: &'w Writers, shared: SharedFile) -> Self {
        FileFeed {
            writers,
            file: shared.0,
            held: None,
            run: None,
        }
    }

    /// The file, for another feed to write some of its extents ([`FileFeed::resume`]). It
    /// counts as one more job of the file until that feed finishes, so its size and
    /// metadata wait for both feeds.
    pub(crate) fn share(&self) -> SharedFile {
        self.file.jobs_left.fetch_add(1, Ordering::AcqRel);
        SharedFile(self.file.clone())
    }

    pub(crate) fn path(&self) -> &[u8] {
        self.file.path()
    }

    fn queue(&mut self, data: Data) -> Result<(), RestoreError> {
        if let Some(previous) = self.held.replace(data) {
            self.file.jobs_left.fetch_add(1, Ordering::AcqRel);
            self.writers.send(Job {
                file: self.file.clone(),
                data: previous,
            })?;
        }
        Ok(())
    }

    /// Adds `chunk[start..end]` (a range the caller checked) at file offset `offset`.
    ///
    /// For a direct file, the piece's whole blocks are written straight from the chunk when
    /// the chunk was decoded at their alignment (the restore plan places each chunk for the
    /// longest piece a directly written file takes from it), and only the bytes around them
    /// are copied into runs; any other piece is copied into runs whole.
    pub(crate) fn push(
        &mut self,
        chunk: &Arc<PlacedChunk>,
        start: usize,
        end: usize,
        offset: u64,
    ) -> Result<(), RestoreError> {
        if self.file.direct.is_none() {
            return self.queue(Data::Piece {
                chunk: chunk.clone(),
                start,
                end,
                offset,
            });
        }
        let Some((from, to)) = direct_span(chunk, start, end, offset) else {
            return self.copy_to_runs(&chunk[start..end], offset);
        };
        self.copy_to_runs(&chunk[start..from], offset)?;
        if let Some(run) = self.run.take() {
            self.queue(Data::Run(run))?;
        }
        self.queue(Data::Direct {
            chunk: chunk.clone(),
            start: from,
            end: to,
            offset: offset + (from - start) as u64,
        })?;
        self.copy_to_runs(&chunk[to..end], offset + (to - start) as u64)
    }

    /// Copies `bytes`, for file offset `offset`, into runs.
    fn copy_to_runs(&mut self, bytes: &[u8], offset: u64) -> Result<(), RestoreError> {
        let (mut bytes, mut offset) = (bytes, offset);
        while !bytes.is_empty() {
            let mut run = match self.run.take() {
                Some(run) if run.offset + run.len as u64 == offset => run,
                other => {
                    if let Some(gap_before) = other {
                        self.queue(Data::Run(gap_before))?;
                    }
                    Run {
                        buf: self.writers.run_buf()?,
                        lead: (offset % ALIGN as u64) as usize,
                        len: 0,
                        offset,
                    }
                }
            };
            let at = run.lead + run.len;
            let n = bytes.len().min(RUN_BYTES - at);
            run.buf.as_mut_slice()[at..at + n].copy_from_slice(&bytes[..n]);
            run.len += n;
            bytes = &bytes[n..];
            offset += n as u64;
            if run.lead + run.len == RUN_BYTES {
                self.queue(Data::Run(run))?;
            } else {
                self.run = Some(run);
            }
        }
        Ok(())
    }

    /// Sends the last job: once every job of the file is written, the file is sized and
    /// gets its metadata.
    pub(crate) fn finish(mut self) -> Result<(), RestoreError> {
        if let Some(run) = self.run.take() {
            self.queue(Data::Run(run))?;
        }
        let data = self.held.take().unwrap_or(Data::None);
        self.writers.send(Job {
            file: self.file.clone(),
            data,
        })
    }
}

/// Runs `restore` with [`WRITERS`] writer threads behind the [`Writers`] it is given; when it
/// returns, waits for every queued job. A writer's failure comes before the restore's own
/// result (which is then only the consequence of the stop).
pub(crate) fn run_with_writers<R>(
    counters: &Counters,
    queue: usize,
    restore: impl FnOnce(&Writers) -> Result<R, RestoreError>,
) -> Result<R, RestoreError> {
    let shared = Arc::new(Shared::new());
    let (free_tx, free_rx) = bounded::<AlignedBuf>(RUNS);
    let (tx, rx) = bounded::<Vec<Job>>(queue);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..WRITERS)
            .map(|_| {
                let (rx, free_tx, shared) = (rx.clone(), free_tx.clone(), &shared);
                scope.spawn(move || {
                    for job in rx.into_iter().flatten() {
                        let skip =
                            shared.stopped.load(Ordering::Acquire) || counters.is_cancelled();
                        let result = if skip {
                            Ok(())
                        } else {
                            do_job(&job, shared, counters)
                        };
                        if let Data::Run(run) = job.data {
                            // At most RUNS buffers exist and the pool holds RUNS: never full.
                            let _ = free_tx.try_send(run.buf);
                        }
                        if let Err(e) = result {
                            shared.fail(e);
                        }
                    }
                })
            })
            .collect();
        drop((rx, free_tx));
        let writers = Writers {
            queue: tx,
            batch: Mutex::new(Batch::default()),
            free_runs: free_rx,
            runs_made: AtomicUsize::new(0),
            shared: shared.clone(),
        };
        let result = restore(&writers);
        // What the restore gathered last; after a failure it is dropped unwritten.
        let result = result.and_then(|r| writers.flush().map(|()| r));
        drop(writers);
        for h in handles {
            if let Err(panic) = h.join() {
                std::panic::resume_unwind(panic);
            }
        }
        let failure = shared
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        match failure {
            Some(e) => Err(e),
            None => result,
        }
    })
}

fn do_job(job: &Job, shared: &Shared, counters: &Counters) -> Result<(), RestoreError> {
    let open = &job.file;
    let written = match &job.data {
        Data::None => 0,
        Data::Piece {
            chunk,
            start,
            end,
            offset,
        } => {
            open.file
                .write_all_at(&chunk[*start..*end], *offset)
                .map_err(|e| open.io_error(e))?;
            end - start
        }
        Data::Direct {
            chunk,
            start,
            end,
            offset,
        } => {
            let bytes = &chunk[*start..*end];
            let written = match &open.direct {
                Some(direct) => write_direct(direct, bytes, *offset, &shared.direct_ok),
                None => Ok(false),
            };
            if !written.map_err(|e| open.io_error(e))? {
                open.file
                    .write_all_at(bytes, *offset)
                    .map_err(|e| open.io_error(e))?;
            }
            end - start
        }
        Data::Run(run) => {
            write_run(open, run, shared).map_err(|e| open.io_error(e))?;
            run.len
        }
    };
    counters
        .bytes_scanned
        .fetch_add(written as u64, Ordering::Relaxed);
    if open.jobs_left.fetch_sub(1, Ordering::AcqRel) == 1 {
        if open.done.data_end != open.entry.size {
            open.file
                .set_len(open.entry.size)
                .map_err(|e| open.io_error(e))?;
        }
        let done = &open.done;
        let fd = open.file.as_fd();
        apply_fd_meta(counters, fd, &open.entry, done.owner, Some(done.mode_set));
    }
    Ok(())
}

/// The part `from..to` of `chunk[start..end]` (for file offset `offset`) to write directly
/// from the chunk: its whole blocks, if the chunk lies in memory at their alignment and
/// they are worth a job of their own ([`DIRECT_SPAN_MIN`]).
fn direct_span(
    chunk: &PlacedChunk,
    start: usize,
    end: usize,
    offset: u64,
) -> Option<(usize, usize)> {
    let at = chunk.as_ptr() as usize + start;
    if at % ALIGN != (offset % ALIGN as u64) as usize {
        return None;
    }
    let from = start + (ALIGN - at % ALIGN) % ALIGN;
    let to = from + end.checked_sub(from)? / ALIGN * ALIGN;
    (to - from >= DIRECT_SPAN_MIN).then_some((from, to))
}

/// Writes a run: its aligned middle directly, its unaligned edges (and all of it if direct
/// writes are refused) through the page cache.
fn write_run(open: &OpenFile, run: &Run, shared: &Shared) -> io::Result<()> {
    let bytes = run.buf.as_slice();
    let (from, to) = (run.lead, run.lead + run.len);
    let mid_from = from.next_multiple_of(ALIGN).min(to);
    let mid_to = (to / ALIGN * ALIGN).max(mid_from);
    // Buffer position p holds the byte for file offset `base + p`.
    let base = run.offset - run.lead as u64;
    let buffered = |a: usize, b: usize| -> io::Result<()> {
        if a < b {
            open.file.write_all_at(&bytes[a..b], base + a as u64)?;
        }
        Ok(())
    };
    let direct_done = match &open.direct {
        Some(direct) if mid_from < mid_to => write_direct(
            direct,
            &bytes[mid_from..mid_to],
            base + mid_from as u64,
            &shared.direct_ok,
        )?,
        _ => false,
    };
    if direct_done {
        buffered(from, mid_from)?;
        buffered(mid_to, to)
    } else {
        buffered(from, to)
    }
}

/// Owner (if given), mode, xattrs and times of an open file or directory; failures are
/// warnings. `mode_set` is the object's mode if known: it is changed only if the entry's
/// differs. With an owner to set, the object is looked at first: an owner it already has is
/// not set again, and after a change of owner (which may clear set-user-ID and set-group-ID
/// bits) the mode is always set.
pub(crate) fn apply_fd_meta(
    counters: &Counters,
    fd: BorrowedFd<'_>,
    entry: &Entry,
    owner: Option<(u32, u32)>,
    mode_set: Option<u32>,
) {
    let warn = |what: &str, e: io::Error| warn_io(counters, what, &entry.path, e);
    let mode = entry.mode & 0o7777;
    let mut mode_set = mode_set;
    if let Some((uid, gid)) = owner {
        // Most restored objects already have their owner (root restoring root's files): a
        // look first spares them a change of owner and mode, each a journalled inode update.
        let now = platform::stat_fd(fd).ok();
        if now.is_none_or(|st| (st.st_uid, st.st_gid) != (uid, gid)) {
            if let Err(e) = platform::chown_fd(fd, uid, gid) {
                warn("owner", e);
            }
            // A change of owner may clear set-user-ID and set-group-ID bits.
            mode_set = None;
        } else if let Some(st) = now {
            mode_set = Some(st.st_mode & 0o7777);
        }
    }
    if mode_set != Some(mode)
        && let Err(e) = platform::chmod_fd(fd, mode)
    {
        warn("mode", e);
    }
    for (k, v) in &entry.xattrs {
        if let Err(e) = platform::set_xattr_fd(fd, k, v) {
            warn(&format!("attribute {}", text(k)), e);
        }
    }
    if let Err(e) = platform::set_times_fd(fd, entry.atime_ns, entry.mtime_ns) {
        warn("times", e);
    }
}

#[cfg(test)]
mod tests;
