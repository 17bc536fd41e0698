//! Browsing an ext2/3/4 file system: path lookup, listings, file contents, link targets.

use std::sync::Arc;

use super::dir::{DirRecord, parse_region};
use super::inode::{BlockMap, Inode, Run};
use super::{INCOMPAT_FILETYPE, Superblock};
use crate::entry::{EntryKind, FileSystem, FsEntry, FsFile, FsKind, components, show};
use crate::error::{Error, Result, read_exact};
use crate::source::ReadAt;

const ROOT_INODE: u32 = 2;
const INCOMPAT_COMPRESSION: u32 = 0x1;
/// Directories larger than this are refused rather than read into memory.
const MAX_DIR_BYTES: u64 = 256 << 20;
/// Link targets longer than this are refused (Linux's own limit is 4 KiB).
const MAX_LINK_BYTES: u64 = 64 * 1024;

/// An ext2/3/4 file system opened on a byte source.
pub(crate) struct Ext4 {
    src: Arc<dyn ReadAt>,
    sb: Superblock,
}

impl Ext4 {
    pub(crate) fn open(src: Arc<dyn ReadAt>) -> Result<Ext4> {
        let sb = Superblock::read(&*src)?;
        if sb.has_incompat(INCOMPAT_COMPRESSION) || sb.has_incompat(super::INCOMPAT_JOURNAL_DEV) {
            return Err(Error::Unsupported {
                path: "/".into(),
                what: "an ext2 compressed file system or an external journal device".into(),
            });
        }
        Ok(Ext4 { src, sb })
    }

    fn inode(&self, number: u32) -> Result<Inode> {
        Inode::read(&*self.src, &self.sb, number)
    }

    /// The inode at `path`, and its name (empty for the root). Links are not followed.
    fn resolve(&self, path: &[u8]) -> Result<(Inode, Vec<u8>)> {
        let mut inode = self.inode(ROOT_INODE)?;
        let mut name = Vec::new();
        let parts = components(path)?;
        for (depth, part) in parts.iter().enumerate() {
            if inode.kind() != EntryKind::Dir {
                return Err(Error::NotADirectory {
                    path: show(&parts[..depth].join(&b'/')),
                });
            }
            let record = self
                .records(&inode)?
                .into_iter()
                .find(|r| r.name == *part)
                .ok_or_else(|| Error::NotFound { path: show(path) })?;
            inode = self.inode(record.inode)?;
            name = record.name;
        }
        Ok((inode, name))
    }

    /// The live entries of a directory inode.
    fn records(&self, dir: &Inode) -> Result<Vec<DirRecord>> {
        let has_filetype = self.sb.has_incompat(INCOMPAT_FILETYPE);
        let mut out = Vec::new();
        if dir.has_inline_data() {
            // The first four bytes hold the parent's inode number (the `..` entry).
            parse_region(&dir.i_block[4..], has_filetype, dir.number, &mut out)?;
            parse_region(dir.inline_data_tail()?, has_filetype, dir.number, &mut out)?;
            return Ok(out);
        }
        if dir.size > MAX_DIR_BYTES {
            return Err(Error::Unsupported {
                path: format!("directory inode {}", dir.number),
                what: format!("a directory of {} bytes", dir.size),
            });
        }
        let bs = self.sb.block_size;
        let blocks = dir.size.div_ceil(bs);
        let mut map = BlockMap::new(&*self.src, &self.sb, dir);
        let mut block = vec![0u8; bs as usize];
        let mut logical = 0u64;
        while logical < blocks {
            match map.lookup(logical)? {
                Run::Zeros { len } => logical = logical.saturating_add(len),
                Run::Data { start, len } => {
                    let count = len.min(blocks - logical);
                    for i in 0..count {
                        read_exact(&*self.src, (start + i) * bs, &mut block)?;
                        parse_region(&block, has_filetype, dir.number, &mut out)?;
                    }
                    logical += count;
                }
            }
        }
        Ok(out)
    }

    fn entry(&self, name: Vec<u8>, inode: &Inode) -> FsEntry {
        FsEntry {
            name: String::from_utf8_lossy(&name).into_owned(),
            raw_name: name,
            kind: inode.kind(),
            size: inode.size,
            id: u64::from(inode.number),
            links: u32::from(inode.links),
            mode: Some(u32::from(inode.mode)),
            uid: Some(inode.uid),
            gid: Some(inode.gid),
            mtime_ns: inode.mtime_ns,
            ctime_ns: inode.ctime_ns,
            atime_ns: inode.atime_ns,
            btime_ns: inode.btime_ns,
            ntfs_attributes: None,
        }
    }

    /// Reads an inode's data from `offset`, up to its size. Holes and unwritten extents
    /// give zeros.
    fn read_data(&self, inode: &Inode, offset: u64, buf: &mut [u8]) -> Result<usize> {
        if offset >= inode.size || buf.is_empty() {
            return Ok(0);
        }
        let want = (inode.size - offset).min(buf.len() as u64) as usize;
        let buf = &mut buf[..want];
        if inode.has_inline_data() {
            let tail = inode.inline_data_tail()?;
            for (i, byte) in buf.iter_mut().enumerate() {
                // offset + i < size; past the stored bytes the file reads as zeros.
                let at = offset as usize + i;
                *byte = match at {
                    0..60 => inode.i_block[at],
                    _ => tail.get(at - 60).copied().unwrap_or(0),
                };
            }
            return Ok(want);
        }
        let bs = self.sb.block_size;
        let mut map = BlockMap::new(&*self.src, &self.sb, inode);
        let mut done = 0usize;
        while done < want {
            let pos = offset + done as u64;
            let within = pos % bs;
            let run = map.lookup(pos / bs)?;
            let run_blocks = match run {
                Run::Data { len, .. } | Run::Zeros { len } => len,
            };
            let run_bytes = run_blocks.saturating_mul(bs) - within;
            let n = run_bytes.min((want - done) as u64) as usize;
            let out = &mut buf[done..done + n];
            match run {
                Run::Zeros { .. } => out.fill(0),
                // BlockMap::lookup checked start + len <= blocks_count.
                Run::Data { start, .. } => read_exact(&*self.src, start * bs + within, out)?,
            }
            done += n;
        }
        Ok(want)
    }
}

impl FileSystem for Ext4 {
    fn kind(&self) -> FsKind {
        FsKind::Ext4
    }

    fn list_dir(&self, path: &[u8]) -> Result<Vec<FsEntry>> {
        let (dir, _) = self.resolve(path)?;
        if dir.kind() != EntryKind::Dir {
            return Err(Error::NotADirectory { path: show(path) });
        }
        self.records(&dir)?
            .into_iter()
            .map(|record| {
                let inode = self.inode(record.inode)?;
                Ok(self.entry(record.name, &inode))
            })
            .collect()
    }

    fn stat(&self, path: &[u8]) -> Result<FsEntry> {
        let (inode, name) = self.resolve(path)?;
        Ok(self.entry(name, &inode))
    }

    fn read_link(&self, path: &[u8]) -> Result<Vec<u8>> {
        let (inode, _) = self.resolve(path)?;
        if inode.kind() != EntryKind::Symlink {
            return Err(Error::NotASymlink { path: show(path) });
        }
        if inode.size > MAX_LINK_BYTES {
            return Err(Error::corrupt(
                "ext4 symbolic link",
                format!("{}: target of {} bytes", show(path), inode.size),
            ));
        }
        // Targets under 60 bytes live in i_block itself ("fast" links).
        if inode.size < 60 && !inode.has_inline_data() {
            return Ok(inode.i_block[..inode.size as usize].to_vec());
        }
        if inode.is_encrypted() {
            return Err(Error::Unsupported {
                path: show(path),
                what: "an encrypted link target".into(),
            });
        }
        let mut target = vec![0u8; inode.size as usize];
        let n = self.read_data(&inode, 0, &mut target)?;
        target.truncate(n);
        Ok(target)
    }

    fn open(&self, path: &[u8]) -> Result<Box<dyn FsFile + '_>> {
        let (inode, name) = self.resolve(path)?;
        match inode.kind() {
            EntryKind::File => {}
            EntryKind::Dir => return Err(Error::IsADirectory { path: show(path) }),
            _ => {
                return Err(Error::Unsupported {
                    path: show(path),
                    what: "reading the contents of a link or special file".into(),
                });
            }
        }
        if inode.is_encrypted() {
            return Err(Error::Unsupported {
                path: show(path),
                what: "an encrypted file (fscrypt)".into(),
            });
        }
        let entry = self.entry(name, &inode);
        Ok(Box::new(Ext4File {
            fs: self,
            inode,
            entry,
        }))
    }
}

struct Ext4File<'a> {
    fs: &'a Ext4,
    inode: Inode,
    entry: FsEntry,
}

impl FsFile for Ext4File<'_> {
    fn entry(&self) -> &FsEntry {
        &self.entry
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        self.fs.read_data(&self.inode, offset, buf)
    }
}
