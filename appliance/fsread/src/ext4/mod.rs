//! ext2/ext3/ext4: superblock and block group descriptors, shared by the used-blocks scan
//! and the file browser.
//!
//! Layout facts come from the kernel's ext4 disk-layout documentation. Every number read
//! from disk is checked before it sizes a read or a loop; descriptors are read one block at
//! a time, never all at once, so a hostile group count cannot ask for a huge allocation.

mod dir;
mod fs;
mod inode;
mod used;

pub(crate) use fs::Ext4;
pub(crate) use used::used_ranges;

use crate::error::{Error, Result, read_exact, read_vec};
use crate::source::ReadAt;

const SUPERBLOCK_OFFSET: u64 = 1024;
const MAGIC: u16 = 0xEF53;

// Feature bits (compat, incompat, ro_compat) this reader looks at.
const COMPAT_SPARSE_SUPER2: u32 = 0x200;
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_64BIT: u32 = 0x80;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_GDT_CSUM: u32 = 0x10;
const RO_COMPAT_BIGALLOC: u32 = 0x200;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;

/// Group descriptor flag: the block bitmap was never written (its content is implied).
const BG_BLOCK_UNINIT: u16 = 0x2;

/// True when the source holds an ext2/3/4 superblock.
pub(crate) fn detect(src: &dyn ReadAt) -> bool {
    let mut magic = [0u8; 2];
    src.read_at(SUPERBLOCK_OFFSET + 0x38, &mut magic).is_ok() && u16::from_le_bytes(magic) == MAGIC
}

/// The superblock fields this crate uses, validated.
#[derive(Debug, Clone)]
pub(crate) struct Superblock {
    pub(crate) inodes_count: u32,
    pub(crate) blocks_count: u64,
    pub(crate) first_data_block: u64,
    pub(crate) block_size: u64,
    /// log2(blocks per cluster): 0 unless bigalloc.
    pub(crate) cluster_bits: u32,
    pub(crate) blocks_per_group: u64,
    pub(crate) clusters_per_group: u64,
    pub(crate) inodes_per_group: u32,
    pub(crate) inode_size: u64,
    pub(crate) feature_compat: u32,
    pub(crate) feature_incompat: u32,
    pub(crate) feature_ro_compat: u32,
    pub(crate) reserved_gdt_blocks: u64,
    pub(crate) desc_size: u64,
    pub(crate) first_meta_bg: u64,
    pub(crate) backup_bgs: [u64; 2],
    pub(crate) group_count: u64,
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn hilo(hi: u32, lo: u32) -> u64 {
    (u64::from(hi) << 32) | u64::from(lo)
}

impl Superblock {
    pub(crate) fn read(src: &dyn ReadAt) -> Result<Superblock> {
        let sb = read_vec(src, SUPERBLOCK_OFFSET, 1024)?;
        let bad = |detail: String| Err(Error::corrupt("ext4 superblock", detail));
        if le16(&sb, 0x38) != MAGIC {
            return bad("no ext2/3/4 magic number".into());
        }
        let feature_compat = le32(&sb, 0x5C);
        let feature_incompat = le32(&sb, 0x60);
        let feature_ro_compat = le32(&sb, 0x64);
        let is_64bit = feature_incompat & INCOMPAT_64BIT != 0;

        let log_block = le32(&sb, 0x18);
        if log_block > 6 {
            return bad(format!("block size 2^{} KiB", log_block));
        }
        let block_size = 1024u64 << log_block;
        let log_cluster = le32(&sb, 0x1C);
        let cluster_bits = if feature_ro_compat & RO_COMPAT_BIGALLOC != 0 {
            if log_cluster < log_block || log_cluster - log_block > 16 {
                return bad(format!("cluster size 2^{log_cluster} KiB"));
            }
            log_cluster - log_block
        } else {
            0
        };
        let blocks_count = hilo(if is_64bit { le32(&sb, 0x150) } else { 0 }, le32(&sb, 0x4));
        let first_data_block = u64::from(le32(&sb, 0x14));
        let blocks_per_group = u64::from(le32(&sb, 0x20));
        let clusters_per_group = u64::from(le32(&sb, 0x24));
        let inodes_per_group = le32(&sb, 0x28);
        let inodes_count = le32(&sb, 0x0);
        let rev_level = le32(&sb, 0x4C);
        let inode_size = if rev_level == 0 {
            128
        } else {
            u64::from(le16(&sb, 0x58))
        };
        let bits_per_bitmap = 8 * block_size;

        if cluster_bits == 0 && clusters_per_group != blocks_per_group {
            return bad("clusters per group differ from blocks per group without bigalloc".into());
        }
        if clusters_per_group < 8 || clusters_per_group > bits_per_bitmap {
            return bad(format!("{clusters_per_group} clusters per group"));
        }
        if blocks_per_group != clusters_per_group << cluster_bits {
            return bad(format!("{blocks_per_group} blocks per group"));
        }
        if inodes_per_group == 0 || u64::from(inodes_per_group) > bits_per_bitmap {
            return bad(format!("{inodes_per_group} inodes per group"));
        }
        if !inode_size.is_power_of_two() || inode_size < 128 || inode_size > block_size {
            return bad(format!("inode size {inode_size}"));
        }
        if first_data_block > 1 || (block_size > 1024 && first_data_block != 0) {
            return bad(format!("first data block {first_data_block}"));
        }
        if blocks_count <= first_data_block {
            return bad(format!("{blocks_count} blocks"));
        }
        let fs_bytes = blocks_count.checked_mul(block_size);
        match fs_bytes {
            Some(bytes) if bytes <= src.size() => {}
            _ => {
                return bad(format!(
                    "{blocks_count} blocks of {block_size} bytes do not fit the source of {} bytes",
                    src.size()
                ));
            }
        }
        let group_count = (blocks_count - first_data_block).div_ceil(blocks_per_group);
        if u64::from(inodes_count) > group_count * u64::from(inodes_per_group) {
            return bad(format!("{inodes_count} inodes in {group_count} groups"));
        }
        let desc_size = if is_64bit {
            u64::from(le16(&sb, 0xFE))
        } else {
            32
        };
        if desc_size < 32 || !desc_size.is_power_of_two() || desc_size > 1024 {
            return bad(format!("group descriptor size {desc_size}"));
        }
        Ok(Superblock {
            inodes_count,
            blocks_count,
            first_data_block,
            block_size,
            cluster_bits,
            blocks_per_group,
            clusters_per_group,
            inodes_per_group,
            inode_size,
            feature_compat,
            feature_incompat,
            feature_ro_compat,
            reserved_gdt_blocks: u64::from(le16(&sb, 0xCE)),
            desc_size,
            first_meta_bg: u64::from(le32(&sb, 0x104)),
            backup_bgs: [u64::from(le32(&sb, 0x24C)), u64::from(le32(&sb, 0x250))],
            group_count,
        })
    }

    pub(crate) fn has_incompat(&self, bit: u32) -> bool {
        self.feature_incompat & bit != 0
    }

    fn has_ro_compat(&self, bit: u32) -> bool {
        self.feature_ro_compat & bit != 0
    }

    /// Group descriptors per block.
    fn descs_per_block(&self) -> u64 {
        self.block_size / self.desc_size
    }

    /// First block of a group.
    fn group_first_block(&self, group: u64) -> u64 {
        self.first_data_block + group * self.blocks_per_group
    }

    /// Where a group's superblock copy (if any) sits. Group 0's superblock is always at
    /// byte 1024: block 1 with 1 KiB blocks, even with bigalloc, whose first data block is
    /// 0 (e2fsprogs special-cases the same).
    fn group_super_block(&self, group: u64) -> u64 {
        if group == 0 {
            u64::from(self.block_size == 1024)
        } else {
            self.group_first_block(group)
        }
    }

    /// Whether a group holds a backup superblock (and, without meta_bg, a GDT copy).
    fn has_super(&self, group: u64) -> bool {
        if group == 0 {
            return true;
        }
        if self.feature_compat & COMPAT_SPARSE_SUPER2 != 0 {
            return group == self.backup_bgs[0] || group == self.backup_bgs[1];
        }
        if !self.has_ro_compat(RO_COMPAT_SPARSE_SUPER) || group == 1 {
            return true;
        }
        [3u64, 5, 7].iter().any(|&base| is_power_of(group, base))
    }

    /// Blocks of the group descriptor table in its classic place (all of it without
    /// meta_bg; the first `first_meta_bg` blocks with it).
    fn old_desc_blocks(&self) -> u64 {
        if self.has_incompat(INCOMPAT_META_BG) {
            self.first_meta_bg
        } else {
            self.group_count.div_ceil(self.descs_per_block()) + self.reserved_gdt_blocks
        }
    }

    /// The block holding group `group`'s descriptor and the offset inside it.
    fn descriptor_location(&self, group: u64) -> (u64, u64) {
        let per_block = self.descs_per_block();
        let desc_block = group / per_block;
        let offset = (group % per_block) * self.desc_size;
        let gdt_start = self.group_super_block(0) + 1;
        if !self.has_incompat(INCOMPAT_META_BG) || desc_block < self.first_meta_bg {
            return (gdt_start + desc_block, offset);
        }
        // meta_bg: each meta group's descriptor block sits in its first group, after the
        // backup superblock if that group has one.
        let first_group = desc_block * per_block;
        let block = self.group_super_block(first_group) + u64::from(self.has_super(first_group));
        (block, offset)
    }

    /// Blocks every group keeps for the superblock and descriptor copies, as
    /// (first block, count) runs. This is what a BLOCK_UNINIT group's bitmap implies.
    fn base_metadata(&self, group: u64) -> Vec<(u64, u64)> {
        let mut runs = Vec::new();
        let first = self.group_super_block(group);
        let has_super = self.has_super(group);
        if has_super {
            runs.push((first, 1 + self.old_desc_blocks()));
        }
        if self.has_incompat(INCOMPAT_META_BG) {
            let per_block = self.descs_per_block();
            let meta_group = group / per_block;
            let index = group % per_block;
            if meta_group >= self.first_meta_bg
                && (index == 0 || index == 1 || index == per_block - 1)
            {
                runs.push((first + u64::from(has_super), 1));
            }
        }
        runs
    }
}

fn is_power_of(mut n: u64, base: u64) -> bool {
    while n > 1 && n.is_multiple_of(base) {
        n /= base;
    }
    n == 1
}

/// One block group descriptor, validated against the file system's size.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupDesc {
    pub(crate) block_bitmap: u64,
    pub(crate) inode_bitmap: u64,
    pub(crate) inode_table: u64,
    pub(crate) flags: u16,
}

/// Reads group descriptors, keeping the last descriptor block it read.
pub(crate) struct DescReader<'a> {
    src: &'a dyn ReadAt,
    sb: &'a Superblock,
    cached_block: Option<u64>,
    block: Vec<u8>,
}

impl<'a> DescReader<'a> {
    pub(crate) fn new(src: &'a dyn ReadAt, sb: &'a Superblock) -> DescReader<'a> {
        DescReader {
            src,
            sb,
            cached_block: None,
            block: vec![0u8; sb.block_size as usize],
        }
    }

    pub(crate) fn get(&mut self, group: u64) -> Result<GroupDesc> {
        let sb = self.sb;
        let (block, offset) = sb.descriptor_location(group);
        if block >= sb.blocks_count {
            return Err(Error::corrupt(
                "ext4 group descriptor table",
                format!("descriptor of group {group} would lie in block {block}, past the end"),
            ));
        }
        if self.cached_block != Some(block) {
            self.cached_block = None;
            read_exact(self.src, block * sb.block_size, &mut self.block)?;
            self.cached_block = Some(block);
        }
        // offset + desc_size <= block_size because desc_size divides into descs_per_block.
        let d = &self.block[offset as usize..(offset + sb.desc_size) as usize];
        let wide = sb.desc_size >= 64;
        let hi = |at: usize| if wide { le32(d, at) } else { 0 };
        let desc = GroupDesc {
            block_bitmap: hilo(hi(0x20), le32(d, 0x0)),
            inode_bitmap: hilo(hi(0x24), le32(d, 0x4)),
            inode_table: hilo(hi(0x28), le32(d, 0x8)),
            flags: le16(d, 0x12),
        };
        let table_blocks = sb.inode_table_blocks();
        let inside = |b: u64, n: u64| b.checked_add(n).is_some_and(|end| end <= sb.blocks_count);
        if !inside(desc.block_bitmap, 1)
            || !inside(desc.inode_bitmap, 1)
            || !inside(desc.inode_table, table_blocks)
        {
            return Err(Error::corrupt(
                "ext4 group descriptor",
                format!("group {group} points past the end of the file system"),
            ));
        }
        Ok(desc)
    }
}

impl Superblock {
    /// Blocks of one group's inode table.
    pub(crate) fn inode_table_blocks(&self) -> u64 {
        (u64::from(self.inodes_per_group) * self.inode_size).div_ceil(self.block_size)
    }

    /// Whether the BLOCK_UNINIT flag means anything (it does only with group checksums).
    fn honours_uninit(&self) -> bool {
        self.has_ro_compat(RO_COMPAT_GDT_CSUM) || self.has_ro_compat(RO_COMPAT_METADATA_CSUM)
    }
}
