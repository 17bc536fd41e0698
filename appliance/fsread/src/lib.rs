//! Reading disks and file systems from a random-access byte source, without mounting.
//!
//! Image-mode backups use this crate twice. The agent, imaging a disk or a partition,
//! asks which bytes the file system uses and reads only those ([`used_ranges`]). The box
//! (and the agent, for restores) browses and reads files inside an image backup
//! ([`open_fs`]), reading the file system through a [`ReadAt`] whose bytes come from the
//! chunk store. Everything is synchronous: the caller supplies the bytes.
//!
//! # What is read
//!
//! - **Partition tables** ([`read_partition_table`]): GPT with 512- or 4096-byte sectors
//!   (primary header, else the backup at the end; both checksums verified; a protective MBR
//!   is not reported), and MBR with logical partitions found through the extended
//!   partition's EBR chain.
//! - **ext2, ext3, ext4** (one superblock format): the used set comes from the block group
//!   descriptors and block bitmaps (64bit, flex_bg, meta_bg, sparse_super/sparse_super2 and
//!   bigalloc are handled; a BLOCK_UNINIT group contributes its superblock and descriptor
//!   copies; bitmaps and inode tables of every group are always included). Browsing reads
//!   directories linearly (htree directories included), extent trees (unwritten extents
//!   read as zeros), ext2/3 indirect block maps, fast and slow symlinks, and inline data.
//!   Metadata checksums are not verified.
//! - **NTFS 3.x** through the `ntfs` crate: the used set is every cluster `$Bitmap` marks,
//!   plus the boot sector and its backup in the sector after the volume. Browsing hides the
//!   metadata files (records 0-23: `$MFT`, `$Bitmap`, ...) and DOS 8.3 aliases; path
//!   lookups are case-insensitive. Symlinks, junctions and WSL links show as
//!   [`EntryKind::Symlink`].
//!
//! # Limits
//!
//! - An ext4 file system whose journal still needs replaying (it was not cleanly unmounted
//!   or frozen) is reported as wholly used: the journal may log allocations the bitmaps do
//!   not show. Browsing such a file system sees its state before the journal.
//! - Not read (each gives [`Error::Unsupported`], never wrong bytes): fscrypt-encrypted ext4
//!   files, NTFS compressed, EFS-encrypted, WOF-compressed and deduplicated files.
//! - NTFS data between a file's valid data length and its size is returned as stored.
//! - MBRs are read with 512-byte sectors.
//! - Symbolic links are never followed; `..` in a path is refused.
//!
//! # Unknown file systems
//!
//! [`detect`] and [`used_ranges`] return `None` for anything else (XFS, Btrfs, FAT, LVM,
//! BitLocker, ...). The agent then reads the whole source: the image stays complete, only
//! larger. [`open_fs`] fails with [`Error::UnknownFileSystem`].
//!
//! # Hostile input
//!
//! The box parses images that agents upload, so every on-disk number is checked before it
//! sizes a read, an allocation or a loop: a damaged image gives an [`Error`], never a panic.

mod entry;
mod error;
mod ext4;
mod ntfs;
mod partition;
mod ranges;
mod source;

use std::ops::Range;
use std::sync::Arc;

pub use entry::{EntryKind, FileReader, FileSystem, FsEntry, FsFile, FsKind};
pub use error::{Error, Result};
pub use partition::{
    MAX_GPT_ENTRIES, MAX_LOGICAL, Partition, PartitionTable, TableKind, read_partition_table,
};
pub use source::{ReadAt, Slice};

/// Which file system the source holds, from its superblock or boot sector signature.
pub fn detect(src: &dyn ReadAt) -> Option<FsKind> {
    if ntfs::detect(src) {
        Some(FsKind::Ntfs)
    } else if ext4::detect(src) {
        Some(FsKind::Ext4)
    } else {
        None
    }
}

/// The byte ranges the file system on `src` uses, sorted and merged, in bytes from the
/// start of `src`. An image holding only these ranges (zeros elsewhere) is a consistent
/// copy of the file system. Bytes of `src` after the file system's end (a volume grown
/// without growing its file system) are always included: they are not the file system's. `Ok(None)` when the file system is not one this crate reads:
/// the caller then reads all of `src`.
pub fn used_ranges(src: &dyn ReadAt) -> Result<Option<Vec<Range<u64>>>> {
    match detect(src) {
        Some(FsKind::Ntfs) => ntfs::used_ranges(src).map(Some),
        Some(FsKind::Ext4) => ext4::used_ranges(src).map(Some),
        None => Ok(None),
    }
}

/// Opens the file system on `src` read-only for browsing.
pub fn open_fs(src: Arc<dyn ReadAt>) -> Result<Box<dyn FileSystem>> {
    match detect(&*src) {
        Some(FsKind::Ntfs) => Ok(Box::new(ntfs::NtfsFs::open(src)?)),
        Some(FsKind::Ext4) => Ok(Box::new(ext4::Ext4::open(src)?)),
        None => Err(Error::UnknownFileSystem),
    }
}
