//! What abrid needs from the machine it runs on.
//!
//! The box's identity (MAC, hostname), its network interfaces and addresses, its disks,
//! its uptime, and its mDNS announcements. Everything that reads the system has a pure
//! parser beside it, so the rules are tested on sample text rather than on whatever the
//! build machine happens to have.

mod addresses;
mod disks;
mod error;
mod hostname;
mod interfaces;
mod mac;
mod mdns;
mod uptime;

pub use addresses::lan_addresses;
pub use disks::{DiskUsage, disks, disks_including, usage_of};
pub use error::HostError;
pub use hostname::{derive_hostname, fqdn, set_system_hostname};
pub use interfaces::{Interface, list_interfaces, select_primary};
pub use mac::{Mac, MacParseError};
pub use mdns::{AnnounceConfig, Announcer};
pub use uptime::uptime;
