//! Volume Shadow Copy (VSS): a backup reads each volume from a snapshot taken at its start,
//! so the files it reads are from one point in time and none is locked.
//!
//! The agent is a VSS requester (through `winapi`'s `vsbackup`): it asks for a *copy*
//! backup (other backup software's history is left alone) of every volume its selections
//! touch, then walks `\\?\GLOBALROOT\Device\HarddiskVolumeShadowCopyN\` instead of `C:\`.
//! The snapshot set is deleted when [`VolumeSnapshots`] is dropped, which `run_backup`
//! does on every way out, success, failure or cancel.
//!
//! Where VSS is unavailable (no administrator rights, a FAT volume, Wine, the service
//! stopped) the backup reads live files: the job log says why, and the commit carries
//! `without_snapshot`, which the console shows. Never a silent downgrade.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use winapi::shared::guiddef::GUID;
use winapi::shared::winerror::{HRESULT, RPC_E_CHANGED_MODE, RPC_E_TOO_LATE, S_OK};
use winapi::um::combaseapi::{CoInitializeEx, CoInitializeSecurity, CoUninitialize};
use winapi::um::objbase::COINIT_MULTITHREADED;
use winapi::um::vsbackup::{
    CreateVssBackupComponents, IVssBackupComponents, VssFreeSnapshotProperties,
};
use winapi::um::vss::{
    IVssAsync, VSS_BT_COPY, VSS_CTX_BACKUP, VSS_ID, VSS_OBJECT_SNAPSHOT_SET, VSS_SNAPSHOT_PROP,
};

use crate::platform::winpath;
use crate::progress::Counters;

/// The null GUID ("any provider", "no id yet").
const GUID_NULL: GUID = GUID {
    Data1: 0,
    Data2: 0,
    Data3: 0,
    Data4: [0; 8],
};

/// How long one VSS step may take (writers freeze I/O during the snapshot itself).
const STEP_TIMEOUT_MS: u32 = 10 * 60 * 1000;

/// The snapshots of one backup, deleted on drop.
pub struct VolumeSnapshots {
    state: State,
}

enum State {
    /// The walk is not over the machine's volumes (a test tree): nothing to snapshot.
    NotNeeded,
    /// VSS could not be used: the backup reads live files.
    Missing,
    Taken(Taken),
}

struct Taken {
    backup: Backup,
    set_id: VSS_ID,
    /// Drive letter -> snapshot device root.
    mounts: Vec<(Vec<u8>, PathBuf)>,
    _com: ComApartment,
}

impl VolumeSnapshots {
    /// Takes one snapshot set of the volumes that `selections` touch when the walk is over
    /// the machine's volumes (`root` is `/`); says in the job log when that fails.
    pub fn take(root: &Path, selections: &[String], counters: &Counters) -> Self {
        let s = root.as_os_str();
        if !(s.is_empty() || s == "/" || s == "\\") {
            return VolumeSnapshots {
                state: State::NotNeeded,
            };
        }
        let volumes = volumes_of(selections);
        if volumes.is_empty() {
            return VolumeSnapshots {
                state: State::NotNeeded,
            };
        }
        match take_set(&volumes) {
            Ok(taken) => {
                tracing::info!(
                    "volume snapshots taken: {}",
                    taken
                        .mounts
                        .iter()
                        .map(|(v, p)| format!("{}: -> {}", String::from_utf8_lossy(v), p.display()))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                VolumeSnapshots {
                    state: State::Taken(taken),
                }
            }
            Err(e) => {
                counters.warn(format!(
                    "no volume snapshot (VSS) could be taken ({e}): this backup reads the live \
                     files and is marked \"without snapshot\"; files changing meanwhile may be \
                     inconsistent and files locked by a program are skipped"
                ));
                VolumeSnapshots {
                    state: State::Missing,
                }
            }
        }
    }

    /// Top-level names (drive letters) to read from their snapshot.
    pub fn mounts(&self) -> Vec<(Vec<u8>, PathBuf)> {
        match &self.state {
            State::Taken(t) => t.mounts.clone(),
            _ => Vec::new(),
        }
    }

    /// True when a snapshot was wanted and could not be taken.
    pub fn missing(&self) -> bool {
        matches!(self.state, State::Missing)
    }

    /// One snapshot set of the named volumes (a drive letter such as `C`, or a volume
    /// GUID path `\\?\Volume{...}\`), for image backups: the caller says in the job log
    /// why it failed.
    pub fn of_volumes(names: &[Vec<u8>]) -> Result<Self, String> {
        Ok(VolumeSnapshots {
            state: State::Taken(take_set(names)?),
        })
    }

    /// The snapshot device of a volume named as in [`Self::of_volumes`]
    /// (`\\?\GLOBALROOT\Device\HarddiskVolumeShadowCopyN`, no trailing separator).
    pub fn device_of(&self, name: &[u8]) -> Option<String> {
        self.mounts()
            .into_iter()
            .find(|(v, _)| v == name)
            .map(|(_, p)| {
                let text = p.to_string_lossy().into_owned();
                text.trim_end_matches('\\').to_string()
            })
    }
}

/// The root VSS wants for a volume name: `C` -> `C:\`; a GUID path as it is.
fn volume_root(name: &[u8]) -> String {
    let text = String::from_utf8_lossy(name);
    if name.len() == 1 {
        format!("{text}:\\")
    } else {
        text.into_owned()
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        let b = self.backup.0;
        let mut deleted = 0i32;
        let mut not_deleted: VSS_ID = GUID_NULL;
        // SAFETY: b is a live IVssBackupComponents; out-parameters are valid.
        let hr = unsafe {
            (*b).DeleteSnapshots(
                self.set_id,
                VSS_OBJECT_SNAPSHOT_SET,
                1,
                &mut deleted,
                &mut not_deleted,
            )
        };
        if hr != S_OK {
            tracing::warn!("cannot delete the backup's volume snapshots: HRESULT {hr:#010x}");
        }
    }
}

/// The drive letters the selections touch (`/` means every fixed volume).
fn volumes_of(selections: &[String]) -> Vec<Vec<u8>> {
    let mut out = BTreeSet::new();
    for sel in selections {
        match winpath::selection(sel) {
            winpath::Selection::AllVolumes => out.extend(super::fixed_volumes()),
            winpath::Selection::Path(c) => {
                if let Some(first) = c.into_iter().next() {
                    out.insert(first);
                }
            }
            winpath::Selection::NotWindows => {}
        }
    }
    out.into_iter().collect()
}

/// COM initialised on this thread for the snapshot's lifetime.
struct ComApartment(bool);

impl ComApartment {
    fn init() -> Result<Self, String> {
        // SAFETY: initialises COM on this thread; balanced in Drop when it succeeded.
        let hr = unsafe { CoInitializeEx(std::ptr::null_mut(), COINIT_MULTITHREADED) };
        if hr == RPC_E_CHANGED_MODE {
            return Ok(ComApartment(false)); // already initialised otherwise: usable
        }
        hresult("CoInitializeEx", hr)?;
        // VSS writers call back into the requester: allow it. Fails harmlessly when set.
        // SAFETY: process-wide default security, null pointers for the defaults.
        let hr = unsafe {
            CoInitializeSecurity(
                std::ptr::null_mut(),
                -1,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
                6, // RPC_C_AUTHN_LEVEL_PKT_PRIVACY
                2, // RPC_C_IMP_LEVEL_IDENTIFY
                std::ptr::null_mut(),
                0, // EOAC_NONE
                std::ptr::null_mut(),
            )
        };
        if hr != S_OK && hr != RPC_E_TOO_LATE {
            tracing::debug!("CoInitializeSecurity: HRESULT {hr:#010x}");
        }
        Ok(ComApartment(true))
    }
}

impl Drop for ComApartment {
    fn drop(&mut self) {
        if self.0 {
            // SAFETY: balances the successful CoInitializeEx of this thread.
            unsafe { CoUninitialize() };
        }
    }
}

/// An owned IVssBackupComponents.
struct Backup(*mut IVssBackupComponents);

impl Drop for Backup {
    fn drop(&mut self) {
        // SAFETY: releases the one reference this wrapper owns.
        unsafe { (*self.0).Release() };
    }
}

fn hresult(what: &str, hr: HRESULT) -> Result<(), String> {
    if hr < 0 {
        Err(format!(
            "{what} failed with HRESULT {hr:#010x}{}",
            explain(hr)
        ))
    } else {
        Ok(())
    }
}

fn explain(hr: HRESULT) -> &'static str {
    match hr as u32 {
        0x8000_4001 => " (not implemented on this system)",
        0x8007_0005 => " (access denied: the agent must run as administrator or as its service)",
        0x8004_230C => " (the volume does not support snapshots)",
        0x8004_2317 => " (too many snapshots on the volume)",
        _ => "",
    }
}

/// Waits for an asynchronous VSS step and releases it.
fn wait(what: &str, async_op: *mut IVssAsync) -> Result<(), String> {
    if async_op.is_null() {
        return Err(format!("{what} returned no operation"));
    }
    // SAFETY: async_op is a live IVssAsync owned here and released below.
    let result = unsafe {
        let hr = (*async_op).Wait(STEP_TIMEOUT_MS);
        let mut status: HRESULT = 0;
        let hr2 = (*async_op).QueryStatus(&mut status, std::ptr::null_mut());
        (*async_op).Release();
        hresult(what, hr)
            .and(hresult(what, hr2))
            .and(hresult(what, status))
    };
    result
}

fn take_set(volumes: &[Vec<u8>]) -> Result<Taken, String> {
    super::enable_backup_privileges();
    let com = ComApartment::init()?;
    let mut raw: *mut IVssBackupComponents = std::ptr::null_mut();
    // SAFETY: raw receives a new reference, owned by `Backup` below.
    hresult("CreateVssBackupComponents", unsafe {
        CreateVssBackupComponents(&mut raw)
    })?;
    if raw.is_null() {
        return Err("CreateVssBackupComponents returned nothing".into());
    }
    let backup = Backup(raw);
    let b = backup.0;
    let mut set_id: VSS_ID = GUID_NULL;
    let mut snapshot_ids: Vec<(Vec<u8>, VSS_ID)> = Vec::new();
    // SAFETY: every call below is on the live `b`, with valid out-parameters; async
    // operations are waited for and released by `wait`.
    unsafe {
        hresult(
            "InitializeForBackup",
            (*b).InitializeForBackup(std::ptr::null_mut()),
        )?;
        hresult("SetContext", (*b).SetContext(VSS_CTX_BACKUP as i32))?;
        hresult(
            "SetBackupState",
            (*b).SetBackupState(false, false, VSS_BT_COPY, false),
        )?;
        let mut op: *mut IVssAsync = std::ptr::null_mut();
        hresult("GatherWriterMetadata", (*b).GatherWriterMetadata(&mut op))?;
        wait("GatherWriterMetadata", op)?;
        hresult("StartSnapshotSet", (*b).StartSnapshotSet(&mut set_id))?;
        for v in volumes {
            let root_text = volume_root(v);
            let mut root: Vec<u16> = root_text.encode_utf16().chain([0]).collect();
            let mut id: VSS_ID = GUID_NULL;
            hresult(
                &format!("AddToSnapshotSet({root_text})"),
                (*b).AddToSnapshotSet(root.as_mut_ptr(), GUID_NULL, &mut id),
            )?;
            snapshot_ids.push((v.to_vec(), id));
        }
        let mut op: *mut IVssAsync = std::ptr::null_mut();
        hresult("PrepareForBackup", (*b).PrepareForBackup(&mut op))?;
        wait("PrepareForBackup", op)?;
        let mut op: *mut IVssAsync = std::ptr::null_mut();
        hresult("DoSnapshotSet", (*b).DoSnapshotSet(&mut op))?;
        wait("DoSnapshotSet", op)?;
    }
    let mut mounts: Vec<(Vec<u8>, PathBuf)> = Vec::new();
    for (v, id) in snapshot_ids {
        let mut prop: VSS_SNAPSHOT_PROP = unsafe { std::mem::zeroed() };
        // SAFETY: prop is filled by VSS and freed by VssFreeSnapshotProperties.
        let device = unsafe {
            hresult(
                "GetSnapshotProperties",
                (*b).GetSnapshotProperties(id, &mut prop),
            )?;
            let p = prop.m_pwszSnapshotDeviceObject;
            let mut len = 0;
            while !p.is_null() && *p.add(len) != 0 {
                len += 1;
            }
            let device = if p.is_null() {
                String::new()
            } else {
                String::from_utf16_lossy(std::slice::from_raw_parts(p, len))
            };
            VssFreeSnapshotProperties(&mut prop);
            device
        };
        if device.is_empty() {
            return Err(format!("the snapshot of {} has no device", volume_root(&v)));
        }
        mounts.push((v, PathBuf::from(format!("{device}\\"))));
    }
    Ok(Taken {
        backup,
        set_id,
        mounts,
        _com: com,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_names_become_roots() {
        assert_eq!(volume_root(b"C"), r"C:\");
        let guid = r"\\?\Volume{0b1c2d3e-0000-0000-0000-100000000000}\";
        assert_eq!(volume_root(guid.as_bytes()), guid);
    }

    #[test]
    fn only_the_volume_set_is_snapshotted() {
        let counters = Counters::default();
        let tmp = tempfile::tempdir().unwrap();
        let s = VolumeSnapshots::take(tmp.path(), &["/".into()], &counters);
        assert!(!s.missing() && s.mounts().is_empty());
        assert_eq!(
            volumes_of(&[r"D:\data".into(), "d:/other".into(), "/home".into()]),
            vec![b"D".to_vec()]
        );
    }
}
