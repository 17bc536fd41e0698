//! Live numbers of a running job, shared by the pipeline's threads, and the two ways they
//! leave the process: to the box every second (which may answer "cancel"), and to the
//! person at the terminal (a progress bar on a TTY, a plain line every few seconds
//! otherwise).

use abri_proto::agent::Progress;
use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::client::BoxClient;

/// Most job-log lines kept for the box between two reports (the rest are counted).
const MAX_PENDING_LOG: usize = 1000;

/// Counters updated by the pipeline, read by reporters.
#[derive(Debug, Default)]
pub struct Counters {
    /// Objects walked.
    pub files_scanned: AtomicU64,
    /// Logical bytes of the files walked (reused or read).
    pub bytes_scanned: AtomicU64,
    /// Bytes actually read from files (0 for an unchanged file in an incremental run).
    pub bytes_read: AtomicU64,
    /// Encoded bytes sent to the box.
    pub bytes_uploaded: AtomicU64,
    /// Warnings logged.
    pub warnings: AtomicU64,
    /// Set by the box (through a progress answer), a Cancel command, or a signal.
    pub cancel: AtomicBool,
    current: Mutex<String>,
    log: Mutex<Vec<String>>,
    dropped_log: AtomicU64,
}

impl Counters {
    pub fn set_current(&self, path: &str) {
        if let Ok(mut c) = self.current.lock() {
            c.clear();
            c.push_str(path);
        }
    }

    pub fn current(&self) -> String {
        self.current.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Adds a line to the job log (sent to the box with the next report) and the local log.
    pub fn warn(&self, line: String) {
        tracing::warn!("{line}");
        self.warnings.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut log) = self.log.lock() {
            if log.len() < MAX_PENDING_LOG {
                log.push(line);
            } else {
                self.dropped_log.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub fn is_cancelled(&self) -> bool {
        self.cancel.load(Ordering::Relaxed)
    }

    /// The numbers for a report, taking the pending log lines.
    pub fn take_progress(&self) -> Progress {
        let mut log = self
            .log
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default();
        let dropped = self.dropped_log.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            log.push(format!("... and {dropped} more warnings"));
        }
        let current = self.current();
        Progress {
            files_scanned: self.files_scanned.load(Ordering::Relaxed),
            bytes_scanned: self.bytes_scanned.load(Ordering::Relaxed),
            bytes_uploaded: self.bytes_uploaded.load(Ordering::Relaxed),
            current: (!current.is_empty()).then_some(current),
            log,
        }
    }
}

/// Sends progress to the box every second until `done` is notified, then once more at
/// once (not at the next tick: a job's end must not wait for it); sets `cancel` when the box
/// asks for it. Report failures are logged and retried at the next tick: a box restart
/// must not stop a backup here (the commit will tell).
pub async fn report_to_box(
    client: BoxClient,
    job_id: String,
    counters: std::sync::Arc<Counters>,
    done: std::sync::Arc<tokio::sync::Notify>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let finished = tokio::select! {
            _ = tick.tick() => false,
            _ = done.notified() => true,
        };
        let progress = counters.take_progress();
        match client.progress(&job_id, &progress).await {
            Ok(ack) if ack.cancel => {
                counters.cancel.store(true, Ordering::Relaxed);
            }
            Ok(_) => {}
            Err(e) => tracing::debug!("progress report failed: {e}"),
        }
        if finished {
            return;
        }
    }
}

/// Human-readable bytes.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

/// Shows progress on the terminal until dropped: an indicatif spinner on a TTY, a plain
/// line on stderr every 5 seconds otherwise; nothing when `quiet` (e.g. `--json`).
pub struct Display {
    done: std::sync::Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Display {
    pub fn start(counters: std::sync::Arc<Counters>, verb: &'static str, quiet: bool) -> Self {
        let done = std::sync::Arc::new(AtomicBool::new(false));
        if quiet {
            return Display { done, thread: None };
        }
        let flag = done.clone();
        let tty = std::io::stderr().is_terminal();
        let thread = std::thread::spawn(move || {
            let start = Instant::now();
            let line = |c: &Counters| {
                let secs = start.elapsed().as_secs_f64().max(0.001);
                let scanned = c.bytes_scanned.load(Ordering::Relaxed);
                format!(
                    "{verb}: {} files, {} scanned, {} sent, {}/s",
                    c.files_scanned.load(Ordering::Relaxed),
                    human_bytes(scanned),
                    human_bytes(c.bytes_uploaded.load(Ordering::Relaxed)),
                    human_bytes((scanned as f64 / secs) as u64),
                )
            };
            if tty {
                let bar = indicatif::ProgressBar::new_spinner();
                bar.enable_steady_tick(Duration::from_millis(200));
                while !flag.load(Ordering::Relaxed) {
                    let cur = counters.current();
                    bar.set_message(format!("{}  {}", line(&counters), shorten(&cur, 50)));
                    std::thread::sleep(Duration::from_millis(250));
                }
                bar.finish_and_clear();
            } else {
                let mut last = Instant::now();
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(200));
                    if last.elapsed() >= Duration::from_secs(5) {
                        eprintln!("{}", line(&counters));
                        last = Instant::now();
                    }
                }
            }
        });
        Display {
            done,
            thread: Some(thread),
        }
    }
}

impl Drop for Display {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn shorten(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        s.to_string()
    } else {
        let tail: String = s.chars().skip(n - (max - 1)).collect();
        format!("…{tail}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_log_once_and_caps_it() {
        let c = Counters::default();
        for i in 0..(MAX_PENDING_LOG + 5) {
            c.warn(format!("w{i}"));
        }
        c.set_current("srv/x");
        let p = c.take_progress();
        assert_eq!(p.log.len(), MAX_PENDING_LOG + 1);
        assert!(p.log.last().unwrap().contains("5 more"));
        assert_eq!(p.current.as_deref(), Some("srv/x"));
        assert!(c.take_progress().log.is_empty());
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(shorten("abcdef", 4), "…def");
    }
}
