//! The list of machines, each with how fresh its last good backup is. The control room
//! (`dashboard`) shows the same rows, so they are built here for both.

use super::super::dashboard::human_time;
use super::super::{Chrome, PageUser, render};
use crate::app::App;
use crate::jobs::{Job, JobKind, JobState};
use crate::machines;
use crate::state::Machine;
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use std::collections::HashMap;
use std::sync::Arc;

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

pub(super) fn row(m: Machine, last: Option<u64>, never: &str) -> MachineRow {
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
