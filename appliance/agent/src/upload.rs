//! From finished chunks to chunks on the box: ask which are missing, compress only those,
//! upload them with several requests in flight.
//!
//! ```text
//! reader ──(q)──▶ query ──(workers)──▶ compress ×N ──(u)──▶ upload ×U ──▶ box
//! ```
//!
//! Every channel is bounded (file mode: q = 2, u = U / 2; image mode, whose chunks are
//! 64 KiB: 128 each), so memory is a few dozen chunks whatever the data size. The
//! query stage batches digests (up to [`QUERY_BATCH`] chunks, fewer when the reader is
//! slower than the network) and remembers every digest it has settled in this run, so a
//! chunk seen twice is asked about and sent once. Chunks the box already has are never
//! compressed. Each uploader thread blocks on one request at a time and sends what queued up
//! meanwhile as one batch; with HTTP they share one HTTP/2 connection, so U threads are U
//! requests in flight.
//!
//! Stages never fail silently: the first error is kept in [`Abort`] and every stage then
//! drains its input without working, so the pipeline winds down without deadlock.

use abri_proto::agent::{CommitSnapshot, SnapshotSummary};
use abri_proto::batch::{self, MAX_BATCH_CHUNKS};
use abri_store::{Digest, EncodedChunk, PackedChunk};
use crossbeam_channel::{Receiver, Sender};
use std::collections::HashSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::progress::Counters;

/// Most chunks per missing-query (it takes what is waiting, never waits for more).
pub const QUERY_BATCH: usize = 256;
/// zstd level of file chunks and catalogs. On 1 MiB blocks of shared libraries level 2
/// compresses 1.36x faster than level 3 for 4 % more bytes (level 1: 1.77x faster, 10 %
/// more). Compression is nearly half the CPU of a first file backup; level 2 keeps the
/// 3 GB bench's repository under restic's (1,025 vs 1,056 MiB), level 1 did not (1.4 %
/// over it): the box's disk is the scarcer resource (`make bench`, BENCHMARKS.md).
pub const ZSTD_LEVEL: i32 = 2;
/// zstd level of image chunks (fixed 64 KiB). Level 1 made the image bench's first backup
/// ~20 % faster than level 3 (client CPU 5.6 s instead of 7.0 s per GiB) for 3 % more
/// stored bytes, still far below restic's repository (`make bench`, BENCHMARKS.md). The
/// catalog chunks of an image snapshot stay at [`ZSTD_LEVEL`].
pub const IMAGE_ZSTD_LEVEL: i32 = 1;

/// Why a destination call failed.
#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    #[error(transparent)]
    Client(#[from] crate::client::ClientError),
    #[error(transparent)]
    Store(#[from] abri_store::StoreError),
    #[error("{0}")]
    Other(String),
}

/// Where a backup's chunks and snapshot go: the box over HTTP, or a local store in tests.
/// Calls block; the pipeline makes several at once from different threads.
pub trait Destination: Send + Sync {
    /// The subset of `digests` the destination lacks.
    fn missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, DestinationError>;
    /// Stores a batch of `count` encoded chunks ([`abri_proto::batch`] frames; idempotent):
    /// all of them, or none if one is refused.
    fn put_batch(&self, frames: Vec<u8>, count: usize) -> Result<(), DestinationError>;
    /// Commits the snapshot whose chunks are all stored.
    fn commit(&self, commit: &CommitSnapshot) -> Result<SnapshotSummary, DestinationError>;
}

/// A chunk on its way out.
#[derive(Debug)]
pub enum Outgoing {
    /// Raw data from the packer: compressed only if the box lacks it.
    Raw(PackedChunk),
    /// Already encoded (catalog chunks).
    Encoded(EncodedChunk),
}

impl Outgoing {
    fn digest(&self) -> Digest {
        match self {
            Outgoing::Raw(c) => c.digest,
            Outgoing::Encoded(c) => c.digest,
        }
    }
}

/// The first error of any stage, and the flag every stage watches.
#[derive(Debug, Default)]
pub struct Abort {
    flag: AtomicBool,
    error: Mutex<Option<String>>,
}

impl Abort {
    /// Records `error` unless an earlier one is there, and stops the pipeline.
    pub fn fail(&self, error: String) {
        if let Ok(mut e) = self.error.lock()
            && e.is_none()
        {
            *e = Some(error);
        }
        self.flag.store(true, Ordering::SeqCst);
    }

    pub fn is_set(&self) -> bool {
        self.flag.load(Ordering::SeqCst)
    }

    pub fn error(&self) -> Option<String> {
        self.error.lock().ok().and_then(|e| e.clone())
    }
}

/// Counts of what the stages did.
#[derive(Debug, Default)]
pub struct UploadStats {
    /// Distinct chunks seen.
    pub chunks: AtomicU64,
    /// Chunks uploaded.
    pub new_chunks: AtomicU64,
    /// Raw bytes of the chunks uploaded.
    pub new_bytes: AtomicU64,
}

/// Shared state of the stages.
pub struct Stages<'a, D: Destination + ?Sized> {
    pub dest: &'a D,
    pub abort: &'a Abort,
    pub counters: &'a Counters,
    pub stats: &'a UploadStats,
    /// zstd level of the raw chunks this pipeline compresses.
    pub level: i32,
}

/// A compressed chunk ready to send, already framed for a batch.
pub struct Ready {
    digest: Digest,
    raw_len: u64,
    frame: Vec<u8>,
}

/// An upload batch gathers chunks until it holds this much: batching pays for small chunks
/// (64 KiB image chunks, small catalog chunks), while a file chunk (512 KiB–8 MiB) mostly
/// goes alone, as its own body with no copy.
const UPLOAD_BATCH_BYTES: usize = 1 << 20;

impl<D: Destination + ?Sized> Stages<'_, D> {
    /// Batches digests, asks the destination which it lacks, forwards those once.
    pub fn query(&self, input: Receiver<Outgoing>, output: Sender<Outgoing>) {
        let mut settled: HashSet<Digest> = HashSet::new();
        while let Ok(first) = input.recv() {
            let mut batch = vec![first];
            while batch.len() < QUERY_BATCH {
                match input.try_recv() {
                    Ok(c) => batch.push(c),
                    Err(_) => break,
                }
            }
            if self.abort.is_set() {
                continue;
            }
            let mut ask: Vec<Digest> = Vec::new();
            batch.retain(|c| {
                let d = c.digest();
                if settled.insert(d) {
                    ask.push(d);
                    true
                } else {
                    false
                }
            });
            self.stats
                .chunks
                .fetch_add(ask.len() as u64, Ordering::Relaxed);
            if ask.is_empty() {
                continue;
            }
            let missing: HashSet<Digest> = match self.dest.missing(&ask) {
                Ok(m) => m.into_iter().collect(),
                Err(e) => {
                    self.abort
                        .fail(format!("cannot ask the box for missing chunks: {e}"));
                    continue;
                }
            };
            for c in batch {
                if missing.contains(&c.digest()) && output.send(c).is_err() {
                    return;
                }
            }
        }
    }

    /// Compresses raw chunks (at `self.level`); passes encoded ones through.
    pub fn compress(&self, input: Receiver<Outgoing>, output: Sender<Ready>) {
        for c in input {
            if self.abort.is_set() {
                continue;
            }
            let ready = match c {
                Outgoing::Raw(c) => {
                    let mut frame = frame_header(&c.digest);
                    abri_store::encode_chunk_into(&c.data, self.level, &mut frame);
                    Ready {
                        digest: c.digest,
                        raw_len: c.data.len() as u64,
                        frame: finish_frame(frame),
                    }
                }
                Outgoing::Encoded(c) => {
                    let mut frame = frame_header(&c.digest);
                    frame.extend_from_slice(&c.bytes);
                    Ready {
                        digest: c.digest,
                        raw_len: declared_len(&c.bytes),
                        frame: finish_frame(frame),
                    }
                }
            };
            if output.send(ready).is_err() {
                return;
            }
        }
    }

    /// Uploads chunks in batches (run several of these): a chunk goes with those that
    /// queued up while the previous request was out, up to [`UPLOAD_BATCH_BYTES`]; a chunk
    /// of that size goes alone.
    pub fn upload(&self, input: Receiver<Ready>) {
        while let Ok(first) = input.recv() {
            let mut bytes = first.frame.len();
            let mut batch = vec![first];
            while bytes < UPLOAD_BATCH_BYTES && batch.len() < MAX_BATCH_CHUNKS {
                match input.try_recv() {
                    Ok(c) => {
                        bytes += c.frame.len();
                        batch.push(c);
                    }
                    Err(_) => break,
                }
            }
            if self.abort.is_set() {
                continue;
            }
            let raw_len: u64 = batch.iter().map(|c| c.raw_len).sum();
            let count = batch.len();
            let first_digest = batch[0].digest;
            let body = if count == 1 {
                batch.pop().map(|c| c.frame).unwrap_or_default()
            } else {
                let mut body = Vec::with_capacity(bytes);
                for c in batch {
                    body.extend_from_slice(&c.frame);
                }
                body
            };
            let sent = (bytes - count * batch::FRAME_HEADER_LEN) as u64;
            match self.dest.put_batch(body, count) {
                Ok(()) => {
                    self.counters
                        .bytes_uploaded
                        .fetch_add(sent, Ordering::Relaxed);
                    self.stats
                        .new_chunks
                        .fetch_add(count as u64, Ordering::Relaxed);
                    self.stats.new_bytes.fetch_add(raw_len, Ordering::Relaxed);
                }
                Err(e) => self.abort.fail(format!(
                    "cannot upload chunk {first_digest} (with {} more): {e}",
                    count - 1
                )),
            }
        }
    }
}

/// A frame's header with the length left at 0 ([`finish_frame`] sets it).
fn frame_header(digest: &Digest) -> Vec<u8> {
    let mut frame = Vec::new();
    batch::push_frame(&mut frame, digest, &[]);
    frame
}

/// Writes the encoded chunk's length into its frame header.
fn finish_frame(mut frame: Vec<u8>) -> Vec<u8> {
    let len = (frame.len() - batch::FRAME_HEADER_LEN) as u32;
    frame[32..batch::FRAME_HEADER_LEN].copy_from_slice(&len.to_le_bytes());
    frame
}

/// The raw length in an encoded chunk's header (bytes 8..12), 0 if too short.
fn declared_len(bytes: &[u8]) -> u64 {
    bytes
        .get(8..12)
        .map(|b| u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]])))
        .unwrap_or(0)
}
