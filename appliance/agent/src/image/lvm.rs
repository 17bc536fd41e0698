//! LVM snapshots: a logical volume is imaged through a snapshot the agent creates before
//! reading and removes afterwards (also when the backup fails), so the copy is consistent
//! even while the volume is in use.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Smallest and largest copy-on-write space given to a snapshot.
const MIN_COW_BYTES: u64 = 64 << 20;
const MAX_COW_BYTES: u64 = 16 << 30;

/// A snapshot volume that is removed when dropped.
#[derive(Debug)]
pub struct LvmSnapshot {
    vg: String,
    name: String,
    path: PathBuf,
}

impl LvmSnapshot {
    /// Makes a snapshot of `device` when it is an LVM logical volume; `Ok(None)` when it
    /// is not one.
    pub fn create_if_lvm(device: &Path, tag: &str) -> io::Result<Option<LvmSnapshot>> {
        if !is_lvm_volume(device) {
            return Ok(None);
        }
        let out = lvm(&[
            "lvs",
            "--noheadings",
            "--nosuffix",
            "--units",
            "b",
            "--separator",
            "|",
            "-o",
            "vg_name,lv_name,lv_size,vg_free",
            &device.to_string_lossy(),
        ])?;
        let fields: Vec<&str> = out.trim().split('|').map(str::trim).collect();
        let [vg, lv, size, free] = fields[..] else {
            return Err(io::Error::other(format!("unexpected lvs output {out:?}")));
        };
        let size: u64 = size.parse().map_err(io::Error::other)?;
        let free: u64 = free.parse().map_err(io::Error::other)?;
        let cow = (size / 10).clamp(MIN_COW_BYTES, MAX_COW_BYTES).min(free);
        if cow < 4 << 20 {
            return Err(io::Error::other(format!(
                "volume group {vg} has no free space for a snapshot"
            )));
        }
        let name = format!("abri-snap-{}", super::source::sanitize_name(tag));
        lvm(&[
            "lvcreate",
            "--snapshot",
            "--name",
            &name,
            "--size",
            &format!("{cow}b"),
            &format!("{vg}/{lv}"),
        ])?;
        let snap = LvmSnapshot {
            vg: vg.to_string(),
            path: PathBuf::from(format!("/dev/{vg}/{name}")),
            name,
        };
        if !snap.path.exists() {
            return Err(io::Error::other(format!(
                "the snapshot {} was made but its device does not exist",
                snap.path.display()
            )));
        }
        Ok(Some(snap))
    }

    /// The snapshot's device.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for LvmSnapshot {
    fn drop(&mut self) {
        let target = format!("{}/{}", self.vg, self.name);
        if let Err(e) = lvm(&["lvremove", "--force", &target]) {
            tracing::warn!("cannot remove the LVM snapshot {target}: {e}");
        }
    }
}

/// Whether `device` is a device-mapper device made by LVM.
fn is_lvm_volume(device: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = fs::metadata(device) else {
        return false;
    };
    let rdev = meta.rdev();
    let uuid = format!(
        "/sys/dev/block/{}:{}/dm/uuid",
        libc::major(rdev),
        libc::minor(rdev)
    );
    fs::read_to_string(uuid).is_ok_and(|u| u.starts_with("LVM-"))
}

fn lvm(args: &[&str]) -> io::Result<String> {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| {
            io::Error::new(e.kind(), format!("cannot run {} (LVM tools): {e}", args[0]))
        })?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "{} failed: {}",
            args[0],
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
