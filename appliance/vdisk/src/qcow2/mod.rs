//! qcow2 version 3, written front to back: [`Qcow2Plan`] lays the whole file out from the
//! disk's shape, [`write_qcow2`] streams it.

mod plan;
mod write;

pub use plan::Qcow2Plan;
pub use write::write_qcow2;

/// 64 KiB clusters, QEMU's default: one L2 table maps 512 MiB of disk.
pub const DEFAULT_CLUSTER_BITS: u32 = 16;
/// 512-byte clusters, the smallest the format allows.
pub const MIN_CLUSTER_BITS: u32 = 9;
/// 2 MiB clusters, the largest QEMU opens.
pub const MAX_CLUSTER_BITS: u32 = 21;
