//! Finding the box on the LAN for `enroll --box auto`: browse `_abri._tcp` over mDNS for a
//! bounded time and collect what answers, merged by host name.

use abri_proto::mdns::{SERVICE_ABRI, STATE_ACTIVATED, TXT_FINGERPRINT, TXT_STATE};
use mdns_sd::{ServiceDaemon, ServiceEvent};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// One box that answered.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FoundBox {
    /// Host name as announced, e.g. `backup-abcd.local`.
    pub host: String,
    pub port: u16,
    /// IPv4 first.
    pub addresses: Vec<IpAddr>,
    /// TXT `fp`: the box CA fingerprint.
    pub fingerprint: Option<String>,
    pub activated: bool,
}

impl FoundBox {
    /// `https://host:port` of this box.
    pub fn url(&self) -> String {
        if self.port == 443 {
            format!("https://{}", self.host)
        } else {
            format!("https://{}:{}", self.host, self.port)
        }
    }

    /// `ip:port` to reach it without a resolver for `.local` names.
    pub fn address(&self) -> Option<String> {
        self.addresses.iter().find_map(|ip| match ip {
            IpAddr::V4(v4) => Some(format!("{v4}:{}", self.port)),
            IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) != 0xfe80 => {
                Some(format!("[{v6}]:{}", self.port))
            }
            IpAddr::V6(_) => None,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("cannot start mDNS: {0}")]
    Mdns(String),
    #[error(
        "no Abri box answered on the local network within {0} seconds: check that the box is \
         on and on this network, or give its address with --box https://ADDRESS"
    )]
    NoneFound(u64),
    #[error("several Abri boxes answered: {0}; choose one with --box https://NAME")]
    Several(String),
}

/// Every box answering within `wait`.
pub fn browse(wait: Duration) -> Result<Vec<FoundBox>, DiscoverError> {
    let daemon = ServiceDaemon::new().map_err(|e| DiscoverError::Mdns(e.to_string()))?;
    let rx = daemon
        .browse(SERVICE_ABRI)
        .map_err(|e| DiscoverError::Mdns(e.to_string()))?;
    let deadline = Instant::now() + wait;
    let mut found: BTreeMap<String, FoundBox> = BTreeMap::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let Ok(event) = rx.recv_timeout(left) else {
            break;
        };
        if let ServiceEvent::ServiceResolved(s) = event {
            let host = s.host.trim_end_matches('.').to_ascii_lowercase();
            let entry = found.entry(host.clone()).or_insert_with(|| FoundBox {
                host,
                port: s.port,
                addresses: Vec::new(),
                fingerprint: None,
                activated: false,
            });
            entry.port = s.port;
            for ip in &s.addresses {
                let ip = ip.to_ip_addr();
                if !entry.addresses.contains(&ip) {
                    entry.addresses.push(ip);
                }
            }
            entry.addresses.sort_by_key(|ip| (ip.is_ipv6(), *ip));
            if let Some(fp) = s.get_property_val_str(TXT_FINGERPRINT) {
                entry.fingerprint = Some(fp.to_string());
            }
            entry.activated = s.get_property_val_str(TXT_STATE) == Some(STATE_ACTIVATED);
        }
    }
    let _ = daemon.shutdown();
    Ok(found.into_values().collect())
}

/// Exactly one box, or an error that lists what was found.
pub fn pick_one(found: Vec<FoundBox>, waited: Duration) -> Result<FoundBox, DiscoverError> {
    let mut found = found;
    match found.len() {
        0 => Err(DiscoverError::NoneFound(waited.as_secs())),
        1 => Ok(found.remove(0)),
        _ => Err(DiscoverError::Several(
            found
                .iter()
                .map(|b| {
                    let addr = b.address().unwrap_or_else(|| "no address".into());
                    format!("{} ({addr})", b.host)
                })
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(host: &str) -> FoundBox {
        FoundBox {
            host: host.into(),
            port: 8443,
            addresses: vec!["192.0.2.1".parse().unwrap()],
            fingerprint: None,
            activated: true,
        }
    }

    #[test]
    fn picks_exactly_one() {
        let w = Duration::from_secs(3);
        assert!(matches!(
            pick_one(vec![], w),
            Err(DiscoverError::NoneFound(3))
        ));
        assert_eq!(pick_one(vec![found("a.local")], w).unwrap().host, "a.local");
        let err = pick_one(vec![found("a.local"), found("b.local")], w).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("a.local (192.0.2.1:8443)") && text.contains("b.local"),
            "{text}"
        );
        assert_eq!(found("a.local").url(), "https://a.local:8443");
    }
}
