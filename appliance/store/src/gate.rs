//! Keeps snapshot commits and GC runs of one store apart.
//!
//! A commit must not reference a chunk that a GC running at the same moment sweeps. Two
//! ways keep that true:
//! - *Quiet commit*: no GC runs, and none starts before the commit ends (a GC waits for
//!   the quiet commits under way). Its manifest is then visible before any later GC's mark
//!   lists the snapshots, so the commit only checks that its chunks exist.
//! - *Touching commit*: a GC is running. The commit sets the mtime of every chunk it
//!   references to now, so the sweep (whose cutoff lies before that) keeps them; a chunk
//!   already swept makes the commit fail with `MissingChunk`.
//!
//! A quiet commit saves one metadata write per referenced chunk: a commit of a 1 GiB image
//! references ~16,000 chunks.

use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Debug, Default)]
pub(crate) struct GcGate {
    state: Mutex<GateState>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct GateState {
    gc_running: bool,
    quiet_commits: usize,
}

/// Held for the length of a commit.
pub(crate) struct CommitPass<'a> {
    gate: &'a GcGate,
    quiet: bool,
}

impl CommitPass<'_> {
    /// True when no GC can run until this pass is dropped: the commit need not touch.
    pub(crate) fn quiet(&self) -> bool {
        self.quiet
    }
}

impl Drop for CommitPass<'_> {
    fn drop(&mut self) {
        if self.quiet {
            let mut s = self.gate.lock();
            s.quiet_commits -= 1;
            drop(s);
            self.gate.changed.notify_all();
        }
    }
}

/// Held for the length of a GC run.
pub(crate) struct GcPass<'a> {
    gate: &'a GcGate,
}

impl Drop for GcPass<'_> {
    fn drop(&mut self) {
        self.gate.lock().gc_running = false;
        self.gate.changed.notify_all();
    }
}

impl GcGate {
    fn lock(&self) -> MutexGuard<'_, GateState> {
        // The state (a flag and a counter) is changed in single steps that cannot panic:
        // a poisoned lock still holds a valid state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A commit starts: quiet when no GC is running.
    pub(crate) fn commit(&self) -> CommitPass<'_> {
        let mut s = self.lock();
        let quiet = !s.gc_running;
        if quiet {
            s.quiet_commits += 1;
        }
        CommitPass { gate: self, quiet }
    }

    /// A GC starts: waits for another GC and for the quiet commits under way to end;
    /// commits that start meanwhile touch their chunks.
    pub(crate) fn gc(&self) -> GcPass<'_> {
        let mut s = self.lock();
        while s.gc_running {
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        s.gc_running = true;
        while s.quiet_commits > 0 {
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
        GcPass { gate: self }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    #[test]
    fn commits_are_quiet_only_without_gc() {
        let gate = GcGate::default();
        assert!(gate.commit().quiet());
        let gc = gate.gc();
        assert!(!gate.commit().quiet(), "a commit during GC must touch");
        drop(gc);
        assert!(gate.commit().quiet());
    }

    #[test]
    fn gc_waits_for_quiet_commits() {
        let gate = Arc::new(GcGate::default());
        let started = Arc::new(AtomicBool::new(false));
        let pass = gate.commit();
        assert!(pass.quiet());
        let t = {
            let (gate, started) = (gate.clone(), started.clone());
            std::thread::spawn(move || {
                let _gc = gate.gc();
                started.store(true, Ordering::SeqCst);
            })
        };
        // Once the GC waits, commits that start touch their chunks (bounded wait).
        let mut touching = false;
        for _ in 0..400 {
            if !gate.commit().quiet() {
                touching = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(touching, "a commit started while GC waited was quiet");
        // Until the quiet commit ends, the GC must not start.
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(5));
            assert!(
                !started.load(Ordering::SeqCst),
                "GC started during a quiet commit"
            );
        }
        drop(pass);
        t.join().unwrap();
        assert!(started.load(Ordering::SeqCst));
        assert!(gate.commit().quiet());
    }
}
