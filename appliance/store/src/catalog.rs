//! Catalogs: the immutable list of a file snapshot's entries, stored as chunks.
//!
//! A catalog is one byte stream: the header `ABRICAT` + format u16 LE (= 1), then records,
//! each a u32 LE length followed by one postcard-encoded [`Entry`]. The stream is cut by the
//! same content-defined chunker as file data, so the unchanged parts of a catalog dedupe
//! against the previous snapshot's.
//!
//! Invariants enforced by both the writer and the reader (so the box refuses a bad catalog
//! from an agent, and a restore never trusts one): every path passes [`validate_path`],
//! paths are strictly increasing in [`path_cmp`] order (depth-first, bytes), extents are
//! ordered, non-overlapping and inside the file, only files have extents, and a hard link
//! names an earlier path.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use crate::aligned::PlacedChunk;
use crate::chunk::{MAX_CHUNK_LEN, encode_chunk};
use crate::chunker::{Chunker, ChunkerParams};
use crate::error::{ChunkDefect, Result, StoreError};
use crate::key::{ChunkKey, Digest};

/// Magic at the start of a catalog stream.
pub const CATALOG_MAGIC: [u8; 7] = *b"ABRICAT";
/// The catalog format this code writes and reads.
pub const CATALOG_FORMAT: u16 = 1;
/// Largest encoded entry (64 MiB: about 1.4 million extents, a 3 TiB file).
pub const MAX_ENTRY_LEN: usize = 64 * 1024 * 1024;

/// Where a run of a file's bytes lives: `len` bytes at `chunk_offset` in chunk `digest`
/// are the file's bytes at `file_offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Extent {
    /// The chunk holding the bytes.
    pub digest: Digest,
    /// Offset of the run inside the chunk's raw bytes.
    pub chunk_offset: u32,
    /// Length of the run (never 0).
    pub len: u32,
    /// Offset of the run in the file.
    pub file_offset: u64,
}

/// What kind of file system object an entry is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryKind {
    /// A regular file; its data is in the entry's extents.
    File,
    /// A directory.
    Dir,
    /// A symbolic link and its target bytes (may be absolute; it is data, not a path here).
    Symlink {
        /// The link's target.
        target: Vec<u8>,
    },
    /// A further link to a file already in the catalog.
    HardLink {
        /// The path of the first link (an earlier entry).
        target: Vec<u8>,
    },
    /// A named pipe.
    Fifo,
    /// A Unix socket.
    Socket,
    /// A character device.
    CharDevice {
        /// Device number.
        rdev: u64,
    },
    /// A block device.
    BlockDevice {
        /// Device number.
        rdev: u64,
    },
}

/// Windows-only metadata (reserved for the Windows agent; part of format 1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowsMeta {
    /// FILE_ATTRIBUTE_* bits.
    pub attributes: u32,
    /// Creation time, ns since the Unix epoch.
    pub creation_time_ns: i64,
    /// Self-relative security descriptor.
    pub security_descriptor: Vec<u8>,
}

/// One file system object of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Relative path, '/'-separated bytes (see [`validate_path`]).
    pub path: Vec<u8>,
    /// Kind and kind-specific data.
    pub kind: EntryKind,
    /// st_mode permission and type bits.
    pub mode: u32,
    /// Owner id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Owner name, when known.
    pub user: Option<String>,
    /// Group name, when known.
    pub group: Option<String>,
    /// Logical size in bytes (files: including holes).
    pub size: u64,
    /// Modification time, ns since the Unix epoch.
    pub mtime_ns: i64,
    /// Status change time, ns since the Unix epoch.
    pub ctime_ns: i64,
    /// Access time, ns since the Unix epoch.
    pub atime_ns: i64,
    /// Inode number (for change detection).
    pub inode: u64,
    /// Device number of the file system (for change detection).
    pub dev: u64,
    /// Link count.
    pub nlink: u32,
    /// Extended attributes, name and value; POSIX ACLs travel as `system.posix_acl_*`.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Data regions (files only); bytes not covered are holes.
    pub extents: Vec<Extent>,
    /// Windows metadata (Windows agent only).
    pub windows: Option<WindowsMeta>,
}

impl Entry {
    /// An entry of `kind` at `path` with every other field zero or empty.
    pub fn new(path: impl Into<Vec<u8>>, kind: EntryKind) -> Self {
        Entry {
            path: path.into(),
            kind,
            mode: 0,
            uid: 0,
            gid: 0,
            user: None,
            group: None,
            size: 0,
            mtime_ns: 0,
            ctime_ns: 0,
            atime_ns: 0,
            inode: 0,
            dev: 0,
            nlink: 0,
            xattrs: Vec::new(),
            extents: Vec::new(),
            windows: None,
        }
    }
}

fn invalid_path(path: &[u8], reason: &'static str) -> StoreError {
    StoreError::InvalidPath {
        path: String::from_utf8_lossy(path).into_owned(),
        reason,
    }
}

/// Checks that a catalog path is relative and clean: not empty, no leading '/', no empty,
/// "." or ".." component, no NUL byte. Restores join it under a target directory, so this
/// is what keeps a catalog from writing outside it.
pub fn validate_path(path: &[u8]) -> Result<()> {
    if path.is_empty() {
        return Err(invalid_path(path, "the path is empty"));
    }
    if path.contains(&0) {
        return Err(invalid_path(path, "the path contains a NUL byte"));
    }
    if path[0] == b'/' {
        return Err(invalid_path(path, "the path is absolute"));
    }
    for component in path.split(|&b| b == b'/') {
        match component {
            b"" => return Err(invalid_path(path, "the path has an empty component")),
            b"." => return Err(invalid_path(path, "the path has a '.' component")),
            b".." => return Err(invalid_path(path, "the path has a '..' component")),
            _ => {}
        }
    }
    Ok(())
}

/// Catalog order: component by component, each compared as bytes. A directory is followed
/// by its whole subtree before its next sibling ("a", "a/b", "a.txt"), which is the order a
/// walk that sorts each directory's names produces, so a walk merges with the previous
/// catalog in one pass.
pub fn path_cmp(a: &[u8], b: &[u8]) -> Ordering {
    // Same as comparing with '/' replaced by a byte below every other (paths have no NUL).
    let key = |c: u8| if c == b'/' { 0 } else { u16::from(c) + 1 };
    a.iter().map(|&c| key(c)).cmp(b.iter().map(|&c| key(c)))
}

fn invalid(reason: String) -> StoreError {
    StoreError::InvalidCatalog { reason }
}

/// Checks one entry against the catalog rules, given the previous entry's path.
pub(crate) fn check_entry(entry: &Entry, prev: Option<&[u8]>) -> Result<()> {
    validate_path(&entry.path)?;
    let name = || String::from_utf8_lossy(&entry.path).into_owned();
    if let Some(prev) = prev
        && path_cmp(prev, &entry.path) != Ordering::Less
    {
        return Err(invalid(format!(
            "entry {:?} does not come after {:?}: paths must be strictly increasing",
            name(),
            String::from_utf8_lossy(prev)
        )));
    }
    match &entry.kind {
        EntryKind::File => {}
        _ if !entry.extents.is_empty() => {
            return Err(invalid(format!(
                "entry {:?} has extents but is not a file",
                name()
            )));
        }
        EntryKind::HardLink { target } => {
            validate_path(target)?;
            if path_cmp(target, &entry.path) != Ordering::Less {
                return Err(invalid(format!(
                    "hard link {:?} must name an earlier entry",
                    name()
                )));
            }
        }
        EntryKind::Symlink { target } if target.is_empty() || target.contains(&0) => {
            return Err(invalid(format!(
                "symlink {:?} has an empty or NUL target",
                name()
            )));
        }
        _ => {}
    }
    let mut end = 0u64;
    for e in &entry.extents {
        let e_end = e.file_offset.checked_add(u64::from(e.len));
        let chunk_end = e.chunk_offset as usize + e.len as usize;
        let ok = e.len > 0
            && e.file_offset >= end
            && e_end.is_some_and(|x| x <= entry.size)
            && chunk_end <= MAX_CHUNK_LEN;
        if !ok {
            return Err(invalid(format!(
                "file {:?} has an empty, overlapping, unordered or out-of-bounds extent \
                 at offset {}",
                name(),
                e.file_offset
            )));
        }
        end = e_end.unwrap_or(u64::MAX);
    }
    Ok(())
}

/// An encoded chunk ready to insert or upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodedChunk {
    /// Its digest.
    pub digest: Digest,
    /// Its encoded bytes (see [`crate::encode_chunk`]).
    pub bytes: Vec<u8>,
}

/// The result of [`CatalogWriter::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishedCatalog {
    /// The catalog's chunks in stream order: the manifest's `catalog` field.
    pub digests: Vec<Digest>,
    /// The chunks not yet taken with [`CatalogWriter::take_chunks`].
    pub chunks: Vec<EncodedChunk>,
}

/// Builds a catalog from entries pushed in [`path_cmp`] order.
#[derive(Debug)]
pub struct CatalogWriter {
    key: ChunkKey,
    level: i32,
    chunker: Chunker,
    last_path: Option<Vec<u8>>,
    digests: Vec<Digest>,
    ready: Vec<EncodedChunk>,
}

impl CatalogWriter {
    /// A writer naming chunks with `key`, cutting with `params`, compressing at zstd
    /// `level`.
    pub fn new(key: ChunkKey, params: ChunkerParams, level: i32) -> Self {
        let mut chunker = Chunker::new(params);
        chunker.push(&CATALOG_MAGIC);
        chunker.push(&CATALOG_FORMAT.to_le_bytes());
        CatalogWriter {
            key,
            level,
            chunker,
            last_path: None,
            digests: Vec::new(),
            ready: Vec::new(),
        }
    }

    /// Appends an entry; refuses one that breaks the catalog rules (module docs).
    pub fn push(&mut self, entry: &Entry) -> Result<()> {
        check_entry(entry, self.last_path.as_deref())?;
        let record = postcard::to_allocvec(entry)
            .map_err(|e| invalid(format!("cannot encode entry: {e}")))?;
        let len = u32::try_from(record.len())
            .ok()
            .filter(|&l| l as usize <= MAX_ENTRY_LEN)
            .ok_or_else(|| {
                invalid(format!(
                    "entry {:?} encodes to {} bytes, over the 64 MiB limit",
                    String::from_utf8_lossy(&entry.path),
                    record.len()
                ))
            })?;
        self.chunker.push(&len.to_le_bytes());
        self.chunker.push(&record);
        self.last_path = Some(entry.path.clone());
        self.drain();
        Ok(())
    }

    /// Takes the chunks finished so far (to insert or upload while the walk goes on).
    pub fn take_chunks(&mut self) -> Vec<EncodedChunk> {
        std::mem::take(&mut self.ready)
    }

    /// Ends the catalog.
    pub fn finish(mut self) -> FinishedCatalog {
        self.chunker.finish();
        self.drain();
        FinishedCatalog {
            digests: self.digests,
            chunks: self.ready,
        }
    }

    fn drain(&mut self) {
        while let Some(raw) = self.chunker.pop() {
            let digest = self.key.digest(&raw);
            self.digests.push(digest);
            self.ready.push(EncodedChunk {
                digest,
                bytes: encode_chunk(&raw, self.level),
            });
        }
    }
}

/// Where a catalog reader gets chunks: the store on the box, HTTP on the agent.
pub trait ChunkSource {
    /// The verified raw bytes of a chunk.
    fn read_chunk(&self, digest: &Digest) -> Result<Vec<u8>>;

    /// The verified raw bytes of several chunks, in order. A remote source answers them in
    /// one round trip; the default asks one by one.
    fn read_chunks(&self, digests: &[Digest]) -> Result<Vec<Vec<u8>>> {
        digests.iter().map(|d| self.read_chunk(d)).collect()
    }

    /// The verified raw bytes of several chunks, in order, placed one after the other in
    /// `dest`: chunk `i` fills the next `lens[i]` bytes and must be exactly that long.
    /// `dest` must be the sum of `lens` long. A source that decodes (a remote one) decodes
    /// straight into place; the default copies. On an error `dest` must not be used.
    fn read_chunks_into(&self, digests: &[Digest], lens: &[usize], dest: &mut [u8]) -> Result<()> {
        let chunks = self.read_chunks(digests)?;
        place_chunks(digests, &chunks, lens, dest)
    }

    /// The verified raw bytes of a chunk, placed at `lead` (see [`PlacedChunk`]) by a
    /// source that decodes them itself (a remote one); the default leaves them where
    /// [`Self::read_chunk`] put them.
    fn read_chunk_placed(&self, digest: &Digest, lead: usize) -> Result<PlacedChunk> {
        let _ = lead;
        self.read_chunk(digest).map(PlacedChunk::from_vec)
    }
}

/// The default of [`ChunkSource::read_chunks_into`]: `chunks` copied into place, each
/// checked against its length.
fn place_chunks(
    digests: &[Digest],
    chunks: &[Vec<u8>],
    lens: &[usize],
    dest: &mut [u8],
) -> Result<()> {
    if chunks.len() != lens.len()
        || digests.len() != lens.len()
        || lens.iter().sum::<usize>() != dest.len()
    {
        return Err(StoreError::InvalidCatalog {
            reason: format!(
                "{} chunks asked for {} places in {} bytes",
                chunks.len(),
                lens.len(),
                dest.len()
            ),
        });
    }
    let mut rest = dest;
    for ((chunk, &len), digest) in chunks.iter().zip(lens).zip(digests) {
        let n = len.min(rest.len());
        let (slot, tail) = std::mem::take(&mut rest).split_at_mut(n);
        if chunk.len() != len || slot.len() != len {
            return Err(StoreError::BadChunk {
                digest: *digest,
                defect: ChunkDefect::LengthMismatch {
                    declared: u32::try_from(len).unwrap_or(u32::MAX),
                    actual: chunk.len(),
                },
            });
        }
        slot.copy_from_slice(chunk);
        rest = tail;
    }
    Ok(())
}

impl<T: ChunkSource + ?Sized> ChunkSource for &T {
    fn read_chunk(&self, digest: &Digest) -> Result<Vec<u8>> {
        (**self).read_chunk(digest)
    }

    fn read_chunks(&self, digests: &[Digest]) -> Result<Vec<Vec<u8>>> {
        (**self).read_chunks(digests)
    }

    fn read_chunks_into(&self, digests: &[Digest], lens: &[usize], dest: &mut [u8]) -> Result<()> {
        (**self).read_chunks_into(digests, lens, dest)
    }

    fn read_chunk_placed(&self, digest: &Digest, lead: usize) -> Result<PlacedChunk> {
        (**self).read_chunk_placed(digest, lead)
    }
}

/// Reads a catalog's entries in order, one chunk in memory at a time, checking every
/// rule; stops at the first error.
#[derive(Debug)]
pub struct CatalogReader<S> {
    source: S,
    digests: Vec<Digest>,
    next_chunk: usize,
    buf: Vec<u8>,
    pos: usize,
    started: bool,
    done: bool,
    last_path: Option<Vec<u8>>,
    peeked: Option<(u64, Entry)>,
    /// Stream offset of `buf[0]`.
    buf_offset: u64,
    /// Stream offset where each chunk read so far ends.
    chunk_ends: Vec<u64>,
}

impl<S: ChunkSource> CatalogReader<S> {
    /// A reader over the catalog made of `digests` (a manifest's `catalog`).
    pub fn new(source: S, digests: Vec<Digest>) -> Self {
        CatalogReader {
            source,
            digests,
            next_chunk: 0,
            buf: Vec::new(),
            pos: 0,
            started: false,
            done: false,
            last_path: None,
            peeked: None,
            buf_offset: 0,
            chunk_ends: Vec::new(),
        }
    }

    /// A reader that starts at the entry found at stream `offset` by an earlier reader of
    /// the same catalog, whose [`CatalogReader::chunk_ends`] are `chunk_ends`: random access
    /// for large catalogs (image segments) without re-reading from the start. Ordering
    /// checks start afresh from that entry.
    pub fn resume(
        source: S,
        digests: Vec<Digest>,
        chunk_ends: &[u64],
        offset: u64,
    ) -> Result<Self> {
        let index = chunk_ends.partition_point(|&end| end <= offset);
        let Some(digest) = digests.get(index) else {
            return Err(invalid(format!("no catalog chunk holds offset {offset}")));
        };
        let start = index.checked_sub(1).map_or(0, |i| chunk_ends[i]);
        let buf = source.read_chunk(digest)?;
        let skip = usize::try_from(offset - start)
            .ok()
            .filter(|&n| n <= buf.len())
            .ok_or_else(|| invalid(format!("catalog offset {offset} is past its chunk")))?;
        Ok(CatalogReader {
            source,
            digests,
            next_chunk: index + 1,
            buf,
            pos: skip,
            started: true,
            done: false,
            last_path: None,
            peeked: None,
            buf_offset: start,
            chunk_ends: chunk_ends[..=index].to_vec(),
        })
    }

    /// Where each catalog chunk read so far ends in the stream (for [`CatalogReader::resume`]).
    pub fn chunk_ends(&self) -> &[u64] {
        &self.chunk_ends
    }

    /// Advances to `path` and returns its entry, or `None` when the catalog has no such
    /// path. For a merge with a walk: ask for increasing paths; entries before `path` are
    /// skipped, and the first entry after it stays for the next call.
    pub fn find(&mut self, path: &[u8]) -> Result<Option<Entry>> {
        while let Some((offset, e)) = self.next_entry_at()? {
            match path_cmp(&e.path, path) {
                Ordering::Less => continue,
                Ordering::Equal => return Ok(Some(e)),
                Ordering::Greater => {
                    self.peeked = Some((offset, e));
                    return Ok(None);
                }
            }
        }
        Ok(None)
    }

    /// The next entry, `None` at the end.
    pub fn next_entry(&mut self) -> Result<Option<Entry>> {
        Ok(self.next_entry_at()?.map(|(_, e)| e))
    }

    /// The next entry and the stream offset of its record (for [`CatalogReader::resume`]).
    pub fn next_entry_at(&mut self) -> Result<Option<(u64, Entry)>> {
        if let Some(e) = self.peeked.take() {
            return Ok(Some(e));
        }
        if self.done {
            return Ok(None);
        }
        let r = self.read_entry();
        if !matches!(r, Ok(Some(_))) {
            self.done = true;
        }
        r
    }

    fn read_entry(&mut self) -> Result<Option<(u64, Entry)>> {
        if !self.started {
            self.started = true;
            let header = self
                .take(CATALOG_MAGIC.len() + 2)?
                .ok_or_else(|| invalid("the catalog is empty (no header)".into()))?;
            if header[..CATALOG_MAGIC.len()] != CATALOG_MAGIC {
                return Err(invalid("bad magic: not an Abri catalog".into()));
            }
            let version = u16::from_le_bytes([header[7], header[8]]);
            if version != CATALOG_FORMAT {
                return Err(invalid(format!(
                    "catalog format {version} is not supported (this build reads 1)"
                )));
            }
        }
        let offset = self.buf_offset + self.pos as u64;
        let Some(len) = self.take(4)? else {
            return Ok(None);
        };
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        if len > MAX_ENTRY_LEN {
            return Err(invalid(format!(
                "an entry claims {len} bytes, over the limit"
            )));
        }
        let record = self
            .take(len)?
            .ok_or_else(|| invalid("the catalog ends inside an entry".into()))?;
        let (entry, rest) = postcard::take_from_bytes::<Entry>(&record)
            .map_err(|e| invalid(format!("an entry does not decode: {e}")))?;
        if !rest.is_empty() {
            return Err(invalid("an entry has trailing bytes".into()));
        }
        check_entry(&entry, self.last_path.as_deref())?;
        self.last_path = Some(entry.path.clone());
        Ok(Some((offset, entry)))
    }

    /// Takes exactly `n` bytes of the stream; `None` at a clean end (no bytes left),
    /// error when the stream ends inside them.
    fn take(&mut self, n: usize) -> Result<Option<Vec<u8>>> {
        while self.buf.len() - self.pos < n {
            let Some(digest) = self.digests.get(self.next_chunk) else {
                if self.buf.len() == self.pos {
                    return Ok(None);
                }
                return Err(invalid("the catalog ends inside an entry".into()));
            };
            let chunk = self.source.read_chunk(digest)?;
            self.next_chunk += 1;
            let end = self.chunk_ends.last().copied().unwrap_or(0) + chunk.len() as u64;
            self.chunk_ends.push(end);
            self.buf.drain(..self.pos);
            self.buf_offset += self.pos as u64;
            self.pos = 0;
            self.buf.extend_from_slice(&chunk);
        }
        let out = self.buf[self.pos..self.pos + n].to_vec();
        self.pos += n;
        Ok(Some(out))
    }
}

impl<S: ChunkSource> Iterator for CatalogReader<S> {
    type Item = Result<Entry>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_entry().transpose()
    }
}

#[cfg(test)]
mod tests;
