//! Backups as the console and the scheduler ask for them: queueing, cancelling, and the
//! periodic check of which machines are due. Storage itself is `abri_store`.

use crate::app::App;
use crate::errors::{AppError, AppResult};
use crate::jobs::{Job, JobKind, JobState};
use crate::machines;
use crate::schedule::{self, Decision, RunHistory};
use crate::settings;
use crate::state::AuditEvent;
use crate::state::records::now;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// A machine's first backup of a plan reads everything: it is recorded as full, so the
/// scheduler counts the next full re-read from it.
pub fn spec_for(
    app: &App,
    machine_id: &str,
    plan: &str,
    full: bool,
) -> AppResult<abri_proto::agent::BackupSpec> {
    let first = !abri_store::list_snapshots(&app.store, machine_id)?
        .iter()
        .any(|s| s.plan == plan);
    settings::backup_spec(app, plan, full || first)
}

/// Queues a backup of one machine (console, API).
pub fn queue_backup(
    app: &App,
    actor: &str,
    machine_id: &str,
    plan: &str,
    full: bool,
) -> AppResult<Job> {
    let machine = machines::machine(app, machine_id)?;
    if machine.revoked_at.is_some() {
        return Err(AppError::Invalid(
            "machine: its key was revoked; enrol it again".into(),
        ));
    }
    let spec = spec_for(app, machine_id, plan, full)?;
    let job = app.jobs.queue_backup(machine_id, spec, "console")?;
    app.db.audit(&AuditEvent::new(
        actor,
        "backup_queued",
        format!("{} on {} ({})", plan, machine.hostname, job.id),
    ))?;
    Ok(job)
}

pub fn cancel_job(app: &App, actor: &str, job_id: &str) -> AppResult<()> {
    let job = app.jobs.get(job_id)?;
    if !job.state.is_active() {
        return Err(AppError::Invalid(format!(
            "job: {job_id} has already ended"
        )));
    }
    app.jobs.cancel(&job.machine, job_id)?;
    app.db
        .audit(&AuditEvent::new(actor, "job_cancelled", job_id))?;
    Ok(())
}

/// What the box remembers of each (machine, plan)'s backups, from one pass over the jobs.
fn run_histories(jobs: &[Job]) -> HashMap<(&str, &str), RunHistory> {
    let mut histories: HashMap<(&str, &str), RunHistory> = HashMap::new();
    for job in jobs.iter().filter(|j| j.kind == JobKind::Backup) {
        let h = histories
            .entry((job.machine.as_str(), job.plan.as_str()))
            .or_default();
        let started = job.started.unwrap_or(job.created);
        let newest =
            |slot: &mut Option<u64>| *slot = Some(slot.map_or(started, |s| s.max(started)));
        newest(&mut h.last_attempt_started);
        if job.state == JobState::Succeeded {
            newest(&mut h.last_success_started);
            if job.full {
                newest(&mut h.last_full_started);
            }
        }
    }
    histories
}

/// One pass of the scheduler: queue every file plan that is due on a live machine.
pub fn run_due(app: &App, now_secs: u64) -> AppResult<Vec<Job>> {
    let minute = schedule::local_minute_of_day(now_secs, app.factory.partner.timezone.as_deref());
    let mut queued = Vec::new();
    let plans = settings::plans(app)?;
    let jobs = app.jobs.all()?;
    let histories = run_histories(&jobs);
    for machine in machines::machines(app)? {
        if machine.revoked_at.is_some() {
            continue;
        }
        for plan in &plans {
            if app.jobs.active_for(&machine.id, &plan.id).is_some() {
                continue;
            }
            let h = histories
                .get(&(machine.id.as_str(), plan.id.as_str()))
                .copied()
                .unwrap_or_default();
            if let Decision::Run { full } = schedule::decide(&plan.settings, &h, now_secs, minute) {
                let spec = spec_for(app, &machine.id, &plan.id, full)?;
                queued.push(app.jobs.queue_backup(&machine.id, spec, "schedule")?);
            }
        }
    }
    Ok(queued)
}

/// The scheduler task: checks every minute.
pub async fn scheduler(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(60));
    loop {
        tick.tick().await;
        match app.jobs.fail_silent(crate::jobs::SILENCE_LIMIT) {
            Ok(failed) => {
                for job in failed {
                    tracing::warn!(machine = %job.machine, job = %job.id, "job failed: its agent stopped reporting");
                }
            }
            Err(e) => tracing::warn!("job watchdog: {e}"),
        }
        match run_due(&app, now()) {
            Ok(jobs) => {
                for job in jobs {
                    tracing::info!(machine = %job.machine, plan = %job.plan, full = job.full, job = %job.id, "backup due");
                }
            }
            Err(e) => tracing::warn!("scheduler: {e}"),
        }
    }
}

/// Queues a restore that the machine's agent carries out ("restore to the machine"): the
/// snapshot must be the machine's own, the paths relative to the snapshot's root, and the
/// target an absolute directory on the machine.
pub fn queue_restore(
    app: &App,
    actor: &str,
    machine_id: &str,
    request: crate::jobs::RestoreRequest,
) -> AppResult<Job> {
    let machine = machines::machine(app, machine_id)?;
    if machine.revoked_at.is_some() {
        return Err(AppError::Invalid("machine: its key was revoked".into()));
    }
    abri_store::validate_id("snapshot", &request.snapshot)?;
    let manifest =
        abri_store::load_snapshot(&app.store, machine_id, &request.snapshot).map_err(|_| {
            AppError::NotFound(format!("snapshot {} of this machine", request.snapshot))
        })?;
    match &request.image {
        None if manifest.kind == abri_store::SnapshotKind::Image => {
            return Err(AppError::Invalid(
                "image: name the image and volume to restore files from".into(),
            ));
        }
        None => {}
        Some(r) => {
            let info = crate::snapshot_images::image_of(&manifest, &r.image)?;
            let volume = crate::image_browse::volume_of(&info, r.volume)?;
            if volume.fs.is_empty() {
                return Err(AppError::Invalid(format!(
                    "volume: {} of {} holds no file system Abri can read",
                    r.volume, r.image
                )));
            }
        }
    }
    for path in &request.paths {
        let relative = path.trim_start_matches('/');
        if request.image.is_some() && relative.is_empty() {
            continue;
        }
        abri_store::validate_path(relative.as_bytes())?;
    }
    let windows_drive = request.target.len() > 2 && request.target.as_bytes()[1] == b':';
    if !(request.target.starts_with('/') || windows_drive) {
        return Err(AppError::Invalid(
            "target: an absolute directory on the machine".into(),
        ));
    }
    let job = app.jobs.queue_restore(machine_id, request)?;
    app.db.audit(&AuditEvent::new(
        actor,
        "restore_queued",
        format!("on {} ({})", machine.hostname, job.id),
    ))?;
    Ok(job)
}

/// A committed snapshot of a machine, or `not_found`.
pub fn machine_snapshot(
    app: &App,
    machine_id: &str,
    snapshot: &str,
) -> AppResult<abri_store::SnapshotManifest> {
    machines::machine(app, machine_id)?;
    abri_store::validate_id("snapshot", snapshot)?;
    abri_store::load_snapshot(&app.store, machine_id, snapshot)
        .map_err(|_| AppError::NotFound(format!("snapshot {snapshot} of machine {machine_id}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_pass_gives_each_machine_and_plan_its_own_history() {
        let dir = tempfile::tempdir().unwrap();
        let app = crate::app::test_app(dir.path());
        let spec = settings::backup_spec(&app, "files", true).unwrap();
        let a = app.jobs.start_agent_backup("m-a", &spec).unwrap();
        app.jobs
            .finish("m-a", &a.id, JobState::Succeeded, None, Some("s".into()))
            .unwrap();
        let b = app.jobs.start_agent_backup("m-b", &spec).unwrap();
        app.jobs
            .finish("m-b", &b.id, JobState::Failed, Some("x".into()), None)
            .unwrap();
        let jobs = app.jobs.all().unwrap();
        let h = run_histories(&jobs);
        let ha = h[&("m-a", "files")];
        assert!(ha.last_success_started.is_some() && ha.last_full_started.is_some());
        let hb = h[&("m-b", "files")];
        assert!(hb.last_attempt_started.is_some());
        assert_eq!(hb.last_success_started, None, "a failure is not a success");
        assert!(!h.contains_key(&("m-a", "image")));
    }
}
