//! abri-agent: backs up a machine's files to its Abri box and restores them.
//!
//! | module | job |
//! |---|---|
//! | `cli` | the command line (clap) and its output, text or `--json` |
//! | `config` | the configuration file (box, pinned fingerprint, credentials), 0600, atomic |
//! | `client` | the box's agent API over HTTPS pinned to the box CA, HTTP/2 |
//! | `discover`, `enroll` | finding the box over mDNS; enrolment |
//! | `walk`, `exclude`, `metadata` | what a backup reads, in catalog order, with full metadata |
//! | `incremental` | the previous catalog alongside the walk: unchanged files are not read |
//! | `backup`, `upload` | the backup pipeline: reader, packer, catalog; query, compress, upload |
//! | `restore`, `restore_writers`, `restore_bulk` | recreating entries under a target, never through a symlink; writer threads fill created files; the bulk lane writes large files' own chunks beside the catalog walk |
//! | `image` | image mode: sources (disks, LVM, files, NBD), layout, backup, `restore-image` |
//! | `remote` | the box as destination and chunk source; job drivers |
//! | `service` | `run`: long-poll commands, run jobs, backoff |
//! | `progress` | live counters, reports to the box, the terminal's progress bar |
//! | `state` | the job lock and the last job's outcome |
//! | `platform` | OS specifics (Linux: xattrs, SEEK_DATA, `*at` calls; Windows: volumes, attributes, security descriptors, VSS, the service) |

pub mod backup;
pub mod cli;
pub mod client;
pub mod config;
pub mod discover;
pub mod enroll;
pub mod exclude;
pub mod image;
pub mod incremental;
#[cfg(unix)]
pub mod metadata;
#[cfg(windows)]
pub use platform::windows::metadata;
pub mod platform;
pub mod prefetch;
pub mod progress;
pub mod remote;
pub mod restore;
#[cfg(unix)]
mod restore_bulk;
mod restore_chunks;
#[cfg(unix)]
mod restore_writers;
pub mod service;
pub mod state;
pub mod upload;
pub mod walk;
