//! `restore-image`: one image of a snapshot written to a block device or a file.
//!
//! The target is checked before anything is written: a device must not be mounted, hold
//! a mounted partition or be used by another layer, and must be at least as large as the
//! image; an existing file is replaced only with `--overwrite`. Every chunk is verified
//! (digest) as it arrives. A file target is created sparse (holes are never written; on
//! Windows the file is first marked sparse with FSCTL_SET_SPARSE); on a device, holes are
//! zeroed with BLKZEROOUT so no old data shows through. Runs of consecutive chunks are
//! written with `O_DIRECT` where the target allows it (`writeout`), and the target is
//! fsynced before the restore reports success. The Windows agent restores to
//! files only: a disk is written from the file with a disk tool (docs/windows.md).

use abri_proto::batch;
use abri_store::{
    CatalogReader, ChunkDefect, ChunkSource, Digest, Extent, ImageInfo, StoreError, segment_path,
};
use crossbeam_channel::bounded;
use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::Ordering;

#[cfg(unix)]
use super::devices;
use super::ranges::Ranges;
use super::writeout::{RunWriter, Target};
use crate::progress::Counters;

/// Batches fetched and written in parallel.
const WORKERS: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum ImageRestoreError {
    #[error("refused: {0}")]
    Refused(String),
    #[error("the restore was cancelled; the target is incomplete")]
    Cancelled,
    #[error("the restore failed, the target is incomplete: {0}")]
    Failed(String),
}

/// Where and how.
#[derive(Debug, Clone)]
pub struct ImageRestoreOptions {
    pub target: PathBuf,
    pub overwrite: bool,
}

/// What a restore did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ImageRestoreReport {
    pub image: String,
    pub size: u64,
    pub target: PathBuf,
    pub device: bool,
    pub chunks: u64,
    pub bytes_written: u64,
    pub hole_bytes: u64,
}

/// Picks the image to restore: the named one, or the only one.
pub fn choose_image(images: &[ImageInfo], name: Option<&str>) -> Result<ImageInfo, String> {
    match name {
        Some(n) => images.iter().find(|i| i.name == n).cloned().ok_or_else(|| {
            format!(
                "the snapshot has no image {n:?} (it has: {})",
                names(images)
            )
        }),
        None if images.len() == 1 => Ok(images[0].clone()),
        None if images.is_empty() => Err("the snapshot holds no image".into()),
        None => Err(format!(
            "the snapshot holds several images; choose one with --image ({})",
            names(images)
        )),
    }
}

fn names(images: &[ImageInfo]) -> String {
    images
        .iter()
        .map(|i| i.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks and opens the target; nothing is changed when it is refused.
fn open_target(
    info: &ImageInfo,
    opts: &ImageRestoreOptions,
) -> Result<(File, bool), ImageRestoreError> {
    let path = &opts.target;
    let refuse = |m: String| ImageRestoreError::Refused(m);
    #[cfg(windows)]
    if is_device(path) {
        return Err(refuse(format!(
            "{}: the Windows agent restores images to files only; restore to a file, then \
             write it to the disk with a disk tool",
            path.display()
        )));
    }
    #[cfg(unix)]
    if devices::is_block_device(path) {
        if let Some(why) =
            devices::in_use(path).map_err(|e| refuse(format!("{}: {e}", path.display())))?
        {
            return Err(refuse(format!("{}: {why}", path.display())));
        }
        let file = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(|e| refuse(format!("cannot open {}: {e}", path.display())))?;
        let size = devices::size_of(&file).map_err(|e| refuse(e.to_string()))?;
        if size < info.size {
            return Err(refuse(format!(
                "{} holds {size} bytes, the image needs {}",
                path.display(),
                info.size
            )));
        }
        return Ok((file, true));
    }
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.is_file() => {
            return Err(refuse(format!(
                "{} is neither a block device nor a regular file",
                path.display()
            )));
        }
        Ok(_) if !opts.overwrite => {
            return Err(refuse(format!(
                "{} exists; add --overwrite to replace it",
                path.display()
            )));
        }
        _ => {}
    }
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .map_err(|e| refuse(format!("cannot create {}: {e}", path.display())))?;
    #[cfg(windows)]
    if let Err(e) = crate::platform::windows::restore::set_sparse(&file) {
        // Still correct, only not sparse: holes then take space on disk.
        tracing::warn!("{} cannot be made sparse: {e}", path.display());
    }
    file.set_len(info.size)
        .map_err(|e| ImageRestoreError::Failed(format!("{}: {e}", path.display())))?;
    Ok((file, false))
}

/// Restores `info` from the snapshot whose catalog is `catalog`.
pub fn run_image_restore<S: ChunkSource + Sync>(
    source: &S,
    catalog: Vec<Digest>,
    info: &ImageInfo,
    opts: &ImageRestoreOptions,
    counters: &Counters,
) -> Result<ImageRestoreReport, ImageRestoreError> {
    info.validate()
        .map_err(|e| ImageRestoreError::Failed(e.to_string()))?;
    let (file, device) = open_target(info, opts)?;
    let target = Target::new(file, &opts.target);
    // The workers fetch, verify and write in parallel (see `writeout` for how writes
    // share the target); each keeps its run buffer for the whole restore.
    let mut runs: Vec<RunWriter<'_>> = (0..WORKERS).map(|_| RunWriter::new(&target)).collect();
    let mut report = ImageRestoreReport {
        image: info.name.clone(),
        size: info.size,
        target: opts.target.clone(),
        device,
        ..Default::default()
    };
    let mut reader = CatalogReader::new(source, catalog);
    let mut covered: Vec<std::ops::Range<u64>> = Vec::new();
    let error: Mutex<Option<String>> = Mutex::new(None);
    counters.set_current(&info.name);
    for seg in 0..info.segments() {
        if counters.is_cancelled() {
            return Err(ImageRestoreError::Cancelled);
        }
        let entry = reader
            .find(&segment_path(&info.name, seg))
            .map_err(|e| ImageRestoreError::Failed(e.to_string()))?
            .ok_or_else(|| {
                ImageRestoreError::Failed(format!("segment {seg} of {} is missing", info.name))
            })?;
        let base = seg * info.segment_size;
        let ranges = Ranges::from_unsorted(
            entry
                .extents
                .iter()
                .map(|e| base + e.file_offset..base + e.file_offset + u64::from(e.len))
                .collect(),
        );
        if !device {
            target.preallocate(&ranges).map_err(|e| {
                ImageRestoreError::Failed(format!("{}: {e}", opts.target.display()))
            })?;
        }
        covered.extend(ranges.as_slice().iter().cloned());
        write_segment(source, &mut runs, base, &entry.extents, counters, &error)?;
        report.chunks += entry.extents.len() as u64;
        counters
            .bytes_scanned
            .fetch_add(info.segment_len(seg), Ordering::Relaxed);
    }
    report.bytes_written = counters.bytes_read.load(Ordering::Relaxed);
    let holes = Ranges::from_unsorted(covered).complement(info.size);
    report.hole_bytes = holes.len_bytes();
    #[cfg(unix)]
    if device {
        for r in holes.as_slice() {
            devices::zero_range(target.file(), r.start, r.end - r.start).map_err(|e| {
                ImageRestoreError::Failed(format!("cannot zero {}..{}: {e}", r.start, r.end))
            })?;
        }
    }
    target
        .file()
        .sync_all()
        .map_err(|e| ImageRestoreError::Failed(format!("{}: {e}", opts.target.display())))?;
    Ok(report)
}

/// Fetches, verifies and writes one segment's chunks with [`WORKERS`] threads, each asking
/// for a batch of consecutive extents' chunks at a time (one round trip per batch).
fn write_segment<S: ChunkSource + Sync>(
    source: &S,
    runs: &mut [RunWriter<'_>],
    base: u64,
    extents: &[Extent],
    counters: &Counters,
    error: &Mutex<Option<String>>,
) -> Result<(), ImageRestoreError> {
    let (tx, rx) = bounded::<&[Extent]>(WORKERS * 2);
    std::thread::scope(|s| {
        for run in runs.iter_mut() {
            let rx = rx.clone();
            s.spawn(move || {
                for batch in rx {
                    let failed = error.lock().map(|e| e.is_some()).unwrap_or(true);
                    if failed || counters.is_cancelled() {
                        continue;
                    }
                    let result = write_batch(source, run, base, batch, counters);
                    if let Err(msg) = result {
                        // Nothing of a failed batch is written.
                        run.discard();
                        if let Ok(mut slot) = error.lock()
                            && slot.is_none()
                        {
                            *slot = Some(msg);
                        }
                    }
                }
            });
        }
        for batch in batches(extents) {
            if tx.send(batch).is_err() {
                break;
            }
        }
        drop(tx);
    });
    if counters.is_cancelled() {
        return Err(ImageRestoreError::Cancelled);
    }
    match error.lock().ok().and_then(|e| e.clone()) {
        Some(msg) => Err(ImageRestoreError::Failed(msg)),
        None => Ok(()),
    }
}

/// Consecutive extents whose chunks make about one fetch batch
/// ([`batch::BATCH_TARGET_BYTES`], at most [`batch::MAX_FETCH_CHUNKS`]).
fn batches(extents: &[Extent]) -> impl Iterator<Item = &[Extent]> {
    let mut rest = extents;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0usize;
        let mut n = 0;
        while n < rest.len() && n < batch::MAX_FETCH_CHUNKS && bytes < batch::BATCH_TARGET_BYTES {
            let e = &rest[n];
            bytes += (e.chunk_offset + e.len) as usize;
            n += 1;
        }
        let (head, tail) = rest.split_at(n);
        rest = tail;
        Some(head)
    })
}

/// Fetches the distinct chunks of `batch` in one call and writes every extent.
fn write_batch<S: ChunkSource>(
    source: &S,
    run: &mut RunWriter<'_>,
    base: u64,
    batch: &[Extent],
    counters: &Counters,
) -> Result<(), String> {
    let mut wanted: Vec<Digest> = batch.iter().map(|e| e.digest).collect();
    wanted.sort_unstable_by_key(|d| d.0);
    wanted.dedup();
    // The usual batch (every extent a whole chunk, none twice, all fitting the run buffer)
    // is decoded straight into the run buffer: no copy, no buffer per chunk.
    let total: usize = batch.iter().map(|e| e.len as usize).sum();
    if !batch.is_empty()
        && wanted.len() == batch.len()
        && batch.iter().all(|e| e.chunk_offset == 0)
        && let Some(space) = run.space(total)
    {
        let in_order: Vec<Digest> = batch.iter().map(|e| e.digest).collect();
        let lens: Vec<usize> = batch.iter().map(|e| e.len as usize).collect();
        match source.read_chunks_into(&in_order, &lens, space) {
            Ok(()) => {
                run.write_pieces(batch.iter().map(|e| (base + e.file_offset, e.len as usize)))
                    .map_err(|err| format!("cannot write the target: {err}"))?;
                counters
                    .bytes_read
                    .fetch_add(total as u64, Ordering::Relaxed);
                return Ok(());
            }
            // An extent shorter than its chunk (a catalog this agent's backups never
            // write, but a valid one): the general path below takes the prefix.
            Err(StoreError::BadChunk {
                defect: ChunkDefect::LengthMismatch { .. },
                ..
            }) => {}
            Err(err) => {
                return Err(format!(
                    "chunks {}…: {err}",
                    wanted.first().map(Digest::to_hex).unwrap_or_default()
                ));
            }
        }
    }
    let chunks = source.read_chunks(&wanted).map_err(|err| {
        format!(
            "chunks {}…: {err}",
            wanted.first().map(Digest::to_hex).unwrap_or_default()
        )
    })?;
    for e in batch {
        let data = wanted
            .binary_search_by_key(&e.digest.0, |d| d.0)
            .ok()
            .and_then(|i| chunks.get(i))
            .ok_or_else(|| format!("chunk {} was not fetched", e.digest))?;
        let bytes = data
            .get(e.chunk_offset as usize..(e.chunk_offset + e.len) as usize)
            .ok_or_else(|| format!("chunk {} is too short", e.digest))?;
        run.push(base + e.file_offset, bytes)
            .map_err(|err| format!("cannot write the target: {err}"))?;
        counters
            .bytes_read
            .fetch_add(u64::from(e.len), Ordering::Relaxed);
    }
    run.flush()
        .map_err(|err| format!("cannot write the target: {err}"))
}

/// Whether `path` names a block device (for the CLI's wording).
#[cfg(unix)]
pub fn is_device(path: &Path) -> bool {
    devices::is_block_device(path)
}

/// Whether `path` names a device (`\\.\PhysicalDrive0`, `\\.\C:`) rather than a file.
#[cfg(not(unix))]
pub fn is_device(path: &Path) -> bool {
    let text = path.to_string_lossy().to_ascii_lowercase();
    text.starts_with(r"\\.\") || text.starts_with(r"\\?\globalroot\")
}

#[cfg(test)]
mod tests {
    use super::*;
    use abri_store::{ChunkKey, StoreError};
    use std::collections::HashMap;

    /// Raw chunks by digest, through the trait's defaults (`read_chunks_into` copies).
    struct Raw(HashMap<Digest, Vec<u8>>);

    impl ChunkSource for Raw {
        fn read_chunk(&self, d: &Digest) -> abri_store::error::Result<Vec<u8>> {
            self.0
                .get(d)
                .cloned()
                .ok_or(StoreError::MissingChunk { digest: *d })
        }
    }

    /// A batch of whole chunks takes the in-place path; an extent shorter than its chunk
    /// (a valid catalog, though backups never write one) falls back to the general path
    /// and restores the chunk's prefix.
    #[test]
    fn whole_chunks_and_chunk_prefixes_both_restore() {
        let key = ChunkKey::from_bytes([9; 32]);
        let a: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
        let b: Vec<u8> = (0..8192u32).map(|i| (i % 13) as u8 ^ 0x5a).collect();
        let (da, db) = (key.digest(&a), key.digest(&b));
        let source = Raw(HashMap::from([(da, a.clone()), (db, b.clone())]));
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        let file = File::create(&path).unwrap();
        file.set_len(32768).unwrap();
        let target = Target::new(file, &path);
        let mut run = RunWriter::new(&target);
        let counters = Counters::default();
        let extent = |digest, len, file_offset| Extent {
            digest,
            chunk_offset: 0,
            len,
            file_offset,
        };
        let whole = [extent(da, 8192, 0), extent(db, 8192, 8192)];
        write_batch(&source, &mut run, 0, &whole, &counters).unwrap();
        let prefix = [extent(db, 4096, 20480)];
        write_batch(&source, &mut run, 0, &prefix, &counters).unwrap();
        target.file().sync_all().unwrap();

        let mut expected = vec![0u8; 32768];
        expected[..8192].copy_from_slice(&a);
        expected[8192..16384].copy_from_slice(&b);
        expected[20480..24576].copy_from_slice(&b[..4096]);
        assert!(std::fs::read(&path).unwrap() == expected);
        assert_eq!(counters.bytes_read.load(Ordering::Relaxed), 8192 * 2 + 4096);
    }
}
