//! Image snapshots as downloads: a disk as a raw image or as qcow2, streamed front to back
//! from the chunk store in constant memory (one segment's extents and one chunk at a time).

use abri_store::{
    CatalogReader, ChunkStore, Digest, Extent, ImageInfo, SnapshotKind, SnapshotManifest,
    segment_path,
};
use std::io::{self, Write};
use std::sync::Arc;

use crate::errors::{AppError, AppResult};

/// Download formats of an image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageFormat {
    /// The disk's bytes (zeros included).
    Raw,
    /// A qcow2 file with only the stored clusters allocated.
    Qcow2,
}

impl ImageFormat {
    pub fn parse(text: &str) -> AppResult<Self> {
        match text {
            "raw" | "img" => Ok(ImageFormat::Raw),
            "qcow2" => Ok(ImageFormat::Qcow2),
            other => Err(AppError::Invalid(format!(
                "format: {other:?} is not raw or qcow2"
            ))),
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            ImageFormat::Raw => "img",
            ImageFormat::Qcow2 => "qcow2",
        }
    }
}

/// The image `name` of an image snapshot.
pub fn image_of(manifest: &SnapshotManifest, name: &str) -> AppResult<ImageInfo> {
    if manifest.kind != SnapshotKind::Image {
        return Err(AppError::NotFound(format!(
            "image {name} (snapshot {} holds files)",
            manifest.id
        )));
    }
    manifest
        .images
        .iter()
        .find(|i| i.name == name)
        .cloned()
        .ok_or_else(|| AppError::NotFound(format!("image {name} in snapshot {}", manifest.id)))
}

fn io_err(e: abri_store::StoreError) -> io::Error {
    io::Error::other(e.to_string())
}

/// Walks an image's slots in order: each slot's extent or `None` for a hole.
struct Slots<'a> {
    reader: CatalogReader<&'a ChunkStore>,
    info: &'a ImageInfo,
    segment: Option<u64>,
    extents: Vec<Extent>,
    next: usize,
}

impl<'a> Slots<'a> {
    fn new(store: &'a ChunkStore, catalog: Vec<Digest>, info: &'a ImageInfo) -> Self {
        Slots {
            reader: CatalogReader::new(store, catalog),
            info,
            segment: None,
            extents: Vec::new(),
            next: 0,
        }
    }

    fn slots(&self) -> u64 {
        self.info.size.div_ceil(u64::from(self.info.chunk_size))
    }

    /// The extent at `slot` (asked in increasing order).
    fn at(&mut self, slot: u64) -> io::Result<Option<Extent>> {
        let offset = slot * u64::from(self.info.chunk_size);
        let seg = offset / self.info.segment_size;
        if self.segment != Some(seg) {
            let entry = self
                .reader
                .find(&segment_path(&self.info.name, seg))
                .map_err(io_err)?
                .ok_or_else(|| io::Error::other(format!("segment {seg} is missing")))?;
            self.extents = entry.extents;
            self.segment = Some(seg);
            self.next = 0;
        }
        let in_seg = offset % self.info.segment_size;
        while self.next < self.extents.len() && self.extents[self.next].file_offset < in_seg {
            self.next += 1;
        }
        Ok(self
            .extents
            .get(self.next)
            .filter(|e| e.file_offset == in_seg)
            .copied())
    }
}

/// Reads one stored chunk into `out` (its first `out.len()` bytes).
fn fill(store: &ChunkStore, e: &Extent, out: &mut [u8]) -> io::Result<()> {
    let data = store.read(&e.digest).map_err(io_err)?;
    let src = data
        .get(..out.len())
        .ok_or_else(|| io::Error::other(format!("chunk {} is short", e.digest)))?;
    out.copy_from_slice(src);
    Ok(())
}

/// Bytes of the download.
pub fn download_len(
    store: &ChunkStore,
    catalog: &[Digest],
    info: &ImageInfo,
    format: ImageFormat,
) -> AppResult<u64> {
    match format {
        ImageFormat::Raw => Ok(info.size),
        ImageFormat::Qcow2 => Ok(qcow2_plan(store, catalog, info)?.total_len()),
    }
}

fn cluster_bits(info: &ImageInfo) -> AppResult<u32> {
    let bits = info.chunk_size.trailing_zeros();
    if (abri_vdisk::MIN_CLUSTER_BITS..=abri_vdisk::MAX_CLUSTER_BITS).contains(&bits) {
        Ok(bits)
    } else {
        Err(AppError::Invalid(format!(
            "image {}: chunk size {} cannot be a qcow2 cluster",
            info.name, info.chunk_size
        )))
    }
}

/// The qcow2 layout: one cluster per stored chunk.
fn qcow2_plan(
    store: &ChunkStore,
    catalog: &[Digest],
    info: &ImageInfo,
) -> AppResult<abri_vdisk::Qcow2Plan> {
    let bits = cluster_bits(info)?;
    let mut slots = Slots::new(store, catalog.to_vec(), info);
    let mut allocated = Vec::new();
    for slot in 0..slots.slots() {
        if slots
            .at(slot)
            .map_err(|e| AppError::Internal(anyhow::anyhow!("{e}")))?
            .is_some()
        {
            allocated.push(slot);
        }
    }
    abri_vdisk::Qcow2Plan::new(info.size, bits, allocated)
        .map_err(|e| AppError::Invalid(format!("image {}: {e}", info.name)))
}

/// Writes the image in `format` to `out`.
pub fn write_image(
    store: Arc<ChunkStore>,
    catalog: Vec<Digest>,
    info: &ImageInfo,
    format: ImageFormat,
    out: &mut dyn Write,
) -> AppResult<()> {
    let internal = |e: io::Error| AppError::Internal(anyhow::anyhow!("{e}"));
    match format {
        ImageFormat::Raw => {
            let mut slots = Slots::new(&store, catalog, info);
            let chunk = u64::from(info.chunk_size);
            let mut buf = vec![0u8; info.chunk_size as usize];
            for slot in 0..slots.slots() {
                let len = (info.size - slot * chunk).min(chunk) as usize;
                let piece = &mut buf[..len];
                match slots.at(slot).map_err(internal)? {
                    Some(e) => fill(&store, &e, piece).map_err(internal)?,
                    None => piece.fill(0),
                }
                out.write_all(piece).map_err(internal)?;
            }
            Ok(())
        }
        ImageFormat::Qcow2 => {
            let plan = qcow2_plan(&store, &catalog, info)?;
            let mut slots = Slots::new(&store, catalog, info);
            abri_vdisk::write_qcow2(&plan, out, |index, buf| {
                let e = slots
                    .at(index)?
                    .ok_or_else(|| io::Error::other(format!("cluster {index} vanished")))?;
                fill(&store, &e, buf)
            })
            .map_err(internal)
        }
    }
}
