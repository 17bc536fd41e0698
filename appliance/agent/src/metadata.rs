//! Turns what `lstat` says about a file system object into a catalog [`Entry`].
//!
//! Owner and group names are looked up once per id (a walk meets the same few ids over
//! and over); extended attributes include `system.posix_acl_*`, which is how ACLs travel.

use abri_store::{Entry, EntryKind};
use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use crate::platform;

/// Caches uid -> user name and gid -> group name of this machine.
#[derive(Default)]
pub struct NameCache {
    users: HashMap<u32, Option<String>>,
    groups: HashMap<u32, Option<String>>,
}

impl NameCache {
    pub fn user(&mut self, uid: u32) -> Option<String> {
        self.users
            .entry(uid)
            .or_insert_with(|| platform::user_name(uid))
            .clone()
    }

    pub fn group(&mut self, gid: u32) -> Option<String> {
        self.groups
            .entry(gid)
            .or_insert_with(|| platform::group_name(gid))
            .clone()
    }
}

/// Nanoseconds since the epoch from seconds and nanoseconds.
fn ns(sec: i64, nsec: i64) -> i64 {
    sec.saturating_mul(1_000_000_000).saturating_add(nsec)
}

/// The entry of the object at `abs` (already `lstat`ed into `meta`) under catalog path
/// `rel`, without extents. Reads the symlink target and the extended attributes; a failure
/// to read xattrs is returned as a warning, not an error (the entry is still useful).
pub fn capture(
    abs: &Path,
    rel: Vec<u8>,
    meta: &Metadata,
    names: &mut NameCache,
) -> std::io::Result<(Entry, Option<String>)> {
    let ft = meta.file_type();
    let kind = if ft.is_file() {
        EntryKind::File
    } else if ft.is_dir() {
        EntryKind::Dir
    } else if ft.is_symlink() {
        let target = std::fs::read_link(abs)?;
        EntryKind::Symlink {
            target: platform::os_bytes(target.as_os_str()).to_vec(),
        }
    } else if ft.is_fifo() {
        EntryKind::Fifo
    } else if ft.is_socket() {
        EntryKind::Socket
    } else if ft.is_char_device() {
        EntryKind::CharDevice { rdev: meta.rdev() }
    } else if ft.is_block_device() {
        EntryKind::BlockDevice { rdev: meta.rdev() }
    } else {
        return Err(std::io::Error::new(
            std::io::ErrorKind::Unsupported,
            "unknown file type",
        ));
    };
    let mut entry = Entry::new(rel, kind);
    entry.mode = meta.mode();
    entry.uid = meta.uid();
    entry.gid = meta.gid();
    entry.user = names.user(meta.uid());
    entry.group = names.group(meta.gid());
    entry.size = if ft.is_file() || ft.is_symlink() {
        meta.size()
    } else {
        0
    };
    entry.mtime_ns = ns(meta.mtime(), meta.mtime_nsec());
    entry.ctime_ns = ns(meta.ctime(), meta.ctime_nsec());
    entry.atime_ns = ns(meta.atime(), meta.atime_nsec());
    entry.inode = meta.ino();
    entry.dev = meta.dev();
    entry.nlink = u32::try_from(meta.nlink()).unwrap_or(u32::MAX);
    let warning = match platform::list_xattrs(abs) {
        Ok(x) => {
            entry.xattrs = x;
            None
        }
        Err(e) => Some(format!(
            "cannot read extended attributes of {}: {e}",
            abs.display()
        )),
    };
    Ok((entry, warning))
}

/// True when a regular file looks unchanged since `previous` was captured: same size,
/// mtime, ctime and inode (the rule that lets an incremental run skip reading it).
pub fn unchanged(previous: &Entry, current: &Entry) -> bool {
    matches!(previous.kind, EntryKind::File)
        && matches!(current.kind, EntryKind::File)
        && previous.size == current.size
        && previous.mtime_ns == current.mtime_ns
        && previous.ctime_ns == current.ctime_ns
        && previous.inode == current.inode
}
