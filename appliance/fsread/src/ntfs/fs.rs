//! Browsing NTFS: paths are looked up case-insensitively through the directory indexes
//! (with the volume's `$UpCase` table), listings hide the metadata files and DOS aliases,
//! and reparse points that are links (symlinks, junctions, WSL links) show as links.

use std::io::SeekFrom;
use std::sync::Arc;

use ntfs::indexes::NtfsFileNameIndex;
use ntfs::structured_values::NtfsFileNamespace;
use ntfs::{Ntfs, NtfsAttributeFlags, NtfsAttributeType, NtfsFile, NtfsReadSeek, NtfsTime};

use crate::entry::{EntryKind, FileSystem, FsEntry, FsFile, FsKind, components, show};
use crate::error::{Error, Result};
use crate::source::{Cursor, ReadAt};

/// Records below this number are the volume's metadata files ($MFT ... $Extend and the
/// reserved ones); they are neither listed nor reachable by path.
const FIRST_USER_RECORD: u64 = 24;
const FILE_ATTRIBUTE_SYSTEM: u32 = 0x4;
const FILE_ATTRIBUTE_REPARSE_POINT: u32 = 0x400;
/// Interix (Services for Unix) symlinks, which ntfs-3g writes for targets that do not
/// exist: a system file holding this magic and the UTF-16 target.
const INTERIX_LINK_MAGIC: &[u8; 8] = b"IntxLNK\x01";
/// Reparse tags whose "name surrogate" bit is set point at another name: links.
const TAG_NAME_SURROGATE: u32 = 0x2000_0000;
const TAG_MOUNT_POINT: u32 = 0xA000_0003;
const TAG_SYMLINK: u32 = 0xA000_000C;
const TAG_LX_SYMLINK: u32 = 0xA000_001D;
const TAG_DEDUP: u32 = 0x8000_0013;
const TAG_WOF: u32 = 0x8000_0017;
/// A listing stops with an error past this many entries (a damaged index could loop).
const MAX_DIR_ENTRIES: usize = 10_000_000;
/// Windows caps reparse data at 16 KiB.
const MAX_REPARSE_BYTES: u64 = 16 * 1024;
/// 1601-01-01 to 1970-01-01 in 100 ns ticks.
const NT_EPOCH_OFFSET: i128 = 116_444_736_000_000_000;

/// An NTFS volume opened on a byte source.
pub(crate) struct NtfsFs {
    src: Arc<dyn ReadAt>,
    ntfs: Ntfs,
}

/// What one file's metadata says about how to read it.
struct Facts {
    entry: FsEntry,
    reparse_tag: Option<u32>,
}

impl NtfsFs {
    pub(crate) fn open(src: Arc<dyn ReadAt>) -> Result<NtfsFs> {
        let mut cursor = Cursor::new(&*src);
        let mut ntfs = Ntfs::new(&mut cursor).map_err(|e| Error::ntfs("boot sector", e))?;
        ntfs.read_upcase_table(&mut cursor)
            .map_err(|e| Error::ntfs("$UpCase", e))?;
        drop(cursor);
        Ok(NtfsFs { src, ntfs })
    }

    fn cursor(&self) -> Cursor<'_> {
        Cursor::new(&*self.src)
    }

    /// The file at `path` and its facts. Links are not followed.
    fn resolve(&self, path: &[u8]) -> Result<(NtfsFile<'_>, Facts)> {
        let parts = components(path)?;
        let mut c = self.cursor();
        let err = |e: ntfs::NtfsError| Error::ntfs(show(path), e);
        let mut file = self.ntfs.root_directory(&mut c).map_err(err)?;
        let mut facts = self.facts(&mut c, &file, String::new())?;
        for (depth, part) in parts.iter().enumerate() {
            let name = std::str::from_utf8(part).map_err(|_| Error::InvalidPath {
                path: show(path),
                reason: "NTFS names are Unicode: the path must be UTF-8",
            })?;
            if facts.entry.kind != EntryKind::Dir {
                return Err(Error::NotADirectory {
                    path: show(&parts[..depth].join(&b'/')),
                });
            }
            let not_found = || Error::NotFound { path: show(path) };
            let (next, next_name) = {
                let index = file.directory_index(&mut c).map_err(err)?;
                let mut finder = index.finder();
                let entry = NtfsFileNameIndex::find(&mut finder, &self.ntfs, &mut c, name)
                    .ok_or_else(not_found)?
                    .map_err(err)?;
                if entry.file_reference().file_record_number() < FIRST_USER_RECORD {
                    return Err(not_found());
                }
                let key = entry.key().ok_or_else(not_found)?.map_err(err)?;
                let stored_name = key.name().to_string_lossy();
                (entry.to_file(&self.ntfs, &mut c).map_err(err)?, stored_name)
            };
            file = next;
            facts = self.facts(&mut c, &file, next_name)?;
        }
        Ok((file, facts))
    }

    fn facts(&self, c: &mut Cursor<'_>, file: &NtfsFile<'_>, name: String) -> Result<Facts> {
        let context = || format!("file record {} ({name})", file.file_record_number());
        let info = file.info().map_err(|e| Error::ntfs(context(), e))?;
        let attributes = info.file_attributes().bits();
        let reparse_tag = if attributes & FILE_ATTRIBUTE_REPARSE_POINT != 0 {
            self.reparse_data(c, file)?
                .filter(|data| data.len() >= 4)
                .map(|data| u32::from_le_bytes([data[0], data[1], data[2], data[3]]))
        } else {
            None
        };
        let mut kind = match reparse_tag {
            Some(tag) if tag & TAG_NAME_SURROGATE != 0 => EntryKind::Symlink,
            _ if file.is_directory() => EntryKind::Dir,
            _ => EntryKind::File,
        };
        let size = match kind {
            EntryKind::File => match file.data(c, "") {
                Some(item) => {
                    let item = item.map_err(|e| Error::ntfs(context(), e))?;
                    item.to_attribute()
                        .map_err(|e| Error::ntfs(context(), e))?
                        .value_length()
                }
                None => 0,
            },
            _ => 0,
        };
        if kind == EntryKind::File
            && attributes & FILE_ATTRIBUTE_SYSTEM != 0
            && (8..=MAX_REPARSE_BYTES).contains(&size)
        {
            let mut magic = [0u8; 8];
            if read_data(c, file, 0, &mut magic).map_err(|e| Error::ntfs(context(), e))? == 8
                && &magic == INTERIX_LINK_MAGIC
            {
                kind = EntryKind::Symlink;
            }
        }
        Ok(Facts {
            entry: FsEntry {
                raw_name: name.clone().into_bytes(),
                name,
                kind,
                size,
                id: file.file_record_number(),
                links: u32::from(file.hard_link_count()),
                mode: None,
                uid: None,
                gid: None,
                mtime_ns: unix_ns(info.modification_time()),
                ctime_ns: unix_ns(info.mft_record_modification_time()),
                atime_ns: unix_ns(info.access_time()),
                btime_ns: unix_ns(info.creation_time()),
                ntfs_attributes: Some(attributes),
            },
            reparse_tag,
        })
    }

    /// The raw `$REPARSE_POINT` value, if the file has one.
    fn reparse_data(&self, c: &mut Cursor<'_>, file: &NtfsFile<'_>) -> Result<Option<Vec<u8>>> {
        let context = || format!("reparse point of file record {}", file.file_record_number());
        let mut attributes = file.attributes();
        while let Some(item) = attributes.next(c) {
            let item = item.map_err(|e| Error::ntfs(context(), e))?;
            let attribute = item.to_attribute().map_err(|e| Error::ntfs(context(), e))?;
            // Attribute types this parser does not know are skipped, not fatal.
            if attribute.ty().ok() != Some(NtfsAttributeType::ReparsePoint) {
                continue;
            }
            let len = attribute.value_length();
            if len > MAX_REPARSE_BYTES {
                return Err(Error::corrupt(
                    "NTFS reparse point",
                    format!("{} of {len} bytes", context()),
                ));
            }
            let mut value = attribute.value(c).map_err(|e| Error::ntfs(context(), e))?;
            let mut data = vec![0u8; len as usize];
            value
                .read_exact(c, &mut data)
                .map_err(|e| Error::ntfs(context(), e))?;
            return Ok(Some(data));
        }
        Ok(None)
    }
}

fn unix_ns(time: NtfsTime) -> Option<i64> {
    let ticks = i128::from(time.nt_timestamp()) - NT_EPOCH_OFFSET;
    i64::try_from(ticks * 100).ok()
}

fn le16(b: &[u8], at: usize) -> Option<usize> {
    Some(u16::from_le_bytes([*b.get(at)?, *b.get(at + 1)?]) as usize)
}

/// The target named by a link's reparse data: the print name if there is one, else the
/// substitute name without its `\??\` prefix. Windows separators are kept.
fn link_target(data: &[u8]) -> Option<Vec<u8>> {
    let tag = u32::from_le_bytes(data.get(0..4)?.try_into().ok()?);
    let body_len = le16(data, 4)?;
    let body = data.get(8..8 + body_len)?;
    let buffer_at = match tag {
        TAG_SYMLINK => 12,
        TAG_MOUNT_POINT => 8,
        TAG_LX_SYMLINK => return Some(body.get(4..)?.to_vec()),
        _ => return None,
    };
    let utf16 = |offset: usize, len: usize| -> Option<String> {
        let bytes = body.get(buffer_at + offset..buffer_at + offset + len)?;
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        Some(String::from_utf16_lossy(&units))
    };
    let substitute = utf16(le16(body, 0)?, le16(body, 2)?)?;
    let print = utf16(le16(body, 4)?, le16(body, 6)?)?;
    let target = if print.is_empty() {
        substitute
            .strip_prefix(r"\??\")
            .unwrap_or(&substitute)
            .to_string()
    } else {
        print
    };
    Some(target.into_bytes())
}

impl FileSystem for NtfsFs {
    fn kind(&self) -> FsKind {
        FsKind::Ntfs
    }

    fn list_dir(&self, path: &[u8]) -> Result<Vec<FsEntry>> {
        let (dir, facts) = self.resolve(path)?;
        if facts.entry.kind != EntryKind::Dir {
            return Err(Error::NotADirectory { path: show(path) });
        }
        let err = |e: ntfs::NtfsError| Error::ntfs(show(path), e);
        let mut c = self.cursor();
        let index = dir.directory_index(&mut c).map_err(err)?;
        let mut entries = index.entries();
        let mut out = Vec::new();
        while let Some(entry) = entries.next(&mut c) {
            let entry = entry.map_err(err)?;
            if out.len() >= MAX_DIR_ENTRIES {
                return Err(Error::corrupt(
                    "NTFS directory index",
                    format!("{}: more than {MAX_DIR_ENTRIES} entries", show(path)),
                ));
            }
            if entry.file_reference().file_record_number() < FIRST_USER_RECORD {
                continue;
            }
            let Some(key) = entry.key() else { continue };
            let key = key.map_err(err)?;
            if key.namespace() == NtfsFileNamespace::Dos {
                continue;
            }
            let name = key.name().to_string_lossy();
            let file = entry.to_file(&self.ntfs, &mut c).map_err(err)?;
            out.push(self.facts(&mut c, &file, name)?.entry);
        }
        Ok(out)
    }

    fn stat(&self, path: &[u8]) -> Result<FsEntry> {
        Ok(self.resolve(path)?.1.entry)
    }

    fn read_link(&self, path: &[u8]) -> Result<Vec<u8>> {
        let (file, facts) = self.resolve(path)?;
        if facts.entry.kind != EntryKind::Symlink {
            return Err(Error::NotASymlink { path: show(path) });
        }
        let mut c = self.cursor();
        if facts.reparse_tag.is_none() {
            // An Interix link: the target follows the magic as UTF-16.
            let mut data = vec![0u8; facts.entry.size as usize];
            let n =
                read_data(&mut c, &file, 0, &mut data).map_err(|e| Error::ntfs(show(path), e))?;
            let units: Vec<u16> = data[..n]
                .get(8..)
                .unwrap_or(&[])
                .chunks_exact(2)
                .map(|u| u16::from_le_bytes([u[0], u[1]]))
                .collect();
            return Ok(String::from_utf16_lossy(&units).into_bytes());
        }
        let data = self.reparse_data(&mut c, &file)?.unwrap_or_default();
        link_target(&data).ok_or_else(|| Error::Unsupported {
            path: show(path),
            what: format!("reparse tag {:#010x}", facts.reparse_tag.unwrap_or(0)),
        })
    }

    fn open(&self, path: &[u8]) -> Result<Box<dyn FsFile + '_>> {
        let (file, facts) = self.resolve(path)?;
        let unsupported = |what: &str| Error::Unsupported {
            path: show(path),
            what: what.to_string(),
        };
        match facts.entry.kind {
            EntryKind::Dir => return Err(Error::IsADirectory { path: show(path) }),
            EntryKind::Symlink => return Err(unsupported("reading the contents of a link")),
            _ => {}
        }
        match facts.reparse_tag {
            Some(TAG_WOF) => return Err(unsupported("a Windows Overlay (WOF) compressed file")),
            Some(TAG_DEDUP) => return Err(unsupported("a deduplicated file")),
            _ => {}
        }
        let mut c = self.cursor();
        if let Some(item) = file.data(&mut c, "") {
            let err = |e: ntfs::NtfsError| Error::ntfs(show(path), e);
            let item = item.map_err(err)?;
            let flags = item.to_attribute().map_err(err)?.flags();
            if flags.contains(NtfsAttributeFlags::COMPRESSED) {
                return Err(unsupported("NTFS compression"));
            }
            if flags.contains(NtfsAttributeFlags::ENCRYPTED) {
                return Err(unsupported("an EFS encrypted file"));
            }
        }
        Ok(Box::new(NtfsOpenFile {
            fs: self,
            file,
            entry: facts.entry,
            path: show(path),
        }))
    }
}

struct NtfsOpenFile<'a> {
    fs: &'a NtfsFs,
    file: NtfsFile<'a>,
    entry: FsEntry,
    path: String,
}

impl FsFile for NtfsOpenFile<'_> {
    fn entry(&self) -> &FsEntry {
        &self.entry
    }

    fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<usize> {
        let mut c = self.fs.cursor();
        read_data(&mut c, &self.file, offset, buf).map_err(|e| Error::ntfs(self.path.clone(), e))
    }
}

/// Reads a file's unnamed data stream from `offset`; fewer bytes only at its end. Sparse
/// runs read as zeros.
fn read_data(
    c: &mut Cursor<'_>,
    file: &NtfsFile<'_>,
    offset: u64,
    buf: &mut [u8],
) -> std::result::Result<usize, ntfs::NtfsError> {
    let Some(item) = file.data(c, "") else {
        return Ok(0);
    };
    let item = item?;
    let attribute = item.to_attribute()?;
    let mut value = attribute.value(c)?;
    if offset >= value.len() || buf.is_empty() {
        return Ok(0);
    }
    value.seek(c, SeekFrom::Start(offset))?;
    let want = (value.len() - offset).min(buf.len() as u64) as usize;
    let mut done = 0;
    while done < want {
        let n = value.read(c, &mut buf[done..want])?;
        if n == 0 {
            break;
        }
        done += n;
    }
    Ok(done)
}
