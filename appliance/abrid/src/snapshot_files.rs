//! Files and folders inside a snapshot, for the console: list a folder, read a file, and
//! write a file or a folder as `.tar.gz` or `.zip`. Every chunk read is verified by the store
//! (decoded and re-hashed); a damaged chunk stops the download with an error instead of
//! handing out wrong bytes.

use crate::errors::{AppError, AppResult};
use abri_store::{CatalogReader, ChunkStore, Digest, Entry, EntryKind};
use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::sync::Arc;

/// One item of a folder listing.
#[derive(Clone, Debug, serde::Serialize)]
pub struct DirItem {
    pub name: String,
    pub path: String,
    pub kind: &'static str,
    pub size: u64,
    pub mtime: i64,
}

fn kind_name(kind: &EntryKind) -> &'static str {
    match kind {
        EntryKind::File | EntryKind::HardLink { .. } => "file",
        EntryKind::Dir => "dir",
        EntryKind::Symlink { .. } => "symlink",
        EntryKind::Fifo => "fifo",
        EntryKind::Socket => "socket",
        EntryKind::CharDevice { .. } | EntryKind::BlockDevice { .. } => "device",
    }
}

/// A path as typed in a URL: no leading or trailing slash; empty is the snapshot's root.
pub fn normalize(path: &str) -> AppResult<Vec<u8>> {
    let trimmed = path.trim_matches('/');
    if !trimmed.is_empty() {
        abri_store::validate_path(trimmed.as_bytes())?;
    }
    Ok(trimmed.as_bytes().to_vec())
}

fn is_under(path: &[u8], root: &[u8]) -> bool {
    root.is_empty()
        || path == root
        || (path.starts_with(root) && path.get(root.len()) == Some(&b'/'))
}

fn is_child(path: &[u8], dir: &[u8]) -> bool {
    let rest = if dir.is_empty() {
        path
    } else if path.starts_with(dir) && path.get(dir.len()) == Some(&b'/') {
        &path[dir.len() + 1..]
    } else {
        return false;
    };
    !rest.is_empty() && !rest.contains(&b'/')
}

/// The direct children of `dir`, folders first, then by name.
pub fn list_dir(store: &ChunkStore, catalog: Vec<Digest>, dir: &[u8]) -> AppResult<Vec<DirItem>> {
    let mut items = Vec::new();
    for entry in CatalogReader::new(store, catalog) {
        let entry = entry?;
        if is_child(&entry.path, dir) {
            let path = String::from_utf8_lossy(&entry.path).into_owned();
            items.push(DirItem {
                name: path.rsplit('/').next().unwrap_or_default().to_string(),
                kind: kind_name(&entry.kind),
                size: entry.size,
                mtime: entry.mtime_ns.div_euclid(1_000_000_000),
                path,
            });
        }
    }
    items.sort_by(|a, b| (a.kind != "dir", &a.name).cmp(&(b.kind != "dir", &b.name)));
    Ok(items)
}

/// The entry at `path`, if the snapshot has one.
pub fn find(store: &ChunkStore, catalog: Vec<Digest>, path: &[u8]) -> AppResult<Option<Entry>> {
    for entry in CatalogReader::new(store, catalog) {
        let entry = entry?;
        if entry.path == path {
            return Ok(Some(entry));
        }
    }
    Ok(None)
}

/// Reads a file's bytes from its extents; holes read as zeros.
pub struct FileReader {
    store: Arc<ChunkStore>,
    extents: Vec<abri_store::Extent>,
    size: u64,
    pos: u64,
    next_extent: usize,
    cached: Option<(Digest, Arc<Vec<u8>>)>,
}

impl FileReader {
    pub fn new(store: Arc<ChunkStore>, entry: &Entry) -> Self {
        let mut extents = entry.extents.clone();
        extents.sort_by_key(|e| e.file_offset);
        FileReader {
            store,
            extents,
            size: entry.size,
            pos: 0,
            next_extent: 0,
            cached: None,
        }
    }

    fn chunk(&mut self, digest: Digest) -> io::Result<Arc<Vec<u8>>> {
        if let Some((d, data)) = &self.cached
            && *d == digest
        {
            return Ok(data.clone());
        }
        let data = Arc::new(self.store.read(&digest).map_err(io::Error::other)?);
        self.cached = Some((digest, data.clone()));
        Ok(data)
    }
}

impl Read for FileReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.size || buf.is_empty() {
            return Ok(0);
        }
        while let Some(e) = self.extents.get(self.next_extent) {
            if e.file_offset + u64::from(e.len) <= self.pos {
                self.next_extent += 1;
            } else {
                break;
            }
        }
        let remaining = self.size - self.pos;
        let n = match self.extents.get(self.next_extent).copied() {
            Some(e) if e.file_offset <= self.pos => {
                let data = self.chunk(e.digest)?;
                let skip = (self.pos - e.file_offset) as usize;
                let start = e.chunk_offset as usize + skip;
                let end = e.chunk_offset as usize + e.len as usize;
                let piece = data.get(start..end).ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("extent past the end of chunk {}", e.digest),
                    )
                })?;
                let n = piece.len().min(buf.len()).min(remaining as usize);
                buf[..n].copy_from_slice(&piece[..n]);
                n
            }
            next => {
                // A hole up to the next extent (or the end of the file).
                let hole_end = next.map_or(self.size, |e| e.file_offset.min(self.size));
                let n = ((hole_end - self.pos) as usize).min(buf.len());
                buf[..n].fill(0);
                n
            }
        };
        self.pos += n as u64;
        Ok(n)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArchiveFormat {
    TarGz,
    Zip,
}

impl ArchiveFormat {
    pub fn parse(text: &str) -> AppResult<Self> {
        match text {
            "tar.gz" | "tgz" => Ok(ArchiveFormat::TarGz),
            "zip" => Ok(ArchiveFormat::Zip),
            other => Err(AppError::Invalid(format!(
                "format: {other:?} is not tar.gz or zip"
            ))),
        }
    }

    pub fn extension(self) -> &'static str {
        match self {
            ArchiveFormat::TarGz => "tar.gz",
            ArchiveFormat::Zip => "zip",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            ArchiveFormat::TarGz => "application/gzip",
            ArchiveFormat::Zip => "application/zip",
        }
    }
}

/// The name an entry gets inside an archive of `root`: relative to root's parent, so an
/// archive of `home/alice` holds `alice/...`.
fn archive_name(path: &[u8], root: &[u8]) -> String {
    let parent_len = root.iter().rposition(|b| *b == b'/').map_or(0, |i| i + 1);
    String::from_utf8_lossy(&path[parent_len..]).into_owned()
}

fn zip_time(mtime_ns: i64) -> zip::DateTime {
    let t = time::OffsetDateTime::from_unix_timestamp(mtime_ns.div_euclid(1_000_000_000))
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    zip::DateTime::from_date_and_time(
        t.year().clamp(1980, 2107) as u16,
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
    )
    .unwrap_or_default()
}

/// Writes every entry at or under `root` as an archive to `out`.
pub fn write_archive(
    store: Arc<ChunkStore>,
    catalog: Vec<Digest>,
    root: &[u8],
    format: ArchiveFormat,
    out: impl Write,
) -> AppResult<()> {
    let io_err = |e: io::Error| AppError::Internal(anyhow::anyhow!("writing the archive: {e}"));
    // Hard links whose first link is outside the selection are written as copies.
    let mut selected_files: HashMap<Vec<u8>, Entry> = HashMap::new();
    match format {
        ArchiveFormat::TarGz => {
            let gz = flate2::write::GzEncoder::new(out, flate2::Compression::fast());
            let mut tar = tar::Builder::new(gz);
            tar.follow_symlinks(false);
            for entry in CatalogReader::new(&*store, catalog) {
                let entry = entry?;
                if !is_under(&entry.path, root) {
                    continue;
                }
                let name = archive_name(&entry.path, root);
                let mut header = tar::Header::new_gnu();
                header.set_mode(entry.mode & 0o7777);
                header.set_uid(u64::from(entry.uid));
                header.set_gid(u64::from(entry.gid));
                header.set_mtime(entry.mtime_ns.div_euclid(1_000_000_000).max(0) as u64);
                if let Some(user) = &entry.user {
                    let _ = header.set_username(user);
                }
                if let Some(group) = &entry.group {
                    let _ = header.set_groupname(group);
                }
                match &entry.kind {
                    EntryKind::File => {
                        header.set_entry_type(tar::EntryType::Regular);
                        header.set_size(entry.size);
                        tar.append_data(&mut header, &name, FileReader::new(store.clone(), &entry))
                            .map_err(io_err)?;
                        selected_files.insert(entry.path.clone(), entry);
                    }
                    EntryKind::HardLink { target } => {
                        if is_under(target, root) {
                            header.set_entry_type(tar::EntryType::Link);
                            header.set_size(0);
                            tar.append_link(&mut header, &name, archive_name(target, root))
                                .map_err(io_err)?;
                        } else if let Some(first) = selected_files.get(target).cloned() {
                            header.set_entry_type(tar::EntryType::Regular);
                            header.set_size(first.size);
                            tar.append_data(
                                &mut header,
                                &name,
                                FileReader::new(store.clone(), &first),
                            )
                            .map_err(io_err)?;
                        }
                    }
                    EntryKind::Dir => {
                        header.set_entry_type(tar::EntryType::Directory);
                        header.set_size(0);
                        tar.append_data(&mut header, format!("{name}/"), io::empty())
                            .map_err(io_err)?;
                    }
                    EntryKind::Symlink { target } => {
                        header.set_entry_type(tar::EntryType::Symlink);
                        header.set_size(0);
                        tar.append_link(
                            &mut header,
                            &name,
                            String::from_utf8_lossy(target).as_ref(),
                        )
                        .map_err(io_err)?;
                    }
                    EntryKind::Fifo => {
                        header.set_entry_type(tar::EntryType::Fifo);
                        header.set_size(0);
                        tar.append_data(&mut header, &name, io::empty())
                            .map_err(io_err)?;
                    }
                    EntryKind::CharDevice { rdev } | EntryKind::BlockDevice { rdev } => {
                        let block = matches!(entry.kind, EntryKind::BlockDevice { .. });
                        header.set_entry_type(if block {
                            tar::EntryType::Block
                        } else {
                            tar::EntryType::Char
                        });
                        header.set_size(0);
                        let (major, minor) =
                            (nix::sys::stat::major(*rdev), nix::sys::stat::minor(*rdev));
                        let _ = header.set_device_major(major as u32);
                        let _ = header.set_device_minor(minor as u32);
                        tar.append_data(&mut header, &name, io::empty())
                            .map_err(io_err)?;
                    }
                    EntryKind::Socket => {}
                }
            }
            tar.into_inner()
                .and_then(|gz| gz.finish())
                .map_err(io_err)?;
        }
        ArchiveFormat::Zip => {
            let zip_err = |e: zip::result::ZipError| {
                AppError::Internal(anyhow::anyhow!("writing the archive: {e}"))
            };
            let mut zip = zip::ZipWriter::new_stream(out);
            for entry in CatalogReader::new(&*store, catalog) {
                let entry = entry?;
                if !is_under(&entry.path, root) {
                    continue;
                }
                let name = archive_name(&entry.path, root);
                let options = zip::write::SimpleFileOptions::default()
                    .unix_permissions(entry.mode & 0o7777)
                    .last_modified_time(zip_time(entry.mtime_ns))
                    .large_file(entry.size >= u64::from(u32::MAX));
                let content = match &entry.kind {
                    EntryKind::File => Some(entry.clone()),
                    EntryKind::HardLink { target } => selected_files.get(target).cloned(),
                    _ => None,
                };
                match (&entry.kind, content) {
                    (EntryKind::Dir, _) => zip.add_directory(name, options).map_err(zip_err)?,
                    (EntryKind::Symlink { target }, _) => zip
                        .add_symlink(name, String::from_utf8_lossy(target), options)
                        .map_err(zip_err)?,
                    (_, Some(file)) => {
                        let options = options
                            .compression_method(zip::CompressionMethod::Deflated)
                            .large_file(file.size >= u64::from(u32::MAX));
                        zip.start_file(name, options).map_err(zip_err)?;
                        io::copy(&mut FileReader::new(store.clone(), &file), &mut zip)
                            .map_err(io_err)?;
                        if matches!(entry.kind, EntryKind::File) {
                            selected_files.insert(entry.path.clone(), entry);
                        }
                    }
                    // Zip has no fifos, sockets or device nodes.
                    _ => {}
                }
            }
            zip.finish().map_err(zip_err)?;
        }
    }
    Ok(())
}

/// A `Write` that forwards bytes to an HTTP body through a bounded channel, so a download
/// of any size streams in constant memory from a blocking thread.
pub struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<axum::body::Bytes, io::Error>>,
    buf: Vec<u8>,
}

const WRITE_BUFFER: usize = 256 * 1024;

impl ChannelWriter {
    pub fn new(tx: tokio::sync::mpsc::Sender<Result<axum::body::Bytes, io::Error>>) -> Self {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(WRITE_BUFFER),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let bytes = axum::body::Bytes::from(std::mem::replace(
            &mut self.buf,
            Vec::with_capacity(WRITE_BUFFER),
        ));
        self.tx
            .blocking_send(Ok(bytes))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }

    /// Ends the body with an error, so the client sees a failed download, not a short file.
    pub fn fail(self, error: String) {
        let _ = self.tx.blocking_send(Err(io::Error::other(error)));
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= WRITE_BUFFER {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl Drop for ChannelWriter {
    fn drop(&mut self) {
        let _ = self.send();
    }
}

/// A streamed HTTP body produced by `produce` on a blocking thread.
pub fn streamed_body(
    produce: impl FnOnce(&mut ChannelWriter) -> AppResult<()> + Send + 'static,
) -> axum::body::Body {
    let (tx, rx) = tokio::sync::mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        let mut writer = ChannelWriter::new(tx);
        match produce(&mut writer) {
            Ok(()) => {
                let _ = writer.flush();
            }
            Err(e) => {
                tracing::warn!("download stopped: {e}");
                let _ = writer.flush();
                writer.fail(e.to_string());
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    axum::body::Body::from_stream(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use abri_store::{CatalogWriter, ChunkerParams, Extent, FilePacker, Packed};

    /// A store with a snapshot catalog of: dir `d`, file `d/a` (content + a hole), symlink
    /// `d/l`, hard link `d/h` to `d/a`, file `top`.
    fn fixture() -> (tempfile::TempDir, Arc<ChunkStore>, Vec<Digest>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            ChunkStore::create(&dir.path().join("s"))
                .unwrap()
                .with_reserve(0),
        );
        let params = ChunkerParams::new(64, 256, 1024).unwrap();
        let mut packer = FilePacker::new(store.key().clone(), params);
        let content: Vec<u8> = (0..3000u32).map(|i| (i % 251) as u8).collect();
        packer.begin_file(0).unwrap();
        packer.write(&content[..1000]).unwrap();
        packer.skip_hole(2000).unwrap();
        packer.write(&content[2000..]).unwrap();
        packer.end_file().unwrap();
        packer.begin_file(1).unwrap();
        packer.write(b"top").unwrap();
        packer.end_file().unwrap();
        packer.finish().unwrap();
        let mut files: HashMap<u64, (u64, Vec<Extent>)> = HashMap::new();
        while let Some(out) = packer.next_output() {
            match out {
                Packed::Chunk(c) => {
                    store
                        .insert_encoded(&c.digest, &abri_store::encode_chunk(&c.data, 1))
                        .unwrap();
                }
                Packed::File(f) => {
                    files.insert(f.id, (f.size, f.extents));
                }
            }
        }
        let mut catalog = CatalogWriter::new(store.key().clone(), params, 1);
        let mut d = Entry::new("d", EntryKind::Dir);
        d.mode = 0o40755;
        catalog.push(&d).unwrap();
        let mut a = Entry::new("d/a", EntryKind::File);
        a.mode = 0o100644;
        a.size = 3000;
        a.extents = files[&0].1.clone();
        catalog.push(&a).unwrap();
        let h = Entry::new(
            "d/h",
            EntryKind::HardLink {
                target: b"d/a".to_vec(),
            },
        );
        catalog.push(&h).unwrap();
        let l = Entry::new(
            "d/l",
            EntryKind::Symlink {
                target: b"a".to_vec(),
            },
        );
        catalog.push(&l).unwrap();
        let mut top = Entry::new("top", EntryKind::File);
        top.size = 3;
        top.extents = files[&1].1.clone();
        catalog.push(&top).unwrap();
        let finished = catalog.finish();
        for c in &finished.chunks {
            store.insert_encoded(&c.digest, &c.bytes).unwrap();
        }
        let mut expected = content.clone();
        expected[1000..2000].fill(0);
        (dir, store, finished.digests, expected)
    }

    #[test]
    fn lists_folders_and_reads_files_with_holes() {
        let (_d, store, catalog, expected) = fixture();
        let root = list_dir(&store, catalog.clone(), b"").unwrap();
        let names: Vec<&str> = root.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["d", "top"], "folders first");
        let inside = list_dir(&store, catalog.clone(), b"d").unwrap();
        assert_eq!(inside.len(), 3);
        let a = find(&store, catalog, b"d/a").unwrap().unwrap();
        let mut bytes = Vec::new();
        FileReader::new(store, &a).read_to_end(&mut bytes).unwrap();
        assert_eq!(bytes, expected);
    }

    #[test]
    fn tar_gz_holds_the_folder_with_links() {
        let (_d, store, catalog, expected) = fixture();
        let mut out = Vec::new();
        write_archive(store, catalog, b"d", ArchiveFormat::TarGz, &mut out).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&out[..]));
        let mut seen = HashMap::new();
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let kind = entry.header().entry_type();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            seen.insert(path, (kind, data));
        }
        assert_eq!(seen["d/a"].1, expected);
        assert_eq!(seen["d/h"].0, tar::EntryType::Link);
        assert_eq!(seen["d/l"].0, tar::EntryType::Symlink);
        assert!(!seen.contains_key("top"), "only the folder asked for");
    }

    #[test]
    fn zip_holds_the_snapshot() {
        let (_d, store, catalog, expected) = fixture();
        let mut out = Vec::new();
        write_archive(store, catalog, b"", ArchiveFormat::Zip, &mut out).unwrap();
        let mut zip = zip::ZipArchive::new(io::Cursor::new(out)).unwrap();
        let mut a = Vec::new();
        zip.by_name("d/a").unwrap().read_to_end(&mut a).unwrap();
        assert_eq!(a, expected);
        let mut h = Vec::new();
        zip.by_name("d/h").unwrap().read_to_end(&mut h).unwrap();
        assert_eq!(h, expected, "hard link written as a copy");
        let mut top = Vec::new();
        zip.by_name("top").unwrap().read_to_end(&mut top).unwrap();
        assert_eq!(top, b"top");
    }

    #[test]
    fn a_corrupt_chunk_fails_the_read() {
        let (_d, store, catalog, _) = fixture();
        let a = find(&store, catalog, b"d/a").unwrap().unwrap();
        let path = store.chunk_path(&a.extents[0].digest);
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        std::fs::write(&path, bytes).unwrap();
        let mut out = Vec::new();
        assert!(FileReader::new(store, &a).read_to_end(&mut out).is_err());
    }

    #[test]
    fn paths_from_urls_are_validated() {
        assert_eq!(normalize("/home/alice/").unwrap(), b"home/alice");
        assert_eq!(normalize("").unwrap(), b"");
        assert!(normalize("home/../etc").is_err());
    }
}
