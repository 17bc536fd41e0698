//! Snapshots: committed manifests at `snapshots/<machine>/<id>.json`.
//!
//! A snapshot is visible only once complete: [`commit_snapshot`] first proves that every
//! chunk it references is stored (catalog chunks, and by reading the catalog, every
//! extent's chunk) and that the catalog is valid, then syncs the store, writes the
//! manifest to `tmp/`, fsyncs it, hard-links it into place (which never overwrites) and
//! fsyncs the directory. A crash at any point leaves either no manifest or a complete one.

use std::collections::HashMap;
use std::fs;
use std::io::ErrorKind;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::catalog::CatalogReader;
use crate::durable::{ensure_dir, sync_dir, write_new};
use crate::error::{Result, StoreError};
use crate::image::{ImageInfo, check_image_entries};
use crate::key::Digest;
use crate::store::{ChunkStore, read_dir_sorted};

/// The manifest format this code writes and reads.
pub const MANIFEST_FORMAT: u32 = 1;

/// What a snapshot holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SnapshotKind {
    /// A file tree (catalog of entries).
    Files,
    /// A disk or partition image (its catalog has one file entry per image).
    Image,
}

/// Counters of one backup, as reported by the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotStats {
    /// Regular files in the snapshot.
    pub files: u64,
    /// Directories in the snapshot.
    pub dirs: u64,
    /// Logical bytes of the files.
    pub bytes: u64,
    /// Raw bytes of the chunks uploaded by this backup.
    pub new_bytes: u64,
    /// Encoded bytes the store wrote for this backup.
    pub stored_new_bytes: u64,
    /// Chunks referenced (with repeats).
    pub chunks: u64,
    /// Chunks uploaded by this backup.
    pub new_chunks: u64,
    /// Files reused from the previous catalog without reading them.
    pub reused_files: u64,
}

/// A committed snapshot's manifest (`snapshots/<machine>/<id>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotManifest {
    /// Always [`MANIFEST_FORMAT`].
    pub format: u32,
    /// Snapshot id (see [`new_snapshot_id`]).
    pub id: String,
    /// Machine id.
    pub machine: String,
    /// Files or image.
    pub kind: SnapshotKind,
    /// The plan that made it.
    pub plan: String,
    /// Start, Unix seconds (the snapshot's point in time).
    pub started: i64,
    /// End, Unix seconds.
    pub finished: i64,
    /// True when every file was read (no reuse from a previous catalog).
    pub full: bool,
    /// The catalog's chunks, in order.
    pub catalog: Vec<Digest>,
    /// Counters.
    pub stats: SnapshotStats,
    /// What was backed up (a path, a device).
    pub source: String,
    /// The machine's host name at backup time.
    pub host: String,
    /// The images of an image snapshot (empty for files).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageInfo>,
    /// True when the agent read live files because no volume snapshot (VSS) could be
    /// taken: the files are not from one point in time. Absent (false) in older manifests.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub without_snapshot: bool,
}

/// Checks a machine or snapshot id: 1 to 64 of `a-z 0-9 -`, not starting with '-'.
pub fn validate_id(what: &'static str, id: &str) -> Result<()> {
    let ok = (1..=64).contains(&id.len())
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidId {
            what,
            id: id.to_string(),
        })
    }
}

/// A new snapshot id for `time`: UTC `YYYYMMDDtHHMMSSz` and 4 random hex digits, e.g.
/// `20261121t134501z-3fa2`. Ids of one machine sort by time.
pub fn new_snapshot_id(time: SystemTime) -> String {
    let secs = time
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    let suffix: u16 = rand::random();
    format!(
        "{y:04}{m:02}{d:02}t{:02}{:02}{:02}z-{suffix:04x}",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// A new id for `machine`'s next snapshot at `time` that sorts after every id the machine
/// already has from the same second: snapshots of one second keep the order of their
/// commits (a backup finds its predecessor by that order). Two commits racing for the same
/// id are told apart by [`commit_snapshot`], which refuses an existing id.
pub fn next_snapshot_id(store: &ChunkStore, machine: &str, time: SystemTime) -> Result<String> {
    let id = new_snapshot_id(time);
    let Some(newest) = snapshot_ids(store, machine)?.into_iter().max() else {
        return Ok(id);
    };
    let (stamp, _) = id.split_at(ID_STAMP_LEN);
    if newest < id || !newest.starts_with(stamp) {
        return Ok(id);
    }
    match u16::from_str_radix(&newest[ID_STAMP_LEN..], 16) {
        Ok(suffix) if suffix < u16::MAX && newest.len() == id.len() => {
            Ok(format!("{stamp}{:04x}", suffix + 1))
        }
        // The second's last suffix (or a foreign id): the next second's stamp sorts after.
        _ => Ok(new_snapshot_id(time + std::time::Duration::from_secs(1))),
    }
}

/// Length of an id's `YYYYMMDDtHHMMSSz-` part.
const ID_STAMP_LEN: usize = "20261121t134501z-".len();

/// (year, month 1-12, day 1-31) of a day count since 1970-01-01 (proleptic Gregorian).
pub(crate) fn civil_from_days(days: i64) -> (i64, u32, u32) {
    // Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

fn machine_dir(store: &ChunkStore, machine: &str) -> PathBuf {
    store.root().join("snapshots").join(machine)
}

fn manifest_path(store: &ChunkStore, machine: &str, id: &str) -> PathBuf {
    machine_dir(store, machine).join(format!("{id}.json"))
}

/// Commits a snapshot: proves every referenced chunk is stored and the catalog valid,
/// syncs the store, then makes the manifest visible atomically. Refuses (writing nothing)
/// with `MissingChunk`, `InvalidCatalog`/`InvalidPath`, `InvalidId`, `InvalidManifest` or
/// `SnapshotExists`.
pub fn commit_snapshot(manifest: &SnapshotManifest, store: &ChunkStore) -> Result<()> {
    validate_id("machine", &manifest.machine)?;
    validate_id("snapshot", &manifest.id)?;
    let path = manifest_path(store, &manifest.machine, &manifest.id);
    if manifest.format != MANIFEST_FORMAT {
        return Err(StoreError::InvalidManifest {
            path,
            reason: format!("format {} (this build writes 1)", manifest.format),
        });
    }
    if path.exists() {
        return Err(exists(manifest, path));
    }
    // Held until the manifest is visible: a GC waits for a quiet commit.
    let pass = store.commit_pass();
    check_references(manifest, store, !pass.quiet())?;

    store.sync()?;
    let dir = machine_dir(store, &manifest.machine);
    if !dir.is_dir() {
        ensure_dir(&dir)?;
        sync_dir(&store.root().join("snapshots"))?;
    }
    let json = serde_json::to_vec_pretty(manifest).map_err(|e| StoreError::InvalidManifest {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    let tmp = store.tmp_path("manifest");
    write_new(&tmp, &json, true)?;
    let linked = fs::hard_link(&tmp, &path);
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => sync_dir(&dir),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => Err(exists(manifest, path)),
        Err(e) => Err(StoreError::io("cannot commit snapshot", &path, e)),
    }
}

fn exists(m: &SnapshotManifest, path: PathBuf) -> StoreError {
    StoreError::SnapshotExists {
        machine: m.machine.clone(),
        id: m.id.clone(),
        path,
    }
}

/// Every chunk a snapshot references, checked to exist (and touched when `touch`); every
/// catalog rule checked. Touching makes the chunks newer than any GC cutoff taken before
/// this commit, so a GC that listed the snapshots before the manifest appears still keeps
/// them; it is needed only while a GC runs (see [`crate::gate`]).
fn check_references(manifest: &SnapshotManifest, store: &ChunkStore, touch: bool) -> Result<()> {
    match manifest.kind {
        SnapshotKind::Files if !manifest.images.is_empty() => {
            return Err(StoreError::InvalidCatalog {
                reason: "a file snapshot describes images".into(),
            });
        }
        SnapshotKind::Image if manifest.images.is_empty() => {
            return Err(StoreError::InvalidCatalog {
                reason: "an image snapshot holds no image".into(),
            });
        }
        SnapshotKind::Image => check_image_entries(
            &manifest.images,
            CatalogReader::new(store, manifest.catalog.clone()),
        )?,
        SnapshotKind::Files => {}
    }
    for d in &manifest.catalog {
        if store.present_len(d, touch)?.is_none() {
            return Err(StoreError::MissingChunk { digest: *d });
        }
    }
    // The furthest byte each chunk must hold, over all extents that use it.
    let mut need: HashMap<Digest, u64> = HashMap::new();
    for entry in CatalogReader::new(store, manifest.catalog.clone()) {
        for e in &entry?.extents {
            let end = u64::from(e.chunk_offset) + u64::from(e.len);
            need.entry(e.digest)
                .and_modify(|n| *n = (*n).max(end))
                .or_insert(end);
        }
    }
    let need: Vec<(Digest, u64)> = need.into_iter().collect();
    if let Some(short) = check_chunks(store, &need, touch)? {
        return Err(StoreError::InvalidCatalog {
            reason: format!(
                "file {:?} has an extent past the end of chunk {short}",
                String::from_utf8_lossy(&path_using(store, manifest, &short)?)
            ),
        });
    }
    Ok(())
}

/// Threads that check a commit's chunks: the checks are one open and one small read each,
/// mostly kernel time, and a 1 GiB image references ~16,000 chunks.
const CHECK_THREADS: usize = 4;

/// Checks that every chunk of `need` is present and at least as long as needed. Returns a
/// chunk too short, if any; a missing one is a `MissingChunk` error.
fn check_chunks(store: &ChunkStore, need: &[(Digest, u64)], touch: bool) -> Result<Option<Digest>> {
    let next = AtomicUsize::new(0);
    let work = || -> Result<Option<Digest>> {
        loop {
            let start = next.fetch_add(256, Ordering::Relaxed);
            let Some(part) = need.get(start..need.len().min(start + 256)) else {
                return Ok(None);
            };
            if part.is_empty() {
                return Ok(None);
            }
            for (digest, end) in part {
                match store.present_len(digest, touch)? {
                    None => return Err(StoreError::MissingChunk { digest: *digest }),
                    Some(len) if u64::from(len) < *end => return Ok(Some(*digest)),
                    Some(_) => {}
                }
            }
        }
    };
    let threads = CHECK_THREADS.min(need.len().div_ceil(256)).max(1);
    let results: Vec<Result<Option<Digest>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (1..threads).map(|_| s.spawn(work)).collect();
        let mut out = vec![work()];
        for h in handles {
            // A panic in a checker is a bug of ours, not a bad catalog: passed on as is.
            out.push(h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)));
        }
        out
    });
    let mut short = None;
    for r in results {
        if let Some(d) = r? {
            short = short.or(Some(d));
        }
    }
    Ok(short)
}

/// The path of the first entry with an extent past the end of chunk `digest` (for the
/// error message).
fn path_using(store: &ChunkStore, manifest: &SnapshotManifest, digest: &Digest) -> Result<Vec<u8>> {
    let len = u64::from(store.raw_len(digest)?);
    for entry in CatalogReader::new(store, manifest.catalog.clone()) {
        let entry = entry?;
        if entry
            .extents
            .iter()
            .any(|e| e.digest == *digest && u64::from(e.chunk_offset) + u64::from(e.len) > len)
        {
            return Ok(entry.path);
        }
    }
    Ok(Vec::new())
}

/// The machines that have snapshots, sorted.
pub fn list_machines(store: &ChunkStore) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for path in read_dir_sorted(&store.root().join("snapshots"))? {
        if let Some(name) = path.file_name().and_then(|n| n.to_str())
            && path.is_dir()
            && validate_id("machine", name).is_ok()
        {
            out.push(name.to_string());
        }
    }
    Ok(out)
}

/// A machine's committed snapshots, oldest first (by start time, then id).
pub fn list_snapshots(store: &ChunkStore, machine: &str) -> Result<Vec<SnapshotManifest>> {
    let mut out = Vec::new();
    for id in snapshot_ids(store, machine)? {
        out.push(load_snapshot(store, machine, &id)?);
    }
    out.sort_by(|a, b| (a.started, &a.id).cmp(&(b.started, &b.id)));
    Ok(out)
}

/// The ids of a machine's manifest files, sorted, without reading them.
pub(crate) fn snapshot_ids(store: &ChunkStore, machine: &str) -> Result<Vec<String>> {
    validate_id("machine", machine)?;
    let dir = machine_dir(store, machine);
    if !dir.exists() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for path in read_dir_sorted(&dir)? {
        let id = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_suffix(".json"));
        if let Some(id) = id
            && validate_id("snapshot", id).is_ok()
        {
            out.push(id.to_string());
        }
    }
    Ok(out)
}

/// One committed snapshot's manifest.
pub fn load_snapshot(store: &ChunkStore, machine: &str, id: &str) -> Result<SnapshotManifest> {
    validate_id("machine", machine)?;
    validate_id("snapshot", id)?;
    let path = manifest_path(store, machine, id);
    let bytes = match fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == ErrorKind::NotFound => {
            return Err(StoreError::SnapshotNotFound {
                machine: machine.into(),
                id: id.into(),
                path,
            });
        }
        Err(e) => return Err(StoreError::io("cannot read snapshot manifest", &path, e)),
    };
    let invalid = |reason: String| StoreError::InvalidManifest {
        path: path.clone(),
        reason,
    };
    let m: SnapshotManifest = serde_json::from_slice(&bytes).map_err(|e| invalid(e.to_string()))?;
    if m.format != MANIFEST_FORMAT {
        return Err(invalid(format!(
            "format {} is not supported (this build reads 1)",
            m.format
        )));
    }
    if m.id != id || m.machine != machine {
        return Err(invalid(format!(
            "the file names {machine}/{id} but holds {}/{}",
            m.machine, m.id
        )));
    }
    Ok(m)
}

/// Removes a snapshot's manifest (prune only: never exposed to agents). Its chunks stay
/// until GC.
pub fn delete_snapshot(store: &ChunkStore, machine: &str, id: &str) -> Result<()> {
    validate_id("machine", machine)?;
    validate_id("snapshot", id)?;
    let path = manifest_path(store, machine, id);
    match fs::remove_file(&path) {
        Ok(()) => sync_dir(&machine_dir(store, machine)),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(StoreError::SnapshotNotFound {
            machine: machine.into(),
            id: id.into(),
            path,
        }),
        Err(e) => Err(StoreError::io("cannot delete snapshot", &path, e)),
    }
}

#[cfg(test)]
mod tests;
