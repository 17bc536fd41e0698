//! Windows system calls the agent needs beyond `std`: volumes, file identity and
//! attributes, security descriptors, reparse points, sparse ranges, privileges.
//!
//! Paths are always in the `\\?\C:\...` form (no 260-character limit, no reserved names);
//! names cross into the catalog as WTF-8 (`winpath`). Objects are opened with
//! `FILE_FLAG_OPEN_REPARSE_POINT`, so a symbolic link or junction is read as itself and
//! never followed. `unsafe` stays in the `win` helpers below, each block next to its call.

pub mod metadata;
pub mod restore;
pub mod service;
pub mod vss;

use std::ffi::{OsStr, OsString};
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::windows::ffi::{OsStrExt, OsStringExt};
use std::os::windows::fs::OpenOptionsExt;
use std::os::windows::io::AsRawHandle;
use std::path::{Path, PathBuf};
use std::sync::Once;

use windows_sys::Win32::Foundation as wf;
use windows_sys::Win32::Storage::FileSystem as fs;
use windows_sys::Win32::System::IO::DeviceIoControl;
use windows_sys::Win32::System::Ioctl as ioctl;

use super::winpath;

pub use vss::VolumeSnapshots;

/// The OS name the box expects.
pub const OS_NAME: &str = "windows";

/// Share mode that lets others keep reading, writing and renaming what the agent opens.
pub(crate) const SHARE_ALL: u32 =
    fs::FILE_SHARE_READ | fs::FILE_SHARE_WRITE | fs::FILE_SHARE_DELETE;

/// NUL-terminated UTF-16 of a path, for Win32 calls.
pub(crate) fn wide(path: &Path) -> Vec<u16> {
    path.as_os_str().encode_wide().chain([0]).collect()
}

/// The `\\?\` form of an absolute path (`C:\x` -> `\\?\C:\x`); other paths unchanged.
pub fn verbatim(path: &Path) -> PathBuf {
    let s = path.as_os_str().to_string_lossy();
    if s.starts_with(r"\\?\") || s.starts_with(r"\\.\") {
        return path.to_path_buf();
    }
    let b = s.as_bytes();
    if b.len() >= 3 && b[0].is_ascii_alphabetic() && b[1] == b':' && (b[2] == b'\\' || b[2] == b'/')
    {
        let mut out = OsString::from(r"\\?\");
        // Verbatim paths take no `/` and no `.` components: normalise them here.
        let mut p = PathBuf::from(format!("{}:\\", (b[0] as char).to_ascii_uppercase()));
        for c in path.components().skip(2) {
            match c {
                std::path::Component::Normal(n) => p.push(n),
                std::path::Component::ParentDir => {
                    p.pop();
                }
                _ => {}
            }
        }
        out.push(p.as_os_str());
        return PathBuf::from(out);
    }
    path.to_path_buf()
}

/// Enables the privileges a backup agent uses when it has them (an administrator or the
/// service account): read and write every file whatever its ACL, set any owner, create
/// symbolic links. Once per process; a privilege the token lacks is simply not enabled.
pub fn enable_backup_privileges() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        for name in [
            "SeBackupPrivilege",
            "SeRestorePrivilege",
            "SeCreateSymbolicLinkPrivilege",
            "SeSecurityPrivilege",
        ] {
            if let Err(e) = win::enable_privilege(name) {
                tracing::debug!("privilege {name} not enabled: {e}");
            }
        }
    });
}

// ---- what the walk needs (same functions as linux.rs) ----

/// `/` (or an empty path) is the machine's set of volumes; any other root is a directory.
fn is_volume_root(root: &Path) -> bool {
    let s = root.as_os_str();
    s.is_empty() || s == "/" || s == "\\"
}

/// The directory a walk of `root` starts from: the volume set stays an empty path, a real
/// directory gets its `\\?\` form.
pub fn walk_root(root: &Path) -> PathBuf {
    enable_backup_privileges();
    if is_volume_root(root) {
        PathBuf::new()
    } else {
        verbatim(&std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf()))
    }
}

/// The components of a plan's selection below the walk's root; a warning when skipped.
pub fn selection_components(root: &Path, sel: &str) -> Result<Vec<Vec<u8>>, String> {
    if root.as_os_str().is_empty() {
        return match winpath::selection(sel) {
            winpath::Selection::AllVolumes => Ok(Vec::new()),
            winpath::Selection::Path(c) => Ok(c),
            winpath::Selection::NotWindows => Err(format!(
                "selection {sel:?} is not a Windows path (like C:\\Users): skipped on this machine"
            )),
        };
    }
    let mut out = Vec::new();
    for c in sel
        .split(['/', '\\'])
        .filter(|c| !c.is_empty() && *c != ".")
    {
        if c == ".." {
            return Err(format!("selection {sel:?} contains '..': skipped"));
        }
        out.push(winpath::utf16_to_bytes(
            &c.encode_utf16().collect::<Vec<_>>(),
        ));
    }
    Ok(out)
}

/// Device numbers only matter to Linux's pseudo file systems.
pub fn root_device(root: &Path) -> io::Result<u64> {
    if root.as_os_str().is_empty() {
        return Ok(0);
    }
    std::fs::symlink_metadata(root).map(|_| 0)
}

/// See [`root_device`].
pub fn device_of(_meta: &Metadata) -> u64 {
    0
}

/// Windows has no pseudo file systems in a walk.
pub fn is_pseudo_fs(_path: &Path) -> bool {
    false
}

/// The fixed volumes' drive letters (`C`, `D`), in order: what the selection `/` backs up.
pub fn fixed_volumes() -> Vec<Vec<u8>> {
    let mask = win::logical_drives();
    (0..26u8)
        .filter(|i| mask & (1 << i) != 0)
        .map(|i| (b'A' + i) as char)
        .filter(|letter| win::is_fixed_drive(*letter))
        .map(|letter| vec![letter as u8])
        .collect()
}

/// The names in a directory (the volume set: its fixed volumes), unsorted.
pub fn list_dir(dir: &Path) -> io::Result<Vec<Vec<u8>>> {
    if dir.as_os_str().is_empty() {
        return Ok(fixed_volumes());
    }
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let name: Vec<u16> = e?.file_name().encode_wide().collect();
        names.push(winpath::utf16_to_bytes(&name));
    }
    Ok(names)
}

/// The path of `name` in directory `parent` (in the volume set: the volume's root).
pub fn child_path(parent: &Path, name: &[u8]) -> PathBuf {
    if parent.as_os_str().is_empty() {
        return PathBuf::from(format!(r"\\?\{}:\", String::from_utf8_lossy(name)));
    }
    parent.join(OsString::from_wide(&winpath::bytes_to_utf16(name)))
}

/// What exclusion rules are matched against: `/C/Users/...` (the catalog path under `/`).
pub fn exclusion_key<'a>(_abs: &'a Path, rel: &[u8]) -> std::borrow::Cow<'a, [u8]> {
    let mut key = Vec::with_capacity(rel.len() + 1);
    key.push(b'/');
    key.extend_from_slice(rel);
    std::borrow::Cow::Owned(key)
}

// ---- reading files ----

/// Opens a file for backup reading, shared with its other users, with backup semantics
/// (privilege permitting). Never through a link: the object itself is opened first, and
/// only a file whose reparse point is not a link (deduplicated, compressed by the system,
/// a cloud placeholder) is opened again normally, so that its content is what is read.
pub fn open_for_backup(path: &Path) -> io::Result<File> {
    let open = |flags: u32| {
        OpenOptions::new()
            .read(true)
            .share_mode(SHARE_ALL)
            .custom_flags(fs::FILE_FLAG_BACKUP_SEMANTICS | fs::FILE_FLAG_SEQUENTIAL_SCAN | flags)
            .open(path)
    };
    let file = open(fs::FILE_FLAG_OPEN_REPARSE_POINT)?;
    let mut tag = fs::FILE_ATTRIBUTE_TAG_INFO::default();
    // SAFETY: tag is a FILE_ATTRIBUTE_TAG_INFO of the size given; the handle is open.
    let ok = unsafe {
        fs::GetFileInformationByHandleEx(
            file.as_raw_handle(),
            fs::FileAttributeTagInfo,
            (&raw mut tag).cast(),
            size_of::<fs::FILE_ATTRIBUTE_TAG_INFO>() as u32,
        )
    };
    /// Bit of the reparse tags that name another object (links, junctions).
    const NAME_SURROGATE: u32 = 0x2000_0000;
    let data_reparse = ok != 0
        && tag.FileAttributes & fs::FILE_ATTRIBUTE_REPARSE_POINT != 0
        && tag.ReparseTag & NAME_SURROGATE == 0;
    if data_reparse {
        drop(file);
        return open(0);
    }
    Ok(file)
}

/// The next allocated region of `file` at or after `offset` and before `size`:
/// `(start, end)`. Where the file system cannot say (FAT, a network share), the rest of the
/// file is data.
pub fn next_data_region(file: &File, offset: u64, size: u64) -> io::Result<Option<(u64, u64)>> {
    if offset >= size {
        return Ok(None);
    }
    let query = ioctl::FILE_ALLOCATED_RANGE_BUFFER {
        FileOffset: offset as i64,
        Length: (size - offset) as i64,
    };
    let mut out = [ioctl::FILE_ALLOCATED_RANGE_BUFFER::default(); 1];
    let mut returned = 0u32;
    // SAFETY: the input and output buffers are valid for the sizes given; the handle is open.
    let ok = unsafe {
        DeviceIoControl(
            file.as_raw_handle(),
            ioctl::FSCTL_QUERY_ALLOCATED_RANGES,
            (&raw const query).cast(),
            size_of_val(&query) as u32,
            out.as_mut_ptr().cast(),
            size_of_val(&out) as u32,
            &mut returned,
            std::ptr::null_mut(),
        )
    };
    if ok == 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(wf::ERROR_MORE_DATA as i32) {
            return Ok(Some((offset, size)));
        }
    }
    if (returned as usize) < size_of_val(&out) {
        return Ok(None); // no allocated range left: a hole to the end
    }
    let start = (out[0].FileOffset.max(0) as u64).max(offset);
    let end = (out[0].FileOffset.saturating_add(out[0].Length).max(0) as u64).min(size);
    if start >= end {
        return Ok(None);
    }
    Ok(Some((start, end)))
}

// ---- identity ----

/// True when the process runs elevated (administrator or service): owners can then be
/// restored as they were.
pub fn is_root() -> bool {
    win::is_elevated()
}

/// The machine's host name.
pub fn hostname() -> String {
    win::dns_host_name().unwrap_or_else(|| "unknown".into())
}

/// Path bytes of an OS string (WTF-8).
pub fn os_bytes(s: &OsStr) -> Vec<u8> {
    winpath::utf16_to_bytes(&s.encode_wide().collect::<Vec<_>>())
}

/// OS string of path bytes.
pub fn bytes_os(b: &[u8]) -> OsString {
    OsString::from_wide(&winpath::bytes_to_utf16(b))
}

/// Lets only SYSTEM, the Administrators group and the file's owner (whoever enrolled) open
/// `path` (the agent's configuration holds the machine's key): a protected DACL, so nothing
/// is inherited from the folder.
pub fn restrict_to_administrators(path: &Path) -> io::Result<()> {
    win::set_sddl(path, "D:P(A;;FA;;;SY)(A;;FA;;;BA)(A;;FA;;;OW)")
}

/// Thin safe wrappers around the Win32 calls above.
pub(crate) mod win {
    use super::*;
    use windows_sys::Win32::Security as sec;
    use windows_sys::Win32::Security::Authorization as authz;
    use windows_sys::Win32::System::SystemInformation as sysinfo;
    use windows_sys::Win32::System::Threading as thr;

    pub fn check(ok: i32) -> io::Result<()> {
        if ok == 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    pub fn logical_drives() -> u32 {
        // SAFETY: no arguments.
        unsafe { fs::GetLogicalDrives() }
    }

    /// `GetDriveTypeW`'s answer for a fixed disk.
    const DRIVE_FIXED: u32 = 3;

    pub fn is_fixed_drive(letter: char) -> bool {
        let root: Vec<u16> = format!("{letter}:\\").encode_utf16().chain([0]).collect();
        // SAFETY: root is NUL-terminated.
        unsafe { fs::GetDriveTypeW(root.as_ptr()) == DRIVE_FIXED }
    }

    pub fn dns_host_name() -> Option<String> {
        let mut buf = [0u16; 256];
        let mut len = buf.len() as u32;
        // SAFETY: buf holds len units.
        let ok = unsafe {
            sysinfo::GetComputerNameExW(
                sysinfo::ComputerNameDnsHostname,
                buf.as_mut_ptr(),
                &mut len,
            )
        };
        (ok != 0).then(|| String::from_utf16_lossy(&buf[..len as usize]))
    }

    struct Token(wf::HANDLE);

    impl Drop for Token {
        fn drop(&mut self) {
            // SAFETY: the handle came from OpenProcessToken and is closed once.
            unsafe { wf::CloseHandle(self.0) };
        }
    }

    fn process_token(access: u32) -> io::Result<Token> {
        let mut h: wf::HANDLE = std::ptr::null_mut();
        // SAFETY: the pseudo handle of this process; h receives a new handle.
        check(unsafe { thr::OpenProcessToken(thr::GetCurrentProcess(), access, &mut h) })?;
        Ok(Token(h))
    }

    pub fn enable_privilege(name: &str) -> io::Result<()> {
        let token = process_token(sec::TOKEN_ADJUST_PRIVILEGES | sec::TOKEN_QUERY)?;
        let wname: Vec<u16> = name.encode_utf16().chain([0]).collect();
        let mut luid = wf::LUID::default();
        // SAFETY: wname is NUL-terminated; luid is written.
        check(unsafe { sec::LookupPrivilegeValueW(std::ptr::null(), wname.as_ptr(), &mut luid) })?;
        let tp = sec::TOKEN_PRIVILEGES {
            PrivilegeCount: 1,
            Privileges: [sec::LUID_AND_ATTRIBUTES {
                Luid: luid,
                Attributes: sec::SE_PRIVILEGE_ENABLED,
            }],
        };
        // SAFETY: tp is a valid one-privilege TOKEN_PRIVILEGES.
        check(unsafe {
            sec::AdjustTokenPrivileges(
                token.0,
                0,
                &tp,
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        })?;
        // AdjustTokenPrivileges succeeds without enabling a privilege the token lacks.
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(wf::ERROR_NOT_ALL_ASSIGNED as i32) {
            return Err(e);
        }
        Ok(())
    }

    pub fn is_elevated() -> bool {
        let Ok(token) = process_token(sec::TOKEN_QUERY) else {
            return false;
        };
        let mut elevation = sec::TOKEN_ELEVATION::default();
        let mut len = 0u32;
        // SAFETY: the buffer is a TOKEN_ELEVATION of the size given.
        let ok = unsafe {
            sec::GetTokenInformation(
                token.0,
                sec::TokenElevation,
                (&raw mut elevation).cast(),
                size_of::<sec::TOKEN_ELEVATION>() as u32,
                &mut len,
            )
        };
        ok != 0 && elevation.TokenIsElevated != 0
    }

    /// Sets the security descriptor of `path` from SDDL text.
    pub fn set_sddl(path: &Path, sddl: &str) -> io::Result<()> {
        let text: Vec<u16> = sddl.encode_utf16().chain([0]).collect();
        let mut sd: sec::PSECURITY_DESCRIPTOR = std::ptr::null_mut();
        // SAFETY: text is NUL-terminated; sd receives a LocalAlloc'ed descriptor.
        check(unsafe {
            authz::ConvertStringSecurityDescriptorToSecurityDescriptorW(
                text.as_ptr(),
                authz::SDDL_REVISION_1,
                &mut sd,
                std::ptr::null_mut(),
            )
        })?;
        let p = wide(path);
        // SAFETY: p is NUL-terminated and sd a valid descriptor, freed right after.
        let result = check(unsafe {
            sec::SetFileSecurityW(
                p.as_ptr(),
                sec::DACL_SECURITY_INFORMATION | sec::PROTECTED_DACL_SECURITY_INFORMATION,
                sd,
            )
        });
        // SAFETY: sd came from LocalAlloc inside the conversion call.
        unsafe { wf::LocalFree(sd) };
        result
    }
}
