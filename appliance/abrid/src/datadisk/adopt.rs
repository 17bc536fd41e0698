//! Adopting a disk: the checks that keep the box from formatting what it must not, then
//! the format itself.

use super::{DiskState, STORE_DISK, StoreDisk, scan, store_disk};
use crate::errors::{AppError, AppResult};
use crate::state::{Db, Table, records::now};
use std::path::Path;

/// The label of the adopted disk's file system.
const FS_LABEL: &str = "abri-store";

/// Why a disk in `state` may not be formatted (with or without `confirm`), or `None` when
/// it may. `store`: the backup disk the box already has, whose backups a second adoption
/// would orphan.
fn refusal(
    name: &str,
    state: DiskState,
    holds: &str,
    confirm: bool,
    store: Option<&StoreDisk>,
) -> Option<AppError> {
    if let Some(store) = store
        && state != DiskState::Store
    {
        return Some(AppError::Invalid(format!(
            "the box already keeps its backups on {}: it takes one backup disk, and {name} is left as it is",
            store.device
        )));
    }
    match state {
        DiskState::System => Some(AppError::Invalid(format!(
            "{name} is in use by the system: it cannot hold backups"
        ))),
        DiskState::Store => Some(AppError::Invalid(format!(
            "{name} is already the backup disk"
        ))),
        DiskState::NeedsConfirmation if !confirm => Some(AppError::ConfirmationRequired(format!(
            "{name} holds {}: formatting it erases everything on it; confirm to go on",
            if holds.is_empty() { "data" } else { holds }
        ))),
        DiskState::NeedsConfirmation | DiskState::Blank => None,
    }
}

/// Formats `name` as the backup disk and records it. A disk that holds anything needs
/// `confirm`; the system disk and the current store are refused.
pub fn adopt(db: &Db, name: &str, confirm: bool, actor: &str) -> AppResult<StoreDisk> {
    let disks = scan(db);
    let Some(disk) = disks.iter().find(|d| d.name == name) else {
        return Err(AppError::NotFound(format!("disk {name}")));
    };
    let store = store_disk(db);
    if let Some(refused) = refusal(name, disk.state, &disk.holds, confirm, store.as_ref()) {
        return Err(refused);
    }
    let dev = Path::new("/dev").join(name).display().to_string();
    let fs_uuid = uuid::Uuid::new_v4().to_string();
    tracing::info!(
        "adopting {dev} as the backup disk (holds: {})",
        if disk.holds.is_empty() {
            "nothing"
        } else {
            &disk.holds
        }
    );
    run("wipefs", &["-a", &dev])?;
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
            &dev,
        ],
    )?;
    reprobe(&dev);
    let record = StoreDisk {
        fs_uuid,
        device: name.to_string(),
        adopted: now(),
    };
    db.put(Table::Config, STORE_DISK, &record)?;
    let what = if disk.holds.is_empty() {
        "blank"
    } else {
        &disk.holds
    };
    if let Err(e) = db.audit(&crate::state::AuditEvent::new(
        actor,
        "disk.adopted",
        format!("{name} ({what})"),
    )) {
        tracing::warn!("cannot record the adoption of {name} in the audit log: {e}");
    }
    Ok(record)
}

/// Asks udev to probe `dev` again and waits for it, so that its database and
/// `/dev/disk/by-uuid` describe the new file system (udev only notices a format by itself
/// when it watches the device, which it may not yet do for a disk just plugged in). A
/// failure is logged: the next start finds the disk by its superblock all the same.
fn reprobe(dev: &str) {
    let done = run("udevadm", &["trigger", "--action=change", dev])
        .and_then(|()| run("udevadm", &["settle", "--timeout=30"]));
    if let Err(e) = done {
        tracing::warn!("udev did not probe {dev} again: {e}");
    }
}

fn run(program: &str, args: &[&str]) -> AppResult<()> {
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
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_blank_or_confirmed_disk_is_formatted() {
        assert!(refusal("vdb", DiskState::Blank, "", false, None).is_none());
        assert!(refusal("vdb", DiskState::Blank, "", true, None).is_none());
        assert!(refusal("vdc", DiskState::NeedsConfirmation, "ext4", true, None).is_none());
        let asked = refusal(
            "vdc",
            DiskState::NeedsConfirmation,
            "a file system: ext4",
            false,
            None,
        );
        match asked {
            Some(AppError::ConfirmationRequired(m)) => {
                assert!(m.contains("vdc holds a file system: ext4"), "{m}")
            }
            other => panic!("expected a confirmation request, got {other:?}"),
        }
        // Confirming never reaches the system disk or the store.
        for state in [DiskState::System, DiskState::Store] {
            assert!(matches!(
                refusal("vda", state, "", true, None),
                Some(AppError::Invalid(_))
            ));
        }
    }

    #[test]
    fn a_second_backup_disk_is_refused() {
        let store = StoreDisk {
            fs_uuid: "1111".into(),
            device: "vdb".into(),
            adopted: 1,
        };
        for state in [DiskState::Blank, DiskState::NeedsConfirmation] {
            match refusal("vdc", state, "", true, Some(&store)) {
                Some(AppError::Invalid(m)) => {
                    assert!(m.contains("on vdb") && m.contains("vdc is left"), "{m}")
                }
                other => panic!("expected a refusal, got {other:?}"),
            }
        }
        assert!(matches!(
            refusal("vdb", DiskState::Store, "", true, Some(&store)),
            Some(AppError::Invalid(_))
        ));
    }
}
