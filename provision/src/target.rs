//! The BOX argument as typed: a box name, an address, `host:port` or an `https://` URL,
//! parsed into a [`Host`] and an optional port. Resolving it is `resolve`'s job.

use std::net::{IpAddr, Ipv6Addr};
use std::str::FromStr;

/// The host part of BOX.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// A box's mDNS name without `.local`, e.g. `backup-abcd`.
    Mdns(String),
    Ip(IpAddr),
    /// Any other DNS name, e.g. `backup.abcd.example.com` or `localhost`.
    Dns(String),
}

/// BOX as typed: a host and perhaps a port.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub host: Host,
    pub port: Option<u16>,
}

#[derive(Debug, thiserror::Error)]
#[error(
    "box {given:?} is not a box name (backup-abcd), an address (192.168.1.20, [fd00::2]), \
     host:port or https://host:port: {why}"
)]
pub struct BadTarget {
    given: String,
    why: String,
}

impl FromStr for Target {
    type Err = BadTarget;

    fn from_str(text: &str) -> Result<Self, BadTarget> {
        let bad = |why: String| BadTarget {
            given: text.to_string(),
            why,
        };
        let given = text.trim();
        if given.is_empty() {
            return Err(bad("it is empty".into()));
        }
        let authority = match given.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => {
                // A URL pasted from a browser may carry a path: only the authority matters.
                let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
                &rest[..end]
            }
            Some((scheme, _)) => {
                return Err(bad(format!(
                    "the box answers on https:// only, not {scheme}://"
                )));
            }
            None => given,
        };
        if authority.is_empty() {
            return Err(bad("the host is missing".into()));
        }
        if authority.contains('@') {
            return Err(bad("a user name has no place here".into()));
        }
        let (host, port) = split_host_port(authority).map_err(bad)?;
        let port = port.map(parse_port).transpose().map_err(bad)?;
        Ok(Target { host, port })
    }
}

/// Splits `host`, `host:port`, `[v6]`, `[v6]:port` or a bare IPv6 address.
fn split_host_port(authority: &str) -> Result<(Host, Option<&str>), String> {
    if let Some(rest) = authority.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or("an IPv6 address opened with [ must be closed with ]")?;
        let ip: Ipv6Addr = inside
            .parse()
            .map_err(|_| format!("{inside:?} is not an IPv6 address"))?;
        let port = match after {
            "" => None,
            _ => Some(
                after
                    .strip_prefix(':')
                    .ok_or(format!("unexpected {after:?} after the address"))?,
            ),
        };
        return Ok((Host::Ip(IpAddr::V6(ip)), port));
    }
    match authority.matches(':').count() {
        0 => Ok((parse_host(authority)?, None)),
        1 => {
            let (host, port) = authority.split_once(':').ok_or("unreachable")?;
            Ok((parse_host(host)?, Some(port)))
        }
        _ => authority
            .parse::<Ipv6Addr>()
            .map(|ip| (Host::Ip(IpAddr::V6(ip)), None))
            .map_err(|_| {
                format!(
                    "{authority:?} is not an IPv6 address (with a port, write it [address]:port)"
                )
            }),
    }
}

fn parse_port(text: &str) -> Result<u16, String> {
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("port {text:?} is not a number from 1 to 65535")),
    }
}

fn parse_host(text: &str) -> Result<Host, String> {
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(Host::Ip(ip));
    }
    let name = text.strip_suffix('.').unwrap_or(text).to_ascii_lowercase();
    if name.is_empty() {
        return Err("the host is missing".into());
    }
    let labels_ok = name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if !labels_ok {
        return Err(format!(
            "{text:?} is not a host name (letters, digits and dashes between dots)"
        ));
    }
    if name
        .split('.')
        .all(|label| label.chars().all(|c| c.is_ascii_digit()))
    {
        return Err(format!("{text:?} is not a valid IPv4 address"));
    }
    if name == "localhost" {
        return Ok(Host::Dns(name));
    }
    match name.strip_suffix(".local") {
        Some(short) => Ok(Host::Mdns(short.to_string())),
        None if !name.contains('.') => Ok(Host::Mdns(name)),
        None => Ok(Host::Dns(name)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Target {
        text.parse()
            .unwrap_or_else(|e| panic!("{text:?} should parse: {e}"))
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn parses_box_names() {
        let want = Target {
            host: Host::Mdns("backup-abcd".into()),
            port: None,
        };
        assert_eq!(parse("backup-abcd"), want);
        assert_eq!(parse("backup-abcd.local"), want);
        assert_eq!(parse("Backup-ABCD.local."), want);
        assert_eq!(parse("  backup-abcd  "), want);
        assert_eq!(
            parse("backup-abcd.local:8443"),
            Target {
                host: Host::Mdns("backup-abcd".into()),
                port: Some(8443)
            }
        );
        assert_eq!(
            parse("backup.abcd.acme.example").host,
            Host::Dns("backup.abcd.acme.example".into())
        );
        assert_eq!(parse("localhost:8443").host, Host::Dns("localhost".into()));
    }

    #[test]
    fn parses_addresses() {
        assert_eq!(
            parse("192.168.1.20"),
            Target {
                host: Host::Ip(ip("192.168.1.20")),
                port: None
            }
        );
        assert_eq!(parse("192.168.1.20:8443").port, Some(8443));
        assert_eq!(
            parse("[fd00::2]:8443"),
            Target {
                host: Host::Ip(ip("fd00::2")),
                port: Some(8443)
            }
        );
        assert_eq!(parse("[::1]").host, Host::Ip(ip("::1")));
        assert_eq!(parse("fd00::2").host, Host::Ip(ip("fd00::2")));
    }

    #[test]
    fn parses_urls() {
        assert_eq!(
            parse("https://backup-abcd.local"),
            Target {
                host: Host::Mdns("backup-abcd".into()),
                port: None
            }
        );
        assert_eq!(
            parse("HTTPS://127.0.0.1:8443/dashboard?x=1"),
            Target {
                host: Host::Ip(ip("127.0.0.1")),
                port: Some(8443)
            }
        );
        assert_eq!(parse("https://[::1]:9/").host, Host::Ip(ip("::1")));
    }

    #[test]
    fn garbage_gets_a_clear_error() {
        let cases = [
            ("", "empty"),
            ("   ", "empty"),
            ("http://backup-abcd.local", "https:// only"),
            ("ftp://x", "https:// only"),
            ("https://", "host is missing"),
            ("https:///path", "host is missing"),
            ("backup_abcd", "not a host name"),
            ("backup abcd", "not a host name"),
            ("-backup", "not a host name"),
            ("a..b", "not a host name"),
            ("1.2.3.999", "not a valid IPv4"),
            ("[::1", "must be closed"),
            ("[nope]:1", "not an IPv6"),
            ("[::1]x", "unexpected"),
            ("fd00::2:8443:zz", "not an IPv6"),
            ("backup-abcd:0", "port"),
            ("backup-abcd:99999", "port"),
            ("backup-abcd:", "port"),
            ("user@backup-abcd", "user name"),
            (":443", "host is missing"),
        ];
        for (text, needle) in cases {
            let err = text.parse::<Target>().unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?}: {err:?} lacks {needle:?}");
            assert!(err.contains("is not a box name"), "{text:?}: {err:?}");
        }
    }
}
