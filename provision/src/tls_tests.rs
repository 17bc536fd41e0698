//! The pinned client against a fake box: a real TLS server on loopback with a throwaway CA,
//! answering canned JSON. Checks pinning, name verification through `connect_to`, the wire
//! format of activation and the mapping of the box's errors.

use crate::client::{BoxClient, ClientError};
use crate::resolve::Endpoint;
use abri_factory::ClaimCode;
use abri_proto::pin::fingerprint_of;
use rustls::pki_types::PrivatePkcs8KeyDer;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::mpsc;

/// A canned answer: status, extra headers, body.
type Answer = (u16, Vec<(&'static str, &'static str)>, String);

struct FakeBox {
    addr: SocketAddr,
    ca_fingerprint: String,
    /// Each request received: request line and body.
    requests: mpsc::Receiver<(String, String)>,
}

/// Serves `answer(request_line)` to every connection, with a certificate for
/// `backup-abcd.local` and 127.0.0.1 signed by a fresh CA.
fn fake_box(answer: fn(&str) -> Answer) -> FakeBox {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec![
        "backup-abcd.local".to_string(),
        "127.0.0.1".to_string(),
    ])
    .unwrap()
    .signed_by(&leaf_key, &issuer)
    .unwrap();
    let chain = vec![leaf.der().clone(), ca.der().clone()];
    let key = PrivatePkcs8KeyDer::from(leaf_key.serialize_der()).into();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    let config = Arc::new(config);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, requests) = mpsc::channel();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { return };
            let conn = rustls::ServerConnection::new(config.clone()).unwrap();
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            // A client that rejects the certificate ends the handshake: serve the next one.
            if let Some(request) = read_request(&mut tls) {
                let (status, headers, body) = answer(&request.0);
                let mut head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                     content-length: {}\r\nconnection: close\r\n",
                    body.len()
                );
                for (name, value) in headers {
                    head.push_str(&format!("{name}: {value}\r\n"));
                }
                head.push_str("\r\n");
                let _ = tls.write_all(head.as_bytes());
                let _ = tls.write_all(body.as_bytes());
                tls.conn.send_close_notify();
                let _ = tls.flush();
                if tx.send(request).is_err() {
                    return;
                }
            }
        }
    });
    FakeBox {
        addr,
        ca_fingerprint: fingerprint_of(ca.der()),
        requests,
    }
}

fn read_request(stream: &mut impl Read) -> Option<(String, String)> {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line).ok()?;
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).ok()?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse().ok()?;
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some((
        request_line.trim().to_string(),
        String::from_utf8_lossy(&body).into_owned(),
    ))
}

fn by_name(fake: &FakeBox, name: &str, fingerprint: &str) -> Endpoint {
    Endpoint {
        label: name.to_string(),
        host: name.to_string(),
        port: fake.addr.port(),
        connect_to: vec![fake.addr],
        fingerprint: fingerprint.to_string(),
    }
}

fn status_answer(_: &str) -> Answer {
    let body = serde_json::json!({"hostname": "backup-abcd", "fqdn": null,
        "fingerprint": "ab".repeat(32), "activated": false, "version": "0.1.0"});
    (200, vec![], body.to_string())
}

#[tokio::test]
async fn talks_to_the_pinned_box_by_name_and_by_address() {
    let fake = fake_box(status_answer);
    let endpoint = by_name(&fake, "backup-abcd.local", &fake.ca_fingerprint);
    let status = BoxClient::new(&endpoint).unwrap().status().await.unwrap();
    assert_eq!(status.hostname, "backup-abcd");
    assert!(!status.activated);
    let (line, _) = fake.requests.recv().unwrap();
    assert_eq!(line, "GET /api/v1/status HTTP/1.1");

    let by_ip = Endpoint {
        host: "127.0.0.1".into(),
        connect_to: vec![],
        ..endpoint
    };
    BoxClient::new(&by_ip).unwrap().status().await.unwrap();
}

#[tokio::test]
async fn refuses_another_ca_or_another_name() {
    let fake = fake_box(status_answer);
    let other = "ab".repeat(32);
    let err = BoxClient::new(&by_name(&fake, "backup-abcd.local", &other))
        .unwrap()
        .status()
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Untrusted { .. }), "{err}");
    assert!(err.to_string().contains("AB:AB:AB"), "{err}");

    let err = BoxClient::new(&by_name(&fake, "backup-ffff.local", &fake.ca_fingerprint))
        .unwrap()
        .status()
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Untrusted { .. }), "{err}");
}

#[tokio::test]
async fn activation_sends_the_code_and_reads_the_password() {
    fn answer(line: &str) -> Answer {
        assert!(line.starts_with("POST /api/v1/activate "), "{line}");
        let body = serde_json::json!({"user": "admin", "password": "pw-secret",
            "mailed_to_partner": true});
        (200, vec![], body.to_string())
    }
    let fake = fake_box(answer);
    let code = ClaimCode::generate();
    let client =
        BoxClient::new(&by_name(&fake, "backup-abcd.local", &fake.ca_fingerprint)).unwrap();
    let issued = client.activate(&code).await.unwrap();
    assert_eq!(issued.user, "admin");
    assert_eq!(issued.password, "pw-secret");
    assert!(issued.mailed_to_partner);
    let (_, body) = fake.requests.recv().unwrap();
    let sent: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(sent, serde_json::json!({"claim_code": code.as_str()}));
}

#[tokio::test]
async fn maps_refusals_from_the_box() {
    fn answer(line: &str) -> Answer {
        if line.contains("activate") {
            let body = serde_json::json!({"error": "throttled", "message": "too many"});
            (429, vec![("retry-after", "42")], body.to_string())
        } else {
            (404, vec![], "not json".into())
        }
    }
    let fake = fake_box(answer);
    let client =
        BoxClient::new(&by_name(&fake, "backup-abcd.local", &fake.ca_fingerprint)).unwrap();
    let err = client.activate(&ClaimCode::generate()).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Throttled {
                retry_after_seconds: Some(42),
                ..
            }
        ),
        "{err}"
    );
    let err = client.status().await.unwrap_err();
    assert!(matches!(err, ClientError::Api { status: 404, .. }), "{err}");
}

#[tokio::test]
async fn a_closed_port_is_unreachable() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let endpoint = Endpoint {
        label: "x".into(),
        host: "127.0.0.1".into(),
        port: addr.port(),
        connect_to: vec![],
        fingerprint: "ab".repeat(32),
    };
    let err = BoxClient::new(&endpoint)
        .unwrap()
        .status()
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Unreachable { .. }), "{err}");
    assert!(err.to_string().contains("127.0.0.1"), "{err}");
}
