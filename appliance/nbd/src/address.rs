//! Where an NBD export lives, written as an NBD URI (the NBD project's `uri.md`):
//! `nbd+unix:///EXPORT?socket=/path/to.sock` or `nbd://HOST[:PORT]/EXPORT`.
//!
//! Parsing is strict: TLS schemes and parameters, user info, fragments and unknown query
//! parameters are refused with a message that says which part is wrong, because a
//! misread address would image the wrong disk or none at all.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use percent_encoding::{AsciiSet, CONTROLS, percent_decode_str, utf8_percent_encode};
use url::{Host, Url};

/// The port IANA assigned to NBD, used when `nbd://HOST/...` names none.
pub const DEFAULT_PORT: u16 = 10809;

/// The protocol's limit on strings such as export names.
pub(crate) const MAX_STRING: usize = 4096;

/// How to reach the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A Unix domain socket on this machine (how the agent reaches `qemu-nbd`).
    Unix(PathBuf),
    /// A TCP server; `host` is a name or an IP address (IPv6 without brackets).
    Tcp { host: String, port: u16 },
}

/// An export on a server: the endpoint plus the export name (possibly empty, the
/// server's default export).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub endpoint: Endpoint,
    pub export: String,
}

/// A string that is not an NBD URI this client can use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid NBD address '{uri}': {problem}")]
pub struct AddressError {
    /// The text as given (user info, if any, replaced by `***`).
    pub uri: String,
    pub problem: AddressProblem,
}

/// What is wrong with an NBD URI.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressProblem {
    #[error(
        "not a URI ({0}); expected nbd+unix:///EXPORT?socket=/path/to.sock or nbd://HOST[:PORT]/EXPORT"
    )]
    Syntax(String),
    #[error(
        "scheme '{0}' requires TLS, which this client does not speak (it is meant for local sockets); use nbd or nbd+unix"
    )]
    TlsScheme(String),
    #[error("unsupported scheme '{0}'; expected nbd or nbd+unix")]
    Scheme(String),
    #[error("nbd:// needs a host, as in nbd://HOST[:PORT]/EXPORT")]
    MissingHost,
    #[error("port 0 is not a port a server can listen on")]
    PortZero,
    #[error("nbd+unix takes no host or port (found '{0}'); the socket goes in ?socket=/path")]
    UnixAuthority(String),
    #[error("nbd+unix needs a socket parameter, as in nbd+unix:///EXPORT?socket=/path/to.sock")]
    MissingSocket,
    #[error("abstract Unix sockets (a socket name starting with NUL) are not supported")]
    AbstractSocket,
    #[error("query parameter '{0}' is given more than once")]
    DuplicateParameter(String),
    #[error("query parameter '{0}' is for TLS, which this client does not speak")]
    TlsParameter(String),
    #[error("unknown query parameter '{0}' for scheme {1}")]
    UnknownParameter(String, &'static str),
    #[error(
        "user info (user@) is only used for TLS authentication, which this client does not speak"
    )]
    UserInfo,
    #[error("a fragment (#...) has no meaning in an NBD URI")]
    Fragment,
    #[error("the {0} is not valid UTF-8 once percent-decoded")]
    NotUtf8(&'static str),
    #[error("the export name contains a NUL character")]
    NulInExport,
    #[error("the export name is longer than {MAX_STRING} bytes")]
    ExportTooLong,
}

impl Address {
    /// An export behind a Unix domain socket.
    pub fn unix(socket: impl Into<PathBuf>, export: impl Into<String>) -> Address {
        Address {
            endpoint: Endpoint::Unix(socket.into()),
            export: export.into(),
        }
    }

    /// An export on a TCP server.
    pub fn tcp(host: impl Into<String>, port: u16, export: impl Into<String>) -> Address {
        Address {
            endpoint: Endpoint::Tcp {
                host: host.into(),
                port,
            },
            export: export.into(),
        }
    }

    /// Parses an NBD URI: `nbd+unix:///EXPORT?socket=PATH` or `nbd://HOST[:PORT]/EXPORT`.
    /// The export name is the percent-decoded path without its leading `/`.
    pub fn parse(uri: &str) -> Result<Address, AddressError> {
        let fail = |problem| AddressError {
            uri: uri.to_string(),
            problem,
        };
        let url = Url::parse(uri).map_err(|e| fail(AddressProblem::Syntax(e.to_string())))?;
        if !url.username().is_empty() || url.password().is_some() {
            let mut redacted = url.clone();
            // Both calls only fail for URLs without a host, which cannot carry user info.
            let _ = redacted.set_username("***");
            let _ = redacted.set_password(None);
            return Err(AddressError {
                uri: redacted.to_string(),
                problem: AddressProblem::UserInfo,
            });
        }
        if url.fragment().is_some() {
            return Err(fail(AddressProblem::Fragment));
        }
        let scheme = url.scheme();
        let tcp = match scheme {
            "nbd" => true,
            "nbd+unix" => false,
            "nbds" | "nbds+unix" => return Err(fail(AddressProblem::TlsScheme(scheme.into()))),
            other => return Err(fail(AddressProblem::Scheme(other.into()))),
        };
        if url.cannot_be_a_base() {
            return Err(fail(AddressProblem::Syntax(
                "the export must follow a '/'".into(),
            )));
        }
        let export = decode_export(url.path()).map_err(fail)?;
        let params = query_parameters(url.query().unwrap_or("")).map_err(fail)?;

        let endpoint = if tcp {
            if let Some((name, _)) = params.first() {
                let problem = if name.starts_with("tls-") {
                    AddressProblem::TlsParameter(name.clone())
                } else {
                    AddressProblem::UnknownParameter(name.clone(), "nbd")
                };
                return Err(fail(problem));
            }
            let host = match url.host() {
                None => return Err(fail(AddressProblem::MissingHost)),
                Some(Host::Domain("")) => return Err(fail(AddressProblem::MissingHost)),
                Some(Host::Domain(name)) => {
                    let decoded = percent_decode_str(name)
                        .decode_utf8()
                        .map_err(|_| fail(AddressProblem::NotUtf8("host")))?;
                    decoded.into_owned()
                }
                Some(Host::Ipv4(ip)) => ip.to_string(),
                Some(Host::Ipv6(ip)) => ip.to_string(),
            };
            let port = url.port().unwrap_or(DEFAULT_PORT);
            if port == 0 {
                return Err(fail(AddressProblem::PortZero));
            }
            Endpoint::Tcp { host, port }
        } else {
            let host = url.host_str().unwrap_or("");
            if !host.is_empty() || url.port().is_some() {
                let authority = match url.port() {
                    Some(port) => format!("{host}:{port}"),
                    None => host.to_string(),
                };
                return Err(fail(AddressProblem::UnixAuthority(authority)));
            }
            let mut socket = None;
            for (name, value) in params {
                match name.as_str() {
                    "socket" => socket = Some(value),
                    tls if tls.starts_with("tls-") => {
                        return Err(fail(AddressProblem::TlsParameter(name)));
                    }
                    _ => return Err(fail(AddressProblem::UnknownParameter(name, "nbd+unix"))),
                }
            }
            match socket {
                None => return Err(fail(AddressProblem::MissingSocket)),
                Some(path) if path.is_empty() => return Err(fail(AddressProblem::MissingSocket)),
                Some(path) if path.starts_with('\0') => {
                    return Err(fail(AddressProblem::AbstractSocket));
                }
                Some(path) => Endpoint::Unix(PathBuf::from(path)),
            }
        };
        Ok(Address { endpoint, export })
    }
}

impl FromStr for Address {
    type Err = AddressError;

    fn from_str(s: &str) -> Result<Address, AddressError> {
        Address::parse(s)
    }
}

/// Characters escaped when an address is written back as a URI.
const ESCAPED: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'&')
    .add(b'+')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}');

impl fmt::Display for Address {
    /// The NBD URI of this address (parsing it gives the same address back).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let export = utf8_percent_encode(&self.export, ESCAPED);
        match &self.endpoint {
            Endpoint::Unix(path) => {
                let path = path.to_string_lossy();
                let socket = utf8_percent_encode(&path, ESCAPED);
                write!(f, "nbd+unix:///{export}?socket={socket}")
            }
            Endpoint::Tcp { host, port } if host.contains(':') => {
                write!(f, "nbd://[{host}]:{port}/{export}")
            }
            Endpoint::Tcp { host, port } => write!(f, "nbd://{host}:{port}/{export}"),
        }
    }
}

fn decode_export(path: &str) -> Result<String, AddressProblem> {
    let raw = path.strip_prefix('/').unwrap_or(path);
    let export = percent_decode_str(raw)
        .decode_utf8()
        .map_err(|_| AddressProblem::NotUtf8("export name"))?;
    if export.contains('\0') {
        return Err(AddressProblem::NulInExport);
    }
    if export.len() > MAX_STRING {
        return Err(AddressProblem::ExportTooLong);
    }
    Ok(export.into_owned())
}

/// `a=b&c=d`, percent-decoded. Unlike HTML forms, `+` stays a plus (RFC 3986 rules).
fn query_parameters(query: &str) -> Result<Vec<(String, String)>, AddressProblem> {
    let mut params: Vec<(String, String)> = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = percent_decode_str(name)
            .decode_utf8()
            .map_err(|_| AddressProblem::NotUtf8("query parameter name"))?
            .into_owned();
        let value = percent_decode_str(value)
            .decode_utf8()
            .map_err(|_| AddressProblem::NotUtf8("query parameter value"))?
            .into_owned();
        if params.iter().any(|(seen, _)| *seen == name) {
            return Err(AddressProblem::DuplicateParameter(name));
        }
        params.push((name, value));
    }
    Ok(params)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(uri: &str) -> AddressProblem {
        Address::parse(uri).expect_err(uri).problem
    }

    #[test]
    fn unix_socket_uris() {
        let a = Address::parse("nbd+unix:///disk?socket=/run/abri/vm%201.sock").unwrap();
        assert_eq!(a, Address::unix("/run/abri/vm 1.sock", "disk"));
        let a = Address::parse("nbd+unix:///?socket=s.sock").unwrap();
        assert_eq!(a, Address::unix("s.sock", ""));
        // A plus sign in a path is a plus sign, not a space.
        let a = Address::parse("nbd+unix:///a+b?socket=/tmp/x+y").unwrap();
        assert_eq!(a, Address::unix("/tmp/x+y", "a+b"));
    }

    #[test]
    fn tcp_uris() {
        assert_eq!(
            Address::parse("nbd://example.com/disk").unwrap(),
            Address::tcp("example.com", DEFAULT_PORT, "disk")
        );
        assert_eq!(
            Address::parse("nbd://127.0.0.1:10900/hello%20world").unwrap(),
            Address::tcp("127.0.0.1", 10900, "hello world")
        );
        assert_eq!(
            Address::parse("nbd://[::1]:9000//disk").unwrap(),
            Address::tcp("::1", 9000, "/disk")
        );
        assert_eq!(
            Address::parse("nbd://example.com").unwrap(),
            Address::tcp("example.com", DEFAULT_PORT, "")
        );
    }

    #[test]
    fn display_round_trips() {
        for a in [
            Address::unix("/run/a b/q?#&+%.sock", "ex port+1"),
            Address::unix("/s", ""),
            Address::tcp("::1", 10809, "disk"),
            Address::tcp("host.example", 1, "é/x"),
        ] {
            let text = a.to_string();
            assert_eq!(Address::parse(&text).unwrap(), a, "{text}");
        }
    }

    #[test]
    fn bad_uris_are_refused_with_the_reason() {
        use AddressProblem as P;
        assert!(matches!(problem("/dev/nbd0"), P::Syntax(_)));
        assert!(matches!(problem(""), P::Syntax(_)));
        assert_eq!(problem("nbds://h/x"), P::TlsScheme("nbds".into()));
        assert_eq!(
            problem("nbds+unix:///x?socket=/s"),
            P::TlsScheme("nbds+unix".into())
        );
        assert_eq!(problem("http://h/x"), P::Scheme("http".into()));
        assert_eq!(problem("nbd+vsock://1:2/x"), P::Scheme("nbd+vsock".into()));
        assert_eq!(problem("nbd:///x"), P::MissingHost);
        assert_eq!(problem("nbd://h:0/x"), P::PortZero);
        assert!(matches!(problem("nbd://h:99999/x"), P::Syntax(_)));
        assert_eq!(problem("nbd+unix:///x"), P::MissingSocket);
        assert_eq!(problem("nbd+unix:///x?socket="), P::MissingSocket);
        assert_eq!(
            problem("nbd+unix://host/x?socket=/s"),
            P::UnixAuthority("host".into())
        );
        assert_eq!(problem("nbd+unix:///x?socket=%00abs"), P::AbstractSocket);
        assert_eq!(
            problem("nbd+unix:///x?socket=/a&socket=/b"),
            P::DuplicateParameter("socket".into())
        );
        assert_eq!(
            problem("nbd+unix:///x?socket=/s&tls-type=x509"),
            P::TlsParameter("tls-type".into())
        );
        assert_eq!(
            problem("nbd+unix:///x?socket=/s&sockets=/t"),
            P::UnknownParameter("sockets".into(), "nbd+unix")
        );
        assert_eq!(
            problem("nbd://h/x?socket=/s"),
            P::UnknownParameter("socket".into(), "nbd")
        );
        assert_eq!(problem("nbd://h/x#frag"), P::Fragment);
        assert_eq!(problem("nbd://h/%ff"), P::NotUtf8("export name"));
        assert_eq!(problem("nbd://h/a%00b"), P::NulInExport);
        let long = format!("nbd://h/{}", "x".repeat(MAX_STRING + 1));
        assert_eq!(problem(&long), P::ExportTooLong);
    }

    #[test]
    fn user_info_is_refused_and_never_echoed() {
        let err = Address::parse("nbd://alice:s3cret@h/x").unwrap_err();
        assert_eq!(err.problem, AddressProblem::UserInfo);
        let text = err.to_string();
        assert!(
            !text.contains("s3cret") && !text.contains("alice"),
            "{text}"
        );
    }
}
