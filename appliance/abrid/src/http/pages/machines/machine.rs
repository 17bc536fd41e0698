//! One machine's page: its recent jobs and its snapshots, and the actions taken from it
//! (back up now, revoke its key, cancel a job). A failed action shows the page again with
//! the error, so the user keeps the context of what they tried.

use super::super::dashboard::{human_bytes, human_time};
use super::super::{Chrome, Flash, PageUser, render, status_of};
use super::list::{MachineRow, row};
use super::{CsrfForm, Q};
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
use std::sync::Arc;

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

pub(super) fn snapshot_row(m: &abri_store::SnapshotManifest) -> SnapshotRow {
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
