//! Turns a Windows file system object into a catalog [`Entry`] (this is `crate::metadata`
//! on Windows; `src/metadata.rs` is the Unix one, with the same functions).
//!
//! The object is opened as itself (`FILE_FLAG_OPEN_REPARSE_POINT`) with backup semantics.
//! From that handle come its attributes, its four times, its volume serial and file index
//! (identity for hard links and for the incremental rule), its link count, its owner,
//! group and DACL (a self-relative security descriptor) and, for links, the reparse buffer.
//! `mode` is synthesised (`0o100644`, `0o100444` when read-only, `0o40755`, `0o120777`) so
//! that archives made by the box from a Windows snapshot have sensible permissions.

use abri_store::{Entry, EntryKind, WindowsMeta};
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::windows::fs::OpenOptionsExt;
use std::os::windows::io::AsRawHandle;
use std::path::Path;

use windows_sys::Win32::Foundation as wf;
use windows_sys::Win32::Security as sec;
use windows_sys::Win32::Storage::FileSystem as fs;
use windows_sys::Win32::System::IO::DeviceIoControl;
use windows_sys::Win32::System::Ioctl as ioctl;

use super::SHARE_ALL;
use super::win::check;
use crate::platform::reparse;
use crate::platform::winpath;

/// Owner, group and DACL: what a restore puts back. (The SACL, auditing, needs a privilege
/// most restores lack and is left out.)
pub const SECURITY_PARTS: u32 = sec::OWNER_SECURITY_INFORMATION
    | sec::GROUP_SECURITY_INFORMATION
    | sec::DACL_SECURITY_INFORMATION;

/// Ticks of 100 ns between 1601-01-01 (FILETIME's epoch) and 1970-01-01.
const EPOCH_DIFF_TICKS: i64 = 116_444_736_000_000_000;

/// FILETIME ticks (100 ns since 1601) to ns since the Unix epoch.
pub fn filetime_to_ns(ticks: i64) -> i64 {
    ticks.saturating_sub(EPOCH_DIFF_TICKS).saturating_mul(100)
}

/// ns since the Unix epoch to FILETIME ticks.
pub fn ns_to_filetime(ns: i64) -> i64 {
    ns.div_euclid(100).saturating_add(EPOCH_DIFF_TICKS)
}

/// Owner names are inside the security descriptor on Windows: nothing to cache.
#[derive(Default)]
pub struct NameCache;

/// What one open handle says about an object.
struct Facts {
    info: fs::BY_HANDLE_FILE_INFORMATION,
    change_ticks: Option<i64>,
    reparse_tag: u32,
}

fn filetime(ft: wf::FILETIME) -> i64 {
    (i64::from(ft.dwHighDateTime) << 32) | i64::from(ft.dwLowDateTime)
}

/// Opens the object itself for reading its metadata.
pub fn open_object(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .access_mode(fs::FILE_READ_ATTRIBUTES | fs::FILE_READ_EA | fs::READ_CONTROL)
        .share_mode(SHARE_ALL)
        .custom_flags(fs::FILE_FLAG_BACKUP_SEMANTICS | fs::FILE_FLAG_OPEN_REPARSE_POINT)
        .open(path)
}

fn facts(file: &File) -> io::Result<Facts> {
    let h = file.as_raw_handle();
    let mut info = fs::BY_HANDLE_FILE_INFORMATION::default();
    // SAFETY: info is a valid out-structure; h is open.
    check(unsafe { fs::GetFileInformationByHandle(h, &mut info) })?;
    let mut basic = fs::FILE_BASIC_INFO::default();
    // SAFETY: basic is a FILE_BASIC_INFO of the size given.
    let change_ticks = (unsafe {
        fs::GetFileInformationByHandleEx(
            h,
            fs::FileBasicInfo,
            (&raw mut basic).cast(),
            size_of::<fs::FILE_BASIC_INFO>() as u32,
        )
    } != 0)
        .then_some(basic.ChangeTime);
    let mut tag = fs::FILE_ATTRIBUTE_TAG_INFO::default();
    let reparse_tag = if info.dwFileAttributes & fs::FILE_ATTRIBUTE_REPARSE_POINT != 0 {
        // SAFETY: as above.
        check(unsafe {
            fs::GetFileInformationByHandleEx(
                h,
                fs::FileAttributeTagInfo,
                (&raw mut tag).cast(),
                size_of::<fs::FILE_ATTRIBUTE_TAG_INFO>() as u32,
            )
        })?;
        tag.ReparseTag
    } else {
        0
    };
    Ok(Facts {
        info,
        change_ticks,
        reparse_tag,
    })
}

/// The self-relative security descriptor (owner, group, DACL) of an open object.
pub fn security_descriptor(file: &File) -> io::Result<Vec<u8>> {
    let h = file.as_raw_handle();
    let mut needed = 0u32;
    // SAFETY: a null buffer of size 0 asks for the size.
    unsafe {
        sec::GetKernelObjectSecurity(h, SECURITY_PARTS, std::ptr::null_mut(), 0, &mut needed)
    };
    if needed == 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; needed as usize];
    // SAFETY: buf is valid for needed bytes.
    check(unsafe {
        sec::GetKernelObjectSecurity(
            h,
            SECURITY_PARTS,
            buf.as_mut_ptr().cast(),
            needed,
            &mut needed,
        )
    })?;
    buf.truncate(needed as usize);
    Ok(buf)
}

/// The reparse buffer of an open link.
fn reparse_buffer(file: &File) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut returned = 0u32;
    // SAFETY: buf is valid for its length; no input buffer.
    check(unsafe {
        DeviceIoControl(
            file.as_raw_handle(),
            ioctl::FSCTL_GET_REPARSE_POINT,
            std::ptr::null(),
            0,
            buf.as_mut_ptr().cast(),
            buf.len() as u32,
            &mut returned,
            std::ptr::null_mut(),
        )
    })?;
    buf.truncate(returned as usize);
    Ok(buf)
}

/// The entry of the object at `abs` under catalog path `rel`, without extents. A security
/// descriptor that cannot be read is a warning, not an error (the entry is still useful).
pub fn capture(
    abs: &Path,
    rel: Vec<u8>,
    _meta: &Metadata,
    _names: &mut NameCache,
) -> io::Result<(Entry, Option<String>)> {
    let file = open_object(abs)?;
    let f = facts(&file)?;
    let attrs = f.info.dwFileAttributes;
    let is_dir = attrs & fs::FILE_ATTRIBUTE_DIRECTORY != 0;
    let link = match f.reparse_tag {
        reparse::TAG_SYMLINK | reparse::TAG_MOUNT_POINT => {
            let buf = reparse_buffer(&file)?;
            Some(reparse::parse(&buf).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "unreadable link (reparse point)",
                )
            })?)
        }
        _ => None,
    };
    let kind = match &link {
        Some(l) => EntryKind::Symlink {
            target: winpath::utf16_to_bytes(l.target()),
        },
        None if is_dir => EntryKind::Dir,
        None => EntryKind::File,
    };
    let size = (u64::from(f.info.nFileSizeHigh) << 32) | u64::from(f.info.nFileSizeLow);
    let mut entry = Entry::new(rel, kind);
    entry.mode = match (&link, is_dir) {
        (Some(_), _) => 0o120777,
        (None, true) => 0o40755,
        (None, false) if attrs & fs::FILE_ATTRIBUTE_READONLY != 0 => 0o100444,
        (None, false) => 0o100644,
    };
    entry.size = if link.is_none() && !is_dir { size } else { 0 };
    if let Some(l) = &link {
        entry.size = l.target().len() as u64;
    }
    let write = filetime(f.info.ftLastWriteTime);
    entry.mtime_ns = filetime_to_ns(write);
    entry.atime_ns = filetime_to_ns(filetime(f.info.ftLastAccessTime));
    entry.ctime_ns = filetime_to_ns(f.change_ticks.unwrap_or(write));
    entry.inode = (u64::from(f.info.nFileIndexHigh) << 32) | u64::from(f.info.nFileIndexLow);
    entry.dev = u64::from(f.info.dwVolumeSerialNumber);
    entry.nlink = f.info.nNumberOfLinks;
    let (security_descriptor, warning) = match security_descriptor(&file) {
        Ok(sd) => (sd, None),
        Err(e) => (
            Vec::new(),
            Some(format!(
                "cannot read the security descriptor of {}: {e}",
                abs.display()
            )),
        ),
    };
    entry.windows = Some(WindowsMeta {
        attributes: attrs,
        creation_time_ns: filetime_to_ns(filetime(f.info.ftCreationTime)),
        security_descriptor,
    });
    Ok((entry, warning))
}

/// True when a regular file looks unchanged since `previous` was captured: same size,
/// modification and change times, and file index.
pub fn unchanged(previous: &Entry, current: &Entry) -> bool {
    matches!(previous.kind, EntryKind::File)
        && matches!(current.kind, EntryKind::File)
        && previous.size == current.size
        && previous.mtime_ns == current.mtime_ns
        && previous.ctime_ns == current.ctime_ns
        && previous.inode == current.inode
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filetimes_convert_both_ways() {
        assert_eq!(filetime_to_ns(EPOCH_DIFF_TICKS), 0);
        assert_eq!(filetime_to_ns(EPOCH_DIFF_TICKS + 15), 1500);
        assert_eq!(ns_to_filetime(1_500), EPOCH_DIFF_TICKS + 15);
        assert_eq!(ns_to_filetime(-100), EPOCH_DIFF_TICKS - 1);
        let ns = 1_795_268_701_123_456_700;
        assert_eq!(filetime_to_ns(ns_to_filetime(ns)), ns);
    }

    #[test]
    fn captures_attributes_times_and_security_of_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = super::super::verbatim(&dir.path().join("Données.txt"));
        std::fs::write(&path, b"hello").unwrap();
        let meta = std::fs::symlink_metadata(&path).unwrap();
        let (e, warning) = capture(&path, b"x".to_vec(), &meta, &mut NameCache).unwrap();
        assert!(warning.is_none(), "{warning:?}");
        assert!(matches!(e.kind, EntryKind::File));
        assert_eq!(e.size, 5);
        assert_eq!(e.mode, 0o100644);
        let w = e.windows.unwrap();
        assert_ne!(
            w.attributes & fs::FILE_ATTRIBUTE_ARCHIVE,
            0,
            "{:#x}",
            w.attributes
        );
        assert!(!w.security_descriptor.is_empty());
        let modified = meta
            .modified()
            .unwrap()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap();
        assert_eq!(e.mtime_ns, modified.as_nanos() as i64);
        assert_eq!(e.nlink, 1);
    }
}
