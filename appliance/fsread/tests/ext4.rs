//! ext2/3/4 images made by mke2fs: browsing, used blocks, unwritten extents, deletions.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;

use abri_fsread::{EntryKind, FsKind, detect, open_fs, used_ranges};
use common::*;

const IMAGE_SIZE: &str = "64M";
const TRAILING_HOLE_PATH: &[u8] = b"/trailing-hole.bin";

fn mke2fs(image: &Path, tree: Option<&Path>, options: &[&str]) {
    let _ = fs::remove_file(image);
    let mut cmd = Command::new("mke2fs");
    cmd.args(["-q", "-F"]).args(options);
    if let Some(tree) = tree {
        cmd.arg("-d").arg(tree);
    }
    cmd.arg(image).arg(IMAGE_SIZE);
    // Fixed times and UUID would not change what is checked; the defaults are kept.
    run(&mut cmd);
}

fn e2fsck_clean(image: &Path) -> Result<(), String> {
    let out = Command::new("e2fsck")
        .args(["-fn"])
        .arg(image)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "e2fsck -fn exit {}:\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

const VARIANTS: &[(&str, &[&str])] = &[
    ("ext4, 4 KiB blocks", &["-t", "ext4", "-b", "4096"]),
    ("ext4, 1 KiB blocks", &["-t", "ext4", "-b", "1024"]),
    ("ext2", &["-t", "ext2"]),
    ("ext3", &["-t", "ext3"]),
    (
        "ext4, meta_bg",
        &["-t", "ext4", "-b", "1024", "-O", "meta_bg,^resize_inode"],
    ),
    (
        "ext4, 64bit without flex_bg",
        &["-t", "ext4", "-O", "64bit,^flex_bg"],
    ),
    (
        "ext4, bigalloc",
        &["-t", "ext4", "-b", "1024", "-O", "bigalloc", "-C", "16384"],
    ),
    ("ext4, inline_data", &["-t", "ext4", "-O", "inline_data"]),
    (
        "ext4, sparse_super2",
        &["-t", "ext4", "-b", "1024", "-O", "sparse_super2"],
    ),
];

#[test]
fn ext_images_read_back_and_survive_zeroing_their_unused_blocks() {
    let test = "ext_images_read_back_and_survive_zeroing_their_unused_blocks";
    if tool("mke2fs", test).is_none() || tool("e2fsck", test).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    make_tree(&tree, true);
    let image = dir.path().join("fs.img");
    let zeroed = dir.path().join("zeroed.img");
    for (variant, options) in VARIANTS {
        mke2fs(&image, Some(&tree), options);
        let src = open_file(&image);
        assert_eq!(detect(&*src), Some(FsKind::Ext4), "{variant}");
        let fs = open_fs(src.clone()).unwrap_or_else(|e| panic!("{variant}: {e}"));
        // mke2fs 1.47.0 with inline_data drops a file's trailing hole when it copies the
        // tree (debugfs shows the shorter size too), so that file is left out there.
        let mut skip = vec!["lost+found"];
        let mut expected_here = walk_host(&tree);
        if variant.contains("inline_data") {
            skip.push(TRAILING_HOLE);
            expected_here.remove(&format!("/{TRAILING_HOLE}"));
        }
        assert_same_tree(&expected_here, &walk_image(&*fs, &skip));

        // Metadata as mke2fs copied it from the tree.
        let host = fs::metadata(tree.join("dir/small.bin")).unwrap();
        let entry = fs.stat(b"/dir/small.bin").unwrap();
        assert_eq!(entry.mode, Some(0o100640), "{variant}");
        assert_eq!(entry.uid, Some(host.uid()), "{variant}");
        assert_eq!(
            entry.mtime_ns.map(|ns| ns.div_euclid(1_000_000_000)),
            Some(host.mtime()),
            "{variant}"
        );
        assert_eq!(fs.stat(b"/").unwrap().kind, EntryKind::Dir);
        assert_eq!(fs.stat(b"/short-link").unwrap().kind, EntryKind::Symlink);

        let ranges = used_ranges(&*src)
            .unwrap()
            .expect("ext4 is a known file system");
        assert_well_formed(&ranges);
        let used = copy_only_ranges(&image, &zeroed, &ranges);
        let total = fs::metadata(&image).unwrap().len();
        assert!(used < total / 2, "{variant}: {used} of {total} bytes used");
        e2fsck_clean(&zeroed)
            .unwrap_or_else(|e| panic!("{variant}: zeroed copy is not clean: {e}"));
        let fs = open_fs(open_file(&zeroed)).unwrap();
        assert_same_tree(&expected_here, &walk_image(&*fs, &skip));
        eprintln!("{variant}: {used} of {total} bytes used, zeroed copy checks clean");
    }
}

#[test]
fn unwritten_extents_read_as_zeros() {
    let test = "unwritten_extents_read_as_zeros";
    if tool("mke2fs", test).is_none() || tool("debugfs", test).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    // A file full of noise, deleted, leaves its noise in the free blocks the preallocated
    // file then takes: reading the blocks as data would return that noise.
    fs::write(tree.join("victim"), noise(9, 400 << 10)).unwrap();
    let image = dir.path().join("fs.img");
    mke2fs(&image, Some(&tree), &["-t", "ext4", "-b", "4096"]);
    run(Command::new("debugfs")
        .args(["-w", "-R", "rm /victim"])
        .arg(&image));
    let script = dir.path().join("cmds");
    fs::write(
        &script,
        "write /dev/null prealloc\nfallocate /prealloc 0 79\nsif /prealloc size 327680\n",
    )
    .unwrap();
    run(Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&script)
        .arg(&image));
    let extents = run(Command::new("debugfs")
        .args(["-R", "ex /prealloc"])
        .arg(&image));
    assert!(
        extents.contains("Uninit"),
        "debugfs made no unwritten extent:\n{extents}"
    );
    // The physical start of the first extent, from a line like " 0/ 0 1/ 1 0 - 79 1172 - 1251 80 Uninit".
    let line = extents.lines().find(|l| l.contains("Uninit")).unwrap();
    let numbers: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().unwrap())
        .collect();
    let physical = numbers[numbers.len() - 3];
    let raw = fs::read(&image).unwrap();
    let stale = &raw[(physical * 4096) as usize..(physical * 4096 + 4096) as usize];
    assert!(
        stale.iter().any(|&b| b != 0),
        "the preallocated blocks hold no stale data; the test proves nothing"
    );

    let fs = open_fs(open_file(&image)).unwrap();
    let mut data = Vec::new();
    std::io::Read::read_to_end(&mut fs.read_file(b"/prealloc").unwrap(), &mut data).unwrap();
    assert_eq!(data.len(), 327_680);
    assert!(
        data.iter().all(|&b| b == 0),
        "an unwritten extent read as data"
    );
}

#[test]
fn deleting_files_shrinks_the_used_set() {
    let test = "deleting_files_shrinks_the_used_set";
    if tool("mke2fs", test).is_none()
        || tool("debugfs", test).is_none()
        || tool("e2fsck", test).is_none()
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    fs::create_dir_all(&tree).unwrap();
    for i in 0..20 {
        fs::write(tree.join(format!("f{i}")), noise(i, 512 << 10)).unwrap();
    }
    let image = dir.path().join("fs.img");
    mke2fs(&image, Some(&tree), &["-t", "ext4", "-b", "4096"]);
    let before: u64 = used_ranges(&*open_file(&image))
        .unwrap()
        .unwrap()
        .iter()
        .map(|r| r.end - r.start)
        .sum();

    let script = dir.path().join("cmds");
    let cmds: String = (0..15).map(|i| format!("rm /f{i}\n")).collect();
    fs::write(&script, cmds).unwrap();
    run(Command::new("debugfs")
        .arg("-w")
        .arg("-f")
        .arg(&script)
        .arg(&image));
    let ranges = used_ranges(&*open_file(&image)).unwrap().unwrap();
    let after: u64 = ranges.iter().map(|r| r.end - r.start).sum();
    assert!(
        after + 15 * (512 << 10) <= before,
        "deleting 7.5 MiB of files only took the used set from {before} to {after} bytes"
    );
    // The remaining files still read back from a copy holding only the used ranges.
    let zeroed = dir.path().join("zeroed.img");
    copy_only_ranges(&image, &zeroed, &ranges);
    e2fsck_clean(&zeroed).unwrap();
    let fs = open_fs(open_file(&zeroed)).unwrap();
    for i in 15..20u64 {
        let mut data = Vec::new();
        let path = format!("/f{i}");
        std::io::Read::read_to_end(&mut fs.read_file(path.as_bytes()).unwrap(), &mut data).unwrap();
        assert!(data == noise(i, 512 << 10), "{path} differs");
    }
    assert!(matches!(
        fs.stat(b"/f3"),
        Err(abri_fsread::Error::NotFound { .. })
    ));
}

#[test]
fn paths_are_checked() {
    let test = "paths_are_checked";
    if tool("mke2fs", test).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    make_tree(&tree, true);
    use std::os::unix::ffi::OsStrExt;
    fs::write(
        tree.join(std::ffi::OsStr::from_bytes(b"raw-\xffname")),
        b"raw bytes",
    )
    .unwrap();
    let image = dir.path().join("fs.img");
    mke2fs(&image, Some(&tree), &["-t", "ext4"]);
    let fs = open_fs(open_file(&image)).unwrap();
    use abri_fsread::Error;
    assert!(matches!(
        fs.list_dir(b"/dir/small.bin"),
        Err(Error::NotADirectory { .. })
    ));
    assert!(matches!(
        fs.stat(b"/short-link/x"),
        Err(Error::NotADirectory { .. })
    ));
    assert!(matches!(
        fs.stat(b"/dir/../dir"),
        Err(Error::InvalidPath { .. })
    ));
    assert!(matches!(fs.stat(b"/nope"), Err(Error::NotFound { .. })));
    assert!(matches!(fs.open(b"/dir"), Err(Error::IsADirectory { .. })));
    assert!(matches!(
        fs.read_link(b"/empty"),
        Err(Error::NotASymlink { .. })
    ));
    // Reads in the middle of the sparse file and past its end.
    let mut buf = vec![0xAAu8; 8192];
    let n = fs
        .read_at(b"/sparse.bin", (5 << 20) - 4096, &mut buf)
        .unwrap();
    assert_eq!(n, 8192);
    assert!(buf[..4096].iter().all(|&b| b == 0));
    assert_eq!(&buf[4096..], &noise(4, 8192)[..4096]);
    assert_eq!(
        fs.read_at(b"/sparse.bin", SPARSE_LEN - 10, &mut buf)
            .unwrap(),
        10
    );
    assert_eq!(&buf[..10], &noise(5, 4096)[4086..]);
    assert_eq!(
        fs.read_at(b"/sparse.bin", SPARSE_LEN + 10, &mut buf)
            .unwrap(),
        0
    );
    let n = fs
        .read_at(TRAILING_HOLE_PATH, (1 << 20) - 8192, &mut buf)
        .unwrap();
    assert_eq!(n, 8192);
    assert!(
        buf.iter().all(|&b| b == 0),
        "the trailing hole read as data"
    );
    // A name that is not UTF-8 is listed lossily and found by its raw bytes.
    let listing = fs.list_dir(b"/").unwrap();
    let names: Vec<&str> = listing.iter().map(|e| e.name.as_str()).collect();
    assert!(names.contains(&"ünïcödé 日本語.txt"), "{names:?}");
    let raw = listing
        .iter()
        .find(|e| e.raw_name == b"raw-\xffname")
        .expect("the raw name is listed");
    assert_eq!(raw.name, "raw-\u{fffd}name");
    let mut path = b"/".to_vec();
    path.extend_from_slice(&raw.raw_name);
    let mut buf = [0u8; 32];
    assert_eq!(fs.read_at(&path, 0, &mut buf).unwrap(), 9);
    assert_eq!(&buf[..9], b"raw bytes");
}

#[test]
fn bytes_after_the_file_system_are_kept() {
    let test = "bytes_after_the_file_system_are_kept";
    if tool("mke2fs", test).is_none() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("fs.img");
    mke2fs(&image, None, &["-t", "ext4", "-b", "4096"]);
    let fs_end = fs::metadata(&image).unwrap().len();
    // The volume grows, the file system does not: the tail holds someone's data.
    let tail = noise(7, 1 << 20);
    let mut bytes = fs::read(&image).unwrap();
    bytes.extend_from_slice(&tail);
    fs::write(&image, &bytes).unwrap();
    let ranges = used_ranges(&*open_file(&image)).unwrap().unwrap();
    assert_well_formed(&ranges);
    let end = fs_end + tail.len() as u64;
    assert!(
        ranges.iter().any(|r| r.start <= fs_end && r.end == end),
        "the tail {fs_end}..{end} is not kept: {ranges:?}"
    );
}
