//! Fetching chunks ahead of a restore.
//!
//! A restore asks for chunks one after another; over the network each request would wait for
//! the previous one. Given the order in which chunks will be asked for (the data chunks of
//! the selected files, in catalog order), worker threads fetch up to `window` chunks ahead of
//! the restore, in parallel; the restore then finds most chunks already there. Chunks asked
//! for out of plan (catalog chunks, hard-link targets) are fetched directly. Memory stays
//! bounded by the window (at most `window` chunks of up to 16 MiB, 2 MiB on average), plus
//! the restorer's kept ranges (`restore_chunks::KEEP_BUDGET`).
//!
//! The plan comes from `restore_chunks::RestorePlan`, which replays where the restore takes
//! each extent from: a chunk still cached, or whose needed bytes were kept, is not planned
//! again.

use abri_store::{ChunkSource, Digest, PlacedChunk, StoreError};

use crate::restore_chunks::Fetch;
use std::collections::HashMap;
use std::sync::{Condvar, Mutex};

/// Workers fetching ahead of the restore. A fetch is mostly waiting for the box to read
/// the chunk from its disk (7–10 ms each on the bench machine), so there are more workers
/// than CPUs; beyond four, fetches only waited longer.
pub const WORKERS: usize = 4;
/// Chunks fetched ahead of the one the restore is writing. (A Unix file restore fetches
/// the chunks of its bulk lane with a second prefetcher: `restore_bulk`.)
pub const WINDOW: usize = 6;
/// How far past the window a request is looked for in the plan. The restore skips planned
/// chunks now and then (a hard link made instead of a file written, a file already there):
/// a request found this far ahead means the skipped ones will never be asked for, and the
/// prefetch moves on to it instead of leaving the restore to fetch everything itself.
const RESYNC: usize = 4096;

struct State {
    /// Where the next unfetched planned chunk is.
    next_fetch: usize,
    /// Every planned chunk before this index has been handed out (or skipped).
    consumed: usize,
    ready: HashMap<usize, Result<PlacedChunk, StoreError>>,
    stop: bool,
}

/// A chunk source that serves planned chunks from what its workers fetched ahead.
pub struct Prefetched<'a, S> {
    inner: &'a S,
    plan: Vec<Fetch>,
    window: usize,
    state: Mutex<State>,
    changed: Condvar,
}

impl<'a, S: ChunkSource + Sync> Prefetched<'a, S> {
    fn new(inner: &'a S, plan: Vec<Fetch>, window: usize) -> Self {
        Prefetched {
            inner,
            plan,
            window: window.max(1),
            state: Mutex::new(State {
                next_fetch: 0,
                consumed: 0,
                ready: HashMap::new(),
                stop: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A worker: fetch the next planned chunk while the window allows, until stopped.
    fn work(&self) {
        loop {
            let index = {
                let mut st = self.lock();
                loop {
                    if st.stop || st.next_fetch >= self.plan.len() {
                        return;
                    }
                    if st.next_fetch < st.consumed + self.window {
                        break;
                    }
                    st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
                }
                let i = st.next_fetch.max(st.consumed);
                st.next_fetch = i + 1;
                i
            };
            let Fetch { digest, lead } = self.plan[index];
            let fetched = self.inner.read_chunk_placed(&digest, lead);
            let mut st = self.lock();
            if index >= st.consumed {
                st.ready.insert(index, fetched);
            }
            self.changed.notify_all();
        }
    }

    fn stop(&self) {
        self.lock().stop = true;
        self.changed.notify_all();
    }
}

impl<S: ChunkSource + Sync> Prefetched<'_, S> {
    /// A planned chunk, from the workers or fetched here; `None` if `digest` is not
    /// planned near where the restore is.
    fn serve(&self, digest: &Digest) -> Option<Result<PlacedChunk, StoreError>> {
        let mut st = self.lock();
        let horizon = (st.consumed + self.window).min(self.plan.len());
        let reach = (st.consumed + self.window + RESYNC).min(self.plan.len());
        let index = (st.consumed..reach).find(|i| self.plan[*i].digest == *digest)?;
        if index >= horizon {
            // The planned chunks before it were skipped: catch up with the restore.
            st.consumed = index;
            st.ready.retain(|i, _| *i >= index);
            self.changed.notify_all();
        }
        loop {
            if let Some(result) = st.ready.remove(&index) {
                // Planned chunks the restore skipped (unselected, already there) are dropped.
                st.ready.retain(|i, _| *i > index);
                st.consumed = index + 1;
                self.changed.notify_all();
                return Some(result);
            }
            if index >= st.next_fetch {
                // Not handed to a worker yet (all busy further back): fetch it here.
                st.next_fetch = st.next_fetch.max(index + 1);
                st.consumed = index + 1;
                st.ready.retain(|i, _| *i > index);
                drop(st);
                self.changed.notify_all();
                return Some(self.inner.read_chunk_placed(digest, self.plan[index].lead));
            }
            st = self.changed.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl<S: ChunkSource + Sync> ChunkSource for Prefetched<'_, S> {
    fn read_chunk(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        match self.serve(digest) {
            Some(result) => result.map(PlacedChunk::into_vec),
            None => self.inner.read_chunk(digest),
        }
    }

    /// A planned chunk is placed as planned, whatever `lead` says.
    fn read_chunk_placed(&self, digest: &Digest, lead: usize) -> Result<PlacedChunk, StoreError> {
        match self.serve(digest) {
            Some(result) => result,
            None => self.inner.read_chunk_placed(digest, lead),
        }
    }
}

/// Runs `f` with a source that fetches `plan` ahead with `workers` threads.
pub fn with_prefetch<S, R>(
    source: &S,
    plan: Vec<Fetch>,
    workers: usize,
    window: usize,
    f: impl FnOnce(&Prefetched<'_, S>) -> R,
) -> R
where
    S: ChunkSource + Sync,
{
    let prefetched = Prefetched::new(source, plan, window);
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1) {
            scope.spawn(|| prefetched.work());
        }
        let result = f(&prefetched);
        prefetched.stop();
        result
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::atomic::{AtomicUsize, Ordering};

    /// Chunks named by their index; counts fetches.
    struct Numbers {
        fetches: AtomicUsize,
        fail: Option<u8>,
    }

    impl ChunkSource for Numbers {
        fn read_chunk(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
            self.fetches.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(2));
            if Some(digest.0[0]) == self.fail {
                return Err(StoreError::Io {
                    action: "test fetch",
                    path: "x".into(),
                    source: std::io::Error::other("boom"),
                });
            }
            Ok(vec![digest.0[0]])
        }
    }

    fn d(n: u8) -> Digest {
        Digest([n; 32])
    }

    fn planned(numbers: std::ops::Range<u8>) -> Vec<Fetch> {
        numbers
            .map(|n| Fetch {
                digest: d(n),
                lead: 0,
            })
            .collect()
    }

    #[test]
    fn serves_planned_chunks_in_order_and_others_directly() {
        let source = Numbers {
            fetches: AtomicUsize::new(0),
            fail: None,
        };
        let plan = planned(0..50);
        let got = with_prefetch(&source, plan, 4, 6, |p| {
            let mut got = Vec::new();
            for n in 0..50u8 {
                got.push(p.read_chunk(&d(n)).unwrap()[0]);
                if n == 10 {
                    assert_eq!(p.read_chunk(&d(200)).unwrap(), vec![200], "out of plan");
                }
            }
            got
        });
        assert_eq!(got, (0..50).collect::<Vec<u8>>());
        let fetches = source.fetches.load(Ordering::SeqCst);
        assert!(
            fetches <= 51 + 4,
            "no chunk fetched twice beyond the workers' overlap: {fetches}"
        );
    }

    #[test]
    fn skipped_chunks_do_not_stall_the_window() {
        let source = Numbers {
            fetches: AtomicUsize::new(0),
            fail: None,
        };
        let plan = planned(0..40);
        with_prefetch(&source, plan, 3, 4, |p| {
            // The restore skips most planned chunks (say, files already present).
            for n in (0..40u8).step_by(3) {
                assert_eq!(p.read_chunk(&d(n)).unwrap(), vec![n]);
            }
        });
    }

    /// Chunks named by their index; counts the fetches made on one thread.
    struct Threads {
        reader: std::thread::ThreadId,
        by_reader: AtomicUsize,
        all: AtomicUsize,
    }

    impl ChunkSource for Threads {
        fn read_chunk(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
            self.all.fetch_add(1, Ordering::SeqCst);
            if std::thread::current().id() == self.reader {
                self.by_reader.fetch_add(1, Ordering::SeqCst);
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
            Ok(vec![digest.0[0]])
        }
    }

    #[test]
    fn a_skip_longer_than_the_window_does_not_stop_the_prefetch() {
        let source = Threads {
            reader: std::thread::current().id(),
            by_reader: AtomicUsize::new(0),
            all: AtomicUsize::new(0),
        };
        let plan = planned(0..80);
        with_prefetch(&source, plan, 3, 4, |p| {
            for n in (0..5u8).chain(30..80) {
                assert_eq!(p.read_chunk(&d(n)).unwrap(), vec![n]);
            }
        });
        // The reader fetches at most the chunks it asks for before the workers catch up
        // (a few around the skip), not the 50 after it.
        let by_reader = source.by_reader.load(Ordering::SeqCst);
        assert!(
            by_reader <= 4,
            "the reader fetched {by_reader} chunks itself"
        );
        assert!(source.all.load(Ordering::SeqCst) <= 80);
    }

    #[test]
    fn a_failed_fetch_reaches_the_reader() {
        let source = Numbers {
            fetches: AtomicUsize::new(0),
            fail: Some(5),
        };
        let plan = planned(0..10);
        with_prefetch(&source, plan, 2, 4, |p| {
            for n in 0..5u8 {
                p.read_chunk(&d(n)).unwrap();
            }
            assert!(p.read_chunk(&d(5)).is_err());
        });
    }
}
