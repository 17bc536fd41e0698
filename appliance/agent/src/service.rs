//! `abri-agent run`: the service. It long-polls the box for commands (the agent dials, so
//! NAT is no obstacle), runs backups and restores one at a time, and forwards cancels.
//!
//! It never exits because of the box: a failed poll waits with capped exponential backoff
//! (1 s doubling to 60 s, with jitter so a fleet does not reconnect in step) and tries
//! again. A failed job is reported to the box with `finish` and the loop goes on.

use abri_proto::agent::{COMMAND_POLL_SECONDS, Command, JobEnd};
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

use crate::backup::BackupError;
use crate::client::BoxClient;
use crate::config::AgentConfig;
use crate::progress::Counters;
use crate::remote::{JobError, backup_job, restore_job};
use crate::restore::{RestoreOptions, selection_paths};
use crate::state::{JobLock, LastJob, save_last_job};

/// Longest wait between two failed polls.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The job running now, for cancels.
#[derive(Default)]
struct Running {
    current: Option<(String, Arc<Counters>)>,
    cancelled: HashSet<String>,
}

/// Runs the service until the process is stopped.
pub async fn run(config: AgentConfig) -> Result<(), crate::client::ClientError> {
    let client = BoxClient::from_config(&config)?;
    let running = Arc::new(Mutex::new(Running::default()));
    let (jobs_tx, jobs_rx) = mpsc::unbounded_channel::<Command>();
    tokio::spawn(run_jobs(
        client.clone(),
        config.clone(),
        running.clone(),
        jobs_rx,
    ));
    tracing::info!(
        "abri-agent {} serving machine {} with {}",
        env!("CARGO_PKG_VERSION"),
        config.machine_id,
        config.box_url
    );
    let mut backoff = Duration::from_secs(1);
    let mut was_failing = false;
    loop {
        match client.poll_command(COMMAND_POLL_SECONDS).await {
            Ok(command) => {
                if was_failing {
                    tracing::info!("connected to the box again");
                    was_failing = false;
                }
                backoff = Duration::from_secs(1);
                match command {
                    None => {}
                    Some(Command::Cancel { job_id }) => cancel(&running, &job_id),
                    Some(other) => {
                        // The runner lives as long as this sender: the send cannot fail.
                        let _ = jobs_tx.send(other);
                    }
                }
            }
            Err(e) => {
                if !was_failing || !e.is_transient() {
                    tracing::warn!("cannot get commands from the box: {e}; retrying with backoff");
                }
                was_failing = true;
                tokio::time::sleep(jitter(backoff)).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// `d` plus up to a quarter of it, from the clock's low bits (no RNG dependency).
fn jitter(d: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|t| t.subsec_nanos())
        .unwrap_or(0);
    let max = d.as_millis() as u64 / 4;
    d + Duration::from_millis(if max == 0 { 0 } else { u64::from(nanos) % max })
}

fn cancel(running: &Mutex<Running>, job_id: &str) {
    if let Ok(mut r) = running.lock() {
        match &r.current {
            Some((id, counters)) if id == job_id => {
                tracing::info!("cancelling job {job_id}");
                counters.cancel.store(true, Ordering::Relaxed);
            }
            _ => {
                r.cancelled.insert(job_id.to_string());
            }
        }
    }
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

async fn run_jobs(
    client: BoxClient,
    config: AgentConfig,
    running: Arc<Mutex<Running>>,
    mut jobs: mpsc::UnboundedReceiver<Command>,
) {
    while let Some(command) = jobs.recv().await {
        let (job_id, kind) = match &command {
            Command::Backup { job_id, .. } => (job_id.clone(), "backup"),
            Command::Restore { job_id, .. } => (job_id.clone(), "restore"),
            Command::Cancel { .. } => continue,
        };
        let counters = Arc::new(Counters::default());
        let was_cancelled = running
            .lock()
            .map(|mut r| {
                r.current = Some((job_id.clone(), counters.clone()));
                r.cancelled.remove(&job_id)
            })
            .unwrap_or(false);
        let outcome = if was_cancelled {
            Outcome::Cancelled
        } else {
            execute(&client, &config, command, counters).await
        };
        if let Ok(mut r) = running.lock() {
            r.current = None;
        }
        let (status, error, snapshot) = match &outcome {
            Outcome::Committed(id) => ("succeeded", None, Some(id.clone())),
            Outcome::Restored => ("succeeded", None, None),
            Outcome::Cancelled => ("cancelled", None, None),
            Outcome::Failed(e) => ("failed", Some(e.clone()), None),
        };
        match &outcome {
            Outcome::Committed(id) => tracing::info!("job {job_id}: snapshot {id} committed"),
            Outcome::Failed(e) => tracing::warn!("job {job_id} failed: {e}"),
            _ => tracing::info!("job {job_id}: {status}"),
        }
        // A commit already ended the job on the box; everything else ends it here.
        if !matches!(outcome, Outcome::Committed(_)) {
            let end = JobEnd {
                status: status.into(),
                error: error.clone(),
            };
            if let Err(e) = client.finish(&job_id, &end).await {
                tracing::warn!("cannot report the end of job {job_id} to the box: {e}");
            }
        }
        save_last_job(
            &config.state_dir,
            &LastJob {
                job_id,
                kind: kind.into(),
                status: status.into(),
                finished: unix_now(),
                snapshot,
                error,
            },
        );
    }
}

enum Outcome {
    Committed(String),
    Restored,
    Cancelled,
    Failed(String),
}

async fn execute(
    client: &BoxClient,
    config: &AgentConfig,
    command: Command,
    counters: Arc<Counters>,
) -> Outcome {
    let _lock = match JobLock::acquire(&config.state_dir) {
        Ok(l) => l,
        Err(e) => return Outcome::Failed(e.to_string()),
    };
    match command {
        Command::Backup { job_id, spec } => {
            match backup_job(client, config, &job_id, spec, counters).await {
                Ok(report) => Outcome::Committed(report.snapshot.id),
                Err(JobError::Backup(BackupError::Cancelled)) => Outcome::Cancelled,
                Err(e) => Outcome::Failed(e.to_string()),
            }
        }
        Command::Restore {
            job_id,
            snapshot,
            paths,
            target,
            image,
        } => {
            // `/` is the original place on every system (on Windows it is not a path).
            if target != "/" && !std::path::Path::new(&target).is_absolute() {
                return Outcome::Failed(format!(
                    "the restore target {target:?} is not an absolute path"
                ));
            }
            if let Some(volume) = image {
                let target = PathBuf::from(target);
                return match crate::remote::image_files_restore_job(
                    client,
                    config,
                    Some(&job_id),
                    &snapshot,
                    &volume,
                    paths,
                    target,
                    counters,
                )
                .await
                {
                    Ok(_) => Outcome::Restored,
                    Err(JobError::Restore(crate::restore::RestoreError::Cancelled)) => {
                        Outcome::Cancelled
                    }
                    Err(e) => Outcome::Failed(e.to_string()),
                };
            }
            let paths = match selection_paths(&paths) {
                Ok(p) => p,
                Err(e) => return Outcome::Failed(e.to_string()),
            };
            let opts = RestoreOptions {
                target: PathBuf::from(target),
                paths,
                overwrite: false,
                as_root: crate::platform::is_root(),
            };
            match restore_job(client, config, Some(&job_id), &snapshot, opts, counters).await {
                Ok(_) => Outcome::Restored,
                Err(JobError::Restore(crate::restore::RestoreError::Cancelled)) => {
                    Outcome::Cancelled
                }
                Err(e) => Outcome::Failed(e.to_string()),
            }
        }
        Command::Cancel { .. } => Outcome::Cancelled,
    }
}
