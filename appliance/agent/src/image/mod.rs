//! Image mode: disks, partitions, logical volumes, image files and VM disks over NBD,
//! backed up as fixed, aligned chunks into the same store as files (see
//! `abri_store::image` for the catalog layout).
//!
//! One engine on every system (`backup`, `layout`, `ranges`, `restore`, `writeout`); the sources
//! differ: block devices, LVM and NBD on Unix, volumes and disks through VSS on Windows
//! (`windows`, whose pure parts, `aligned`, `composite` and `winioctl`, build everywhere so
//! their units run on Linux too).

pub mod aligned;
pub mod backup;
pub mod composite;
#[cfg(unix)]
pub mod devices;
pub mod files;
pub mod layout;
#[cfg(unix)]
pub mod lvm;
#[cfg(unix)]
pub mod nbd;
pub mod ranges;
pub mod restore;
pub mod source;
#[cfg(windows)]
pub mod windows;
pub mod winioctl;
pub mod writeout;
