//! A restore never writes outside its target, whatever the catalog says.

mod common;

use abri_agent::progress::Counters;
use abri_agent::restore::{RestoreError, RestoreOptions, run_restore};
use abri_store::{CatalogWriter, ChunkStore, Digest, Entry, EntryKind, encode_chunk};
use common::params;
use std::fs;
use std::path::Path;

fn options(target: &Path) -> RestoreOptions {
    RestoreOptions {
        target: target.to_path_buf(),
        paths: Vec::new(),
        overwrite: true,
        as_root: false,
    }
}

fn entry(path: &str, kind: EntryKind) -> Entry {
    let mut e = Entry::new(path, kind);
    e.mode = 0o644;
    e
}

/// A catalog as the writer would make it, but without the writer's checks: what a
/// malicious or corrupt box could send.
fn forge_catalog(store: &ChunkStore, entries: &[Entry]) -> Vec<Digest> {
    let mut raw = b"ABRICAT".to_vec();
    raw.extend_from_slice(&1u16.to_le_bytes());
    for e in entries {
        let rec = postcard::to_allocvec(e).unwrap();
        raw.extend_from_slice(&(rec.len() as u32).to_le_bytes());
        raw.extend_from_slice(&rec);
    }
    let digest = store.key().digest(&raw);
    store
        .insert_encoded(&digest, &encode_chunk(&raw, 3))
        .unwrap();
    vec![digest]
}

fn restore(store: &ChunkStore, catalog: Vec<Digest>, target: &Path) -> Result<(), RestoreError> {
    run_restore(&store, catalog, &options(target), &Counters::default()).map(|_| ())
}

fn nothing_outside(dir: &Path) {
    let names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    let mut names = names;
    names.sort();
    assert_eq!(
        names,
        ["outside", "store", "target"],
        "nothing written beside the target"
    );
    assert_eq!(fs::read_dir(dir.join("outside")).unwrap().count(), 0);
}

fn setup() -> (tempfile::TempDir, ChunkStore) {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("outside")).unwrap();
    fs::create_dir(dir.path().join("target")).unwrap();
    let store = ChunkStore::create(&dir.path().join("store"))
        .unwrap()
        .with_reserve(0);
    (dir, store)
}

#[test]
fn dot_dot_paths_are_refused() {
    let (dir, store) = setup();
    for path in ["../outside/evil", "a/../../outside/evil", ".."] {
        let catalog = forge_catalog(&store, &[entry(path, EntryKind::Fifo)]);
        let err = restore(&store, catalog, &dir.path().join("target")).unwrap_err();
        assert!(err.to_string().contains(".."), "{path}: {err}");
    }
    nothing_outside(dir.path());
}

#[test]
fn absolute_paths_are_refused() {
    let (dir, store) = setup();
    let evil = dir.path().join("outside/evil");
    let catalog = forge_catalog(&store, &[entry(evil.to_str().unwrap(), EntryKind::Fifo)]);
    let err = restore(&store, catalog, &dir.path().join("target")).unwrap_err();
    assert!(err.to_string().contains("absolute"), "{err}");
    nothing_outside(dir.path());
}

#[test]
fn symlink_escapes_are_refused() {
    let (dir, store) = setup();
    let outside = dir.path().join("outside");
    // A valid catalog by the format's rules: a symlink to outside, then entries through it,
    // relative and absolute, and a hard link through it.
    let mut w = CatalogWriter::new(store.key().clone(), params(), 3);
    w.push(&entry(
        "a",
        EntryKind::Symlink {
            target: outside.to_str().unwrap().as_bytes().to_vec(),
        },
    ))
    .unwrap();
    w.push(&entry("a/evil-fifo", EntryKind::Fifo)).unwrap();
    w.push(&entry("a/evil-file", EntryKind::File)).unwrap();
    w.push(&entry("a/sub", EntryKind::Dir)).unwrap();
    w.push(&entry("a/sub/deeper", EntryKind::File)).unwrap();
    w.push(&entry(
        "b",
        EntryKind::Symlink {
            target: b"../outside".to_vec(),
        },
    ))
    .unwrap();
    w.push(&entry("b/evil", EntryKind::File)).unwrap();
    w.push(&entry("c", EntryKind::File)).unwrap();
    let catalog = w.finish();
    for c in &catalog.chunks {
        store.insert_encoded(&c.digest, &c.bytes).unwrap();
    }
    let target = dir.path().join("target");
    let err = restore(&store, catalog.digests, &target).unwrap_err();
    match &err {
        RestoreError::Unsafe { count, first } => {
            assert_eq!(*count, 5, "{err}");
            assert_eq!(first, "a/evil-fifo");
        }
        other => panic!("expected Unsafe, got {other}"),
    }
    nothing_outside(dir.path());
    // The harmless entries are restored: the symlinks themselves and c.
    assert!(
        fs::symlink_metadata(target.join("a"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(target.join("c").is_file());
}

#[test]
fn a_symlink_already_at_the_target_is_not_followed() {
    let (dir, store) = setup();
    let target = dir.path().join("target");
    std::os::unix::fs::symlink(dir.path().join("outside"), target.join("etc")).unwrap();
    let mut w = CatalogWriter::new(store.key().clone(), params(), 3);
    w.push(&entry("etc", EntryKind::Dir)).unwrap();
    w.push(&entry("etc/passwd", EntryKind::File)).unwrap();
    let catalog = w.finish();
    for c in &catalog.chunks {
        store.insert_encoded(&c.digest, &c.bytes).unwrap();
    }
    // With overwrite the symlink is replaced by the directory; without, nothing is
    // written through it.
    let mut opts = options(&target);
    opts.overwrite = false;
    let err = run_restore(
        &&store,
        catalog.digests.clone(),
        &opts,
        &Counters::default(),
    );
    assert!(matches!(err, Err(RestoreError::Unsafe { .. })), "{err:?}");
    nothing_outside(dir.path());
    restore(&store, catalog.digests, &target).unwrap();
    assert!(target.join("etc").is_dir() && !target.join("etc").is_symlink());
    assert!(target.join("etc/passwd").is_file());
    nothing_outside(dir.path());
}

/// A large file's chunks go to the restore's bulk lane (Unix): a chunk missing from the
/// box, or shorter than the catalog says, fails the restore there with its own error.
#[test]
fn a_large_files_missing_or_short_chunk_fails_the_restore() {
    let (dir, store) = setup();
    let raw: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let present = store.key().digest(&raw);
    store
        .insert_encoded(&present, &encode_chunk(&raw, 3))
        .unwrap();
    let missing = store.key().digest(b"never stored");
    let extent = |digest, chunk_offset, len, file_offset| abri_store::Extent {
        digest,
        chunk_offset,
        len,
        file_offset,
    };
    let large = |extents: Vec<abri_store::Extent>| {
        let mut e = entry("big", EntryKind::File);
        e.size = 600_000;
        e.extents = extents;
        e
    };

    let catalog = forge_catalog(
        &store,
        &[large(vec![
            extent(present, 0, 300_000, 0),
            extent(missing, 0, 300_000, 300_000),
        ])],
    );
    let err = restore(&store, catalog, &dir.path().join("target")).unwrap_err();
    assert!(
        err.to_string().contains(&missing.to_string()),
        "the missing chunk is named: {err}"
    );

    let catalog = forge_catalog(&store, &[large(vec![extent(present, 0, 310_000, 0)])]);
    let err = restore(&store, catalog, &dir.path().join("target")).unwrap_err();
    assert!(
        matches!(err, RestoreError::Catalog(_)) && err.to_string().contains("300000 bytes"),
        "{err}"
    );
    nothing_outside(dir.path());
}
