//! `ChunkStore`: verified chunks as plain files under one directory.
//!
//! ```text
//! <root>/store.json            {"format": 1}
//! <root>/key                   the BLAKE3 key, 64 hex digits, mode 0600
//! <root>/chunks/<aa>/<digest>  one encoded chunk; <aa> = first two hex digits
//! <root>/snapshots/<machine>/<id>.json
//! <root>/tmp/                  writes in progress; emptied by `open`
//! ```
//!
//! Fsync discipline: a chunk is written as an unnamed file linked into place (on Linux;
//! elsewhere to `tmp/` and renamed), large ones partly with direct I/O
//! (`durable::direct`), with no fsync (a backup writes thousands; fsyncing each would
//! halve throughput on a disk). Durability
//! comes once per backup: [`ChunkStore::sync`] issues one `syncfs(2)` on the store's file
//! system, and [`crate::commit_snapshot`] calls it before it writes the manifest (which
//! itself is fsynced, renamed and its directory fsynced). So after a power cut, a chunk
//! file is either complete or absent for every committed snapshot; an unsynced chunk of an
//! uncommitted backup may be lost or truncated, which no snapshot sees (and verify or the
//! next insert's decode finds it).
//!
//! GC safety: an insert of a chunk that already exists, and a `missing` answer that a chunk
//! exists, set the chunk file's mtime to now (under a lock that the GC sweep also takes per
//! chunk), so a chunk that a backup in progress relies on is newer than GC's cutoff and
//! survives. Run GC in the process that owns the store (the lock is in memory), and open
//! one `ChunkStore` per directory per process: `open` empties `tmp/`.

use std::fs;
use std::io::{ErrorKind, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

#[cfg(unix)]
use nix::sys::stat::{UtimensatFlags, utimensat};
#[cfg(unix)]
use nix::sys::time::TimeSpec;

use crate::catalog::ChunkSource;
use crate::chunk::{CHUNK_HEADER_LEN, declared_len, decode_chunk};
use crate::durable::{ensure_dir, sync_dir, write_new};
use crate::error::{Result, StoreError};
use crate::gate::{CommitPass, GcGate, GcPass};
use crate::key::{ChunkKey, Digest};

/// The store format this code reads and writes.
pub const STORE_FORMAT: u64 = 1;
/// Free space kept by default: inserts fail with `BelowReserve` below it.
pub const DEFAULT_RESERVE: u64 = 256 * 1024 * 1024;

/// The outcome of [`ChunkStore::insert_encoded`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inserted {
    /// True when this insert wrote the chunk; false when it was already stored.
    pub new: bool,
    /// Bytes this insert wrote to disk: the encoded length when new, else 0.
    pub stored_bytes: u64,
}

/// A directory of verified, deduplicated chunks (see the module documentation).
#[derive(Debug)]
pub struct ChunkStore {
    root: PathBuf,
    key: ChunkKey,
    reserve: u64,
    /// Serialises "touch if present" against GC's "remove if old" for any one chunk.
    touch_lock: Mutex<()>,
    /// Keeps commits and GC runs apart (see [`crate::gate`]).
    gate: GcGate,
    tmp_counter: AtomicU64,
}

/// A chunk file found by a walk of `chunks/`.
pub(crate) struct ChunkFile {
    /// None when the file name is not a digest.
    pub digest: Option<Digest>,
    pub path: PathBuf,
    pub meta: fs::Metadata,
}

impl ChunkStore {
    /// Creates a new store in `dir` (created if needed) with a fresh random key.
    pub fn create(dir: &Path) -> Result<Self> {
        let marker = dir.join("store.json");
        if marker.exists() {
            return Err(StoreError::StoreExists {
                path: dir.to_path_buf(),
            });
        }
        ensure_dir(dir)?;
        let key_path = dir.join("key");
        // A key without store.json is an interrupted create: keep that key.
        if !key_path.exists() {
            ChunkKey::generate().save(&key_path)?;
        }
        for sub in ["tmp", "snapshots"] {
            ensure_dir(&dir.join(sub))?;
        }
        for prefix in 0..=255u8 {
            ensure_dir(&dir.join("chunks").join(hex::encode([prefix])))?;
        }
        let tmp = dir.join("tmp").join("store.json");
        let _ = fs::remove_file(&tmp);
        let body = format!("{{\"format\": {STORE_FORMAT}}}\n");
        write_new(&tmp, body.as_bytes(), true)?;
        fs::rename(&tmp, &marker).map_err(|e| StoreError::io("cannot create", &marker, e))?;
        sync_dir(dir)?;
        ChunkStore::open(dir)
    }

    /// Opens the store in `dir`, refusing an unknown format, and empties `tmp/`.
    pub fn open(dir: &Path) -> Result<Self> {
        let marker = dir.join("store.json");
        let text = match fs::read_to_string(&marker) {
            Ok(t) => t,
            Err(e) if e.kind() == ErrorKind::NotFound => {
                return Err(StoreError::NotAStore {
                    path: dir.to_path_buf(),
                });
            }
            Err(e) => return Err(StoreError::io("cannot read", &marker, e)),
        };
        let unsupported = |found: String| StoreError::UnsupportedFormat {
            path: marker.clone(),
            found,
        };
        let value: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| unsupported(format!("unreadable ({e})")))?;
        match value.get("format") {
            Some(f) if f.as_u64() == Some(STORE_FORMAT) => {}
            Some(f) => return Err(unsupported(f.to_string())),
            None => return Err(unsupported("missing".into())),
        }
        let key = ChunkKey::load(&dir.join("key"))?;
        for sub in ["chunks", "snapshots", "tmp"] {
            ensure_dir(&dir.join(sub))?;
        }
        let store = ChunkStore {
            root: dir.to_path_buf(),
            key,
            reserve: DEFAULT_RESERVE,
            touch_lock: Mutex::new(()),
            gate: GcGate::default(),
            tmp_counter: AtomicU64::new(0),
        };
        store.clean_tmp()?;
        Ok(store)
    }

    /// Sets the free space to keep (bytes); inserts fail with `BelowReserve` under it.
    /// 0 disables the check.
    pub fn with_reserve(mut self, bytes: u64) -> Self {
        self.reserve = bytes;
        self
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The store's key (agents need it to name chunks).
    pub fn key(&self) -> &ChunkKey {
        &self.key
    }

    /// Where a chunk's file is (whether or not it exists).
    pub fn chunk_path(&self, digest: &Digest) -> PathBuf {
        let hex = digest.to_hex();
        self.root.join("chunks").join(&hex[..2]).join(hex)
    }

    /// Verifies an encoded chunk (decode + hash) and stores it unless present; a present
    /// chunk is touched instead (see the module documentation on GC).
    pub fn insert_encoded(&self, digest: &Digest, encoded: &[u8]) -> Result<Inserted> {
        decode_chunk(encoded, &self.key, digest)?;
        self.store_checked(digest, encoded)
    }

    /// Verifies every chunk of a batch first, then stores each like [`insert_encoded`]
    /// (Self::insert_encoded): a batch with one bad chunk stores nothing.
    pub fn insert_batch(&self, chunks: &[(Digest, &[u8])]) -> Result<Vec<Inserted>> {
        for (digest, encoded) in chunks {
            decode_chunk(encoded, &self.key, digest)?;
        }
        chunks
            .iter()
            .map(|(digest, encoded)| self.store_checked(digest, encoded))
            .collect()
    }

    /// Stores a verified encoded chunk unless present (then touches it).
    fn store_checked(&self, digest: &Digest, encoded: &[u8]) -> Result<Inserted> {
        let path = self.chunk_path(digest);
        if self.touch(&path)? {
            return Ok(Inserted {
                new: false,
                stored_bytes: 0,
            });
        }
        self.check_reserve(encoded.len() as u64)?;
        #[cfg(target_os = "linux")]
        if crate::durable::link_new(&path, encoded)? {
            return Ok(Inserted {
                new: true,
                stored_bytes: encoded.len() as u64,
            });
        }
        // Elsewhere, or when the name exists (an empty file a power cut left, or the same
        // chunk stored a moment ago by another upload): a named temporary file, renamed over.
        let tmp = self.tmp_path("chunk");
        write_new(&tmp, encoded, false)?;
        let renamed = fs::rename(&tmp, &path).or_else(|e| {
            // The prefix directory may be missing (removed by hand, or an old store).
            if e.kind() != ErrorKind::NotFound {
                return Err(e);
            }
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::rename(&tmp, &path)
        });
        if let Err(e) = renamed {
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::io("cannot store chunk", &path, e));
        }
        Ok(Inserted {
            new: true,
            stored_bytes: encoded.len() as u64,
        })
    }

    /// True when the chunk's file exists (not verified, not touched).
    pub fn has(&self, digest: &Digest) -> bool {
        self.chunk_path(digest).exists()
    }

    /// The digests of `digests` that the store lacks, in order. Present ones are touched:
    /// the answer is a promise to the agent that it need not upload them, so GC must not
    /// sweep them before the backup commits. A chunk that cannot be checked is reported
    /// missing (uploading it again is always safe).
    pub fn missing(&self, digests: &[Digest]) -> Vec<Digest> {
        digests
            .iter()
            .filter(|d| !matches!(self.touch(&self.chunk_path(d)), Ok(true)))
            .copied()
            .collect()
    }

    /// The verified raw bytes of a chunk. A chunk that does not decode to its digest is a
    /// `CorruptChunk` error naming the digest and the file.
    pub fn read(&self, digest: &Digest) -> Result<Vec<u8>> {
        let path = self.chunk_path(digest);
        let bytes = self.read_encoded(digest)?;
        decode_chunk(&bytes, &self.key, digest).map_err(|e| match e {
            StoreError::BadChunk { digest, defect } => StoreError::CorruptChunk {
                digest,
                path,
                defect,
            },
            other => other,
        })
    }

    /// The stored (encoded) bytes of a chunk, unverified: for streaming to an agent that
    /// decodes and verifies them itself.
    pub fn read_encoded(&self, digest: &Digest) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.read_encoded_into(digest, &mut out)?;
        Ok(out)
    }

    /// Appends the stored (encoded) bytes of a chunk to `out`, unverified, and returns how
    /// many there were; on an error `out` is as it was. Saves a copy when the bytes go into
    /// a larger body anyway (a chunk batch).
    pub fn read_encoded_into(&self, digest: &Digest, out: &mut Vec<u8>) -> Result<usize> {
        let path = self.chunk_path(digest);
        let before = out.len();
        #[cfg(target_os = "linux")]
        let read = crate::durable::direct::read_into(&path, out);
        #[cfg(not(target_os = "linux"))]
        let read = fs::File::open(&path).and_then(|mut f| {
            use std::io::Read;
            f.read_to_end(out)
                .map(|_| ())
                .inspect_err(|_| out.truncate(before))
        });
        read.map_err(|e| self.not_found_or(digest, &path, e))?;
        Ok(out.len() - before)
    }

    /// Asks the kernel to start reading the files of small chunks about to be read one
    /// after another ([`Self::read_encoded_into`]), so that the disk works on all of them at
    /// once instead of one at a time. Large chunks are read around the page cache and are
    /// left alone. Only a hint: a chunk that cannot be opened is skipped here and reported
    /// by the read.
    #[cfg(target_os = "linux")]
    pub fn read_ahead(&self, digests: &[Digest]) {
        use nix::fcntl::{PosixFadviseAdvice, posix_fadvise};
        for digest in digests {
            let Ok(file) = fs::File::open(self.chunk_path(digest)) else {
                continue;
            };
            let Ok(meta) = file.metadata() else { continue };
            if meta.len() < crate::durable::direct::MIN as u64 {
                let _ = posix_fadvise(&file, 0, 0, PosixFadviseAdvice::POSIX_FADV_WILLNEED);
            }
        }
    }

    /// Elsewhere (the Windows agent links this crate for its catalogs) there is nothing to do.
    #[cfg(not(target_os = "linux"))]
    pub fn read_ahead(&self, _digests: &[Digest]) {}

    /// The size of a chunk's file (encoded bytes).
    pub fn stored_size(&self, digest: &Digest) -> Result<u64> {
        let path = self.chunk_path(digest);
        fs::metadata(&path)
            .map(|m| m.len())
            .map_err(|e| self.not_found_or(digest, &path, e))
    }

    /// The raw length a stored chunk declares in its header (cheap: reads 12 bytes).
    pub(crate) fn raw_len(&self, digest: &Digest) -> Result<u32> {
        let path = self.chunk_path(digest);
        let (header, n) = read_header(&path).map_err(|e| self.not_found_or(digest, &path, e))?;
        declared_len(&header[..n])
            .map(|(_, len)| len)
            .map_err(|defect| StoreError::CorruptChunk {
                digest: *digest,
                path,
                defect,
            })
    }

    /// Flushes everything written to the store's file system (one `syncfs`). Call once at
    /// the end of a backup; `commit_snapshot` does.
    #[cfg(unix)]
    pub fn sync(&self) -> Result<()> {
        let dir = fs::File::open(&self.root)
            .map_err(|e| StoreError::io("cannot open store", &self.root, e))?;
        nix::unistd::syncfs(&dir)
            .map_err(|e| StoreError::io("cannot sync the file system of", &self.root, e.into()))
    }

    /// The store lives on the box (Linux); elsewhere (the Windows agent links this crate for
    /// its catalogs) the per-file fsyncs are all there is.
    #[cfg(not(unix))]
    pub fn sync(&self) -> Result<()> {
        Ok(())
    }

    /// Bytes available to the store on its file system.
    #[cfg(unix)]
    pub fn free_space(&self) -> Result<u64> {
        let st = nix::sys::statvfs::statvfs(&self.root)
            .map_err(|e| StoreError::io("cannot read free space of", &self.root, e.into()))?;
        #[allow(clippy::unnecessary_cast)] // the field types differ between targets
        let free = (st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64);
        Ok(free)
    }

    /// Not measured outside the box's Linux.
    #[cfg(not(unix))]
    pub fn free_space(&self) -> Result<u64> {
        Err(StoreError::io(
            "cannot read free space of",
            &self.root,
            std::io::Error::from(ErrorKind::Unsupported),
        ))
    }

    pub(crate) fn tmp_path(&self, what: &str) -> PathBuf {
        let n = self.tmp_counter.fetch_add(1, Ordering::Relaxed);
        self.root
            .join("tmp")
            .join(format!("{what}-{}-{n}", std::process::id()))
    }

    /// Calls `f` for every file under `chunks/`.
    pub(crate) fn walk_chunks(&self, f: &mut dyn FnMut(ChunkFile) -> Result<()>) -> Result<()> {
        let chunks = self.root.join("chunks");
        for prefix in read_dir_sorted(&chunks)? {
            if !prefix.is_dir() {
                continue;
            }
            for path in read_dir_sorted(&prefix)? {
                let meta = match fs::symlink_metadata(&path) {
                    Ok(m) => m,
                    Err(e) if e.kind() == ErrorKind::NotFound => continue,
                    Err(e) => return Err(StoreError::io("cannot stat", &path, e)),
                };
                if !meta.is_file() {
                    continue;
                }
                let digest = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .and_then(|n| n.parse::<Digest>().ok())
                    .filter(|d| path.starts_with(&prefix) && self.chunk_path(d) == path);
                f(ChunkFile { digest, path, meta })?;
            }
        }
        Ok(())
    }

    /// Removes a chunk file if its mtime is still older than `cutoff`; returns the bytes
    /// freed. Holds the touch lock so a concurrent touch either wins (file kept) or sees
    /// the file gone (and the insert writes it anew).
    pub(crate) fn remove_if_older(&self, path: &Path, cutoff: SystemTime) -> Result<Option<u64>> {
        let _guard = self.lock();
        let meta = match fs::symlink_metadata(path) {
            Ok(m) => m,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("cannot stat", path, e)),
        };
        let mtime = meta
            .modified()
            .map_err(|e| StoreError::io("cannot read mtime of", path, e))?;
        if mtime >= cutoff {
            return Ok(None);
        }
        match fs::remove_file(path) {
            Ok(()) => Ok(Some(meta.len())),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("cannot remove", path, e)),
        }
    }

    /// Sets a chunk's mtime to now if it exists; false when it does not, or when its file is
    /// shorter than a chunk header: chunk files are not fsynced one by one, so a power cut
    /// before the backup's `syncfs` can leave an empty file under a chunk's name. Counted as
    /// absent, it is asked for again and replaced, and a commit cannot rely on it.
    pub(crate) fn touch_if_present(&self, digest: &Digest) -> Result<bool> {
        self.touch(&self.chunk_path(digest))
    }

    /// The raw length of a present chunk (touched first when `touch`), or None when it is
    /// absent or shorter than a chunk header (see [`Self::touch_if_present`]). Without
    /// `touch`, one open and one read of the header: no metadata write.
    pub(crate) fn present_len(&self, digest: &Digest, touch: bool) -> Result<Option<u32>> {
        if touch {
            if !self.touch_if_present(digest)? {
                return Ok(None);
            }
            return self.raw_len(digest).map(Some);
        }
        let path = self.chunk_path(digest);
        match read_header(&path) {
            Ok((_, n)) if n < CHUNK_HEADER_LEN => Ok(None),
            Ok((header, _)) => declared_len(&header)
                .map(|(_, len)| Some(len))
                .map_err(|defect| StoreError::CorruptChunk {
                    digest: *digest,
                    path,
                    defect,
                }),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("cannot read chunk", &path, e)),
        }
    }

    /// Enters a snapshot commit (see [`crate::gate`]).
    pub(crate) fn commit_pass(&self) -> CommitPass<'_> {
        self.gate.commit()
    }

    /// Enters a GC run (see [`crate::gate`]).
    pub(crate) fn gc_pass(&self) -> GcPass<'_> {
        self.gate.gc()
    }

    #[cfg(not(unix))]
    fn touch(&self, path: &Path) -> Result<bool> {
        let _guard = self.lock();
        match fs::File::options().write(true).open(path) {
            Ok(f) => f
                .set_modified(SystemTime::now())
                .and_then(|()| f.metadata())
                .map(|m| m.len() >= CHUNK_HEADER_LEN as u64)
                .map_err(|e| StoreError::io("cannot touch chunk", path, e)),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
            Err(e) => Err(StoreError::io("cannot touch chunk", path, e)),
        }
    }

    #[cfg(unix)]
    fn touch(&self, path: &Path) -> Result<bool> {
        let _guard = self.lock();
        match utimensat(
            nix::fcntl::AT_FDCWD,
            path,
            &TimeSpec::UTIME_OMIT,
            &TimeSpec::UTIME_NOW,
            UtimensatFlags::NoFollowSymlink,
        ) {
            Ok(()) => match fs::symlink_metadata(path) {
                Ok(m) => Ok(m.len() >= CHUNK_HEADER_LEN as u64),
                Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
                Err(e) => Err(StoreError::io("cannot touch chunk", path, e)),
            },
            Err(nix::errno::Errno::ENOENT) => Ok(false),
            Err(e) => Err(StoreError::io("cannot touch chunk", path, e.into())),
        }
    }

    fn lock(&self) -> MutexGuard<'_, ()> {
        // The guarded value is (): a panic elsewhere cannot leave it inconsistent.
        self.touch_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn check_reserve(&self, len: u64) -> Result<()> {
        if self.reserve == 0 {
            return Ok(());
        }
        let free = self.free_space()?;
        if free < self.reserve.saturating_add(len) {
            return Err(StoreError::BelowReserve {
                path: self.root.clone(),
                free,
                reserve: self.reserve,
            });
        }
        Ok(())
    }

    fn not_found_or(&self, digest: &Digest, path: &Path, e: std::io::Error) -> StoreError {
        if e.kind() == ErrorKind::NotFound {
            StoreError::MissingChunk { digest: *digest }
        } else {
            StoreError::io("cannot read chunk", path, e)
        }
    }

    fn clean_tmp(&self) -> Result<()> {
        let tmp = self.root.join("tmp");
        for path in read_dir_sorted(&tmp)? {
            let r = if path.is_dir() {
                fs::remove_dir_all(&path)
            } else {
                fs::remove_file(&path)
            };
            r.map_err(|e| StoreError::io("cannot clean leftover", &path, e))?;
        }
        Ok(())
    }
}

impl ChunkSource for ChunkStore {
    fn read_chunk(&self, digest: &Digest) -> Result<Vec<u8>> {
        self.read(digest)
    }
}

/// The entries of a directory, sorted (so walks are deterministic).
pub(crate) fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let rd = fs::read_dir(dir).map_err(|e| StoreError::io("cannot list", dir, e))?;
    for entry in rd {
        out.push(
            entry
                .map_err(|e| StoreError::io("cannot list", dir, e))?
                .path(),
        );
    }
    out.sort();
    Ok(out)
}

/// The first bytes of a chunk file, up to a chunk header, and how many there were.
fn read_header(path: &Path) -> std::io::Result<([u8; CHUNK_HEADER_LEN], usize)> {
    let mut header = [0u8; CHUNK_HEADER_LEN];
    let mut n = 0;
    let mut f = open_noatime(path)?;
    while n < header.len() {
        match f.read(&mut header[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok((header, n))
}

/// Opens a file to read without updating its access time where the kernel allows it (the
/// owner may): reading a chunk's header must not cost a metadata write.
fn open_noatime(path: &Path) -> std::io::Result<fs::File> {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::fs::OpenOptionsExt;
        match fs::File::options()
            .read(true)
            .custom_flags(nix::fcntl::OFlag::O_NOATIME.bits())
            .open(path)
        {
            Err(e) if e.raw_os_error() == Some(nix::libc::EPERM) => {}
            other => return other,
        }
    }
    fs::File::open(path)
}

#[cfg(test)]
mod tests;
