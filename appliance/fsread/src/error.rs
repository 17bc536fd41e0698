//! The one error type of this crate: every message names what was being read and where.

use std::io;

use crate::source::ReadAt;

/// What went wrong while reading a partition table or a file system.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The byte source failed (or is shorter than the structures claim).
    #[error("cannot read {len} bytes at offset {offset} of the source: {source}")]
    Io {
        /// Where the read started.
        offset: u64,
        /// How many bytes were asked for.
        len: usize,
        /// What the source said.
        #[source]
        source: io::Error,
    },
    /// An on-disk structure holds values that cannot be right.
    #[error("{what} is damaged: {detail}")]
    Corrupt {
        /// The structure (`"ext4 superblock"`, `"GPT header"`, ...).
        what: &'static str,
        /// What is wrong with it.
        detail: String,
    },
    /// No entry at that path.
    #[error("{path}: no such file or directory")]
    NotFound {
        /// The path asked for.
        path: String,
    },
    /// A directory was expected (a path component or `list_dir`).
    #[error("{path}: not a directory")]
    NotADirectory {
        /// The path asked for.
        path: String,
    },
    /// File contents were asked of a directory.
    #[error("{path}: is a directory")]
    IsADirectory {
        /// The path asked for.
        path: String,
    },
    /// A link target was asked of something that is not a symbolic link.
    #[error("{path}: not a symbolic link")]
    NotASymlink {
        /// The path asked for.
        path: String,
    },
    /// The file uses a feature this reader does not implement; nothing wrong was returned.
    #[error("{path}: {what} is not supported")]
    Unsupported {
        /// The path asked for.
        path: String,
        /// The feature (`"NTFS compression"`, ...).
        what: String,
    },
    /// Neither ext2/3/4 nor NTFS: the caller reads the whole source instead.
    #[error("no ext2/ext3/ext4 or NTFS file system found on the source")]
    UnknownFileSystem,
    /// The path cannot be looked up (`..`, a NUL byte, a name that is too long).
    #[error("invalid path {path:?}: {reason}")]
    InvalidPath {
        /// The path asked for.
        path: String,
        /// Why it is refused.
        reason: &'static str,
    },
    /// The NTFS parser refused the volume or a file.
    #[error("NTFS {context}: {message}")]
    Ntfs {
        /// What was being read (a path or a metadata file).
        context: String,
        /// The parser's message.
        message: String,
    },
}

/// Short for `Result<T, abri_fsread::Error>`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn corrupt(what: &'static str, detail: impl Into<String>) -> Error {
        Error::Corrupt {
            what,
            detail: detail.into(),
        }
    }

    pub(crate) fn ntfs(context: impl Into<String>, err: impl std::fmt::Display) -> Error {
        Error::Ntfs {
            context: context.into(),
            message: err.to_string(),
        }
    }
}

/// `src.read_at` with the offset and length in the error.
pub(crate) fn read_exact(src: &dyn ReadAt, offset: u64, buf: &mut [u8]) -> Result<()> {
    src.read_at(offset, buf).map_err(|source| Error::Io {
        offset,
        len: buf.len(),
        source,
    })
}

/// Reads `len` bytes at `offset` into a new buffer. Callers bound `len` (a block, a sector
/// array) before calling, so a damaged length field cannot ask for a huge allocation; the
/// source's size is checked first as a second guard.
pub(crate) fn read_vec(src: &dyn ReadAt, offset: u64, len: usize) -> Result<Vec<u8>> {
    crate::source::check_bounds(src.size(), offset, len).map_err(|source| Error::Io {
        offset,
        len,
        source,
    })?;
    let mut buf = vec![0u8; len];
    read_exact(src, offset, &mut buf)?;
    Ok(buf)
}
