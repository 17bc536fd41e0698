//! TLS client configuration pinned to one box CA.
//!
//! A box has its own CA; clients learn its SHA-256 fingerprint from mDNS, from the console or
//! from an enrolment kit. The verifier accepts a server only if the chain it presents contains
//! a certificate with that fingerprint, and the leaf then verifies against it as the only
//! trust anchor (signature, validity period and server name checked by webpki).

use rustls::DigitallySignedStruct;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum PinError {
    #[error("fingerprint {0:?} is not 64 hexadecimal digits (colons allowed)")]
    BadFingerprint(String),
}

/// Lower-case hex SHA-256 of a DER certificate.
pub fn fingerprint_of(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

/// Accepts `AB:CD:...` or `abcd...`; returns lower-case hex without colons.
pub fn normalize_fingerprint(text: &str) -> Result<String, PinError> {
    let hex: String = text
        .chars()
        .filter(|c| *c != ':' && !c.is_whitespace())
        .map(|c| c.to_ascii_lowercase())
        .collect();
    if hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(hex)
    } else {
        Err(PinError::BadFingerprint(text.to_string()))
    }
}

/// `ab:cd:...` for people.
pub fn display_fingerprint(hex: &str) -> String {
    hex.as_bytes()
        .chunks(2)
        .map(|p| String::from_utf8_lossy(p).to_uppercase())
        .collect::<Vec<_>>()
        .join(":")
}

#[derive(Debug)]
struct PinnedCaVerifier {
    fingerprint: String,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCaVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .chain(std::iter::once(end_entity))
            .find(|c| fingerprint_of(c) == self.fingerprint)
            .ok_or_else(|| {
                rustls::Error::General(format!(
                    "the server's certificate chain does not contain the pinned CA {}",
                    self.fingerprint
                ))
            })?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(ca.clone().into_owned())?;
        let inner =
            WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.provider.clone())
                .build()
                .map_err(|e| rustls::Error::General(format!("cannot build verifier: {e}")))?;
        inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A rustls client configuration that trusts only the box CA with this fingerprint.
pub fn pinned_client_config(fingerprint: &str) -> Result<rustls::ClientConfig, PinError> {
    let fingerprint = normalize_fingerprint(fingerprint)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Arc::new(PinnedCaVerifier {
        fingerprint,
        provider: provider.clone(),
    });
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|_| PinError::BadFingerprint("(protocol versions)".into()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_fingerprints() {
        let hex = "ab".repeat(32);
        assert_eq!(
            normalize_fingerprint(&display_fingerprint(&hex)).unwrap(),
            hex
        );
        assert_eq!(normalize_fingerprint(&hex.to_uppercase()).unwrap(), hex);
        assert!(normalize_fingerprint("abcd").is_err());
        assert!(normalize_fingerprint(&"zz".repeat(32)).is_err());
    }

    fn ca_and_leaf(name: &str) -> (CertificateDer<'static>, CertificateDer<'static>) {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let issuer = rcgen::Issuer::new(ca_params, ca_key);
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec![name.to_string()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        (ca.der().clone(), leaf.der().clone())
    }

    fn verify(
        pin: &str,
        leaf: &CertificateDer<'_>,
        chain: &[CertificateDer<'_>],
        name: &str,
    ) -> bool {
        let verifier = PinnedCaVerifier {
            fingerprint: pin.to_string(),
            provider: Arc::new(rustls::crypto::ring::default_provider()),
        };
        let server_name = ServerName::try_from(name.to_string()).unwrap();
        verifier
            .verify_server_cert(leaf, chain, &server_name, &[], UnixTime::now())
            .is_ok()
    }

    #[test]
    fn accepts_only_the_pinned_ca_and_the_right_name() {
        let (ca, leaf) = ca_and_leaf("backup-abcd.local");
        let (other_ca, _) = ca_and_leaf("backup-abcd.local");
        let pin = fingerprint_of(&ca);
        assert!(verify(
            &pin,
            &leaf,
            std::slice::from_ref(&ca),
            "backup-abcd.local"
        ));
        assert!(
            !verify(&pin, &leaf, std::slice::from_ref(&ca), "backup-ffff.local"),
            "wrong name"
        );
        assert!(
            !verify(&pin, &leaf, &[], "backup-abcd.local"),
            "CA missing from chain"
        );
        assert!(
            !verify(
                &fingerprint_of(&other_ca),
                &leaf,
                std::slice::from_ref(&other_ca),
                "backup-abcd.local"
            ),
            "leaf not signed by pinned CA"
        );
    }
}
