//! The output buffers of the Windows disk ioctls that image mode uses, parsed from bytes
//! (pure code, so its units run on every system; a Windows-only test checks the offsets
//! against `windows-sys`'s structures):
//!
//! - `IOCTL_DISK_GET_DRIVE_LAYOUT_EX` → `DRIVE_LAYOUT_INFORMATION_EX`: the partitions;
//! - `IOCTL_VOLUME_GET_VOLUME_DISK_EXTENTS` → `VOLUME_DISK_EXTENTS`: where a volume lies.
//!
//! The buffers come from the system, but are still checked: a count that does not fit the
//! returned length is an error, never a read past the buffer.

/// `PartitionStyle` values.
pub const STYLE_MBR: u32 = 0;
pub const STYLE_GPT: u32 = 1;
pub const STYLE_RAW: u32 = 2;

/// `DRIVE_LAYOUT_INFORMATION_EX`: style, count, the MBR/GPT union (40 bytes), entries.
pub const LAYOUT_HEADER_BYTES: usize = 48;
/// `PARTITION_INFORMATION_EX`.
pub const PARTITION_ENTRY_BYTES: usize = 144;
/// `VOLUME_DISK_EXTENTS`: count (padded), then `DISK_EXTENT`s.
pub const EXTENTS_HEADER_BYTES: usize = 8;
/// `DISK_EXTENT`: disk number (padded), offset, length.
pub const EXTENT_BYTES: usize = 24;

/// One partition of a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskPartition {
    /// 1-based, as Windows numbers them.
    pub number: u32,
    pub start: u64,
    pub len: u64,
    /// The GPT type GUID as text, or the MBR type as `0xNN`.
    pub type_id: String,
    /// The GPT partition name (empty on MBR).
    pub name: String,
}

/// A disk's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DriveLayout {
    pub style: u32,
    /// Partitions with a length (MBR layouts list empty slots, which are left out).
    pub partitions: Vec<DiskPartition>,
}

/// Where a part of a volume lies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskExtent {
    pub disk: u32,
    pub start: u64,
    pub len: u64,
}

fn u32_at(b: &[u8], at: usize) -> Result<u32, String> {
    b.get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or_else(|| format!("the buffer ends before offset {}", at + 4))
}

fn u64_at(b: &[u8], at: usize) -> Result<u64, String> {
    let v = b
        .get(at..at + 8)
        .and_then(|s| s.try_into().ok())
        .map(i64::from_le_bytes)
        .ok_or_else(|| format!("the buffer ends before offset {}", at + 8))?;
    u64::try_from(v).map_err(|_| format!("negative offset or length {v}"))
}

/// A GUID in its registry form (`C12A7328-F81F-11D2-BA4B-00A0C93EC93B`).
fn guid_text(b: &[u8]) -> String {
    let d1 = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
    let d2 = u16::from_le_bytes([b[4], b[5]]);
    let d3 = u16::from_le_bytes([b[6], b[7]]);
    format!(
        "{d1:08X}-{d2:04X}-{d3:04X}-{:02X}{:02X}-{}",
        b[8],
        b[9],
        b[10..16]
            .iter()
            .map(|x| format!("{x:02X}"))
            .collect::<String>()
    )
}

/// Parses the first `returned` bytes of a `DRIVE_LAYOUT_INFORMATION_EX`.
pub fn parse_drive_layout(buf: &[u8]) -> Result<DriveLayout, String> {
    let style = u32_at(buf, 0)?;
    let count = u32_at(buf, 4)? as usize;
    if style > STYLE_RAW {
        return Err(format!("unknown partition style {style}"));
    }
    let needed = count
        .checked_mul(PARTITION_ENTRY_BYTES)
        .and_then(|n| n.checked_add(LAYOUT_HEADER_BYTES))
        .filter(|&n| n <= buf.len())
        .ok_or_else(|| {
            format!(
                "the layout lists {count} partitions but holds {} bytes",
                buf.len()
            )
        })?;
    let mut partitions = Vec::new();
    for e in buf[LAYOUT_HEADER_BYTES..needed].chunks_exact(PARTITION_ENTRY_BYTES) {
        let entry_style = u32_at(e, 0)?;
        let start = u64_at(e, 8)?;
        let len = u64_at(e, 16)?;
        let number = u32_at(e, 24)?;
        if len == 0 {
            continue;
        }
        start
            .checked_add(len)
            .ok_or_else(|| format!("partition {number} wraps around"))?;
        let (type_id, name) = match entry_style {
            STYLE_GPT => {
                let units: Vec<u16> = e[72..144]
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .take_while(|&u| u != 0)
                    .collect();
                (guid_text(&e[32..48]), String::from_utf16_lossy(&units))
            }
            STYLE_MBR => (format!("0x{:02x}", e[32]), String::new()),
            _ => (String::new(), String::new()),
        };
        partitions.push(DiskPartition {
            number,
            start,
            len,
            type_id,
            name,
        });
    }
    Ok(DriveLayout { style, partitions })
}

/// Parses the first `returned` bytes of a `VOLUME_DISK_EXTENTS`.
pub fn parse_volume_extents(buf: &[u8]) -> Result<Vec<DiskExtent>, String> {
    let count = u32_at(buf, 0)? as usize;
    let needed = count
        .checked_mul(EXTENT_BYTES)
        .and_then(|n| n.checked_add(EXTENTS_HEADER_BYTES))
        .filter(|&n| n <= buf.len())
        .ok_or_else(|| {
            format!(
                "the volume lists {count} extents but holds {} bytes",
                buf.len()
            )
        })?;
    buf[EXTENTS_HEADER_BYTES..needed]
        .chunks_exact(EXTENT_BYTES)
        .map(|e| {
            Ok(DiskExtent {
                disk: u32_at(e, 0)?,
                start: u64_at(e, 8)?,
                len: u64_at(e, 16)?,
            })
        })
        .collect()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The EFI system partition's type GUID, as stored (mixed endian).
    const EFI: [u8; 16] = [
        0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e, 0xc9,
        0x3b,
    ];

    pub(crate) fn layout_buffer(style: u32, entries: &[(u32, u64, u64, &str)]) -> Vec<u8> {
        let mut b = vec![0u8; LAYOUT_HEADER_BYTES];
        b[0..4].copy_from_slice(&style.to_le_bytes());
        b[4..8].copy_from_slice(&(entries.len() as u32).to_le_bytes());
        for &(number, start, len, name) in entries {
            let mut e = vec![0u8; PARTITION_ENTRY_BYTES];
            e[0..4].copy_from_slice(&style.to_le_bytes());
            e[8..16].copy_from_slice(&start.to_le_bytes());
            e[16..24].copy_from_slice(&len.to_le_bytes());
            e[24..28].copy_from_slice(&number.to_le_bytes());
            if style == STYLE_GPT {
                e[32..48].copy_from_slice(&EFI);
                for (i, u) in name.encode_utf16().enumerate() {
                    e[72 + 2 * i..74 + 2 * i].copy_from_slice(&u.to_le_bytes());
                }
            } else {
                e[32] = 0x07;
            }
            b.extend_from_slice(&e);
        }
        b
    }

    pub(crate) fn extents_buffer(extents: &[(u32, u64, u64)]) -> Vec<u8> {
        let mut b = vec![0u8; EXTENTS_HEADER_BYTES];
        b[0..4].copy_from_slice(&(extents.len() as u32).to_le_bytes());
        for &(disk, start, len) in extents {
            let mut e = vec![0u8; EXTENT_BYTES];
            e[0..4].copy_from_slice(&disk.to_le_bytes());
            e[8..16].copy_from_slice(&start.to_le_bytes());
            e[16..24].copy_from_slice(&len.to_le_bytes());
            b.extend_from_slice(&e);
        }
        b
    }

    #[test]
    fn a_gpt_layout_parses() {
        let buf = layout_buffer(
            STYLE_GPT,
            &[
                (1, 1 << 20, 100 << 20, "EFI system partition"),
                (2, 101 << 20, 16 << 20, ""),
            ],
        );
        let layout = parse_drive_layout(&buf).unwrap();
        assert_eq!(layout.style, STYLE_GPT);
        assert_eq!(
            layout.partitions[0],
            DiskPartition {
                number: 1,
                start: 1 << 20,
                len: 100 << 20,
                type_id: "C12A7328-F81F-11D2-BA4B-00A0C93EC93B".into(),
                name: "EFI system partition".into(),
            }
        );
        assert_eq!(layout.partitions[1].start, 101 << 20);
    }

    #[test]
    fn an_mbr_layout_drops_empty_slots() {
        let buf = layout_buffer(STYLE_MBR, &[(1, 1 << 20, 8 << 20, ""), (0, 0, 0, "")]);
        let layout = parse_drive_layout(&buf).unwrap();
        assert_eq!(layout.partitions.len(), 1);
        assert_eq!(layout.partitions[0].type_id, "0x07");
    }

    #[test]
    fn bad_layouts_are_refused() {
        let mut buf = layout_buffer(STYLE_GPT, &[(1, 1 << 20, 8 << 20, "")]);
        assert!(parse_drive_layout(&buf[..buf.len() - 1]).is_err());
        assert!(parse_drive_layout(&buf[..6]).is_err());
        buf[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse_drive_layout(&buf).is_err());
        let negative = layout_buffer(STYLE_GPT, &[(1, u64::MAX, 1, "")]);
        assert!(parse_drive_layout(&negative).is_err());
        let wraps = layout_buffer(STYLE_GPT, &[(1, i64::MAX as u64, i64::MAX as u64, "")]);
        assert!(parse_drive_layout(&wraps).is_ok()); // fits in u64; the disk size bounds it later
        let style = layout_buffer(7, &[]);
        assert!(parse_drive_layout(&style).is_err());
    }

    #[test]
    fn volume_extents_parse() {
        let buf = extents_buffer(&[(0, 1 << 20, 100 << 20), (3, 0, 4096)]);
        assert_eq!(
            parse_volume_extents(&buf).unwrap(),
            vec![
                DiskExtent {
                    disk: 0,
                    start: 1 << 20,
                    len: 100 << 20
                },
                DiskExtent {
                    disk: 3,
                    start: 0,
                    len: 4096
                }
            ]
        );
        assert!(parse_volume_extents(&buf[..buf.len() - 8]).is_err());
        assert!(parse_volume_extents(&[]).is_err());
        assert_eq!(parse_volume_extents(&extents_buffer(&[])).unwrap(), vec![]);
    }

    /// The offsets above are those of the real structures.
    #[cfg(windows)]
    #[test]
    fn offsets_match_the_windows_structures() {
        use std::mem::{offset_of, size_of};
        use windows_sys::Win32::System::Ioctl as io;
        assert_eq!(
            offset_of!(io::DRIVE_LAYOUT_INFORMATION_EX, PartitionEntry),
            LAYOUT_HEADER_BYTES
        );
        assert_eq!(
            size_of::<io::PARTITION_INFORMATION_EX>(),
            PARTITION_ENTRY_BYTES
        );
        assert_eq!(offset_of!(io::PARTITION_INFORMATION_EX, StartingOffset), 8);
        assert_eq!(
            offset_of!(io::PARTITION_INFORMATION_EX, PartitionLength),
            16
        );
        assert_eq!(
            offset_of!(io::PARTITION_INFORMATION_EX, PartitionNumber),
            24
        );
        assert_eq!(offset_of!(io::PARTITION_INFORMATION_EX, Anonymous), 32);
        assert_eq!(offset_of!(io::PARTITION_INFORMATION_GPT, Name), 40);
        assert_eq!(
            offset_of!(io::VOLUME_DISK_EXTENTS, Extents),
            EXTENTS_HEADER_BYTES
        );
        assert_eq!(size_of::<io::DISK_EXTENT>(), EXTENT_BYTES);
        assert_eq!(offset_of!(io::DISK_EXTENT, StartingOffset), 8);
    }
}
