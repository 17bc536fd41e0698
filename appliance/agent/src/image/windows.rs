//! Windows image sources: volumes and whole disks, read from VSS snapshots.
//!
//! - A volume (`C:`) is read from its shadow copy device
//!   (`\\?\GLOBALROOT\Device\HarddiskVolumeShadowCopyN`) as a raw device, from 0 to its
//!   length (`IOCTL_DISK_GET_LENGTH_INFO`).
//! - A disk (`\\.\PhysicalDriveN`, or `system-disk`: the disk under the system volume,
//!   `IOCTL_VOLUME_GET_VOLUME_DISK_EXTENTS`) is a [`CompositeSource`]: every partition
//!   (`IOCTL_DISK_GET_DRIVE_LAYOUT_EX`) whose volume VSS can snapshot (NTFS, ReFS) is read
//!   from that snapshot, the rest (partition table, gaps, EFI, MSR and recovery partitions)
//!   from the disk.
//!
//! All the volumes of one backup are snapshotted in one VSS set, deleted when the sources
//! are dropped. Without VSS (not an administrator, the service stopped, Wine) the live
//! devices are read and the backup is marked "without snapshot", never silently. Device
//! reads go through [`AlignedSource`]: whole sectors only.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::windows::fs::OpenOptionsExt;
use std::os::windows::io::AsRawHandle;
use std::path::PathBuf;
use std::rc::Rc;

use windows_sys::Win32::Foundation as wf;
use windows_sys::Win32::Storage::FileSystem as fs;
use windows_sys::Win32::System::IO::DeviceIoControl;
use windows_sys::Win32::System::Ioctl as ioctl;

use super::aligned::AlignedSource;
use super::composite::{CompositeSource, Piece};
use super::source::{self, BlockSource, OpenedSource, Selection};
use super::winioctl::{self, DiskExtent, DiskPartition};
use crate::platform::windows::{SHARE_ALL, VolumeSnapshots};
use crate::progress::Counters;

/// Device reads are made in units of at least this many bytes: a multiple of every usual
/// sector size (512, 4096), so the unit is right even where the sector size is unknown.
const MIN_ALIGN: u64 = 4096;

/// Largest ioctl answer accepted (a layout of 128 partitions is under 20 KiB).
const MAX_IOCTL_BYTES: usize = 1 << 20;

/// A disk or volume device, read only in whole sectors (wrapped in [`AlignedSource`]).
struct Device {
    file: File,
    size: u64,
}

impl BlockSource for Device {
    fn size(&self) -> u64 {
        self.size
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        source::read_exact_at(&self.file, buf, offset)
    }
}

fn named(path: &str) -> impl Fn(io::Error) -> io::Error + '_ {
    move |e| io::Error::new(e.kind(), format!("{path}: {e}"))
}

fn open_raw(path: &str) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .share_mode(SHARE_ALL)
        .custom_flags(fs::FILE_FLAG_BACKUP_SEMANTICS)
        .open(path)
        .map_err(named(path))
}

/// Opens a disk or volume device for sector-aligned reading.
fn open_device(path: &str) -> io::Result<AlignedSource<Device>> {
    let file = open_raw(path)?;
    let mut len = ioctl::GET_LENGTH_INFORMATION::default();
    device_ioctl_into(&file, ioctl::IOCTL_DISK_GET_LENGTH_INFO, &mut len).map_err(named(path))?;
    let size = u64::try_from(len.Length)
        .map_err(|_| io::Error::other(format!("{path}: negative length {}", len.Length)))?;
    let mut geometry = ioctl::DISK_GEOMETRY::default();
    let sector = match device_ioctl_into(&file, ioctl::IOCTL_DISK_GET_DRIVE_GEOMETRY, &mut geometry)
    {
        Ok(()) => u64::from(geometry.BytesPerSector),
        Err(e) => {
            tracing::debug!("{path}: no geometry ({e}); reads in {MIN_ALIGN}-byte units");
            0
        }
    };
    let align = sector.max(MIN_ALIGN).next_power_of_two();
    AlignedSource::new(Device { file, size }, align)
}

/// An ioctl without input whose answer is the fixed-size `T`.
fn device_ioctl_into<T>(file: &File, code: u32, out: &mut T) -> io::Result<()> {
    let mut returned = 0u32;
    // SAFETY: `out` is a live T of the size given; the handle is open; no input buffer.
    let ok = unsafe {
        DeviceIoControl(
            file.as_raw_handle(),
            code,
            std::ptr::null(),
            0,
            (out as *mut T).cast(),
            size_of::<T>() as u32,
            &mut returned,
            std::ptr::null_mut(),
        )
    };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// An ioctl without input whose answer has a variable length: the buffer grows until the
/// answer fits. Returns the bytes returned.
fn device_ioctl_bytes(file: &File, code: u32, first: usize) -> io::Result<Vec<u8>> {
    let mut len = first;
    loop {
        // u64 storage: the answers' structures are 8-byte aligned.
        let mut storage = vec![0u64; len.div_ceil(8)];
        let mut returned = 0u32;
        // SAFETY: the output buffer is valid for `len` bytes; the handle is open.
        let ok = unsafe {
            DeviceIoControl(
                file.as_raw_handle(),
                code,
                std::ptr::null(),
                0,
                storage.as_mut_ptr().cast(),
                len as u32,
                &mut returned,
                std::ptr::null_mut(),
            )
        };
        if ok != 0 {
            let bytes: Vec<u8> = storage.iter().flat_map(|w| w.to_ne_bytes()).collect();
            return Ok(bytes[..(returned as usize).min(len)].to_vec());
        }
        let e = io::Error::last_os_error();
        let grow = matches!(
            e.raw_os_error().map(|c| c as u32),
            Some(wf::ERROR_INSUFFICIENT_BUFFER | wf::ERROR_MORE_DATA)
        );
        if !grow || len >= MAX_IOCTL_BYTES {
            return Err(e);
        }
        len *= 4;
    }
}

fn wide(text: &str) -> Vec<u16> {
    text.encode_utf16().chain([0]).collect()
}

fn from_wide(buf: &[u16]) -> String {
    let end = buf.iter().position(|&u| u == 0).unwrap_or(buf.len());
    String::from_utf16_lossy(&buf[..end])
}

/// Where a volume lies (`path` without a trailing separator, e.g. `\\.\C:`).
fn volume_extents(path: &str) -> io::Result<Vec<DiskExtent>> {
    let file = open_raw(path)?;
    let bytes = device_ioctl_bytes(
        &file,
        fs::IOCTL_VOLUME_GET_VOLUME_DISK_EXTENTS,
        winioctl::EXTENTS_HEADER_BYTES + 4 * winioctl::EXTENT_BYTES,
    )
    .map_err(named(path))?;
    winioctl::parse_volume_extents(&bytes).map_err(|e| io::Error::other(format!("{path}: {e}")))
}

/// The volume GUID path (`\\?\Volume{...}\`) of a drive letter.
fn volume_name_of(letter: char) -> io::Result<String> {
    let root = wide(&format!("{letter}:\\"));
    let mut buf = [0u16; 64];
    // SAFETY: root is NUL-terminated; buf's length is given.
    let ok = unsafe {
        fs::GetVolumeNameForVolumeMountPointW(root.as_ptr(), buf.as_mut_ptr(), buf.len() as u32)
    };
    if ok == 0 {
        let e = io::Error::last_os_error();
        return Err(io::Error::new(e.kind(), format!("volume {letter}: {e}")));
    }
    Ok(from_wide(&buf))
}

/// A volume of the machine.
struct Volume {
    /// `\\?\Volume{...}\`.
    guid_path: String,
    /// Drive letters and folders it is mounted at.
    mounts: Vec<String>,
    /// `NTFS`, `ReFS`, `FAT32`…; empty when not formatted or unknown.
    fs: String,
    extents: Vec<DiskExtent>,
}

impl Volume {
    fn label(&self) -> String {
        match self.mounts.first() {
            Some(m) => m.trim_end_matches('\\').to_string(),
            None => self.guid_path.clone(),
        }
    }

    /// Whether the system's VSS provider snapshots this file system.
    fn snapshottable(&self) -> bool {
        matches!(self.fs.as_str(), "NTFS" | "ReFS")
    }
}

/// Every volume the system lists, with where it lies; volumes that cannot be asked (an
/// empty card reader) are left out.
fn machine_volumes() -> io::Result<Vec<Volume>> {
    let mut out = Vec::new();
    let mut buf = [0u16; 64];
    // SAFETY: buf's length is given.
    let find = unsafe { fs::FindFirstVolumeW(buf.as_mut_ptr(), buf.len() as u32) };
    if find == wf::INVALID_HANDLE_VALUE {
        return Err(io::Error::last_os_error());
    }
    loop {
        let guid_path = from_wide(&buf);
        let device = guid_path.trim_end_matches('\\');
        match volume_extents(device) {
            Ok(extents) => out.push(Volume {
                mounts: mount_points(&guid_path),
                fs: file_system_of(&guid_path),
                guid_path,
                extents,
            }),
            Err(e) => tracing::debug!("volume {guid_path} left out: {e}"),
        }
        // SAFETY: find is the open search handle; buf's length is given.
        if unsafe { fs::FindNextVolumeW(find, buf.as_mut_ptr(), buf.len() as u32) } == 0 {
            break;
        }
    }
    // SAFETY: closes the search handle opened above.
    unsafe { fs::FindVolumeClose(find) };
    Ok(out)
}

fn mount_points(guid_path: &str) -> Vec<String> {
    let name = wide(guid_path);
    let mut buf = vec![0u16; 1024];
    let mut needed = 0u32;
    // SAFETY: name is NUL-terminated; buf's length is given.
    let ok = unsafe {
        fs::GetVolumePathNamesForVolumeNameW(
            name.as_ptr(),
            buf.as_mut_ptr(),
            buf.len() as u32,
            &mut needed,
        )
    };
    if ok == 0 {
        return Vec::new();
    }
    buf.split(|&u| u == 0)
        .take_while(|s| !s.is_empty())
        .map(String::from_utf16_lossy)
        .collect()
}

fn file_system_of(guid_path: &str) -> String {
    let root = wide(guid_path);
    let mut name = [0u16; 64];
    // SAFETY: root is NUL-terminated; the name buffer's length is given; the other
    // out-parameters are optional and null.
    let ok = unsafe {
        fs::GetVolumeInformationW(
            root.as_ptr(),
            std::ptr::null_mut(),
            0,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            name.as_mut_ptr(),
            name.len() as u32,
        )
    };
    if ok == 0 {
        String::new()
    } else {
        from_wide(&name)
    }
}

/// The disk holding the system volume (`%SystemDrive%`, normally `C:`).
fn system_disk_number() -> io::Result<u32> {
    let drive = std::env::var("SystemDrive").unwrap_or_else(|_| "C:".into());
    let extents = volume_extents(&format!(r"\\.\{drive}"))?;
    let mut disks: Vec<u32> = extents.iter().map(|e| e.disk).collect();
    disks.dedup();
    match disks.as_slice() {
        [one] => Ok(*one),
        [] => Err(io::Error::other(format!("{drive} lies on no disk"))),
        _ => Err(io::Error::other(format!(
            "{drive} spans several disks ({disks:?}): name the disks to image in the plan"
        ))),
    }
}

/// A disk to image: its partitions and which of them are read from a snapshot.
struct DiskPlan {
    number: u32,
    description: String,
    /// Partition start and length, with the volume read instead (snapshot key = GUID path).
    overlays: Vec<(DiskExtent, String)>,
    notes: Vec<String>,
    /// A mounted volume on it cannot be snapshotted: read live.
    live: bool,
}

fn plan_disk(number: u32, description: String, volumes: &[Volume]) -> io::Result<DiskPlan> {
    let path = format!(r"\\.\PhysicalDrive{number}");
    let disk = open_raw(&path)?;
    let layout_bytes = device_ioctl_bytes(
        &disk,
        ioctl::IOCTL_DISK_GET_DRIVE_LAYOUT_EX,
        winioctl::LAYOUT_HEADER_BYTES + 16 * winioctl::PARTITION_ENTRY_BYTES,
    )
    .map_err(named(&path))?;
    let layout = winioctl::parse_drive_layout(&layout_bytes)
        .map_err(|e| io::Error::other(format!("{path}: {e}")))?;
    let mut plan = DiskPlan {
        number,
        description,
        overlays: Vec::new(),
        notes: Vec::new(),
        live: false,
    };
    let on_disk: Vec<&Volume> = volumes
        .iter()
        .filter(|v| v.extents.iter().any(|e| e.disk == number))
        .collect();
    for p in &layout.partitions {
        let volume = on_disk.iter().find(
            |v| matches!(v.extents.as_slice(), [e] if e.disk == number && e.start == p.start),
        );
        match volume {
            Some(v) if v.snapshottable() => {
                plan.overlays.push((v.extents[0], v.guid_path.clone()));
            }
            Some(v) if !v.mounts.is_empty() => {
                plan.live = true;
                plan.notes.push(format!(
                    "{} (partition {} of {path}, {}) cannot be snapshotted: it is read live, \
                     without snapshot",
                    v.label(),
                    p.number,
                    if v.fs.is_empty() {
                        "unknown file system"
                    } else {
                        &v.fs
                    }
                ));
            }
            _ => tracing::info!("{}: read from the disk", describe_partition(p, &path)),
        }
    }
    // A volume over several extents (a dynamic disk's spanned volume) is not a partition.
    for v in on_disk.iter().filter(|v| v.extents.len() > 1) {
        if !v.mounts.is_empty() {
            plan.live = true;
            plan.notes.push(format!(
                "{} spans several extents: its part on {path} is read live, without snapshot",
                v.label()
            ));
        }
    }
    Ok(plan)
}

fn describe_partition(p: &DiskPartition, disk: &str) -> String {
    let name = if p.name.is_empty() {
        String::new()
    } else {
        format!(" \"{}\"", p.name)
    };
    format!(
        "partition {}{name} of {disk} (type {}, no mounted volume)",
        p.number, p.type_id
    )
}

/// What one selection will read, before the snapshot set is taken.
enum Planned {
    File(PathBuf),
    Volume { letter: char, guid_path: String },
    Disk(DiskPlan),
}

/// Opens every selection, with one VSS snapshot set for all the volumes they read.
pub fn open_all(selections: &[Selection], counters: &Counters) -> io::Result<Vec<OpenedSource>> {
    let mut planned = Vec::new();
    let mut volumes: Option<Vec<Volume>> = None;
    for sel in selections {
        planned.push(match sel {
            Selection::Path(p) => Planned::File(p.clone()),
            Selection::Volume(letter) => Planned::Volume {
                letter: *letter,
                guid_path: volume_name_of(*letter)?,
            },
            Selection::SystemDisk | Selection::Disk(_) => {
                let (number, description) = match sel {
                    Selection::Disk(n) => (*n, format!(r"\\.\PhysicalDrive{n}")),
                    _ => {
                        let n = system_disk_number()?;
                        (n, format!(r"system-disk (\\.\PhysicalDrive{n})"))
                    }
                };
                if volumes.is_none() {
                    volumes = Some(machine_volumes()?);
                }
                let known = volumes.as_deref().unwrap_or_default();
                Planned::Disk(plan_disk(number, description, known)?)
            }
            Selection::Nbd { .. } => {
                return Err(io::Error::other(
                    "NBD sources are read by the Linux agent (on the hypervisor)",
                ));
            }
        });
    }
    let mut wanted: Vec<Vec<u8>> = Vec::new();
    for p in &planned {
        match p {
            Planned::Volume { guid_path, .. } => wanted.push(guid_path.as_bytes().to_vec()),
            Planned::Disk(d) => {
                wanted.extend(d.overlays.iter().map(|(_, g)| g.as_bytes().to_vec()));
            }
            Planned::File(_) => {}
        }
    }
    wanted.sort();
    wanted.dedup();
    let snapshots = if wanted.is_empty() {
        None
    } else {
        match VolumeSnapshots::of_volumes(&wanted) {
            Ok(s) => Some(Rc::new(s)),
            Err(e) => {
                counters.warn(format!(
                    "no volume snapshot (VSS) could be taken ({e}): this image backup reads \
                     the live volumes and is marked \"without snapshot\"; blocks changing \
                     meanwhile may be inconsistent"
                ));
                None
            }
        }
    };
    let device_of = |guid: &str| {
        snapshots
            .as_ref()
            .and_then(|s| s.device_of(guid.as_bytes()))
    };
    let hold = || {
        snapshots
            .clone()
            .map(|s| Box::new(s) as Box<dyn std::any::Any>)
    };
    let mut out = Vec::new();
    for p in planned {
        out.push(match p {
            Planned::File(path) => source::open_file(&path)?,
            Planned::Volume { letter, guid_path } => {
                let (path, live) = match device_of(&guid_path) {
                    Some(d) => (d, false),
                    None => (format!(r"\\.\{letter}:"), true),
                };
                let mut notes = Vec::new();
                if live {
                    notes.push(format!(
                        "{letter}: is read while in use, without a snapshot (VSS)"
                    ));
                }
                OpenedSource {
                    name: format!("volume-{letter}"),
                    description: format!("{letter}:"),
                    reader: Box::new(open_device(&path)?),
                    snapshot: hold(),
                    notes,
                    live,
                }
            }
            Planned::Disk(plan) => {
                let base = open_device(&format!(r"\\.\PhysicalDrive{}", plan.number))?;
                let mut pieces = Vec::new();
                let mut live = plan.live;
                let mut notes = plan.notes;
                for (extent, guid) in &plan.overlays {
                    match device_of(guid) {
                        Some(dev) => {
                            let volume = open_device(&dev)?;
                            pieces.push(Piece {
                                start: extent.start,
                                len: extent.len.min(volume.size()),
                                source: Box::new(volume),
                            });
                        }
                        None => live = true,
                    }
                }
                if live && notes.is_empty() {
                    notes.push(format!(
                        "{} is read while in use, without a snapshot (VSS)",
                        plan.description
                    ));
                }
                OpenedSource {
                    name: format!("PhysicalDrive{}", plan.number),
                    description: plan.description,
                    reader: Box::new(CompositeSource::new(Box::new(base), pieces)?),
                    snapshot: hold(),
                    notes,
                    live,
                }
            }
        });
    }
    Ok(out)
}
