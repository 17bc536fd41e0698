use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::*;
use crate::chunk::decode_chunk;
use crate::testutil::proptest_config;

fn key() -> ChunkKey {
    ChunkKey::from_bytes([9; 32])
}

fn small() -> ChunkerParams {
    ChunkerParams::new(256, 1024, 4096).unwrap()
}

/// An in-memory chunk source holding encoded chunks.
#[derive(Default)]
struct Mem(HashMap<Digest, Vec<u8>>);

impl ChunkSource for Mem {
    fn read_chunk(&self, d: &Digest) -> Result<Vec<u8>> {
        let bytes = self
            .0
            .get(d)
            .ok_or(StoreError::MissingChunk { digest: *d })?;
        decode_chunk(bytes, &key(), d)
    }
}

fn write(entries: &[Entry]) -> (Vec<Digest>, Mem) {
    let mut w = CatalogWriter::new(key(), small(), 1);
    let mut mem = Mem::default();
    for e in entries {
        w.push(e).unwrap();
        for c in w.take_chunks() {
            mem.0.insert(c.digest, c.bytes);
        }
    }
    let f = w.finish();
    for c in f.chunks {
        mem.0.insert(c.digest, c.bytes);
    }
    (f.digests, mem)
}

/// A catalog stream written without the writer's checks, to test the reader's.
fn write_unchecked(entries: &[Entry]) -> (Vec<Digest>, Mem) {
    let mut stream = b"ABRICAT\x01\x00".to_vec();
    for e in entries {
        let rec = postcard::to_allocvec(e).unwrap();
        stream.extend_from_slice(&(rec.len() as u32).to_le_bytes());
        stream.extend_from_slice(&rec);
    }
    from_stream(&stream)
}

fn from_stream(stream: &[u8]) -> (Vec<Digest>, Mem) {
    let mut c = Chunker::new(small());
    c.push(stream);
    c.finish();
    let mut mem = Mem::default();
    let mut digests = vec![];
    while let Some(raw) = c.pop() {
        let d = key().digest(&raw);
        digests.push(d);
        mem.0.insert(d, encode_chunk(&raw, 1));
    }
    (digests, mem)
}

fn read_all(digests: &[Digest], mem: &Mem) -> Result<Vec<Entry>> {
    CatalogReader::new(mem, digests.to_vec()).collect()
}

fn file(path: &str, size: u64) -> Entry {
    let mut e = Entry::new(path, EntryKind::File);
    e.size = size;
    e
}

fn kind() -> impl Strategy<Value = EntryKind> {
    let bytes = proptest::collection::vec(1u8..=255, 1..40);
    prop_oneof![
        Just(EntryKind::File),
        Just(EntryKind::Dir),
        bytes.prop_map(|target| EntryKind::Symlink { target }),
        Just(EntryKind::HardLink {
            target: b"0".to_vec()
        }),
        Just(EntryKind::Fifo),
        Just(EntryKind::Socket),
        any::<u64>().prop_map(|rdev| EntryKind::CharDevice { rdev }),
        any::<u64>().prop_map(|rdev| EntryKind::BlockDevice { rdev }),
    ]
}

prop_compose! {
    fn entry()(
        kind in kind(),
        mode in any::<u32>(), uid in any::<u32>(), gid in any::<u32>(),
        user in proptest::option::of("[a-z]{1,8}"), group in proptest::option::of(".{0,8}"),
        size in 0u64..1 << 40,
        times in any::<(i64, i64, i64)>(), inode in any::<u64>(), dev in any::<u64>(),
        nlink in any::<u32>(),
        xattrs in proptest::collection::vec(
            (proptest::collection::vec(any::<u8>(), 1..20), proptest::collection::vec(any::<u8>(), 0..50)),
            0..3),
        nextents in 0usize..4,
        windows in proptest::option::of((any::<u32>(), any::<i64>(), proptest::collection::vec(any::<u8>(), 0..30))),
        seed in any::<u8>(),
    ) -> Entry {
        let mut e = Entry::new(Vec::new(), kind);
        e.mode = mode; e.uid = uid; e.gid = gid; e.user = user; e.group = group;
        e.size = size; (e.mtime_ns, e.ctime_ns, e.atime_ns) = times;
        e.inode = inode; e.dev = dev; e.nlink = nlink; e.xattrs = xattrs;
        if e.kind == EntryKind::File {
            let step = size / (nextents as u64 + 1);
            for i in 0..nextents as u64 {
                let len = step.min(1000) as u32;
                if len > 0 {
                    e.extents.push(Extent {
                        digest: key().digest(&[seed, i as u8]),
                        chunk_offset: i as u32 * 7,
                        len,
                        file_offset: i * step,
                    });
                }
            }
        }
        e.windows = windows.map(|(attributes, creation_time_ns, security_descriptor)| WindowsMeta {
            attributes, creation_time_ns, security_descriptor,
        });
        e
    }
}

proptest! {
    #![proptest_config(proptest_config(48))]

    /// Every entry kind and field comes back unchanged, across chunk boundaries.
    #[test]
    fn entries_round_trip(mut entries in proptest::collection::vec(entry(), 0..40)) {
        // Give them increasing paths ("0" first, so hard links to "0" point backwards).
        for (i, e) in entries.iter_mut().enumerate() {
            e.path = format!("{i:04}").into_bytes();
            if i == 0 {
                e.path = b"0".to_vec();
                if matches!(e.kind, EntryKind::HardLink { .. }) {
                    e.kind = EntryKind::Dir;
                }
            }
        }
        let (digests, mem) = write(&entries);
        prop_assert_eq!(read_all(&digests, &mem).unwrap(), entries);
    }

    /// path_cmp is a total order agreeing with component-wise comparison.
    #[test]
    fn path_order_is_component_wise(a in "[a./]{0,6}", b in "[a./]{0,6}") {
        let ca: Vec<&str> = a.split('/').collect();
        let cb: Vec<&str> = b.split('/').collect();
        prop_assert_eq!(path_cmp(a.as_bytes(), b.as_bytes()), ca.cmp(&cb));
    }
}

#[test]
fn paths_are_validated() {
    for good in ["a", "a/b", "a.b/.c/..d", "a b/\u{e9}"] {
        validate_path(good.as_bytes()).unwrap();
    }
    for bad in [
        &b""[..],
        b"/a",
        b"a/",
        b"a//b",
        b".",
        b"a/./b",
        b"..",
        b"a/../b",
        b"a\0b",
    ] {
        assert!(
            matches!(validate_path(bad), Err(StoreError::InvalidPath { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn depth_first_order() {
    let mut v = vec!["a.txt", "a/b", "a", "b", "a/b/c", "a-b"];
    v.sort_by(|x, y| path_cmp(x.as_bytes(), y.as_bytes()));
    assert_eq!(v, ["a", "a/b", "a/b/c", "a-b", "a.txt", "b"]);
}

#[test]
fn writer_refuses_bad_entries() {
    let mut w = CatalogWriter::new(key(), small(), 1);
    assert!(w.push(&file("../etc/passwd", 0)).is_err());
    w.push(&file("b", 0)).unwrap();
    assert!(matches!(
        w.push(&file("a", 0)),
        Err(StoreError::InvalidCatalog { .. })
    ));
    assert!(w.push(&file("b", 0)).is_err(), "duplicates refused");
    let mut d = Entry::new("c", EntryKind::Dir);
    d.extents.push(Extent {
        digest: key().digest(b""),
        chunk_offset: 0,
        len: 1,
        file_offset: 0,
    });
    assert!(w.push(&d).is_err(), "extents on a directory");
    let mut f = file("d", 10);
    f.extents.push(Extent {
        digest: key().digest(b""),
        chunk_offset: 0,
        len: 11,
        file_offset: 0,
    });
    assert!(w.push(&f).is_err(), "extent past the end");
    let link = Entry::new(
        "e",
        EntryKind::HardLink {
            target: b"z".to_vec(),
        },
    );
    assert!(w.push(&link).is_err(), "hard link forward");
    let link = Entry::new(
        "e",
        EntryKind::HardLink {
            target: b"b".to_vec(),
        },
    );
    w.push(&link).unwrap();
}

#[test]
fn reader_refuses_what_the_writer_would() {
    let (d, mem) = write_unchecked(&[file("b", 0), file("a", 0)]);
    assert!(matches!(
        read_all(&d, &mem),
        Err(StoreError::InvalidCatalog { .. })
    ));
    let (d, mem) = write_unchecked(&[file("a/../../x", 0)]);
    assert!(matches!(
        read_all(&d, &mem),
        Err(StoreError::InvalidPath { .. })
    ));
    let (d, mem) = from_stream(b"NOTACAT\x01\x00");
    assert!(read_all(&d, &mem).is_err());
    let (d, mem) = from_stream(b"ABRICAT\x02\x00");
    assert!(read_all(&d, &mem).is_err());
    let (d, mem) = from_stream(b"ABRICAT\x01\x00\x05\x00\x00\x00ab");
    assert!(read_all(&d, &mem).is_err(), "truncated record");
    assert!(read_all(&[], &Mem::default()).is_err(), "no header");
    let (d, mut mem) = write(&[file("a", 0)]);
    mem.0.clear();
    assert!(matches!(
        read_all(&d, &mem),
        Err(StoreError::MissingChunk { .. })
    ));
}

#[test]
fn find_merges_in_order() {
    let entries: Vec<Entry> = ["a", "a/x", "b", "c", "d"]
        .iter()
        .map(|p| file(p, 0))
        .collect();
    let (d, mem) = write(&entries);
    let mut r = CatalogReader::new(&mem, d);
    assert_eq!(r.find(b"a").unwrap().unwrap().path, b"a");
    assert!(r.find(b"a/w").unwrap().is_none());
    assert_eq!(r.find(b"a/x").unwrap().unwrap().path, b"a/x");
    assert!(r.find(b"bb").unwrap().is_none(), "reads c and keeps it");
    assert_eq!(r.find(b"c").unwrap().unwrap().path, b"c");
    assert_eq!(r.next_entry().unwrap().unwrap().path, b"d");
    assert!(r.find(b"z").unwrap().is_none());
}

#[test]
fn unchanged_catalog_parts_dedupe() {
    let mk = |changed: u64| -> Vec<Entry> {
        (0..2000u64)
            .map(|i| {
                let mut e = file(&format!("dir/{i:06}"), i);
                e.mtime_ns = if i == 1000 { changed as i64 } else { i as i64 };
                e
            })
            .collect()
    };
    let (a, _) = write(&mk(1));
    let (b, _) = write(&mk(2));
    let known: HashSet<_> = a.iter().collect();
    let fresh = b.iter().filter(|d| !known.contains(d)).count();
    assert!(b.len() > 20);
    assert!(fresh <= 3, "{fresh} of {} catalog chunks changed", b.len());
}

/// The default `read_chunks_into` places each chunk after the one before, and refuses a
/// chunk whose length is not its place's.
#[test]
fn chunks_are_placed_in_order_and_lengths_are_checked() {
    let a = b"first chunk".to_vec();
    let b = b"second".to_vec();
    let (da, db) = (key().digest(&a), key().digest(&b));
    let mem = Mem(HashMap::from([
        (da, encode_chunk(&a, 3)),
        (db, encode_chunk(&b, 3)),
    ]));
    let mut dest = vec![0u8; a.len() + b.len() + a.len()];
    mem.read_chunks_into(&[da, db, da], &[a.len(), b.len(), a.len()], &mut dest)
        .unwrap();
    assert_eq!(dest, [a.clone(), b.clone(), a.clone()].concat());

    let mut dest = vec![0u8; a.len() + b.len()];
    let wrong = mem.read_chunks_into(&[da, db], &[a.len() + 1, b.len() - 1], &mut dest);
    assert!(
        matches!(
            wrong,
            Err(StoreError::BadChunk { digest, defect: ChunkDefect::LengthMismatch { .. } })
                if digest == da
        ),
        "{wrong:?}"
    );
    assert!(
        mem.read_chunks_into(&[da], &[a.len(), 1], &mut dest)
            .is_err()
    );
}
