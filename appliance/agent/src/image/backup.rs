//! One image backup: for each source, read the chunks worth reading, skip what is known,
//! upload the rest, write segment entries; then commit.
//!
//! Per source, the *read map* is what may hold data: allocated (file extents, NBD
//! allocation) ∩ used by the file systems (see `layout`). A chunk slot outside it is a
//! hole and is not read; the bytes of a read chunk outside it are zeroed (free blocks of a
//! file system are not backed up). With a dirty bitmap and a previous image of the same
//! size, slots the bitmap does not mark are taken from the previous image unread. The
//! previous image is read alongside, slot by slot, so a chunk equal to the previous one at
//! the same place is neither asked about nor sent: only changed chunks travel.

use abri_proto::agent::{BackupSpec, CommitSnapshot, SnapshotStatsWire};
use abri_store::image::{CHUNK_BYTES, SEGMENT_BYTES};
use abri_store::{
    CatalogReader, CatalogWriter, ChunkKey, ChunkSource, ChunkerParams, Digest, Extent, ImageInfo,
    ImageSegments, PackedChunk, image_dir_entry, segment_path,
};
use crossbeam_channel::{Sender, bounded};
use std::sync::atomic::Ordering;

use super::layout::{self, Layout};
use super::ranges::Ranges;
use super::source::{self, OpenedSource, Selection};
use crate::backup::{BackupError, BackupReport, UPLOADERS};
use crate::progress::Counters;
use crate::upload::{
    Abort, Destination, IMAGE_ZSTD_LEVEL, Outgoing, Stages, UploadStats, ZSTD_LEVEL,
};

/// Slots read with one request (1 MiB at 64 KiB chunks).
const READ_BATCH: u64 = 16;
/// Chunks waiting for the query, and compressed chunks waiting for an uploader.
const QUEUED_CHUNKS: usize = 128;

/// What to image and how.
#[derive(Debug, Clone)]
pub struct ImageJob {
    pub job_id: String,
    pub spec: BackupSpec,
    pub key: ChunkKey,
    /// This machine's name (the snapshot's `source`).
    pub source: String,
    /// Unix seconds when the job started.
    pub started: u64,
}

/// The previous image snapshot of the plan: its catalog and images.
pub struct PreviousImages<S: ChunkSource> {
    pub reader: CatalogReader<S>,
    pub images: Vec<ImageInfo>,
}

/// Counters of one image backup beyond the upload stages'.
#[derive(Debug, Default)]
struct ImageStats {
    images: u64,
    bytes: u64,
    data_slots: u64,
    /// Slots taken from the previous image without reading (dirty bitmap).
    unread_slots: u64,
}

/// Runs an image backup to `dest`; blocks until committed.
pub fn run_image_backup<D, S>(
    job: &ImageJob,
    dest: &D,
    previous: Option<PreviousImages<S>>,
    counters: &Counters,
) -> Result<BackupReport, BackupError>
where
    D: Destination + ?Sized,
    S: ChunkSource + Send,
{
    let mut selections = Vec::new();
    for text in &job.spec.selections {
        selections.push(Selection::parse(text).map_err(BackupError::Failed)?);
    }
    // Open everything first: a source that cannot be read fails the job before any work.
    let mut sources: Vec<OpenedSource> = source::open_all(&selections, &job.job_id, counters)
        .map_err(|e| BackupError::Failed(format!("cannot open image source: {e}")))?;
    for opened in &sources {
        for note in &opened.notes {
            counters.warn(note.clone());
        }
    }
    uniquify_names(&mut sources);
    let without_snapshot = sources.iter().any(|s| s.live);
    sources.sort_by(|a, b| abri_store::path_cmp(a.name.as_bytes(), b.name.as_bytes()));

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
        level: IMAGE_ZSTD_LEVEL,
    };
    // Image chunks are small (64 KiB): room for a few batches' worth waiting between the
    // stages, so queries and uploads go many chunks to a request (8 MiB per queue at most),
    // and the compressors have work while a missing-query is out (with only a few chunks
    // queued for them, they idled for a fifth of the image bench's first backup).
    let (to_query, query_in) = bounded::<Outgoing>(QUEUED_CHUNKS);
    let (to_compress, compress_in) = bounded::<Outgoing>(QUEUED_CHUNKS);
    let (to_upload, upload_in) = bounded(QUEUED_CHUNKS);
    let use_previous = !job.spec.full;
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
        let mut reader = Reader {
            job,
            counters,
            abort: &abort,
            out: to_query,
            stats: ImageStats::default(),
        };
        let previous = if use_previous { previous } else { None };
        let r = reader.run(&sources, previous);
        if let Err(e) = &r {
            abort.fail(e.to_string());
        }
        r.map(|x| (x, reader.stats))
    });
    // LVM and VSS snapshots go now, whatever happened.
    drop(sources);
    if counters.is_cancelled() {
        return Err(BackupError::Cancelled);
    }
    if let Some(e) = abort.error() {
        return Err(BackupError::Failed(e));
    }
    let ((catalog, images), stats) = read_result?;
    let wire = SnapshotStatsWire {
        files: stats.images,
        dirs: 0,
        bytes: stats.bytes,
        new_bytes: upload_stats.new_bytes.load(Ordering::Relaxed),
        chunks: stats.data_slots,
        new_chunks: upload_stats.new_chunks.load(Ordering::Relaxed),
        reused_files: stats.unread_slots,
        stored_new_bytes: 0,
    };
    let commit = CommitSnapshot {
        job_id: job.job_id.clone(),
        plan: job.spec.plan.clone(),
        full: job.spec.full,
        started: job.started,
        catalog: catalog.iter().map(Digest::to_hex).collect(),
        source: job.source.clone(),
        stats: wire,
        images,
        without_snapshot,
    };
    let snapshot = dest
        .commit(&commit)
        .map_err(|e| BackupError::Commit(e.to_string()))?;
    Ok(BackupReport {
        stats: snapshot.stats.clone(),
        snapshot,
        bytes_read: counters.bytes_read.load(Ordering::Relaxed),
        warnings: counters.warnings.load(Ordering::Relaxed),
    })
}

/// The previous image's slots, read alongside, when there is a previous image to use.
fn previous_slots<S: ChunkSource>(
    info: Option<ImageInfo>,
    previous: &mut Option<PreviousImages<S>>,
) -> Option<PreviousSlots<'_, S>> {
    match (info, previous.as_mut()) {
        (Some(info), Some(p)) => Some(PreviousSlots::new(info, &mut p.reader)),
        _ => None,
    }
}

/// Two sources with the same name get `-2`, `-3`… suffixes.
fn uniquify_names(sources: &mut [OpenedSource]) {
    let mut seen = std::collections::HashSet::new();
    for s in sources.iter_mut() {
        let base = s.name.clone();
        let mut n = 1;
        while !seen.insert(s.name.clone()) {
            n += 1;
            s.name = format!("{base}-{n}");
        }
    }
}

struct Reader<'a> {
    job: &'a ImageJob,
    counters: &'a Counters,
    abort: &'a Abort,
    out: Sender<Outgoing>,
    stats: ImageStats,
}

/// What to do with one slot.
enum SlotPlan {
    Hole,
    /// Taken from the previous image without reading.
    Previous(Option<Digest>),
    Read,
}

impl Reader<'_> {
    /// Writes one image's entries (reading or taking from the previous image what `map` and
    /// `changed` say) and records it.
    #[allow(clippy::too_many_arguments)]
    fn push_image<S: ChunkSource>(
        &mut self,
        src: &OpenedSource,
        info: ImageInfo,
        map: &Ranges,
        changed: Option<&Ranges>,
        mut prev_slots: Option<PreviousSlots<'_, S>>,
        catalog: &mut CatalogWriter,
        now_ns: i64,
        infos: &mut Vec<ImageInfo>,
    ) -> Result<(), BackupError> {
        info.validate()
            .map_err(|e| BackupError::Failed(e.to_string()))?;
        catalog
            .push(&image_dir_entry(&info, now_ns))
            .map_err(store_err)?;
        self.counters.set_current(&src.name);
        self.image(src, &info, map, changed, prev_slots.as_mut(), catalog)?;
        self.stats.images += 1;
        self.stats.bytes += info.size;
        infos.push(info);
        Ok(())
    }

    fn run<S: ChunkSource>(
        &mut self,
        sources: &[OpenedSource],
        mut previous: Option<PreviousImages<S>>,
    ) -> Result<(Vec<Digest>, Vec<ImageInfo>), BackupError> {
        let mut catalog =
            CatalogWriter::new(self.job.key.clone(), ChunkerParams::DEFAULT, ZSTD_LEVEL);
        let mut infos = Vec::new();
        let now_ns = (self.job.started as i64).saturating_mul(1_000_000_000);
        for src in sources {
            self.stopped()?;
            let size = src.reader.size();
            if size == 0 {
                return Err(BackupError::Failed(format!("{} is empty", src.description)));
            }
            let prev_info = previous
                .as_ref()
                .and_then(|p| p.images.iter().find(|i| i.name == src.name))
                .filter(|i| i.size == size && i.chunk_size == CHUNK_BYTES)
                .cloned();
            let file_state = src.reader.file_state();
            if let Some(prev) = prev_info
                .as_ref()
                .filter(|p| file_state.is_some() && p.file_state == file_state)
            {
                // An image file in the same state as at the previous image: every slot is
                // the previous one, nothing is read.
                let info = ImageInfo {
                    name: src.name.clone(),
                    source: src.description.clone(),
                    read: "unchanged-file".into(),
                    ..prev.clone()
                };
                let prev_slots = previous_slots(prev_info, &mut previous);
                self.push_image(
                    src,
                    info,
                    &Ranges::all(0),
                    Some(&Ranges::default()),
                    prev_slots,
                    &mut catalog,
                    now_ns,
                    &mut infos,
                )?;
                continue;
            }
            let Layout {
                table,
                volumes,
                used,
            } = layout::examine(src.reader.as_ref(), self.counters);
            let allocated = src
                .reader
                .allocated()
                .map_err(|e| fail(&src.description, e))?;
            let mut read = Vec::new();
            let mut map = Ranges::all(size);
            if let Some(u) = &used
                && u.len_bytes() < size
            {
                map = map.intersect(u);
                read.push("used-blocks");
            }
            match &allocated {
                Some(a) => {
                    map = map.intersect(a);
                    read.push(src.reader.allocation_method());
                }
                None if used.is_none() => read.push("all"),
                None => {}
            }
            let changed = match (&prev_info, src.reader.changed()) {
                (Some(_), Ok(Some(c))) => {
                    read.push("changed-blocks");
                    Some(c)
                }
                (_, Err(e)) => {
                    self.counters.warn(format!(
                        "{}: the dirty bitmap cannot be read ({e}); every block is read",
                        src.description
                    ));
                    None
                }
                _ => None,
            };
            let info = ImageInfo {
                name: src.name.clone(),
                source: src.description.clone(),
                size,
                chunk_size: CHUNK_BYTES,
                segment_size: SEGMENT_BYTES,
                table,
                volumes,
                read: read.join("+"),
                file_state,
            };
            let prev_slots = previous_slots(prev_info, &mut previous);
            self.push_image(
                src,
                info,
                &map,
                changed.as_ref(),
                prev_slots,
                &mut catalog,
                now_ns,
                &mut infos,
            )?;
        }
        self.stopped()?;
        let finished = catalog.finish();
        for c in finished.chunks {
            self.send(Outgoing::Encoded(c))?;
        }
        Ok((finished.digests, infos))
    }

    #[allow(clippy::too_many_arguments)]
    fn image<S: ChunkSource>(
        &mut self,
        src: &OpenedSource,
        info: &ImageInfo,
        map: &Ranges,
        changed: Option<&Ranges>,
        mut prev: Option<&mut PreviousSlots<'_, S>>,
        catalog: &mut CatalogWriter,
    ) -> Result<(), BackupError> {
        let chunk = u64::from(info.chunk_size);
        let size = info.size;
        let slots = size.div_ceil(chunk);
        // Segments carry no time: unchanged ones encode identically and dedupe.
        let mut segments = ImageSegments::new(info.clone(), 0);
        let mut map_cursor = map.cursor();
        let mut changed_cursor = changed.map(Ranges::cursor);
        let mut buf = vec![0u8; (READ_BATCH * chunk) as usize];
        let mut slot = 0u64;
        while slot < slots {
            self.stopped()?;
            // Plan a run of slots: either one non-read slot, or up to READ_BATCH
            // consecutive slots to read in one request.
            let plan = self.plan_slot(
                slot,
                chunk,
                size,
                &mut map_cursor,
                changed_cursor.as_mut(),
                &mut prev,
            )?;
            let mut run = 1u64;
            if matches!(plan, SlotPlan::Read) {
                while run < READ_BATCH && slot + run < slots {
                    let s = slot + run;
                    let start = s * chunk;
                    let end = (start + chunk).min(size);
                    let dirty = changed_cursor
                        .as_mut()
                        .is_none_or(|c| c.touches(start, end));
                    if !dirty || !map_cursor.touches(start, end) {
                        break;
                    }
                    run += 1;
                }
            }
            match plan {
                SlotPlan::Hole => self.push(&mut segments, catalog, None)?,
                SlotPlan::Previous(d) => {
                    self.stats.unread_slots += 1;
                    if d.is_some() {
                        self.stats.data_slots += 1;
                    }
                    self.push(&mut segments, catalog, d)?
                }
                SlotPlan::Read => {
                    let start = slot * chunk;
                    let end = ((slot + run) * chunk).min(size);
                    let data = &mut buf[..(end - start) as usize];
                    src.reader
                        .read_at(start, data)
                        .map_err(|e| fail(&src.description, e))?;
                    self.counters
                        .bytes_read
                        .fetch_add(end - start, Ordering::Relaxed);
                    let mut mask = map.cursor();
                    for i in 0..run {
                        let s = slot + i;
                        let c_start = s * chunk;
                        let c_end = (c_start + chunk).min(size);
                        let piece = &mut data[(c_start - start) as usize..(c_end - start) as usize];
                        zero_outside(piece, &mask.parts(c_start, c_end));
                        let prev_digest = match prev.as_mut() {
                            Some(p) => p.digest_at(s)?,
                            None => None,
                        };
                        let digest = self.chunk(piece, prev_digest)?;
                        if digest.is_some() {
                            self.stats.data_slots += 1;
                        }
                        self.push(&mut segments, catalog, digest)?;
                    }
                }
            }
            // Non-read slots advance one at a time; read runs by their length.
            let step = run;
            for s in slot..slot + step {
                let len = ((s + 1) * chunk).min(size) - s * chunk;
                self.counters
                    .bytes_scanned
                    .fetch_add(len, Ordering::Relaxed);
            }
            self.counters
                .files_scanned
                .fetch_add(step, Ordering::Relaxed);
            slot += step;
        }
        if !segments.is_complete() {
            return Err(BackupError::Failed(format!(
                "internal error: image {} was not fully cut",
                info.name
            )));
        }
        Ok(())
    }

    fn plan_slot<S: ChunkSource>(
        &self,
        slot: u64,
        chunk: u64,
        size: u64,
        map: &mut super::ranges::RangeCursor<'_>,
        changed: Option<&mut super::ranges::RangeCursor<'_>>,
        prev: &mut Option<&mut PreviousSlots<'_, S>>,
    ) -> Result<SlotPlan, BackupError> {
        let start = slot * chunk;
        let end = (start + chunk).min(size);
        if let (Some(changed), Some(p)) = (changed, prev.as_mut())
            && !changed.touches(start, end)
        {
            return Ok(SlotPlan::Previous(p.digest_at(slot)?));
        }
        if !map.touches(start, end) {
            return Ok(SlotPlan::Hole);
        }
        Ok(SlotPlan::Read)
    }

    /// Hashes one chunk's bytes; sends it on unless it is all zeros or equal to the
    /// previous image's chunk at the same place.
    fn chunk(&self, data: &[u8], previous: Option<Digest>) -> Result<Option<Digest>, BackupError> {
        if data.iter().all(|&b| b == 0) {
            return Ok(None);
        }
        let digest = self.job.key.digest(data);
        if previous != Some(digest) {
            self.send(Outgoing::Raw(PackedChunk {
                digest,
                data: data.to_vec(),
            }))?;
        }
        Ok(Some(digest))
    }

    fn push(
        &self,
        segments: &mut ImageSegments,
        catalog: &mut CatalogWriter,
        digest: Option<Digest>,
    ) -> Result<(), BackupError> {
        if let Some(entry) = segments.push(digest).map_err(store_err)? {
            catalog.push(&entry).map_err(store_err)?;
            for c in catalog.take_chunks() {
                self.send(Outgoing::Encoded(c))?;
            }
        }
        Ok(())
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

/// Zeroes the bytes of `piece` outside `keep` (ranges relative to the piece).
fn zero_outside(piece: &mut [u8], keep: &[std::ops::Range<u64>]) {
    let mut pos = 0usize;
    for r in keep {
        piece[pos..r.start as usize].fill(0);
        pos = r.end as usize;
    }
    piece[pos..].fill(0);
}

/// The previous image's chunk at each slot, read forward alongside the backup.
struct PreviousSlots<'r, S: ChunkSource> {
    info: ImageInfo,
    reader: &'r mut CatalogReader<S>,
    segment: Option<u64>,
    extents: Vec<Extent>,
    next: usize,
    broken: bool,
}

impl<'r, S: ChunkSource> PreviousSlots<'r, S> {
    fn new(info: ImageInfo, reader: &'r mut CatalogReader<S>) -> Self {
        PreviousSlots {
            info,
            reader,
            segment: None,
            extents: Vec::new(),
            next: 0,
            broken: false,
        }
    }

    /// The previous chunk at `slot` (asked in increasing order), `None` for a hole.
    fn digest_at(&mut self, slot: u64) -> Result<Option<Digest>, BackupError> {
        if self.broken {
            return Ok(None);
        }
        let chunk = u64::from(self.info.chunk_size);
        let offset = slot * chunk;
        let seg = offset / self.info.segment_size;
        if self.segment != Some(seg) {
            match self.reader.find(&segment_path(&self.info.name, seg)) {
                Ok(Some(e)) => self.extents = e.extents,
                Ok(None) => self.extents.clear(),
                Err(e) => {
                    // Only the reuse is lost: the box's missing-query still dedupes.
                    tracing::warn!("the previous image's catalog cannot be read: {e}");
                    self.broken = true;
                    return Ok(None);
                }
            }
            self.segment = Some(seg);
            self.next = 0;
        }
        let in_seg = offset % self.info.segment_size;
        while self.next < self.extents.len() && self.extents[self.next].file_offset < in_seg {
            self.next += 1;
        }
        Ok(self
            .extents
            .get(self.next)
            .filter(|e| e.file_offset == in_seg)
            .map(|e| e.digest))
    }
}

fn fail(what: &str, e: std::io::Error) -> BackupError {
    BackupError::Failed(format!("cannot read {what}: {e}"))
}

fn store_err(e: abri_store::StoreError) -> BackupError {
    BackupError::Failed(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_outside_the_kept_ranges_are_zeroed() {
        let mut p = [1u8; 10];
        zero_outside(&mut p, &[2..4, 7..8]);
        assert_eq!(p, [0, 0, 1, 1, 0, 0, 0, 1, 0, 0]);
        let mut q = [1u8; 4];
        zero_outside(&mut q, &[]);
        assert_eq!(q, [0; 4]);
    }
}
