//! Where a file restore takes each extent's bytes from, and the plan that tells the
//! prefetcher which chunks that will fetch.
//!
//! Extents come from three places, looked up in this order:
//!
//! 1. the last [`CHUNK_CACHE`] chunks fetched (consecutive small files share chunks);
//! 2. byte ranges kept from a chunk fetched earlier: a file deduplicated against one far
//!    back in the tree (the same small file in two packages) names a chunk that has long left
//!    the cache, and fetching a whole chunk (1 MiB on average) again for a few KiB of it cost
//!    a tenth of a restore's fetches on the bench's copy of `/usr`. The plan finds these
//!    extents beforehand, and the bytes they need are copied out when the chunk is first
//!    fetched: at most [`KEEP_RANGE_MAX`] each, [`KEEP_BUDGET`] in all per restore, each
//!    dropped after its last use;
//! 3. the chunk source (through the prefetcher), which is then cached.
//!
//! [`RestorePlan::of`] replays exactly this policy over the files to restore, so its
//! `fetches` are the chunks the restore will ask for, in order. Correctness never depends
//! on the plan: a restore that skips files (already there) or asks out of plan still gets
//! every byte by digest. Speed does (an out-of-plan request can move the prefetch window),
//! and so does when kept ranges are freed: ranges of skipped files stay until the restore
//! ends, within the budget.
//!
//! On Unix the plan first sets apart the chunks of the bulk lane (`restore_bulk`): those
//! only one extent uses, in a file written directly. They are neither cached nor kept (no
//! other extent needs them), and the policy above runs over the other extents only.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use abri_store::{ALIGN, ChunkSource, Digest, Extent, PlacedChunk};

use crate::restore::{RestoreError, text};

/// Decoded chunks kept for consecutive small files that share a chunk.
pub(crate) const CHUNK_CACHE: usize = 4;
/// Longest byte range kept for a later file; a longer extent fetches its chunk again.
pub(crate) const KEEP_RANGE_MAX: u32 = 256 << 10;
/// Bytes kept in all, over a whole restore.
pub(crate) const KEEP_BUDGET: u64 = 16 << 20;
/// Files this large are written directly, around the page cache (Unix, `restore_writers`):
/// the plan places each chunk for the longest piece such a file takes from it.
pub(crate) const DIRECT_MIN: u64 = 256 << 10;

/// The last [`CHUNK_CACHE`] chunks a restore fetched, first in, first out.
pub(crate) struct ChunkCache<T> {
    entries: VecDeque<(Digest, T)>,
}

impl<T: Clone> ChunkCache<T> {
    pub(crate) fn new() -> Self {
        ChunkCache {
            entries: VecDeque::with_capacity(CHUNK_CACHE),
        }
    }

    pub(crate) fn get(&self, digest: &Digest) -> Option<T> {
        self.entries
            .iter()
            .find(|(d, _)| d == digest)
            .map(|(_, v)| v.clone())
    }

    pub(crate) fn insert(&mut self, digest: Digest, value: T) {
        if self.entries.len() >= CHUNK_CACHE {
            self.entries.pop_front();
        }
        self.entries.push_back((digest, value));
    }
}

/// A byte range of a chunk: (digest, offset in the chunk, length).
type Range = (Digest, u32, u32);

/// A range to copy out of a chunk when it is first fetched, and how many extents use it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeepRange {
    pub offset: u32,
    pub len: u32,
    pub uses: u32,
}

/// A chunk the restore will fetch, and where in memory to decode it: `lead` bytes past an
/// aligned address puts the bytes of one extent at their file offset's alignment (see
/// [`lead`]): the longest extent of a file written directly that takes its bytes from this
/// fetch, or else the extent that fetches it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fetch {
    pub digest: Digest,
    pub lead: usize,
}

/// Where a file's data ends: the end of its last extent (0 without one).
pub(crate) fn data_end(extents: &[Extent]) -> u64 {
    extents
        .iter()
        .map(|e| e.file_offset + u64::from(e.len))
        .max()
        .unwrap_or(0)
}

/// Where in memory to place the chunk of `ext` (see [`PlacedChunk`]): chunk byte
/// `chunk_offset` then lies at an address as aligned as file offset `file_offset`, and a
/// large file's whole blocks can be written directly from the chunk.
pub(crate) fn lead(ext: &Extent) -> usize {
    let align = ALIGN as u64;
    ((ext.file_offset % align + align - u64::from(ext.chunk_offset) % align) % align) as usize
}

/// What a file restore will fetch and keep.
#[derive(Debug, Default)]
pub struct RestorePlan {
    /// The chunks the restore asks its source for, in order.
    pub fetches: Vec<Fetch>,
    /// Per chunk, the ranges to copy out of it when it is first fetched.
    pub(crate) keep: HashMap<Digest, Vec<KeepRange>>,
    /// The bulk lane's chunks, in the order of their extents: chunks that only one extent
    /// of the restore uses, in a file written directly. They are fetched and written apart
    /// from the catalog walk (`restore_bulk`), and are not in `fetches`.
    pub bulk: Vec<Fetch>,
}

impl RestorePlan {
    /// The plan for restoring `files` (each file's extents, in catalog order); with
    /// `bulk`, the chunks of a bulk lane are set apart (see [`RestorePlan::bulk`]).
    pub(crate) fn of<'a>(files: impl IntoIterator<Item = &'a [Extent]>, bulk: bool) -> RestorePlan {
        let files: Vec<&[Extent]> = files.into_iter().collect();
        let mut uses: HashMap<Digest, u32> = HashMap::new();
        if bulk {
            for e in files.iter().copied().flatten() {
                *uses.entry(e.digest).or_default() += 1;
            }
        }
        let mut plan = RestorePlan::default();
        let mut cache = ChunkCache::new();
        let mut fetched: HashSet<Digest> = HashSet::new();
        let mut kept: HashMap<Range, usize> = HashMap::new();
        let mut kept_bytes = 0u64;
        // Per chunk, its latest fetch and the longest piece of a directly written file
        // served from it so far.
        let mut placed: HashMap<Digest, (usize, u32)> = HashMap::new();
        for extents in files {
            let direct = data_end(extents) >= DIRECT_MIN;
            for e in extents {
                if direct && uses.get(&e.digest) == Some(&1) {
                    plan.bulk.push(Fetch {
                        digest: e.digest,
                        lead: lead(e),
                    });
                    continue;
                }
                if cache.get(&e.digest).is_some() {
                    if let Some((i, longest)) = placed.get_mut(&e.digest)
                        && direct
                        && e.len > *longest
                    {
                        *longest = e.len;
                        plan.fetches[*i].lead = lead(e);
                    }
                    continue;
                }
                let range = (e.digest, e.chunk_offset, e.len);
                if let Some(&i) = kept.get(&range) {
                    if let Some(k) = plan.keep.get_mut(&e.digest).and_then(|v| v.get_mut(i)) {
                        k.uses += 1;
                    }
                    continue;
                }
                if fetched.contains(&e.digest)
                    && e.len <= KEEP_RANGE_MAX
                    && kept_bytes + u64::from(e.len) <= KEEP_BUDGET
                {
                    let ranges = plan.keep.entry(e.digest).or_default();
                    kept.insert(range, ranges.len());
                    ranges.push(KeepRange {
                        offset: e.chunk_offset,
                        len: e.len,
                        uses: 1,
                    });
                    kept_bytes += u64::from(e.len);
                    continue;
                }
                placed.insert(
                    e.digest,
                    (plan.fetches.len(), if direct { e.len } else { 0 }),
                );
                plan.fetches.push(Fetch {
                    digest: e.digest,
                    lead: lead(e),
                });
                cache.insert(e.digest, ());
                fetched.insert(e.digest);
            }
        }
        plan
    }

    /// The digests of the bulk lane's chunks.
    #[cfg(any(unix, test))]
    pub(crate) fn bulk_digests(&self) -> HashSet<Digest> {
        self.bulk.iter().map(|f| f.digest).collect()
    }
}

/// One extent's bytes: `chunk[start..end]`, a range checked to exist.
pub(crate) struct Piece {
    pub chunk: Arc<PlacedChunk>,
    pub start: usize,
    pub end: usize,
}

impl Piece {
    /// The bytes `ext` (of the file at `path`, named in errors) takes from `chunk`, its
    /// chunk: a catalog error if the chunk is shorter than the extent says.
    pub(crate) fn of(
        chunk: Arc<PlacedChunk>,
        ext: &Extent,
        path: &[u8],
    ) -> Result<Piece, RestoreError> {
        let start = ext.chunk_offset as usize;
        let end = start + ext.len as usize;
        if chunk.get(start..end).is_none() {
            return Err(RestoreError::Catalog(
                abri_store::StoreError::InvalidCatalog {
                    reason: format!(
                        "file {:?} names bytes {start}..{end} of chunk {}, which has {} bytes",
                        text(path),
                        ext.digest,
                        chunk.len()
                    ),
                },
            ));
        }
        Ok(Piece { chunk, start, end })
    }

    #[cfg(any(windows, test))]
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.chunk[self.start..self.end]
    }
}

/// The bytes of a restore's extents, from cache, kept ranges or `source`, as the module
/// documentation says.
pub(crate) struct RestoreChunks<'a, S> {
    source: &'a S,
    cache: ChunkCache<Arc<PlacedChunk>>,
    /// Ranges still to copy out of chunks not fetched yet.
    keep: HashMap<Digest, Vec<KeepRange>>,
    /// Ranges copied out, with their uses left.
    kept: HashMap<Range, (Arc<PlacedChunk>, u32)>,
}

impl<'a, S: ChunkSource> RestoreChunks<'a, S> {
    pub(crate) fn new(source: &'a S, keep: HashMap<Digest, Vec<KeepRange>>) -> Self {
        RestoreChunks {
            source,
            cache: ChunkCache::new(),
            keep,
            kept: HashMap::new(),
        }
    }

    /// The source chunks are fetched from (catalog chunks are read from it too).
    pub(crate) fn source(&self) -> &'a S {
        self.source
    }

    /// Whether [`piece`] has `ext`'s bytes at hand (cached or kept) and need not fetch.
    ///
    /// [`piece`]: RestoreChunks::piece
    pub(crate) fn holds(&self, ext: &Extent) -> bool {
        self.cache.get(&ext.digest).is_some()
            || self
                .kept
                .contains_key(&(ext.digest, ext.chunk_offset, ext.len))
    }

    /// The bytes of `ext`, an extent of the file at `path` (named in errors).
    pub(crate) fn piece(&mut self, ext: &Extent, path: &[u8]) -> Result<Piece, RestoreError> {
        let chunk = match self.cache.get(&ext.digest) {
            Some(chunk) => chunk,
            None => {
                let range = (ext.digest, ext.chunk_offset, ext.len);
                if let Some((bytes, uses)) = self.kept.get_mut(&range) {
                    let chunk = bytes.clone();
                    *uses -= 1;
                    if *uses == 0 {
                        self.kept.remove(&range);
                    }
                    let end = chunk.len();
                    return Ok(Piece {
                        chunk,
                        start: 0,
                        end,
                    });
                }
                self.fetch(&ext.digest, lead(ext))?
            }
        };
        Piece::of(chunk, ext, path)
    }

    fn fetch(&mut self, digest: &Digest, lead: usize) -> Result<Arc<PlacedChunk>, RestoreError> {
        let chunk = Arc::new(
            self.source
                .read_chunk_placed(digest, lead)
                .map_err(RestoreError::Catalog)?,
        );
        // Out of range, a kept range is skipped: its extent then fetches the chunk and
        // reports the catalog's error.
        for k in self.keep.remove(digest).unwrap_or_default() {
            let (start, end) = (k.offset as usize, k.offset as usize + k.len as usize);
            if let Some(bytes) = chunk.get(start..end) {
                self.kept.insert(
                    (*digest, k.offset, k.len),
                    (Arc::new(PlacedChunk::from_vec(bytes.to_vec())), k.uses),
                );
            }
        }
        self.cache.insert(*digest, chunk.clone());
        Ok(chunk)
    }
}

#[cfg(test)]
mod tests;
