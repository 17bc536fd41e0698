//! The box's identity: its name, fixed at first boot and kept for life.
//!
//! The primary interface is chosen by `abri_host::select_primary` (documented in
//! `docs/architecture.md`); `--mac` overrides its MAC. The first boot derives `backup-xxxx`
//! from that MAC and stores it; later boots keep the stored name even if interfaces are
//! renamed, re-ordered or replaced — a different MAC is logged, never silently adopted.

use crate::state::{Db, Identity, Table, records::now};
use abri_host::Mac;
use anyhow::{Context, Result, bail};

/// The identity in force for this run.
#[derive(Clone, Debug)]
pub struct BoxIdentity {
    pub hostname: String,
    pub fqdn: Option<String>,
    pub mac: String,
    pub interface: Option<String>,
}

/// Where the MAC of this boot came from.
pub struct SeenMac {
    pub mac: Mac,
    pub interface: Option<String>,
}

/// Finds this boot's MAC: the override, else the primary interface's, else (dev mode only)
/// any interface with a MAC, else (dev mode only) a random locally administered one.
pub fn seen_mac(
    mac_override: Option<&str>,
    interface_override: Option<&str>,
    dev: bool,
) -> Result<SeenMac> {
    if let Some(text) = mac_override {
        let mac: Mac = text
            .parse()
            .map_err(|e| anyhow::anyhow!("--mac {text:?}: {e}"))?;
        return Ok(SeenMac {
            mac,
            interface: interface_override.map(str::to_string),
        });
    }
    let sys = std::path::Path::new("/sys/class/net");
    let interfaces = abri_host::list_interfaces(sys).unwrap_or_default();
    if let Some(name) = interface_override
        && !interfaces.iter().any(|i| i.name == name)
    {
        bail!("interface {name:?} (from --interface) does not exist or has no Ethernet MAC");
    }
    if let Some(primary) = abri_host::select_primary(&interfaces, interface_override) {
        return Ok(SeenMac {
            mac: primary.mac,
            interface: Some(primary.name.clone()),
        });
    }
    if !dev {
        bail!("no physical Ethernet interface found: give --interface NAME or --mac MAC");
    }
    if let Some(any) = interfaces.first() {
        return Ok(SeenMac {
            mac: any.mac,
            interface: Some(any.name.clone()),
        });
    }
    let mut bytes: [u8; 6] = rand::random();
    bytes[0] = (bytes[0] | 0x02) & 0xfe; // locally administered, unicast
    Ok(SeenMac {
        mac: Mac(bytes),
        interface: None,
    })
}

/// Loads the stored identity or, on first boot, creates it from `seen`.
pub fn establish(db: &Db, seen: &SeenMac, domain: Option<&str>) -> Result<BoxIdentity> {
    let stored: Option<Identity> = db
        .get(Table::Config, "identity")
        .context("reading the identity")?;
    let identity = match stored {
        Some(id) => {
            if id.mac != seen.mac.to_string() {
                tracing::warn!(
                    stored_mac = %id.mac,
                    seen_mac = %seen.mac,
                    hostname = %id.hostname,
                    "the primary interface's MAC changed since first boot; keeping the name {}",
                    id.hostname
                );
            }
            id
        }
        None => {
            let id = Identity {
                mac: seen.mac.to_string(),
                hostname: abri_host::derive_hostname(&seen.mac),
                interface: seen.interface.clone(),
                created: now(),
            };
            db.put(Table::Config, "identity", &id)
                .context("storing the identity")?;
            tracing::info!(hostname = %id.hostname, mac = %id.mac, "first boot: named the box");
            id
        }
    };
    let stored_mac: Mac = identity
        .mac
        .parse()
        .map_err(|e| anyhow::anyhow!("stored MAC {:?} does not parse: {e}", identity.mac))?;
    Ok(BoxIdentity {
        fqdn: domain.map(|d| abri_host::fqdn(&stored_mac, d)),
        hostname: identity.hostname,
        mac: identity.mac,
        interface: seen.interface.clone().or(identity.interface),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(mac: &str) -> SeenMac {
        SeenMac {
            mac: mac.parse().unwrap(),
            interface: Some("eth0".into()),
        }
    }

    #[test]
    fn first_boot_names_the_box_and_later_boots_keep_the_name() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        let first = establish(&db, &seen("52:54:00:12:ab:cd"), Some("acme.example")).unwrap();
        assert_eq!(first.hostname, "backup-abcd");
        assert_eq!(first.fqdn.as_deref(), Some("backup.abcd.acme.example"));
        let after_swap = establish(&db, &seen("52:54:00:99:99:99"), Some("acme.example")).unwrap();
        assert_eq!(
            after_swap.hostname, "backup-abcd",
            "a new MAC is not adopted"
        );
        assert_eq!(after_swap.fqdn.as_deref(), Some("backup.abcd.acme.example"));
        assert_eq!(after_swap.mac, "52:54:00:12:ab:cd");
    }

    #[test]
    fn mac_override_wins_and_bad_override_is_an_error() {
        let s = seen_mac(Some("52:54:00:12:AB:CD"), None, false).unwrap();
        assert_eq!(s.mac.to_string(), "52:54:00:12:ab:cd");
        assert!(seen_mac(Some("nonsense"), None, true).is_err());
        assert!(seen_mac(None, Some("no-such-if0"), true).is_err());
    }
}
