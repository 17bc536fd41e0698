//! Machines: the list, one machine's page, and enrolment tokens.

use super::dashboard::{human_bytes, human_time};
use super::{Chrome, Flash, PageUser, render, status_of};
use crate::app::App;
use crate::backups;
use crate::errors::AppError;
use crate::http::extract::PageForm;
use crate::jobs::{Job, JobKind, JobState};
use crate::machines;
use crate::state::Machine;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;

type Q = Query<HashMap<String, String>>;

/// A machine as a row of the list.
pub struct MachineRow {
    pub id: String,
    pub hostname: String,
    pub os: String,
    pub last_backup: String,
    /// `fresh` (< 24 h), `recent` (< 48 h), `stale` (< 7 d), `old`, `never`: colours the row.
    pub freshness: &'static str,
    pub last_seen: String,
    pub revoked: bool,
}

/// When each machine's newest successful backup finished, from one pass over the jobs.
fn last_good_backups(jobs: &[Job]) -> HashMap<&str, u64> {
    let mut last: HashMap<&str, u64> = HashMap::new();
    for job in jobs
        .iter()
        .filter(|j| j.kind == JobKind::Backup && j.state == JobState::Succeeded)
    {
        if let Some(finished) = job.finished {
            let slot = last.entry(job.machine.as_str()).or_insert(finished);
            *slot = (*slot).max(finished);
        }
    }
    last
}

/// The control room's colour scale of backup age.
pub fn freshness(age_secs: Option<u64>) -> &'static str {
    match age_secs {
        None => "never",
        Some(a) if a < 86400 => "fresh",
        Some(a) if a < 2 * 86400 => "recent",
        Some(a) if a < 7 * 86400 => "stale",
        Some(_) => "old",
    }
}

fn row(m: Machine, last: Option<u64>, never: &str) -> MachineRow {
    let now = crate::state::records::now();
    MachineRow {
        last_backup: last.map(human_time).unwrap_or_else(|| never.to_string()),
        freshness: freshness(last.map(|t| now.saturating_sub(t))),
        last_seen: human_time(m.last_seen),
        revoked: m.revoked_at.is_some(),
        id: m.id,
        hostname: m.hostname,
        os: m.os,
    }
}

#[derive(Template)]
#[template(path = "machines.html")]
pub struct MachinesPage {
    pub c: Chrome,
    pub machines: Vec<MachineRow>,
}

/// Every machine as a row, for the list and the control room.
pub fn machine_rows(app: &App, never: &str) -> Vec<MachineRow> {
    let jobs = app.jobs.all().unwrap_or_default();
    let last = last_good_backups(&jobs);
    machines::machines(app)
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            let t = last.get(m.id.as_str()).copied();
            row(m, t, never)
        })
        .collect()
}

pub async fn machines_page(State(app): State<Arc<App>>, user: PageUser) -> Response {
    let c = Chrome::new(&app, &user.language, Some(&user), "machines", "/machines");
    let machines = machine_rows(&app, c.t.never);
    render(StatusCode::OK, &MachinesPage { c, machines })
}

/// A job as a row of the machine's history.
pub struct JobRow {
    pub id: String,
    pub machine: String,
    pub rate: String,
    pub kind: &'static str,
    pub plan: String,
    pub state: &'static str,
    pub active: bool,
    pub started: String,
    pub duration: String,
    pub files: u64,
    pub bytes: String,
    pub current: String,
    pub error: String,
    pub log: Vec<String>,
}

pub fn job_row(job: Job) -> JobRow {
    let state = match job.state {
        JobState::Queued => "queued",
        JobState::Running => "running",
        JobState::Succeeded => "succeeded",
        JobState::Failed => "failed",
        JobState::Cancelled => "cancelled",
    };
    let end = job.finished.unwrap_or_else(crate::state::records::now);
    let duration = job
        .started
        .map(|s| format!("{} s", end.saturating_sub(s)))
        .unwrap_or_default();
    let elapsed = end.saturating_sub(job.started.unwrap_or(end)).max(1);
    JobRow {
        machine: job.machine.clone(),
        rate: format!("{}/s", human_bytes(job.progress.bytes_scanned / elapsed)),
        kind: if job.kind == JobKind::Backup {
            "backup"
        } else {
            "restore"
        },
        plan: job.plan,
        state,
        active: job.state.is_active(),
        started: human_time(job.started.unwrap_or(job.created)),
        duration,
        files: job.progress.files_scanned,
        bytes: human_bytes(job.progress.bytes_scanned),
        current: job.progress.current.unwrap_or_default(),
        error: job.error.unwrap_or_default(),
        log: job.log.iter().rev().take(50).rev().cloned().collect(),
        id: job.id,
    }
}

/// A committed backup as a row of the machine's history.
pub struct SnapshotRow {
    pub id: String,
    pub plan: String,
    pub started: String,
    pub duration: String,
    pub files: u64,
    pub size: String,
    pub changed: String,
    pub full: bool,
    /// Image snapshots: what they hold, e.g. `sda (gpt: 2 volumes)`; empty for files.
    pub images: String,
    /// Read from live files: no volume snapshot could be taken.
    pub without_snapshot: bool,
}

fn snapshot_row(m: &abri_store::SnapshotManifest) -> SnapshotRow {
    let st = &m.stats;
    let changed = match (st.new_bytes * 1000).checked_div(st.bytes) {
        Some(per_mille) => format!("{}.{} %", per_mille / 10, per_mille % 10),
        None => "—".into(),
    };
    SnapshotRow {
        id: m.id.clone(),
        plan: m.plan.clone(),
        started: human_time(m.started.max(0) as u64),
        duration: format!("{} s", (m.finished - m.started).max(0)),
        files: st.files,
        size: human_bytes(st.bytes),
        changed,
        full: m.full,
        images: m
            .images
            .iter()
            .map(|i| format!("{} ({}, {})", i.name, i.table, human_bytes(i.size)))
            .collect::<Vec<_>>()
            .join(", "),
        without_snapshot: m.without_snapshot,
    }
}

#[derive(Template)]
#[template(path = "machine.html")]
pub struct MachinePage {
    pub c: Chrome,
    pub m: MachineRow,
    /// The latest backup's logical size.
    pub protected: String,
    /// What this machine's backups added to the store (compressed, deduplicated).
    pub stored: String,
    pub agent_version: String,
    pub enrolled: String,
    pub jobs: Vec<JobRow>,
    pub snapshots: Vec<SnapshotRow>,
}

pub async fn machine_page(
    State(app): State<Arc<App>>,
    user: PageUser,
    Path(id): Path<String>,
    Query(q): Q,
) -> Response {
    let path = format!("/machines/{id}");
    let machine = match machines::machine(&app, &id) {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let mut c = Chrome::new(&app, &user.language, Some(&user), "machines", &path);
    if q.contains_key("queued") {
        c.flash = Flash::ok(c.t.backup_queued);
    } else if q.contains_key("revoked") {
        c.flash = Flash::ok(c.t.key_revoked);
    } else if q.contains_key("restore") {
        c.flash = Flash::ok(c.t.restore_queued);
    }
    machine_view(&app, c, machine, StatusCode::OK)
}

fn machine_view(app: &App, mut c: Chrome, machine: Machine, status: StatusCode) -> Response {
    let jobs: Vec<JobRow> = app
        .jobs
        .history(&machine.id, 30)
        .unwrap_or_default()
        .into_iter()
        .map(job_row)
        .collect();
    if jobs.iter().any(|j| j.active) {
        c.refresh = Some(3);
    }
    let manifests = abri_store::list_snapshots(&app.store, &machine.id).unwrap_or_default();
    let protected = human_bytes(manifests.last().map_or(0, |m| m.stats.bytes));
    let stored = human_bytes(manifests.iter().map(|m| m.stats.stored_new_bytes).sum());
    let mut snapshots: Vec<SnapshotRow> = manifests.iter().map(snapshot_row).collect();
    snapshots.reverse();
    let agent_version = machine.agent_version.clone();
    let enrolled = human_time(machine.enrolled);
    let last_good = manifests.last().map(|m| m.finished.max(0) as u64);
    let m = row(machine, last_good, c.t.never);
    render(
        status,
        &MachinePage {
            c,
            m,
            protected,
            stored,
            agent_version,
            enrolled,
            jobs,
            snapshots,
        },
    )
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

pub async fn backup_now(
    State(app): State<Arc<App>>,
    user: PageUser,
    Path(id): Path<String>,
    PageForm(form): PageForm<CsrfForm>,
) -> Response {
    let result = user
        .check_csrf(&form.csrf)
        .and_then(|()| backups::queue_backup(&app, &user.name, &id, "files", false));
    after_action(&app, &user, &id, result.map(|_| ()), "queued")
}

pub async fn revoke(
    State(app): State<Arc<App>>,
    user: PageUser,
    Path(id): Path<String>,
    PageForm(form): PageForm<CsrfForm>,
) -> Response {
    let result = user
        .check_csrf(&form.csrf)
        .and_then(|()| machines::revoke_machine(&app, &user.name, &id));
    after_action(&app, &user, &id, result, "revoked")
}

#[derive(Deserialize)]
pub struct CancelForm {
    csrf: String,
    machine: String,
}

pub async fn cancel_job(
    State(app): State<Arc<App>>,
    user: PageUser,
    Path(job): Path<String>,
    PageForm(form): PageForm<CancelForm>,
) -> Response {
    let result = user
        .check_csrf(&form.csrf)
        .and_then(|()| backups::cancel_job(&app, &user.name, &job));
    after_action(&app, &user, &form.machine, result, "cancelled")
}

fn after_action(
    app: &App,
    user: &PageUser,
    machine_id: &str,
    result: Result<(), AppError>,
    ok: &str,
) -> Response {
    match result {
        Ok(()) => Redirect::to(&format!("/machines/{machine_id}?{ok}=1")).into_response(),
        Err(e) => match machines::machine(app, machine_id) {
            Ok(machine) => {
                let path = format!("/machines/{machine_id}");
                let c =
                    Chrome::new(app, &user.language, Some(user), "machines", &path).with_error(&e);
                machine_view(app, c, machine, status_of(&e))
            }
            Err(_) => e.into_response(),
        },
    }
}

// ---- enrolment ----

pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub expires: String,
    pub uses: u64,
    pub revoked: bool,
}

#[derive(Template)]
#[template(path = "enrol.html")]
pub struct EnrolPage {
    pub c: Chrome,
    pub tokens: Vec<TokenRow>,
    /// The command line with a token just created, shown once.
    pub new_command: Option<String>,
    /// The same for Windows: a silent install of the MSI (docs/windows.md).
    pub new_windows_command: Option<String>,
    /// The token just created, for the Windows installer kit form.
    pub new_token: Option<String>,
    /// Whether this box carries the Windows installer it can make kits of.
    pub windows_installer: bool,
    /// The address a kit gives agents by default.
    pub box_url: String,
}

/// What the enrolment page shows once a token is made: the Linux and Windows command lines
/// and the token itself (for the installer kit).
pub struct NewToken {
    pub command: String,
    pub windows_command: String,
    pub token: String,
}

fn enrol_view(app: &App, c: Chrome, new: Option<NewToken>, status: StatusCode) -> Response {
    let (new_command, new_windows_command, new_token) = match new {
        Some(n) => (Some(n.command), Some(n.windows_command), Some(n.token)),
        None => (None, None, None),
    };
    let tokens = machines::enrol_tokens(app)
        .unwrap_or_default()
        .into_iter()
        .map(|t| TokenRow {
            expires: human_time(t.expires),
            id: t.id,
            name: t.name,
            uses: t.uses,
            revoked: t.revoked,
        })
        .collect();
    render(
        status,
        &EnrolPage {
            c,
            tokens,
            new_command,
            new_windows_command,
            new_token,
            windows_installer: crate::installers::windows_msi(&app.installers_dir).is_some(),
            box_url: crate::installers::default_box_url(app),
        },
    )
}

fn enrol_chrome(app: &App, user: &PageUser) -> Chrome {
    Chrome::new(
        app,
        &user.language,
        Some(user),
        "machines",
        "/machines/enrol",
    )
}

/// The enrolment page again, with what went wrong.
fn enrol_failed(app: &App, user: &PageUser, e: &AppError) -> Response {
    enrol_view(
        app,
        enrol_chrome(app, user).with_error(e),
        None,
        status_of(e),
    )
}

pub async fn enrol_page(State(app): State<Arc<App>>, user: PageUser) -> Response {
    let c = enrol_chrome(&app, &user);
    enrol_view(&app, c, None, StatusCode::OK)
}

#[derive(Deserialize)]
pub struct TokenForm {
    csrf: String,
    name: String,
    days: String,
}

pub async fn create_token(
    State(app): State<Arc<App>>,
    user: PageUser,
    PageForm(form): PageForm<TokenForm>,
) -> Response {
    let result = user.check_csrf(&form.csrf).and_then(|()| {
        let days: u32 = form
            .days
            .trim()
            .parse()
            .map_err(|_| AppError::Invalid("days: a whole number of days".into()))?;
        machines::create_enrol_token(&app, &user.name, &form.name, days)
    });
    match result {
        Ok((_, secret)) => {
            let box_url = crate::installers::default_box_url(&app);
            let fingerprint = app.ca.fingerprint();
            let command = format!(
                "abri-agent enroll --box {box_url} --fingerprint {fingerprint} --token {secret}"
            );
            let windows_command = format!(
                "msiexec /i abri-agent.msi /qn BOX_URL={box_url} \
                 FINGERPRINT={fingerprint} TOKEN={secret}"
            );
            let new = NewToken {
                command,
                windows_command,
                token: secret,
            };
            enrol_view(&app, enrol_chrome(&app, &user), Some(new), StatusCode::OK)
        }
        Err(e) => enrol_failed(&app, &user, &e),
    }
}

#[derive(Deserialize)]
pub struct KitForm {
    csrf: String,
    token: String,
    box_url: String,
}

/// The Windows installer with the box's address, its fingerprint and a token built in.
pub async fn windows_kit(
    State(app): State<Arc<App>>,
    user: PageUser,
    PageForm(form): PageForm<KitForm>,
) -> Response {
    let result = match user.check_csrf(&form.csrf) {
        Ok(()) => {
            let app = app.clone();
            crate::errors::blocking(move || {
                crate::installers::windows_kit(&app, &form.token, &form.box_url)
            })
            .await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(bytes) => kit_response(&app, bytes),
        Err(e) => enrol_failed(&app, &user, &e),
    }
}

/// An installer kit as a download; it holds a token, so no cache keeps it.
pub fn kit_response(app: &App, bytes: Vec<u8>) -> Response {
    use axum::http::header;
    let name = format!("abri-agent-{}.msi", app.identity.hostname);
    (
        [
            (header::CONTENT_TYPE, "application/x-msi".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        bytes,
    )
        .into_response()
}

pub async fn revoke_token(
    State(app): State<Arc<App>>,
    user: PageUser,
    Path(id): Path<String>,
    PageForm(form): PageForm<CsrfForm>,
) -> Response {
    let result = user
        .check_csrf(&form.csrf)
        .and_then(|()| machines::revoke_enrol_token(&app, &user.name, &id));
    match result {
        Ok(()) => Redirect::to("/machines/enrol").into_response(),
        Err(e) => enrol_failed(&app, &user, &e),
    }
}

#[cfg(test)]
mod tests {
    use super::freshness;

    #[test]
    fn freshness_follows_the_control_room_scale() {
        assert_eq!(freshness(None), "never");
        assert_eq!(freshness(Some(3600)), "fresh");
        assert_eq!(freshness(Some(30 * 3600)), "recent");
        assert_eq!(freshness(Some(3 * 86400)), "stale");
        assert_eq!(freshness(Some(30 * 86400)), "old");
    }
}

// ---- browsing a snapshot ----

pub struct Crumb {
    pub name: String,
    pub path: String,
}

pub struct ItemRow {
    pub name: String,
    pub path: String,
    pub is_dir: bool,
    pub is_file: bool,
    pub kind: &'static str,
    pub size: String,
    pub modified: String,
}

#[derive(Template)]
#[template(path = "snapshot.html")]
pub struct SnapshotPage {
    pub c: Chrome,
    pub machine_id: String,
    pub hostname: String,
    pub snapshot: SnapshotRow,
    pub path: String,
    pub crumbs: Vec<Crumb>,
    pub items: Vec<ItemRow>,
    pub default_target: String,
}

fn crumbs(path: &str) -> Vec<Crumb> {
    let mut out = Vec::new();
    let mut acc = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if !acc.is_empty() {
            acc.push('/');
        }
        acc.push_str(part);
        out.push(Crumb {
            name: part.to_string(),
            path: acc.clone(),
        });
    }
    out
}

pub async fn snapshot_page(
    State(app): State<Arc<App>>,
    user: PageUser,
    Path((id, sid)): Path<(String, String)>,
    Query(q): Q,
) -> Response {
    let raw_path = q.get("path").cloned().unwrap_or_default();
    let c = Chrome::new(
        &app,
        &user.language,
        Some(&user),
        "machines",
        &format!("/machines/{id}"),
    );
    snapshot_view(&app, c, &id, &sid, &raw_path, StatusCode::OK)
}

fn snapshot_view(
    app: &Arc<App>,
    c: Chrome,
    id: &str,
    sid: &str,
    raw_path: &str,
    status: StatusCode,
) -> Response {
    if let Ok(manifest) = backups::machine_snapshot(app, id, sid)
        && manifest.kind == abri_store::SnapshotKind::Image
    {
        return image_snapshot_view(app, c, id, manifest);
    }
    let result = (|| {
        let machine = machines::machine(app, id)?;
        let manifest = backups::machine_snapshot(app, id, sid)?;
        let dir = crate::snapshot_files::normalize(raw_path)?;
        let items = crate::snapshot_files::list_dir(&app.store, manifest.catalog.clone(), &dir)?;
        Ok::<_, AppError>((machine, manifest, dir, items))
    })();
    let (machine, manifest, dir, items) = match result {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let path = String::from_utf8_lossy(&dir).into_owned();
    let page = SnapshotPage {
        machine_id: machine.id.clone(),
        hostname: machine.hostname.clone(),
        snapshot: snapshot_row(&manifest),
        crumbs: crumbs(&path),
        items: items
            .into_iter()
            .map(|i| ItemRow {
                is_dir: i.kind == "dir",
                is_file: i.kind == "file",
                kind: i.kind,
                size: human_bytes(i.size),
                modified: human_time(i.mtime.max(0) as u64),
                name: i.name,
                path: i.path,
            })
            .collect(),
        default_target: if machine.os == "windows" {
            format!("C:\\abri-restore\\{sid}")
        } else {
            format!("/var/tmp/abri-restore/{sid}")
        },
        path,
        c,
    };
    render(status, &page)
}

#[derive(Deserialize)]
pub struct RestoreForm {
    csrf: String,
    #[serde(default)]
    path: String,
    target: String,
}

pub async fn restore(
    State(app): State<Arc<App>>,
    user: PageUser,
    Path((id, sid)): Path<(String, String)>,
    PageForm(form): PageForm<RestoreForm>,
) -> Response {
    let result = user.check_csrf(&form.csrf).and_then(|()| {
        let paths = if form.path.trim_matches('/').is_empty() {
            Vec::new()
        } else {
            vec![form.path.trim_matches('/').to_string()]
        };
        let request = crate::jobs::RestoreRequest {
            snapshot: sid.clone(),
            paths,
            target: form.target.trim().to_string(),
            image: None,
        };
        backups::queue_restore(&app, &user.name, &id, request)
    });
    match result {
        Ok(_) => Redirect::to(&format!("/machines/{id}?restore=1")).into_response(),
        Err(e) => {
            let c = Chrome::new(
                &app,
                &user.language,
                Some(&user),
                "machines",
                &format!("/machines/{id}"),
            )
            .with_error(&e);
            let status = status_of(&e);
            snapshot_view(&app, c, &id, &sid, &form.path, status)
        }
    }
}

/// One image of an image snapshot, as its page shows it.
pub struct ImageCard {
    pub name: String,
    pub source: String,
    pub size: String,
    pub table: String,
    pub read: String,
    pub volumes: Vec<VolumeRow>,
}

pub struct VolumeRow {
    pub number: u32,
    pub label: String,
    pub fs: String,
    pub size: String,
    pub used: String,
    pub browsable: bool,
}

#[derive(Template)]
#[template(path = "image_snapshot.html")]
pub struct ImageSnapshotPage {
    pub c: Chrome,
    pub machine_id: String,
    pub hostname: String,
    pub snapshot: SnapshotRow,
    pub images: Vec<ImageCard>,
}

fn image_snapshot_view(
    app: &Arc<App>,
    c: Chrome,
    id: &str,
    manifest: abri_store::SnapshotManifest,
) -> Response {
    let machine = match machines::machine(app, id) {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let images = manifest
        .images
        .iter()
        .map(|i| ImageCard {
            name: i.name.clone(),
            source: i.source.clone(),
            size: human_bytes(i.size),
            table: i.table.clone(),
            read: i.read.clone(),
            volumes: i
                .volumes
                .iter()
                .map(|v| VolumeRow {
                    number: v.number,
                    label: v.label.clone(),
                    fs: v.fs.clone(),
                    size: human_bytes(v.size),
                    used: v.used_bytes.map(human_bytes).unwrap_or_else(|| "—".into()),
                    browsable: !v.fs.is_empty(),
                })
                .collect(),
        })
        .collect();
    let page = ImageSnapshotPage {
        machine_id: machine.id.clone(),
        hostname: machine.hostname.clone(),
        snapshot: snapshot_row(&manifest),
        images,
        c,
    };
    render(StatusCode::OK, &page)
}

#[derive(Template)]
#[template(path = "volume.html")]
pub struct VolumePage {
    pub c: Chrome,
    pub machine_id: String,
    pub hostname: String,
    pub snapshot: SnapshotRow,
    pub image: String,
    pub volume: u32,
    pub fs: String,
    pub path: String,
    pub crumbs: Vec<Crumb>,
    pub items: Vec<ItemRow>,
    pub default_target: String,
}

/// Browses a volume of an image snapshot (ext4, NTFS).
pub async fn volume_page(
    State(app): State<Arc<App>>,
    user: PageUser,
    Path((id, sid, image, volume)): Path<(String, String, String, u32)>,
    Query(q): Q,
) -> Response {
    let raw_path = q.get("path").cloned().unwrap_or_default();
    let c = Chrome::new(
        &app,
        &user.language,
        Some(&user),
        "machines",
        &format!("/machines/{id}"),
    );
    let result = async {
        let machine = machines::machine(&app, &id)?;
        let manifest = backups::machine_snapshot(&app, &id, &sid)?;
        let info = crate::snapshot_images::image_of(&manifest, &image)?;
        let fs_name = crate::image_browse::volume_of(&info, volume)?.fs;
        let dir = crate::image_browse::normalize(&raw_path)?;
        let (a, m) = (app.clone(), manifest.clone());
        let listing_dir = dir.clone();
        let items = crate::errors::blocking(move || {
            let fs = crate::image_browse::open_volume(
                &a.image_readers,
                a.store.clone(),
                &m,
                info,
                volume,
            )?;
            crate::image_browse::list(fs.as_ref(), &listing_dir)
        })
        .await?;
        Ok::<_, AppError>((machine, manifest, fs_name, dir, items))
    }
    .await;
    let (machine, manifest, fs, dir, items) = match result {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let path = String::from_utf8_lossy(&dir)
        .trim_start_matches('/')
        .to_string();
    let page = VolumePage {
        machine_id: machine.id.clone(),
        hostname: machine.hostname.clone(),
        snapshot: snapshot_row(&manifest),
        default_target: if machine.os == "windows" {
            format!("C:\\abri-restore\\{sid}")
        } else {
            format!("/var/tmp/abri-restore/{sid}")
        },
        image,
        volume,
        fs,
        crumbs: crumbs(&path),
        items: items
            .into_iter()
            .map(|e| {
                let kind = match e.kind {
                    abri_fsread::EntryKind::File => "file",
                    abri_fsread::EntryKind::Dir => "dir",
                    abri_fsread::EntryKind::Symlink => "symlink",
                    abri_fsread::EntryKind::Other => "other",
                };
                ItemRow {
                    is_dir: kind == "dir",
                    is_file: kind == "file",
                    kind,
                    size: human_bytes(e.size),
                    modified: e
                        .mtime_ns
                        .map(|t| human_time(t.div_euclid(1_000_000_000).max(0) as u64))
                        .unwrap_or_default(),
                    path: if path.is_empty() {
                        e.name.clone()
                    } else {
                        format!("{path}/{}", e.name)
                    },
                    name: e.name,
                }
            })
            .collect(),
        path,
        c,
    };
    render(StatusCode::OK, &page)
}

/// "Restore to the machine" from a volume of an image snapshot.
pub async fn volume_restore(
    State(app): State<Arc<App>>,
    user: PageUser,
    Path((id, sid, image, volume)): Path<(String, String, String, u32)>,
    PageForm(form): PageForm<RestoreForm>,
) -> Response {
    let result = user.check_csrf(&form.csrf).and_then(|()| {
        let request = crate::jobs::RestoreRequest {
            snapshot: sid.clone(),
            paths: vec![format!("/{}", form.path.trim_matches('/'))],
            target: form.target.trim().to_string(),
            image: Some(abri_proto::agent::ImageVolumeRef {
                image: image.clone(),
                volume,
            }),
        };
        backups::queue_restore(&app, &user.name, &id, request)
    });
    match result {
        Ok(_) => Redirect::to(&format!("/machines/{id}?restore=1")).into_response(),
        Err(e) => e.into_response(),
    }
}
