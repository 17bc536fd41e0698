//! Local state in the state directory: a lock so two jobs never run at once on this
//! machine (the service and a `backup --now`), and the last job's outcome for `status`.

use serde::{Deserialize, Serialize};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot use the state directory {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another backup or restore is running on this machine (lock {} is held); wait for it \
         to end",
        path.display()
    )]
    Busy { path: PathBuf },
}

/// Held while a job runs; released when dropped (or when the process dies).
pub struct JobLock {
    #[cfg(unix)]
    _lock: nix::fcntl::Flock<File>,
    /// Opened without sharing: a second open fails while this handle lives.
    #[cfg(windows)]
    _lock: File,
}

impl JobLock {
    /// Takes the lock without waiting.
    pub fn acquire(state_dir: &Path) -> Result<Self, StateError> {
        let path = state_dir.join("job.lock");
        let io = |source| StateError::Io {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(state_dir).map_err(io)?;
        let mut opts = OpenOptions::new();
        opts.create(true).truncate(false).write(true);
        #[cfg(windows)]
        {
            use std::os::windows::fs::OpenOptionsExt;
            /// ERROR_SHARING_VIOLATION: another process holds the lock file open.
            const SHARING_VIOLATION: i32 = 32;
            opts.share_mode(0);
            match opts.open(&path) {
                Ok(file) => Ok(JobLock { _lock: file }),
                Err(e) if e.raw_os_error() == Some(SHARING_VIOLATION) => {
                    Err(StateError::Busy { path })
                }
                Err(e) => Err(io(e)),
            }
        }
        #[cfg(unix)]
        {
            let file = opts.open(&path).map_err(io)?;
            match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
                Ok(lock) => Ok(JobLock { _lock: lock }),
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(StateError::Busy { path }),
                Err((_, e)) => Err(io(std::io::Error::from(e))),
            }
        }
    }
}

/// The outcome of the last job, as `status` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LastJob {
    pub job_id: String,
    /// `backup` or `restore`.
    pub kind: String,
    /// `succeeded`, `failed` or `cancelled`.
    pub status: String,
    pub finished: u64,
    pub snapshot: Option<String>,
    pub error: Option<String>,
}

const LAST_JOB: &str = "last-job.json";

/// Records the last job (best effort: the box has the authoritative record).
pub fn save_last_job(state_dir: &Path, job: &LastJob) {
    let write = || -> std::io::Result<()> {
        fs::create_dir_all(state_dir)?;
        let tmp = state_dir.join(format!(".{LAST_JOB}.tmp"));
        let mut f = File::create(&tmp)?;
        f.write_all(&serde_json::to_vec_pretty(job).map_err(std::io::Error::other)?)?;
        f.sync_all()?;
        fs::rename(&tmp, state_dir.join(LAST_JOB))
    };
    if let Err(e) = write() {
        tracing::warn!("cannot record the last job in {}: {e}", state_dir.display());
    }
}

/// The last job recorded, if any.
pub fn load_last_job(state_dir: &Path) -> Option<LastJob> {
    let bytes = fs::read(state_dir.join(LAST_JOB)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_is_exclusive_and_last_job_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let held = JobLock::acquire(dir.path()).unwrap();
        assert!(matches!(
            JobLock::acquire(dir.path()),
            Err(StateError::Busy { .. })
        ));
        drop(held);
        JobLock::acquire(dir.path()).unwrap();
        assert_eq!(load_last_job(dir.path()), None);
        let job = LastJob {
            job_id: "j-1".into(),
            kind: "backup".into(),
            status: "succeeded".into(),
            finished: 5,
            snapshot: Some("s-1".into()),
            error: None,
        };
        save_last_job(dir.path(), &job);
        assert_eq!(load_last_job(dir.path()), Some(job));
    }
}
