//! abri-vdisk: a disk image backup as a virtual disk file hypervisors open, streamed.
//!
//! The box has little RAM and disk images are large, so the file is produced front to back
//! into any [`std::io::Write`] (on the box, the `ChannelWriter` that feeds an HTTP body
//! from a blocking thread): nothing is buffered whole, nothing goes to a temporary file,
//! and the length is known before the first byte (`Content-Length`).
//!
//! A backup is described as a virtual size and the sorted list of its allocated guest
//! clusters (fixed-size, aligned regions); everything else reads as zeros.
//!
//! # qcow2
//!
//! The only format so far is qcow2 version 3 (QEMU, Proxmox, libvirt; `qemu-img convert`
//! turns it into anything else), written from the format's specification:
//!
//! - [`Qcow2Plan::new`]`(virtual_size, cluster_bits, allocated)` lays the file out up front
//!   and refuses bad input ([`PlanError`]): unsorted or repeated indexes, an index past the
//!   end, a size that is not whole 512-byte sectors, tables QEMU would not open.
//! - [`Qcow2Plan::total_len`] is the file's length; [`Qcow2Plan::allocated_clusters`] the
//!   order in which cluster data follows the metadata; [`Qcow2Plan::cluster_len`] how much
//!   of a cluster lies inside the disk.
//! - [`write_qcow2`]`(&plan, out, |index, buffer| ...)` writes the whole file, asking the
//!   closure for each allocated cluster's bytes in turn.
//!   [`Qcow2Plan::write_metadata`] writes only the part before the data, for callers that
//!   write the clusters themselves.
//!
//! Layout: header cluster, L1 table, refcount table, refcount blocks, L2 tables, then the
//! data clusters in guest order. 16-bit refcounts, all 1; no backing file, no compression,
//! no encryption, no snapshots, no feature bits, no header extensions. Clusters that
//! happen to hold zeros are written like any other; unallocated clusters stay unallocated.
//! `docs/formats.md` ("Virtual disk downloads") documents the same.
//!
//! # Memory
//!
//! A plan holds one bit per guest cluster: `virtual_size / cluster_size / 8` bytes, 4 MiB
//! for a 2 TiB disk in the default 64 KiB clusters. Writing adds one cluster buffer (64 KiB by
//! default), first for the metadata, then for the data: every table is computed as it is
//! written, one cluster at a time.
//!
//! ```
//! use abri_vdisk::{DEFAULT_CLUSTER_BITS, Qcow2Plan, write_qcow2};
//!
//! // A 1 GiB disk whose first and fifth 64 KiB clusters hold data.
//! let plan = Qcow2Plan::new(1 << 30, DEFAULT_CLUSTER_BITS, [0, 4])?;
//! let mut file = Vec::new();
//! write_qcow2(&plan, &mut file, |index, buffer| {
//!     buffer.fill(index as u8 + 1); // on the box: the backup's bytes for this cluster
//!     Ok(())
//! })?;
//! assert_eq!(file.len() as u64, plan.total_len());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod cluster_set;
mod error;
mod qcow2;

pub use error::PlanError;
pub use qcow2::{DEFAULT_CLUSTER_BITS, MAX_CLUSTER_BITS, MIN_CLUSTER_BITS, Qcow2Plan, write_qcow2};
