//! Partition tables: GPT (primary header, else the backup at the end) and MBR with its
//! chain of extended boot records.
//!
//! The tables are parsed here rather than with `gptman`/`mbrman`/`gpt`: those crates
//! allocate from on-disk counts, assert on entry sizes other than 128 bytes and add
//! on-disk numbers unchecked, and the box parses disks that agents upload. Everything below
//! is bounded: at most [`MAX_GPT_ENTRIES`] entries and [`MAX_LOGICAL`] logical partitions.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result, read_vec};
use crate::source::ReadAt;

/// Largest GPT entry array accepted (the usual one has 128 entries of 128 bytes).
pub const MAX_GPT_ENTRIES: u32 = 16_384;
/// Largest chain of MBR logical partitions followed.
pub const MAX_LOGICAL: usize = 256;

/// Which kind of partition table a disk has.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    /// GUID partition table (a protective MBR in sector 0 is not reported separately).
    Gpt,
    /// DOS partition table, with logical partitions of an extended partition.
    Mbr,
    /// No table: the file system (if any) starts at byte 0.
    None,
}

/// A disk's partition table, recorded with an image snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionTable {
    /// GPT, MBR or none.
    pub kind: TableKind,
    /// Logical sector size the table was found with (512 or 4096; 512 for MBR and none).
    pub sector_size: u32,
    /// GPT disk GUID (`"8C2C2A1E-..."`) or MBR disk signature (`"0x1234abcd"`).
    pub disk_id: Option<String>,
    /// Used entries in table order.
    pub partitions: Vec<Partition>,
}

/// One partition; offsets are in bytes from the start of the disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    /// GPT: entry index + 1. MBR: 1-4 for primary entries, 5 and up for logical ones
    /// (the numbering Linux uses).
    pub number: u32,
    /// First byte.
    pub start: u64,
    /// Length in bytes.
    pub size: u64,
    /// GPT partition type GUID (upper case) or MBR type byte (`"0x83"`).
    pub type_id: String,
    /// GPT partition name; empty for MBR.
    pub name: String,
    /// GPT unique partition GUID; none for MBR.
    pub uuid: Option<String>,
    /// GPT attribute bits; MBR boot indicator (0x80 for the active partition).
    pub attributes: u64,
}

impl Partition {
    /// True for an MBR extended partition: a container of logical partitions, not a file
    /// system to image by itself.
    pub fn is_extended_container(&self) -> bool {
        matches!(self.type_id.as_str(), "0x05" | "0x0f" | "0x85")
    }
}

/// Reads the partition table of a disk.
///
/// A valid GPT wins (primary header, else backup). Without one, a sector 0 ending in
/// `55 AA` whose entries look like partition entries is an MBR. A sector 0 that is a file
/// system's boot sector, or anything else, gives [`TableKind::None`]. A GPT header that is
/// present but damaged in both copies is an error, not a silent fallback to the MBR.
pub fn read_partition_table(src: &dyn ReadAt) -> Result<PartitionTable> {
    if let Some(table) = read_gpt(src)? {
        return Ok(table);
    }
    if src.size() < 512 {
        return Ok(none_table());
    }
    let sector0 = read_vec(src, 0, 512)?;
    if sector0[510..512] != [0x55, 0xAA] || is_boot_sector_of_fs(&sector0) {
        return Ok(none_table());
    }
    let entries: Vec<MbrEntry> = (0..4).map(|i| MbrEntry::parse(&sector0, i)).collect();
    if entries.iter().any(|e| e.boot != 0 && e.boot != 0x80) {
        return Ok(none_table());
    }
    if entries.iter().any(|e| e.kind == 0xEE) {
        return Err(Error::corrupt(
            "GPT",
            "sector 0 holds a protective MBR but neither GPT header is valid",
        ));
    }
    read_mbr(src, &sector0, &entries)
}

fn none_table() -> PartitionTable {
    PartitionTable {
        kind: TableKind::None,
        sector_size: 512,
        disk_id: None,
        partitions: Vec::new(),
    }
}

/// A volume boot record also ends in 55 AA; its OEM name or FAT signature tells it apart.
fn is_boot_sector_of_fs(sector0: &[u8]) -> bool {
    &sector0[3..11] == b"NTFS    "
        || &sector0[3..11] == b"EXFAT   "
        || &sector0[54..59] == b"FAT12"
        || &sector0[54..59] == b"FAT16"
        || &sector0[82..87] == b"FAT32"
}

fn read_gpt(src: &dyn ReadAt) -> Result<Option<PartitionTable>> {
    let mut damage: Option<Error> = None;
    for sector_size in [512u64, 4096] {
        let sectors = src.size() / sector_size;
        if sectors < 3 {
            continue;
        }
        for header_lba in [1, sectors - 1] {
            match read_gpt_at(src, sector_size, header_lba, sectors) {
                Ok(Some(table)) => return Ok(Some(table)),
                Ok(None) => {}
                Err(err) => {
                    damage.get_or_insert(err);
                }
            }
        }
    }
    match damage {
        Some(err) => Err(err),
        None => Ok(None),
    }
}

/// `Ok(None)` when there is no "EFI PART" signature at that LBA.
fn read_gpt_at(
    src: &dyn ReadAt,
    sector_size: u64,
    lba: u64,
    sectors: u64,
) -> Result<Option<PartitionTable>> {
    let header = read_vec(src, lba * sector_size, sector_size as usize)?;
    if &header[0..8] != b"EFI PART" {
        return Ok(None);
    }
    let bad = |detail: String| {
        Err(Error::corrupt(
            "GPT header",
            format!("at LBA {lba}: {detail}"),
        ))
    };
    let header_size = le32(&header, 12) as usize;
    if header_size < 92 || header_size > header.len() {
        return bad(format!("header size {header_size}"));
    }
    let stored_crc = le32(&header, 16);
    let mut crc_input = header[..header_size].to_vec();
    crc_input[16..20].fill(0);
    if crc32fast::hash(&crc_input) != stored_crc {
        return bad("header checksum mismatch".into());
    }
    if le64(&header, 24) != lba {
        return bad(format!("header says it lives at LBA {}", le64(&header, 24)));
    }
    let disk_guid = guid_string(&header[56..72]);
    let entries_lba = le64(&header, 72);
    let entry_count = le32(&header, 80);
    let entry_size = le32(&header, 84);
    let entries_crc = le32(&header, 88);
    if entry_count > MAX_GPT_ENTRIES {
        return bad(format!(
            "{entry_count} partition entries (at most {MAX_GPT_ENTRIES} read)"
        ));
    }
    if !(128..=4096).contains(&entry_size) || !entry_size.is_multiple_of(8) {
        return bad(format!("partition entry size {entry_size}"));
    }
    // Both factors are bounded above, so the array is at most 64 MiB, and it is checked
    // against the disk's size before it is read.
    let array_len = entry_count as usize * entry_size as usize;
    let array_end = entries_lba
        .checked_mul(sector_size)
        .and_then(|start| start.checked_add(array_len as u64));
    let array_start = match array_end {
        Some(end) if end <= sectors * sector_size && entries_lba >= 2 => entries_lba * sector_size,
        _ => {
            return bad(format!(
                "partition entry array at LBA {entries_lba} lies outside the disk"
            ));
        }
    };
    let array = read_vec(src, array_start, array_len)?;
    if crc32fast::hash(&array) != entries_crc {
        return bad("partition entry array checksum mismatch".into());
    }
    let mut partitions = Vec::new();
    for (index, entry) in array.chunks_exact(entry_size as usize).enumerate() {
        let type_guid = &entry[0..16];
        if type_guid.iter().all(|&b| b == 0) {
            continue;
        }
        let first = le64(entry, 32);
        let last = le64(entry, 40);
        if first > last || last >= sectors {
            return bad(format!(
                "partition {} spans LBA {first}..={last} of a disk of {sectors} sectors",
                index + 1
            ));
        }
        let name_units: Vec<u16> = entry[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        partitions.push(Partition {
            number: index as u32 + 1,
            start: first * sector_size,
            size: (last - first + 1) * sector_size,
            type_id: guid_string(type_guid),
            name: String::from_utf16_lossy(&name_units),
            uuid: Some(guid_string(&entry[16..32])),
            attributes: le64(entry, 48),
        });
    }
    Ok(Some(PartitionTable {
        kind: TableKind::Gpt,
        sector_size: sector_size as u32,
        disk_id: Some(disk_guid),
        partitions,
    }))
}

struct MbrEntry {
    boot: u8,
    kind: u8,
    start: u32,
    sectors: u32,
}

impl MbrEntry {
    fn parse(sector: &[u8], index: usize) -> MbrEntry {
        let e = &sector[446 + 16 * index..446 + 16 * (index + 1)];
        MbrEntry {
            boot: e[0],
            kind: e[4],
            start: le32(e, 8),
            sectors: le32(e, 12),
        }
    }

    fn is_used(&self) -> bool {
        self.kind != 0 && self.sectors != 0
    }

    fn is_extended(&self) -> bool {
        matches!(self.kind, 0x05 | 0x0F | 0x85)
    }
}

const MBR_SECTOR: u64 = 512;

fn read_mbr(src: &dyn ReadAt, sector0: &[u8], entries: &[MbrEntry]) -> Result<PartitionTable> {
    let disk_sectors = src.size() / MBR_SECTOR;
    let mut partitions = Vec::new();
    let mut extended: Option<(u64, u64)> = None;
    for (index, entry) in entries.iter().enumerate() {
        if !entry.is_used() {
            continue;
        }
        let number = index as u32 + 1;
        partitions.push(mbr_partition(number, entry, u64::from(entry.start)));
        if entry.is_extended() {
            if extended.is_some() {
                return Err(Error::corrupt("MBR", "more than one extended partition"));
            }
            extended = Some((u64::from(entry.start), u64::from(entry.sectors)));
        }
    }
    if let Some((ext_start, ext_sectors)) = extended {
        read_logical(
            src,
            ext_start,
            ext_sectors.min(disk_sectors),
            &mut partitions,
        )?;
    }
    Ok(PartitionTable {
        kind: TableKind::Mbr,
        sector_size: MBR_SECTOR as u32,
        disk_id: Some(format!("0x{:08x}", le32(sector0, 440))),
        partitions,
    })
}

fn mbr_partition(number: u32, entry: &MbrEntry, start_lba: u64) -> Partition {
    Partition {
        number,
        start: start_lba * MBR_SECTOR,
        size: u64::from(entry.sectors) * MBR_SECTOR,
        type_id: format!("0x{:02x}", entry.kind),
        name: String::new(),
        uuid: None,
        attributes: u64::from(entry.boot),
    }
}

/// Follows the EBR chain. Each EBR's second entry points to the next EBR relative to the
/// extended partition's start; the chain must move forward and stay inside the container,
/// so a looping or runaway chain ends in an error.
fn read_logical(
    src: &dyn ReadAt,
    ext_start: u64,
    ext_sectors: u64,
    partitions: &mut Vec<Partition>,
) -> Result<()> {
    let mut relative: u64 = 0;
    for number in 5u32..5 + MAX_LOGICAL as u32 {
        if relative >= ext_sectors {
            return Err(Error::corrupt(
                "MBR extended partition",
                format!(
                    "EBR at sector {} lies outside the container",
                    ext_start + relative
                ),
            ));
        }
        let ebr_lba = ext_start + relative;
        let ebr = read_vec(src, ebr_lba * MBR_SECTOR, MBR_SECTOR as usize)?;
        if ebr[510..512] != [0x55, 0xAA] {
            if relative == 0 {
                // An empty extended partition need not hold an EBR at all.
                return Ok(());
            }
            return Err(Error::corrupt(
                "MBR extended partition",
                format!("EBR at sector {ebr_lba} has no 55 AA signature"),
            ));
        }
        let logical = MbrEntry::parse(&ebr, 0);
        let next = MbrEntry::parse(&ebr, 1);
        if logical.is_used() {
            partitions.push(mbr_partition(
                number,
                &logical,
                ebr_lba + u64::from(logical.start),
            ));
        }
        if !next.is_used() {
            return Ok(());
        }
        let next_relative = u64::from(next.start);
        if next_relative <= relative {
            return Err(Error::corrupt(
                "MBR extended partition",
                format!("EBR chain goes backwards at sector {ebr_lba}"),
            ));
        }
        relative = next_relative;
    }
    Err(Error::corrupt(
        "MBR extended partition",
        format!("more than {MAX_LOGICAL} logical partitions"),
    ))
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// The mixed-endian GUID layout: the first three fields little-endian, the rest as stored.
pub(crate) fn guid_string(b: &[u8]) -> String {
    format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{:02X}{:02X}{:02X}{:02X}{:02X}{:02X}",
        le32(b, 0),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        b[10],
        b[11],
        b[12],
        b[13],
        b[14],
        b[15]
    )
}
