//! Garbage collection: delete chunks that no committed snapshot references.
//!
//! Mark: every digest referenced by every committed snapshot (catalog chunks and, by
//! reading each catalog, every extent) goes into an in-memory set. If any snapshot cannot
//! be read, GC stops before deleting anything. Sweep: a chunk file that is not marked and
//! whose mtime is older than `protect_newer_than` is removed. GC only stats files (no
//! reads, so no atime writes).
//!
//! Why the cutoff: chunks of a backup in progress are referenced by no snapshot until it
//! commits. They are recent (written during the backup), and a chunk the backup reuses is
//! touched when re-uploaded, when `missing` says it is present, and by a `commit_snapshot`
//! that runs during GC (every referenced chunk; a quiet commit, started while no GC ran,
//! ends before GC marks and is seen by its mark, see [`crate::gate`]), so all of them are
//! newer than the cutoff as
//! long as the caller picks the cutoff before the start of any backup still running, e.g.
//! GC start minus 24 hours (more than the longest backup). A backup that reuses a file's
//! extents from the previous catalog without asking the box relies on that snapshot; prune
//! always keeps a machine's newest good snapshot, and if a chunk vanished anyway the
//! commit fails with `MissingChunk` rather than commit a broken snapshot. The touch lock is
//! in memory: run GC in the process that serves uploads (abrid).

use std::collections::HashSet;
use std::time::SystemTime;

use crate::catalog::CatalogReader;
use crate::error::{Result, StoreError};
use crate::key::Digest;
use crate::snapshot::{list_machines, load_snapshot, snapshot_ids};
use crate::store::ChunkStore;

/// What a GC run did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Snapshots marked.
    pub snapshots: u64,
    /// Distinct chunks referenced by them.
    pub referenced_chunks: u64,
    /// Chunk files looked at.
    pub chunks_seen: u64,
    /// Unreferenced chunks removed.
    pub removed_chunks: u64,
    /// Bytes freed.
    pub removed_bytes: u64,
    /// Unreferenced chunks kept because they are newer than the cutoff.
    pub kept_recent: u64,
    /// Files under `chunks/` whose name is not a digest (left alone).
    pub stray_files: u64,
}

/// Removes unreferenced chunks older than `protect_newer_than` (see the module docs).
pub fn gc(store: &ChunkStore, protect_newer_than: SystemTime) -> Result<GcReport> {
    let mut report = GcReport::default();
    // Quiet commits under way (started while no GC ran) end first; commits that start
    // from now on touch their chunks.
    let _pass = store.gc_pass();
    let marked = mark(store, &mut report)?;
    report.referenced_chunks = marked.len() as u64;
    store.walk_chunks(&mut |file| {
        report.chunks_seen += 1;
        let Some(digest) = file.digest else {
            report.stray_files += 1;
            return Ok(());
        };
        if marked.contains(&digest) {
            return Ok(());
        }
        let recent = file
            .meta
            .modified()
            .map(|m| m >= protect_newer_than)
            .unwrap_or(true);
        if recent {
            report.kept_recent += 1;
            return Ok(());
        }
        match store.remove_if_older(&file.path, protect_newer_than)? {
            Some(bytes) => {
                report.removed_chunks += 1;
                report.removed_bytes += bytes;
            }
            None => report.kept_recent += 1,
        }
        Ok(())
    })?;
    Ok(report)
}

fn mark(store: &ChunkStore, report: &mut GcReport) -> Result<HashSet<Digest>> {
    let mut marked = HashSet::new();
    for machine in list_machines(store)? {
        for id in snapshot_ids(store, &machine)? {
            let aborted = |source: StoreError| StoreError::GcAborted {
                machine: machine.clone(),
                id: id.clone(),
                source: Box::new(source),
            };
            let manifest = load_snapshot(store, &machine, &id).map_err(aborted)?;
            marked.extend(manifest.catalog.iter().copied());
            for entry in CatalogReader::new(store, manifest.catalog) {
                let entry = entry.map_err(aborted)?;
                marked.extend(entry.extents.iter().map(|e| e.digest));
            }
            report.snapshots += 1;
        }
    }
    Ok(marked)
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::time::Duration;

    use super::*;
    use crate::snapshot::delete_snapshot;
    use crate::testutil::{backup, new_store, noise, put};

    fn age(store: &ChunkStore, d: &Digest, days: u64) {
        let t = SystemTime::now() - Duration::from_secs(days * 86_400);
        fs::File::options()
            .write(true)
            .open(store.chunk_path(d))
            .unwrap()
            .set_modified(t)
            .unwrap();
    }

    fn all_chunks(store: &ChunkStore) -> Vec<Digest> {
        let mut v = vec![];
        store
            .walk_chunks(&mut |f| {
                v.extend(f.digest);
                Ok(())
            })
            .unwrap();
        v
    }

    #[test]
    fn keeps_referenced_and_recent_removes_old_unreferenced() {
        let (_dir, store) = new_store();
        let m = backup(&store, "pc-1", &[("a", &noise(30_000, 1)), ("b", b"small")]);
        let referenced = all_chunks(&store);
        let old_orphan = put(&store, b"old orphan");
        let new_orphan = put(&store, b"new orphan, maybe a backup in progress");
        for d in all_chunks(&store) {
            if d != new_orphan {
                age(&store, &d, 10);
            }
        }
        let cutoff = SystemTime::now() - Duration::from_secs(86_400);
        let r = gc(&store, cutoff).unwrap();
        assert_eq!(r.snapshots, 1);
        assert_eq!(r.removed_chunks, 1);
        assert_eq!(r.kept_recent, 1);
        assert!(r.removed_bytes > 0);
        assert!(!store.has(&old_orphan));
        assert!(store.has(&new_orphan));
        for d in &referenced {
            assert!(store.has(d));
            store.read(d).unwrap();
        }
        // Once the snapshot is deleted, its old chunks go too.
        delete_snapshot(&store, "pc-1", &m.id).unwrap();
        let r = gc(&store, cutoff).unwrap();
        assert_eq!(r.removed_chunks, referenced.len() as u64);
        assert_eq!(all_chunks(&store), vec![new_orphan]);
    }

    #[test]
    fn an_old_chunk_touched_by_a_new_backup_survives() {
        let (_dir, store) = new_store();
        let d = put(&store, b"orphan that a running backup just re-referenced");
        age(&store, &d, 10);
        // The running backup asks which chunks are missing: d is present, so it is touched.
        assert!(store.missing(&[d]).is_empty());
        gc(&store, SystemTime::now() - Duration::from_secs(3600)).unwrap();
        assert!(store.has(&d));
    }

    #[test]
    fn stops_before_deleting_when_a_snapshot_is_unreadable() {
        let (_dir, store) = new_store();
        let m = backup(&store, "pc-1", &[("a", b"data")]);
        let orphan = put(&store, b"orphan");
        age(&store, &orphan, 10);
        fs::remove_file(store.chunk_path(&m.catalog[0])).unwrap();
        let err = gc(&store, SystemTime::now()).unwrap_err();
        assert!(matches!(err, StoreError::GcAborted { .. }), "{err}");
        assert!(store.has(&orphan));
    }
}
