//! Image sources: what a selection of an image plan names, opened for reading.
//!
//! A selection is one of
//! - `system-disk`: the whole disk holding `/`;
//! - a block device path (`/dev/sda`, `/dev/nvme0n1p2`, `/dev/mapper/vg-lv`): a logical
//!   volume is read through an LVM snapshot the agent creates and removes;
//! - a regular file (a raw disk image; its holes are never read);
//! - an NBD address, `nbd+unix:///EXPORT?socket=PATH` or `nbd://HOST[:PORT]/EXPORT`, with an
//!   optional `bitmap=NAME` parameter naming a dirty bitmap the server exports
//!   (`qemu-nbd -B NAME`): then only changed blocks are read;
//! - on Windows, a volume (`C:`, `C:\`, `\\.\C:`), read from its VSS snapshot, or a whole
//!   disk (`\\.\PhysicalDrive0`), each of its volumes read from its snapshot (see
//!   `windows`); a Windows file path (`D:\vm\disk.img`) is a raw image file.
//!
//! Parsing is the same on every system (so its units run anywhere); opening refuses the
//! forms the running system cannot read.

use abri_store::FileState;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

#[cfg(unix)]
use super::devices;
#[cfg(unix)]
use super::lvm::LvmSnapshot;
use super::ranges::Ranges;
use crate::progress::Counters;

/// Random-access reads from something imaged.
pub trait BlockSource: Send + Sync {
    /// Size in bytes.
    fn size(&self) -> u64;
    /// Fills `buf` from `offset` (the whole of it, or an error).
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// The ranges that hold data as far as the source knows (file extents, NBD
    /// allocation); `None` when it cannot tell (everything may hold data).
    fn allocated(&self) -> io::Result<Option<Ranges>> {
        Ok(None)
    }
    /// The ranges changed since the previous backup (a dirty bitmap), when tracked.
    fn changed(&self) -> io::Result<Option<Ranges>> {
        Ok(None)
    }
    /// How allocation was learnt, for the snapshot's `read` field (`allocated` or `all`).
    fn allocation_method(&self) -> &'static str {
        "all"
    }
    /// An image file's state when it was opened (to skip reading it when unchanged);
    /// `None` for devices and exports.
    fn file_state(&self) -> Option<FileState> {
        None
    }
}

/// A selection, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    SystemDisk,
    Path(PathBuf),
    Nbd {
        address: String,
        bitmap: Option<String>,
    },
    /// A Windows volume by drive letter (upper case).
    Volume(char),
    /// A Windows disk by number (`\\.\PhysicalDriveN`).
    Disk(u32),
}

impl Selection {
    pub fn parse(text: &str) -> Result<Selection, String> {
        let text = text.trim();
        if text == "system-disk" {
            return Ok(Selection::SystemDisk);
        }
        if text.starts_with("nbd://") || text.starts_with("nbd+unix://") {
            let (base, query) = text.split_once('?').unwrap_or((text, ""));
            let mut bitmap = None;
            let mut kept = Vec::new();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                match pair.split_once('=') {
                    Some(("bitmap", name)) if !name.is_empty() => bitmap = Some(name.to_string()),
                    _ => kept.push(pair),
                }
            }
            let address = if kept.is_empty() {
                base.to_string()
            } else {
                format!("{base}?{}", kept.join("&"))
            };
            return Ok(Selection::Nbd { address, bitmap });
        }
        if text.starts_with('/') {
            return Ok(Selection::Path(PathBuf::from(text)));
        }
        if let Some(sel) = parse_windows(text)? {
            return Ok(sel);
        }
        Err(format!(
            "image source {text:?}: expected system-disk, an absolute device or file path, a \
             Windows volume (C:) or disk (\\\\.\\PhysicalDrive0), or an nbd:// or nbd+unix:// \
             address"
        ))
    }
}

/// The Windows forms: `C:`, `C:\`, `\\.\C:`, `\\?\C:` (a volume), `\\.\PhysicalDriveN`
/// (a disk), `C:\dir\disk.img` (a file). `Ok(None)` when `text` is none of them.
fn parse_windows(text: &str) -> Result<Option<Selection>, String> {
    let device = text
        .strip_prefix(r"\\.\")
        .or_else(|| text.strip_prefix(r"\\?\"));
    let rest = device.unwrap_or(text);
    let b = rest.as_bytes();
    let drive = b.len() >= 2 && b[0].is_ascii_alphabetic() && b[1] == b':';
    if drive {
        let letter = char::from(b[0].to_ascii_uppercase());
        let tail = &rest[2..];
        if tail.is_empty() || tail == "\\" || tail == "/" {
            return Ok(Some(Selection::Volume(letter)));
        }
        let verbatim = text.starts_with(r"\\?\");
        if (device.is_none() || verbatim) && (tail.starts_with('\\') || tail.starts_with('/')) {
            return Ok(Some(Selection::Path(PathBuf::from(text))));
        }
        return Err(format!(
            "image source {text:?}: a volume is written C: and a file C:\\dir\\disk.img"
        ));
    }
    if let Some(dev) = device {
        let lower = dev.to_ascii_lowercase();
        if let Some(n) = lower.strip_prefix("physicaldrive") {
            let digits = !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit());
            return match n.parse::<u32>() {
                Ok(n) if digits => Ok(Some(Selection::Disk(n))),
                _ => Err(format!(
                    "image source {text:?}: a disk is written \\\\.\\PhysicalDrive0"
                )),
            };
        }
        return Err(format!(
            "image source {text:?}: only volumes (\\\\.\\C:) and disks \
             (\\\\.\\PhysicalDrive0) are supported as Windows devices"
        ));
    }
    Ok(None)
}

/// An opened source with its catalog name and what must be undone after the backup.
pub struct OpenedSource {
    /// Name of the image in the snapshot.
    pub name: String,
    /// The selection as the snapshot records it.
    pub description: String,
    pub reader: Box<dyn BlockSource>,
    /// What is read instead of the live data (an LVM or VSS snapshot), kept until the
    /// backup ends and removed when dropped.
    pub snapshot: Option<Box<dyn std::any::Any>>,
    /// Something the job log should say (e.g. read without a snapshot).
    pub notes: Vec<String>,
    /// Read while in use, without a snapshot (a block device that is not an LVM volume,
    /// or one whose snapshot failed): the backup is marked "without snapshot".
    pub live: bool,
}

/// Opens every selection of a backup (on Windows, with one VSS snapshot set for all the
/// volumes they touch).
pub fn open_all(
    selections: &[Selection],
    job_tag: &str,
    counters: &Counters,
) -> io::Result<Vec<OpenedSource>> {
    #[cfg(windows)]
    {
        let _ = job_tag;
        super::windows::open_all(selections, counters)
    }
    #[cfg(unix)]
    {
        let _ = counters;
        selections.iter().map(|s| open(s, job_tag)).collect()
    }
}

/// Opens a selection.
#[cfg(unix)]
pub fn open(selection: &Selection, job_tag: &str) -> io::Result<OpenedSource> {
    match selection {
        Selection::SystemDisk => {
            let disk = devices::system_disk()?;
            let mut opened = open_path(&disk, job_tag)?;
            opened.description = format!("system-disk ({})", disk.display());
            Ok(opened)
        }
        Selection::Path(p) => open_path(p, job_tag),
        Selection::Nbd { address, bitmap } => super::nbd::open(address, bitmap.as_deref()),
        Selection::Volume(_) | Selection::Disk(_) => Err(io::Error::other(
            "Windows volumes and disks can only be imaged by the Windows agent",
        )),
    }
}

/// A raw image file (a regular file; holes are not read).
pub fn open_file(path: &Path) -> io::Result<OpenedSource> {
    let named = |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let meta = std::fs::metadata(path).map_err(named)?;
    if !meta.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    let file = File::open(path).map_err(named)?;
    Ok(OpenedSource {
        name: name_for_path(path),
        description: path.display().to_string(),
        reader: Box::new(FileSource::new(file, true)?),
        snapshot: None,
        notes: Vec::new(),
        live: false,
    })
}

#[cfg(unix)]
fn open_path(path: &Path, job_tag: &str) -> io::Result<OpenedSource> {
    let meta = std::fs::metadata(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    if meta.is_file() {
        return open_file(path);
    }
    let name = name_for_path(path);
    let mut notes = Vec::new();
    if !devices::is_block_device(path) {
        return Err(io::Error::other(format!(
            "{} is neither a block device nor a regular file",
            path.display()
        )));
    }
    let mut lvm = None;
    let mut read_path = path.to_path_buf();
    match LvmSnapshot::create_if_lvm(path, job_tag) {
        Ok(Some(snap)) => {
            notes.push(format!(
                "read {} through the LVM snapshot {}",
                path.display(),
                snap.path().display()
            ));
            read_path = snap.path().to_path_buf();
            lvm = Some(snap);
        }
        Ok(None) => {}
        Err(e) => notes.push(format!(
            "{} is an LVM volume but no snapshot could be made ({e}): read live, without \
             snapshot",
            path.display()
        )),
    }
    let file = File::open(&read_path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", read_path.display())))?;
    let live = lvm.is_none();
    if live {
        notes.push(format!(
            "{} is read while in use, without a snapshot: take it from a snapshot (LVM) for \
             a consistent copy",
            path.display()
        ));
    }
    Ok(OpenedSource {
        name,
        description: path.display().to_string(),
        reader: Box::new(FileSource::new(file, false)?),
        snapshot: lvm.map(|s| Box::new(s) as Box<dyn std::any::Any>),
        notes,
        live,
    })
}

/// An image name from a path: `/dev/sda` → `sda`, `/dev/vg0/root` → `vg0-root`,
/// `/srv/vm/disk.img` → `disk.img`.
pub fn name_for_path(path: &Path) -> String {
    let text = path.to_string_lossy();
    let raw = if let Some(rest) = text.strip_prefix("/dev/mapper/") {
        rest.to_string()
    } else if let Some(rest) = text.strip_prefix("/dev/") {
        rest.replace('/', "-")
    } else {
        // The last component, whichever separator the path uses (`D:\vm\disk.img` is
        // parsed the same on every system).
        text.rsplit(['/', '\\'])
            .find(|c| !c.is_empty())
            .map(String::from)
            .unwrap_or_else(|| "image".into())
    };
    sanitize_name(&raw)
}

/// Keeps `A-Z a-z 0-9 . _ -`, replaces the rest with `_`, never starts with '.', 1–64 long.
pub fn sanitize_name(raw: &str) -> String {
    let mut s: String = raw
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .collect();
    while s.starts_with('.') {
        s.remove(0);
    }
    s.truncate(60);
    if s.is_empty() { "image".into() } else { s }
}

/// A regular file or a block device.
pub struct FileSource {
    file: File,
    size: u64,
    regular: bool,
    state: Option<FileState>,
}

impl FileSource {
    pub fn new(file: File, regular: bool) -> io::Result<Self> {
        #[cfg(unix)]
        let size = devices::size_of(&file)?;
        #[cfg(not(unix))]
        let size = file.metadata()?.len();
        #[cfg(unix)]
        let state = if regular {
            use std::os::unix::fs::MetadataExt;
            let m = file.metadata()?;
            Some(FileState {
                size: m.size(),
                mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
                ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
                inode: m.ino(),
            })
        } else {
            None
        };
        #[cfg(not(unix))]
        let state = None;
        Ok(FileSource {
            file,
            size,
            regular,
            state,
        })
    }
}

impl BlockSource for FileSource {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        read_exact_at(&self.file, buf, offset)
    }

    fn allocated(&self) -> io::Result<Option<Ranges>> {
        if !self.regular {
            return Ok(None);
        }
        let mut out = Vec::new();
        let mut pos = 0;
        while let Some((start, end)) =
            crate::platform::next_data_region(&self.file, pos, self.size)?
        {
            out.push(start..end);
            pos = end;
        }
        Ok(Some(Ranges::from_unsorted(out)))
    }

    fn changed(&self) -> io::Result<Option<Ranges>> {
        Ok(None)
    }

    fn allocation_method(&self) -> &'static str {
        if self.regular { "allocated" } else { "all" }
    }

    fn file_state(&self) -> Option<FileState> {
        self.state
    }
}

/// Fills `buf` from `offset` of `file` (positional: the file is shared between threads).
pub fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::read_exact_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let (mut done, mut buf) = (0u64, buf);
        while !buf.is_empty() {
            let n = std::os::windows::fs::FileExt::seek_read(file, buf, offset + done)?;
            if n == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    format!("read past the end at {}", offset + done),
                ));
            }
            buf = &mut buf[n..];
            done += n as u64;
        }
        Ok(())
    }
}

/// Writes all of `buf` at `offset` of `file` (positional).
pub fn write_all_at(file: &File, buf: &[u8], offset: u64) -> io::Result<()> {
    #[cfg(unix)]
    {
        std::os::unix::fs::FileExt::write_all_at(file, buf, offset)
    }
    #[cfg(windows)]
    {
        let (mut done, mut buf) = (0u64, buf);
        while !buf.is_empty() {
            let n = std::os::windows::fs::FileExt::seek_write(file, buf, offset + done)?;
            if n == 0 {
                return Err(io::Error::from(io::ErrorKind::WriteZero));
            }
            buf = &buf[n..];
            done += n as u64;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selections_parse() {
        assert_eq!(
            Selection::parse("system-disk").unwrap(),
            Selection::SystemDisk
        );
        assert_eq!(
            Selection::parse("/dev/sda").unwrap(),
            Selection::Path("/dev/sda".into())
        );
        assert_eq!(
            Selection::parse("nbd+unix:///vm1?socket=/run/vm1.sock&bitmap=b0").unwrap(),
            Selection::Nbd {
                address: "nbd+unix:///vm1?socket=/run/vm1.sock".into(),
                bitmap: Some("b0".into())
            }
        );
        assert_eq!(
            Selection::parse("nbd://10.0.0.2/disk").unwrap(),
            Selection::Nbd {
                address: "nbd://10.0.0.2/disk".into(),
                bitmap: None
            }
        );
        for bad in ["", "sda", "http://x"] {
            assert!(Selection::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn windows_selections_parse() {
        for vol in ["C:", "c:", r"C:\", "C:/", r"\\.\C:", r"\\?\c:", r"\\.\C:\"] {
            assert_eq!(
                Selection::parse(vol).unwrap(),
                Selection::Volume('C'),
                "{vol}"
            );
        }
        assert_eq!(
            Selection::parse(r"\\.\PhysicalDrive0").unwrap(),
            Selection::Disk(0)
        );
        assert_eq!(
            Selection::parse(r"\\.\physicaldrive12").unwrap(),
            Selection::Disk(12)
        );
        assert_eq!(
            Selection::parse(r"D:\vm\disk.img").unwrap(),
            Selection::Path(r"D:\vm\disk.img".into())
        );
        assert_eq!(
            Selection::parse(r"\\?\D:\vm\disk.img").unwrap(),
            Selection::Path(r"\\?\D:\vm\disk.img".into())
        );
        for bad in [
            r"\\.\PhysicalDrive",
            r"\\.\PhysicalDrive+1",
            r"\\.\PhysicalDrive1x",
            r"\\.\CdRom0",
            r"\\.\C:\Windows",
            "C:disk.img",
            "1:",
        ] {
            assert!(Selection::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_come_from_paths() {
        assert_eq!(name_for_path(Path::new("/dev/sda")), "sda");
        assert_eq!(name_for_path(Path::new("/dev/vg0/root")), "vg0-root");
        assert_eq!(name_for_path(Path::new("/dev/mapper/vg0-root")), "vg0-root");
        assert_eq!(name_for_path(Path::new("/srv/vm/disk 1.img")), "disk_1.img");
        assert_eq!(name_for_path(Path::new("/srv/.hidden")), "hidden");
        assert_eq!(name_for_path(Path::new(r"Z:\tmp\vm\disk.img")), "disk.img");
        abri_store::validate_image_name(&name_for_path(Path::new("/x/é.img"))).unwrap();
    }

    // Wine cannot say which ranges of a Linux file are allocated.
    #[cfg(unix)]
    #[test]
    fn a_sparse_file_reports_its_data_regions() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("disk.img");
        let f = File::create(&p).unwrap();
        f.set_len(8 << 20).unwrap();
        write_all_at(&f, &[7u8; 4096], 3 << 20).unwrap();
        f.sync_all().unwrap();
        let src = FileSource::new(File::open(&p).unwrap(), true).unwrap();
        assert_eq!(src.size(), 8 << 20);
        let alloc = src.allocated().unwrap().unwrap();
        assert!(alloc.len_bytes() < 1 << 20, "{alloc:?}");
        assert!(alloc.cursor().touches(3 << 20, (3 << 20) + 4096));
        let mut buf = [0u8; 4];
        src.read_at(3 << 20, &mut buf).unwrap();
        assert_eq!(buf, [7; 4]);
    }
}
