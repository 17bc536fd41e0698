//! Block devices on Linux: the system disk, device sizes, whether a device (or one of its
//! partitions or holders) is in use, and zeroing ranges of a device.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// The whole disk that holds the root file system, e.g. `/dev/vda`.
pub fn system_disk() -> io::Result<PathBuf> {
    let dev = root_device_number()?;
    let name = disk_of(dev)?;
    Ok(PathBuf::from("/dev").join(name))
}

/// `major:minor` of the device mounted at `/`.
fn root_device_number() -> io::Result<String> {
    let info = fs::read_to_string("/proc/self/mountinfo")?;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        if fields.get(4) == Some(&"/") {
            let dev = fields.get(2).copied().unwrap_or_default();
            let fs_type = line
                .split(" - ")
                .nth(1)
                .and_then(|rest| rest.split(' ').next())
                .unwrap_or_default();
            if dev.starts_with("0:") {
                return Err(io::Error::other(format!(
                    "the root file system is {fs_type} (no block device): name the disk to \
                     image in the plan instead of system-disk"
                )));
            }
            return Ok(dev.to_string());
        }
    }
    Err(io::Error::other(
        "no root file system in /proc/self/mountinfo",
    ))
}

/// The disk (no partition, no device-mapper layer) under `major:minor`.
fn disk_of(dev: String) -> io::Result<String> {
    let mut sys = fs::canonicalize(format!("/sys/dev/block/{dev}"))?;
    // Device mapper (LVM, crypt): follow the first slave down to a real device.
    for _ in 0..8 {
        let slaves = sys.join("slaves");
        let first = fs::read_dir(&slaves)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| e.ok());
        match first {
            Some(e) => sys = fs::canonicalize(e.path())?,
            None => break,
        }
    }
    if sys.join("partition").exists()
        && let Some(parent) = sys.parent()
    {
        sys = parent.to_path_buf();
    }
    sys.file_name()
        .and_then(|n| n.to_str())
        .map(String::from)
        .ok_or_else(|| io::Error::other(format!("cannot name the disk at {}", sys.display())))
}

/// Whether `path` is a block device.
pub fn is_block_device(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

/// The size of an open file or block device.
pub fn size_of(file: &File) -> io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let meta = file.metadata()?;
    if meta.file_type().is_block_device() {
        let mut f = file;
        let end = f.seek(SeekFrom::End(0))?;
        f.seek(SeekFrom::Start(0))?;
        Ok(end)
    } else {
        Ok(meta.len())
    }
}

/// Why a block device must not be written: mounted, a partition of it mounted, or held by
/// another layer (LVM, RAID, crypt). `None` when free.
pub fn in_use(path: &Path) -> io::Result<Option<String>> {
    let meta = fs::metadata(path)?;
    let rdev = meta.rdev();
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    let sys = fs::canonicalize(format!("/sys/dev/block/{major}:{minor}"))?;
    let mut devs = vec![(format!("{major}:{minor}"), sys.clone())];
    // Its partitions.
    if let Ok(entries) = fs::read_dir(&sys) {
        for e in entries.flatten() {
            let p = e.path();
            if p.join("partition").exists()
                && let Ok(d) = fs::read_to_string(p.join("dev"))
            {
                devs.push((d.trim().to_string(), p));
            }
        }
    }
    let mounts = fs::read_to_string("/proc/self/mountinfo")?;
    for (num, sys) in &devs {
        let name = sys.file_name().and_then(|n| n.to_str()).unwrap_or("?");
        for line in mounts.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.get(2) == Some(&num.as_str()) {
                let at = fields.get(4).copied().unwrap_or("?");
                return Ok(Some(format!("{name} is mounted at {at}")));
            }
        }
        let holders = fs::read_dir(sys.join("holders"))
            .map(|d| d.flatten().count())
            .unwrap_or(0);
        if holders > 0 {
            return Ok(Some(format!(
                "{name} is used by another device (LVM, RAID or encryption)"
            )));
        }
    }
    if let Ok(swaps) = fs::read_to_string("/proc/swaps") {
        for line in swaps.lines().skip(1) {
            if let Some(dev) = line.split_whitespace().next()
                && fs::metadata(dev).is_ok_and(|m| m.rdev() == rdev)
            {
                return Ok(Some(format!("{} is in use as swap", path.display())));
            }
        }
    }
    Ok(None)
}

/// Makes `offset..offset+len` of a block device read as zeros (BLKZEROOUT: thin and loop
/// devices deallocate, others write zeros).
pub fn zero_range(file: &File, offset: u64, len: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    // _IO(0x12, 127)
    const BLKZEROOUT: libc::c_ulong = 0x127F;
    let range: [u64; 2] = [offset, len];
    // SAFETY: BLKZEROOUT reads two u64 from the pointer, which points to a live array.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), BLKZEROOUT as _, range.as_ptr()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regular_file_is_no_block_device_and_has_its_length() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("img");
        fs::write(&p, vec![1u8; 12345]).unwrap();
        assert!(!is_block_device(&p));
        assert_eq!(size_of(&File::open(&p).unwrap()).unwrap(), 12345);
    }
}
