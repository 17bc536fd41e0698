//! Setting an object's metadata through a handle opened on the object itself: times and
//! attributes, then the security descriptor. Without the privilege to give a file to
//! another owner, the DACL alone is set, with one warning for the whole restore.

use abri_store::{ChunkSource, Entry};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::windows::fs::OpenOptionsExt;
use std::os::windows::io::AsRawHandle;
use std::path::Path;

use windows_sys::Win32::Security as sec;
use windows_sys::Win32::Storage::FileSystem as fs;

use super::Restorer;
use crate::platform::windows::metadata::{SECURITY_PARTS, ns_to_filetime};
use crate::platform::windows::win::check;
use crate::platform::windows::{SHARE_ALL, wide};
use crate::restore::text;

/// Attributes a restore sets (the others describe the object and follow from its kind).
const SETTABLE_ATTRIBUTES: u32 = fs::FILE_ATTRIBUTE_READONLY
    | fs::FILE_ATTRIBUTE_HIDDEN
    | fs::FILE_ATTRIBUTE_SYSTEM
    | fs::FILE_ATTRIBUTE_ARCHIVE
    | fs::FILE_ATTRIBUTE_TEMPORARY
    | fs::FILE_ATTRIBUTE_OFFLINE
    | fs::FILE_ATTRIBUTE_NOT_CONTENT_INDEXED;

impl<S: ChunkSource> Restorer<'_, S> {
    /// Times, attributes and security descriptor through `file` (at `path`).
    pub(super) fn apply_meta(&mut self, file: &File, path: &Path, entry: &Entry) {
        let Some(w) = &entry.windows else {
            // A catalog from Linux: times only.
            if let Err(e) = set_basic(file, entry, None) {
                self.warn_io("times", entry, e);
            }
            return;
        };
        let attributes = w.attributes & SETTABLE_ATTRIBUTES;
        let sd = w.security_descriptor.clone();
        // The descriptor first: where the file system derives anything from it (Wine maps
        // the DACL to Unix permission bits) the attributes set after it still win.
        if !sd.is_empty() {
            self.apply_security(file, entry, &sd);
        }
        match set_basic(file, entry, Some(attributes)) {
            Ok(()) => {
                if let Err(e) = set_attributes(path, attributes) {
                    tracing::debug!("attributes of {} by path: {e}", path.display());
                }
            }
            Err(e) => self.warn_io("times and attributes", entry, e),
        }
    }

    fn apply_security(&mut self, file: &File, entry: &Entry, sd: &[u8]) {
        match set_security(file, sd, SECURITY_PARTS) {
            Ok(()) => {}
            Err(_) => match set_security(file, sd, sec::DACL_SECURITY_INFORMATION) {
                Ok(()) => {
                    if !self.owner_warned {
                        self.owner_warned = true;
                        self.counters.warn(format!(
                            "owners are not restored (first: {}): only an administrator or \
                             the agent's service may give files to another account; \
                             permissions are",
                            text(&entry.path)
                        ));
                    }
                }
                Err(e) => self.warn_io("permissions", entry, e),
            },
        }
    }
}

/// Opens an object as itself to set its times, attributes and security descriptor.
pub(super) fn open_for_metadata(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .access_mode(
            fs::FILE_READ_ATTRIBUTES | fs::FILE_WRITE_ATTRIBUTES | fs::WRITE_DAC | fs::WRITE_OWNER,
        )
        .share_mode(SHARE_ALL)
        .custom_flags(fs::FILE_FLAG_BACKUP_SEMANTICS | fs::FILE_FLAG_OPEN_REPARSE_POINT)
        .open(path)
}

/// Sets creation, access and modification times and (when given) attributes.
fn set_basic(file: &File, entry: &Entry, attributes: Option<u32>) -> io::Result<()> {
    let creation = entry
        .windows
        .as_ref()
        .map(|w| ns_to_filetime(w.creation_time_ns))
        .unwrap_or(0);
    let info = fs::FILE_BASIC_INFO {
        CreationTime: creation,
        LastAccessTime: ns_to_filetime(entry.atime_ns),
        LastWriteTime: ns_to_filetime(entry.mtime_ns),
        ChangeTime: 0, // 0 = leave as is
        // 0 = leave as is; FILE_ATTRIBUTE_NORMAL stands for "none of them".
        FileAttributes: match attributes {
            Some(0) => fs::FILE_ATTRIBUTE_NORMAL,
            Some(a) => a,
            None => 0,
        },
    };
    // SAFETY: info is a FILE_BASIC_INFO of the size given; the handle is open.
    check(unsafe {
        fs::SetFileInformationByHandle(
            file.as_raw_handle(),
            fs::FileBasicInfo,
            (&raw const info).cast(),
            size_of::<fs::FILE_BASIC_INFO>() as u32,
        )
    })
}

/// Sets the attributes by path as well: some file systems (and Wine) take the read-only
/// bit only this way.
fn set_attributes(path: &Path, attributes: u32) -> io::Result<()> {
    let p = wide(path);
    let a = if attributes == 0 {
        fs::FILE_ATTRIBUTE_NORMAL
    } else {
        attributes
    };
    // SAFETY: p is NUL-terminated.
    check(unsafe { fs::SetFileAttributesW(p.as_ptr(), a) })
}

fn set_security(file: &File, sd: &[u8], parts: u32) -> io::Result<()> {
    // The descriptor comes from the catalog: check it before handing it to the system.
    // SAFETY: IsValidSecurityDescriptor reads a buffer we own; length checked first.
    let valid =
        sd.len() >= 20 && unsafe { sec::IsValidSecurityDescriptor(sd.as_ptr() as *mut _) } != 0;
    if !valid {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "the snapshot holds an invalid security descriptor",
        ));
    }
    // SAFETY: sd is a valid self-relative descriptor; the handle has WRITE_DAC/WRITE_OWNER.
    check(unsafe {
        sec::SetKernelObjectSecurity(file.as_raw_handle(), parts, sd.as_ptr() as *mut _)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::platform::windows::metadata::{NameCache, capture};

    fn captured(path: &Path) -> Entry {
        let meta = std::fs::symlink_metadata(path).unwrap();
        capture(path, b"x".to_vec(), &meta, &mut NameCache)
            .unwrap()
            .0
    }

    #[test]
    fn attributes_times_and_security_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (
            crate::platform::windows::verbatim(&dir.path().join("a.txt")),
            crate::platform::windows::verbatim(&dir.path().join("b.txt")),
        );
        std::fs::write(&a, b"data").unwrap();
        std::fs::write(&b, b"data").unwrap();
        let mut entry = captured(&a);
        let w = entry.windows.as_mut().unwrap();
        w.attributes |= fs::FILE_ATTRIBUTE_HIDDEN | fs::FILE_ATTRIBUTE_READONLY;
        entry.mtime_ns = 1_600_000_000_123_456_700;
        entry.atime_ns = 1_600_000_100_000_000_000;
        let sd = w.security_descriptor.clone();
        let attrs = w.attributes & SETTABLE_ATTRIBUTES;
        {
            let f = open_for_metadata(&b).unwrap();
            set_security(&f, &sd, sec::DACL_SECURITY_INFORMATION).unwrap();
            set_basic(&f, &entry, Some(attrs)).unwrap();
            set_attributes(&b, attrs).unwrap();
            assert!(set_security(&f, &[1, 2, 3], sec::DACL_SECURITY_INFORMATION).is_err());
            assert!(set_security(&f, &[0; 40], sec::DACL_SECURITY_INFORMATION).is_err());
        }
        let back = captured(&b);
        let wb = back.windows.unwrap();
        assert_eq!(
            wb.attributes & SETTABLE_ATTRIBUTES,
            attrs,
            "{:#x}",
            wb.attributes
        );
        assert_eq!(back.mtime_ns, entry.mtime_ns);
        assert_eq!(back.mode, 0o100444);
        assert!(!wb.security_descriptor.is_empty());
    }
}
