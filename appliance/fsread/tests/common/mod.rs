//! Helpers for the integration tests: Debian's tools make real images in a tempdir.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{FileExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;

use abri_fsread::{EntryKind, FileSystem, ReadAt};

/// The tool's path, or `None` after printing why the test is skipped.
pub fn tool(name: &str, test: &str) -> Option<PathBuf> {
    for dir in ["/usr/sbin", "/usr/bin", "/sbin", "/bin"] {
        let path = Path::new(dir).join(name);
        if path.exists() {
            return Some(path);
        }
    }
    eprintln!("SKIP {test}: `{name}` is not installed (scripts/apt/image.txt lists its package)");
    None
}

/// Runs a command and returns its stdout; panics with its output on failure.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Deterministic pseudo-random bytes.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

pub const SPARSE_LEN: u64 = 10 << 20;
/// A file whose last megabyte minus 4 KiB is a hole.
pub const TRAILING_HOLE: &str = "trailing-hole.bin";

/// The tree every file system test copies in: nested directories, Unicode names, a short
/// and a long symlink, a sparse file, a large file, an empty file and directory, and a
/// directory with enough entries to need several blocks.
pub fn make_tree(root: &Path, with_symlinks: bool) {
    fs::create_dir_all(root.join("dir/nested/deeper")).unwrap();
    fs::create_dir_all(root.join("empty dir")).unwrap();
    fs::create_dir_all(root.join("many")).unwrap();
    fs::write(root.join("dir/nested/deeper/file.txt"), b"deep inside\n").unwrap();
    fs::write(root.join("dir/small.bin"), noise(1, 5000)).unwrap();
    fs::write(root.join("ünïcödé 日本語.txt"), "héllo wörld\n".as_bytes()).unwrap();
    fs::write(root.join("empty"), b"").unwrap();
    fs::write(root.join("large.bin"), noise(2, 3 << 20)).unwrap();
    let sparse = fs::File::create(root.join("sparse.bin")).unwrap();
    sparse.set_len(SPARSE_LEN).unwrap();
    sparse.write_all_at(&noise(3, 4096), 0).unwrap();
    sparse.write_all_at(&noise(4, 8192), 5 << 20).unwrap();
    sparse
        .write_all_at(&noise(5, 4096), SPARSE_LEN - 4096)
        .unwrap();
    drop(sparse);
    let tail = fs::File::create(root.join(TRAILING_HOLE)).unwrap();
    tail.set_len(1 << 20).unwrap();
    tail.write_all_at(&noise(6, 4096), 0).unwrap();
    drop(tail);
    for i in 0..300 {
        let mut f =
            fs::File::create(root.join(format!("many/file-{i:04}-with-a-longish-name"))).unwrap();
        writeln!(f, "file number {i}").unwrap();
    }
    // ntfs-3g without its permissions option refuses chmod; only ext4 checks the mode.
    let _ = fs::set_permissions(
        root.join("dir/small.bin"),
        fs::Permissions::from_mode(0o640),
    );
    if with_symlinks {
        symlink("dir/nested/deeper/file.txt", root.join("short-link")).unwrap();
        let long = format!("{}/target-of-a-long-link", "x".repeat(80));
        symlink(long, root.join("dir/long-link")).unwrap();
    }
}

/// What a tree holds, keyed by path: kind, and contents or link target.
#[derive(Debug, PartialEq, Eq)]
pub enum Node {
    File(Vec<u8>),
    Dir,
    Link(Vec<u8>),
}

pub fn walk_host(root: &Path) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    walk_host_into(root, "", &mut out);
    out
}

fn walk_host_into(dir: &Path, prefix: &str, out: &mut BTreeMap<String, Node>) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().into_string().unwrap();
        let path = format!("{prefix}/{name}");
        let meta = fs::symlink_metadata(entry.path()).unwrap();
        if meta.file_type().is_symlink() {
            let target = fs::read_link(entry.path()).unwrap();
            out.insert(
                path,
                Node::Link(target.into_os_string().into_encoded_bytes()),
            );
        } else if meta.is_dir() {
            out.insert(path.clone(), Node::Dir);
            walk_host_into(&entry.path(), &path, out);
        } else {
            out.insert(path, Node::File(fs::read(entry.path()).unwrap()));
        }
    }
}

/// Reads the whole tree through the crate, skipping names in `skip` at the root.
pub fn walk_image(fs: &dyn FileSystem, skip: &[&str]) -> BTreeMap<String, Node> {
    let mut out = BTreeMap::new();
    walk_image_into(fs, "", skip, &mut out);
    out
}

fn walk_image_into(
    fs: &dyn FileSystem,
    prefix: &str,
    skip: &[&str],
    out: &mut BTreeMap<String, Node>,
) {
    let dir = if prefix.is_empty() { "/" } else { prefix };
    for entry in fs.list_dir(dir.as_bytes()).unwrap() {
        if prefix.is_empty() && skip.contains(&entry.name.as_str()) {
            continue;
        }
        let path = format!("{prefix}/{}", entry.name);
        let stat = fs.stat(path.as_bytes()).unwrap();
        assert_eq!(stat, entry, "stat and listing disagree on {path}");
        match entry.kind {
            EntryKind::Dir => {
                out.insert(path.clone(), Node::Dir);
                walk_image_into(fs, &path, skip, out);
            }
            EntryKind::Symlink => {
                out.insert(
                    path.clone(),
                    Node::Link(fs.read_link(path.as_bytes()).unwrap()),
                );
            }
            EntryKind::File => {
                let mut data = Vec::new();
                std::io::Read::read_to_end(&mut fs.read_file(path.as_bytes()).unwrap(), &mut data)
                    .unwrap();
                assert_eq!(data.len() as u64, entry.size, "size of {path}");
                out.insert(path, Node::File(data));
            }
            EntryKind::Other => panic!("unexpected special file {path}"),
        }
    }
}

/// Asserts two trees are equal, naming the first difference rather than dumping megabytes.
pub fn assert_same_tree(expected: &BTreeMap<String, Node>, actual: &BTreeMap<String, Node>) {
    let expected_paths: Vec<&String> = expected.keys().collect();
    let actual_paths: Vec<&String> = actual.keys().collect();
    assert_eq!(
        expected_paths, actual_paths,
        "the trees hold different paths"
    );
    for (path, node) in expected {
        match (node, &actual[path]) {
            (Node::File(a), Node::File(b)) => {
                assert!(
                    a == b,
                    "contents of {path} differ ({} vs {} bytes)",
                    a.len(),
                    b.len()
                )
            }
            (a, b) => assert_eq!(a, b, "{path}"),
        }
    }
}

pub fn open_file(path: &Path) -> Arc<dyn ReadAt> {
    Arc::new(fs::File::open(path).unwrap())
}

/// Copies `image` to `out`, zeroing every byte outside `ranges`; returns the used bytes.
pub fn copy_only_ranges(image: &Path, out: &Path, ranges: &[std::ops::Range<u64>]) -> u64 {
    let src = fs::File::open(image).unwrap();
    let size = src.metadata().unwrap().len();
    let dst = fs::File::create(out).unwrap();
    dst.set_len(size).unwrap();
    let mut used = 0;
    let mut buf = vec![0u8; 1 << 20];
    for r in ranges {
        assert!(
            r.start < r.end && r.end <= size,
            "range {r:?} outside the image of {size} bytes"
        );
        let mut at = r.start;
        while at < r.end {
            let n = (r.end - at).min(buf.len() as u64) as usize;
            src.read_exact_at(&mut buf[..n], at).unwrap();
            dst.write_all_at(&buf[..n], at).unwrap();
            at += n as u64;
        }
        used += r.end - r.start;
    }
    used
}

/// Asserts the ranges are sorted, disjoint, non-touching and non-empty.
pub fn assert_well_formed(ranges: &[std::ops::Range<u64>]) {
    for r in ranges {
        assert!(r.start < r.end, "empty range {r:?}");
    }
    for pair in ranges.windows(2) {
        assert!(
            pair[0].end < pair[1].start,
            "ranges {:?} and {:?} are not merged",
            pair[0],
            pair[1]
        );
    }
}
