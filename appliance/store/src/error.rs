//! The one error type of the store.
//!
//! Rules: every message names the object (chunk digest, snapshot, file) and, when there is
//! one, the path on disk, then says what the user can do. Variants are few and typed so
//! that the HTTP layer can map them to status codes in one place: `BadChunk`,
//! `InvalidCatalog`, `InvalidPath`, `InvalidId`, `InvalidManifest` and `MissingChunk` are the
//! client's fault (the upload or manifest is wrong); `CorruptChunk`, `DiskFull`,
//! `BelowReserve` and `Io` are the box's.

use std::io;
use std::path::{Path, PathBuf};

use crate::key::Digest;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// An operating-system call failed.
    #[error("{action} {}: {source}", path.display())]
    Io {
        /// What the store was doing, e.g. "cannot write chunk file".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },

    /// The file system is full (ENOSPC or EDQUOT); nothing partial was left behind.
    #[error(
        "the backup disk is full while writing {}: prune old snapshots and run GC, \
         or add space, then run the backup again",
        path.display()
    )]
    DiskFull {
        /// The file that could not be written (already removed).
        path: PathBuf,
    },

    /// Free space fell below the configured reserve, so the insert was refused.
    #[error(
        "the backup disk holding {} has {free} bytes free, below the reserve of {reserve} \
         bytes: prune old snapshots and run GC, or add space",
        path.display()
    )]
    BelowReserve {
        /// The store's root directory.
        path: PathBuf,
        /// Free bytes available to the store.
        free: u64,
        /// The configured reserve.
        reserve: u64,
    },

    /// Bytes offered as a chunk (an upload, or a chunk handed to `decode_chunk`) are not a
    /// valid chunk with the expected digest.
    #[error("chunk {digest} is invalid: {defect}; the sender must chunk and upload it again")]
    BadChunk {
        /// The digest the chunk was supposed to have.
        digest: Digest,
        /// What is wrong with it.
        defect: ChunkDefect,
    },

    /// A chunk file in the store does not decode to its digest: the disk corrupted it.
    #[error(
        "chunk {digest} at {} is corrupt: {defect}; run verify to list the damaged \
         snapshots, and back the machines up again so the chunk is uploaded anew",
        path.display()
    )]
    CorruptChunk {
        /// The chunk's digest (its file name).
        digest: Digest,
        /// The chunk file.
        path: PathBuf,
        /// What is wrong with it.
        defect: ChunkDefect,
    },

    /// A chunk that something refers to is not in the store.
    #[error(
        "chunk {digest} is missing from the store: upload it before committing, or, if a \
         committed snapshot needs it, run verify and back the machine up again"
    )]
    MissingChunk {
        /// The missing chunk.
        digest: Digest,
    },

    /// A catalog's bytes or entries break the catalog format's rules.
    #[error("invalid catalog: {reason}")]
    InvalidCatalog {
        /// What rule was broken, naming the entry when there is one.
        reason: String,
    },

    /// A path in a catalog is not a clean relative path.
    #[error("invalid path {path:?} in catalog: {reason}")]
    InvalidPath {
        /// The path, lossily decoded for display.
        path: String,
        /// Which rule it breaks.
        reason: &'static str,
    },

    /// A machine or snapshot id is not 1 to 64 characters of `a-z`, `0-9` and `-`.
    #[error(
        "invalid {what} id {id:?}: use 1 to 64 characters among a-z, 0-9 and '-', \
         starting with a letter or digit"
    )]
    InvalidId {
        /// "machine" or "snapshot".
        what: &'static str,
        /// The refused id.
        id: String,
    },

    /// A snapshot manifest is malformed or inconsistent.
    #[error("invalid snapshot manifest {}: {reason}", path.display())]
    InvalidManifest {
        /// The manifest file (or the snapshot's would-be path when committing).
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// No such snapshot.
    #[error("snapshot {machine}/{id} does not exist (no file {})", path.display())]
    SnapshotNotFound {
        /// The machine id.
        machine: String,
        /// The snapshot id.
        id: String,
        /// Where its manifest would be.
        path: PathBuf,
    },

    /// A snapshot with this id is already committed; snapshots are never overwritten.
    #[error("snapshot {machine}/{id} already exists at {}: commit under a new id", path.display())]
    SnapshotExists {
        /// The machine id.
        machine: String,
        /// The snapshot id.
        id: String,
        /// The existing manifest.
        path: PathBuf,
    },

    /// The directory holds no store.
    #[error("no chunk store at {} (no store.json): create one first", path.display())]
    NotAStore {
        /// The directory.
        path: PathBuf,
    },

    /// `create` found a store already there.
    #[error("a chunk store already exists at {}: open it instead", path.display())]
    StoreExists {
        /// The directory.
        path: PathBuf,
    },

    /// The store's `store.json` names a format this code does not know.
    #[error(
        "the chunk store at {} has format {found}, but this abrid reads format 1 only: \
         install a newer abrid",
        path.display()
    )]
    UnsupportedFormat {
        /// The `store.json` file.
        path: PathBuf,
        /// The format found (as written in the file).
        found: String,
    },

    /// The store's key file is unreadable or malformed.
    #[error("invalid chunk key in {}: {reason}; restore the key file from a backup of the box", path.display())]
    InvalidKey {
        /// The key file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// GC could not read a snapshot, so it stopped before deleting anything.
    #[error(
        "GC stopped before deleting anything: snapshot {machine}/{id} cannot be read ({source}); \
         run verify, then delete or repair that snapshot"
    )]
    GcAborted {
        /// The machine id.
        machine: String,
        /// The snapshot id.
        id: String,
        /// Why it cannot be read.
        source: Box<StoreError>,
    },

    /// The `FilePacker` or a chunker was driven in the wrong order (a caller bug).
    #[error("file packer misuse: {0}")]
    PackerMisuse(&'static str),

    /// Chunker parameters out of range.
    #[error("invalid chunker parameters: {0}")]
    InvalidParams(&'static str),
}

/// What is wrong with bytes that should be an encoded chunk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkDefect {
    /// Shorter than the 12-byte header.
    #[error("truncated header ({0} bytes)")]
    TruncatedHeader(usize),
    /// The first four bytes are not `ABC1`.
    #[error("bad magic (not an Abri chunk)")]
    BadMagic,
    /// The codec byte is neither 0 (raw) nor 1 (zstd).
    #[error("unknown codec {0}")]
    UnknownCodec(u8),
    /// The reserved header bytes are not zero.
    #[error("reserved header bytes are not zero")]
    ReservedNotZero,
    /// The declared raw length exceeds the 16 MiB limit.
    #[error("declared length {0} exceeds the 16 MiB limit")]
    TooLarge(u32),
    /// The payload does not have the declared raw length.
    #[error("length mismatch: header says {declared} bytes, payload gives {actual}")]
    LengthMismatch {
        /// Length in the header.
        declared: u32,
        /// Length found.
        actual: usize,
    },
    /// zstd refused the payload (or it decompresses past the declared length).
    #[error("zstd payload does not decompress: {0}")]
    Decompress(String),
    /// The raw bytes hash to another digest.
    #[error("content hashes to {0}")]
    DigestMismatch(Digest),
}

impl StoreError {
    /// Wraps an I/O error, turning ENOSPC/EDQUOT into [`StoreError::DiskFull`].
    pub(crate) fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        if is_disk_full(&source) {
            return StoreError::DiskFull {
                path: path.to_path_buf(),
            };
        }
        StoreError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// True for "no space left" and "quota exceeded".
pub(crate) fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) || is_disk_full_code(e.raw_os_error())
}

#[cfg(unix)]
fn is_disk_full_code(code: Option<i32>) -> bool {
    code == Some(nix::libc::ENOSPC) || code == Some(nix::libc::EDQUOT)
}

// The store runs on the box (Linux); other systems build it only for the agent's sake.
#[cfg(not(unix))]
fn is_disk_full_code(_code: Option<i32>) -> bool {
    false
}

/// Shorthand used across the crate.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
