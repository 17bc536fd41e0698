//! Emitting a planned qcow2 file front to back, one cluster at a time: every table is
//! generated from the plan as it is written, so nothing but one cluster buffer is held.

use std::io::{self, Write};

use super::Qcow2Plan;
use super::plan::REFCOUNT_BYTES;

const MAGIC: &[u8; 4] = b"QFI\xfb";
const VERSION: u32 = 3;
/// Refcounts of 2^4 = 16 bits.
const REFCOUNT_ORDER: u32 = 4;
/// The version 3 header without optional fields; the end-of-extensions marker follows it.
const HEADER_LEN: u32 = 104;
/// Bit 63 of L1 and L2 entries: the table or cluster has a refcount of exactly one, so a
/// hypervisor may write to it in place.
const COPIED: u64 = 1 << 63;

impl Qcow2Plan {
    /// Writes everything before the first data cluster ([`data_offset`](Self::data_offset)
    /// bytes): header, L1 table, refcount table and blocks, L2 tables.
    ///
    /// After it, the caller writes each allocated cluster's bytes in the order of
    /// [`allocated_clusters`](Self::allocated_clusters), exactly one cluster each (a short
    /// last cluster padded with zeros); [`write_qcow2`] does both.
    pub fn write_metadata<W: Write + ?Sized>(&self, out: &mut W) -> io::Result<()> {
        let mut buffer = vec![0; self.cluster_size_usize()];
        self.fill_header(&mut buffer);
        out.write_all(&buffer)?;
        self.write_l1_table(&mut ClusterFiller::new(out, &mut buffer))?;
        self.write_refcount_table(&mut ClusterFiller::new(out, &mut buffer))?;
        self.write_refcount_blocks(&mut ClusterFiller::new(out, &mut buffer))?;
        self.write_l2_tables(out, &mut buffer)
    }

    fn cluster_size_usize(&self) -> usize {
        // At most 2 MiB (MAX_CLUSTER_BITS), which fits any usize this code builds for.
        1 << self.cluster_bits()
    }

    fn fill_header(&self, cluster: &mut [u8]) {
        cluster.fill(0);
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            cluster[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(MAGIC);
        put(&VERSION.to_be_bytes());
        put(&0u64.to_be_bytes()); // backing_file_offset: no backing file
        put(&0u32.to_be_bytes()); // backing_file_size
        put(&self.cluster_bits().to_be_bytes());
        put(&self.virtual_size().to_be_bytes());
        put(&0u32.to_be_bytes()); // crypt_method: none
        // The plan keeps the L1 table within 32 MiB (4 Mi entries) and the refcount
        // table within 8 MiB (16 Ki clusters): both counts fit 32 bits.
        put(&(self.l1_entries() as u32).to_be_bytes());
        let l1_offset = if self.l1_entries() == 0 {
            0
        } else {
            self.l1_start() << self.cluster_bits()
        };
        put(&l1_offset.to_be_bytes());
        put(&(self.refcount_table_start() << self.cluster_bits()).to_be_bytes());
        put(&(self.refcount_table_clusters() as u32).to_be_bytes());
        put(&0u32.to_be_bytes()); // nb_snapshots
        put(&0u64.to_be_bytes()); // snapshots_offset
        put(&0u64.to_be_bytes()); // incompatible_features: not dirty, nothing special
        put(&0u64.to_be_bytes()); // compatible_features: no lazy refcounts
        put(&0u64.to_be_bytes()); // autoclear_features
        put(&REFCOUNT_ORDER.to_be_bytes());
        put(&HEADER_LEN.to_be_bytes());
        // Byte HEADER_LEN: the end of the header extension area, type 0 and length 0.
        put(&0u32.to_be_bytes());
        put(&0u32.to_be_bytes());
    }

    /// One entry per 2^(cluster_bits - 3) guest clusters: the offset of its L2 table, or 0
    /// where that stretch of the disk holds no data.
    fn write_l1_table<W: Write + ?Sized>(
        &self,
        table: &mut ClusterFiller<'_, W>,
    ) -> io::Result<()> {
        let l2_entries = self.l2_entries();
        let mut mapped = self
            .allocated_clusters()
            .map(|index| index / l2_entries)
            .peekable();
        let mut next_l2 = self.l2_start();
        for l1_index in 0..self.l1_entries() {
            let entry = if mapped.peek() == Some(&l1_index) {
                while mapped.next_if_eq(&l1_index).is_some() {}
                let offset = next_l2 << self.cluster_bits();
                next_l2 += 1;
                COPIED | offset
            } else {
                0
            };
            table.push(&entry.to_be_bytes())?;
        }
        table.finish()
    }

    fn write_refcount_table<W: Write + ?Sized>(
        &self,
        table: &mut ClusterFiller<'_, W>,
    ) -> io::Result<()> {
        let first = self.refcount_blocks_start();
        for block in first..first + self.refcount_blocks() {
            table.push(&(block << self.cluster_bits()).to_be_bytes())?;
        }
        table.finish()
    }

    /// Every cluster of the file is used once: refcount 1 below the end, 0 past it.
    fn write_refcount_blocks<W: Write + ?Sized>(
        &self,
        blocks: &mut ClusterFiller<'_, W>,
    ) -> io::Result<()> {
        let per_block = self.cluster_size() / REFCOUNT_BYTES;
        let total = self.total_clusters();
        for cluster in 0..self.refcount_blocks() * per_block {
            let refcount = u16::from(cluster < total);
            blocks.push(&refcount.to_be_bytes())?;
        }
        blocks.finish()
    }

    /// One L2 table per L1 entry that maps data, each pointing its allocated clusters at
    /// the data area in guest order.
    fn write_l2_tables<W: Write + ?Sized>(&self, out: &mut W, table: &mut [u8]) -> io::Result<()> {
        let l2_entries = self.l2_entries();
        let mut current: Option<u64> = None;
        for (data_cluster, index) in (self.data_start()..).zip(self.allocated_clusters()) {
            let l1_index = index / l2_entries;
            if current != Some(l1_index) {
                if current.is_some() {
                    out.write_all(table)?;
                }
                table.fill(0);
                current = Some(l1_index);
            }
            let slot = (index % l2_entries) as usize * 8;
            let entry = COPIED | (data_cluster << self.cluster_bits());
            table[slot..slot + 8].copy_from_slice(&entry.to_be_bytes());
        }
        if current.is_some() {
            out.write_all(table)?;
        }
        Ok(())
    }
}

/// Writes a table made of fixed-size entries cluster by cluster, padding the last one.
struct ClusterFiller<'a, W: Write + ?Sized> {
    out: &'a mut W,
    buffer: &'a mut [u8],
    used: usize,
}

impl<'a, W: Write + ?Sized> ClusterFiller<'a, W> {
    fn new(out: &'a mut W, buffer: &'a mut [u8]) -> Self {
        ClusterFiller {
            out,
            buffer,
            used: 0,
        }
    }

    /// Appends one entry; entries are 2 or 8 bytes, which divide every cluster size.
    fn push(&mut self, entry: &[u8]) -> io::Result<()> {
        self.buffer[self.used..self.used + entry.len()].copy_from_slice(entry);
        self.used += entry.len();
        if self.used == self.buffer.len() {
            self.out.write_all(self.buffer)?;
            self.used = 0;
        }
        Ok(())
    }

    /// Writes the partly filled last cluster, zero-padded.
    fn finish(&mut self) -> io::Result<()> {
        if self.used > 0 {
            self.buffer[self.used..].fill(0);
            self.out.write_all(self.buffer)?;
            self.used = 0;
        }
        Ok(())
    }
}

/// Writes the whole qcow2 file that `plan` describes to `out`, front to back.
///
/// `cluster(index, buffer)` is called once per allocated guest cluster, in increasing
/// order, to fill `buffer` (zeroed, [`Qcow2Plan::cluster_len`] bytes long: the cluster
/// size, or less for the last cluster of a disk whose size is not a multiple of it) with
/// that cluster's bytes. Its error stops the file where it is and is returned as is.
///
/// Exactly [`Qcow2Plan::total_len`] bytes are written; memory used is the plan plus one
/// cluster buffer. `out` is not flushed.
pub fn write_qcow2<W: Write + ?Sized>(
    plan: &Qcow2Plan,
    out: &mut W,
    mut cluster: impl FnMut(u64, &mut [u8]) -> io::Result<()>,
) -> io::Result<()> {
    plan.write_metadata(out)?;
    let mut buffer = vec![0; plan.cluster_size_usize()];
    for index in plan.allocated_clusters() {
        buffer.fill(0);
        // At most the cluster size, which fits usize (see cluster_size_usize).
        let len = plan.cluster_len(index) as usize;
        cluster(index, &mut buffer[..len])?;
        out.write_all(&buffer)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be64(bytes: &[u8], at: usize) -> u64 {
        u64::from_be_bytes(bytes[at..at + 8].try_into().unwrap())
    }

    fn be32(bytes: &[u8], at: usize) -> u32 {
        u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn header_fields() {
        let plan = Qcow2Plan::new(3 << 30, 16, [0, 9000]).unwrap();
        let mut meta = Vec::new();
        plan.write_metadata(&mut meta).unwrap();
        assert_eq!(meta.len() as u64, plan.data_offset());
        assert_eq!(&meta[..4], b"QFI\xfb");
        assert_eq!(be32(&meta, 4), 3);
        assert_eq!(be32(&meta, 20), 16);
        assert_eq!(be64(&meta, 24), 3 << 30);
        assert_eq!(be32(&meta, 36), 6); // 3 GiB / 512 MiB per L2 table
        assert_eq!(be64(&meta, 40), 65536);
        assert_eq!(be64(&meta, 48), 2 * 65536);
        assert_eq!(be32(&meta, 56), 1);
        assert_eq!(be64(&meta, 72), 0);
        assert_eq!(be32(&meta, 96), 4);
        assert_eq!(be32(&meta, 100), 104);
        assert_eq!(be64(&meta, 104), 0);
        // L1: entries 0 and 1 map L2 tables 4 and 5 (after header, L1, reftable, block).
        assert_eq!(be64(&meta, 65536), COPIED | (4 * 65536));
        assert_eq!(be64(&meta, 65536 + 8), COPIED | (5 * 65536));
        assert_eq!(be64(&meta, 65536 + 16), 0);
        // Refcount table: one block at cluster 3; the block counts all 8 clusters.
        assert_eq!(be64(&meta, 2 * 65536), 3 * 65536);
        let block = &meta[3 * 65536..4 * 65536];
        assert!(block[..16].chunks(2).all(|r| r == [0, 1]));
        assert!(block[16..].iter().all(|&b| b == 0));
        // L2: cluster 0 at data cluster 6, cluster 9000 (slot 808 of table 1) at 7.
        assert_eq!(be64(&meta, 4 * 65536), COPIED | (6 * 65536));
        assert_eq!(be64(&meta, 5 * 65536 + 808 * 8), COPIED | (7 * 65536));
        assert_eq!(plan.total_len(), 8 * 65536);
    }

    #[test]
    fn writes_total_len_and_short_buffers_for_the_tail() {
        let plan = Qcow2Plan::new(65536 + 1024, 16, [0, 1]).unwrap();
        let mut out = Vec::new();
        let mut seen = Vec::new();
        write_qcow2(&plan, &mut out, |index, buffer| {
            seen.push((index, buffer.len()));
            buffer.fill(0xab);
            Ok(())
        })
        .unwrap();
        assert_eq!(seen, [(0, 65536), (1, 1024)]);
        assert_eq!(out.len() as u64, plan.total_len());
        let last = &out[out.len() - 65536..];
        assert!(last[..1024].iter().all(|&b| b == 0xab));
        assert!(last[1024..].iter().all(|&b| b == 0));
    }

    #[test]
    fn cluster_error_stops_the_file() {
        let plan = Qcow2Plan::new(1 << 20, 16, [0, 1, 2]).unwrap();
        let mut out = Vec::new();
        let err = write_qcow2(&plan, &mut out, |index, _| {
            if index == 1 {
                Err(io::Error::other("chunk missing"))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert_eq!(err.to_string(), "chunk missing");
        assert_eq!(out.len() as u64, plan.data_offset() + 65536);
    }
}
