//! The relay settings, as stored by abrid and edited in the console.

use std::fmt;
use std::net::IpAddr;

use lettre::Address;
use serde::{Deserialize, Serialize};

/// The most recipients a setting or a message may have: alerts go to a few people; more
/// is a mistake (or abuse of the box as a mailer).
pub const MAX_RECIPIENTS: usize = 50;

/// How the connection to the relay is protected.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Security {
    /// Plain connection upgraded with STARTTLS; failing the upgrade fails the send
    /// (usually port 587).
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
    /// No encryption (a relay inside the LAN, usually port 25).
    None,
}

/// Where and how the box sends its mail.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelaySettings {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// Login, with `password`; an empty string counts as none.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// The From address of every mail.
    pub sender: String,
    /// Where alerts and digests go.
    pub recipients: Vec<String>,
}

impl RelaySettings {
    /// Checks every field; the error names the first field at fault.
    pub fn validate(&self) -> Result<(), String> {
        if self.host.is_empty() {
            return Err("host: the relay's name or IP address is required".into());
        }
        if !is_host(&self.host) {
            return Err(format!(
                "host: '{}' is not a host name or an IP address",
                shorten(&self.host)
            ));
        }
        if self.port == 0 {
            return Err("port: must be between 1 and 65535".into());
        }
        check_address("sender", &self.sender)?;
        if self.recipients.len() > MAX_RECIPIENTS {
            return Err(format!(
                "recipients: at most {MAX_RECIPIENTS} addresses ({} given)",
                self.recipients.len()
            ));
        }
        for recipient in &self.recipients {
            check_address("recipients", recipient)?;
        }
        match (non_empty(&self.user), non_empty(&self.password)) {
            (Some(_), None) => Err("password: required when a user is given".into()),
            (None, Some(_)) => Err("user: required when a password is given".into()),
            _ => Ok(()),
        }
    }

    /// The login and password, when both are set.
    pub(crate) fn credentials(&self) -> Option<(&str, &str)> {
        Some((non_empty(&self.user)?, non_empty(&self.password)?))
    }

    /// `host:port`, as errors and logs name the relay.
    pub(crate) fn relay_name(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Debug for RelaySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RelaySettings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("sender", &self.sender)
            .field("recipients", &self.recipients)
            .finish()
    }
}

/// Parses `text` as a bare mail address (`name@example.fr`), naming `field` on failure.
pub(crate) fn check_address(field: &str, text: &str) -> Result<Address, String> {
    text.parse::<Address>()
        .map_err(|err| format!("{field}: '{}' is not a mail address ({err})", shorten(text)))
}

fn non_empty(value: &Option<String>) -> Option<&str> {
    value.as_deref().filter(|v| !v.is_empty())
}

/// An IP address, or a DNS name of letters, digits and hyphens (RFC 1123), with an
/// optional final dot.
fn is_host(host: &str) -> bool {
    if host.parse::<IpAddr>().is_ok() {
        return true;
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    (1..=253).contains(&name.len())
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

/// Quoting user input in an error: keep it short enough for one line.
fn shorten(text: &str) -> String {
    const MAX: usize = 80;
    if text.chars().count() <= MAX {
        text.to_string()
    } else {
        format!("{}…", text.chars().take(MAX).collect::<String>())
    }
}

#[cfg(test)]
mod tests;
