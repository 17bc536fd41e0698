//! Image mode: disks, partitions, logical volumes, image files and VM disks over NBD,
//! backed up as fixed, aligned chunks into the same store as files (see
//! `abri_store::image` for the catalog layout).

pub mod backup;
pub mod devices;
pub mod files;
pub mod layout;
pub mod lvm;
pub mod nbd;
pub mod ranges;
pub mod restore;
pub mod source;
