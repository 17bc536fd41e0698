//! mDNS names and TXT keys the box advertises.

/// Service for agents and the provisioning tool.
pub const SERVICE_ABRI: &str = "_abri._tcp.local.";
/// Service for browsers (and for anyone browsing HTTPS services on the LAN).
pub const SERVICE_HTTPS: &str = "_https._tcp.local.";

/// TXT key: abrid's version.
pub const TXT_VERSION: &str = "version";
/// TXT key: `new` until the box is activated, then `activated`.
pub const TXT_STATE: &str = "state";
/// TXT key: lower-case hex SHA-256 of the box CA certificate (DER).
pub const TXT_FINGERPRINT: &str = "fp";

pub const STATE_NEW: &str = "new";
pub const STATE_ACTIVATED: &str = "activated";
