//! Files inside image snapshots: an ext4 or NTFS volume of a backed-up disk is read from the
//! chunk store (abri-fsread over `ImageReader`), without mounting anything on the box.
//! Folders download as `.tar.gz` built while walking the file system.

use abri_fsread::{EntryKind, FileSystem, FsEntry, ReadAt, Slice};
use abri_store::{
    ChunkSource, ChunkStore, Digest, ImageInfo, ImageReader, ImageVolume, SnapshotManifest,
};
use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use crate::errors::{AppError, AppResult};

/// The box's store as a chunk source that can be shared across threads.
#[derive(Clone)]
pub struct StoreChunks(pub Arc<ChunkStore>);

impl ChunkSource for StoreChunks {
    fn read_chunk(&self, digest: &Digest) -> abri_store::error::Result<Vec<u8>> {
        self.0.read(digest)
    }
}

/// One image of a snapshot as bytes abri-fsread can read.
struct ImageBytes(Arc<ImageReader<StoreChunks>>);

/// Image readers opened recently: opening one reads the snapshot's whole catalog once, so
/// browsing a volume page after page reuses it. Snapshots never change, so an entry is
/// never stale (a pruned snapshot's reads fail cleanly once its chunks are gone).
#[derive(Default)]
pub struct ReaderCache(Mutex<VecDeque<(String, Arc<ImageReader<StoreChunks>>)>>);

/// Readers kept.
const CACHED_READERS: usize = 4;

impl ReaderCache {
    fn get_or_open(
        &self,
        key: String,
        open: impl FnOnce() -> AppResult<ImageReader<StoreChunks>>,
    ) -> AppResult<Arc<ImageReader<StoreChunks>>> {
        if let Ok(cache) = self.0.lock()
            && let Some((_, r)) = cache.iter().find(|(k, _)| *k == key)
        {
            return Ok(r.clone());
        }
        let reader = Arc::new(open()?);
        if let Ok(mut cache) = self.0.lock() {
            if cache.len() >= CACHED_READERS {
                cache.pop_front();
            }
            cache.push_back((key, reader.clone()));
        }
        Ok(reader)
    }
}

impl ReadAt for ImageBytes {
    fn size(&self) -> u64 {
        self.0.size()
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.0
            .read_at(offset, buf)
            .map_err(|e| io::Error::other(e.to_string()))
    }
}

/// The volume numbered `number` of an image (0 = the whole image).
pub fn volume_of(info: &ImageInfo, number: u32) -> AppResult<ImageVolume> {
    info.volumes
        .iter()
        .find(|v| v.number == number)
        .cloned()
        .ok_or_else(|| AppError::NotFound(format!("volume {number} of image {}", info.name)))
}

/// Opens the file system of a volume; only ext4 and NTFS volumes can be browsed.
pub fn open_volume(
    cache: &ReaderCache,
    store: Arc<ChunkStore>,
    manifest: &SnapshotManifest,
    info: ImageInfo,
    number: u32,
) -> AppResult<Box<dyn FileSystem>> {
    let volume = volume_of(&info, number)?;
    if volume.fs.is_empty() {
        return Err(AppError::Invalid(format!(
            "volume: {} of image {} holds no file system Abri can read (ext4, NTFS)",
            number, info.name
        )));
    }
    let key = format!("{}/{}/{}", manifest.machine, manifest.id, info.name);
    let catalog = manifest.catalog.clone();
    let reader = cache.get_or_open(key, || {
        Ok(ImageReader::open(StoreChunks(store), catalog, info)?)
    })?;
    let whole: Arc<dyn ReadAt> = Arc::new(ImageBytes(reader));
    let slice = Slice::new(whole, volume.start, volume.size)
        .map_err(|e| AppError::Invalid(format!("volume: {e}")))?;
    abri_fsread::open_fs(Arc::new(slice)).map_err(fs_err)
}

fn fs_err(e: abri_fsread::Error) -> AppError {
    AppError::Invalid(format!("file system: {e}"))
}

/// A path from a URL: '/'-separated, no `.`/`..` components; the root is "/".
pub fn normalize(path: &str) -> AppResult<Vec<u8>> {
    let mut out = Vec::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." || part.contains('\0') {
            return Err(AppError::Invalid(format!(
                "path: {path:?} is not a clean path"
            )));
        }
        out.push(b'/');
        out.extend_from_slice(part.as_bytes());
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Ok(out)
}

/// A directory's entries, folders first, then by name.
pub fn list(fs: &dyn FileSystem, path: &[u8]) -> AppResult<Vec<FsEntry>> {
    let mut items = fs.list_dir(path).map_err(fs_err)?;
    items.sort_by(|a, b| {
        (a.kind != EntryKind::Dir, a.name.to_lowercase())
            .cmp(&(b.kind != EntryKind::Dir, b.name.to_lowercase()))
    });
    Ok(items)
}

/// The path of `name` inside `dir`.
pub fn child(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut p = dir.to_vec();
    if p.last() != Some(&b'/') {
        p.push(b'/');
    }
    p.extend_from_slice(name);
    p
}

/// Copies one file out.
pub fn write_file(fs: &dyn FileSystem, path: &[u8], out: &mut dyn Write) -> AppResult<()> {
    let mut reader = fs.read_file(path).map_err(fs_err)?;
    io::copy(&mut reader, out).map_err(|e| AppError::Internal(anyhow::anyhow!("{e}")))?;
    Ok(())
}

/// Writes the folder `path` (recursively) as a `.tar.gz`.
pub fn write_folder_tgz(fs: &dyn FileSystem, path: &[u8], out: &mut dyn Write) -> AppResult<()> {
    let gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.follow_symlinks(false);
    let root_name = path
        .rsplit(|b| *b == b'/')
        .find(|p| !p.is_empty())
        .map(|p| String::from_utf8_lossy(p).into_owned())
        .unwrap_or_else(|| "volume".into());
    // Depth-first with an explicit stack, bounded by the file system's own depth.
    let mut stack: Vec<(Vec<u8>, String)> = vec![(path.to_vec(), root_name)];
    let internal = |e: io::Error| AppError::Internal(anyhow::anyhow!("{e}"));
    while let Some((dir, name)) = stack.pop() {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Directory);
        header.set_mode(0o755);
        header.set_size(0);
        tar.append_data(&mut header, format!("{name}/"), io::empty())
            .map_err(internal)?;
        for e in list(fs, &dir)? {
            let p = child(&dir, &e.raw_name);
            let n = format!("{name}/{}", e.name);
            let mode = e.mode.map(|m| m & 0o7777).unwrap_or(0o644);
            let mtime = e
                .mtime_ns
                .map(|t| (t / 1_000_000_000).max(0) as u64)
                .unwrap_or(0);
            match e.kind {
                EntryKind::Dir => stack.push((p, n)),
                EntryKind::File => {
                    let mut h = tar::Header::new_gnu();
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_mode(mode);
                    h.set_mtime(mtime);
                    h.set_size(e.size);
                    let reader = fs.read_file(&p).map_err(fs_err)?;
                    tar.append_data(&mut h, n, reader).map_err(internal)?;
                }
                EntryKind::Symlink => {
                    let target = fs.read_link(&p).map_err(fs_err)?;
                    let mut h = tar::Header::new_gnu();
                    h.set_entry_type(tar::EntryType::Symlink);
                    h.set_mode(0o777);
                    h.set_mtime(mtime);
                    h.set_size(0);
                    tar.append_link(&mut h, n, String::from_utf8_lossy(&target).as_ref())
                        .map_err(internal)?;
                }
                EntryKind::Other => {}
            }
        }
    }
    let gz = tar.into_inner().map_err(internal)?;
    gz.finish().map_err(internal)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_paths_are_cleaned() {
        assert_eq!(normalize("").unwrap(), b"/");
        assert_eq!(normalize("/a//b/").unwrap(), b"/a/b");
        assert!(normalize("/a/../b").is_err());
        assert!(normalize("./a").is_err());
        assert_eq!(child(b"/", b"x"), b"/x");
        assert_eq!(child(b"/a", b"x"), b"/a/x");
    }
}
