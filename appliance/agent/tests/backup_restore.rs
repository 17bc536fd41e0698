//! Back up a generated tree with every kind of object into a local store, restore it
//! elsewhere, and compare; then change a few files and check that an incremental run reads
//! only those.

mod common;

use abri_agent::progress::Counters;
use abri_agent::restore::{RestoreOptions, run_restore};
use common::*;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::Ordering;

fn restore_all(
    local: &LocalBox,
    id: &str,
    target: &std::path::Path,
) -> abri_agent::restore::RestoreReport {
    let opts = RestoreOptions {
        target: target.to_path_buf(),
        paths: Vec::new(),
        overwrite: false,
        as_root: nix::unistd::geteuid().is_root(),
    };
    run_restore(
        &&local.store,
        local.catalog_of(id),
        &opts,
        &Counters::default(),
    )
    .unwrap()
}

#[test]
fn every_kind_of_object_round_trips_and_incremental_reads_only_changes() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir(&src).unwrap();
    make_tree(&src);
    let sparse = src.join("data/sparse.img");
    // The test needs a file system with holes (ext4, xfs, btrfs, tmpfs all have them).
    assert!(fs::metadata(&sparse).unwrap().blocks() * 512 < 1 << 20);

    let local = LocalBox::new(dir.path());
    let (first, counters) = backup(&local, &src, &[], None, false);
    assert_eq!(first.stats.reused_files, 0);
    assert!(first.stats.new_chunks > 10, "{:?}", first.stats);
    // The 5 GiB sparse file cost only its data regions.
    let read = counters.bytes_read.load(Ordering::Relaxed);
    assert!(read < 2_000_000, "read {read} bytes");
    assert_eq!(counters.warnings.load(Ordering::Relaxed), 0);

    let out = dir.path().join("restored");
    let report = restore_all(&local, &first.snapshot.id, &out);
    assert_eq!(report.skipped_existing, 0);
    assert_same_tree(&src, &out);
    let restored_sparse = out.join("data/sparse.img");
    let m = fs::metadata(&restored_sparse).unwrap();
    assert_eq!(m.len(), SPARSE_SIZE);
    assert!(
        m.blocks() * 512 < 1 << 20,
        "restored sparse file uses {} blocks",
        m.blocks()
    );
    let a = fs::metadata(out.join("data/hard-a")).unwrap();
    let c = fs::metadata(out.join("data/sub/hard-c")).unwrap();
    assert_eq!(a.ino(), c.ino(), "hard links share one inode");
    assert_eq!(a.nlink(), 3);
    assert_eq!(
        fs::read_link(out.join("data/link-dangling")).unwrap(),
        std::path::Path::new("/nonexistent/dangling")
    );

    // Change one file, add one, remove one; an unchanged rerun reads nothing.
    let (same, counters) = backup(&local, &src, &[], Some(&first.snapshot.id), false);
    assert_eq!(counters.bytes_read.load(Ordering::Relaxed), 0);
    assert_eq!(
        same.stats.reused_files,
        first.stats.files - 2,
        "hard links are not files to reuse"
    );
    // Only catalog chunks, if any, are new.
    fs::write(src.join("data/sub/many-03"), noise(4000, 99)).unwrap();
    fs::write(src.join("data/new-file"), b"brand new").unwrap();
    fs::remove_file(src.join("data/sub/many-04")).unwrap();
    let (second, counters) = backup(&local, &src, &[], Some(&same.snapshot.id), false);
    assert_eq!(
        counters.bytes_read.load(Ordering::Relaxed),
        4000 + 9,
        "only the changed and the new file are read"
    );
    assert!(second.stats.reused_files > 20);
    // A full run reads everything again; most chunks are already there (only those around
    // the changes, cut differently in one stream, and the catalog's are new).
    let (full, counters) = backup(&local, &src, &[], Some(&second.snapshot.id), true);
    assert_eq!(full.stats.reused_files, 0);
    assert!(counters.bytes_read.load(Ordering::Relaxed) > 300_000);
    assert!(
        full.stats.new_chunks * 2 < full.stats.chunks,
        "{:?}",
        full.stats
    );

    let out2 = dir.path().join("restored-2");
    restore_all(&local, &second.snapshot.id, &out2);
    assert_same_tree(&src, &out2);
}

#[test]
fn excludes_leave_subtrees_out() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    for p in [
        "home/ann/.cache/big",
        "home/ann/notes",
        "var/tmp/x",
        "var/lib/y",
    ] {
        let p = src.join(p);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"x").unwrap();
    }
    let root = src.display().to_string();
    let local = LocalBox::new(dir.path());
    let (report, _) = backup(
        &local,
        &src,
        &[&format!("{root}/home/*/.cache"), &format!("{root}/var/tmp")],
        None,
        false,
    );
    let out = dir.path().join("out");
    restore_all(&local, &report.snapshot.id, &out);
    assert!(out.join("home/ann/notes").exists());
    assert!(out.join("var/lib/y").exists());
    assert!(!out.join("home/ann/.cache").exists());
    assert!(!out.join("var/tmp").exists());
}

#[test]
fn selected_paths_restore_with_their_parents_and_keep_existing_files() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fs::create_dir_all(src.join("a/b")).unwrap();
    fs::create_dir_all(src.join("c")).unwrap();
    fs::write(src.join("a/b/f"), b"new content").unwrap();
    fs::write(src.join("a/g"), b"g").unwrap();
    fs::write(src.join("c/h"), b"h").unwrap();
    fs::hard_link(src.join("c/h"), src.join("a/b/h2")).unwrap();
    let local = LocalBox::new(dir.path());
    let (report, _) = backup(&local, &src, &[], None, false);

    let out = dir.path().join("out");
    fs::create_dir_all(out.join("a/b")).unwrap();
    fs::write(out.join("a/b/f"), b"keep me").unwrap();
    let mut opts = RestoreOptions {
        target: out.clone(),
        paths: vec![b"a/b".to_vec()],
        overwrite: false,
        as_root: false,
    };
    let catalog = local.catalog_of(&report.snapshot.id);
    let r = run_restore(&&local.store, catalog.clone(), &opts, &Counters::default()).unwrap();
    assert_eq!(r.skipped_existing, 1);
    assert_eq!(fs::read(out.join("a/b/f")).unwrap(), b"keep me");
    // The hard link's first name is outside the selection: this one carries the data.
    assert_eq!(fs::read(out.join("a/b/h2")).unwrap(), b"h");
    assert!(!out.join("a/g").exists());
    assert!(!out.join("c").exists());
    opts.overwrite = true;
    run_restore(&&local.store, catalog, &opts, &Counters::default()).unwrap();
    assert_eq!(fs::read(out.join("a/b/f")).unwrap(), b"new content");
}
