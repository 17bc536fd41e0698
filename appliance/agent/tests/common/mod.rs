//! Helpers of the agent's integration tests: a local store as the backup destination, a
//! generated tree with every kind of object, and a tree comparison.

#![allow(dead_code)]

use abri_agent::backup::{BackupJob, BackupReport, run_backup};
use abri_agent::incremental::Previous;
use abri_agent::progress::Counters;
use abri_agent::upload::{Destination, DestinationError};
use abri_proto::agent::{BackupSpec, CommitSnapshot, SnapshotSummary};
use abri_store::{
    CatalogReader, ChunkStore, ChunkerParams, Digest, SnapshotKind, SnapshotManifest,
    SnapshotStats, commit_snapshot,
};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The box, played by a store on disk.
pub struct LocalBox {
    pub store: ChunkStore,
    pub snapshots: Mutex<Vec<SnapshotManifest>>,
}

impl LocalBox {
    pub fn new(dir: &Path) -> Self {
        LocalBox {
            store: ChunkStore::create(&dir.join("store"))
                .unwrap()
                .with_reserve(0),
            snapshots: Mutex::new(Vec::new()),
        }
    }

    pub fn catalog_of(&self, id: &str) -> Vec<Digest> {
        let snaps = self.snapshots.lock().unwrap();
        snaps.iter().find(|s| s.id == id).unwrap().catalog.clone()
    }
}

impl Destination for LocalBox {
    fn missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, DestinationError> {
        Ok(self.store.missing(digests))
    }

    fn put_batch(&self, frames: Vec<u8>, count: usize) -> Result<(), DestinationError> {
        let frames = abri_proto::batch::parse_frames(&frames)
            .map_err(|e| DestinationError::Other(e.to_string()))?;
        assert_eq!(frames.len(), count);
        self.store.insert_batch(&frames)?;
        Ok(())
    }

    fn commit(&self, c: &CommitSnapshot) -> Result<SnapshotSummary, DestinationError> {
        let mut snaps = self.snapshots.lock().unwrap();
        let id = format!("s-{}", snaps.len() + 1);
        let catalog = c
            .catalog
            .iter()
            .map(|d| d.parse().unwrap())
            .collect::<Vec<Digest>>();
        let manifest = SnapshotManifest {
            format: 1,
            id: id.clone(),
            machine: "m-1".into(),
            kind: if c.images.is_empty() {
                SnapshotKind::Files
            } else {
                SnapshotKind::Image
            },
            plan: c.plan.clone(),
            started: c.started as i64,
            finished: c.started as i64 + 1,
            full: c.full,
            catalog,
            stats: SnapshotStats::default(),
            source: c.source.clone(),
            host: c.source.clone(),
            images: c.images.clone(),
            without_snapshot: c.without_snapshot,
        };
        commit_snapshot(&manifest, &self.store)?;
        snaps.push(manifest);
        Ok(SnapshotSummary {
            id,
            kind: if c.images.is_empty() {
                "files"
            } else {
                "image"
            }
            .into(),
            plan: c.plan.clone(),
            started: c.started,
            finished: c.started + 1,
            full: c.full,
            stats: c.stats.clone(),
            images: c.images.clone(),
            without_snapshot: c.without_snapshot,
        })
    }
}

/// Small chunks so that even a small tree spans many.
pub fn params() -> ChunkerParams {
    ChunkerParams::new(4096, 16384, 65536).unwrap()
}

/// Backs up `root` (everything below it, minus `excludes`) to `local`, incremental against
/// `previous` (a snapshot id) unless `full`.
pub fn backup(
    local: &LocalBox,
    root: &Path,
    excludes: &[&str],
    previous: Option<&str>,
    full: bool,
) -> (BackupReport, Counters) {
    let job = BackupJob {
        job_id: "j-test".into(),
        spec: BackupSpec {
            plan: "files".into(),
            selections: vec!["/".into()],
            excludes: excludes.iter().map(|s| s.to_string()).collect(),
            full,
            kind: Default::default(),
        },
        root: root.to_path_buf(),
        key: local.store.key().clone(),
        params: params(),
        source: "test-host".into(),
        started: 1_790_000_000,
    };
    let counters = Counters::default();
    let previous = match previous {
        Some(id) => Previous::new(CatalogReader::new(&local.store, local.catalog_of(id))),
        None => Previous::none(),
    };
    let report = run_backup(&job, local, previous, &counters).unwrap();
    (report, counters)
}

/// Deterministic pseudo-random bytes.
pub fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

pub fn set_mtime(path: &Path, secs: u64, nanos: u32) {
    let t = std::time::UNIX_EPOCH + std::time::Duration::new(secs, nanos);
    let f = fs::File::open(path).unwrap();
    f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
        .unwrap();
}

pub fn set_xattr(path: &Path, name: &str, value: &[u8]) {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let p = CString::new(path.as_os_str().as_bytes()).unwrap();
    let n = CString::new(name).unwrap();
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(
        r,
        0,
        "setxattr {name} on {}: {}",
        path.display(),
        std::io::Error::last_os_error()
    );
}

pub const SPARSE_SIZE: u64 = 5 * 1024 * 1024 * 1024;

/// Builds a tree with every kind of object under `root`.
pub fn make_tree(root: &Path) {
    let d = root.join("data");
    fs::create_dir_all(d.join("sub")).unwrap();
    fs::write(d.join("regular.bin"), noise(300_000, 1)).unwrap();
    fs::write(d.join("empty"), b"").unwrap();
    fs::write(d.join("small.txt"), b"hello\n").unwrap();
    for i in 0..30 {
        fs::write(
            d.join(format!("sub/many-{i:02}")),
            noise(1000 + i * 37, i as u64 + 7),
        )
        .unwrap();
    }
    // Sparse: 5 GiB logical, three small data regions, ending in a hole.
    {
        use std::os::unix::fs::FileExt;
        let f = fs::File::create(d.join("sparse.img")).unwrap();
        f.write_all_at(&noise(10_000, 3), 0).unwrap();
        f.write_all_at(&noise(70_000, 4), 1 << 30).unwrap();
        f.write_all_at(b"tail", 3 << 30).unwrap();
        f.set_len(SPARSE_SIZE).unwrap();
    }
    // Hard links: three names for one inode, one in another directory.
    fs::write(d.join("hard-a"), noise(5000, 9)).unwrap();
    fs::hard_link(d.join("hard-a"), d.join("hard-b")).unwrap();
    fs::hard_link(d.join("hard-a"), d.join("sub/hard-c")).unwrap();
    std::os::unix::fs::symlink("regular.bin", d.join("link-rel")).unwrap();
    std::os::unix::fs::symlink("/nonexistent/dangling", d.join("link-dangling")).unwrap();
    nix::unistd::mkfifo(
        &d.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o640),
    )
    .unwrap();
    fs::write(d.join("ünïcödé-文件.txt"), "ü".repeat(100)).unwrap();
    fs::write(d.join("x".repeat(255)), b"long name").unwrap();
    let mut deep = d.join("deep");
    for i in 0..40 {
        deep = deep.join(format!("level-{i:02}"));
    }
    fs::create_dir_all(&deep).unwrap();
    fs::write(deep.join("bottom.txt"), b"deep").unwrap();
    // Modes, including a read-only directory with children.
    fs::write(d.join("script.sh"), b"#!/bin/sh\n").unwrap();
    fs::set_permissions(d.join("script.sh"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::set_permissions(d.join("small.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    fs::create_dir(d.join("locked")).unwrap();
    fs::write(d.join("locked/inside"), b"in").unwrap();
    // Extended attributes in the user namespace, on a file and a directory.
    set_xattr(&d.join("regular.bin"), "user.abri.test", b"value-1");
    set_xattr(&d.join("sub"), "user.abri.dir", &[0, 1, 2, 255]);
    if nix::unistd::geteuid().is_root() {
        nix::unistd::chown(
            &d.join("small.txt"),
            Some(nix::unistd::Uid::from_raw(4321)),
            Some(nix::unistd::Gid::from_raw(4322)),
        )
        .unwrap();
        // An ACL travels as this xattr (a minimal valid one: user::rw-, group::r--, other::---).
        let acl: Vec<u8> = [
            2u32.to_le_bytes().to_vec(),
            [1u8, 0, 6, 0, 255, 255, 255, 255].to_vec(),
            [4u8, 0, 4, 0, 255, 255, 255, 255].to_vec(),
            [32u8, 0, 0, 0, 255, 255, 255, 255].to_vec(),
        ]
        .concat();
        set_xattr(&d.join("empty"), "system.posix_acl_access", &acl);
    }
    // Times last, children before parents.
    for (i, p) in walk_paths(root).iter().rev().enumerate() {
        let p = root.join(p);
        let m = fs::symlink_metadata(&p).unwrap();
        if m.file_type().is_symlink() || m.file_type().is_fifo_like() {
            continue;
        }
        set_mtime(&p, 1_700_000_000 + i as u64, 123_456_789);
    }
    fs::set_permissions(d.join("locked"), fs::Permissions::from_mode(0o555)).unwrap();
    set_mtime(&d.join("locked"), 1_600_000_000, 5);
}

trait FifoLike {
    fn is_fifo_like(&self) -> bool;
}
impl FifoLike for fs::FileType {
    fn is_fifo_like(&self) -> bool {
        use std::os::unix::fs::FileTypeExt;
        self.is_fifo()
    }
}

/// Every path below `root`, relative, sorted.
pub fn walk_paths(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let abs = root.join(&rel);
        for e in fs::read_dir(&abs).unwrap() {
            let e = e.unwrap();
            let r = rel.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                stack.push(r.clone());
            }
            out.push(r);
        }
    }
    out.sort();
    out
}

/// What we compare of each object.
#[derive(Debug, PartialEq)]
pub struct Observed {
    pub kind: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub mtime: (i64, i64),
    pub content: Option<Vec<u8>>,
    pub link: Option<PathBuf>,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

pub fn observe(root: &Path) -> BTreeMap<PathBuf, Observed> {
    let mut out = BTreeMap::new();
    for rel in walk_paths(root) {
        let abs = root.join(&rel);
        let m = fs::symlink_metadata(&abs).unwrap();
        let ft = m.file_type();
        let kind = format!("{:o}", m.mode() & libc::S_IFMT);
        let content = if ft.is_file() && m.len() < 10_000_000 {
            Some(fs::read(&abs).unwrap())
        } else {
            None
        };
        let xattrs = abri_agent::platform::list_xattrs(&abs).unwrap_or_default();
        out.insert(
            rel,
            Observed {
                kind,
                mode: m.mode(),
                uid: m.uid(),
                gid: m.gid(),
                size: if ft.is_dir() { 0 } else { m.len() },
                mtime: (m.mtime(), m.mtime_nsec()),
                content,
                link: fs::read_link(&abs).ok(),
                xattrs,
            },
        );
    }
    out
}

/// Asserts two trees are the same, object by object.
pub fn assert_same_tree(a: &Path, b: &Path) {
    let left = observe(a);
    let right = observe(b);
    assert_eq!(
        left.keys().collect::<Vec<_>>(),
        right.keys().collect::<Vec<_>>(),
        "same paths"
    );
    for (path, l) in &left {
        assert_eq!(Some(l), right.get(path), "{}", path.display());
    }
}
