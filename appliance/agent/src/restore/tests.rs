use super::*;

#[cfg(unix)]
#[test]
fn names_are_looked_up_once_each() {
    let ids = IdCache::default();
    let calls = std::cell::Cell::new(0);
    let find = |name: &str| {
        calls.set(calls.get() + 1);
        (name == "ann").then_some(1000)
    };
    for _ in 0..3 {
        assert_eq!(ids.user("ann", find), Some(1000));
        assert_eq!(ids.user("nobody-here", find), None);
    }
    assert_eq!(calls.get(), 2, "one lookup per name, found or not");
    // Users and groups are separate name spaces.
    assert_eq!(ids.group("ann", |_| Some(50)), Some(50));
    assert_eq!(ids.user("ann", |_| Some(7)), Some(1000));
    // The real lookup: root is uid 0 and gid 0 on every Linux machine.
    assert_eq!(ids.user("root", platform::uid_of), Some(0));
    assert_eq!(ids.group("root", platform::gid_of), Some(0));
}

#[cfg(unix)]
#[test]
fn a_large_file_without_holes_is_allocated_before_it_is_written() {
    use std::os::unix::fs::MetadataExt;
    let ext = |file_offset: u64, len: u32| Extent {
        digest: abri_store::Digest([1; 32]),
        chunk_offset: 0,
        len,
        file_offset,
    };
    let dir = tempfile::tempdir().unwrap();
    let whole = File::create(dir.path().join("whole")).unwrap();
    let extents = [ext(0, 300_000), ext(300_000, 700_000)];
    preallocate(&whole, &extents, b"whole").unwrap();
    let meta = whole.metadata().unwrap();
    // A file system without fallocate leaves the blocks to the writes.
    let probe = File::create(dir.path().join("probe")).unwrap();
    if platform::preallocate(&probe, 4096).is_ok() {
        assert_eq!(meta.len(), 1_000_000);
        assert!(meta.blocks() * 512 >= 1_000_000, "{} blocks", meta.blocks());
    }
    // A sparse file keeps its holes: nothing allocated.
    let sparse = File::create(dir.path().join("sparse")).unwrap();
    let holes = [ext(0, 300_000), ext(500_000, 100_000)];
    preallocate(&sparse, &holes, b"sparse").unwrap();
    let meta = sparse.metadata().unwrap();
    assert_eq!((meta.len(), meta.blocks()), (0, 0));
}

#[test]
fn selections_are_relative_and_clean() {
    assert_eq!(
        selection_paths(&["/srv/data/".into(), "etc".into()]).unwrap(),
        vec![b"srv/data".to_vec(), b"etc".to_vec()]
    );
    for bad in ["/", "../x", "a/../b", "a//b"] {
        assert!(selection_paths(&[bad.into()]).is_err(), "{bad}");
    }
    assert!(is_under(b"a/b", b"a"));
    assert!(!is_under(b"ab", b"a"));
    assert!(!is_under(b"a", b"a"));
    assert_eq!(split_parent(b"a/b/c"), (&b"a/b"[..], &b"c"[..]));
    assert_eq!(split_parent(b"c"), (&b""[..], &b"c"[..]));
}
