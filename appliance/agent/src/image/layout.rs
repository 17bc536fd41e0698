//! What a source holds: its partition table, its volumes and the blocks their file systems
//! use (abri-fsread). Only ext4 (and ext2/3) and NTFS are understood: their free blocks
//! are not read. Any other file system, and every byte outside the partitions (partition
//! tables, boot code, gaps, extended-partition records), is read in full. A table or file
//! system that cannot be parsed becomes a warning and a full read of that part, never a
//! failed backup.

use abri_fsread::{FsKind, ReadAt, TableKind};
use abri_store::ImageVolume;

use super::ranges::Ranges;
use super::source::BlockSource;
use crate::progress::Counters;

/// The result of examining a source.
pub struct Layout {
    /// `gpt`, `mbr` or `none`.
    pub table: String,
    pub volumes: Vec<ImageVolume>,
    /// Bytes worth reading, when some file system told which of its blocks are used;
    /// `None` means everything.
    pub used: Option<Ranges>,
}

/// A window of a block source, as abri-fsread reads it.
struct Window<'a> {
    src: &'a dyn BlockSource,
    start: u64,
    len: u64,
}

impl ReadAt for Window<'_> {
    fn size(&self) -> u64 {
        self.len
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|e| e > self.len) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "read past the end of the volume",
            ));
        }
        self.src.read_at(self.start + offset, buf)
    }
}

fn fs_name(kind: FsKind) -> &'static str {
    match kind {
        FsKind::Ext4 => "ext4",
        FsKind::Ntfs => "ntfs",
    }
}

/// The file system of one window and the bytes it uses (relative to the window), or the
/// whole window when it is not understood.
fn examine_volume(
    w: &Window<'_>,
    what: &str,
    counters: &Counters,
) -> (String, Ranges, Option<u64>) {
    let Some(kind) = abri_fsread::detect(w) else {
        return (String::new(), Ranges::all(w.len), None);
    };
    match abri_fsread::used_ranges(w) {
        Ok(Some(r)) => {
            let used = Ranges::from_unsorted(r).intersect(&Ranges::all(w.len));
            let bytes = used.len_bytes();
            (fs_name(kind).into(), used, Some(bytes))
        }
        Ok(None) => (fs_name(kind).into(), Ranges::all(w.len), None),
        Err(e) => {
            counters.warn(format!(
                "{what}: the {} file system cannot be read ({e}); every block is read",
                fs_name(kind)
            ));
            (fs_name(kind).into(), Ranges::all(w.len), None)
        }
    }
}

/// Examines `source`.
pub fn examine(source: &dyn BlockSource, counters: &Counters) -> Layout {
    let size = source.size();
    let whole = Window {
        src: source,
        start: 0,
        len: size,
    };
    let table = match abri_fsread::read_partition_table(&whole) {
        Ok(t) => Some(t),
        Err(e) => {
            counters.warn(format!(
                "the partition table cannot be read ({e}); the disk is read in full"
            ));
            None
        }
    };
    let Some(table) = table.filter(|t| t.kind != TableKind::None) else {
        let (fs, used, used_bytes) = examine_volume(&whole, "the volume", counters);
        return Layout {
            table: "none".into(),
            volumes: vec![ImageVolume {
                number: 0,
                start: 0,
                size,
                type_id: String::new(),
                label: String::new(),
                fs,
                used_bytes,
            }],
            used: used_bytes.map(|_| used),
        };
    };
    let mut volumes = Vec::new();
    let mut inside = Vec::new();
    let mut used = Ranges::default();
    for p in &table.partitions {
        if p.is_extended_container() {
            continue;
        }
        let end = p.start.saturating_add(p.size).min(size);
        if p.start >= end {
            continue;
        }
        let w = Window {
            src: source,
            start: p.start,
            len: end - p.start,
        };
        let (fs, part_used, used_bytes) =
            examine_volume(&w, &format!("partition {}", p.number), counters);
        inside.push(p.start..end);
        used = used.union(&part_used.shifted(p.start));
        volumes.push(ImageVolume {
            number: p.number,
            start: p.start,
            size: end - p.start,
            type_id: p.type_id.clone(),
            label: p.name.clone(),
            fs,
            used_bytes,
        });
    }
    // Everything outside the partitions: tables, boot code, gaps.
    let outside = Ranges::from_unsorted(inside).complement(size);
    Layout {
        table: match table.kind {
            TableKind::Gpt => "gpt",
            TableKind::Mbr => "mbr",
            TableKind::None => "none",
        }
        .into(),
        volumes,
        used: Some(used.union(&outside)),
    }
}
