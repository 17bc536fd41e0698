//! What browsing returns: directory entries and open files, the same for every file system.

use std::io;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The kind of a directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link (NTFS: a symlink or junction reparse point).
    Symlink,
    /// Device node, FIFO, socket, or an NTFS reparse point of another kind.
    Other,
}

/// One file, directory or link as seen in a listing or by `stat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsEntry {
    /// The name, lossily decoded (ext4 names are bytes; NTFS names are UTF-16). Empty for
    /// the root.
    pub name: String,
    /// The name exactly as stored: ext4's bytes, or NTFS's UTF-16 encoded as UTF-8 (an
    /// unpaired surrogate becomes U+FFFD).
    pub raw_name: Vec<u8>,
    /// File, directory, link or other.
    pub kind: EntryKind,
    /// Length in bytes (file data, link target, directory blocks).
    pub size: u64,
    /// ext4 inode number or NTFS file record number: equal ids are hard links.
    pub id: u64,
    /// Hard link count.
    pub links: u32,
    /// Full `st_mode` (type and permission bits); ext4 only.
    pub mode: Option<u32>,
    /// Owner; ext4 only.
    pub uid: Option<u32>,
    /// Group; ext4 only.
    pub gid: Option<u32>,
    /// Last data modification, nanoseconds since 1970-01-01 UTC.
    pub mtime_ns: Option<i64>,
    /// Last status (ext4 inode, NTFS MFT record) change, nanoseconds since the epoch.
    pub ctime_ns: Option<i64>,
    /// Last access, nanoseconds since the epoch.
    pub atime_ns: Option<i64>,
    /// Creation, nanoseconds since the epoch (ext4 with large inodes, NTFS).
    pub btime_ns: Option<i64>,
    /// NTFS file attribute flags (`FILE_ATTRIBUTE_*`: read-only 0x1, hidden 0x2, system 0x4,
    /// ...); none for ext4.
    pub ntfs_attributes: Option<u32>,
}

/// Which file system a source holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsKind {
    /// ext2, ext3 or ext4 (one superblock format).
    Ext4,
    /// NTFS 3.x.
    Ntfs,
}

/// A file system opened read-only on a byte source.
///
/// Paths are bytes, `/`-separated from the file system's root (`b"/etc/hosts"`, or
/// `"/etc/hosts".as_bytes()`): ext4 names are bytes and need not be UTF-8, so a path built
/// from [`FsEntry::raw_name`] always finds its entry. NTFS paths must be UTF-8 and are
/// looked up case-insensitively, as Windows does. Empty components and `.` are ignored,
/// `..` is refused. Symbolic links are never followed: a link in the middle of a
/// path gives [`Error::NotADirectory`], and `stat` describes the link itself.
pub trait FileSystem: Send + Sync {
    /// Which file system this is.
    fn kind(&self) -> FsKind;
    /// The entries of a directory, without `.` and `..` (and, on NTFS, without the
    /// metadata files `$MFT`, `$Bitmap`, ... and DOS 8.3 aliases), in on-disk order.
    fn list_dir(&self, path: &[u8]) -> Result<Vec<FsEntry>>;
    /// The entry at `path`; the root's name is empty.
    fn stat(&self, path: &[u8]) -> Result<FsEntry>;
    /// The target of a symbolic link as stored (ext4: bytes; NTFS: UTF-8).
    fn read_link(&self, path: &[u8]) -> Result<Vec<u8>>;
    /// Opens a regular file for reading.
    fn open(&self, path: &[u8]) -> Result<Box<dyn FsFile + '_>>;

    /// Reads up to `buf.len()` bytes of the file at `path` from `offset`; fewer only at the
    /// end of the file. Opens the file each call: use [`FileSystem::open`] for many reads.
    fn read_at(&self, path: &[u8], offset: u64, buf: &mut [u8]) -> Result<usize> {
        let mut file = self.open(path)?;
        read_full(&mut *file, offset, buf)
    }

    /// A sequential reader of the whole file.
    fn read_file(&self, path: &[u8]) -> Result<FileReader<'_>> {
        Ok(FileReader {
            file: self.open(path)?,
            pos: 0,
        })
    }
}

/// An open regular file.
pub trait FsFile {
    /// The file's entry (its size bounds every read).
    fn entry(&self) -> &FsEntry;
    /// Reads from `offset`; returns how many bytes were read, 0 at or past the end. Holes
    /// and unwritten extents read as zeros.
    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize>;
}

/// Fills as much of `buf` as the file has from `offset`.
fn read_full(file: &mut dyn FsFile, offset: u64, buf: &mut [u8]) -> Result<usize> {
    let mut done = 0;
    while done < buf.len() {
        let n = file.read_at(offset + done as u64, &mut buf[done..])?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}

/// `std::io::Read` + `Seek` over an open file, for copying it out.
pub struct FileReader<'a> {
    file: Box<dyn FsFile + 'a>,
    pos: u64,
}

impl FileReader<'_> {
    /// The file's entry.
    pub fn entry(&self) -> &FsEntry {
        self.file.entry()
    }
}

impl io::Read for FileReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(self.pos, buf).map_err(io::Error::other)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl io::Seek for FileReader<'_> {
    fn seek(&mut self, pos: io::SeekFrom) -> io::Result<u64> {
        let target = match pos {
            io::SeekFrom::Start(p) => Some(p),
            io::SeekFrom::End(d) => self.file.entry().size.checked_add_signed(d),
            io::SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let p = target.ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek before the start of the file",
            )
        })?;
        self.pos = p;
        Ok(p)
    }
}

/// Splits a path into its names; `..` and NUL bytes are refused.
pub(crate) fn components(path: &[u8]) -> Result<Vec<&[u8]>> {
    let invalid = |reason| Error::InvalidPath {
        path: show(path),
        reason,
    };
    let mut out = Vec::new();
    for part in path.split(|&b| b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => return Err(invalid("`..` is not accepted; give the path from the root")),
            name if name.contains(&0) => return Err(invalid("a name holds a NUL byte")),
            name if name.len() > 1024 => {
                return Err(invalid("a name is longer than 1024 bytes"));
            }
            name => out.push(name),
        }
    }
    Ok(out)
}

/// A path for messages.
pub(crate) fn show(path: &[u8]) -> String {
    String::from_utf8_lossy(path).into_owned()
}
