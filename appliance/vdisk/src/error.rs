//! Why a virtual disk cannot be planned. Every message names the disk's numbers, so the
//! log line alone says which backup was refused and why.

/// A refused [`Qcow2Plan`](crate::Qcow2Plan): the input does not describe a disk, or the
/// disk is beyond what QEMU opens.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PlanError {
    #[error(
        "qcow2 cluster_bits {bits} is outside {min}..={max} (512-byte to 2 MiB clusters)",
        min = crate::qcow2::MIN_CLUSTER_BITS,
        max = crate::qcow2::MAX_CLUSTER_BITS
    )]
    ClusterBits { bits: u32 },

    #[error(
        "virtual disk size {virtual_size} bytes is not a whole number of 512-byte sectors; \
         hypervisors cannot present such a disk"
    )]
    UnalignedSize { virtual_size: u64 },

    #[error(
        "allocated cluster {index} follows cluster {previous}: the list of allocated \
         clusters must be strictly increasing"
    )]
    NotIncreasing { previous: u64, index: u64 },

    #[error(
        "allocated cluster {index} lies past the end of the {virtual_size}-byte disk, \
         which has {clusters} clusters of {cluster_size} bytes"
    )]
    PastEnd {
        index: u64,
        virtual_size: u64,
        clusters: u64,
        cluster_size: u64,
    },

    #[error(
        "a {virtual_size}-byte disk in {cluster_size}-byte clusters needs {what}, beyond what \
         QEMU opens; choose larger clusters"
    )]
    TooLarge {
        virtual_size: u64,
        cluster_size: u64,
        what: &'static str,
    },

    #[error(
        "not enough memory for the allocation map of a {virtual_size}-byte disk \
         ({bytes} bytes); choose larger clusters"
    )]
    OutOfMemory { virtual_size: u64, bytes: u64 },
}
