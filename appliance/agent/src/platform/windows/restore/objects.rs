//! Creating what a catalog entry describes: folders, files with their data (a sparse file
//! stays sparse), hard links, and symbolic links or junctions. Fifos, sockets and device
//! nodes have no Windows counterpart and are skipped with a warning.

use abri_store::{ChunkSource, Entry, EntryKind};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::windows::fs::{FileExt, OpenOptionsExt};
use std::os::windows::io::AsRawHandle;
use std::path::Path;
use std::sync::atomic::Ordering;

use windows_sys::Win32::Storage::FileSystem as fs;
use windows_sys::Win32::System::IO::DeviceIoControl;
use windows_sys::Win32::System::Ioctl as ioctl;

use super::folders::open_dir;
use super::set_metadata::open_for_metadata;
use super::{OpenDir, Restorer};
use crate::platform::reparse::{self, Link};
use crate::platform::windows::wide;
use crate::platform::windows::win::check;
use crate::platform::winpath;
use crate::restore::{RestoreError, text};

impl<S: ChunkSource> Restorer<'_, S> {
    pub(super) fn create(&mut self, name: &[u8], entry: Entry) -> Result<(), RestoreError> {
        let path = self.place(name, &entry);
        let io_err = |p: &[u8]| {
            let path = text(p);
            move |source| RestoreError::Io { path, source }
        };
        match &entry.kind {
            EntryKind::Dir => {
                let created = match std::fs::create_dir(&path) {
                    Ok(()) => true,
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        match open_dir(&path, false) {
                            Ok(_) => false,
                            Err(_) => {
                                if !self.clear_place(&path, &entry)? {
                                    return Ok(());
                                }
                                std::fs::create_dir(&path).map_err(io_err(&entry.path))?;
                                true
                            }
                        }
                    }
                    Err(e) => return Err(io_err(&entry.path)(e)),
                };
                let apply = created || self.opts.overwrite;
                self.dirs.push(OpenDir {
                    catalog: entry.path.clone(),
                    path,
                    entry,
                    apply,
                });
            }
            EntryKind::File => {
                if !self.clear_place(&path, &entry)? {
                    return Ok(());
                }
                self.write_file(&path, &entry)?;
                self.restored.insert(entry.path.clone(), path);
            }
            EntryKind::HardLink { target } => {
                abri_store::validate_path(target).map_err(|e| RestoreError::BadPath {
                    path: text(target),
                    reason: e.to_string(),
                })?;
                if !self.clear_place(&path, &entry)? {
                    return Ok(());
                }
                if let Some(first) = self.restored.get(target).cloned() {
                    if let Err(e) = std::fs::hard_link(&first, &path) {
                        self.warn_io("hard link", &entry, e);
                    }
                } else if let Some(mut first) = self.unselected_links.remove(target) {
                    first.path = entry.path.clone();
                    self.write_file(&path, &first)?;
                    self.restored.insert(target.clone(), path);
                } else {
                    self.counters.warn(format!(
                        "cannot restore hard link {}: its target {} was not restored",
                        text(&entry.path),
                        text(target)
                    ));
                }
            }
            EntryKind::Symlink { target } => {
                if !self.clear_place(&path, &entry)? {
                    return Ok(());
                }
                let is_dir = entry
                    .windows
                    .as_ref()
                    .is_some_and(|w| w.attributes & fs::FILE_ATTRIBUTE_DIRECTORY != 0);
                let link = Link::from_target(winpath::bytes_to_utf16(target));
                match make_link(&path, &link, is_dir) {
                    Ok(()) => match open_for_metadata(&path) {
                        Ok(f) => self.apply_meta(&f, &path, &entry),
                        Err(e) => self.warn_io("metadata", &entry, e),
                    },
                    Err(e) => self.warn_io("link", &entry, e),
                }
            }
            EntryKind::Fifo
            | EntryKind::Socket
            | EntryKind::CharDevice { .. }
            | EntryKind::BlockDevice { .. } => {
                self.counters.warn(format!(
                    "{} skipped: Windows has no fifos, sockets or device nodes",
                    text(&entry.path)
                ));
            }
        }
        Ok(())
    }

    fn write_file(&mut self, path: &Path, entry: &Entry) -> Result<(), RestoreError> {
        let io_err = |source| RestoreError::Io {
            path: text(&entry.path),
            source,
        };
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .access_mode(
                fs::FILE_GENERIC_WRITE | fs::FILE_GENERIC_READ | fs::WRITE_DAC | fs::WRITE_OWNER,
            )
            .custom_flags(fs::FILE_FLAG_BACKUP_SEMANTICS | fs::FILE_FLAG_OPEN_REPARSE_POINT)
            .open(path)
            .map_err(io_err)?;
        let sparse = entry
            .windows
            .as_ref()
            .is_some_and(|w| w.attributes & fs::FILE_ATTRIBUTE_SPARSE_FILE != 0);
        if sparse && let Err(e) = set_sparse(&file) {
            tracing::debug!("cannot make {} sparse: {e}", path.display());
        }
        for ext in &entry.extents {
            let piece = self.chunks.piece(ext, &entry.path)?;
            write_all_at(&file, piece.bytes(), ext.file_offset).map_err(io_err)?;
            self.report.bytes += u64::from(ext.len);
            self.counters
                .bytes_scanned
                .fetch_add(u64::from(ext.len), Ordering::Relaxed);
        }
        file.set_len(entry.size).map_err(io_err)?;
        self.report.files += 1;
        self.apply_meta(&file, path, entry);
        Ok(())
    }
}

fn write_all_at(file: &File, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
    while !buf.is_empty() {
        let n = file.seek_write(buf, offset)?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::WriteZero));
        }
        buf = &buf[n..];
        offset += n as u64;
    }
    Ok(())
}

pub(crate) fn set_sparse(file: &File) -> io::Result<()> {
    let mut returned = 0u32;
    // SAFETY: no buffers; the handle is open for writing.
    check(unsafe {
        DeviceIoControl(
            file.as_raw_handle(),
            ioctl::FSCTL_SET_SPARSE,
            std::ptr::null(),
            0,
            std::ptr::null_mut(),
            0,
            &mut returned,
            std::ptr::null_mut(),
        )
    })
}

/// Creates a symbolic link or a junction at `path` (which does not exist).
fn make_link(path: &Path, link: &Link, is_dir: bool) -> io::Result<()> {
    match link {
        Link::Symlink(target) => {
            let p = wide(path);
            let t: Vec<u16> = target.iter().copied().chain([0]).collect();
            let mut flags = fs::SYMBOLIC_LINK_FLAG_ALLOW_UNPRIVILEGED_CREATE;
            if is_dir {
                flags |= fs::SYMBOLIC_LINK_FLAG_DIRECTORY;
            }
            // SAFETY: both strings are NUL-terminated.
            if unsafe { fs::CreateSymbolicLinkW(p.as_ptr(), t.as_ptr(), flags) } {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        }
        Link::Junction(target) => {
            let buf = reparse::junction_buffer(target).ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidData, "junction target too long")
            })?;
            std::fs::create_dir(path)?;
            let dir = OpenOptions::new()
                .access_mode(fs::FILE_GENERIC_WRITE)
                .custom_flags(fs::FILE_FLAG_BACKUP_SEMANTICS | fs::FILE_FLAG_OPEN_REPARSE_POINT)
                .open(path)?;
            let mut returned = 0u32;
            // SAFETY: buf is a complete mount-point reparse buffer of the length given.
            let set = check(unsafe {
                DeviceIoControl(
                    dir.as_raw_handle(),
                    ioctl::FSCTL_SET_REPARSE_POINT,
                    buf.as_ptr().cast(),
                    buf.len() as u32,
                    std::ptr::null_mut(),
                    0,
                    &mut returned,
                    std::ptr::null_mut(),
                )
            });
            if set.is_err() {
                drop(dir);
                let _ = std::fs::remove_dir(path);
            }
            set
        }
    }
}
