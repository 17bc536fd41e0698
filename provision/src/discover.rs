//! Finding boxes on the LAN: browse the `_abri._tcp` mDNS service for a bounded time.
//!
//! Each box announces its host name, HTTPS port, addresses and three TXT keys (state,
//! CA fingerprint, version). Announcements arrive per interface and per address family, so
//! the same box may resolve several times: entries are merged by name.

use abri_proto::mdns::{SERVICE_ABRI, STATE_ACTIVATED, TXT_FINGERPRINT, TXT_STATE, TXT_VERSION};
use mdns_sd::{ResolvedService, ScopedIp, ServiceDaemon, ServiceEvent};
use serde::Serialize;
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::{Duration, Instant};

/// One box as seen through mDNS.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FoundBox {
    /// Host name without `.local`, e.g. `backup-abcd`.
    pub name: String,
    /// IPv4 first, then IPv6 (link-local last).
    pub addresses: Vec<IpAddr>,
    /// HTTPS port of the console and API.
    pub port: u16,
    pub activated: bool,
    /// Lower-case hex SHA-256 of the box CA, as advertised (TXT `fp`).
    pub fingerprint: Option<String>,
    pub version: Option<String>,
    /// Interface index of each link-local IPv6 address: needed to connect to it.
    #[serde(skip)]
    pub scope_ids: BTreeMap<Ipv6Addr, u32>,
}

impl FoundBox {
    /// Reads what matters to us from an mDNS resolution.
    pub fn from_resolved(service: &ResolvedService) -> Self {
        let mut found = FoundBox {
            name: box_name(&service.host, &service.fullname, &service.ty_domain),
            addresses: Vec::new(),
            port: service.port,
            activated: service.get_property_val_str(TXT_STATE) == Some(STATE_ACTIVATED),
            fingerprint: service
                .get_property_val_str(TXT_FINGERPRINT)
                .map(str::to_string),
            version: service
                .get_property_val_str(TXT_VERSION)
                .map(str::to_string),
            scope_ids: BTreeMap::new(),
        };
        for ip in &service.addresses {
            if let ScopedIp::V6(v6) = ip
                && v6.scope_id().index != 0
            {
                found.scope_ids.insert(*v6.addr(), v6.scope_id().index);
            }
            found.addresses.push(ip.to_ip_addr());
        }
        found.sort_addresses();
        found
    }

    /// Where to connect to this box on `port`, in order of preference.
    pub fn socket_addrs(&self, port: u16) -> Vec<SocketAddr> {
        self.addresses
            .iter()
            .filter_map(|ip| match ip {
                IpAddr::V6(v6) if is_link_local(v6) => {
                    // A link-local address without its interface cannot be reached.
                    let scope = *self.scope_ids.get(v6)?;
                    Some(SocketAddr::V6(SocketAddrV6::new(*v6, port, 0, scope)))
                }
                _ => Some(SocketAddr::new(*ip, port)),
            })
            .collect()
    }

    /// Folds a later announcement of the same box into this one: newest TXT wins, addresses
    /// accumulate.
    fn merge(&mut self, newer: FoundBox) {
        for ip in newer.addresses {
            if !self.addresses.contains(&ip) {
                self.addresses.push(ip);
            }
        }
        self.scope_ids.extend(newer.scope_ids);
        self.sort_addresses();
        self.port = newer.port;
        self.activated = newer.activated;
        if newer.fingerprint.is_some() {
            self.fingerprint = newer.fingerprint;
        }
        if newer.version.is_some() {
            self.version = newer.version;
        }
    }

    fn sort_addresses(&mut self) {
        self.addresses.sort_by_key(|ip| {
            let rank = match ip {
                IpAddr::V4(_) => 0,
                IpAddr::V6(v6) if is_link_local(v6) => 2,
                IpAddr::V6(_) => 1,
            };
            (rank, *ip)
        });
    }
}

fn is_link_local(ip: &Ipv6Addr) -> bool {
    (ip.segments()[0] & 0xffc0) == 0xfe80
}

/// `backup-abcd.local.` gives `backup-abcd`; without a host name, the service instance name.
fn box_name(host: &str, fullname: &str, ty_domain: &str) -> String {
    let host = host.trim_end_matches('.');
    let host = strip_suffix_ignore_case(host, ".local").unwrap_or(host);
    if !host.is_empty() {
        return host.to_ascii_lowercase();
    }
    let instance = fullname.strip_suffix(ty_domain).unwrap_or(fullname);
    instance.trim_end_matches('.').to_ascii_lowercase()
}

fn strip_suffix_ignore_case<'a>(text: &'a str, suffix: &str) -> Option<&'a str> {
    let cut = text.len().checked_sub(suffix.len())?;
    let (head, tail) = (text.get(..cut)?, text.get(cut..)?);
    tail.eq_ignore_ascii_case(suffix).then_some(head)
}

/// Boxes seen so far, merged by name.
#[derive(Default)]
struct Sightings(BTreeMap<String, FoundBox>);

impl Sightings {
    /// Records a sighting and returns the merged entry.
    fn record(&mut self, found: FoundBox) -> &FoundBox {
        use std::collections::btree_map::Entry;
        match self.0.entry(found.name.clone()) {
            Entry::Occupied(mut entry) => {
                entry.get_mut().merge(found);
                entry.into_mut()
            }
            Entry::Vacant(entry) => entry.insert(found),
        }
    }

    fn into_sorted(self) -> Vec<FoundBox> {
        self.0.into_values().collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    #[error("cannot start mDNS discovery on this machine: {0}")]
    Start(String),
}

/// Something that can list the boxes on the LAN; the resolution logic is tested against a
/// fake.
pub trait Lan {
    /// Browses for at most `timeout`, or until `done` returns true for a (merged) box.
    /// Returns every box seen, sorted by name.
    fn browse(
        &self,
        timeout: Duration,
        done: &mut dyn FnMut(&FoundBox) -> bool,
    ) -> Result<Vec<FoundBox>, DiscoverError>;
}

/// The real LAN, through multicast DNS. Blocking: call it from `spawn_blocking`.
pub struct Mdns;

impl Lan for Mdns {
    fn browse(
        &self,
        timeout: Duration,
        done: &mut dyn FnMut(&FoundBox) -> bool,
    ) -> Result<Vec<FoundBox>, DiscoverError> {
        let daemon = ServiceDaemon::new().map_err(|e| DiscoverError::Start(e.to_string()))?;
        let events = match daemon.browse(SERVICE_ABRI) {
            Ok(events) => events,
            Err(e) => {
                shut_down(&daemon);
                return Err(DiscoverError::Start(e.to_string()));
            }
        };
        let deadline = Instant::now() + timeout;
        let mut seen = Sightings::default();
        // Ends at the deadline, or early if the daemon stops (the channel then closes).
        while let Ok(event) = events.recv_deadline(deadline) {
            if let ServiceEvent::ServiceResolved(service) = event {
                if !service.is_valid() {
                    continue;
                }
                let merged = seen.record(FoundBox::from_resolved(&service));
                if done(merged) {
                    break;
                }
            }
        }
        shut_down(&daemon);
        Ok(seen.into_sorted())
    }
}

/// Stops the daemon's thread and waits briefly for it, so no socket outlives the browse.
fn shut_down(daemon: &ServiceDaemon) {
    let _ = daemon.stop_browse(SERVICE_ABRI);
    if let Ok(status) = daemon.shutdown() {
        let _ = status.recv_timeout(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mdns_sd::ServiceInfo;
    use std::collections::HashMap;

    fn resolved(host: &str, ips: &[&str], txt: &[(&str, &str)]) -> ResolvedService {
        let props: HashMap<String, String> = txt
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let ips: Vec<IpAddr> = ips.iter().map(|s| s.parse().unwrap()).collect();
        ServiceInfo::new(SERVICE_ABRI, "backup-abcd", host, &ips[..], 8443, props)
            .unwrap()
            .as_resolved_service()
    }

    #[test]
    fn reads_name_addresses_and_txt() {
        let fp = "ab".repeat(32);
        let service = resolved(
            "backup-abcd.local.",
            &["fd00::5", "192.168.1.5"],
            &[
                (TXT_STATE, STATE_ACTIVATED),
                (TXT_FINGERPRINT, &fp),
                (TXT_VERSION, "0.1.0"),
            ],
        );
        let found = FoundBox::from_resolved(&service);
        assert_eq!(found.name, "backup-abcd");
        assert_eq!(
            found.addresses,
            vec![
                "192.168.1.5".parse::<IpAddr>().unwrap(),
                "fd00::5".parse().unwrap()
            ]
        );
        assert_eq!(found.port, 8443);
        assert!(found.activated);
        assert_eq!(found.fingerprint.as_deref(), Some(fp.as_str()));
        assert_eq!(found.version.as_deref(), Some("0.1.0"));
        let json = serde_json::to_value(&found).unwrap();
        assert_eq!(json["addresses"][0], "192.168.1.5");
        assert_eq!(json["name"], "backup-abcd");
        assert!(json.get("scope_ids").is_none());
    }

    #[test]
    fn a_new_box_is_not_activated() {
        let service = resolved("backup-abcd.local.", &["10.0.0.2"], &[(TXT_STATE, "new")]);
        let found = FoundBox::from_resolved(&service);
        assert!(!found.activated);
        assert_eq!(found.fingerprint, None);
    }

    #[test]
    fn names_come_from_the_host_or_else_the_instance() {
        assert_eq!(
            box_name("Backup-ABCD.local.", "x._abri._tcp.local.", SERVICE_ABRI),
            "backup-abcd"
        );
        assert_eq!(
            box_name("", "backup-beef._abri._tcp.local.", SERVICE_ABRI),
            "backup-beef"
        );
        assert_eq!(box_name("plain.", "", SERVICE_ABRI), "plain");
    }

    #[test]
    fn sightings_merge_by_name() {
        let mut seen = Sightings::default();
        seen.record(FoundBox::from_resolved(&resolved(
            "backup-abcd.local.",
            &["192.168.1.5"],
            &[(TXT_STATE, "new")],
        )));
        let merged = seen
            .record(FoundBox::from_resolved(&resolved(
                "backup-abcd.local.",
                &["fd00::5", "192.168.1.5"],
                &[(TXT_STATE, STATE_ACTIVATED)],
            )))
            .clone();
        seen.record(FoundBox::from_resolved(&resolved(
            "backup-0001.local.",
            &["192.168.1.6"],
            &[],
        )));
        assert_eq!(merged.addresses.len(), 2);
        assert!(merged.activated, "the newest state wins");
        let all = seen.into_sorted();
        let names: Vec<&str> = all.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["backup-0001", "backup-abcd"]);
    }

    #[test]
    fn link_local_addresses_need_their_interface() {
        let mut found = FoundBox::from_resolved(&resolved(
            "backup-abcd.local.",
            &["fe80::1", "192.168.1.5"],
            &[],
        ));
        assert_eq!(found.socket_addrs(443).len(), 1, "no scope known yet");
        found.scope_ids.insert("fe80::1".parse().unwrap(), 3);
        let addrs = found.socket_addrs(443);
        assert_eq!(addrs[0], "192.168.1.5:443".parse().unwrap());
        assert_eq!(addrs[1], "[fe80::1%3]:443".parse().unwrap());
    }
}
