//! The disks the box stores on, and how full they are.
//!
//! `/proc/self/mountinfo` says which file systems are mounted where; `statvfs` says how
//! big and how full each is. Pseudo file systems (proc, tmpfs, cgroup, overlay, ...) are
//! not disks and are left out; a disk mounted several times (bind mounts, which containers
//! are full of) is listed once.

use std::io;
use std::path::Path;

use serde::Serialize;

mod mountinfo;

use mountinfo::{MountEntry, parse_mountinfo};

const MOUNTINFO: &str = "/proc/self/mountinfo";

/// File system types that live on a block device (or a pool of them, for zfs).
const DISK_FS_TYPES: &[&str] = &[
    "ext2", "ext3", "ext4", "xfs", "btrfs", "bcachefs", "f2fs", "jfs", "reiserfs", "nilfs2", "zfs",
    "vfat", "msdos", "exfat", "ntfs", "ntfs3", "fuseblk", "hfsplus",
];

/// One mounted file system and its size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DiskUsage {
    /// Where it is mounted, such as `/` or `/data`.
    pub mount: String,
    /// What is mounted, such as `/dev/sda2` (`unknown` when the mount table is unreadable).
    pub device: String,
    /// Such as `ext4` (`unknown` when the mount table is unreadable).
    pub fs_type: String,
    pub total_bytes: u64,
    /// Bytes an unprivileged writer can still use (`df`'s "Avail").
    pub free_bytes: u64,
}

/// Every mounted disk file system, sorted by mount point.
///
/// Reading errors give a shorter (possibly empty) list rather than an error: the box page
/// should still show the rest.
pub fn disks() -> Vec<DiskUsage> {
    let entries = match std::fs::read_to_string(MOUNTINFO) {
        Ok(text) => parse_mountinfo(&text),
        Err(err) => {
            tracing::warn!("cannot read {MOUNTINFO}: {err}");
            return Vec::new();
        }
    };
    disk_mounts(&entries)
        .into_iter()
        .filter_map(|entry| match sizes(Path::new(&entry.mount_point)) {
            Ok((total_bytes, free_bytes)) => Some(usage(entry, total_bytes, free_bytes)),
            Err(err) => {
                tracing::debug!("skipping {}: {err}", entry.mount_point);
                None
            }
        })
        .collect()
}

/// [`disks`], plus the file system holding `path` when it is not already listed (in
/// development or in a container the state directory is often on an overlay or tmpfs).
pub fn disks_including(path: &Path) -> Vec<DiskUsage> {
    let mut found = disks();
    match usage_of(path) {
        Ok(extra) if !found.iter().any(|d| d.mount == extra.mount) => found.push(extra),
        Ok(_) => {}
        Err(err) => tracing::warn!("cannot measure the disk holding {}: {err}", path.display()),
    }
    found
}

/// The file system holding `path`, whatever its type.
pub fn usage_of(path: &Path) -> io::Result<DiskUsage> {
    let path = path.canonicalize().map_err(|err| with_path(err, path))?;
    let (total_bytes, free_bytes) = sizes(&path)?;
    let entries = std::fs::read_to_string(MOUNTINFO)
        .map(|text| parse_mountinfo(&text))
        .unwrap_or_default();
    Ok(match mount_holding(&entries, &path) {
        Some(entry) => usage(entry, total_bytes, free_bytes),
        None => DiskUsage {
            mount: path.display().to_string(),
            device: "unknown".to_string(),
            fs_type: "unknown".to_string(),
            total_bytes,
            free_bytes,
        },
    })
}

/// The disk file systems of a mount table, one entry per device, sorted by mount point.
///
/// Of several mounts of one device, the one of its root directory wins (a bind mount of a
/// subdirectory is not where the disk "is"), then the shortest mount point.
fn disk_mounts(entries: &[MountEntry]) -> Vec<&MountEntry> {
    let mut chosen: Vec<&MountEntry> = Vec::new();
    for entry in entries
        .iter()
        .filter(|e| DISK_FS_TYPES.contains(&e.fs_type.as_str()))
    {
        match chosen.iter_mut().find(|c| c.device_id == entry.device_id) {
            Some(current) if preference(entry) < preference(current) => *current = entry,
            Some(_) => {}
            None => chosen.push(entry),
        }
    }
    chosen.sort_by(|a, b| a.mount_point.cmp(&b.mount_point));
    chosen
}

fn preference(entry: &MountEntry) -> (bool, usize) {
    (entry.root != "/", entry.mount_point.len())
}

/// The mount whose mount point is the longest prefix of `path` (a canonical path); the
/// last one wins a tie, since a later mount on the same point hides the earlier.
fn mount_holding<'a>(entries: &'a [MountEntry], path: &Path) -> Option<&'a MountEntry> {
    entries
        .iter()
        .filter(|e| path.starts_with(&e.mount_point))
        .max_by_key(|e| Path::new(&e.mount_point).components().count())
}

fn usage(entry: &MountEntry, total_bytes: u64, free_bytes: u64) -> DiskUsage {
    DiskUsage {
        mount: entry.mount_point.clone(),
        device: entry.source.clone(),
        fs_type: entry.fs_type.clone(),
        total_bytes,
        free_bytes,
    }
}

/// (total, available) bytes of the file system holding `path`.
fn sizes(path: &Path) -> io::Result<(u64, u64)> {
    let stat = nix::sys::statvfs::statvfs(path)
        .map_err(|errno| with_path(io::Error::from(errno), path))?;
    let unit = widen(stat.fragment_size());
    Ok((
        widen(stat.blocks()).saturating_mul(unit),
        widen(stat.blocks_available()).saturating_mul(unit),
    ))
}

/// The statvfs fields are u32 or u64 depending on the target; all fit in u64.
fn widen<T: Into<u64>>(value: T) -> u64 {
    value.into()
}

fn with_path(err: io::Error, path: &Path) -> io::Error {
    io::Error::new(err.kind(), format!("{}: {err}", path.display()))
}

#[cfg(test)]
mod tests;
