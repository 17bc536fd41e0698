use std::process::Command;
use std::time::Duration;

use super::*;
use crate::chunk::encode_chunk;
use crate::error::ChunkDefect;
use crate::testutil::{new_store, put};

#[test]
fn create_open_and_layout() {
    let (dir, store) = new_store();
    let root = dir.path().join("store");
    assert_eq!(
        fs::read_to_string(root.join("store.json")).unwrap().trim(),
        r#"{"format": 1}"#
    );
    assert!(root.join("chunks/00").is_dir() && root.join("chunks/ff").is_dir());
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(root.join("key")).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let key = store.key().clone();
    drop(store);
    assert!(matches!(
        ChunkStore::create(&root),
        Err(StoreError::StoreExists { .. })
    ));
    assert_eq!(ChunkStore::open(&root).unwrap().key(), &key);
    assert!(matches!(
        ChunkStore::open(dir.path()),
        Err(StoreError::NotAStore { .. })
    ));
}

#[test]
fn open_refuses_an_unknown_format_naming_the_file() {
    let (dir, store) = new_store();
    let root = store.root().to_path_buf();
    fs::write(root.join("store.json"), r#"{"format": 2}"#).unwrap();
    let err = ChunkStore::open(&root).unwrap_err();
    assert!(matches!(&err, StoreError::UnsupportedFormat { found, .. } if found == "2"));
    assert!(err.to_string().contains("store.json"), "{err}");
    fs::write(root.join("store.json"), "garbage").unwrap();
    assert!(matches!(
        ChunkStore::open(&root),
        Err(StoreError::UnsupportedFormat { .. })
    ));
    drop(dir);
}

#[test]
fn insert_dedupes_reads_back_and_answers_missing() {
    let (_dir, store) = new_store();
    let raw = vec![42u8; 10_000];
    let d = store.key().digest(&raw);
    let enc = encode_chunk(&raw, 3);
    let first = store.insert_encoded(&d, &enc).unwrap();
    assert_eq!(
        first,
        Inserted {
            new: true,
            stored_bytes: enc.len() as u64
        }
    );
    assert_eq!(
        store.insert_encoded(&d, &enc).unwrap(),
        Inserted {
            new: false,
            stored_bytes: 0
        }
    );
    assert!(store.has(&d));
    assert_eq!(store.read(&d).unwrap(), raw);
    assert_eq!(store.read_encoded(&d).unwrap(), enc);
    assert_eq!(store.stored_size(&d).unwrap(), enc.len() as u64);
    assert_eq!(store.raw_len(&d).unwrap(), 10_000);
    let other = store.key().digest(b"absent");
    assert_eq!(store.missing(&[d, other]), vec![other]);
    // A hint only: a missing chunk among those read ahead is left to the read to report.
    store.read_ahead(&[other, d]);
    let mut body = b"head".to_vec();
    assert_eq!(store.read_encoded_into(&d, &mut body).unwrap(), enc.len());
    assert_eq!(&body[4..], &enc[..]);
    assert!(matches!(
        store.read_encoded_into(&other, &mut body),
        Err(StoreError::MissingChunk { digest }) if digest == other
    ));
    assert_eq!(body.len(), 4 + enc.len(), "a failed read appends nothing");
    assert!(matches!(
        store.read(&other),
        Err(StoreError::MissingChunk { digest }) if digest == other
    ));
    store.sync().unwrap();
    assert!(store.free_space().unwrap() > 0);
}

#[test]
fn an_empty_chunk_file_left_by_a_power_cut_counts_as_absent_and_is_replaced() {
    let (_dir, store) = new_store();
    let raw = vec![9u8; 4_000];
    let d = store.key().digest(&raw);
    let enc = encode_chunk(&raw, 3);
    // What ext4's delayed allocation leaves after a power cut: the name, no data.
    let path = store.chunk_path(&d);
    fs::write(&path, b"").unwrap();
    assert_eq!(store.missing(&[d]), vec![d]);
    assert!(!store.touch_if_present(&d).unwrap());
    let inserted = store.insert_encoded(&d, &enc).unwrap();
    assert!(inserted.new);
    assert_eq!(store.read(&d).unwrap(), raw);
    assert!(store.missing(&[d]).is_empty());
}

#[test]
fn a_batch_is_stored_whole_or_not_at_all() {
    let (_dir, store) = new_store();
    let raws: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 5_000 + usize::from(i)]).collect();
    let digests: Vec<Digest> = raws.iter().map(|r| store.key().digest(r)).collect();
    let encoded: Vec<Vec<u8>> = raws.iter().map(|r| encode_chunk(r, 3)).collect();
    // The last chunk is not what its digest says: nothing of the batch is stored.
    let wrong = encode_chunk(b"not chunk 2", 3);
    let bad = [
        (digests[0], &encoded[0][..]),
        (digests[1], &encoded[1][..]),
        (digests[2], &wrong[..]),
    ];
    assert!(matches!(
        store.insert_batch(&bad),
        Err(StoreError::BadChunk { digest, defect: ChunkDefect::DigestMismatch(_) })
            if digest == digests[2]
    ));
    assert_eq!(store.missing(&digests), digests);
    store.insert_encoded(&digests[1], &encoded[1]).unwrap();
    let good: Vec<(Digest, &[u8])> = digests
        .iter()
        .zip(&encoded)
        .map(|(d, e)| (*d, &e[..]))
        .collect();
    let inserted = store.insert_batch(&good).unwrap();
    assert_eq!(
        inserted.iter().map(|i| i.new).collect::<Vec<_>>(),
        vec![true, false, true]
    );
    for (d, raw) in digests.iter().zip(&raws) {
        assert_eq!(&store.read(d).unwrap(), raw);
    }
}

#[test]
fn insert_refuses_a_chunk_that_does_not_match_its_digest() {
    let (_dir, store) = new_store();
    let d = store.key().digest(b"one");
    let err = store
        .insert_encoded(&d, &encode_chunk(b"two", 1))
        .unwrap_err();
    assert!(matches!(
        err,
        StoreError::BadChunk {
            defect: ChunkDefect::DigestMismatch(_),
            ..
        }
    ));
    assert!(!store.has(&d));
}

#[test]
fn a_corrupt_chunk_is_reported_with_digest_and_path() {
    let (_dir, store) = new_store();
    let d = put(&store, b"precious data");
    let path = store.chunk_path(&d);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&path, bytes).unwrap();
    let err = store.read(&d).unwrap_err();
    assert!(
        matches!(&err, StoreError::CorruptChunk { digest, path: p, .. } if *digest == d && *p == path)
    );
    let msg = err.to_string();
    assert!(msg.contains(&d.to_hex()) && msg.contains(&path.display().to_string()));
}

#[test]
fn insert_touches_an_existing_chunk() {
    let (_dir, store) = new_store();
    let d = put(&store, b"old");
    let path = store.chunk_path(&d);
    let old = SystemTime::now() - Duration::from_secs(30 * 86400);
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let enc = encode_chunk(b"old", 1);
    assert!(!store.insert_encoded(&d, &enc).unwrap().new);
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    assert!(mtime > SystemTime::now() - Duration::from_secs(60));
    fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(old)
        .unwrap();
    assert!(store.missing(&[d]).is_empty());
    let mtime = fs::metadata(&path).unwrap().modified().unwrap();
    assert!(mtime > SystemTime::now() - Duration::from_secs(60));
}

#[test]
fn open_cleans_leftover_temporary_files() {
    let (_dir, store) = new_store();
    let root = store.root().to_path_buf();
    let raw = b"a chunk that was being written when the power went";
    let leftover = root.join("tmp/chunk-999-0");
    fs::write(&leftover, &encode_chunk(raw, 1)[..10]).unwrap();
    drop(store);
    let store = ChunkStore::open(&root).unwrap();
    assert!(!leftover.exists());
    assert!(!store.has(&store.key().digest(raw)));
}

#[test]
fn reserve_refuses_inserts_when_space_is_low() {
    let (_dir, store) = new_store();
    let store = store.with_reserve(u64::MAX / 2);
    let d = store.key().digest(b"x");
    let err = store
        .insert_encoded(&d, &encode_chunk(b"x", 1))
        .unwrap_err();
    assert!(matches!(err, StoreError::BelowReserve { .. }), "{err}");
    assert!(!store.has(&d));
}

/// A real ENOSPC on a 1 MiB tmpfs. Needs root (mount); skipped otherwise.
#[test]
fn disk_full_is_distinct_and_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    fs::create_dir(&mnt).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&mnt)
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("skipped: cannot mount a tmpfs (not root?)");
        return;
    }
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
    let _unmount = Unmount(mnt.clone());
    let store = ChunkStore::create(&mnt.join("s")).unwrap().with_reserve(0);
    let mut full = None;
    for i in 0..100u32 {
        let raw = crate::testutil::noise(300_000, u64::from(i));
        let d = store.key().digest(&raw);
        match store.insert_encoded(&d, &encode_chunk(&raw, 1)) {
            Ok(_) => {}
            Err(e) => {
                full = Some((e, d));
                break;
            }
        }
    }
    let (err, d) = full.expect("a 1 MiB file system fills up");
    assert!(matches!(err, StoreError::DiskFull { .. }), "{err}");
    assert!(err.to_string().contains("full"));
    assert!(!store.has(&d));
    assert_eq!(fs::read_dir(mnt.join("s/tmp")).unwrap().count(), 0);
}
