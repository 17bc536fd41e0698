//! The dashboard: the box at a glance.

use super::{Chrome, PageUser, render};
use crate::app::App;
use crate::boxinfo::{self, DiskView};
use crate::settings;
use crate::state::AuditEvent;
use abri_proto::plan::Plan;
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

#[derive(Template)]
#[template(path = "dashboard.html")]
pub struct DashboardPage {
    pub c: Chrome,
    pub fingerprint: String,
    pub fqdn: Option<String>,
    pub plans: Vec<Plan>,
    pub relay: Option<String>,
    pub disks: Vec<DiskRow>,
    pub activity: Vec<ActivityRow>,
    pub machines: Vec<super::machines::MachineRow>,
    pub running: Vec<RunningRow>,
}

/// A job in progress on the dashboard.
pub struct RunningRow {
    pub hostname: String,
    pub job: super::machines::JobRow,
}

/// A disk as shown: sizes already formatted.
pub struct DiskRow {
    pub mount: String,
    pub device: String,
    pub fs_type: String,
    pub free: String,
    pub total: String,
    pub used_percent: u64,
}

impl From<&DiskView> for DiskRow {
    fn from(d: &DiskView) -> Self {
        DiskRow {
            mount: d.mount.clone(),
            device: d.device.clone(),
            fs_type: d.fs_type.clone(),
            free: human_bytes(d.free_bytes),
            total: human_bytes(d.total_bytes),
            used_percent: (d.total_bytes.saturating_sub(d.free_bytes) * 100)
                .checked_div(d.total_bytes)
                .unwrap_or(0),
        }
    }
}

pub struct ActivityRow {
    pub time: String,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

impl From<AuditEvent> for ActivityRow {
    fn from(e: AuditEvent) -> Self {
        ActivityRow {
            time: human_time(e.time),
            actor: e.actor,
            action: e.action,
            detail: e.detail,
        }
    }
}

pub async fn dashboard(State(app): State<Arc<App>>, user: PageUser) -> Response {
    let info = match boxinfo::box_info(&app) {
        Ok(i) => i,
        Err(e) => return crate::errors::AppError::from(e).into_response(),
    };
    let relay = settings::mail_view(&app).host;
    let mut c = Chrome::new(&app, &user.language, Some(&user), "dashboard", "/dashboard");
    let machines = super::machines::machine_rows(&app, c.t.never);
    let hostname_of = |id: &str| {
        machines
            .iter()
            .find(|m| m.id == id)
            .map(|m| m.hostname.clone())
            .unwrap_or_else(|| id.to_string())
    };
    let running: Vec<RunningRow> = app
        .jobs
        .active()
        .into_iter()
        .map(|j| RunningRow {
            hostname: hostname_of(&j.machine),
            job: super::machines::job_row(j),
        })
        .collect();
    if !running.is_empty() {
        c.refresh = Some(3);
    }
    let page = DashboardPage {
        c,
        machines,
        running,
        fingerprint: abri_proto::pin::display_fingerprint(&info.fingerprint),
        fqdn: info.fqdn,
        plans: settings::plans(&app).unwrap_or_default(),
        relay,
        disks: info.disks.iter().map(DiskRow::from).collect(),
        activity: app
            .db
            .recent_audit(8)
            .unwrap_or_default()
            .into_iter()
            .map(ActivityRow::from)
            .collect(),
    };
    render(StatusCode::OK, &page)
}

/// `12.3 GiB` for templates.
pub fn human_bytes(bytes: u64) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < units.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", units[unit])
    }
}

/// `2026-11-21 13:05 UTC` for templates.
pub fn human_time(secs: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(secs as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}
