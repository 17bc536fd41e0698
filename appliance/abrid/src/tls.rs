//! The box's own CA and HTTPS certificate.
//!
//! First boot creates a CA (ECDSA P-256, 20 years) in `<state>/tls`; its SHA-256 fingerprint
//! is what clients pin (mDNS TXT, console, agent kits). The server certificate is signed by
//! that CA for the box's names and LAN addresses and re-issued when they change or when it
//! nears expiry; `server-names.json` records what the current one covers. Files are written
//! tmp + fsync + rename, keys with mode 0600; the CA key is written before the CA certificate,
//! so a crash between the two leaves a key without a certificate, which the next boot replaces.

use anyhow::{Context, Result};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use time::{Duration, OffsetDateTime};

const SERVER_VALIDITY_DAYS: i64 = 397;
const RENEW_BEFORE_DAYS: i64 = 30;

/// The names a server certificate must cover.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct ServerNames {
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
}

impl ServerNames {
    /// `backup-xxxx.local`, the FQDN, `localhost`, loopback and the LAN addresses, sorted.
    pub fn for_box(hostname: &str, fqdn: Option<&str>, lan: &[IpAddr]) -> Self {
        let mut dns = vec![
            format!("{hostname}.local"),
            hostname.to_string(),
            "localhost".to_string(),
        ];
        dns.extend(fqdn.map(str::to_string));
        dns.sort();
        dns.dedup();
        let mut ips: Vec<IpAddr> = lan.to_vec();
        ips.push(IpAddr::from([127, 0, 0, 1]));
        ips.push(IpAddr::from(std::net::Ipv6Addr::LOCALHOST));
        ips.sort();
        ips.dedup();
        ServerNames { dns, ips }
    }
}

#[derive(Serialize, Deserialize)]
struct IssuedFor {
    names: ServerNames,
    not_after: i64,
}

/// The box CA, loaded or created.
pub struct BoxCa {
    dir: PathBuf,
    ca_pem: String,
    ca_der: CertificateDer<'static>,
    ca_key_pem: String,
    fingerprint: String,
}

impl BoxCa {
    /// Loads the CA from `dir`, creating it on first boot.
    pub fn load_or_create(dir: &Path, hostname: &str) -> Result<BoxCa> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let key_path = dir.join("ca.key");
        let cert_path = dir.join("ca.pem");
        if !(key_path.exists() && cert_path.exists()) {
            let key = KeyPair::generate().context("cannot generate the CA key")?;
            let mut params = CertificateParams::new(Vec::<String>::new())?;
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params
                .distinguished_name
                .push(DnType::CommonName, format!("Abri box {hostname} CA"));
            params
                .distinguished_name
                .push(DnType::OrganizationName, "Abri");
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
            let now = OffsetDateTime::now_utc();
            params.not_before = now - Duration::days(1);
            params.not_after = now + Duration::days(20 * 365);
            let cert = params
                .self_signed(&key)
                .context("cannot sign the CA certificate")?;
            write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
            write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
            // A new CA invalidates any server certificate signed by a previous one.
            let _ = std::fs::remove_file(dir.join("server-names.json"));
            tracing::info!(path = %cert_path.display(), "created the box CA");
        }
        let ca_pem = std::fs::read_to_string(&cert_path)
            .with_context(|| format!("cannot read {}", cert_path.display()))?;
        let ca_key_pem = std::fs::read_to_string(&key_path)
            .with_context(|| format!("cannot read {}", key_path.display()))?;
        let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| {
            anyhow::anyhow!("{} is not a PEM certificate: {e}", cert_path.display())
        })?;
        let fingerprint = abri_proto::pin::fingerprint_of(&ca_der);
        Ok(BoxCa {
            dir: dir.to_path_buf(),
            ca_pem,
            ca_der,
            ca_key_pem,
            fingerprint,
        })
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A rustls server configuration for `names`, issuing a new server certificate first when
    /// the current one does not cover exactly these names or expires within 30 days.
    pub fn server_config(&self, names: &ServerNames) -> Result<Arc<rustls::ServerConfig>> {
        let (cert_pem, key_pem) = self.ensure_server_cert(names)?;
        let leaf = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| anyhow::anyhow!("server certificate is not PEM: {e}"))?;
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| anyhow::anyhow!("server key is not PEM: {e}"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_no_client_auth()
            .with_single_cert(vec![leaf, self.ca_der.clone()], key)
            .context("cannot use the server certificate")?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    fn ensure_server_cert(&self, names: &ServerNames) -> Result<(String, String)> {
        let cert_path = self.dir.join("server.pem");
        let key_path = self.dir.join("server.key");
        let meta_path = self.dir.join("server-names.json");
        let now = OffsetDateTime::now_utc();
        let current: Option<IssuedFor> = std::fs::read(&meta_path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let fresh = current.as_ref().is_some_and(|c| {
            &c.names == names && c.not_after - now.unix_timestamp() > RENEW_BEFORE_DAYS * 86400
        });
        if fresh
            && let (Ok(cert), Ok(key)) = (
                std::fs::read_to_string(&cert_path),
                std::fs::read_to_string(&key_path),
            )
        {
            return Ok((cert, key));
        }
        let key = KeyPair::generate().context("cannot generate the server key")?;
        let ca_key = KeyPair::from_pem(&self.ca_key_pem).context("the CA key does not parse")?;
        let issuer = Issuer::from_ca_cert_pem(&self.ca_pem, ca_key)
            .context("the CA certificate does not parse")?;
        let mut sans: Vec<String> = names.dns.clone();
        sans.extend(names.ips.iter().map(IpAddr::to_string));
        let mut params = CertificateParams::new(sans).context("invalid certificate name")?;
        params.distinguished_name.push(
            DnType::CommonName,
            names.dns.first().cloned().unwrap_or_default(),
        );
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        params.not_before = now - Duration::days(1);
        params.not_after = now + Duration::days(SERVER_VALIDITY_DAYS);
        params.use_authority_key_identifier_extension = true;
        let cert = params
            .signed_by(&key, &issuer)
            .context("cannot sign the server certificate")?;
        let (cert_pem, key_pem) = (cert.pem(), key.serialize_pem());
        write_file(&key_path, key_pem.as_bytes(), 0o600)?;
        write_file(&cert_path, cert_pem.as_bytes(), 0o644)?;
        let meta = IssuedFor {
            names: names.clone(),
            not_after: params.not_after.unix_timestamp(),
        };
        write_file(&meta_path, &serde_json::to_vec_pretty(&meta)?, 0o644)?;
        tracing::info!(dns = ?names.dns, ips = ?names.ips, "issued the server certificate");
        Ok((cert_pem, key_pem))
    }
}

/// Writes a file atomically: temporary file, fsync, rename, fsync of the directory.
pub fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().context("a file path has a parent")?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default()
    ));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(bytes)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), path.display()))?;
    std::fs::File::open(dir)?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(ips: &[&str]) -> ServerNames {
        let lan: Vec<IpAddr> = ips.iter().map(|s| s.parse().unwrap()).collect();
        ServerNames::for_box("backup-abcd", Some("backup.abcd.acme.example"), &lan)
    }

    #[test]
    fn names_cover_mdns_fqdn_and_loopback() {
        let n = names(&["192.0.2.7"]);
        assert!(n.dns.contains(&"backup-abcd.local".to_string()));
        assert!(n.dns.contains(&"backup.abcd.acme.example".to_string()));
        assert!(n.ips.contains(&"127.0.0.1".parse().unwrap()));
        assert!(n.ips.contains(&"192.0.2.7".parse().unwrap()));
    }

    #[test]
    fn ca_is_stable_and_server_cert_reissued_only_when_names_change() {
        let dir = tempfile::tempdir().unwrap();
        let ca = BoxCa::load_or_create(dir.path(), "backup-abcd").unwrap();
        let again = BoxCa::load_or_create(dir.path(), "backup-abcd").unwrap();
        assert_eq!(ca.fingerprint(), again.fingerprint());

        ca.server_config(&names(&["192.0.2.7"])).unwrap();
        let first = std::fs::read(dir.path().join("server.pem")).unwrap();
        ca.server_config(&names(&["192.0.2.7"])).unwrap();
        assert_eq!(
            first,
            std::fs::read(dir.path().join("server.pem")).unwrap(),
            "same names: kept"
        );
        ca.server_config(&names(&["192.0.2.8"])).unwrap();
        assert_ne!(
            first,
            std::fs::read(dir.path().join("server.pem")).unwrap(),
            "new address: re-issued"
        );

        use std::os::unix::fs::PermissionsExt;
        for key in ["ca.key", "server.key"] {
            let mode = std::fs::metadata(dir.path().join(key))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{key} must not be readable by others");
        }
    }

    #[test]
    fn server_cert_verifies_against_the_pinned_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = BoxCa::load_or_create(dir.path(), "backup-abcd").unwrap();
        let n = names(&[]);
        ca.server_config(&n).unwrap();
        let leaf_pem = std::fs::read(dir.path().join("server.pem")).unwrap();
        let leaf = CertificateDer::from_pem_slice(&leaf_pem).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.ca_der.clone()).unwrap();
        let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(
            Arc::new(roots),
            Arc::new(rustls::crypto::ring::default_provider()),
        )
        .build()
        .unwrap();
        use rustls::client::danger::ServerCertVerifier;
        for name in ["backup-abcd.local", "backup.abcd.acme.example", "127.0.0.1"] {
            let sn = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
            verifier
                .verify_server_cert(&leaf, &[], &sn, &[], rustls::pki_types::UnixTime::now())
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
    }
}
