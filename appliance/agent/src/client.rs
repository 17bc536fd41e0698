//! The HTTPS client of the box's agent API (`/api/v1/agent/...`).
//!
//! One `reqwest` client per process: TLS pinned to the box CA (nothing else is trusted,
//! not even the system roots), HTTP/2 when the box offers it, so the many chunk uploads of
//! a backup share one connection. Idempotent calls (queries, chunk uploads, reads) are
//! retried a few times on transport errors and 5xx answers; everything else is tried once.

use abri_proto::agent::{
    Command, CommitSnapshot, EnrolRequest, EnrolResponse, JobEnd, JobStarted, MissingAnswer,
    MissingQuery, Progress, ProgressAck, SnapshotSummary, StartJob,
};
use abri_proto::batch;
use reqwest::StatusCode;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::time::Duration;

use crate::config::AgentConfig;

/// Attempts of an idempotent call before giving up.
const ATTEMPTS: u32 = 4;
/// The largest HTTP/2 frame the box may send: chunks (2 MiB on average) come in a few large
/// frames instead of a hundred 16 KiB ones, each of which wakes the reading task.
const MAX_FRAME: u32 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("the box URL {0:?} is not an https:// URL")]
    BadUrl(String),
    #[error("cannot set up TLS pinned to the box: {0}")]
    Pin(#[from] abri_proto::pin::PinError),
    #[error("cannot build the HTTP client: {0}")]
    Build(reqwest::Error),
    #[error("cannot reach the box for {what}: {detail}")]
    Transport { what: String, detail: String },
    #[error("the box refused {what}: HTTP {status} {code}: {message}")]
    Refused {
        what: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error("the box answered {what} with something unexpected: {reason}")]
    Protocol { what: String, reason: String },
}

impl ClientError {
    /// True when trying again later may succeed (network trouble, box busy or restarting).
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport { .. } => true,
            ClientError::Refused { status, .. } => *status >= 500 || *status == 429,
            _ => false,
        }
    }

    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Refused { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A transport error with its whole cause chain (reqwest's own message is terse).
fn transport(what: &str, e: &reqwest::Error) -> ClientError {
    let mut detail = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        detail.push_str(": ");
        detail.push_str(&c.to_string());
        cause = c.source();
    }
    ClientError::Transport {
        what: what.to_string(),
        detail,
    }
}

/// `GET /agent/snapshots/{id}`: the summary and the catalog's chunk digests.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SnapshotDetail {
    #[serde(flatten)]
    pub summary: SnapshotSummary,
    pub catalog: Vec<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    error: String,
    #[serde(default)]
    message: String,
}

/// A connection to one box.
#[derive(Clone)]
pub struct BoxClient {
    http: reqwest::Client,
    base: String,
    auth: Option<String>,
}

impl std::fmt::Debug for BoxClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoxClient")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

impl BoxClient {
    /// A client for `box_url` trusting only the CA with `fingerprint`; `address` (`ip:port`)
    /// overrides name resolution of the URL's host.
    pub fn new(
        box_url: &str,
        fingerprint: &str,
        address: Option<&str>,
    ) -> Result<Self, ClientError> {
        let base = box_url.trim_end_matches('/').to_string();
        let host = base
            .strip_prefix("https://")
            .ok_or_else(|| ClientError::BadUrl(box_url.to_string()))?;
        let host = host.split('/').next().unwrap_or_default();
        let host_only = match host.rsplit_once(':') {
            Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) && !h.ends_with(']') => h,
            Some((h, _)) if h.starts_with('[') => h,
            _ => host,
        };
        if host_only.is_empty() {
            return Err(ClientError::BadUrl(box_url.to_string()));
        }
        let mut tls = abri_proto::pin::pinned_client_config(fingerprint)?;
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut builder = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(90))
            .http2_adaptive_window(true)
            .http2_max_frame_size(MAX_FRAME)
            .http2_keep_alive_interval(Duration::from_secs(20))
            .http2_keep_alive_while_idle(true)
            .no_proxy()
            .user_agent(concat!("abri-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(addr) = address.and_then(|a| a.parse::<std::net::SocketAddr>().ok()) {
            builder = builder.resolve(host_only, addr);
        }
        let http = builder.build().map_err(ClientError::Build)?;
        Ok(BoxClient {
            http,
            base: format!("{base}/api/v1"),
            auth: None,
        })
    }

    /// The client of an enrolled machine.
    pub fn from_config(config: &AgentConfig) -> Result<Self, ClientError> {
        let mut c = Self::new(
            &config.box_url,
            &config.fingerprint,
            config.box_address.as_deref(),
        )?;
        c.auth = Some(config.authorization());
        Ok(c)
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method, format!("{}{path}", self.base));
        if let Some(auth) = &self.auth {
            r = r.header(reqwest::header::AUTHORIZATION, auth);
        }
        r
    }

    /// Sends, maps transport errors and non-success answers to [`ClientError`].
    async fn send(
        &self,
        what: &str,
        req: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let resp = req.send().await.map_err(|e| transport(what, &e))?;
        let status = resp.status();
        if status.is_success() {
            return Ok(resp);
        }
        let body = resp.bytes().await.unwrap_or_default();
        let (code, message) = match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(b) => (b.error, b.message),
            Err(_) => (
                status.canonical_reason().unwrap_or("").to_string(),
                String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned(),
            ),
        };
        Err(ClientError::Refused {
            what: what.to_string(),
            status: status.as_u16(),
            code,
            message,
        })
    }

    async fn json<T: DeserializeOwned>(
        what: &str,
        resp: reqwest::Response,
    ) -> Result<T, ClientError> {
        let bytes = resp.bytes().await.map_err(|e| transport(what, &e))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
            what: what.to_string(),
            reason: e.to_string(),
        })
    }

    /// Runs an idempotent call up to [`ATTEMPTS`] times while it fails transiently.
    async fn retry<T, F, Fut>(&self, mut call: F) -> Result<T, ClientError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, ClientError>>,
    {
        let mut delay = Duration::from_millis(250);
        let mut attempt = 1;
        loop {
            match call().await {
                Err(e) if e.is_transient() && attempt < ATTEMPTS => {
                    tracing::debug!("retrying after: {e}");
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// `POST /agent/enrol`.
    pub async fn enrol(&self, req: &EnrolRequest) -> Result<EnrolResponse, ClientError> {
        let what = "the enrolment";
        let resp = self
            .send(
                what,
                self.request(reqwest::Method::POST, "/agent/enrol")
                    .json(req),
            )
            .await?;
        Self::json(what, resp).await
    }

    /// `GET /agent/commands?wait=N`: a command, or `None` when the wait ran out.
    pub async fn poll_command(&self, wait_seconds: u64) -> Result<Option<Command>, ClientError> {
        let what = "the command poll";
        let req = self
            .request(
                reqwest::Method::GET,
                &format!("/agent/commands?wait={wait_seconds}"),
            )
            .timeout(Duration::from_secs(wait_seconds + 20));
        let resp = self.send(what, req).await?;
        if resp.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        Self::json(what, resp).await.map(Some)
    }

    /// `POST /agent/jobs`: start a backup of `plan` now.
    pub async fn start_job(&self, req: &StartJob) -> Result<JobStarted, ClientError> {
        let what = "starting a backup";
        let resp = self
            .send(
                what,
                self.request(reqwest::Method::POST, "/agent/jobs").json(req),
            )
            .await?;
        Self::json(what, resp).await
    }

    /// `POST /agent/jobs/{id}/progress`.
    pub async fn progress(&self, job_id: &str, p: &Progress) -> Result<ProgressAck, ClientError> {
        let what = "a progress report";
        let req = self
            .request(
                reqwest::Method::POST,
                &format!("/agent/jobs/{job_id}/progress"),
            )
            .timeout(Duration::from_secs(30))
            .json(p);
        let resp = self.send(what, req).await?;
        Self::json(what, resp).await
    }

    /// `POST /agent/jobs/{id}/finish`.
    pub async fn finish(&self, job_id: &str, end: &JobEnd) -> Result<(), ClientError> {
        let what = "the end of a job";
        self.retry(|| async {
            let req = self
                .request(
                    reqwest::Method::POST,
                    &format!("/agent/jobs/{job_id}/finish"),
                )
                .json(end);
            self.send(what, req).await.map(|_| ())
        })
        .await
    }

    /// `POST /agent/chunks/missing`: which of `digests` (hex, at most 4096) the box lacks.
    pub async fn missing(&self, digests: Vec<String>) -> Result<Vec<String>, ClientError> {
        let what = "the missing-chunk query";
        let body = MissingQuery { digests };
        self.retry(|| async {
            let req = self
                .request(reqwest::Method::POST, "/agent/chunks/missing")
                .json(&body);
            let resp = self.send(what, req).await?;
            Self::json::<MissingAnswer>(what, resp)
                .await
                .map(|a| a.missing)
        })
        .await
    }

    /// `POST /agent/chunks` with a batch of encoded chunks ([`abri_proto::batch`] frames of
    /// `chunks` of them).
    pub async fn put_chunks(&self, body: Vec<u8>, chunks: usize) -> Result<(), ClientError> {
        let what = format!("a batch of {chunks} chunks");
        let body = bytes::Bytes::from(body);
        self.retry(|| async {
            let req = self
                .request(reqwest::Method::POST, "/agent/chunks")
                .header(reqwest::header::CONTENT_TYPE, batch::CONTENT_TYPE)
                .timeout(Duration::from_secs(300))
                .body(body.clone());
            self.send(&what, req).await.map(|_| ())
        })
        .await
    }

    /// `POST /agent/snapshots`: commit (and end the job as succeeded).
    pub async fn commit(&self, c: &CommitSnapshot) -> Result<SnapshotSummary, ClientError> {
        let what = "the snapshot commit";
        let req = self
            .request(reqwest::Method::POST, "/agent/snapshots")
            .timeout(Duration::from_secs(600))
            .json(c);
        let resp = self.send(what, req).await?;
        Self::json(what, resp).await
    }

    /// `GET /agent/snapshots`: this machine's snapshots.
    pub async fn snapshots(&self) -> Result<Vec<SnapshotSummary>, ClientError> {
        let what = "the snapshot list";
        self.retry(|| async {
            let resp = self
                .send(what, self.request(reqwest::Method::GET, "/agent/snapshots"))
                .await?;
            Self::json(what, resp).await
        })
        .await
    }

    /// `GET /agent/snapshots/{id}`.
    pub async fn snapshot(&self, id: &str) -> Result<SnapshotDetail, ClientError> {
        let what = format!("snapshot {id}");
        self.retry(|| async {
            let resp = self
                .send(
                    &what,
                    self.request(reqwest::Method::GET, &format!("/agent/snapshots/{id}")),
                )
                .await?;
            Self::json(&what, resp).await
        })
        .await
    }

    /// `POST /agent/snapshots/{id}/chunks`: encoded chunks (not yet verified) as
    /// [`abri_proto::batch`] frames, in the order asked.
    pub async fn snapshot_chunks(
        &self,
        id: &str,
        digests: Vec<String>,
    ) -> Result<bytes::Bytes, ClientError> {
        let what = format!("{} chunks of snapshot {id}", digests.len());
        let body = MissingQuery { digests };
        self.retry(|| async {
            let resp = self
                .send(
                    &what,
                    self.request(
                        reqwest::Method::POST,
                        &format!("/agent/snapshots/{id}/chunks"),
                    )
                    .timeout(Duration::from_secs(300))
                    .json(&body),
                )
                .await?;
            resp.bytes().await.map_err(|e| transport(&what, &e))
        })
        .await
    }

    /// `GET /agent/snapshots/{id}/chunks/{digest}`: the encoded chunk (not yet verified).
    pub async fn snapshot_chunk(
        &self,
        id: &str,
        digest: &str,
    ) -> Result<bytes::Bytes, ClientError> {
        let what = format!("chunk {digest} of snapshot {id}");
        self.retry(|| async {
            let resp = self
                .send(
                    &what,
                    self.request(
                        reqwest::Method::GET,
                        &format!("/agent/snapshots/{id}/chunks/{digest}"),
                    )
                    .timeout(Duration::from_secs(300)),
                )
                .await?;
            resp.bytes().await.map_err(|e| transport(&what, &e))
        })
        .await
    }
}
