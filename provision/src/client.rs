//! The HTTPS client of one box: pinned to its CA fingerprint, and the one place where the
//! box's API errors become [`ClientError`]s with guidance for the technician.
//!
//! Nothing here logs or formats a request body: the claim code and the issued password only
//! travel inside the request and the returned value.

use crate::resolve::Endpoint;
use abri_factory::ClaimCode;
use abri_proto::api::{ActivateRequest, ApiError, IssuedPassword, Status};
use abri_proto::pin::{PinError, display_fingerprint, pinned_client_config};
use reqwest::StatusCode;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use serde::de::DeserializeOwned;
use std::time::Duration;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Activation may wait for the mail relay before answering.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot pin the box certificate: {0}")]
    Pin(#[from] PinError),
    #[error("cannot set up the HTTPS client: {0}")]
    Setup(String),
    #[error("cannot reach the box at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error(
        "the box at {url} did not prove it holds the certificate with fingerprint \
         {fingerprint}: {reason}; check the fingerprint (a reset box has a new one) and that \
         this is the right box"
    )]
    Untrusted {
        url: String,
        fingerprint: String,
        reason: String,
    },
    #[error(
        "the box refused the claim code: check it against the label on this box (each box has \
         its own code) and try again ({message})"
    )]
    BadClaimCode { message: String },
    #[error("{}", throttled_text(.retry_after_seconds, .message))]
    Throttled {
        retry_after_seconds: Option<u64>,
        message: String,
    },
    #[error(
        "the box is already activated: its admin password was shown at activation (and mailed \
         to the partner when a relay was set); if it is lost, reset it on the box with \
         `abrid reset-password` and the claim code"
    )]
    AlreadyActivated,
    #[error("the box answered {status} ({error}): {message}")]
    Api {
        status: u16,
        error: String,
        message: String,
    },
    #[error(
        "the answer of {url} is not what this tool expects ({reason}); is this an Abri box of a \
         compatible version?"
    )]
    BadAnswer { url: String, reason: String },
}

fn throttled_text(retry_after: &Option<u64>, message: &str) -> String {
    let wait = match retry_after {
        Some(secs) => format!("retry in {secs} s"),
        None => "wait a few minutes before retrying".to_string(),
    };
    format!(
        "the box refuses claim codes for now after too many wrong ones: {wait}, and check the \
         code against the label first ({message})"
    )
}

/// A connection to one box's `/api/v1`.
pub struct BoxClient {
    http: reqwest::Client,
    base: String,
    fingerprint: String,
}

impl BoxClient {
    /// Builds a client that trusts only the CA named by `endpoint.fingerprint`.
    pub fn new(endpoint: &Endpoint) -> Result<Self, ClientError> {
        let tls = pinned_client_config(&endpoint.fingerprint)?;
        let mut builder = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .https_only(true)
            .no_proxy()
            .connect_timeout(CONNECT_TIMEOUT)
            .timeout(REQUEST_TIMEOUT)
            .user_agent(concat!("abri-provision/", env!("CARGO_PKG_VERSION")));
        if !endpoint.connect_to.is_empty() {
            // Connect to the addresses mDNS gave, but verify the certificate for the name.
            builder = builder.resolve_to_addrs(&endpoint.host, &endpoint.connect_to);
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::Setup(error_chain(&e)))?;
        Ok(BoxClient {
            http,
            base: endpoint.base_url(),
            fingerprint: endpoint.fingerprint.clone(),
        })
    }

    /// `GET /api/v1/status`.
    pub async fn status(&self) -> Result<Status, ClientError> {
        let url = format!("{}/api/v1/status", self.base);
        let response = self.http.get(&url).send().await;
        self.answer(&url, response).await
    }

    /// `POST /api/v1/activate`: the only time the box shows the admin password.
    pub async fn activate(&self, code: &ClaimCode) -> Result<IssuedPassword, ClientError> {
        let url = format!("{}/api/v1/activate", self.base);
        let body = ActivateRequest {
            claim_code: code.as_str().to_string(),
        };
        let response = self.http.post(&url).json(&body).send().await;
        self.answer(&url, response).await
    }

    async fn answer<T: DeserializeOwned>(
        &self,
        url: &str,
        response: Result<reqwest::Response, reqwest::Error>,
    ) -> Result<T, ClientError> {
        let response = response.map_err(|e| self.transport_error(url, &e))?;
        let status = response.status();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(url, &e))?;
        if !status.is_success() {
            return Err(api_error(status, &headers, &body));
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::BadAnswer {
            url: url.to_string(),
            reason: e.to_string(),
        })
    }

    fn transport_error(&self, url: &str, err: &reqwest::Error) -> ClientError {
        // reqwest's own message only repeats the URL: its causes say what happened.
        let reason = match std::error::Error::source(err) {
            _ if err.is_timeout() => "no answer in time".to_string(),
            Some(cause) => error_chain(cause),
            None => err.to_string(),
        };
        if is_tls_failure(err) {
            ClientError::Untrusted {
                url: url.to_string(),
                fingerprint: display_fingerprint(&self.fingerprint),
                reason,
            }
        } else {
            ClientError::Unreachable {
                url: url.to_string(),
                reason,
            }
        }
    }
}

/// Maps a non-success answer of the box to an error; the body is `{"error","message"}`.
pub fn api_error(status: StatusCode, headers: &HeaderMap, body: &[u8]) -> ClientError {
    let Ok(ApiError { error, message }) = serde_json::from_slice::<ApiError>(body) else {
        let text = String::from_utf8_lossy(body);
        let excerpt: String = text.chars().take(200).collect();
        return ClientError::Api {
            status: status.as_u16(),
            error: "no error code".into(),
            message: excerpt.trim().to_string(),
        };
    };
    match error.as_str() {
        "bad_claim_code" => ClientError::BadClaimCode { message },
        "throttled" => ClientError::Throttled {
            retry_after_seconds: headers
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse().ok()),
            message,
        },
        "already_activated" => ClientError::AlreadyActivated,
        _ => ClientError::Api {
            status: status.as_u16(),
            error,
            message,
        },
    }
}

/// True when the connection failed in the TLS handshake (certificate not trusted, wrong
/// name...). rustls errors reach us wrapped in (possibly nested) `std::io::Error`s, whose
/// `source()` skips the wrapped error, so each I/O error is opened too.
fn is_tls_failure(err: &reqwest::Error) -> bool {
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = next {
        let mut inner: Option<&(dyn std::error::Error + 'static)> = Some(e);
        while let Some(i) = inner {
            if i.is::<rustls::Error>() {
                return true;
            }
            inner = i
                .downcast_ref::<std::io::Error>()
                .and_then(|io| io.get_ref())
                .map(|wrapped| wrapped as &(dyn std::error::Error + 'static));
        }
        next = e.source();
    }
    false
}

/// "a: b: c" from an error and its sources, without repeating a cause already shown.
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn body(error: &str, message: &str) -> Vec<u8> {
        serde_json::to_vec(&ApiError {
            error: error.into(),
            message: message.into(),
        })
        .unwrap()
    }

    #[test]
    fn maps_the_activation_errors() {
        let none = HeaderMap::new();
        let err = api_error(StatusCode::FORBIDDEN, &none, &body("bad_claim_code", "no"));
        assert!(matches!(err, ClientError::BadClaimCode { .. }));
        assert!(err.to_string().contains("label"), "{err}");

        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, HeaderValue::from_static("120"));
        let err = api_error(
            StatusCode::TOO_MANY_REQUESTS,
            &headers,
            &body("throttled", "slow down"),
        );
        assert!(matches!(
            err,
            ClientError::Throttled {
                retry_after_seconds: Some(120),
                ..
            }
        ));
        assert!(err.to_string().contains("retry in 120 s"), "{err}");
        let err = api_error(
            StatusCode::TOO_MANY_REQUESTS,
            &none,
            &body("throttled", "x"),
        );
        assert!(err.to_string().contains("wait a few minutes"), "{err}");

        let err = api_error(StatusCode::CONFLICT, &none, &body("already_activated", "x"));
        assert!(matches!(err, ClientError::AlreadyActivated));
        assert!(err.to_string().contains("reset-password"), "{err}");
    }

    #[test]
    fn other_errors_keep_the_code_and_message() {
        let none = HeaderMap::new();
        let err = api_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            &none,
            &body("invalid", "claim_code: missing"),
        );
        let text = err.to_string();
        assert!(
            text.contains("422") && text.contains("invalid") && text.contains("claim_code"),
            "{text}"
        );
        let err = api_error(StatusCode::BAD_GATEWAY, &none, b"<html>proxy error</html>");
        assert!(err.to_string().contains("proxy error"), "{err}");
    }

    #[test]
    fn error_chains_do_not_repeat_themselves() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer: inner")]
        struct Outer(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("inner")]
        struct Inner;
        assert_eq!(error_chain(&Outer(Inner)), "outer: inner");
    }
}
