//! Image snapshots: disks, partitions, volumes and VM disks in the same store and catalog as
//! file snapshots.
//!
//! An image `NAME` is a directory entry `NAME` followed by its *segments*, file entries
//! `NAME/000000`, `NAME/000001`, … each covering [`SEGMENT_BYTES`] of the image (the last
//! one the rest). A segment's extents are the image's fixed, aligned chunks
//! ([`CHUNK_BYTES`] each, `chunk_offset` 0, `file_offset` a multiple of the chunk size
//! relative to the segment); chunks that are all zero, unallocated or outside the used
//! blocks of a file system have no extent (a hole reads as zeros). Segments keep every
//! catalog entry small (16 Ki extents) whatever the disk size, so a reader holds one
//! segment at a time. The manifest's `images` field ([`ImageInfo`]) names each image with
//! its size, chunk size, partition table and volumes.
//!
//! [`ImageReader`] gives random access to one image of a committed snapshot (file system
//! browsing); [`ImageSegments`] cuts a stream of chunk slots into segment entries (the
//! agent).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::catalog::{CatalogReader, ChunkSource, Entry, EntryKind, Extent};
use crate::error::{Result, StoreError};
use crate::key::Digest;

/// Fixed chunk size of image data (64 KiB; chosen by measurement, see `docs/formats.md`).
pub const CHUNK_BYTES: u32 = 64 * 1024;
/// Bytes of an image per catalog segment entry (1 GiB: 16 Ki chunks).
pub const SEGMENT_BYTES: u64 = 1 << 30;
/// Largest image a snapshot accepts (1 PiB): keeps segment numbers within 6 digits.
pub const MAX_IMAGE_BYTES: u64 = 1 << 50;

/// One image of an image snapshot (manifest field `images`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// Name in the catalog: 1–64 of `A-Z a-z 0-9 . _ -`, not starting with '.'.
    pub name: String,
    /// What was imaged: a device path, an LVM volume, an image file, an NBD address.
    pub source: String,
    /// Size in bytes.
    pub size: u64,
    /// Chunk size of this image's extents.
    pub chunk_size: u32,
    /// Bytes per segment entry.
    pub segment_size: u64,
    /// `gpt`, `mbr` or `none`.
    pub table: String,
    /// The partitions, or one volume spanning the image when it has no partition table.
    #[serde(default)]
    pub volumes: Vec<ImageVolume>,
    /// How the data was selected: `used-blocks`, `allocated`, `changed-blocks`, `all`, or
    /// a combination such as `used-blocks+allocated`; `unchanged-file` when no block was read
    /// (an image file unchanged since the previous image).
    pub read: String,
    /// For an image file: its state when the image was taken. The next backup takes every
    /// chunk from this image without reading when the file is in the same state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_state: Option<FileState>,
}

/// What says an image file has not changed: as for unchanged files in file mode, its size,
/// modification and change times, and inode number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileState {
    pub size: u64,
    pub mtime_ns: i64,
    pub ctime_ns: i64,
    pub inode: u64,
}

/// A partition of an image (or the whole image as one volume).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageVolume {
    /// Partition number (1-based), 0 for a whole-image volume.
    pub number: u32,
    /// Offset in the image, bytes.
    pub start: u64,
    /// Size, bytes.
    pub size: u64,
    /// Partition type (GPT type GUID or MBR type byte), empty for a whole-image volume.
    #[serde(default)]
    pub type_id: String,
    /// Partition name or file system label.
    #[serde(default)]
    pub label: String,
    /// `ext4`, `ntfs`, or empty when not recognised.
    #[serde(default)]
    pub fs: String,
    /// Bytes the file system uses (only read those), when it was recognised.
    #[serde(default)]
    pub used_bytes: Option<u64>,
}

impl ImageInfo {
    /// Number of segments.
    pub fn segments(&self) -> u64 {
        self.size.div_ceil(self.segment_size.max(1))
    }

    /// Length of segment `index`.
    pub fn segment_len(&self, index: u64) -> u64 {
        let start = index.saturating_mul(self.segment_size);
        self.size.saturating_sub(start).min(self.segment_size)
    }

    /// Checks the fields (not the catalog): a bad manifest or commit is refused.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| StoreError::InvalidCatalog {
            reason: format!("image {:?}: {reason}", self.name),
        };
        validate_image_name(&self.name)?;
        if self.size == 0 || self.size > MAX_IMAGE_BYTES {
            return Err(bad(format!("size {} is out of range", self.size)));
        }
        if self.chunk_size == 0
            || !self.chunk_size.is_power_of_two()
            || self.chunk_size as usize > crate::MAX_CHUNK_LEN
        {
            return Err(bad(format!("chunk size {} is invalid", self.chunk_size)));
        }
        if self.segment_size == 0 || !self.segment_size.is_multiple_of(u64::from(self.chunk_size)) {
            return Err(bad(format!(
                "segment size {} is not a multiple of the chunk size",
                self.segment_size
            )));
        }
        if self.segments() > 999_999 {
            return Err(bad("too many segments".into()));
        }
        for v in &self.volumes {
            if v.start
                .checked_add(v.size)
                .is_none_or(|end| end > self.size)
            {
                return Err(bad(format!("volume {} lies outside the image", v.number)));
            }
        }
        Ok(())
    }
}

/// Checks an image name (it becomes a catalog directory and a download file name).
pub fn validate_image_name(name: &str) -> Result<()> {
    let ok = (1..=64).contains(&name.len())
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(StoreError::InvalidCatalog {
            reason: format!(
                "image name {name:?} must be 1-64 of A-Z a-z 0-9 . _ - and not start with '.'"
            ),
        })
    }
}

/// The catalog path of segment `index` of image `name`.
pub fn segment_path(name: &str, index: u64) -> Vec<u8> {
    format!("{name}/{index:06}").into_bytes()
}

/// The directory entry of an image.
pub fn image_dir_entry(info: &ImageInfo, time_ns: i64) -> Entry {
    let mut e = Entry::new(info.name.as_bytes().to_vec(), EntryKind::Dir);
    e.mode = 0o040_700;
    e.mtime_ns = time_ns;
    e.ctime_ns = time_ns;
    e.size = info.size;
    e
}

/// Cuts an image's chunk slots, given in order, into segment entries.
#[derive(Debug)]
pub struct ImageSegments {
    info: ImageInfo,
    time_ns: i64,
    next_slot: u64,
    current: Vec<Extent>,
}

impl ImageSegments {
    /// Segments of `info` (validated by the caller), stamped with `time_ns`. Pass a time
    /// that does not change between backups (the agent passes 0): an unchanged segment then
    /// encodes to the same bytes and its catalog chunks dedupe against the previous image's.
    pub fn new(info: ImageInfo, time_ns: i64) -> Self {
        ImageSegments {
            info,
            time_ns,
            next_slot: 0,
            current: Vec::new(),
        }
    }

    /// Slots (chunks) in the whole image.
    pub fn slots(&self) -> u64 {
        self.info.size.div_ceil(u64::from(self.info.chunk_size))
    }

    /// Records the next slot: its chunk, or `None` for a hole. Returns the segment entry
    /// when this slot completes one.
    pub fn push(&mut self, digest: Option<Digest>) -> Result<Option<Entry>> {
        let chunk = u64::from(self.info.chunk_size);
        let slot = self.next_slot;
        if slot >= self.slots() {
            return Err(StoreError::InvalidCatalog {
                reason: format!("image {:?} has more chunks than its size", self.info.name),
            });
        }
        self.next_slot += 1;
        let offset = slot * chunk;
        let len = (self.info.size - offset).min(chunk);
        let per_segment = self.info.segment_size / chunk;
        if let Some(digest) = digest {
            self.current.push(Extent {
                digest,
                chunk_offset: 0,
                len: len as u32,
                file_offset: offset % self.info.segment_size,
            });
        }
        let ends_segment = (slot + 1).is_multiple_of(per_segment) || slot + 1 == self.slots();
        if !ends_segment {
            return Ok(None);
        }
        let index = slot / per_segment;
        let mut e = Entry::new(segment_path(&self.info.name, index), EntryKind::File);
        e.mode = 0o100_600;
        e.mtime_ns = self.time_ns;
        e.ctime_ns = self.time_ns;
        e.size = self.info.segment_len(index);
        e.nlink = 1;
        e.extents = std::mem::take(&mut self.current);
        Ok(Some(e))
    }

    /// True once every slot was pushed.
    pub fn is_complete(&self) -> bool {
        self.next_slot == self.slots()
    }
}

/// A catalog path an image snapshot must hold next: an image's directory (`None`) or one
/// of its segments (the image and the segment's index).
type ExpectedEntry<'a> = (Vec<u8>, Option<(&'a ImageInfo, u64)>);

/// Checks that a snapshot's catalog holds exactly its images: for each image, in name
/// order, its directory then all its segments with the right sizes and aligned extents.
/// Entries are given in catalog order.
pub fn check_image_entries<'a>(
    images: &[ImageInfo],
    entries: impl IntoIterator<Item = Result<Entry>> + 'a,
) -> Result<()> {
    let bad = |reason: String| StoreError::InvalidCatalog { reason };
    let mut sorted: Vec<&ImageInfo> = images.iter().collect();
    sorted.sort_by(|a, b| crate::catalog::path_cmp(a.name.as_bytes(), b.name.as_bytes()));
    for pair in sorted.windows(2) {
        if pair[0].name == pair[1].name {
            return Err(bad(format!("image {:?} is named twice", pair[0].name)));
        }
    }
    let mut expected: VecDeque<ExpectedEntry> = VecDeque::new();
    for info in &sorted {
        info.validate()?;
        expected.push_back((info.name.as_bytes().to_vec(), None));
        for i in 0..info.segments() {
            expected.push_back((segment_path(&info.name, i), Some((info, i))));
        }
    }
    for entry in entries {
        let entry = entry?;
        let Some((path, segment)) = expected.pop_front() else {
            return Err(bad(format!(
                "entry {:?} belongs to no image",
                String::from_utf8_lossy(&entry.path)
            )));
        };
        if entry.path != path {
            return Err(bad(format!(
                "expected {:?}, found {:?}",
                String::from_utf8_lossy(&path),
                String::from_utf8_lossy(&entry.path)
            )));
        }
        match segment {
            None if entry.kind != EntryKind::Dir => {
                return Err(bad(format!("{:?} must be a directory", entry_name(&entry))));
            }
            None => {}
            Some((info, index)) => {
                if entry.kind != EntryKind::File || entry.size != info.segment_len(index) {
                    return Err(bad(format!(
                        "segment {:?} must be a file of {} bytes",
                        entry_name(&entry),
                        info.segment_len(index)
                    )));
                }
                let chunk = u64::from(info.chunk_size);
                for e in &entry.extents {
                    let aligned = e.chunk_offset == 0
                        && e.file_offset % chunk == 0
                        && u64::from(e.len) == chunk.min(entry.size - e.file_offset);
                    if !aligned {
                        return Err(bad(format!(
                            "segment {:?} has an unaligned extent at {}",
                            entry_name(&entry),
                            e.file_offset
                        )));
                    }
                }
            }
        }
    }
    if let Some((path, _)) = expected.front() {
        return Err(bad(format!(
            "the catalog lacks {:?}",
            String::from_utf8_lossy(path)
        )));
    }
    Ok(())
}

fn entry_name(e: &Entry) -> String {
    String::from_utf8_lossy(&e.path).into_owned()
}

/// Segments and chunks kept in memory by an [`ImageReader`].
const CACHED_SEGMENTS: usize = 4;
const CACHED_CHUNKS: usize = 64;

/// Random access to one image of a snapshot, through any [`ChunkSource`]. Opening reads
/// the catalog once to note where each segment's entry starts; a read loads the segment
/// it needs (a few cached) and the chunks (a few dozen cached).
pub struct ImageReader<S> {
    source: S,
    catalog: Vec<Digest>,
    info: ImageInfo,
    chunk_ends: Vec<u64>,
    /// Stream offset of each segment's entry.
    segment_offsets: Vec<u64>,
    cache: Mutex<ReaderCache>,
}

#[derive(Default)]
struct ReaderCache {
    segments: VecDeque<(u64, std::sync::Arc<Vec<Extent>>)>,
    chunks: VecDeque<(Digest, std::sync::Arc<Vec<u8>>)>,
}

impl<S: ChunkSource> ImageReader<S> {
    /// Opens image `info` of the snapshot whose catalog is `catalog`.
    pub fn open(source: S, catalog: Vec<Digest>, info: ImageInfo) -> Result<Self> {
        info.validate()?;
        let mut reader = CatalogReader::new(&source, catalog.clone());
        let mut offsets: HashMap<u64, u64> = HashMap::new();
        let prefix = format!("{}/", info.name).into_bytes();
        while let Some((offset, entry)) = reader.next_entry_at()? {
            if let Some(rest) = entry.path.strip_prefix(prefix.as_slice())
                && let Some(index) = std::str::from_utf8(rest)
                    .ok()
                    .and_then(|r| r.parse::<u64>().ok())
            {
                offsets.insert(index, offset);
            }
        }
        let chunk_ends = reader.chunk_ends().to_vec();
        let segment_offsets = (0..info.segments())
            .map(|i| {
                offsets
                    .get(&i)
                    .copied()
                    .ok_or_else(|| StoreError::InvalidCatalog {
                        reason: format!("image {:?} lacks segment {i}", info.name),
                    })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(ImageReader {
            source,
            catalog,
            info,
            chunk_ends,
            segment_offsets,
            cache: Mutex::new(ReaderCache::default()),
        })
    }

    /// The image's description.
    pub fn info(&self) -> &ImageInfo {
        &self.info
    }

    /// Size in bytes.
    pub fn size(&self) -> u64 {
        self.info.size
    }

    /// The extents of segment `index` (offsets relative to the segment).
    pub fn segment(&self, index: u64) -> Result<std::sync::Arc<Vec<Extent>>> {
        if let Ok(cache) = self.cache.lock()
            && let Some((_, s)) = cache.segments.iter().find(|(i, _)| *i == index)
        {
            return Ok(s.clone());
        }
        let offset = *self.segment_offsets.get(index as usize).ok_or_else(|| {
            StoreError::InvalidCatalog {
                reason: format!("image {:?} has no segment {index}", self.info.name),
            }
        })?;
        let mut reader =
            CatalogReader::resume(&self.source, self.catalog.clone(), &self.chunk_ends, offset)?;
        let entry = reader
            .next_entry()?
            .ok_or_else(|| StoreError::InvalidCatalog {
                reason: format!("image {:?} segment {index} is missing", self.info.name),
            })?;
        if entry.path != segment_path(&self.info.name, index) {
            return Err(StoreError::InvalidCatalog {
                reason: format!("image {:?} segment {index} is misplaced", self.info.name),
            });
        }
        let extents = std::sync::Arc::new(entry.extents);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.segments.len() >= CACHED_SEGMENTS {
                cache.segments.pop_front();
            }
            cache.segments.push_back((index, extents.clone()));
        }
        Ok(extents)
    }

    fn chunk(&self, digest: &Digest) -> Result<std::sync::Arc<Vec<u8>>> {
        if let Ok(cache) = self.cache.lock()
            && let Some((_, c)) = cache.chunks.iter().find(|(d, _)| d == digest)
        {
            return Ok(c.clone());
        }
        let bytes = std::sync::Arc::new(self.source.read_chunk(digest)?);
        if let Ok(mut cache) = self.cache.lock() {
            if cache.chunks.len() >= CACHED_CHUNKS {
                cache.chunks.pop_front();
            }
            cache.chunks.push_back((*digest, bytes.clone()));
        }
        Ok(bytes)
    }

    /// Fills `buf` with the image's bytes at `offset` (holes read as zeros); reading past
    /// the end is an error.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.info.size)
            .ok_or_else(|| StoreError::InvalidCatalog {
                reason: format!(
                    "read of {} bytes at {offset} is past the end of image {:?}",
                    buf.len(),
                    self.info.name
                ),
            })?;
        let mut pos = offset;
        while pos < end {
            let seg = pos / self.info.segment_size;
            let in_seg = pos % self.info.segment_size;
            let seg_end = (seg + 1) * self.info.segment_size;
            let extents = self.segment(seg)?;
            let chunk = u64::from(self.info.chunk_size);
            let slot_start = in_seg - in_seg % chunk;
            let slot_end = (slot_start + chunk).min(seg_end - seg * self.info.segment_size);
            let stop = end.min(seg * self.info.segment_size + slot_end);
            let out = &mut buf[(pos - offset) as usize..(stop - offset) as usize];
            match extents
                .binary_search_by_key(&slot_start, |e| e.file_offset)
                .ok()
                .map(|i| extents[i])
            {
                None => out.fill(0),
                Some(e) => {
                    let data = self.chunk(&e.digest)?;
                    let from = (in_seg - slot_start) as usize;
                    let src = data.get(from..from + out.len()).ok_or_else(|| {
                        StoreError::InvalidCatalog {
                            reason: format!("chunk {} is shorter than its extent", e.digest),
                        }
                    })?;
                    out.copy_from_slice(src);
                }
            }
            pos = stop;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
