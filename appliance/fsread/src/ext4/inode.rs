//! Inodes: their fields, and the map from a file's logical blocks to disk blocks (extent
//! trees, with unwritten extents reading as zeros, and the ext2/3 indirect block map).

use super::{DescReader, Superblock, le16, le32};
use crate::entry::EntryKind;
use crate::error::{Error, Result, read_exact};
use crate::source::ReadAt;

const FLAG_ENCRYPT: u32 = 0x800;
const FLAG_EXTENTS: u32 = 0x8_0000;
const FLAG_INLINE_DATA: u32 = 0x1000_0000;

const EXTENT_MAGIC: u16 = 0xF30A;
/// The kernel's limit on extent tree depth.
const MAX_EXTENT_DEPTH: u16 = 5;
/// An extent length above this marks an unwritten (preallocated) extent.
const EXT_INIT_MAX_LEN: u16 = 32_768;

/// The inode fields browsing needs.
#[derive(Debug, Clone)]
pub(crate) struct Inode {
    pub(crate) number: u32,
    pub(crate) mode: u16,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) size: u64,
    pub(crate) links: u16,
    pub(crate) flags: u32,
    pub(crate) atime_ns: Option<i64>,
    pub(crate) ctime_ns: Option<i64>,
    pub(crate) mtime_ns: Option<i64>,
    pub(crate) btime_ns: Option<i64>,
    /// The 60-byte `i_block` area: extent root, block pointers, fast link or inline data.
    pub(crate) i_block: [u8; 60],
    /// The bytes after the 128-byte base inode, for in-inode extended attributes.
    extra: Vec<u8>,
}

impl Inode {
    pub(crate) fn read(src: &dyn ReadAt, sb: &Superblock, number: u32) -> Result<Inode> {
        if number == 0 || number > sb.inodes_count {
            return Err(Error::corrupt(
                "ext4 directory entry",
                format!("inode number {number} outside 1..={}", sb.inodes_count),
            ));
        }
        let index = u64::from(number - 1);
        let group = index / u64::from(sb.inodes_per_group);
        let slot = index % u64::from(sb.inodes_per_group);
        let desc = DescReader::new(src, sb).get(group)?;
        // The descriptor reader checked that the whole inode table lies inside the file
        // system, and slot < inodes_per_group, so this offset is inside it too.
        let offset = desc.inode_table * sb.block_size + slot * sb.inode_size;
        let mut raw = vec![0u8; sb.inode_size as usize];
        read_exact(src, offset, &mut raw)?;
        Ok(Inode::parse(number, &raw))
    }

    fn parse(number: u32, raw: &[u8]) -> Inode {
        let extra_isize = if raw.len() > 128 {
            (le16(raw, 0x80) as usize).min(raw.len() - 128)
        } else {
            0
        };
        // An extra field exists when the extra area (starting at 0x80) covers it.
        let has = |end: usize| raw.len() > 128 && 0x80 + extra_isize >= end;
        // Seconds may reach 2^34 with the epoch bits: past i64 nanoseconds (year 2262)
        // the time is reported as unknown rather than wrapped.
        let time = |lo_at: usize, extra_at: usize| -> Option<i64> {
            let secs = i64::from(le32(raw, lo_at) as i32);
            let (secs, nanos) = if has(extra_at + 4) {
                let extra = le32(raw, extra_at);
                (
                    secs + (i64::from(extra & 3) << 32),
                    i64::from(extra >> 2).min(999_999_999),
                )
            } else {
                (secs, 0)
            };
            secs.checked_mul(1_000_000_000)?.checked_add(nanos)
        };
        let mut i_block = [0u8; 60];
        i_block.copy_from_slice(&raw[0x28..0x64]);
        Inode {
            number,
            mode: le16(raw, 0x0),
            uid: u32::from(le16(raw, 0x2)) | (u32::from(le16(raw, 0x78)) << 16),
            gid: u32::from(le16(raw, 0x18)) | (u32::from(le16(raw, 0x7A)) << 16),
            size: u64::from(le32(raw, 0x4)) | (u64::from(le32(raw, 0x6C)) << 32),
            links: le16(raw, 0x1A),
            flags: le32(raw, 0x20),
            atime_ns: time(0x8, 0x8C),
            ctime_ns: time(0xC, 0x84),
            mtime_ns: time(0x10, 0x88),
            btime_ns: if has(0x98) { time(0x90, 0x94) } else { None },
            i_block,
            extra: raw.get(0x80 + extra_isize..).unwrap_or(&[]).to_vec(),
        }
    }

    pub(crate) fn kind(&self) -> EntryKind {
        match self.mode & 0xF000 {
            0x8000 => EntryKind::File,
            0x4000 => EntryKind::Dir,
            0xA000 => EntryKind::Symlink,
            _ => EntryKind::Other,
        }
    }

    pub(crate) fn is_encrypted(&self) -> bool {
        self.flags & FLAG_ENCRYPT != 0
    }

    pub(crate) fn has_inline_data(&self) -> bool {
        self.flags & FLAG_INLINE_DATA != 0
    }

    /// The value of the in-inode extended attribute `system.data`, where inline data
    /// continues past `i_block`. Empty when absent.
    pub(crate) fn inline_data_tail(&self) -> Result<&[u8]> {
        let x = &self.extra;
        if x.len() < 4 || le32(x, 0) != 0xEA02_0000 {
            return Ok(&[]);
        }
        let entries = &x[4..];
        let mut at = 0usize;
        // Each entry takes at least 16 bytes, so this loop ends within entries.len()/16.
        while at + 16 <= entries.len() {
            let name_len = entries[at] as usize;
            let name_index = entries[at + 1];
            if name_len == 0 && name_index == 0 {
                break;
            }
            let value_offs = le16(entries, at + 2) as usize;
            let value_inum = le32(entries, at + 4);
            let value_size = le32(entries, at + 8) as usize;
            let name = entries.get(at + 16..at + 16 + name_len).ok_or_else(|| {
                Error::corrupt(
                    "ext4 inline xattr",
                    format!("inode {}: name runs past", self.number),
                )
            })?;
            if name_index == 7 && name == b"data" && value_inum == 0 {
                return entries
                    .get(value_offs..value_offs + value_size)
                    .ok_or_else(|| {
                        Error::corrupt(
                            "ext4 inline data",
                            format!("inode {}: value runs past the inode", self.number),
                        )
                    });
            }
            at += (16 + name_len).div_ceil(4) * 4;
        }
        Ok(&[])
    }
}

/// Where a run of logical blocks lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Run {
    /// `len` blocks on disk from `start`.
    Data { start: u64, len: u64 },
    /// `len` blocks that read as zeros (a hole, or an unwritten extent).
    Zeros { len: u64 },
}

/// Maps logical blocks of one inode to disk blocks.
pub(crate) struct BlockMap<'a> {
    src: &'a dyn ReadAt,
    sb: &'a Superblock,
    inode: &'a Inode,
    node: Vec<u8>,
}

impl<'a> BlockMap<'a> {
    pub(crate) fn new(src: &'a dyn ReadAt, sb: &'a Superblock, inode: &'a Inode) -> BlockMap<'a> {
        BlockMap {
            src,
            sb,
            inode,
            node: vec![0u8; sb.block_size as usize],
        }
    }

    /// The run that starts at logical block `block` (at least one block long).
    pub(crate) fn lookup(&mut self, block: u64) -> Result<Run> {
        let run = if self.inode.flags & FLAG_EXTENTS != 0 {
            self.lookup_extent(block)?
        } else {
            self.lookup_indirect(block)?
        };
        if let Run::Data { start, len } = run
            && (start == 0
                || start
                    .checked_add(len)
                    .is_none_or(|end| end > self.sb.blocks_count))
        {
            return Err(self.corrupt(format!(
                "data blocks {start}+{len} lie outside the file system"
            )));
        }
        Ok(run)
    }

    fn corrupt(&self, detail: String) -> Error {
        Error::corrupt(
            "ext4 block map",
            format!("inode {}: {detail}", self.inode.number),
        )
    }

    fn read_node(&mut self, block: u64) -> Result<()> {
        if block == 0 || block >= self.sb.blocks_count {
            return Err(self.corrupt(format!("tree block {block} outside the file system")));
        }
        read_exact(self.src, block * self.sb.block_size, &mut self.node)
    }

    /// Walks the extent tree from the root in `i_block` down to the leaf covering `block`.
    /// Each level is one read; the depth is bounded by the kernel's limit.
    fn lookup_extent(&mut self, block: u64) -> Result<Run> {
        // Logical blocks are 32-bit: past that, everything is a hole.
        let Ok(target) = u32::try_from(block) else {
            return Ok(Run::Zeros {
                len: u64::MAX - block,
            });
        };
        let mut node: Vec<u8> = self.inode.i_block.to_vec();
        // The first logical block not covered by this subtree.
        let mut upper: u64 = 1 << 32;
        let mut expected_depth: Option<u16> = None;
        loop {
            if node.len() < 12 || le16(&node, 0) != EXTENT_MAGIC {
                return Err(self.corrupt("extent node without magic number".into()));
            }
            let entries = le16(&node, 2) as usize;
            let depth = le16(&node, 6);
            if depth > MAX_EXTENT_DEPTH || expected_depth.is_some_and(|d| d != depth) {
                return Err(self.corrupt(format!("extent node of depth {depth}")));
            }
            if 12 + entries * 12 > node.len() {
                return Err(self.corrupt(format!("{entries} entries overflow the extent node")));
            }
            let entry = |i: usize| &node[12 + i * 12..24 + i * 12];
            // The last entry starting at or before the target, and the start of the next.
            let mut found: Option<usize> = None;
            let mut next_start = upper;
            for i in 0..entries {
                let start = le32(entry(i), 0);
                if start <= target {
                    found = Some(i);
                } else {
                    next_start = next_start.min(u64::from(start));
                    break;
                }
            }
            if depth == 0 {
                if let Some(i) = found {
                    let e = entry(i);
                    let first = u64::from(le32(e, 0));
                    let raw_len = le16(e, 4);
                    let (len, unwritten) = if raw_len > EXT_INIT_MAX_LEN {
                        (u64::from(raw_len - EXT_INIT_MAX_LEN), true)
                    } else {
                        (u64::from(raw_len), false)
                    };
                    let disk = (u64::from(le16(e, 6)) << 32) | u64::from(le32(e, 8));
                    if block < first + len {
                        let skip = block - first;
                        let left = len - skip;
                        return Ok(if unwritten {
                            Run::Zeros { len: left }
                        } else {
                            Run::Data {
                                start: disk + skip,
                                len: left,
                            }
                        });
                    }
                }
                return Ok(Run::Zeros {
                    len: next_start.saturating_sub(block).max(1),
                });
            }
            let Some(i) = found else {
                return Ok(Run::Zeros {
                    len: next_start.saturating_sub(block).max(1),
                });
            };
            let e = entry(i);
            let child = (u64::from(le16(e, 8)) << 32) | u64::from(le32(e, 4));
            upper = next_start;
            expected_depth = Some(depth - 1);
            self.read_node(child)?;
            node.clone_from(&self.node);
        }
    }

    /// The ext2/3 map: 12 direct pointers, then single, double and triple indirect blocks.
    fn lookup_indirect(&mut self, block: u64) -> Result<Run> {
        let per_block = self.sb.block_size / 4;
        let i_block = self.inode.i_block;
        let ptr = |at: usize| u64::from(le32(&i_block, at * 4));
        let to_run = |p: u64| {
            if p == 0 {
                Run::Zeros { len: 1 }
            } else {
                Run::Data { start: p, len: 1 }
            }
        };
        if block < 12 {
            return Ok(to_run(ptr(block as usize)));
        }
        let mut rest = block - 12;
        let mut span = per_block;
        for level in 1..=3usize {
            if rest < span {
                let mut table = ptr(11 + level);
                let mut stride = span / per_block;
                for _ in 0..level {
                    if table == 0 {
                        return Ok(Run::Zeros { len: 1 });
                    }
                    self.read_node(table)?;
                    let index = (rest / stride) as usize;
                    table = u64::from(le32(&self.node, index * 4));
                    rest %= stride;
                    stride /= per_block;
                    if stride == 0 {
                        stride = 1;
                    }
                }
                return Ok(to_run(table));
            }
            rest -= span;
            span = span.saturating_mul(per_block);
        }
        Ok(Run::Zeros { len: 1 })
    }
}
