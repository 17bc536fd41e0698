//! Helpers shared by the unit tests: a temporary store and a tiny backup.

use std::time::{Duration, UNIX_EPOCH};

use crate::catalog::{CatalogWriter, Entry, EntryKind};
use crate::chunk::encode_chunk;
use crate::chunker::ChunkerParams;
use crate::key::Digest;
use crate::packer::{FilePacker, Packed};
use crate::snapshot::{
    MANIFEST_FORMAT, SnapshotKind, SnapshotManifest, SnapshotStats, commit_snapshot,
    new_snapshot_id,
};
use crate::store::ChunkStore;

pub(crate) fn small() -> ChunkerParams {
    ChunkerParams::new(256, 1024, 4096).unwrap()
}

pub(crate) fn new_store() -> (tempfile::TempDir, ChunkStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = ChunkStore::create(&dir.path().join("store"))
        .unwrap()
        .with_reserve(0);
    (dir, store)
}

pub(crate) fn put(store: &ChunkStore, raw: &[u8]) -> Digest {
    let d = store.key().digest(raw);
    store.insert_encoded(&d, &encode_chunk(raw, 1)).unwrap();
    d
}

/// Packs `files` (sorted paths) into chunks and a catalog, inserts them all, and returns
/// the uncommitted manifest.
pub(crate) fn prepare(
    store: &ChunkStore,
    machine: &str,
    files: &[(&str, &[u8])],
) -> SnapshotManifest {
    let mut packer = FilePacker::new(store.key().clone(), small());
    let mut entries: Vec<Entry> = Vec::new();
    let drain = |p: &mut FilePacker, entries: &mut Vec<Entry>| {
        while let Some(o) = p.next_output() {
            match o {
                Packed::Chunk(c) => {
                    store
                        .insert_encoded(&c.digest, &encode_chunk(&c.data, 1))
                        .unwrap();
                }
                Packed::File(f) => {
                    let e = &mut entries[f.id as usize];
                    e.size = f.size;
                    e.extents = f.extents;
                }
            }
        }
    };
    for (i, (path, data)) in files.iter().enumerate() {
        entries.push(Entry::new(*path, EntryKind::File));
        packer.begin_file(i as u64).unwrap();
        packer.write(data).unwrap();
        packer.end_file().unwrap();
        drain(&mut packer, &mut entries);
    }
    packer.finish().unwrap();
    drain(&mut packer, &mut entries);
    let mut w = CatalogWriter::new(store.key().clone(), small(), 1);
    for e in &entries {
        w.push(e).unwrap();
    }
    let cat = w.finish();
    for c in &cat.chunks {
        store.insert_encoded(&c.digest, &c.bytes).unwrap();
    }
    let started = UNIX_EPOCH + Duration::from_secs(1_790_000_000);
    SnapshotManifest {
        format: MANIFEST_FORMAT,
        id: new_snapshot_id(started),
        machine: machine.into(),
        kind: SnapshotKind::Files,
        plan: "files".into(),
        started: 1_790_000_000,
        finished: 1_790_000_100,
        full: true,
        catalog: cat.digests,
        stats: SnapshotStats {
            files: files.len() as u64,
            ..SnapshotStats::default()
        },
        source: "/home".into(),
        host: "pc-1".into(),
        images: Vec::new(),
        without_snapshot: false,
    }
}

/// `prepare` + commit.
pub(crate) fn backup(
    store: &ChunkStore,
    machine: &str,
    files: &[(&str, &[u8])],
) -> SnapshotManifest {
    let m = prepare(store, machine, files);
    commit_snapshot(&m, store).unwrap();
    m
}

/// Deterministic pseudo-random bytes.
pub(crate) fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Proptest settings: `cases` unless the PROPTEST_CASES environment variable says otherwise.
pub(crate) fn proptest_config(cases: u32) -> proptest::test_runner::Config {
    let mut config = proptest::test_runner::Config::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        config.cases = cases;
    }
    config
}
