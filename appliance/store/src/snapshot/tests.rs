use super::*;
use crate::catalog::{CatalogWriter, Entry, EntryKind};
use crate::testutil::{backup, new_store, noise, prepare, small};

#[test]
fn ids_are_validated_and_generated() {
    for good in ["pc-1", "a", "20261121t134501z-3fa2"] {
        validate_id("machine", good).unwrap();
    }
    for bad in ["", "-a", "A", "a/b", "..", "a.json", "é", &"a".repeat(65)] {
        assert!(validate_id("machine", bad).is_err(), "{bad}");
    }
    let t = UNIX_EPOCH + std::time::Duration::from_secs(1_795_268_701); // 2026-11-21 13:45:01
    let id = new_snapshot_id(t);
    assert!(id.starts_with("20261121t134501z-"), "{id}");
    assert_eq!(id.len(), "20261121t134501z-3fa2".len());
    validate_id("snapshot", &id).unwrap();
    assert_eq!(civil_from_days(0), (1970, 1, 1));
    assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    assert_eq!(civil_from_days(-1), (1969, 12, 31));
}

#[test]
fn snapshots_of_one_second_list_in_commit_order() {
    let (_dir, store) = new_store();
    let first = backup(&store, "pc-1", &[("a", b"one")]);
    let t = UNIX_EPOCH + std::time::Duration::from_secs(first.started as u64);
    let mut committed = vec![first.id.clone()];
    for i in 0..20 {
        let mut m = prepare(&store, "pc-1", &[("a", format!("v{i}").as_bytes())]);
        m.id = next_snapshot_id(&store, "pc-1", t).unwrap();
        commit_snapshot(&m, &store).unwrap();
        committed.push(m.id);
    }
    // Random suffixes alone would list these in a random order.
    let listed: Vec<String> = list_snapshots(&store, "pc-1")
        .unwrap()
        .into_iter()
        .map(|m| m.id)
        .collect();
    assert_eq!(listed, committed);

    // The second's last suffix moves on to the next second's stamp.
    let mut m = prepare(&store, "pc-1", &[("a", b"last")]);
    m.id = format!("{}ffff", &first.id[..ID_STAMP_LEN]);
    commit_snapshot(&m, &store).unwrap();
    let next = next_snapshot_id(&store, "pc-1", t).unwrap();
    assert!(next > m.id, "{next} after {}", m.id);
    validate_id("snapshot", &next).unwrap();
    // Another machine's ids do not matter; a later second needs no bump.
    let other = next_snapshot_id(&store, "pc-2", t).unwrap();
    assert!(other.starts_with(&first.id[..ID_STAMP_LEN]), "{other}");
}

#[test]
fn commit_then_list_load_delete() {
    let (_dir, store) = new_store();
    let m = backup(
        &store,
        "pc-1",
        &[("a", b"hello"), ("b/c", &noise(20_000, 1))],
    );
    assert_eq!(list_machines(&store).unwrap(), vec!["pc-1"]);
    assert_eq!(list_snapshots(&store, "pc-1").unwrap(), vec![m.clone()]);
    assert_eq!(load_snapshot(&store, "pc-1", &m.id).unwrap(), m);
    assert!(matches!(
        commit_snapshot(&m, &store),
        Err(StoreError::SnapshotExists { .. })
    ));
    let json =
        fs::read_to_string(store.root().join(format!("snapshots/pc-1/{}.json", m.id))).unwrap();
    assert!(json.contains("\"kind\": \"files\"") && json.contains(&m.catalog[0].to_hex()));
    delete_snapshot(&store, "pc-1", &m.id).unwrap();
    assert!(list_snapshots(&store, "pc-1").unwrap().is_empty());
    assert!(matches!(
        load_snapshot(&store, "pc-1", &m.id),
        Err(StoreError::SnapshotNotFound { .. })
    ));
    assert!(delete_snapshot(&store, "pc-1", &m.id).is_err());
    assert!(list_snapshots(&store, "nobody").unwrap().is_empty());
    assert!(load_snapshot(&store, "../etc", "x").is_err());
}

#[test]
fn commit_refuses_a_missing_data_chunk() {
    let (_dir, store) = new_store();
    let m = prepare(&store, "pc-1", &[("a", &noise(10_000, 2))]);
    // Remove one data chunk (not a catalog chunk).
    let entries: Vec<Entry> = CatalogReader::new(&store, m.catalog.clone())
        .collect::<Result<_>>()
        .unwrap();
    let victim = entries[0].extents[1].digest;
    assert!(!m.catalog.contains(&victim));
    fs::remove_file(store.chunk_path(&victim)).unwrap();
    let err = commit_snapshot(&m, &store).unwrap_err();
    assert!(matches!(err, StoreError::MissingChunk { digest } if digest == victim));
    assert!(list_snapshots(&store, "pc-1").unwrap().is_empty());
}

#[test]
fn commit_refuses_a_missing_catalog_chunk() {
    let (_dir, store) = new_store();
    let mut m = prepare(&store, "pc-1", &[("a", b"x")]);
    let absent = store.key().digest(b"never uploaded");
    m.catalog.push(absent);
    assert!(matches!(
        commit_snapshot(&m, &store),
        Err(StoreError::MissingChunk { digest }) if digest == absent
    ));
    assert!(!store.root().join("snapshots/pc-1").exists());
}

#[test]
fn commit_refuses_a_dotdot_path_and_bad_ids() {
    let (_dir, store) = new_store();
    let mut m = prepare(&store, "pc-1", &[("a", b"x")]);
    // A catalog written without the writer's checks, with a ".." path.
    let entry = Entry::new("a/../../../etc/passwd", EntryKind::File);
    let mut stream = b"ABRICAT\x01\x00".to_vec();
    let rec = postcard::to_allocvec(&entry).unwrap();
    stream.extend_from_slice(&(rec.len() as u32).to_le_bytes());
    stream.extend_from_slice(&rec);
    m.catalog = vec![crate::testutil::put(&store, &stream)];
    assert!(matches!(
        commit_snapshot(&m, &store),
        Err(StoreError::InvalidPath { .. })
    ));
    let mut bad = m.clone();
    bad.machine = "../x".into();
    assert!(matches!(
        commit_snapshot(&bad, &store),
        Err(StoreError::InvalidId { .. })
    ));
    let mut bad = m.clone();
    bad.format = 2;
    assert!(commit_snapshot(&bad, &store).is_err());
    assert!(list_machines(&store).unwrap().is_empty());
}

#[test]
fn commit_refuses_an_extent_past_its_chunk() {
    let (_dir, store) = new_store();
    let mut m = prepare(&store, "pc-1", &[("a", b"tiny")]);
    let mut entries: Vec<Entry> = CatalogReader::new(&store, m.catalog.clone())
        .collect::<Result<_>>()
        .unwrap();
    entries[0].size = 100;
    entries[0].extents[0].len = 100;
    let mut w = CatalogWriter::new(store.key().clone(), small(), 1);
    w.push(&entries[0]).unwrap();
    let cat = w.finish();
    for c in &cat.chunks {
        store.insert_encoded(&c.digest, &c.bytes).unwrap();
    }
    m.catalog = cat.digests;
    match commit_snapshot(&m, &store) {
        Err(StoreError::InvalidCatalog { reason }) => {
            assert!(
                reason.contains("\"a\"") && reason.contains("past the end"),
                "{reason}"
            );
        }
        other => panic!("expected InvalidCatalog, got {other:?}"),
    }
    assert!(list_snapshots(&store, "pc-1").unwrap().is_empty());
}

/// A commit with more chunks than one checker thread takes: every one is checked.
#[test]
fn commit_checks_every_chunk_of_a_large_snapshot() {
    let (_dir, store) = new_store();
    let files: Vec<(String, Vec<u8>)> = (0..2500)
        .map(|i| (format!("f{i:04}"), noise(700, i)))
        .collect();
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, d)| (p.as_str(), d.as_slice()))
        .collect();
    let m = prepare(&store, "pc-1", &refs);
    let mut digests: Vec<Digest> = CatalogReader::new(&store, m.catalog.clone())
        .flat_map(|e| e.unwrap().extents.into_iter().map(|x| x.digest))
        .collect();
    digests.sort();
    digests.dedup();
    assert!(digests.len() > 4 * 256, "{} chunks", digests.len());
    // The last chunk in digest order: found by whichever thread checks it.
    let victim = *digests.last().unwrap();
    let saved = fs::read(store.chunk_path(&victim)).unwrap();
    fs::remove_file(store.chunk_path(&victim)).unwrap();
    let err = commit_snapshot(&m, &store).unwrap_err();
    assert!(
        matches!(err, StoreError::MissingChunk { digest } if digest == victim),
        "{err}"
    );
    assert!(list_snapshots(&store, "pc-1").unwrap().is_empty());
    fs::write(store.chunk_path(&victim), saved).unwrap();
    commit_snapshot(&m, &store).unwrap();
}

#[test]
fn half_written_manifest_is_invisible_and_cleaned() {
    let (_dir, store) = new_store();
    let m = prepare(&store, "pc-1", &[("a", b"x")]);
    // A crash after writing part of the manifest to tmp/, before the link.
    let json = serde_json::to_vec(&m).unwrap();
    let tmp = store.tmp_path("manifest");
    fs::write(&tmp, &json[..json.len() / 2]).unwrap();
    // And a stray partial file beside the manifests (e.g. copied by hand).
    ensure_dir(&store.root().join("snapshots/pc-1")).unwrap();
    fs::write(store.root().join("snapshots/pc-1/partial.json.tmp"), b"{").unwrap();
    assert!(list_snapshots(&store, "pc-1").unwrap().is_empty());
    let root = store.root().to_path_buf();
    drop(store);
    let store = ChunkStore::open(&root).unwrap();
    assert!(!tmp.exists());
    assert_eq!(fs::read_dir(root.join("tmp")).unwrap().count(), 0);
    commit_snapshot(&m, &store).unwrap();
    assert_eq!(list_snapshots(&store, "pc-1").unwrap().len(), 1);
}

#[test]
fn a_manifest_under_the_wrong_name_is_refused() {
    let (_dir, store) = new_store();
    let m = backup(&store, "pc-1", &[("a", b"x")]);
    let dir = store.root().join("snapshots/pc-1");
    fs::rename(dir.join(format!("{}.json", m.id)), dir.join("other.json")).unwrap();
    assert!(matches!(
        load_snapshot(&store, "pc-1", "other"),
        Err(StoreError::InvalidManifest { .. })
    ));
}

/// Every chunk `m` references, with its file's mtime.
fn referenced_mtimes(store: &ChunkStore, m: &SnapshotManifest) -> Vec<(Digest, SystemTime)> {
    let mut digests = m.catalog.clone();
    for entry in CatalogReader::new(store, m.catalog.clone()) {
        digests.extend(entry.unwrap().extents.iter().map(|e| e.digest));
    }
    digests.sort();
    digests.dedup();
    digests
        .into_iter()
        .map(|d| {
            let t = fs::metadata(store.chunk_path(&d))
                .unwrap()
                .modified()
                .unwrap();
            (d, t)
        })
        .collect()
}

fn age_all(store: &ChunkStore, m: &SnapshotManifest, t: SystemTime) {
    for (d, _) in referenced_mtimes(store, m) {
        fs::File::options()
            .write(true)
            .open(store.chunk_path(&d))
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
}

#[test]
fn commit_touches_its_chunks_only_while_a_gc_runs() {
    let old = SystemTime::now() - std::time::Duration::from_secs(7 * 86_400);
    let (_dir, store) = new_store();
    let files: &[(&str, &[u8])] = &[("a", &noise(30_000, 7)), ("b", b"small")];

    // No GC: the commit checks the chunks and writes no metadata.
    let quiet = prepare(&store, "pc-1", files);
    age_all(&store, &quiet, old);
    commit_snapshot(&quiet, &store).unwrap();
    let after = referenced_mtimes(&store, &quiet);
    assert!(after.len() > 2);
    assert!(
        after.iter().all(|(_, t)| *t == old),
        "quiet commit touched: {after:?}"
    );

    // A GC is running: every referenced chunk becomes newer than its cutoff.
    let during = prepare(&store, "pc-2", files);
    age_all(&store, &during, old);
    let gc = store.gc_pass();
    commit_snapshot(&during, &store).unwrap();
    drop(gc);
    let after = referenced_mtimes(&store, &during);
    assert!(
        after.iter().all(|(_, t)| *t > old),
        "commit during GC left chunks old"
    );
}

#[test]
fn quiet_commit_refuses_an_empty_chunk_file() {
    let (_dir, store) = new_store();
    let m = prepare(&store, "pc-1", &[("a", &noise(10_000, 3))]);
    let entries: Vec<Entry> = CatalogReader::new(&store, m.catalog.clone())
        .collect::<Result<_>>()
        .unwrap();
    let victim = entries[0].extents[0].digest;
    fs::write(store.chunk_path(&victim), b"").unwrap();
    let err = commit_snapshot(&m, &store).unwrap_err();
    assert!(matches!(err, StoreError::MissingChunk { digest } if digest == victim));
    assert!(list_snapshots(&store, "pc-1").unwrap().is_empty());
}
