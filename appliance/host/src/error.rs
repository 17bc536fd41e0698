//! The errors of this crate: each names the object it failed on.

/// Something abrid asked of the machine failed.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The kernel refused the new hostname (not root, or not a valid name).
    #[error("cannot set the system hostname to '{name}': {source}")]
    SetHostname {
        name: String,
        #[source]
        source: nix::Error,
    },

    /// The mDNS responder could not do `action` (start, register a service, ...).
    #[error("mDNS: cannot {action}: {source}")]
    Mdns {
        action: String,
        #[source]
        source: mdns_sd::Error,
    },
}

impl HostError {
    pub(crate) fn mdns(action: impl Into<String>, source: mdns_sd::Error) -> Self {
        HostError::Mdns {
            action: action.into(),
            source,
        }
    }
}
