//! Keeping the store on the adopted disk: mount it at every start, and move a store that
//! began on the data partition onto it once.

use super::{StoreDisk, mount_point, store_disk};
use crate::state::Db;
use anyhow::Context;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long to wait for udev to create `/dev/disk/by-uuid/<uuid>` after boot.
const DEVICE_WAIT: Duration = Duration::from_secs(10);

/// Where the store lives: on the adopted disk when there is one (mounting it, and moving a
/// store that started on the data partition), else in the state directory.
pub fn store_dir(state_dir: &Path, db: &Db) -> PathBuf {
    let fallback = state_dir.join("store");
    let Some(disk) = store_disk(db) else {
        return fallback;
    };
    match mount_store_disk(&disk) {
        Ok(mount) => {
            let dir = mount.join("store");
            if let Err(e) = move_store(&fallback, &dir) {
                tracing::error!("cannot move the store to the backup disk: {e:#}");
                return fallback;
            }
            dir
        }
        Err(e) => {
            tracing::error!(
                "the backup disk (file system {}) is not available: {e:#}; backups go to the data partition until it is back",
                disk.fs_uuid
            );
            fallback
        }
    }
}

/// Whether something is mounted on `mount` (fifth field of `/proc/self/mountinfo`).
fn is_mount_point(mountinfo: &str, mount: &Path) -> bool {
    mountinfo
        .lines()
        .any(|l| l.split_whitespace().nth(4).map(Path::new) == Some(mount))
}

/// The UUID of the ext4 file system on `dev`, read from its superblock (1024 bytes in: the
/// magic `0xEF53` at 56, the UUID at 104), or `None` when `dev` holds no ext file system.
fn ext4_uuid(dev: &Path) -> Option<uuid::Uuid> {
    use std::io::Read;
    let mut head = [0u8; 2048];
    std::fs::File::open(dev).ok()?.read_exact(&mut head).ok()?;
    let sb = &head[1024..];
    if u16::from_le_bytes([sb[56], sb[57]]) != 0xEF53 {
        return None;
    }
    uuid::Uuid::from_slice(&sb[104..120]).ok()
}

/// The device that holds the backup disk's file system: the device it was adopted as when
/// its superblock still says so (no need to wait for udev), else whatever
/// `/dev/disk/by-uuid` names once udev has seen it (the disk came back under another name).
fn store_device(disk: &StoreDisk) -> PathBuf {
    let recorded = Path::new("/dev").join(&disk.device);
    let wanted = uuid::Uuid::parse_str(&disk.fs_uuid).ok();
    if wanted.is_some() && ext4_uuid(&recorded) == wanted {
        return recorded;
    }
    let link = PathBuf::from("/dev/disk/by-uuid").join(&disk.fs_uuid);
    // udev may still be creating the link right after boot.
    let deadline = std::time::Instant::now() + DEVICE_WAIT;
    while !link.exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    // Mounted by its kernel name, so that the mount table (and the console) names the disk.
    std::fs::canonicalize(&link).unwrap_or(link)
}

fn mount_store_disk(disk: &StoreDisk) -> anyhow::Result<PathBuf> {
    let mount = mount_point();
    let dev = store_device(disk);
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    if !is_mount_point(&mountinfo, &mount) {
        std::fs::create_dir_all(&mount)
            .with_context(|| format!("cannot create {}", mount.display()))?;
        nix::mount::mount(
            Some(&dev),
            &mount,
            Some("ext4"),
            nix::mount::MsFlags::MS_NOATIME
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOSUID,
            None::<&str>,
        )
        .with_context(|| format!("cannot mount {} on {}", dev.display(), mount.display()))?;
        tracing::info!(
            "mounted the backup disk {} on {}",
            dev.display(),
            mount.display()
        );
    }
    Ok(mount)
}

/// Moves a store from the data partition to the backup disk: copied into `store.moving`,
/// renamed into place, then removed from the data partition. A crash at any point leaves
/// either the old store whole or the new one whole.
fn move_store(from: &Path, to: &Path) -> anyhow::Result<()> {
    if to.join("store.json").exists() || !from.join("store.json").exists() {
        return Ok(());
    }
    let staging = to.with_file_name("store.moving");
    if staging.exists() {
        std::fs::remove_dir_all(&staging)
            .with_context(|| format!("cannot clear {}", staging.display()))?;
    }
    copy_tree(from, &staging)?;
    nix::unistd::sync();
    std::fs::rename(&staging, to)
        .with_context(|| format!("cannot rename {} to {}", staging.display(), to.display()))?;
    nix::unistd::sync();
    std::fs::remove_dir_all(from)
        .with_context(|| format!("cannot remove the old store {}", from.display()))?;
    tracing::info!(
        "moved the store from {} to {}",
        from.display(),
        to.display()
    );
    Ok(())
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in
        std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))?
    {
        let entry = entry.with_context(|| format!("cannot read {}", from.display()))?;
        let target = to.join(entry.file_name());
        let kind = entry
            .file_type()
            .with_context(|| format!("cannot read {}", entry.path().display()))?;
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).with_context(|| {
                format!(
                    "cannot copy {} to {}",
                    entry.path().display(),
                    target.display()
                )
            })?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_moves_whole_and_only_once() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("data/store");
        let to = dir.path().join("disk/store");
        std::fs::create_dir_all(from.join("chunks/ab")).unwrap();
        std::fs::write(from.join("store.json"), "{}").unwrap();
        std::fs::write(from.join("chunks/ab/abcd"), "chunk").unwrap();
        std::fs::create_dir_all(dir.path().join("disk")).unwrap();
        move_store(&from, &to).unwrap();
        assert_eq!(
            std::fs::read_to_string(to.join("chunks/ab/abcd")).unwrap(),
            "chunk"
        );
        assert!(!from.exists());
        assert!(!dir.path().join("disk/store.moving").exists());
        // Nothing to move the second time, and the new store is kept.
        move_store(&from, &to).unwrap();
        assert!(to.join("store.json").exists());
    }

    #[test]
    fn a_half_copied_move_is_started_again() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("data/store");
        let to = dir.path().join("disk/store");
        std::fs::create_dir_all(&from).unwrap();
        std::fs::write(from.join("store.json"), "{\"v\":1}").unwrap();
        // A power cut during the copy left a partial staging folder.
        let staging = dir.path().join("disk/store.moving");
        std::fs::create_dir_all(&staging).unwrap();
        std::fs::write(staging.join("half"), "x").unwrap();
        move_store(&from, &to).unwrap();
        assert!(!to.join("half").exists());
        assert_eq!(
            std::fs::read_to_string(to.join("store.json")).unwrap(),
            "{\"v\":1}"
        );
    }

    #[test]
    fn an_existing_store_on_the_disk_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("data/store");
        let to = dir.path().join("disk/store");
        std::fs::create_dir_all(&from).unwrap();
        std::fs::create_dir_all(&to).unwrap();
        std::fs::write(from.join("store.json"), "old").unwrap();
        std::fs::write(to.join("store.json"), "disk").unwrap();
        move_store(&from, &to).unwrap();
        assert_eq!(
            std::fs::read_to_string(to.join("store.json")).unwrap(),
            "disk"
        );
        assert!(from.join("store.json").exists());
    }

    #[test]
    fn reads_the_uuid_of_an_ext4_superblock() {
        let dir = tempfile::tempdir().unwrap();
        let uuid = uuid::Uuid::new_v4();
        let mut head = vec![0u8; 4096];
        head[1024 + 56..1024 + 58].copy_from_slice(&0xEF53u16.to_le_bytes());
        head[1024 + 104..1024 + 120].copy_from_slice(uuid.as_bytes());
        let disk = dir.path().join("disk");
        std::fs::write(&disk, &head).unwrap();
        assert_eq!(ext4_uuid(&disk), Some(uuid));
        // Not an ext file system, too short, or missing: no UUID.
        head[1024 + 56] = 0;
        std::fs::write(&disk, &head).unwrap();
        assert_eq!(ext4_uuid(&disk), None);
        std::fs::write(&disk, [0u8; 100]).unwrap();
        assert_eq!(ext4_uuid(&disk), None);
        assert_eq!(ext4_uuid(&dir.path().join("none")), None);
    }

    #[test]
    fn finds_the_uuid_mkfs_gave() {
        let dir = tempfile::tempdir().unwrap();
        let disk = dir.path().join("disk.img");
        std::fs::File::create(&disk)
            .unwrap()
            .set_len(16 << 20)
            .unwrap();
        let uuid = uuid::Uuid::new_v4();
        let status = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F", "-U", &uuid.to_string()])
            .arg(&disk)
            .status()
            .expect("mkfs.ext4 (e2fsprogs, scripts/apt/image.txt)");
        assert!(status.success());
        assert_eq!(ext4_uuid(&disk), Some(uuid));
    }

    #[test]
    fn finds_the_mount_point() {
        let mountinfo = "22 1 254:2 / / ro - squashfs /dev/vda2 ro\n\
                         40 22 254:16 / /srv/backups rw - ext4 /dev/vdb rw\n";
        assert!(is_mount_point(mountinfo, Path::new("/srv/backups")));
        assert!(!is_mount_point(mountinfo, Path::new("/srv")));
    }
}
