//! What the box, the provisioning tool and the agents say to each other.
//!
//! `batch` frames several chunks in one body, `api` holds the JSON bodies of `/api/v1`, `mdns` the service names and TXT keys the box
//! advertises, `pin` the TLS client configuration that trusts exactly one box CA, named by
//! its SHA-256 fingerprint.

pub mod agent;
pub mod api;
pub mod batch;
pub mod mdns;
pub mod pin;
pub mod plan;
