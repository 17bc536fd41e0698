//! The box's daily upkeep: apply each plan's retention (prune), then free the chunks no
//! snapshot references any more (GC), and verify the store on demand.
//!
//! Prune never removes the newest good snapshots a plan keeps (`abri_store::select_to_keep`
//! keeps at least one). GC runs while backups continue: chunks touched after the GC's safety
//! line survive, and that line lies an hour before both the GC's start and the start of the
//! oldest job still running, so chunks a running backup has uploaded or reused but not yet
//! committed are never swept.

use crate::app::App;
use crate::errors::{AppError, AppResult};
use crate::settings;
use crate::state::AuditEvent;
use crate::state::records::now;
use abri_store::{RetentionPolicy, SnapshotInfo};
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const SAFETY_MARGIN: Duration = Duration::from_secs(3600);
/// The hour (box time) at which the daily upkeep runs.
const UPKEEP_HOUR: u32 = 4;

#[derive(Clone, Debug, Default, Serialize)]
pub struct UpkeepReport {
    pub started: u64,
    pub finished: u64,
    pub snapshots_removed: Vec<String>,
    pub chunks_removed: u64,
    pub bytes_freed: u64,
    pub error: Option<String>,
}

/// The last upkeep's report, kept for the console and API.
#[derive(Default)]
pub struct UpkeepState {
    pub last: Mutex<Option<UpkeepReport>>,
}

fn to_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Applies every file plan's retention to every machine. Returns the removed snapshots as
/// `machine/id`.
pub fn prune(app: &App, now_secs: u64) -> AppResult<Vec<String>> {
    let plans = settings::plans(app)?;
    let mut removed = Vec::new();
    for machine in abri_store::list_machines(&app.store)? {
        let snapshots = abri_store::list_snapshots(&app.store, &machine)?;
        for plan in &plans {
            let r = &plan.settings.retention;
            let policy = RetentionPolicy {
                keep_within_days: r.keep_within_days,
                keep_last: r.keep_last,
                keep_weekly: r.keep_weekly,
                keep_monthly: r.keep_monthly,
            };
            let infos: Vec<SnapshotInfo> = snapshots
                .iter()
                .filter(|s| s.plan == plan.id)
                .map(|s| SnapshotInfo {
                    id: s.id.clone(),
                    time: s.started,
                    good: true,
                })
                .collect();
            if infos.is_empty() {
                continue;
            }
            let (_keep, remove) = abri_store::select_to_keep(&infos, &policy, now_secs as i64);
            for id in remove {
                abri_store::delete_snapshot(&app.store, &machine, &id)?;
                app.db.audit(&AuditEvent::new(
                    "box",
                    "snapshot_pruned",
                    format!("{machine}/{id} ({})", plan.id),
                ))?;
                removed.push(format!("{machine}/{id}"));
            }
        }
    }
    Ok(removed)
}

/// The time before which unreferenced chunks may be swept.
pub fn gc_safety_line(app: &App, gc_start: SystemTime) -> SystemTime {
    let oldest_active = app
        .jobs
        .active()
        .iter()
        .map(|j| UNIX_EPOCH + Duration::from_secs(j.started.unwrap_or(j.created)))
        .min()
        .unwrap_or(gc_start);
    gc_start.min(oldest_active) - SAFETY_MARGIN
}

/// Prune, then GC. Blocking: run it on a blocking thread.
pub fn upkeep(app: &App) -> UpkeepReport {
    let start = SystemTime::now();
    let mut report = UpkeepReport {
        started: to_secs(start),
        ..UpkeepReport::default()
    };
    let result = (|| -> AppResult<()> {
        report.snapshots_removed = prune(app, now())?;
        let gc = abri_store::gc(&app.store, gc_safety_line(app, start))?;
        report.chunks_removed = gc.removed_chunks;
        report.bytes_freed = gc.removed_bytes;
        Ok(())
    })();
    if let Err(e) = result {
        tracing::warn!("upkeep failed: {e}");
        report.error = Some(e.to_string());
    }
    report.finished = now();
    let _ = app.db.audit(&AuditEvent::new(
        "box",
        "upkeep",
        format!(
            "{} snapshots pruned, {} chunks ({} bytes) freed{}",
            report.snapshots_removed.len(),
            report.chunks_removed,
            report.bytes_freed,
            report
                .error
                .as_deref()
                .map(|e| format!("; error: {e}"))
                .unwrap_or_default()
        ),
    ));
    if let Ok(mut last) = app.upkeep.last.lock() {
        *last = Some(report.clone());
    }
    report
}

pub async fn run_upkeep(app: Arc<App>) -> AppResult<UpkeepReport> {
    tokio::task::spawn_blocking(move || upkeep(&app))
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("upkeep task failed: {e}")))
}

/// Runs the upkeep once a day, in the hour after `UPKEEP_HOUR` box time.
pub async fn daily(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    let mut last_run: Option<u64> = None;
    loop {
        tick.tick().await;
        let t = now();
        let minute =
            crate::schedule::local_minute_of_day(t, app.factory.partner.timezone.as_deref());
        let due =
            minute / 60 == UPKEEP_HOUR && last_run.is_none_or(|l| t.saturating_sub(l) > 20 * 3600);
        if due {
            last_run = Some(t);
            match run_upkeep(app.clone()).await {
                Ok(r) => tracing::info!(
                    pruned = r.snapshots_removed.len(),
                    chunks = r.chunks_removed,
                    bytes = r.bytes_freed,
                    "daily upkeep done"
                ),
                Err(e) => tracing::warn!("daily upkeep: {e}"),
            }
        }
    }
}

/// Verifies every chunk and snapshot of the store. Blocking and long: I/O of the whole store.
pub async fn verify(app: Arc<App>) -> AppResult<abri_store::VerifyReport> {
    let store = app.store.clone();
    let report = tokio::task::spawn_blocking(move || abri_store::verify(&store))
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("verify task failed: {e}")))??;
    let _ = app.db.audit(&AuditEvent::new(
        "box",
        "verify",
        format!(
            "{} chunks checked, {} corrupt, {} snapshots damaged",
            report.chunks_checked,
            report.corrupt.len(),
            report.damaged.len()
        ),
    ));
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use abri_store::{CatalogWriter, ChunkerParams, SnapshotKind, SnapshotManifest, SnapshotStats};

    fn commit(app: &App, id: &str, started: i64) {
        let mut catalog = CatalogWriter::new(app.store.key().clone(), ChunkerParams::DEFAULT, 1);
        catalog
            .push(&abri_store::Entry::new(
                format!("f-{id}"),
                abri_store::EntryKind::Dir,
            ))
            .unwrap();
        let finished = catalog.finish();
        for c in &finished.chunks {
            app.store.insert_encoded(&c.digest, &c.bytes).unwrap();
        }
        let manifest = SnapshotManifest {
            format: 1,
            id: id.into(),
            machine: "m-1".into(),
            kind: SnapshotKind::Files,
            plan: "files".into(),
            started,
            finished: started + 60,
            full: false,
            catalog: finished.digests,
            stats: SnapshotStats::default(),
            source: "/".into(),
            host: "pc".into(),
            images: Vec::new(),
            without_snapshot: false,
        };
        abri_store::commit_snapshot(&manifest, &app.store).unwrap();
    }

    #[test]
    fn prune_applies_the_plan_and_keeps_the_newest() {
        let dir = tempfile::tempdir().unwrap();
        let app = crate::app::test_app(dir.path());
        let now = 1_800_000_000i64;
        for day in 0..10 {
            commit(&app, &format!("s{day:02}"), now - day * 86400);
        }
        // Default file plan: everything within 90 days is kept.
        assert!(prune(&app, now as u64).unwrap().is_empty());
        let mut plan = settings::plan(&app, "files").unwrap().settings;
        plan.retention.keep_within_days = 0;
        plan.retention.keep_last = 3;
        settings::update_plan(&app, "admin", "files", plan).unwrap();
        let removed = prune(&app, now as u64).unwrap();
        assert_eq!(removed.len(), 7);
        let left: Vec<String> = abri_store::list_snapshots(&app.store, "m-1")
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        assert_eq!(left, ["s02", "s01", "s00"], "the three newest stay");
        // GC then frees the pruned snapshots' catalog chunks once they are old enough.
        let report =
            abri_store::gc(&app.store, SystemTime::now() + Duration::from_secs(60)).unwrap();
        assert!(report.removed_chunks >= 7, "{report:?}");
        assert!(abri_store::verify(&app.store).unwrap().is_clean());
    }

    #[test]
    fn gc_line_protects_running_jobs() {
        let dir = tempfile::tempdir().unwrap();
        let app = crate::app::test_app(dir.path());
        let start = SystemTime::now();
        assert_eq!(gc_safety_line(&app, start), start - SAFETY_MARGIN);
        let spec = settings::backup_spec(&app, "files", false).unwrap();
        let job = app.jobs.start_agent_backup("m-1", &spec).unwrap();
        let job_start = UNIX_EPOCH + Duration::from_secs(job.started.unwrap());
        let later = start + Duration::from_secs(7200);
        assert_eq!(gc_safety_line(&app, later), job_start - SAFETY_MARGIN);
    }
}
