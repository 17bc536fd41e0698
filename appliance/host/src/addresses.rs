//! The box's LAN addresses: shown on the box page and written into the server certificate.

use std::net::IpAddr;

/// The addresses of `interface` (or of every interface when `None`), without loopback
/// and IPv6 link-local addresses, sorted and deduplicated.
///
/// IPv6 link-local addresses are left out because they mean nothing without a zone
/// (`%eth0`) and cannot go into a certificate; IPv4 link-local (169.254/16) stays, since
/// it is all a box without DHCP has. An unreadable address list gives an empty list: the
/// caller shows "no address" rather than failing.
pub fn lan_addresses(interface: Option<&str>) -> Vec<IpAddr> {
    match if_addrs::get_if_addrs() {
        Ok(found) => select_addresses(found.iter().map(|i| (i.name.as_str(), i.ip())), interface),
        Err(err) => {
            tracing::warn!("cannot list the network addresses: {err}");
            Vec::new()
        }
    }
}

fn select_addresses<'a>(
    found: impl Iterator<Item = (&'a str, IpAddr)>,
    interface: Option<&str>,
) -> Vec<IpAddr> {
    let mut addresses: Vec<IpAddr> = found
        .filter(|(name, _)| interface.is_none_or(|wanted| wanted == *name))
        .map(|(_, ip)| ip)
        .filter(|ip| !ip.is_loopback() && !is_ipv6_link_local(ip))
        .collect();
    addresses.sort();
    addresses.dedup();
    addresses
}

/// fe80::/10.
fn is_ipv6_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
        IpAddr::V4(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sample() -> Vec<(&'static str, IpAddr)> {
        vec![
            ("lo", ip("127.0.0.1")),
            ("lo", ip("::1")),
            ("eth0", ip("192.168.1.20")),
            ("eth0", ip("fe80::5054:ff:fe12:abcd")),
            ("eth0", ip("febf::1")),
            ("eth0", ip("2001:db8::20")),
            ("eth0", ip("10.0.0.5")),
            ("eth1", ip("169.254.10.1")),
            ("br0", ip("10.0.0.5")),
        ]
    }

    #[test]
    fn all_interfaces_without_loopback_and_link_local_v6() {
        let got = select_addresses(sample().into_iter(), None);
        let want: Vec<IpAddr> = ["10.0.0.5", "169.254.10.1", "192.168.1.20", "2001:db8::20"]
            .into_iter()
            .map(ip)
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn one_interface() {
        let got = select_addresses(sample().into_iter(), Some("eth0"));
        let want: Vec<IpAddr> = ["10.0.0.5", "192.168.1.20", "2001:db8::20"]
            .into_iter()
            .map(ip)
            .collect();
        assert_eq!(got, want);
        assert!(select_addresses(sample().into_iter(), Some("lo")).is_empty());
        assert!(select_addresses(sample().into_iter(), Some("absent")).is_empty());
    }

    #[test]
    fn link_local_range_is_fe80_slash_10() {
        assert!(is_ipv6_link_local(&ip("fe80::1")));
        assert!(is_ipv6_link_local(&ip("febf:ffff::1")));
        assert!(!is_ipv6_link_local(&ip("fec0::1")));
        assert!(!is_ipv6_link_local(&ip("169.254.0.1")));
    }

    #[test]
    fn reads_this_machine() {
        assert!(lan_addresses(None).iter().all(|a| !a.is_loopback()));
    }
}
