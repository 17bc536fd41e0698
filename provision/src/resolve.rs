//! Resolving a parsed BOX into an [`Endpoint`]: where to connect, which name the
//! certificate must carry, and which CA fingerprint to pin.
//!
//! Rules, in order: `--fingerprint` always wins over mDNS; a box name is looked up by mDNS
//! (address, port, fingerprint) and then verified by name; an address is verified as an
//! address, and without `--fingerprint` its fingerprint is taken from the box advertising
//! that address on mDNS. An explicit port wins over the advertised one, which wins over 443.

use crate::discover::{DiscoverError, FoundBox, Lan, Mdns};
use crate::target::{Host, Target};
use abri_proto::pin::{PinError, normalize_fingerprint};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::time::Duration;

pub const DEFAULT_PORT: u16 = 443;

/// How long to look for one box on mDNS before giving up.
pub const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Where and how to reach one box.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    /// The box's name when known (`backup-abcd`), else the host as given.
    pub label: String,
    /// The host in the URL, checked against the certificate: a name or an IP address.
    pub host: String,
    pub port: u16,
    /// Addresses to connect to for `host`; empty means the system resolver (or `host` is an
    /// address).
    pub connect_to: Vec<SocketAddr>,
    /// Lower-case hex SHA-256 of the box CA.
    pub fingerprint: String,
}

impl Endpoint {
    /// `https://host:port`, with IPv6 addresses in brackets.
    pub fn base_url(&self) -> String {
        if self.host.parse::<Ipv6Addr>().is_ok() {
            format!("https://[{}]:{}", self.host, self.port)
        } else {
            format!("https://{}:{}", self.host, self.port)
        }
    }

    /// The console address for people: the port is left out when it is 443.
    pub fn console_url(&self) -> String {
        let base = self.base_url();
        match base.strip_suffix(":443") {
            Some(short) => short.to_string(),
            None => base,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error(
        "no box named {name} answered on this network within {secs} s (mDNS); check that it is \
         powered on and plugged into this LAN, or give its address and --fingerprint"
    )]
    NotFound { name: String, secs: u64 },
    #[error(
        "no box advertising {addr} answered on this network within {secs} s (mDNS), so its \
         certificate fingerprint is unknown; give it with --fingerprint (the box's console \
         shows it on the Box page)"
    )]
    FingerprintUnknown { addr: String, secs: u64 },
    #[error(
        "box {name} does not advertise a valid certificate fingerprint ({advertised:?}); give \
         it with --fingerprint"
    )]
    NoAdvertisedFingerprint { name: String, advertised: String },
    #[error(
        "several boxes advertise {addr} ({names}) with different certificates; add the port \
         (host:port) or --fingerprint"
    )]
    Ambiguous { addr: String, names: String },
    #[error("--fingerprint: {0}")]
    BadFingerprint(#[from] PinError),
    #[error("cannot resolve host {host}: {reason}")]
    Lookup { host: String, reason: String },
    #[error(transparent)]
    Discover(#[from] DiscoverError),
}

/// BOX and `--fingerprint`, as every command that talks to one box takes them.
#[derive(clap::Args, Debug)]
pub struct BoxArgs {
    /// The box: backup-xxxx, backup-xxxx.local, an IP address, host:port or https://host:port.
    #[arg(value_name = "BOX")]
    pub target: String,
    /// SHA-256 fingerprint of the box CA (64 hex digits, colons allowed); wins over mDNS.
    #[arg(long, value_name = "FP")]
    pub fingerprint: Option<String>,
}

impl BoxArgs {
    /// Parses BOX and resolves it on the LAN.
    pub async fn resolve(&self) -> anyhow::Result<Endpoint> {
        let target: Target = self.target.parse()?;
        let fingerprint = self.fingerprint.clone();
        let endpoint = tokio::task::spawn_blocking(move || {
            resolve(&target, fingerprint.as_deref(), &Mdns, RESOLVE_TIMEOUT)
        })
        .await
        .map_err(|e| {
            anyhow::anyhow!("looking for box {} stopped unexpectedly: {e}", self.target)
        })??;
        Ok(endpoint)
    }
}

/// Turns BOX and `--fingerprint` into an endpoint, asking the LAN when needed. Blocking.
pub fn resolve(
    target: &Target,
    fingerprint: Option<&str>,
    lan: &dyn Lan,
    timeout: Duration,
) -> Result<Endpoint, ResolveError> {
    let pinned = fingerprint.map(normalize_fingerprint).transpose()?;
    let secs = timeout.as_secs();
    match &target.host {
        Host::Mdns(name) => {
            let seen = lan.browse(timeout, &mut |b| b.name == *name)?;
            let Some(found) = seen.into_iter().find(|b| b.name == *name) else {
                // The system resolver may still know the name (nss-mdns, a DNS entry).
                return match pinned {
                    Some(fingerprint) => Ok(Endpoint {
                        label: name.clone(),
                        host: format!("{name}.local"),
                        port: target.port.unwrap_or(DEFAULT_PORT),
                        connect_to: Vec::new(),
                        fingerprint,
                    }),
                    None => Err(ResolveError::NotFound {
                        name: name.clone(),
                        secs,
                    }),
                };
            };
            let port = target.port.unwrap_or(found.port);
            Ok(Endpoint {
                label: name.clone(),
                host: format!("{name}.local"),
                port,
                connect_to: found.socket_addrs(port),
                fingerprint: choose_fingerprint(pinned, &found)?,
            })
        }
        Host::Ip(ip) => {
            let host = ip.to_string();
            let port = target.port;
            match pinned {
                Some(fingerprint) => Ok(Endpoint {
                    label: host.clone(),
                    host,
                    port: port.unwrap_or(DEFAULT_PORT),
                    connect_to: Vec::new(),
                    fingerprint,
                }),
                None => {
                    let found = find_by_address(lan, &[*ip], port, &host, timeout)?;
                    Ok(Endpoint {
                        label: found.name.clone(),
                        host,
                        port: port.unwrap_or(found.port),
                        connect_to: Vec::new(),
                        fingerprint: choose_fingerprint(None, &found)?,
                    })
                }
            }
        }
        Host::Dns(name) => {
            let port = target.port;
            let fingerprint = match pinned {
                Some(fingerprint) => fingerprint,
                None => {
                    let ips = lookup(name, port.unwrap_or(DEFAULT_PORT))?;
                    let found = find_by_address(lan, &ips, port, name, timeout)?;
                    choose_fingerprint(None, &found)?
                }
            };
            Ok(Endpoint {
                label: name.clone(),
                host: name.clone(),
                port: port.unwrap_or(DEFAULT_PORT),
                connect_to: Vec::new(),
                fingerprint,
            })
        }
    }
}

fn choose_fingerprint(pinned: Option<String>, found: &FoundBox) -> Result<String, ResolveError> {
    if let Some(fingerprint) = pinned {
        return Ok(fingerprint);
    }
    let advertised = found.fingerprint.clone().unwrap_or_default();
    normalize_fingerprint(&advertised).map_err(|_| ResolveError::NoAdvertisedFingerprint {
        name: found.name.clone(),
        advertised,
    })
}

/// The box advertising one of `ips` (and `port`, when given) on mDNS.
fn find_by_address(
    lan: &dyn Lan,
    ips: &[IpAddr],
    port: Option<u16>,
    shown: &str,
    timeout: Duration,
) -> Result<FoundBox, ResolveError> {
    let matches = |b: &FoundBox| {
        b.addresses.iter().any(|a| ips.contains(a)) && port.is_none_or(|p| p == b.port)
    };
    let seen = lan.browse(timeout, &mut |b| matches(b))?;
    let mut candidates: Vec<FoundBox> = seen.into_iter().filter(|b| matches(b)).collect();
    candidates.dedup_by(|a, b| a.fingerprint == b.fingerprint);
    match candidates.len() {
        0 => Err(ResolveError::FingerprintUnknown {
            addr: shown.to_string(),
            secs: timeout.as_secs(),
        }),
        1 => Ok(candidates.remove(0)),
        _ => Err(ResolveError::Ambiguous {
            addr: shown.to_string(),
            names: candidates
                .iter()
                .map(|b| b.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}

fn lookup(name: &str, port: u16) -> Result<Vec<IpAddr>, ResolveError> {
    let addrs = (name, port)
        .to_socket_addrs()
        .map_err(|e| ResolveError::Lookup {
            host: name.to_string(),
            reason: e.to_string(),
        })?;
    Ok(addrs.map(|a| a.ip()).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::collections::BTreeMap;

    fn parse(text: &str) -> Target {
        text.parse().unwrap()
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    /// A LAN that always shows the same boxes and counts how often it was asked.
    struct FakeLan {
        boxes: Vec<FoundBox>,
        browses: Cell<u32>,
    }

    impl Lan for FakeLan {
        fn browse(
            &self,
            _timeout: Duration,
            done: &mut dyn FnMut(&FoundBox) -> bool,
        ) -> Result<Vec<FoundBox>, DiscoverError> {
            self.browses.set(self.browses.get() + 1);
            let mut seen = Vec::new();
            for b in &self.boxes {
                seen.push(b.clone());
                if done(b) {
                    break;
                }
            }
            Ok(seen)
        }
    }

    fn found(name: &str, ips: &[&str], port: u16, fp: Option<&str>) -> FoundBox {
        FoundBox {
            name: name.into(),
            addresses: ips.iter().map(|s| ip(s)).collect(),
            port,
            activated: false,
            fingerprint: fp.map(str::to_string),
            version: Some("0.1.0".into()),
            scope_ids: BTreeMap::new(),
        }
    }

    fn lan(boxes: Vec<FoundBox>) -> FakeLan {
        FakeLan {
            boxes,
            browses: Cell::new(0),
        }
    }

    const T: Duration = Duration::from_secs(5);

    #[test]
    fn a_name_resolves_through_mdns_and_is_verified_by_name() {
        let a = "aa".repeat(32);
        let lan = lan(vec![
            found("backup-0001", &["192.168.1.6"], 443, Some(&"bb".repeat(32))),
            found("backup-abcd", &["192.168.1.5"], 8443, Some(&a)),
        ]);
        let e = resolve(&parse("backup-abcd"), None, &lan, T).unwrap();
        assert_eq!(e.host, "backup-abcd.local");
        assert_eq!(e.label, "backup-abcd");
        assert_eq!(e.port, 8443, "the advertised port");
        assert_eq!(e.connect_to, vec!["192.168.1.5:8443".parse().unwrap()]);
        assert_eq!(e.fingerprint, a);
        assert_eq!(e.base_url(), "https://backup-abcd.local:8443");

        let explicit = "CC:".repeat(31) + "CC";
        let e = resolve(&parse("backup-abcd:9443"), Some(&explicit), &lan, T).unwrap();
        assert_eq!(e.fingerprint, "cc".repeat(32), "--fingerprint wins");
        assert_eq!(e.port, 9443, "an explicit port wins");
        assert_eq!(e.connect_to, vec!["192.168.1.5:9443".parse().unwrap()]);
    }

    #[test]
    fn an_unknown_name_fails_unless_pinned() {
        let lan = lan(vec![]);
        let err = resolve(&parse("backup-dead"), None, &lan, T).unwrap_err();
        assert!(matches!(err, ResolveError::NotFound { .. }), "{err}");
        assert!(err.to_string().contains("--fingerprint"), "{err}");
        let e = resolve(&parse("backup-dead"), Some(&"dd".repeat(32)), &lan, T).unwrap();
        assert_eq!(e.host, "backup-dead.local");
        assert_eq!(e.port, DEFAULT_PORT);
        assert!(e.connect_to.is_empty(), "left to the system resolver");
    }

    #[test]
    fn an_address_takes_the_fingerprint_of_the_box_advertising_it() {
        let a = "aa".repeat(32);
        let lan = lan(vec![found(
            "backup-abcd",
            &["192.168.1.5", "fd00::5"],
            8443,
            Some(&a),
        )]);
        let e = resolve(&parse("fd00::5"), None, &lan, T).unwrap();
        assert_eq!(e.fingerprint, a);
        assert_eq!(e.host, "fd00::5", "verified as the address given");
        assert_eq!(e.label, "backup-abcd");
        assert_eq!(e.base_url(), "https://[fd00::5]:8443");

        let err = resolve(&parse("192.168.1.99"), None, &lan, T).unwrap_err();
        assert!(
            matches!(err, ResolveError::FingerprintUnknown { .. }),
            "{err}"
        );
        assert!(err.to_string().contains("--fingerprint"), "{err}");

        let err = resolve(&parse("192.168.1.5:443"), None, &lan, T).unwrap_err();
        assert!(
            matches!(err, ResolveError::FingerprintUnknown { .. }),
            "a box on another port is another box: {err}"
        );
    }

    #[test]
    fn a_pinned_address_needs_no_mdns() {
        let lan = lan(vec![]);
        let e = resolve(&parse("127.0.0.1:8443"), Some(&"ee".repeat(32)), &lan, T).unwrap();
        assert_eq!(e.base_url(), "https://127.0.0.1:8443");
        assert_eq!(e.console_url(), "https://127.0.0.1:8443");
        assert_eq!(lan.browses.get(), 0);
        let e = resolve(&parse("10.0.0.1"), Some(&"ee".repeat(32)), &lan, T).unwrap();
        assert_eq!(e.console_url(), "https://10.0.0.1");
        let e = resolve(&parse("localhost:8443"), Some(&"ee".repeat(32)), &lan, T).unwrap();
        assert_eq!(e.base_url(), "https://localhost:8443");
        assert_eq!(lan.browses.get(), 0);
    }

    #[test]
    fn bad_or_missing_fingerprints_are_refused() {
        let lan = lan(vec![found(
            "backup-abcd",
            &["192.168.1.5"],
            443,
            Some("xyz"),
        )]);
        let err = resolve(&parse("backup-abcd"), None, &lan, T).unwrap_err();
        assert!(
            matches!(err, ResolveError::NoAdvertisedFingerprint { .. }),
            "{err}"
        );
        let err = resolve(&parse("backup-abcd"), Some("1234"), &lan, T).unwrap_err();
        assert!(matches!(err, ResolveError::BadFingerprint(_)), "{err}");
    }

    #[test]
    fn two_boxes_on_one_address_are_told_apart_by_port() {
        let boxes = vec![
            found("backup-0001", &["127.0.0.1"], 8443, Some(&"aa".repeat(32))),
            found("backup-0002", &["127.0.0.1"], 9443, Some(&"bb".repeat(32))),
        ];
        let e = resolve(&parse("127.0.0.1:9443"), None, &lan(boxes.clone()), T).unwrap();
        assert_eq!(e.fingerprint, "bb".repeat(32));
        assert_eq!(e.label, "backup-0002");
        // A browse that ran to its end saw both: without a port, no guessing.
        let err = resolve(&parse("127.0.0.1"), None, &NoStop(boxes), T).unwrap_err();
        assert!(matches!(err, ResolveError::Ambiguous { .. }), "{err}");
        assert!(
            err.to_string().contains("backup-0001, backup-0002"),
            "{err}"
        );
    }

    /// A LAN whose browse runs to its timeout.
    struct NoStop(Vec<FoundBox>);

    impl Lan for NoStop {
        fn browse(
            &self,
            _timeout: Duration,
            _done: &mut dyn FnMut(&FoundBox) -> bool,
        ) -> Result<Vec<FoundBox>, DiscoverError> {
            Ok(self.0.clone())
        }
    }
}
