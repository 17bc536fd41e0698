//! The firmware the box runs, and its updates (RAUC).
//!
//! The image writes `/etc/abri-release` (version, board); the kernel command line names the
//! booted slot (`rauc.slot=A`); RAUC knows both slots. An update is a signed RAUC bundle:
//! it is streamed to the data partition, checked (`rauc info`: signature, compatibility),
//! installed into the other slot (`rauc install`), and the box reboots into it. The outcome
//! is kept in the state (`config/last_update`) and settled at the next start: the box came
//! back on the new slot (`booted`), or GRUB went back to the old one (`rolled_back`).

use crate::errors::{AppError, AppResult};
use crate::state::{Db, Table, records::now};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::process::Command;

const RELEASE_FILE: &str = "/etc/abri-release";
const RAUC_CONF: &str = "/etc/rauc/system.conf";
/// A bundle larger than this is refused while it is uploaded.
pub const MAX_BUNDLE_BYTES: u64 = 2 << 30;
const LAST_UPDATE: &str = "last_update";

/// The running firmware, its slots and the last update, for the console and the API.
#[derive(Serialize)]
pub struct FirmwareInfo {
    pub version: String,
    pub board: Option<String>,
    pub slot: Option<String>,
    pub updates_supported: bool,
    pub slots: Vec<SlotInfo>,
    pub last_update: Option<LastUpdate>,
}

#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct SlotInfo {
    pub bootname: String,
    pub booted: bool,
    /// `good` or `bad` as the boot loader sees it.
    pub boot_status: Option<String>,
    /// The version of the bundle last installed into the slot, when RAUC knows it.
    pub version: Option<String>,
}

/// Where an update stands.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum UpdateResult {
    /// Written to the other slot; the box is rebooting into it.
    Installed,
    /// The box came back on the new slot.
    Booted,
    /// The new slot did not come up: the box went back to the slot it left.
    RolledBack,
    /// RAUC refused or failed to install the bundle; nothing changed.
    Failed,
}

impl std::fmt::Display for UpdateResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UpdateResult::Installed => "installed",
            UpdateResult::Booted => "booted",
            UpdateResult::RolledBack => "rolled_back",
            UpdateResult::Failed => "failed",
        })
    }
}

/// The outcome of the last update, as the console shows it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct LastUpdate {
    pub time: u64,
    pub version: String,
    pub from_slot: Option<String>,
    pub result: UpdateResult,
    pub message: String,
}

/// `KEY=value` lines of the release file.
fn release_field(text: &str, key: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().trim_matches('"').to_string())
        .filter(|v| !v.is_empty())
}

/// The booted slot named on a kernel command line.
pub fn slot_from_cmdline(cmdline: &str) -> Option<String> {
    cmdline
        .split_whitespace()
        .find_map(|arg| arg.strip_prefix("rauc.slot="))
        .map(str::to_string)
}

pub fn booted_slot() -> Option<String> {
    std::fs::read_to_string("/proc/cmdline")
        .ok()
        .and_then(|c| slot_from_cmdline(&c))
}

/// The slots in `rauc status --detailed --output-format=json`.
pub fn parse_rauc_status(json: &str) -> Result<Vec<SlotInfo>, serde_json::Error> {
    let value: serde_json::Value = serde_json::from_str(json)?;
    let booted = value
        .get("booted")
        .and_then(|b| b.as_str())
        .map(str::to_string);
    let mut slots = Vec::new();
    for entry in value
        .get("slots")
        .and_then(|s| s.as_array())
        .into_iter()
        .flatten()
    {
        let Some(obj) = entry.as_object() else {
            continue;
        };
        for slot in obj.values() {
            let Some(bootname) = slot.get("bootname").and_then(|b| b.as_str()) else {
                continue;
            };
            slots.push(SlotInfo {
                bootname: bootname.to_string(),
                booted: booted.as_deref() == Some(bootname),
                boot_status: slot
                    .get("boot_status")
                    .and_then(|s| s.as_str())
                    .map(str::to_string),
                version: slot
                    .pointer("/slot_status/bundle/version")
                    .and_then(|v| v.as_str())
                    .map(str::to_string),
            });
        }
    }
    slots.sort_by(|a, b| a.bootname.cmp(&b.bootname));
    Ok(slots)
}

fn updates_supported() -> bool {
    Path::new(RAUC_CONF).exists()
}

async fn rauc_slots() -> Vec<SlotInfo> {
    if !updates_supported() {
        return Vec::new();
    }
    let out = Command::new("rauc")
        .args(["status", "--detailed", "--output-format=json"])
        .output()
        .await;
    match out {
        Ok(o) if o.status.success() => parse_rauc_status(&String::from_utf8_lossy(&o.stdout))
            .unwrap_or_else(|e| {
                tracing::warn!("cannot read rauc status: {e}");
                Vec::new()
            }),
        Ok(o) => {
            tracing::warn!(
                "rauc status failed: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            Vec::new()
        }
        Err(e) => {
            tracing::warn!("cannot run rauc: {e}");
            Vec::new()
        }
    }
}

/// The firmware version: the image's, else abrid's own (development).
pub fn version() -> String {
    std::fs::read_to_string(RELEASE_FILE)
        .ok()
        .and_then(|t| release_field(&t, "VERSION"))
        .unwrap_or_else(|| crate::app::VERSION.to_string())
}

pub async fn info(db: &Db) -> AppResult<FirmwareInfo> {
    let release = std::fs::read_to_string(RELEASE_FILE).unwrap_or_default();
    Ok(FirmwareInfo {
        version: version(),
        board: release_field(&release, "BOARD"),
        slot: booted_slot(),
        updates_supported: updates_supported(),
        slots: rauc_slots().await,
        last_update: db.get(Table::Config, LAST_UPDATE)?,
    })
}

/// What an update that rebooted the box came to, seen from the slot that booted and the
/// version that runs. Only an `installed` update is settled; any other record is final.
pub fn settled(last: &LastUpdate, booted: Option<&str>, running: &str) -> Option<LastUpdate> {
    if last.result != UpdateResult::Installed {
        return None;
    }
    let mut next = last.clone();
    match booted {
        Some(slot) if last.from_slot.as_deref() == Some(slot) => {
            next.result = UpdateResult::RolledBack;
            next.message = format!(
                "version {} did not come up; the box went back to slot {slot} (version {running})",
                last.version
            );
        }
        _ => {
            next.result = UpdateResult::Booted;
            next.message = format!("running version {running}");
        }
    }
    Some(next)
}

/// At every start: settles an update that rebooted the box.
pub fn settle_last_update(db: &Db) -> anyhow::Result<()> {
    let Some(last) = db.get::<LastUpdate>(Table::Config, LAST_UPDATE)? else {
        return Ok(());
    };
    let Some(next) = settled(&last, booted_slot().as_deref(), &version()) else {
        return Ok(());
    };
    if next.result == UpdateResult::RolledBack {
        tracing::warn!("update: {}", next.message);
    } else {
        tracing::info!("update settled: {}", next.message);
    }
    db.put(Table::Config, LAST_UPDATE, &next)?;
    Ok(())
}

/// The version in `rauc info --output-format=json`.
pub fn bundle_version(info_json: &str) -> Option<String> {
    serde_json::from_str::<serde_json::Value>(info_json)
        .ok()?
        .get("version")?
        .as_str()
        .filter(|v| !v.is_empty())
        .map(str::to_string)
}

/// One update at a time.
static UPDATE_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The right to receive and install one update: held from the first byte of the upload to
/// the end of the install, so that two uploads never write the same file.
pub struct UpdateTurn {
    _guard: tokio::sync::MutexGuard<'static, ()>,
}

/// Takes the update turn, before anything is uploaded: a box that cannot install updates,
/// or that is installing one, says so at once.
pub fn begin_update() -> AppResult<UpdateTurn> {
    if !updates_supported() {
        return Err(AppError::UpdateRejected(format!(
            "this box cannot install updates: {RAUC_CONF} is missing (development box?)"
        )));
    }
    UPDATE_LOCK
        .try_lock()
        .map(|guard| UpdateTurn { _guard: guard })
        .map_err(|_| AppError::UpdateRejected("another update is being installed".into()))
}

fn upload_path(state_dir: &Path) -> PathBuf {
    state_dir.join("update").join("upload.raucb")
}

/// Streams an uploaded bundle to the data partition, within [`MAX_BUNDLE_BYTES`]. A refused
/// or broken upload leaves no file behind.
pub async fn receive<S, E>(_turn: &UpdateTurn, state_dir: &Path, body: S) -> AppResult<PathBuf>
where
    S: futures_util::Stream<Item = Result<axum::body::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    let path = upload_path(state_dir);
    let dir = path.parent().unwrap_or(state_dir);
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("cannot create {}: {e}", dir.display())))?;
    match write_upload(&path, body, MAX_BUNDLE_BYTES).await {
        Ok(()) => Ok(path),
        Err(e) => {
            let _ = tokio::fs::remove_file(&path).await;
            Err(e)
        }
    }
}

async fn write_upload<S, E>(path: &Path, mut body: S, limit: u64) -> AppResult<()>
where
    S: futures_util::Stream<Item = Result<axum::body::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    use futures_util::StreamExt;
    let mut file = tokio::fs::File::create(path).await.map_err(|e| {
        AppError::Internal(anyhow::anyhow!("cannot create {}: {e}", path.display()))
    })?;
    let mut size: u64 = 0;
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| AppError::Invalid(format!("the upload broke off: {e}")))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(AppError::TooLarge(
                usize::try_from(limit).unwrap_or(usize::MAX),
            ));
        }
        file.write_all(&chunk).await.map_err(|e| {
            AppError::Internal(anyhow::anyhow!("cannot write {}: {e}", path.display()))
        })?;
    }
    if size == 0 {
        return Err(AppError::Invalid("the update file is empty".into()));
    }
    file.sync_all()
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("cannot sync {}: {e}", path.display())))
}

/// What an install did.
#[derive(Serialize)]
pub struct InstallOutcome {
    pub version: String,
    pub from_slot: Option<String>,
    pub rebooting: bool,
}

async fn run(cmd: &mut Command, what: &str, limit: Duration) -> AppResult<String> {
    let out = tokio::time::timeout(limit, cmd.output())
        .await
        .map_err(|_| {
            AppError::Invalid(format!(
                "{what} did not finish within {} s",
                limit.as_secs()
            ))
        })?
        .map_err(|e| AppError::Internal(anyhow::anyhow!("cannot run {what}: {e}")))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let reason = stderr
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("no reason given")
            .trim()
            .to_string();
        Err(AppError::UpdateRejected(format!("{what}: {reason}")))
    }
}

/// Checks and installs the bundle at `bundle` into the other slot, records the outcome and,
/// on success, reboots the box a few seconds later. The file is removed in every case.
pub async fn install(
    turn: UpdateTurn,
    db: &Db,
    bundle: &Path,
    actor: &str,
) -> AppResult<InstallOutcome> {
    let result = install_inner(db, bundle, actor).await;
    drop(turn);
    let _ = tokio::fs::remove_file(bundle).await;
    result
}

async fn install_inner(db: &Db, bundle: &Path, actor: &str) -> AppResult<InstallOutcome> {
    let info = run(
        Command::new("rauc")
            .args(["info", "--output-format=json"])
            .arg(bundle),
        "rauc info",
        Duration::from_secs(300),
    )
    .await?;
    let version = bundle_version(&info).unwrap_or_else(|| "unknown".into());
    let from_slot = booted_slot();
    let record = |result: UpdateResult, message: String| LastUpdate {
        time: now(),
        version: version.clone(),
        from_slot: from_slot.clone(),
        result,
        message,
    };
    let installed = run(
        Command::new("rauc").arg("install").arg(bundle),
        "rauc install",
        Duration::from_secs(1800),
    )
    .await;
    if let Err(e) = installed {
        db.put(
            Table::Config,
            LAST_UPDATE,
            &record(UpdateResult::Failed, e.to_string()),
        )?;
        let _ = db.audit(&crate::state::AuditEvent::new(
            actor,
            "update.failed",
            format!("{version}: {e}"),
        ));
        return Err(e);
    }
    db.put(
        Table::Config,
        LAST_UPDATE,
        &record(
            UpdateResult::Installed,
            format!("installed {version}; rebooting"),
        ),
    )?;
    let _ = db.audit(&crate::state::AuditEvent::new(
        actor,
        "update.installed",
        version.clone(),
    ));
    tokio::spawn(async {
        tokio::time::sleep(Duration::from_secs(3)).await;
        reboot().await;
    });
    Ok(InstallOutcome {
        version,
        from_slot,
        rebooting: true,
    })
}

/// Asks systemd to reboot the box.
pub async fn reboot() {
    tracing::info!("rebooting");
    match Command::new("systemctl").arg("reboot").status().await {
        Ok(s) if s.success() => {}
        Ok(s) => tracing::error!("systemctl reboot failed: {s}"),
        Err(e) => tracing::error!("cannot run systemctl reboot: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_slot_and_the_release() {
        assert_eq!(
            slot_from_cmdline("root=PARTUUID=x ro rauc.slot=B quiet").as_deref(),
            Some("B")
        );
        assert_eq!(slot_from_cmdline("root=/dev/sda1 ro"), None);
        let release = "VERSION=0.2.0\nBOARD=\"x86_64-efi\"\n";
        assert_eq!(release_field(release, "VERSION").as_deref(), Some("0.2.0"));
        assert_eq!(
            release_field(release, "BOARD").as_deref(),
            Some("x86_64-efi")
        );
        assert_eq!(release_field(release, "OTHER"), None);
    }

    #[test]
    fn parses_rauc_status() {
        let json = r#"{"compatible":"abri-x86_64-efi","variant":"","booted":"B","boot_primary":"rootfs.1",
          "slots":[{"rootfs.0":{"class":"rootfs","device":"/dev/vda2","type":"raw","bootname":"A",
          "state":"inactive","boot_status":"good","slot_status":{"bundle":{"compatible":"abri-x86_64-efi","version":"0.1.0"}}}},
          {"rootfs.1":{"class":"rootfs","device":"/dev/vda3","type":"raw","bootname":"B",
          "state":"booted","boot_status":"good"}}]}"#;
        let slots = parse_rauc_status(json).unwrap();
        assert_eq!(slots.len(), 2);
        assert_eq!(slots[0].bootname, "A");
        assert!(!slots[0].booted);
        assert_eq!(slots[0].version.as_deref(), Some("0.1.0"));
        assert!(slots[1].booted);
        assert_eq!(slots[1].version, None);
        assert!(parse_rauc_status("not json").is_err());
    }

    fn installed(from: &str) -> LastUpdate {
        LastUpdate {
            time: 1,
            version: "0.2.0".into(),
            from_slot: Some(from.into()),
            result: UpdateResult::Installed,
            message: "installed 0.2.0; rebooting".into(),
        }
    }

    #[test]
    fn an_update_is_settled_by_the_slot_that_booted() {
        let came_back = settled(&installed("A"), Some("B"), "0.2.0").unwrap();
        assert_eq!(came_back.result, UpdateResult::Booted);
        assert_eq!(came_back.message, "running version 0.2.0");
        let fell_back = settled(&installed("A"), Some("A"), "0.1.0").unwrap();
        assert_eq!(fell_back.result, UpdateResult::RolledBack);
        assert!(
            fell_back.message.contains("0.2.0 did not come up")
                && fell_back.message.contains("slot A"),
            "{}",
            fell_back.message
        );
        // Not booted through RAUC (no rauc.slot=): nothing to compare, the box runs.
        assert_eq!(
            settled(&installed("A"), None, "0.2.0").unwrap().result,
            UpdateResult::Booted
        );
        // A settled or failed record is final.
        for result in [
            UpdateResult::Booted,
            UpdateResult::RolledBack,
            UpdateResult::Failed,
        ] {
            let mut last = installed("A");
            last.result = result;
            assert_eq!(settled(&last, Some("A"), "0.1.0"), None);
        }
    }

    #[test]
    fn the_record_is_stored_with_stable_names() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        db.put(Table::Config, LAST_UPDATE, &installed("Z")).unwrap();
        settle_last_update(&db).unwrap();
        let settled: LastUpdate = db.get(Table::Config, LAST_UPDATE).unwrap().unwrap();
        assert_ne!(settled.result, UpdateResult::Installed);
        settle_last_update(&db).unwrap();
        let again: LastUpdate = db.get(Table::Config, LAST_UPDATE).unwrap().unwrap();
        assert_eq!(again, settled);
        let json = serde_json::to_value(&again).unwrap();
        assert_eq!(json["result"], again.result.to_string());
        assert_eq!(
            serde_json::to_value(UpdateResult::RolledBack).unwrap(),
            "rolled_back"
        );
    }

    #[test]
    fn reads_the_bundle_version() {
        let info = r#"{"compatible":"abri-x86_64-efi","version":"0.1.0-next","description":null,
          "build":null,"hooks":[],"hash":"ab","images":[{"rootfs":{"filename":"rootfs.squashfs"}}]}"#;
        assert_eq!(bundle_version(info).as_deref(), Some("0.1.0-next"));
        assert_eq!(bundle_version(r#"{"version":""}"#), None);
        assert_eq!(bundle_version(r#"{"compatible":"x"}"#), None);
        assert_eq!(bundle_version("rauc: not json"), None);
    }

    #[tokio::test]
    async fn an_upload_is_written_whole_or_not_at_all() {
        use axum::body::Bytes;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("upload.raucb");
        let chunks = |parts: Vec<Result<&'static [u8], &'static str>>| {
            futures_util::stream::iter(
                parts
                    .into_iter()
                    .map(|p| p.map(Bytes::from_static))
                    .collect::<Vec<_>>(),
            )
        };
        write_upload(&path, chunks(vec![Ok(b"rauc"), Ok(b"b")]), 16)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"raucb");
        let broken = write_upload(&path, chunks(vec![Ok(b"ra"), Err("reset")]), 16).await;
        assert!(
            matches!(&broken, Err(AppError::Invalid(m)) if m.contains("broke off: reset")),
            "{broken:?}"
        );
        let big = write_upload(
            &path,
            chunks(vec![Ok(b"0123456789"), Ok(b"0123456789")]),
            16,
        )
        .await;
        assert!(matches!(big, Err(AppError::TooLarge(16))), "{big:?}");
        let empty = write_upload(&path, chunks(vec![]), 16).await;
        assert!(matches!(empty, Err(AppError::Invalid(_))), "{empty:?}");

        // Through receive, a refused upload leaves nothing behind.
        let turn = UpdateTurn {
            _guard: UPDATE_LOCK.try_lock().unwrap(),
        };
        let state = dir.path().join("state");
        let refused = receive(&turn, &state, chunks(vec![Ok(b"ra"), Err("reset")])).await;
        assert!(refused.is_err());
        assert!(!upload_path(&state).exists());
        let kept = receive(&turn, &state, chunks(vec![Ok(b"bundle")]))
            .await
            .unwrap();
        assert_eq!(std::fs::read(kept).unwrap(), b"bundle");
    }
}
