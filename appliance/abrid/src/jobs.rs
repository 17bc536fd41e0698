//! Jobs (backups and restores) and the command queues agents long-poll.
//!
//! Every job is a record in the `jobs` table from the moment it is queued; its live progress
//! is kept in memory and written back at most every few seconds and at the end. Commands for
//! a machine wait in an in-memory queue until its agent polls; a box restart fails the jobs
//! that were queued or running (their record says so), and the scheduler queues new ones.

use crate::errors::{AppError, AppResult};
use crate::secrets::generate_token;
use crate::state::records::now;
use crate::state::{Db, Table};
use abri_proto::agent::{BackupSpec, Command, Progress};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;

/// Most log lines kept per job.
const MAX_LOG_LINES: usize = 2000;
/// Live progress is written to the database at most this often.
const PERSIST_EVERY: Duration = Duration::from_secs(5);
/// A running job whose agent has not reported for this long is failed (agents report about
/// every second while they work).
pub const SILENCE_LIMIT: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn is_active(self) -> bool {
        matches!(self, JobState::Queued | JobState::Running)
    }
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Backup,
    Restore,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RestoreRequest {
    pub snapshot: String,
    pub paths: Vec<String>,
    pub target: String,
    /// Files from inside an image snapshot's volume.
    #[serde(default)]
    pub image: Option<abri_proto::agent::ImageVolumeRef>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Job {
    pub id: String,
    pub machine: String,
    pub kind: JobKind,
    pub plan: String,
    pub full: bool,
    /// `schedule`, `console` or `agent`.
    pub trigger: String,
    pub state: JobState,
    pub created: u64,
    pub started: Option<u64>,
    pub finished: Option<u64>,
    pub progress: Progress,
    pub log: Vec<String>,
    pub snapshot: Option<String>,
    pub error: Option<String>,
    pub cancel_requested: bool,
    pub restore: Option<RestoreRequest>,
}

impl Job {
    fn new(machine: &str, kind: JobKind, plan: &str, full: bool, trigger: &str) -> Job {
        let t = now();
        Job {
            // Sortable by creation time, unique by the random tail.
            id: format!("j-{t:012}-{}", &generate_token()[..8]),
            machine: machine.to_string(),
            kind,
            plan: plan.to_string(),
            full,
            trigger: trigger.to_string(),
            state: JobState::Queued,
            created: t,
            started: None,
            finished: None,
            progress: Progress::default(),
            log: Vec::new(),
            snapshot: None,
            error: None,
            cancel_requested: false,
            restore: None,
        }
    }

    fn append_log(&mut self, lines: impl IntoIterator<Item = String>) {
        self.log.extend(lines);
        if self.log.len() > MAX_LOG_LINES {
            let excess = self.log.len() - MAX_LOG_LINES;
            self.log.drain(..excess);
        }
    }
}

/// An active job in memory.
struct Live {
    job: Job,
    /// When its record was last written.
    saved: Instant,
    /// When its agent last spoke about it (picked it up, reported progress).
    heard: Instant,
}

impl Live {
    fn new(job: Job) -> Live {
        let now = Instant::now();
        Live {
            job,
            saved: now,
            heard: now,
        }
    }
}

#[derive(Default)]
struct Inner {
    /// Active jobs by id.
    live: HashMap<String, Live>,
    queues: HashMap<String, VecDeque<Command>>,
    /// Bytes each machine's uploads added to the store since its last commit.
    stored_since_commit: HashMap<String, u64>,
    wakers: HashMap<String, Arc<Notify>>,
}

pub struct Jobs {
    db: Db,
    inner: Mutex<Inner>,
}

impl Jobs {
    /// Loads the registry; jobs a previous run left queued or running are failed.
    pub fn open(db: Db) -> AppResult<Jobs> {
        let stale: Vec<Job> = db
            .list::<Job>(Table::Jobs)?
            .into_iter()
            .map(|(_, j)| j)
            .filter(|j| j.state.is_active())
            .collect();
        for mut job in stale {
            job.state = JobState::Failed;
            job.finished = Some(now());
            job.error = Some("the box restarted during the job".into());
            db.put(Table::Jobs, &job.id.clone(), &job)?;
        }
        Ok(Jobs {
            db,
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn waker(inner: &mut Inner, machine: &str) -> Arc<Notify> {
        inner.wakers.entry(machine.to_string()).or_default().clone()
    }

    fn save(&self, job: &Job) -> AppResult<()> {
        self.db.put(Table::Jobs, &job.id, job)?;
        Ok(())
    }

    /// The active job of this kind and plan on this machine, if any.
    pub fn active_for(&self, machine: &str, plan: &str) -> Option<Job> {
        self.lock()
            .live
            .values()
            .map(|l| &l.job)
            .find(|j| j.machine == machine && j.plan == plan && j.state.is_active())
            .cloned()
    }

    /// Queues a backup for the agent to pick up; refuses a second one for the same plan.
    pub fn queue_backup(&self, machine: &str, spec: BackupSpec, trigger: &str) -> AppResult<Job> {
        if let Some(active) = self.active_for(machine, &spec.plan) {
            return Err(AppError::Invalid(format!(
                "plan: a {} backup is already {} on this machine ({})",
                spec.plan,
                if active.state == JobState::Queued {
                    "queued"
                } else {
                    "running"
                },
                active.id
            )));
        }
        let job = Job::new(machine, JobKind::Backup, &spec.plan, spec.full, trigger);
        let command = Command::Backup {
            job_id: job.id.clone(),
            spec,
        };
        self.enqueue(job, command)
    }

    /// Records a queued job and hands its command to the machine's next poll.
    fn enqueue(&self, job: Job, command: Command) -> AppResult<Job> {
        self.save(&job)?;
        let mut inner = self.lock();
        inner
            .queues
            .entry(job.machine.clone())
            .or_default()
            .push_back(command);
        inner.live.insert(job.id.clone(), Live::new(job.clone()));
        Self::waker(&mut inner, &job.machine).notify_one();
        Ok(job)
    }

    /// Queues a restore to be carried out by the machine's agent.
    pub fn queue_restore(&self, machine: &str, request: RestoreRequest) -> AppResult<Job> {
        let mut job = Job::new(machine, JobKind::Restore, "", false, "console");
        job.restore = Some(request.clone());
        let command = Command::Restore {
            job_id: job.id.clone(),
            snapshot: request.snapshot,
            paths: request.paths,
            target: request.target,
            image: request.image,
        };
        self.enqueue(job, command)
    }

    /// A backup the agent starts by itself (`abri-agent backup --now`): running at once.
    /// The agent runs one job at a time (it holds a lock on the machine), so a job of the
    /// same plan still marked running has died with its agent: it is failed, and a queued
    /// one is superseded.
    pub fn start_agent_backup(&self, machine: &str, spec: &BackupSpec) -> AppResult<Job> {
        if let Some(active) = self.active_for(machine, &spec.plan) {
            if active.state == JobState::Running {
                self.finish(
                    machine,
                    &active.id,
                    JobState::Failed,
                    Some("the agent stopped during this job and started a new one".into()),
                    None,
                )?;
            } else {
                self.cancel(machine, &active.id)?;
            }
        }
        let mut job = Job::new(machine, JobKind::Backup, &spec.plan, spec.full, "agent");
        job.state = JobState::Running;
        job.started = Some(now());
        self.save(&job)?;
        self.lock()
            .live
            .insert(job.id.clone(), Live::new(job.clone()));
        Ok(job)
    }

    /// The next command for a machine, waiting up to `wait` for one. Handing out a backup or
    /// restore marks its job running.
    pub async fn next_command(&self, machine: &str, wait: Duration) -> AppResult<Option<Command>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let waker = {
                let mut inner = self.lock();
                if let Some(command) = inner.queues.get_mut(machine).and_then(VecDeque::pop_front) {
                    let job_id = match &command {
                        Command::Backup { job_id, .. } | Command::Restore { job_id, .. } => {
                            Some(job_id.clone())
                        }
                        Command::Cancel { .. } => None,
                    };
                    let mut started = None;
                    if let Some(live) = job_id.and_then(|id| inner.live.get_mut(&id)) {
                        live.job.state = JobState::Running;
                        live.job.started = Some(now());
                        live.heard = Instant::now();
                        started = Some(live.job.clone());
                    }
                    drop(inner);
                    if let Some(job) = started {
                        self.save(&job)?;
                    }
                    return Ok(Some(command));
                }
                Self::waker(&mut inner, machine)
            };
            if tokio::time::timeout_at(deadline, waker.notified())
                .await
                .is_err()
            {
                return Ok(None);
            }
        }
    }

    fn owned_live(&self, machine: &str, job_id: &str) -> AppResult<Job> {
        match self.lock().live.get(job_id) {
            Some(live) if live.job.machine == machine => Ok(live.job.clone()),
            _ => Err(AppError::NotFound(format!("active job {job_id}"))),
        }
    }

    /// Records progress; answers whether the job should stop.
    pub fn report(&self, machine: &str, job_id: &str, mut progress: Progress) -> AppResult<bool> {
        self.owned_live(machine, job_id)?;
        let lines = std::mem::take(&mut progress.log);
        let to_save = {
            let mut inner = self.lock();
            let Some(live) = inner.live.get_mut(job_id) else {
                return Err(AppError::NotFound(format!("active job {job_id}")));
            };
            live.job.progress = progress;
            live.job.append_log(lines);
            live.heard = Instant::now();
            if live.saved.elapsed() >= PERSIST_EVERY {
                live.saved = Instant::now();
                Some(live.job.clone())
            } else {
                None
            }
        };
        let cancel = self.owned_live(machine, job_id)?.cancel_requested;
        if let Some(job) = to_save {
            self.save(&job)?;
        }
        Ok(cancel)
    }

    /// Ends a job; `snapshot` is set for a committed backup.
    pub fn finish(
        &self,
        machine: &str,
        job_id: &str,
        state: JobState,
        error: Option<String>,
        snapshot: Option<String>,
    ) -> AppResult<Job> {
        let live = self.lock().live.remove(job_id);
        let mut job = match live {
            Some(live) if live.job.machine == machine => live.job,
            Some(other) => {
                self.lock().live.insert(job_id.to_string(), other);
                return Err(AppError::NotFound(format!("job {job_id}")));
            }
            // A job failed by a box restart may still be completed by its agent.
            None => self
                .db
                .get::<Job>(Table::Jobs, job_id)?
                .filter(|j| j.machine == machine)
                .ok_or_else(|| AppError::NotFound(format!("job {job_id}")))?,
        };
        job.state = state;
        job.finished = Some(now());
        job.error = error;
        if snapshot.is_some() {
            job.snapshot = snapshot;
        }
        self.save(&job)?;
        Ok(job)
    }

    /// Asks for a job to stop: a queued job is dropped at once, a running one is told.
    pub fn cancel(&self, machine: &str, job_id: &str) -> AppResult<()> {
        let job = self.owned_live(machine, job_id)?;
        if job.state == JobState::Queued {
            let mut inner = self.lock();
            if let Some(queue) = inner.queues.get_mut(machine) {
                queue.retain(|c| !matches!(c, Command::Backup { job_id: id, .. } | Command::Restore { job_id: id, .. } if id == job_id));
            }
            drop(inner);
            self.finish(
                machine,
                job_id,
                JobState::Cancelled,
                Some("cancelled before it started".into()),
                None,
            )?;
            return Ok(());
        }
        let mut inner = self.lock();
        if let Some(live) = inner.live.get_mut(job_id) {
            live.job.cancel_requested = true;
        }
        inner
            .queues
            .entry(machine.to_string())
            .or_default()
            .push_back(Command::Cancel {
                job_id: job_id.to_string(),
            });
        Self::waker(&mut inner, machine).notify_one();
        Ok(())
    }

    /// A job, live or past.
    pub fn get(&self, job_id: &str) -> AppResult<Job> {
        if let Some(live) = self.lock().live.get(job_id) {
            return Ok(live.job.clone());
        }
        self.db
            .get(Table::Jobs, job_id)?
            .ok_or_else(|| AppError::NotFound(format!("job {job_id}")))
    }

    /// Active jobs, oldest first.
    pub fn active(&self) -> Vec<Job> {
        let mut jobs: Vec<Job> = self.lock().live.values().map(|l| l.job.clone()).collect();
        jobs.sort_by(|a, b| a.id.cmp(&b.id));
        jobs
    }

    /// Every job, newest first (live progress for active ones). One read of the table:
    /// callers that need several machines' histories group this instead of asking per machine.
    pub fn all(&self) -> AppResult<Vec<Job>> {
        let mut jobs: Vec<Job> = self
            .db
            .list::<Job>(Table::Jobs)?
            .into_iter()
            .rev()
            .map(|(_, j)| j)
            .collect();
        let inner = self.lock();
        for job in &mut jobs {
            if let Some(live) = inner.live.get(&job.id) {
                *job = live.job.clone();
            }
        }
        Ok(jobs)
    }

    /// A machine's jobs, newest first (live progress for active ones).
    pub fn history(&self, machine: &str, limit: usize) -> AppResult<Vec<Job>> {
        Ok(self
            .all()?
            .into_iter()
            .filter(|j| j.machine == machine)
            .take(limit)
            .collect())
    }

    /// Counts bytes a machine's upload added to the store.
    pub fn add_stored(&self, machine: &str, bytes: u64) {
        *self
            .lock()
            .stored_since_commit
            .entry(machine.to_string())
            .or_default() += bytes;
    }

    /// The bytes a machine added to the store since its last commit, reset to zero: they
    /// belong to the snapshot being committed.
    pub fn take_stored(&self, machine: &str) -> u64 {
        self.lock().stored_since_commit.remove(machine).unwrap_or(0)
    }

    /// Fails running jobs whose agent has been silent for longer than `limit` (killed,
    /// switched off, cut from the network). Returns the failed jobs.
    pub fn fail_silent(&self, limit: Duration) -> AppResult<Vec<Job>> {
        let silent: Vec<(String, String)> = self
            .lock()
            .live
            .values()
            .filter(|l| l.job.state == JobState::Running && l.heard.elapsed() > limit)
            .map(|l| (l.job.machine.clone(), l.job.id.clone()))
            .collect();
        let mut failed = Vec::new();
        for (machine, id) in silent {
            let message = format!(
                "the agent stopped reporting for more than {} s",
                limit.as_secs()
            );
            failed.push(self.finish(&machine, &id, JobState::Failed, Some(message), None)?);
        }
        Ok(failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(plan: &str) -> BackupSpec {
        BackupSpec {
            plan: plan.into(),
            selections: vec!["/".into()],
            excludes: vec![],
            full: false,
            kind: Default::default(),
        }
    }

    fn jobs() -> (tempfile::TempDir, Jobs) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        (dir, Jobs::open(db).unwrap())
    }

    #[tokio::test]
    async fn queued_backup_reaches_its_machine_only_and_runs() {
        let (_d, jobs) = jobs();
        let job = jobs.queue_backup("m-a", spec("files"), "console").unwrap();
        assert!(
            jobs.queue_backup("m-a", spec("files"), "console").is_err(),
            "one per plan"
        );
        assert_eq!(
            jobs.next_command("m-b", Duration::from_millis(10))
                .await
                .unwrap(),
            None
        );
        let cmd = jobs
            .next_command("m-a", Duration::from_millis(10))
            .await
            .unwrap();
        assert!(matches!(cmd, Some(Command::Backup { ref job_id, .. }) if *job_id == job.id));
        assert_eq!(jobs.get(&job.id).unwrap().state, JobState::Running);
        assert!(
            jobs.report("m-b", &job.id, Progress::default()).is_err(),
            "not its job"
        );
        let progress = Progress {
            files_scanned: 3,
            log: vec!["line".into()],
            ..Progress::default()
        };
        assert!(!jobs.report("m-a", &job.id, progress).unwrap());
        let done = jobs
            .finish("m-a", &job.id, JobState::Succeeded, None, Some("s1".into()))
            .unwrap();
        assert_eq!(done.log, vec!["line".to_string()]);
        assert_eq!(
            jobs.history("m-a", 10).unwrap()[0].snapshot.as_deref(),
            Some("s1")
        );
    }

    #[tokio::test]
    async fn a_waiting_poll_wakes_when_a_command_is_queued() {
        let (_d, jobs) = jobs();
        let jobs = Arc::new(jobs);
        let poller = {
            let jobs = jobs.clone();
            tokio::spawn(async move { jobs.next_command("m-a", Duration::from_secs(5)).await })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        jobs.queue_backup("m-a", spec("files"), "schedule").unwrap();
        let got = tokio::time::timeout(Duration::from_secs(2), poller)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(matches!(got, Some(Command::Backup { .. })));
    }

    #[tokio::test]
    async fn cancel_drops_queued_and_tells_running() {
        let (_d, jobs) = jobs();
        let queued = jobs.queue_backup("m-a", spec("files"), "console").unwrap();
        jobs.cancel("m-a", &queued.id).unwrap();
        assert_eq!(jobs.get(&queued.id).unwrap().state, JobState::Cancelled);
        assert_eq!(
            jobs.next_command("m-a", Duration::from_millis(10))
                .await
                .unwrap(),
            None
        );

        let running = jobs.start_agent_backup("m-a", &spec("files")).unwrap();
        jobs.cancel("m-a", &running.id).unwrap();
        assert!(
            jobs.report("m-a", &running.id, Progress::default())
                .unwrap(),
            "told to stop"
        );
        let cmd = jobs
            .next_command("m-a", Duration::from_millis(10))
            .await
            .unwrap();
        assert!(matches!(cmd, Some(Command::Cancel { .. })));
    }

    #[test]
    fn a_dead_agents_job_is_failed_by_its_next_start_or_by_silence() {
        let (_d, jobs) = jobs();
        let first = jobs.start_agent_backup("m-a", &spec("files")).unwrap();
        let second = jobs.start_agent_backup("m-a", &spec("files")).unwrap();
        let old = jobs.get(&first.id).unwrap();
        assert_eq!(old.state, JobState::Failed);
        assert!(old.error.unwrap().contains("stopped"));
        assert_eq!(jobs.get(&second.id).unwrap().state, JobState::Running);
        assert!(
            jobs.fail_silent(Duration::from_secs(60))
                .unwrap()
                .is_empty(),
            "it just spoke"
        );
        let failed = jobs.fail_silent(Duration::ZERO).unwrap();
        assert_eq!(failed.len(), 1);
        assert_eq!(jobs.get(&second.id).unwrap().state, JobState::Failed);
        assert!(
            jobs.queue_backup("m-a", spec("files"), "schedule").is_ok(),
            "the plan is free again"
        );
    }

    #[test]
    fn a_restart_fails_jobs_left_active() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let id = {
            let jobs = Jobs::open(db.clone()).unwrap();
            jobs.start_agent_backup("m-a", &spec("files")).unwrap().id
        };
        let jobs = Jobs::open(db).unwrap();
        let job = jobs.get(&id).unwrap();
        assert_eq!(job.state, JobState::Failed);
        assert!(job.error.unwrap().contains("restarted"));
        // ...but its agent may still complete it.
        let done = jobs
            .finish("m-a", &id, JobState::Succeeded, None, Some("s".into()))
            .unwrap();
        assert_eq!(done.state, JobState::Succeeded);
    }
}
