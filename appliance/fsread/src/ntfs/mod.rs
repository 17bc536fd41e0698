//! NTFS through the `ntfs` crate: the used clusters from `$Bitmap`, and browsing.

mod fs;

pub(crate) use fs::NtfsFs;

use std::io::SeekFrom;
use std::ops::Range;

use ntfs::{KnownNtfsFileRecordNumber, Ntfs, NtfsReadSeek};

use crate::error::{Error, Result};
use crate::ranges::RangeSet;
use crate::source::{Cursor, ReadAt};

/// Bytes of an NTFS boot sector: a shorter source is not an NTFS volume (and the `ntfs`
/// crate panics on a boot sector it cannot read whole).
const BOOT_SECTOR: u64 = 512;

/// True when the source starts with a whole NTFS boot sector.
pub(crate) fn detect(src: &dyn ReadAt) -> bool {
    let mut oem = [0u8; 8];
    src.size() >= BOOT_SECTOR && src.read_at(3, &mut oem).is_ok() && &oem == b"NTFS    "
}

/// The clusters `$Bitmap` marks as in use, plus the boot sector and its backup in the
/// sector after the volume.
pub(crate) fn used_ranges(src: &dyn ReadAt) -> Result<Vec<Range<u64>>> {
    let mut cursor = Cursor::new(src);
    let ntfs = Ntfs::new(&mut cursor).map_err(|e| Error::ntfs("boot sector", e))?;
    let cluster = u64::from(ntfs.cluster_size());
    let sector = u64::from(ntfs.sector_size());
    let volume_bytes = ntfs.size();
    if volume_bytes > src.size() {
        return Err(Error::corrupt(
            "NTFS boot sector",
            format!(
                "volume of {volume_bytes} bytes on a source of {} bytes",
                src.size()
            ),
        ));
    }
    let clusters = volume_bytes / cluster;

    let context = "$Bitmap";
    let file = ntfs
        .file(&mut cursor, KnownNtfsFileRecordNumber::Bitmap as u64)
        .map_err(|e| Error::ntfs(context, e))?;
    let item = file
        .data(&mut cursor, "")
        .ok_or_else(|| Error::ntfs(context, "no $DATA attribute"))?
        .map_err(|e| Error::ntfs(context, e))?;
    let attribute = item.to_attribute().map_err(|e| Error::ntfs(context, e))?;
    let mut value = attribute
        .value(&mut cursor)
        .map_err(|e| Error::ntfs(context, e))?;
    value
        .seek(&mut cursor, SeekFrom::Start(0))
        .map_err(|e| Error::ntfs(context, e))?;

    let mut used = RangeSet::new(src.size());
    used.add(0, sector.max(512));
    // The backup boot sector, and anything after the volume (not the file system's).
    used.add(volume_bytes, src.size().max(volume_bytes + sector));

    // Stream the bitmap: a large volume's bitmap is tens of megabytes.
    let mut chunk = vec![0u8; 64 * 1024];
    let mut cluster_index: u64 = 0;
    let mut run_start: Option<u64> = None;
    while cluster_index < clusters {
        let n = value
            .read(&mut cursor, &mut chunk)
            .map_err(|e| Error::ntfs(context, e))?;
        if n == 0 {
            break;
        }
        for &byte in &chunk[..n] {
            for bit in 0..8 {
                if cluster_index >= clusters {
                    break;
                }
                let set = byte & (1 << bit) != 0;
                match (set, run_start) {
                    (true, None) => run_start = Some(cluster_index),
                    (false, Some(start)) => {
                        used.add(start * cluster, cluster_index * cluster);
                        run_start = None;
                    }
                    _ => {}
                }
                cluster_index += 1;
            }
        }
    }
    if cluster_index < clusters {
        return Err(Error::corrupt(
            "NTFS $Bitmap",
            format!("covers {cluster_index} of {clusters} clusters"),
        ));
    }
    if let Some(start) = run_start {
        used.add(start * cluster, clusters * cluster);
    }
    Ok(used.into_sorted())
}
