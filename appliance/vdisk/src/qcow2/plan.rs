//! The layout of a qcow2 file, computed before its first byte is written.
//!
//! The file is a run of clusters, in this order:
//!
//! | clusters | what |
//! |---|---|
//! | 1 | header (104 bytes), the end-of-extensions marker, zeros |
//! | `ceil(l1_entries * 8 / cluster_size)` | the L1 table (none for an empty disk) |
//! | `refcount_table_clusters` | the refcount table |
//! | `refcount_blocks` | the refcount blocks, covering every cluster of the file |
//! | one per L1 entry that maps data | the L2 tables, in guest order |
//! | one per allocated cluster | the data, in guest order |
//!
//! Every cluster of the file is used exactly once, so every refcount is 1 and the refcount
//! blocks are "1 for each cluster below the end of the file": no map of them is kept.
//! The refcount blocks must also count the refcount table and themselves, so their number
//! is the smallest that covers the file it is part of (see [`refcount_layout`]).

use crate::cluster_set::ClusterSet;
use crate::error::PlanError;
use crate::qcow2::{MAX_CLUSTER_BITS, MIN_CLUSTER_BITS};

const SECTOR: u64 = 512;
/// QEMU refuses L1 tables over 32 MiB.
const MAX_L1_BYTES: u64 = 32 << 20;
/// QEMU refuses refcount tables over 8 MiB.
const MAX_REFCOUNT_TABLE_BYTES: u64 = 8 << 20;
/// L1 and L2 entries hold host offsets below 2^56.
const MAX_FILE_LEN: u64 = 1 << 56;
/// Refcounts are 16 bits wide (refcount_order 4), QEMU's default.
pub(super) const REFCOUNT_BYTES: u64 = 2;

/// The complete layout of one qcow2 file: what `write_qcow2` emits and how long it is.
///
/// Holds one bit per guest cluster (the allocation map) and a few counters:
/// `virtual_size / cluster_size / 8` bytes, 4 MiB for a 2 TiB disk in 64 KiB clusters.
#[derive(Debug)]
pub struct Qcow2Plan {
    virtual_size: u64,
    cluster_bits: u32,
    allocated: ClusterSet,
    allocated_count: u64,
    l1_entries: u64,
    l1_clusters: u64,
    refcount_table_clusters: u64,
    refcount_blocks: u64,
    l2_tables: u64,
    total_clusters: u64,
}

impl Qcow2Plan {
    /// Lays out a disk of `virtual_size` bytes in clusters of `1 << cluster_bits` bytes
    /// ([`DEFAULT_CLUSTER_BITS`](crate::DEFAULT_CLUSTER_BITS) = 64 KiB), whose guest
    /// clusters `allocated` (strictly increasing indexes) hold data; every other cluster
    /// reads as zeros.
    ///
    /// Refuses a size that is not a whole number of sectors, cluster bits outside 9..=21,
    /// indexes out of order or past the end, and disks whose tables QEMU would not open.
    pub fn new(
        virtual_size: u64,
        cluster_bits: u32,
        allocated: impl IntoIterator<Item = u64>,
    ) -> Result<Qcow2Plan, PlanError> {
        if !(MIN_CLUSTER_BITS..=MAX_CLUSTER_BITS).contains(&cluster_bits) {
            return Err(PlanError::ClusterBits { bits: cluster_bits });
        }
        if !virtual_size.is_multiple_of(SECTOR) {
            return Err(PlanError::UnalignedSize { virtual_size });
        }
        let cluster_size = 1u64 << cluster_bits;
        let too_large = |what| PlanError::TooLarge {
            virtual_size,
            cluster_size,
            what,
        };
        let guest_clusters = virtual_size.div_ceil(cluster_size);
        let l2_entries = cluster_size / 8;
        let l1_entries = guest_clusters.div_ceil(l2_entries);
        if l1_entries * 8 > MAX_L1_BYTES {
            return Err(too_large("an L1 table over 32 MiB"));
        }

        let mut set = ClusterSet::new(guest_clusters).ok_or(PlanError::OutOfMemory {
            virtual_size,
            bytes: guest_clusters.div_ceil(8),
        })?;
        let mut allocated_count = 0;
        let mut l2_tables = 0;
        let mut previous: Option<u64> = None;
        for index in allocated {
            if index >= guest_clusters {
                return Err(PlanError::PastEnd {
                    index,
                    virtual_size,
                    clusters: guest_clusters,
                    cluster_size,
                });
            }
            if let Some(previous) = previous {
                if index <= previous {
                    return Err(PlanError::NotIncreasing { previous, index });
                }
                if index / l2_entries != previous / l2_entries {
                    l2_tables += 1;
                }
            } else {
                l2_tables = 1;
            }
            set.insert(index);
            allocated_count += 1;
            previous = Some(index);
        }

        let l1_clusters = (l1_entries * 8).div_ceil(cluster_size);
        // Bounded: guest_clusters < 2^55 and l1_entries <= 2^22, so no sum below overflows.
        let counted = 1 + l1_clusters + l2_tables + allocated_count;
        let (refcount_table_clusters, refcount_blocks) = refcount_layout(counted, cluster_size);
        if refcount_table_clusters * cluster_size > MAX_REFCOUNT_TABLE_BYTES {
            return Err(too_large("a refcount table over 8 MiB"));
        }
        let total_clusters = counted + refcount_table_clusters + refcount_blocks;
        if total_clusters > MAX_FILE_LEN >> cluster_bits {
            return Err(too_large("a file over 64 PiB"));
        }
        Ok(Qcow2Plan {
            virtual_size,
            cluster_bits,
            allocated: set,
            allocated_count,
            l1_entries,
            l1_clusters,
            refcount_table_clusters,
            refcount_blocks,
            l2_tables,
            total_clusters,
        })
    }

    /// The disk's size as the guest sees it, in bytes.
    pub fn virtual_size(&self) -> u64 {
        self.virtual_size
    }

    /// Bytes per cluster (a power of two, 512 to 2 MiB).
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// log2 of [`cluster_size`](Self::cluster_size).
    pub fn cluster_bits(&self) -> u32 {
        self.cluster_bits
    }

    /// Length of the whole qcow2 file in bytes (the `Content-Length` of a download).
    pub fn total_len(&self) -> u64 {
        self.total_clusters << self.cluster_bits
    }

    /// Offset of the first data cluster: the length of everything `write_metadata` writes.
    pub fn data_offset(&self) -> u64 {
        self.data_start() << self.cluster_bits
    }

    /// How many guest clusters hold data.
    pub fn allocated_count(&self) -> u64 {
        self.allocated_count
    }

    /// The allocated guest clusters in increasing order: the order their bytes follow the
    /// metadata in the file.
    pub fn allocated_clusters(&self) -> impl Iterator<Item = u64> + '_ {
        self.allocated.iter()
    }

    /// How many bytes of guest cluster `index` lie inside the disk: the cluster size, or
    /// less for the last cluster of a disk whose size is not a multiple of it.
    pub fn cluster_len(&self, index: u64) -> u64 {
        let start = index << self.cluster_bits;
        self.virtual_size
            .saturating_sub(start)
            .min(self.cluster_size())
    }

    /// Bytes of memory the plan holds (its allocation map).
    pub fn memory(&self) -> usize {
        self.allocated.memory() + size_of::<Self>()
    }

    pub(super) fn l1_entries(&self) -> u64 {
        self.l1_entries
    }

    pub(super) fn l1_start(&self) -> u64 {
        1
    }

    pub(super) fn refcount_table_start(&self) -> u64 {
        self.l1_start() + self.l1_clusters
    }

    pub(super) fn refcount_table_clusters(&self) -> u64 {
        self.refcount_table_clusters
    }

    pub(super) fn refcount_blocks_start(&self) -> u64 {
        self.refcount_table_start() + self.refcount_table_clusters
    }

    pub(super) fn refcount_blocks(&self) -> u64 {
        self.refcount_blocks
    }

    pub(super) fn l2_start(&self) -> u64 {
        self.refcount_blocks_start() + self.refcount_blocks
    }

    pub(super) fn data_start(&self) -> u64 {
        self.l2_start() + self.l2_tables
    }

    pub(super) fn total_clusters(&self) -> u64 {
        self.total_clusters
    }

    /// Guest clusters one L2 table maps.
    pub(super) fn l2_entries(&self) -> u64 {
        self.cluster_size() / 8
    }
}

/// The refcount table and block counts, in clusters, for a file of `counted` other
/// clusters: the fewest blocks that cover the file including the table and the blocks.
fn refcount_layout(counted: u64, cluster_size: u64) -> (u64, u64) {
    let per_block = cluster_size * 8 / (REFCOUNT_BYTES * 8);
    let table_for = |blocks: u64| (blocks * 8).div_ceil(cluster_size).max(1);
    // blocks * per_block >= counted + blocks is needed, so start from that lower bound.
    // Each step raises the left side by per_block (>= 256) and the right side by at most 2,
    // so the loop ends after a step or two.
    let mut blocks = counted.div_ceil(per_block - 1).max(1);
    while blocks * per_block < counted + table_for(blocks) + blocks {
        blocks += 1;
    }
    (table_for(blocks), blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refcount_layout_covers_the_file_with_the_fewest_blocks() {
        for cluster_bits in [9, 12, 16] {
            let cluster_size = 1u64 << cluster_bits;
            let per_block = cluster_size / 2;
            for counted in (1..5 * per_block)
                .step_by(7)
                .chain([per_block - 2, per_block - 1])
            {
                let (table, blocks) = refcount_layout(counted, cluster_size);
                let total = counted + table + blocks;
                assert!(blocks * per_block >= total, "{counted}: {blocks} blocks");
                assert!(
                    (blocks - 1) * per_block < counted + blocks - 1 + table,
                    "{counted}: {blocks} is not the fewest"
                );
                assert!(table * cluster_size >= blocks * 8);
            }
        }
    }

    #[test]
    fn one_cluster_disk_layout() {
        let plan = Qcow2Plan::new(65536, 16, [0]).unwrap();
        // header, L1, refcount table, one refcount block, one L2 table, one data cluster.
        assert_eq!(plan.total_len(), 6 * 65536);
        assert_eq!(plan.data_offset(), 5 * 65536);
        assert_eq!(plan.allocated_clusters().collect::<Vec<_>>(), [0]);
    }

    #[test]
    fn empty_disk_has_no_l1_table() {
        let plan = Qcow2Plan::new(0, 16, []).unwrap();
        assert_eq!(plan.l1_entries(), 0);
        assert_eq!(plan.total_len(), 3 * 65536);
        assert_eq!(plan.allocated_count(), 0);
    }

    #[test]
    fn counts_one_l2_table_per_mapped_l1_entry() {
        // 8192 guest clusters per L2 table at 64 KiB.
        let plan = Qcow2Plan::new(20 << 30, 16, [0, 1, 8191, 8192, 3 * 8192 + 5]).unwrap();
        assert_eq!(plan.l2_tables, 3);
        assert_eq!(plan.l1_entries(), 40);
    }

    #[test]
    fn short_last_cluster() {
        let plan = Qcow2Plan::new(65536 + 512, 16, [1]).unwrap();
        assert_eq!(plan.cluster_len(0), 65536);
        assert_eq!(plan.cluster_len(1), 512);
    }

    #[test]
    fn refuses_bad_input() {
        use PlanError::*;
        let bad = |size, bits, list: &[u64]| Qcow2Plan::new(size, bits, list.iter().copied());
        assert_eq!(
            bad(1 << 20, 16, &[3, 2]).unwrap_err(),
            NotIncreasing {
                previous: 3,
                index: 2
            }
        );
        assert_eq!(
            bad(1 << 20, 16, &[2, 2]).unwrap_err(),
            NotIncreasing {
                previous: 2,
                index: 2
            }
        );
        assert!(matches!(
            bad(1 << 20, 16, &[16]).unwrap_err(),
            PastEnd { index: 16, .. }
        ));
        assert!(matches!(
            bad(0, 16, &[0]).unwrap_err(),
            PastEnd { index: 0, .. }
        ));
        assert_eq!(
            bad(1000, 16, &[]).unwrap_err(),
            UnalignedSize { virtual_size: 1000 }
        );
        assert_eq!(bad(1 << 20, 8, &[]).unwrap_err(), ClusterBits { bits: 8 });
        assert_eq!(bad(1 << 20, 22, &[]).unwrap_err(), ClusterBits { bits: 22 });
        // 512-byte clusters: 4 Mi L1 entries map 128 GiB at most.
        assert!(matches!(
            bad(256 << 30, 9, &[]).unwrap_err(),
            TooLarge { .. }
        ));
        assert!(matches!(
            bad(u64::MAX - 511, 21, &[]).unwrap_err(),
            TooLarge { .. }
        ));
    }

    #[test]
    fn two_tib_plan_is_small() {
        let plan = Qcow2Plan::new(2 << 40, 16, [0, (2 << 40) / 65536 - 1]).unwrap();
        assert!(plan.memory() <= (4 << 20) + 256, "{}", plan.memory());
    }
}
