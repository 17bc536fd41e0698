//! The backup disk: a second disk that the box adopts as its store.
//!
//! udev probes every disk (its blkid builtin) and keeps what it found in its database
//! (`/run/udev/data/b<major>:<minor>`); abrid lists the disks of `/sys/block` every few
//! seconds and reads that database. A disk is:
//!
//! - `system`: it holds a mounted file system (the boot disk) — never touched;
//! - `store`: the disk this box adopted (its file system UUID is in the state);
//! - `blank`: no partition table, no file system, its first MiB all zeros — adopted at once;
//! - `needs_confirmation`: it holds something (partitions, a file system, data) — adopted
//!   only when someone confirms in the console or the API (`confirm: true`), never alone.
//!
//! Adopting formats the whole disk as ext4 (label `abri-store`), records its UUID, and
//! restarts abrid (exit status 75, which the unit restarts at once); every start mounts the
//! recorded disk on `/srv/backups` and keeps the store there, moving a store that started on
//! the data partition. Adoption only happens with `--adopt-disks` (the appliance's unit):
//! abrid on another machine never formats anything.

use crate::errors::{AppError, AppResult};
use crate::state::{Db, Table, records::now};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

const STORE_DISK: &str = "store_disk";
const MOUNT_POINT: &str = "/srv/backups";
const FS_LABEL: &str = "abri-store";
/// abrid exits with this status after adopting a disk; the unit restarts it at once.
pub const RESTART_EXIT_STATUS: i32 = 75;

/// The adopted disk, as recorded in the state.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct StoreDisk {
    pub fs_uuid: String,
    pub device: String,
    pub adopted: u64,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Disk {
    pub name: String,
    pub size_bytes: u64,
    pub model: Option<String>,
    /// `system`, `store`, `blank` or `needs_confirmation`.
    pub state: String,
    /// What the disk holds, in a few words (empty for a blank disk).
    pub holds: String,
}

/// Properties of one device in udev's database (`E:KEY=value` lines).
pub fn parse_udev_db(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("E:"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn udev_props(sys: &Path) -> HashMap<String, String> {
    read(&sys.join("dev"))
        .and_then(|dev| read(&Path::new("/run/udev/data").join(format!("b{dev}"))))
        .map(|t| parse_udev_db(&t))
        .unwrap_or_default()
}

/// `major:minor` of every mounted block device.
fn mounted_devices() -> Vec<String> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect()
}

fn first_mib_is_zero(dev: &Path) -> bool {
    let mut buf = vec![0u8; 1 << 20];
    let Ok(mut f) = std::fs::File::open(dev) else {
        return false;
    };
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(_) => return false,
        }
    }
    buf[..filled].iter().all(|b| *b == 0)
}

/// Names of disks that can be backup disks: real devices, not loop, RAM, optical or mapper.
fn candidate(name: &str, sys: &Path) -> bool {
    !["loop", "ram", "zram", "sr", "dm-", "md", "fd", "nbd"]
        .iter()
        .any(|p| name.starts_with(p))
        && sys.join("device").exists()
}

/// Lists the disks and what they hold.
pub fn scan(db: &Db) -> Vec<Disk> {
    let store: Option<StoreDisk> = db.get(Table::Config, STORE_DISK).ok().flatten();
    let mounted = mounted_devices();
    let mut disks = Vec::new();
    let Ok(entries) = std::fs::read_dir("/sys/block") else {
        return disks;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let sys = entry.path();
        if !candidate(&name, &sys) {
            continue;
        }
        let size_bytes = read(&sys.join("size"))
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0)
            * 512;
        if size_bytes == 0 {
            continue;
        }
        let props = udev_props(&sys);
        let mut parts: Vec<(String, HashMap<String, String>, Option<String>)> = Vec::new();
        if let Ok(children) = std::fs::read_dir(&sys) {
            for child in children.flatten() {
                if child.path().join("partition").exists() {
                    parts.push((
                        child.file_name().to_string_lossy().into_owned(),
                        udev_props(&child.path()),
                        read(&child.path().join("dev")),
                    ));
                }
            }
        }
        parts.sort_by(|a, b| a.0.cmp(&b.0));
        let own_dev = read(&sys.join("dev"));
        let is_mounted = own_dev
            .iter()
            .chain(parts.iter().filter_map(|p| p.2.as_ref()))
            .any(|d| mounted.contains(d));
        let fs_uuid = props.get("ID_FS_UUID").cloned();
        let is_store = store
            .as_ref()
            .is_some_and(|s| Some(&s.fs_uuid) == fs_uuid.as_ref());
        let holds = describe(&props, &parts);
        let state = if is_store {
            "store"
        } else if is_mounted {
            "system"
        } else if parts.is_empty()
            && !props.contains_key("ID_FS_TYPE")
            && !props.contains_key("ID_PART_TABLE_TYPE")
            && first_mib_is_zero(&Path::new("/dev").join(&name))
        {
            "blank"
        } else {
            "needs_confirmation"
        };
        disks.push(Disk {
            name,
            size_bytes,
            model: props
                .get("ID_MODEL")
                .cloned()
                .or_else(|| read(&sys.join("device/model"))),
            state: state.into(),
            holds,
        });
    }
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    disks
}

fn describe(
    props: &HashMap<String, String>,
    parts: &[(String, HashMap<String, String>, Option<String>)],
) -> String {
    let fs = |p: &HashMap<String, String>| {
        p.get("ID_FS_TYPE").map(|t| match p.get("ID_FS_LABEL") {
            Some(l) => format!("{t} \"{l}\""),
            None => t.clone(),
        })
    };
    let mut what = Vec::new();
    if let Some(t) = props.get("ID_PART_TABLE_TYPE") {
        what.push(format!("{} partition table", t.to_uppercase()));
    }
    if !parts.is_empty() {
        let list: Vec<String> = parts
            .iter()
            .map(|(n, p, _)| format!("{n}: {}", fs(p).unwrap_or_else(|| "unknown".into())))
            .collect();
        what.push(list.join(", "));
    }
    if let Some(f) = fs(props) {
        what.push(format!("a file system: {f}"));
    }
    if what.is_empty() && !parts.is_empty() {
        what.push("partitions".into());
    }
    what.join("; ")
}

/// Where the store lives: on the adopted disk when there is one (mounting it, and moving a
/// store that started on the data partition), else in the state directory.
pub fn store_dir(state_dir: &Path, db: &Db) -> PathBuf {
    let fallback = state_dir.join("store");
    let Ok(Some(disk)) = db.get::<StoreDisk>(Table::Config, STORE_DISK) else {
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

fn mount_store_disk(disk: &StoreDisk) -> anyhow::Result<PathBuf> {
    use anyhow::Context;
    let mount = PathBuf::from(MOUNT_POINT);
    let dev = PathBuf::from("/dev/disk/by-uuid").join(&disk.fs_uuid);
    // udev may still be creating the link right after boot.
    for _ in 0..50 {
        if dev.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let already = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(MOUNT_POINT));
    if !already {
        std::fs::create_dir_all(&mount).with_context(|| format!("cannot create {MOUNT_POINT}"))?;
        nix::mount::mount(
            Some(&dev),
            &mount,
            Some("ext4"),
            nix::mount::MsFlags::MS_NOATIME
                | nix::mount::MsFlags::MS_NODEV
                | nix::mount::MsFlags::MS_NOSUID,
            None::<&str>,
        )
        .with_context(|| format!("cannot mount {} on {MOUNT_POINT}", dev.display()))?;
        tracing::info!("mounted the backup disk {} on {MOUNT_POINT}", dev.display());
    }
    Ok(mount)
}

/// Moves a store from the data partition to the backup disk: copied into `store.moving`,
/// renamed into place, then removed from the data partition. A crash at any point leaves
/// either the old store whole or the new one whole.
fn move_store(from: &Path, to: &Path) -> anyhow::Result<()> {
    use anyhow::Context;
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
    use anyhow::Context;
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    for entry in
        std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))?
    {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
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

/// Formats `name` as the backup disk and records it. A disk that holds anything needs
/// `confirm`; the system disk and the current store are refused.
pub fn adopt(db: &Db, name: &str, confirm: bool, actor: &str) -> AppResult<StoreDisk> {
    let disks = scan(db);
    let Some(disk) = disks.iter().find(|d| d.name == name) else {
        return Err(AppError::NotFound(format!("disk {name}")));
    };
    match disk.state.as_str() {
        "system" => {
            return Err(AppError::Invalid(format!(
                "{name} is the system disk: it cannot hold backups"
            )));
        }
        "store" => {
            return Err(AppError::Invalid(format!(
                "{name} is already the backup disk"
            )));
        }
        "needs_confirmation" if !confirm => {
            return Err(AppError::ConfirmationRequired(format!(
                "{name} holds {}: formatting it erases everything on it; confirm to go on",
                disk.holds
            )));
        }
        _ => {}
    }
    let dev = Path::new("/dev").join(name);
    let fs_uuid = uuid_v4();
    let run = |program: &str, args: &[&str]| -> AppResult<()> {
        let out = std::process::Command::new(program)
            .args(args)
            .output()
            .map_err(|e| AppError::Internal(anyhow::anyhow!("cannot run {program}: {e}")))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(AppError::Internal(anyhow::anyhow!(
                "{program} {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            )))
        }
    };
    let dev_text = dev.display().to_string();
    tracing::info!(
        "adopting {dev_text} as the backup disk (holds: {})",
        disk.holds
    );
    run("wipefs", &["-a", &dev_text])?;
    run(
        "mkfs.ext4",
        &[
            "-q",
            "-F",
            "-L",
            FS_LABEL,
            "-U",
            &fs_uuid,
            "-m",
            "0",
            "-E",
            "lazy_itable_init=1",
            &dev_text,
        ],
    )?;
    let record = StoreDisk {
        fs_uuid,
        device: name.to_string(),
        adopted: now(),
    };
    db.put(Table::Config, STORE_DISK, &record)?;
    let _ = db.audit(&crate::state::AuditEvent::new(
        actor,
        "disk.adopted",
        format!(
            "{name} ({})",
            if disk.holds.is_empty() {
                "blank"
            } else {
                &disk.holds
            }
        ),
    ));
    Ok(record)
}

fn uuid_v4() -> String {
    let mut b: [u8; 16] = rand::random();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Rescans the disks every few seconds; with `adopt`, adopts a blank disk when the box has
/// no backup disk yet, then exits for the unit to start abrid again on it.
pub async fn watch(db: Db, adopt_blank: bool) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tick.tick().await;
        let db2 = db.clone();
        let disks = tokio::task::spawn_blocking(move || scan(&db2))
            .await
            .unwrap_or_default();
        if !adopt_blank {
            continue;
        }
        let has_store = db
            .get::<StoreDisk>(Table::Config, STORE_DISK)
            .ok()
            .flatten()
            .is_some();
        if has_store {
            continue;
        }
        if let Some(blank) = disks.iter().find(|d| d.state == "blank") {
            let db2 = db.clone();
            let name = blank.name.clone();
            match tokio::task::spawn_blocking(move || adopt(&db2, &name, false, "box")).await {
                Ok(Ok(_)) => restart(),
                Ok(Err(e)) => tracing::error!("cannot adopt {}: {e}", blank.name),
                Err(e) => tracing::error!("disk adoption task failed: {e}"),
            }
        }
    }
}

/// Ends abrid so that its unit starts it again on the new backup disk.
pub fn restart() -> ! {
    tracing::info!("restarting to use the new backup disk");
    nix::unistd::sync();
    std::process::exit(RESTART_EXIT_STATUS);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_udev_properties_and_describes_contents() {
        let props =
            parse_udev_db("S:disk/by-uuid/x\nE:ID_FS_TYPE=ext4\nE:ID_FS_LABEL=photos\nG:systemd\n");
        assert_eq!(props.get("ID_FS_TYPE").map(String::as_str), Some("ext4"));
        assert_eq!(describe(&props, &[]), "a file system: ext4 \"photos\"");
        let table = parse_udev_db("E:ID_PART_TABLE_TYPE=gpt\n");
        let part = parse_udev_db("E:ID_FS_TYPE=ntfs\n");
        assert_eq!(
            describe(&table, &[("sdb1".into(), part, None)]),
            "GPT partition table; sdb1: ntfs"
        );
    }

    #[test]
    fn uuids_are_version_4() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, uuid_v4());
    }

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
        // Nothing to move the second time, and the new store is kept.
        move_store(&from, &to).unwrap();
        assert!(to.join("store.json").exists());
    }
}
