//! Linux system calls the agent needs beyond `std`: extended attributes, sparse-file data
//! regions, pseudo file systems, and the `*at` family that lets a restore create objects
//! relative to a directory handle without ever following a symbolic link.
//!
//! Every function takes and returns plain Rust types; `unsafe` stays in this file, each
//! block next to the one libc call it makes.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

fn cstr(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a name"))
}

fn check(ret: libc::c_int) -> io::Result<()> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// The extended attributes of `path` itself (a symlink's own, not its target's), names
/// sorted. Returns an empty list where the file system has none or does not support them.
pub fn list_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let c = cstr(path.as_os_str().as_bytes())?;
    let names = loop {
        // SAFETY: a null buffer of size 0 asks for the needed size.
        let size = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOTSUP) => Ok(Vec::new()),
                _ => Err(e),
            };
        }
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; size as usize];
        // SAFETY: buf is valid for buf.len() bytes.
        let got = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
        if got < 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::ERANGE) {
                continue; // grew between the two calls
            }
            return Err(e);
        }
        buf.truncate(got as usize);
        break buf;
    };
    let mut out = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        match get_xattr(&c, name) {
            Ok(Some(value)) => out.push((name.to_vec(), value)),
            Ok(None) => {} // removed meanwhile
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}

fn get_xattr(path: &CString, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let cname = cstr(name)?;
    loop {
        // SAFETY: a null buffer of size 0 asks for the needed size.
        let size =
            unsafe { libc::lgetxattr(path.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0) };
        if size < 0 {
            let e = io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENODATA) => Ok(None),
                _ => Err(e),
            };
        }
        let mut buf = vec![0u8; size as usize];
        // SAFETY: buf is valid for buf.len() bytes.
        let got = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                cname.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if got < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::ERANGE) => continue,
                Some(libc::ENODATA) => return Ok(None),
                _ => return Err(e),
            }
        }
        buf.truncate(got as usize);
        return Ok(Some(buf));
    }
}

/// Sets an extended attribute on `name` in directory `dir` without following a symlink
/// there. Goes through `/proc/self/fd`, so it works for every kind of object (a fifo cannot
/// be opened without blocking, a symlink cannot be opened at all).
pub fn set_xattr_at(dir: BorrowedFd<'_>, name: &[u8], key: &[u8], value: &[u8]) -> io::Result<()> {
    let mut path = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
    path.extend_from_slice(name);
    let c = cstr(&path)?;
    let k = cstr(key)?;
    // SAFETY: all pointers are valid for the lengths given.
    check(unsafe {
        libc::lsetxattr(
            c.as_ptr(),
            k.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// Opens a file for backup reading: never through a symlink, without updating its access
/// time when the kernel allows that (owner or root).
pub fn open_for_backup(path: &Path) -> io::Result<File> {
    let open = |flags| {
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | flags)
            .open(path)
    };
    match open(libc::O_NOATIME) {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => open(0),
        other => other,
    }
}

/// The next data region of `file` at or after `offset` and before `size`: `(start, end)`.
/// File systems without SEEK_DATA report the whole rest of the file as data.
pub fn next_data_region(file: &File, offset: u64, size: u64) -> io::Result<Option<(u64, u64)>> {
    if offset >= size {
        return Ok(None);
    }
    let fd = file.as_raw_fd();
    let Ok(off) = libc::off_t::try_from(offset) else {
        return Ok(None);
    };
    // SAFETY: lseek on an open descriptor.
    let start = unsafe { libc::lseek(fd, off, libc::SEEK_DATA) };
    if start < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENXIO) => Ok(None), // only a hole from here to the end
            Some(libc::EINVAL) | Some(libc::ENOTSUP) => Ok(Some((offset, size))),
            _ => Err(e),
        };
    }
    let start = start as u64;
    if start >= size {
        return Ok(None);
    }
    // SAFETY: as above.
    let end = unsafe { libc::lseek(fd, start as libc::off_t, libc::SEEK_HOLE) };
    let end = if end < 0 {
        size
    } else {
        (end as u64).min(size)
    };
    Ok(Some((start, end.max(start))))
}

/// True when `path` is on a kernel pseudo file system (proc, sysfs, cgroup, ...), which a
/// backup records as a directory but never enters.
pub fn is_pseudo_fs(path: &Path) -> bool {
    const PSEUDO: &[i64] = &[
        0x9fa0,      // proc
        0x6265_6572, // sysfs
        0x1cd1,      // devpts
        0x0027_e0eb, // cgroup
        0x6367_7270, // cgroup2
        0x6462_6720, // debugfs
        0x7472_6163, // tracefs
        0x7363_6673, // securityfs
        0xcafe_4a11, // bpf
        0x6165_676c, // pstore
        0x6265_6570, // configfs
        0x6573_5543, // fusectl
        0xde5e_81e4, // efivarfs
        0x1980_0202, // mqueue
        0x4249_4e4d, // binfmt_misc
        0x6e73_6673, // nsfs
        0x0187,      // autofs
    ];
    let Ok(c) = cstr(path.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: statfs fills the zeroed struct; c is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return false;
    }
    #[allow(clippy::unnecessary_cast)]
    let magic = st.f_type as i64;
    PSEUDO.contains(&magic)
}

/// Opens the directory `name` inside `dir` (or `dir` itself for `None`), refusing a symlink.
pub fn open_dir_at(dir: Option<BorrowedFd<'_>>, name: &[u8]) -> io::Result<OwnedFd> {
    let c = cstr(name)?;
    let base = dir.map_or(libc::AT_FDCWD, |d| d.as_raw_fd());
    // SAFETY: c is a valid C string; the returned descriptor is owned below.
    let fd = unsafe {
        libc::openat(
            base,
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    owned(fd)
}

fn owned(fd: RawFd) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by the kernel and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Creates a new regular file `name` in `dir` (fails if anything is there, symlinks
/// included), open for writing.
pub fn create_file_at(dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> io::Result<File> {
    let c = cstr(name)?;
    // SAFETY: as in open_dir_at.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    owned(fd).map(File::from)
}

/// A second descriptor of `file`, which is `name` in `dir`, for direct (`O_DIRECT`) writes;
/// `None` if the file system refuses them or `name` no longer names `file` (same device and
/// inode), so a name replaced in between never receives the writes.
pub fn reopen_direct_at(dir: BorrowedFd<'_>, name: &[u8], file: &File) -> Option<File> {
    let c = cstr(name).ok()?;
    // SAFETY: as in open_dir_at.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            c.as_ptr(),
            libc::O_WRONLY | libc::O_NOFOLLOW | libc::O_DIRECT | libc::O_CLOEXEC,
        )
    };
    let direct = File::from(owned(fd).ok()?);
    same_file(file, &direct).then_some(direct)
}

/// Allocates the first `len` bytes of the new, empty `file` and sizes it so (the blocks
/// read as zeros until written).
pub fn preallocate(file: &File, len: u64) -> io::Result<()> {
    use nix::fcntl::{FallocateFlags, fallocate};
    let len =
        libc::off_t::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    fallocate(file, FallocateFlags::empty(), 0, len).map_err(io::Error::from)
}

/// Whether two descriptors name the same file (device and inode); `false` if either
/// cannot be asked.
pub fn same_file(a: &File, b: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (a.metadata(), b.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// This process's file mode creation mask, read from `/proc/self/status` (reading it with
/// `umask(2)` would change it for a moment under the other threads); `None` if unknown.
pub fn umask() -> Option<u32> {
    std::fs::read_to_string("/proc/self/status")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("Umask:"))
        .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
}

/// `mkdirat`.
pub fn mkdir_at(dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid descriptor and C string.
    check(unsafe { libc::mkdirat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t) })
}

/// `symlinkat`: a link `name` in `dir` whose content is `target` (never resolved here).
pub fn symlink_at(dir: BorrowedFd<'_>, name: &[u8], target: &[u8]) -> io::Result<()> {
    let c = cstr(name)?;
    let t = cstr(target)?;
    // SAFETY: valid descriptor and C strings.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir.as_raw_fd(), c.as_ptr()) })
}

/// `linkat` without following a symlink at the source.
pub fn link_at(
    from_dir: BorrowedFd<'_>,
    from: &[u8],
    to_dir: BorrowedFd<'_>,
    to: &[u8],
) -> io::Result<()> {
    let f = cstr(from)?;
    let t = cstr(to)?;
    // SAFETY: valid descriptors and C strings; flags 0 = do not follow.
    check(unsafe {
        libc::linkat(
            from_dir.as_raw_fd(),
            f.as_ptr(),
            to_dir.as_raw_fd(),
            t.as_ptr(),
            0,
        )
    })
}

/// `mknodat` for fifos, sockets and device nodes; `mode` includes the type bits.
pub fn mknod_at(dir: BorrowedFd<'_>, name: &[u8], mode: u32, rdev: u64) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid descriptor and C string.
    check(unsafe {
        libc::mknodat(
            dir.as_raw_fd(),
            c.as_ptr(),
            mode as libc::mode_t,
            rdev as libc::dev_t,
        )
    })
}

/// Removes a non-directory `name` from `dir` (a symlink itself, never its target).
pub fn unlink_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid descriptor and C string.
    check(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) })
}

/// Changes the owner of `name` in `dir` without following a symlink.
pub fn chown_at(dir: BorrowedFd<'_>, name: &[u8], uid: u32, gid: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid descriptor and C string.
    check(unsafe {
        libc::fchownat(
            dir.as_raw_fd(),
            c.as_ptr(),
            uid,
            gid,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// Sets permission bits of a non-symlink `name` in `dir` (symlinks have none on Linux).
pub fn chmod_at(dir: BorrowedFd<'_>, name: &[u8], mode: u32) -> io::Result<()> {
    let c = cstr(name)?;
    // SAFETY: valid descriptor and C string.
    check(unsafe { libc::fchmodat(dir.as_raw_fd(), c.as_ptr(), mode as libc::mode_t, 0) })
}

/// Sets access and modification times (ns since the epoch) of `name` in `dir` without
/// following a symlink.
pub fn set_times_at(
    dir: BorrowedFd<'_>,
    name: &[u8],
    atime_ns: i64,
    mtime_ns: i64,
) -> io::Result<()> {
    let c = cstr(name)?;
    let ts = |ns: i64| libc::timespec {
        tv_sec: ns.div_euclid(1_000_000_000) as libc::time_t,
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
    };
    let times = [ts(atime_ns), ts(mtime_ns)];
    // SAFETY: valid descriptor, C string and a two-element array.
    check(unsafe {
        libc::utimensat(
            dir.as_raw_fd(),
            c.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    })
}

/// What is at `name` in `dir`, without following a symlink; `None` if nothing.
pub fn lstat_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Option<libc::stat>> {
    let c = cstr(name)?;
    // SAFETY: fstatat fills the zeroed struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    let ret = unsafe {
        libc::fstatat(
            dir.as_raw_fd(),
            c.as_ptr(),
            &mut st,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    if ret < 0 {
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::NotFound {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(st))
}

/// True when the process may create device nodes and give files away.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The user name of `uid` on this machine.
pub fn user_name(uid: u32) -> Option<String> {
    nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
        .ok()
        .flatten()
        .map(|u| u.name)
}

/// The group name of `gid` on this machine.
pub fn group_name(gid: u32) -> Option<String> {
    nix::unistd::Group::from_gid(nix::unistd::Gid::from_raw(gid))
        .ok()
        .flatten()
        .map(|g| g.name)
}

/// The uid of a user name on this machine.
pub fn uid_of(name: &str) -> Option<u32> {
    nix::unistd::User::from_name(name)
        .ok()
        .flatten()
        .map(|u| u.uid.as_raw())
}

/// The gid of a group name on this machine.
pub fn gid_of(name: &str) -> Option<u32> {
    nix::unistd::Group::from_name(name)
        .ok()
        .flatten()
        .map(|g| g.gid.as_raw())
}

/// The machine's host name.
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|| "unknown".into())
}

/// The OS name the box expects.
pub const OS_NAME: &str = "linux";

/// Path bytes of an OS string.
pub fn os_bytes(s: &OsStr) -> &[u8] {
    s.as_bytes()
}

/// OS string of path bytes.
pub fn bytes_os(b: &[u8]) -> &OsStr {
    OsStr::from_bytes(b)
}

/// Sets an extended attribute on an open file or directory.
pub fn set_xattr_fd(fd: BorrowedFd<'_>, key: &[u8], value: &[u8]) -> io::Result<()> {
    let k = cstr(key)?;
    // SAFETY: valid descriptor, C string, and value buffer.
    check(unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            k.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    })
}

/// The status of an open file or directory.
pub fn stat_fd(fd: BorrowedFd<'_>) -> io::Result<libc::stat> {
    // SAFETY: fstat fills the zeroed struct of a valid descriptor.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    check(unsafe { libc::fstat(fd.as_raw_fd(), &mut st) })?;
    Ok(st)
}

/// Changes the owner of an open file or directory.
pub fn chown_fd(fd: BorrowedFd<'_>, uid: u32, gid: u32) -> io::Result<()> {
    // SAFETY: valid descriptor.
    check(unsafe { libc::fchown(fd.as_raw_fd(), uid, gid) })
}

/// Sets the permission bits of an open file or directory.
pub fn chmod_fd(fd: BorrowedFd<'_>, mode: u32) -> io::Result<()> {
    // SAFETY: valid descriptor.
    check(unsafe { libc::fchmod(fd.as_raw_fd(), mode as libc::mode_t) })
}

/// Sets access and modification times (ns since the epoch) of an open file or directory.
pub fn set_times_fd(fd: BorrowedFd<'_>, atime_ns: i64, mtime_ns: i64) -> io::Result<()> {
    let ts = |ns: i64| libc::timespec {
        tv_sec: ns.div_euclid(1_000_000_000) as libc::time_t,
        tv_nsec: ns.rem_euclid(1_000_000_000) as _,
    };
    let times = [ts(atime_ns), ts(mtime_ns)];
    // SAFETY: valid descriptor and a two-element array.
    check(unsafe { libc::futimens(fd.as_raw_fd(), times.as_ptr()) })
}

// ---- what the walk needs (the Windows module has the same functions) ----

/// The directory a walk of `root` starts from.
pub fn walk_root(root: &Path) -> std::path::PathBuf {
    root.to_path_buf()
}

/// The components of a plan's selection below the walk's root; a warning when skipped.
pub fn selection_components(_root: &Path, sel: &str) -> Result<Vec<Vec<u8>>, String> {
    let mut out = Vec::new();
    for c in sel.split('/').filter(|c| !c.is_empty() && *c != ".") {
        if c == ".." {
            return Err(format!("selection {sel:?} contains '..': skipped"));
        }
        out.push(c.as_bytes().to_vec());
    }
    Ok(out)
}

/// The device of the walk's root.
pub fn root_device(root: &Path) -> io::Result<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(root).map(|m| m.dev())
}

/// The device an object is on (a change below the root may mean a pseudo file system).
pub fn device_of(meta: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    meta.dev()
}

/// The names in a directory, unsorted.
pub fn list_dir(dir: &Path) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for e in std::fs::read_dir(dir)? {
        names.push(e?.file_name().as_bytes().to_vec());
    }
    Ok(names)
}

/// The path of `name` in directory `parent`.
pub fn child_path(parent: &Path, name: &[u8]) -> std::path::PathBuf {
    parent.join(bytes_os(name))
}

/// What exclusion rules are matched against: the absolute path.
pub fn exclusion_key<'a>(abs: &'a Path, _rel: &[u8]) -> std::borrow::Cow<'a, [u8]> {
    std::borrow::Cow::Borrowed(abs.as_os_str().as_bytes())
}

/// Volume snapshots for a backup: Linux reads live files (no snapshot is taken, and none
/// is reported missing). Windows takes VSS snapshots here.
pub struct VolumeSnapshots;

impl VolumeSnapshots {
    /// Nothing to take on Linux.
    pub fn take(
        _root: &Path,
        _selections: &[String],
        _counters: &crate::progress::Counters,
    ) -> Self {
        VolumeSnapshots
    }

    /// Top-level names to read from a snapshot instead of the live system: none.
    pub fn mounts(&self) -> Vec<(Vec<u8>, std::path::PathBuf)> {
        Vec::new()
    }

    /// True when a snapshot was wanted and could not be taken.
    pub fn missing(&self) -> bool {
        false
    }
}
