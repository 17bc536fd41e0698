//! The factory TOML file: parsing, validation and writing.

use serde::{Deserialize, Serialize};
use std::path::Path;

/// Version of the factory file format; bump it and keep reading the old one when it changes.
pub const FACTORY_FORMAT_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum FactoryError {
    #[error("cannot read factory file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("factory file {path} is not valid TOML for format {FACTORY_FORMAT_VERSION}: {message}")]
    Parse { path: String, message: String },
    #[error("factory file {path}: {message}")]
    Invalid { path: String, message: String },
    #[error("cannot write factory file {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
}

/// Everything written at the factory for one box.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FactoryData {
    /// Format version, currently [`FACTORY_FORMAT_VERSION`].
    pub format: u32,
    /// Argon2id PHC string of the claim code printed on the box's label.
    pub claim_code_hash: String,
    #[serde(default)]
    pub partner: Partner,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub smtp: Option<SmtpRelay>,
}

/// Partner defaults. Every field is optional.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Partner {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Receives the generated admin password at activation when a relay is known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Gives the box the name `backup.xxxx.<domain>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// `fr` or `en`; the console's default language.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// An IANA zone name such as `Europe/Paris`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
}

#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    #[default]
    Starttls,
    Tls,
    None,
}

/// An outgoing mail relay.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SmtpRelay {
    pub host: String,
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    #[serde(default)]
    pub security: SmtpSecurity,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// The From address of the box's mail.
    pub sender: String,
}

fn default_smtp_port() -> u16 {
    587
}

impl std::fmt::Debug for SmtpRelay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpRelay")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("sender", &self.sender)
            .finish()
    }
}

impl FactoryData {
    /// Reads and validates a factory file.
    pub fn load(path: &Path) -> Result<Self, FactoryError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| FactoryError::Read {
            path: shown.clone(),
            source,
        })?;
        Self::parse(&text, &shown)
    }

    /// Parses and validates factory TOML; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Self, FactoryError> {
        let data: FactoryData = toml::from_str(text).map_err(|e| FactoryError::Parse {
            path: origin.to_string(),
            message: e.message().to_string(),
        })?;
        data.validate().map_err(|message| FactoryError::Invalid {
            path: origin.to_string(),
            message,
        })?;
        Ok(data)
    }

    /// Checks every field; the message names the field and what is expected.
    pub fn validate(&self) -> Result<(), String> {
        if self.format != FACTORY_FORMAT_VERSION {
            return Err(format!(
                "format {} is not supported (this abrid reads format {FACTORY_FORMAT_VERSION})",
                self.format
            ));
        }
        if !self.claim_code_hash.starts_with("$argon2id$")
            || argon2::password_hash::PasswordHash::new(&self.claim_code_hash).is_err()
        {
            return Err("claim_code_hash must be an Argon2id PHC string ($argon2id$...)".into());
        }
        let p = &self.partner;
        if let Some(email) = &p.email {
            check_email("partner.email", email)?;
        }
        if let Some(domain) = &p.domain {
            check_domain(domain)?;
        }
        if let Some(lang) = &p.language
            && lang != "fr"
            && lang != "en"
        {
            return Err(format!(
                "partner.language {lang:?} must be \"fr\" or \"en\""
            ));
        }
        if let Some(tz) = &p.timezone {
            let ok = !tz.is_empty()
                && !tz.starts_with('/')
                && !tz.split('/').any(|part| part.is_empty() || part == "..")
                && tz
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "/_-+".contains(c));
            if !ok {
                return Err(format!(
                    "partner.timezone {tz:?} is not a zone name such as Europe/Paris"
                ));
            }
        }
        if let Some(smtp) = &self.smtp {
            if smtp.host.trim().is_empty() {
                return Err("smtp.host must not be empty".into());
            }
            if smtp.port == 0 {
                return Err("smtp.port must be between 1 and 65535".into());
            }
            check_email("smtp.sender", &smtp.sender)?;
        }
        Ok(())
    }

    /// Serialises to TOML.
    pub fn to_toml(&self) -> String {
        // Serialising this plain struct of strings and numbers cannot fail.
        toml::to_string_pretty(self).unwrap_or_default()
    }

    /// Writes the file atomically (temporary file, fsync, rename) with mode 0600.
    pub fn write(&self, path: &Path) -> Result<(), FactoryError> {
        let err = |source| FactoryError::Write {
            path: path.display().to_string(),
            source,
        };
        write_atomically(path, self.to_toml().as_bytes()).map_err(err)
    }
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

fn check_email(field: &str, email: &str) -> Result<(), String> {
    let mut parts = email.split('@');
    let ok = matches!((parts.next(), parts.next(), parts.next()), (Some(l), Some(d), None)
        if !l.is_empty() && !d.is_empty() && !email.chars().any(|c| c.is_whitespace() || c.is_control()));
    if ok {
        Ok(())
    } else {
        Err(format!("{field} {email:?} is not an email address"))
    }
}

fn check_domain(domain: &str) -> Result<(), String> {
    let ok = !domain.is_empty()
        && domain.len() <= 240
        && domain.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!(
            "partner.domain {domain:?} is not a DNS domain such as example.com"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ClaimCode;

    fn sample() -> FactoryData {
        FactoryData {
            format: 1,
            claim_code_hash: ClaimCode::generate().hash().unwrap(),
            partner: Partner {
                name: Some("Acme IT".into()),
                email: Some("ops@acme.example".into()),
                domain: Some("acme.example".into()),
                language: Some("fr".into()),
                timezone: Some("Europe/Paris".into()),
            },
            smtp: Some(SmtpRelay {
                host: "smtp.acme.example".into(),
                port: 587,
                security: SmtpSecurity::Starttls,
                user: None,
                password: None,
                sender: "backup@acme.example".into(),
            }),
        }
    }

    #[test]
    fn round_trips_through_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("factory.toml");
        let data = sample();
        data.write(&path).unwrap();
        assert_eq!(FactoryData::load(&path).unwrap(), data);
    }

    #[test]
    fn minimal_file_is_enough() {
        let hash = ClaimCode::generate().hash().unwrap();
        let text = format!("format = 1\nclaim_code_hash = \"{hash}\"\n");
        let data = FactoryData::parse(&text, "t").unwrap();
        assert_eq!(data.partner, Partner::default());
        assert!(data.smtp.is_none());
    }

    #[test]
    fn rejects_bad_files_with_the_field_named() {
        let good = sample().to_toml();
        let cases = [
            ("not toml at all [", "not valid TOML"),
            (&good.replace("format = 1", "format = 9"), "format 9"),
            (&format!("{good}\nsurprise = 1\n"), "surprise"),
            (
                &good.replace("language = \"fr\"", "language = \"de\""),
                "partner.language",
            ),
            (&good.replace("ops@acme.example", "nobody"), "partner.email"),
            (
                &good.replace("domain = \"acme.example\"", "domain = \"bad domain\""),
                "partner.domain",
            ),
            (&good.replace("port = 587", "port = 0"), "smtp.port"),
            (
                "format = 1\nclaim_code_hash = \"plain\"\n",
                "claim_code_hash",
            ),
        ];
        for (text, needle) in cases {
            let err = FactoryData::parse(text, "f.toml").unwrap_err().to_string();
            assert!(err.contains(needle), "{err:?} should mention {needle:?}");
            assert!(err.contains("f.toml"), "{err:?} should name the file");
        }
    }

    #[test]
    fn debug_hides_the_relay_password() {
        let mut data = sample();
        if let Some(s) = data.smtp.as_mut() {
            s.password = Some("hunter2-secret".into());
        }
        assert!(!format!("{data:?}").contains("hunter2-secret"));
    }
}
