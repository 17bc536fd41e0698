//! The backup disk: a second disk that the box adopts as its store.
//!
//! udev probes every disk (its blkid builtin) and keeps what it found in its database
//! (`/run/udev/data/b<major>:<minor>`); abrid lists the disks of `/sys/block` every few
//! seconds and reads that database. A disk that udev has not finished with (no entry yet,
//! right after it is plugged in) is left out until it has: adopting it then would format it
//! under udev's feet, and udev would keep describing the disk as it was before. A disk is
//! (see [`classify`]):
//!
//! - `system`: it, or one of its partitions, is mounted or held by another device (the boot
//!   disk, a RAID or LVM member) — never touched;
//! - `store`: the disk this box adopted (its file system UUID is in the state);
//! - `blank`: no partition table, no file system, its first MiB all zeros — adopted at once;
//! - `needs_confirmation`: it holds something (partitions, a file system, data) — adopted
//!   only when someone confirms in the console or the API (`confirm: true`), never alone.
//!
//! Adopting ([`adopt`]) formats the whole disk as ext4 (label `abri-store`), records its
//! UUID, and restarts abrid (exit status 75, which the unit restarts at once); every start
//! mounts the recorded disk on `/srv/backups` and keeps the store there ([`store_dir`]),
//! moving a store that started on the data partition. Adoption only happens with
//! `--adopt-disks` (the appliance's unit): abrid on another machine never formats anything.

mod adopt;
mod store;

pub use adopt::adopt;
pub use store::store_dir;

use crate::state::{Db, Table};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The state key of the adopted disk ([`StoreDisk`]).
const STORE_DISK: &str = "store_disk";
/// abrid exits with this status after adopting a disk; the unit restarts it at once.
pub const RESTART_EXIT_STATUS: i32 = 75;
/// How much of a disk's start must be zeros for it to count as blank.
const BLANK_PREFIX: usize = 1 << 20;

/// The adopted disk, as recorded in the state.
#[derive(Serialize, Deserialize, Clone, Debug)]
pub struct StoreDisk {
    pub fs_uuid: String,
    pub device: String,
    pub adopted: u64,
}

/// What the box may do with a disk.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum DiskState {
    /// Mounted or in use by the running system: never offered.
    System,
    /// The adopted backup disk.
    Store,
    /// Holds nothing: adopted without asking.
    Blank,
    /// Holds something: adopted only with an explicit confirmation.
    NeedsConfirmation,
}

impl DiskState {
    /// The name the API uses.
    pub fn as_str(self) -> &'static str {
        match self {
            DiskState::System => "system",
            DiskState::Store => "store",
            DiskState::Blank => "blank",
            DiskState::NeedsConfirmation => "needs_confirmation",
        }
    }

    /// Whether the console offers to adopt the disk.
    pub fn offered(self) -> bool {
        matches!(self, DiskState::Blank | DiskState::NeedsConfirmation)
    }
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Disk {
    pub name: String,
    pub size_bytes: u64,
    pub model: Option<String>,
    pub state: DiskState,
    /// What the disk holds, in a few words (empty for a blank disk).
    pub holds: String,
}

/// One partition of a disk: its name, udev's properties and `major:minor`.
#[derive(Clone, Debug, Default)]
struct Partition {
    name: String,
    props: HashMap<String, String>,
    dev: Option<String>,
}

/// Properties of one device in udev's database (`E:KEY=value` lines).
pub fn parse_udev_db(text: &str) -> HashMap<String, String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("E:"))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Decides what a disk is. `in_use`: the disk or a partition is mounted or held by another
/// device. `zero_start` reads the disk's first MiB; it is only called for a disk that udev
/// found empty, so a disk udev has not probed yet is judged by its content, never adopted
/// on the absence of information.
fn classify(
    props: &HashMap<String, String>,
    partitions: &[Partition],
    in_use: bool,
    store_fs_uuid: Option<&str>,
    zero_start: impl FnOnce() -> bool,
) -> DiskState {
    let fs_uuid = props.get("ID_FS_UUID").map(String::as_str);
    if store_fs_uuid.is_some() && fs_uuid == store_fs_uuid {
        DiskState::Store
    } else if in_use {
        DiskState::System
    } else if partitions.is_empty()
        && !props.contains_key("ID_FS_TYPE")
        && !props.contains_key("ID_PART_TABLE_TYPE")
        && zero_start()
    {
        DiskState::Blank
    } else {
        DiskState::NeedsConfirmation
    }
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

/// udev's database of devices.
const UDEV_DB: &str = "/run/udev/data";

/// udev's properties of the block device at `sys`, from its database in `udev_db`. `None`
/// while udev has not recorded the device yet; empty on a system without udev (no
/// database at all), where a disk is judged by its content alone.
fn udev_props(udev_db: &Path, sys: &Path) -> Option<HashMap<String, String>> {
    if !udev_db.is_dir() {
        return Some(HashMap::new());
    }
    let dev = read(&sys.join("dev"))?;
    read(&udev_db.join(format!("b{dev}"))).map(|t| parse_udev_db(&t))
}

/// `major:minor` of every mounted block device (third field of `/proc/self/mountinfo`).
fn mounted_devices(mountinfo: &str) -> Vec<String> {
    mountinfo
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_string))
        .collect()
}

/// Whether another device (device mapper, md RAID) is built on this block device.
fn has_holders(sys: &Path) -> bool {
    std::fs::read_dir(sys.join("holders")).is_ok_and(|mut d| d.next().is_some())
}

/// Whether the first MiB of `dev` (or all of it, if shorter) is zeros. An unreadable
/// device is not blank.
fn zero_start(dev: &Path) -> bool {
    let Ok(file) = std::fs::File::open(dev) else {
        return false;
    };
    let mut buf = Vec::with_capacity(BLANK_PREFIX);
    match file.take(BLANK_PREFIX as u64).read_to_end(&mut buf) {
        Ok(_) => buf.iter().all(|b| *b == 0),
        Err(_) => false,
    }
}

/// Names of disks that can be backup disks: real devices, not loop, RAM, optical or mapper.
fn candidate(name: &str, sys: &Path) -> bool {
    !["loop", "ram", "zram", "sr", "dm-", "md", "fd", "nbd"]
        .iter()
        .any(|p| name.starts_with(p))
        && sys.join("device").exists()
}

fn partitions(sys: &Path) -> Vec<Partition> {
    let mut parts: Vec<Partition> = std::fs::read_dir(sys)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|child| child.path().join("partition").exists())
        .map(|child| Partition {
            name: child.file_name().to_string_lossy().into_owned(),
            props: udev_props(Path::new(UDEV_DB), &child.path()).unwrap_or_default(),
            dev: read(&child.path().join("dev")),
        })
        .collect();
    parts.sort_by(|a, b| a.name.cmp(&b.name));
    parts
}

/// Lists the disks and what they hold.
pub fn scan(db: &Db) -> Vec<Disk> {
    let store: Option<StoreDisk> = db.get(Table::Config, STORE_DISK).ok().flatten();
    let mounted =
        mounted_devices(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
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
        let Some(props) = udev_props(Path::new(UDEV_DB), &sys) else {
            tracing::debug!("{name}: udev has not probed it yet");
            continue;
        };
        let parts = partitions(&sys);
        let in_use = read(&sys.join("dev"))
            .iter()
            .chain(parts.iter().filter_map(|p| p.dev.as_ref()))
            .any(|d| mounted.contains(d))
            || has_holders(&sys)
            || parts.iter().any(|p| has_holders(&sys.join(&p.name)));
        let state = classify(
            &props,
            &parts,
            in_use,
            store.as_ref().map(|s| s.fs_uuid.as_str()),
            || zero_start(&Path::new("/dev").join(&name)),
        );
        disks.push(Disk {
            size_bytes,
            model: props
                .get("ID_MODEL")
                .cloned()
                .or_else(|| read(&sys.join("device/model"))),
            state,
            holds: describe(&props, &parts),
            name,
        });
    }
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    disks
}

/// What a disk holds, in a few words for the console.
fn describe(props: &HashMap<String, String>, parts: &[Partition]) -> String {
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
            .map(|p| {
                format!(
                    "{}: {}",
                    p.name,
                    fs(&p.props).unwrap_or_else(|| "unknown".into())
                )
            })
            .collect();
        what.push(list.join(", "));
    }
    if let Some(f) = fs(props) {
        what.push(format!("a file system: {f}"));
    }
    what.join("; ")
}

/// The adopted disk, if any.
fn store_disk(db: &Db) -> Option<StoreDisk> {
    db.get::<StoreDisk>(Table::Config, STORE_DISK)
        .ok()
        .flatten()
}

/// Adopts the first blank disk when the box has no backup disk yet. Returns the new record,
/// or `None` when there was nothing to adopt (or the format failed, which is logged).
pub fn adopt_first_blank(db: &Db) -> Option<StoreDisk> {
    if store_disk(db).is_some() {
        return None;
    }
    let blank = scan(db).into_iter().find(|d| d.state == DiskState::Blank)?;
    match adopt(db, &blank.name, false, "box") {
        Ok(record) => Some(record),
        Err(e) => {
            tracing::error!("cannot adopt the blank disk {}: {e}", blank.name);
            None
        }
    }
}

/// Rescans the disks every few seconds for a blank disk plugged in while the box runs; once
/// one is adopted, exits for the unit to start abrid again on it. (A disk present at power-on
/// is adopted during boot, before the console answers.)
pub async fn watch(db: Db) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
    loop {
        tick.tick().await;
        let db2 = db.clone();
        match tokio::task::spawn_blocking(move || adopt_first_blank(&db2)).await {
            Ok(Some(_)) => restart(),
            Ok(None) => {}
            Err(e) => tracing::error!("disk adoption task failed: {e}"),
        }
    }
}

/// Ends abrid so that its unit starts it again on the new backup disk.
pub fn restart() -> ! {
    tracing::info!("restarting to use the new backup disk");
    nix::unistd::sync();
    std::process::exit(RESTART_EXIT_STATUS);
}

/// Where the adopted disk is mounted.
fn mount_point() -> PathBuf {
    PathBuf::from("/srv/backups")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn props(text: &str) -> HashMap<String, String> {
        parse_udev_db(text)
    }

    fn part(name: &str, text: &str) -> Partition {
        Partition {
            name: name.into(),
            props: props(text),
            dev: None,
        }
    }

    #[test]
    fn reads_udev_properties_and_describes_contents() {
        let p = props("S:disk/by-uuid/x\nE:ID_FS_TYPE=ext4\nE:ID_FS_LABEL=photos\nG:systemd\n");
        assert_eq!(p.get("ID_FS_TYPE").map(String::as_str), Some("ext4"));
        assert_eq!(p.len(), 2, "only E: lines are properties: {p:?}");
        assert_eq!(describe(&p, &[]), "a file system: ext4 \"photos\"");
        let table = props("E:ID_PART_TABLE_TYPE=gpt\n");
        assert_eq!(
            describe(
                &table,
                &[part("sdb1", "E:ID_FS_TYPE=ntfs\n"), part("sdb2", "")]
            ),
            "GPT partition table; sdb1: ntfs, sdb2: unknown"
        );
        assert_eq!(describe(&HashMap::new(), &[]), "");
    }

    #[test]
    fn a_disk_udev_has_not_recorded_yet_is_not_judged() {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys/block/vdc");
        std::fs::create_dir_all(&sys).unwrap();
        std::fs::write(sys.join("dev"), "254:32\n").unwrap();
        // No udev on this system: nothing to wait for, the content decides.
        let none = dir.path().join("no-udev");
        assert_eq!(udev_props(&none, &sys), Some(HashMap::new()));
        // udev runs but is still probing the disk just plugged in.
        let db = dir.path().join("udev-data");
        std::fs::create_dir_all(&db).unwrap();
        assert_eq!(udev_props(&db, &sys), None);
        // Once udev has recorded it, its properties count (an empty disk has none).
        std::fs::write(db.join("b254:32"), "I:123\nG:systemd\n").unwrap();
        assert_eq!(udev_props(&db, &sys), Some(HashMap::new()));
        std::fs::write(db.join("b254:32"), "E:ID_FS_TYPE=ext4\n").unwrap();
        assert_eq!(
            udev_props(&db, &sys)
                .unwrap()
                .get("ID_FS_TYPE")
                .map(String::as_str),
            Some("ext4")
        );
    }

    #[test]
    fn only_a_disk_that_holds_nothing_is_blank() {
        let none = HashMap::new();
        let never = || panic!("the content is not read when udev already says what it holds");
        assert_eq!(classify(&none, &[], false, None, || true), DiskState::Blank);
        // udev saw nothing but the disk is not zeros (or cannot be read): ask first.
        assert_eq!(
            classify(&none, &[], false, None, || false),
            DiskState::NeedsConfirmation
        );
        let fs = props("E:ID_FS_TYPE=ext4\nE:ID_FS_UUID=1111\n");
        assert_eq!(
            classify(&fs, &[], false, None, never),
            DiskState::NeedsConfirmation
        );
        let table = props("E:ID_PART_TABLE_TYPE=dos\n");
        assert_eq!(
            classify(&table, &[], false, None, never),
            DiskState::NeedsConfirmation
        );
        // Partitions the kernel found are enough, even before udev has probed them.
        assert_eq!(
            classify(&none, &[part("vdb1", "")], false, None, never),
            DiskState::NeedsConfirmation
        );
        // An LVM or RAID member is something too.
        let member = props("E:ID_FS_TYPE=LVM2_member\n");
        assert_eq!(
            classify(&member, &[], false, None, never),
            DiskState::NeedsConfirmation
        );
    }

    #[test]
    fn the_system_disk_and_the_store_are_recognised() {
        let fs = props("E:ID_FS_TYPE=ext4\nE:ID_FS_UUID=1111\n");
        let never = || panic!("not read");
        assert_eq!(
            classify(&fs, &[], false, Some("1111"), never),
            DiskState::Store
        );
        assert_eq!(
            classify(&fs, &[], false, Some("2222"), never),
            DiskState::NeedsConfirmation
        );
        assert_eq!(
            classify(&HashMap::new(), &[], true, None, never),
            DiskState::System
        );
        // A blank disk in use (a RAID member being built) is still not offered.
        assert_eq!(
            classify(&HashMap::new(), &[], true, Some("1111"), never),
            DiskState::System
        );
        // No recorded store: a disk without a UUID is not taken for it.
        assert_eq!(
            classify(&HashMap::new(), &[], false, None, || true),
            DiskState::Blank
        );
    }

    #[test]
    fn states_are_named_as_the_api_names_them() {
        for state in [
            DiskState::System,
            DiskState::Store,
            DiskState::Blank,
            DiskState::NeedsConfirmation,
        ] {
            assert_eq!(
                serde_json::to_value(state).unwrap(),
                serde_json::Value::String(state.as_str().into())
            );
        }
        assert!(DiskState::Blank.offered() && DiskState::NeedsConfirmation.offered());
        assert!(!DiskState::System.offered() && !DiskState::Store.offered());
    }

    #[test]
    fn finds_mounted_devices_in_mountinfo() {
        let mountinfo = "22 1 254:2 / / ro,relatime - squashfs /dev/vda2 ro\n\
                         30 22 254:4 / /data rw,noatime - ext4 /dev/vda4 rw\n\
                         31 22 0:25 / /tmp rw - tmpfs tmpfs rw\n";
        assert_eq!(mounted_devices(mountinfo), ["254:2", "254:4", "0:25"]);
    }

    #[test]
    fn a_disk_is_blank_only_if_its_first_mib_is_zeros() {
        let dir = tempfile::tempdir().unwrap();
        let zeros = dir.path().join("zeros");
        std::fs::File::create(&zeros)
            .unwrap()
            .set_len(8 << 20)
            .unwrap();
        assert!(zero_start(&zeros));
        // A byte at the end of the first MiB counts; one past it does not.
        let mut bytes = vec![0u8; 2 << 20];
        bytes[BLANK_PREFIX] = 1;
        let late = dir.path().join("late");
        std::fs::write(&late, &bytes).unwrap();
        assert!(zero_start(&late));
        bytes[BLANK_PREFIX - 1] = 0x53;
        std::fs::write(&late, &bytes).unwrap();
        assert!(!zero_start(&late));
        // Shorter than a MiB: all of it is read.
        let short = dir.path().join("short");
        std::fs::write(&short, [0u8; 4096]).unwrap();
        assert!(zero_start(&short));
        assert!(!zero_start(&dir.path().join("missing")));
    }

    #[test]
    fn only_real_disks_are_candidates() {
        let dir = tempfile::tempdir().unwrap();
        let with_device = dir.path().join("vdb");
        std::fs::create_dir_all(with_device.join("device")).unwrap();
        assert!(candidate("vdb", &with_device));
        assert!(!candidate("loop0", &with_device));
        assert!(!candidate("dm-0", &with_device));
        assert!(!candidate("sr0", &with_device));
        assert!(!candidate("vdc", &dir.path().join("vdc")));
    }
}
