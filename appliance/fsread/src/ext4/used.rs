//! The blocks an ext2/3/4 file system uses, from its block bitmaps.
//!
//! The used set is the union of: every bit set in an initialised group's block bitmap;
//! for a BLOCK_UNINIT group, the superblock and descriptor copies its bitmap would hold;
//! for every group, its bitmaps and inode table (already in some bitmap, added again so a
//! stale bitmap cannot drop them); and the first block (boot sector and primary
//! superblock). A file system whose journal still needs replaying is reported as fully
//! used: the journal may log allocations the bitmaps do not show yet.

use std::ops::Range;

use super::{BG_BLOCK_UNINIT, DescReader, INCOMPAT_JOURNAL_DEV, INCOMPAT_RECOVER, Superblock};
use crate::error::{Result, read_exact};
use crate::ranges::RangeSet;
use crate::source::ReadAt;

pub(crate) fn used_ranges(src: &dyn ReadAt) -> Result<Vec<Range<u64>>> {
    let sb = Superblock::read(src)?;
    let bs = sb.block_size;
    let fs_end = sb.blocks_count * bs;
    // Bytes after the file system's end are not its to drop: they are kept.
    let limit = fs_end.max(src.size());
    if sb.has_incompat(INCOMPAT_RECOVER) || sb.has_incompat(INCOMPAT_JOURNAL_DEV) {
        let mut all = RangeSet::new(limit);
        all.add(0, limit);
        return Ok(all.into_sorted());
    }
    let mut used = RangeSet::new(limit);
    // Block 0 holds the boot sector and, with blocks over 1 KiB, the superblock; with
    // 1 KiB blocks the superblock is block 1, which group 0's bitmap covers.
    used.add(0, bs.max(2048));

    let mut descs = DescReader::new(src, &sb);
    let mut bitmap = vec![0u8; bs as usize];
    let cluster_blocks = 1u64 << sb.cluster_bits;
    let table_blocks = sb.inode_table_blocks();
    for group in 0..sb.group_count {
        let desc = descs.get(group)?;
        let group_first = sb.group_first_block(group);
        if desc.flags & BG_BLOCK_UNINIT != 0 && sb.honours_uninit() {
            for (first, count) in sb.base_metadata(group) {
                used.add(first * bs, (first + count) * bs);
            }
        } else {
            read_exact(src, desc.block_bitmap * bs, &mut bitmap)?;
            let clusters = sb.clusters_per_group as usize;
            let mut run_start: Option<usize> = None;
            let mut bit = 0usize;
            while bit <= clusters {
                // Whole bytes that neither start nor end a run are skipped at once.
                if bit.is_multiple_of(8) && bit + 8 <= clusters {
                    let byte = bitmap[bit / 8];
                    if (byte == 0 && run_start.is_none()) || (byte == 0xFF && run_start.is_some()) {
                        bit += 8;
                        continue;
                    }
                }
                let set = bit < clusters && bitmap[bit / 8] & (1 << (bit % 8)) != 0;
                match (set, run_start) {
                    (true, None) => run_start = Some(bit),
                    (false, Some(start)) => {
                        let first = group_first + start as u64 * cluster_blocks;
                        let end = group_first + bit as u64 * cluster_blocks;
                        used.add(first * bs, end * bs);
                        run_start = None;
                    }
                    _ => {}
                }
                bit += 1;
            }
        }
        used.add(desc.block_bitmap * bs, (desc.block_bitmap + 1) * bs);
        used.add(desc.inode_bitmap * bs, (desc.inode_bitmap + 1) * bs);
        used.add(
            desc.inode_table * bs,
            (desc.inode_table + table_blocks) * bs,
        );
    }
    used.add(fs_end, src.size());
    Ok(used.into_sorted())
}
