//! Verify: re-read and re-hash every chunk, and check every snapshot's references.
//!
//! Nothing is deleted or repaired: the report names corrupt chunks (digest and path) and
//! the snapshots that lack or would read a bad chunk, so the operator (or the console) can
//! mark them not good and ask for a new backup. A corrupt chunk is healed by the next
//! backup that uploads the same data only after it is removed; that is a later step.

use std::collections::{BTreeSet, HashSet};
use std::path::PathBuf;

use crate::catalog::CatalogReader;
use crate::error::{Result, StoreError};
use crate::key::Digest;
use crate::snapshot::{list_machines, load_snapshot, snapshot_ids};
use crate::store::ChunkStore;

/// A chunk file that does not decode to its digest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CorruptChunk {
    /// Its digest (file name).
    pub digest: Digest,
    /// Its file.
    pub path: PathBuf,
    /// What is wrong (the error's message).
    pub problem: String,
}

/// A snapshot that cannot be fully restored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DamagedSnapshot {
    /// Machine id.
    pub machine: String,
    /// Snapshot id.
    pub id: String,
    /// Referenced chunks that are not stored.
    pub missing: Vec<Digest>,
    /// Referenced chunks that are corrupt.
    pub corrupt: Vec<Digest>,
    /// Why its manifest or catalog cannot be read, if so.
    pub error: Option<String>,
}

/// What verify found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    /// Chunk files read and re-hashed.
    pub chunks_checked: u64,
    /// Their total stored size.
    pub bytes_checked: u64,
    /// Chunks that failed.
    pub corrupt: Vec<CorruptChunk>,
    /// Files under `chunks/` whose name is not a digest.
    pub stray_files: Vec<PathBuf>,
    /// Snapshots checked.
    pub snapshots_checked: u64,
    /// Snapshots with a problem.
    pub damaged: Vec<DamagedSnapshot>,
}

impl VerifyReport {
    /// True when nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.corrupt.is_empty() && self.stray_files.is_empty() && self.damaged.is_empty()
    }
}

/// Checks the whole store (see the module docs). Errors only when the store cannot be
/// listed at all; every per-chunk or per-snapshot problem goes into the report.
pub fn verify(store: &ChunkStore) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    let mut present: HashSet<Digest> = HashSet::new();
    let mut corrupt: HashSet<Digest> = HashSet::new();
    store.walk_chunks(&mut |file| {
        let Some(digest) = file.digest else {
            report.stray_files.push(file.path);
            return Ok(());
        };
        report.chunks_checked += 1;
        report.bytes_checked += file.meta.len();
        present.insert(digest);
        match store.read(&digest) {
            Ok(_) => {}
            // Removed by GC since the listing.
            Err(StoreError::MissingChunk { .. }) => {
                present.remove(&digest);
            }
            Err(e) => {
                corrupt.insert(digest);
                report.corrupt.push(CorruptChunk {
                    digest,
                    path: file.path,
                    problem: e.to_string(),
                });
            }
        }
        Ok(())
    })?;

    for machine in list_machines(store)? {
        for id in snapshot_ids(store, &machine)? {
            report.snapshots_checked += 1;
            let mut damage = DamagedSnapshot {
                machine: machine.clone(),
                id: id.clone(),
                missing: Vec::new(),
                corrupt: Vec::new(),
                error: None,
            };
            check_snapshot(store, &present, &corrupt, &mut damage);
            if damage.error.is_some() || !damage.missing.is_empty() || !damage.corrupt.is_empty() {
                report.damaged.push(damage);
            }
        }
    }
    Ok(report)
}

fn check_snapshot(
    store: &ChunkStore,
    present: &HashSet<Digest>,
    corrupt: &HashSet<Digest>,
    damage: &mut DamagedSnapshot,
) {
    let manifest = match load_snapshot(store, &damage.machine, &damage.id) {
        Ok(m) => m,
        Err(e) => {
            damage.error = Some(e.to_string());
            return;
        }
    };
    let mut missing = BTreeSet::new();
    let mut bad = BTreeSet::new();
    let mut classify = |d: Digest| {
        if !present.contains(&d) {
            missing.insert(d);
        } else if corrupt.contains(&d) {
            bad.insert(d);
        }
    };
    manifest.catalog.iter().copied().for_each(&mut classify);
    let catalog_ok = manifest
        .catalog
        .iter()
        .all(|d| present.contains(d) && !corrupt.contains(d));
    if catalog_ok {
        for entry in CatalogReader::new(store, manifest.catalog.clone()) {
            match entry {
                Ok(e) => e.extents.iter().for_each(|x| classify(x.digest)),
                Err(e) => {
                    damage.error = Some(e.to_string());
                    break;
                }
            }
        }
    } else {
        damage.error = Some("its catalog cannot be read".into());
    }
    damage.missing = missing.into_iter().collect();
    damage.corrupt = bad.into_iter().collect();
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::testutil::{backup, new_store, noise};

    #[test]
    fn a_clean_store_verifies_clean() {
        let (_dir, store) = new_store();
        backup(&store, "pc-1", &[("a", &noise(20_000, 3))]);
        let r = verify(&store).unwrap();
        assert!(r.is_clean(), "{r:?}");
        assert_eq!(r.snapshots_checked, 1);
        assert!(r.chunks_checked > 3);
    }

    #[test]
    fn corrupt_and_missing_chunks_are_reported_not_deleted() {
        let (_dir, store) = new_store();
        let m1 = backup(&store, "pc-1", &[("a", &noise(20_000, 4))]);
        let m2 = backup(&store, "pc-2", &[("b", &noise(20_000, 5))]);
        let entries: Vec<_> = CatalogReader::new(&store, m1.catalog.clone())
            .collect::<Result<_>>()
            .unwrap();
        let flipped = entries[0].extents[0].digest;
        let gone = entries[0].extents[1].digest;
        let path = store.chunk_path(&flipped);
        let mut bytes = fs::read(&path).unwrap();
        bytes[20] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        fs::remove_file(store.chunk_path(&gone)).unwrap();
        fs::write(store.root().join("chunks/00/junk"), b"?").unwrap();

        let r = verify(&store).unwrap();
        assert!(!r.is_clean());
        assert_eq!(r.corrupt.len(), 1);
        assert_eq!(r.corrupt[0].digest, flipped);
        assert_eq!(r.corrupt[0].path, path);
        assert!(r.corrupt[0].problem.contains(&flipped.to_hex()));
        assert!(path.exists(), "verify never deletes");
        assert_eq!(r.stray_files.len(), 1);
        assert_eq!(r.damaged.len(), 1);
        let d = &r.damaged[0];
        assert_eq!(
            (d.machine.as_str(), d.id.as_str()),
            ("pc-1", m1.id.as_str())
        );
        assert_eq!(d.corrupt, vec![flipped]);
        assert_eq!(d.missing, vec![gone]);
        assert!(r.damaged.iter().all(|d| d.id != m2.id));
    }

    #[test]
    fn an_unreadable_catalog_marks_the_snapshot_damaged() {
        let (_dir, store) = new_store();
        let m = backup(&store, "pc-1", &[("a", b"x")]);
        fs::remove_file(store.chunk_path(&m.catalog[0])).unwrap();
        let r = verify(&store).unwrap();
        assert_eq!(r.damaged.len(), 1);
        assert_eq!(r.damaged[0].missing, vec![m.catalog[0]]);
        assert!(r.damaged[0].error.is_some());
    }
}
