//! Enrolment: trade an enrolment token for this machine's credentials and pin the box.
//!
//! The box CA fingerprint comes from `--fingerprint` or from the box's mDNS TXT `fp`; the
//! TLS handshake of the enrolment already trusts only that CA, and from then on the
//! configuration pins it, so a later impostor on the LAN cannot take the box's place.

use abri_proto::agent::EnrolRequest;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::client::{BoxClient, ClientError};
use crate::config::{AgentConfig, CONFIG_VERSION, ConfigError, DEFAULT_STATE_DIR};
use crate::discover::{self, DiscoverError};
use crate::platform;

/// How long `--box auto` listens for boxes.
const DISCOVERY_WAIT: Duration = Duration::from_secs(4);

#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    #[error(
        "this machine is already enrolled (machine {machine} with {url}, configuration {}); \
         add --force to enrol it again",
        path.display()
    )]
    AlreadyEnrolled {
        machine: String,
        url: String,
        path: PathBuf,
    },
    #[error(
        "the box's certificate fingerprint is needed to trust it: give --fingerprint (shown \
         on the console's dashboard and on the box's label), or use --box auto"
    )]
    NoFingerprint,
    #[error("--fingerprint {given} differs from the fingerprint the box announces ({announced})")]
    FingerprintMismatch { given: String, announced: String },
    #[error("the box answered with an invalid {0}")]
    BadAnswer(&'static str),
    #[error(transparent)]
    Discover(#[from] DiscoverError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("{0}")]
    Pin(#[from] abri_proto::pin::PinError),
}

/// What the user asked for.
#[derive(Debug, Clone)]
pub struct EnrollOptions {
    /// `auto` or an URL (`https://` added when missing).
    pub box_arg: String,
    pub token: String,
    pub fingerprint: Option<String>,
    pub config_path: PathBuf,
    pub state_dir: Option<PathBuf>,
    pub force: bool,
}

/// What enrolment produced (no secrets).
#[derive(Debug, Clone, serde::Serialize)]
pub struct Enrolled {
    pub machine_id: String,
    pub box_url: String,
    pub box_hostname: String,
    pub fingerprint: String,
    pub config: PathBuf,
}

/// Enrols this machine and writes the configuration.
pub async fn enroll(opts: &EnrollOptions) -> Result<Enrolled, EnrollError> {
    if !opts.force
        && let Ok(existing) = AgentConfig::load(&opts.config_path)
    {
        return Err(EnrollError::AlreadyEnrolled {
            machine: existing.machine_id,
            url: existing.box_url,
            path: opts.config_path.clone(),
        });
    }
    let given = opts
        .fingerprint
        .as_deref()
        .map(abri_proto::pin::normalize_fingerprint)
        .transpose()?;
    let (url, address, fingerprint) = if opts.box_arg == "auto" {
        let found = tokio::task::spawn_blocking(|| discover::browse(DISCOVERY_WAIT))
            .await
            .map_err(|e| DiscoverError::Mdns(e.to_string()))??;
        let found = discover::pick_one(found, DISCOVERY_WAIT)?;
        let announced = found
            .fingerprint
            .as_deref()
            .map(abri_proto::pin::normalize_fingerprint)
            .transpose()?;
        let fingerprint = match (given, announced) {
            (Some(g), Some(a)) if g != a => {
                return Err(EnrollError::FingerprintMismatch {
                    given: g,
                    announced: a,
                });
            }
            (Some(g), _) => g,
            (None, Some(a)) => a,
            (None, None) => return Err(EnrollError::NoFingerprint),
        };
        (found.url(), found.address(), fingerprint)
    } else {
        let url = if opts.box_arg.contains("://") {
            opts.box_arg.clone()
        } else {
            format!("https://{}", opts.box_arg)
        };
        (url, None, given.ok_or(EnrollError::NoFingerprint)?)
    };
    let client = BoxClient::new(&url, &fingerprint, address.as_deref())?;
    let answer = client
        .enrol(&EnrolRequest {
            token: opts.token.clone(),
            hostname: platform::hostname(),
            os: platform::OS_NAME.into(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
        })
        .await?;
    if abri_store::ChunkKey::from_hex(&answer.chunk_key).is_none() {
        return Err(EnrollError::BadAnswer("chunk key"));
    }
    if answer.machine_id.is_empty() || answer.machine_key.is_empty() {
        return Err(EnrollError::BadAnswer("machine id or key"));
    }
    // The handshake already proved the pinned CA; a different announced value means the box
    // changed its CA or is confused: refuse rather than pin something it does not vouch for.
    if let Ok(fp) = abri_proto::pin::normalize_fingerprint(&answer.box_fingerprint)
        && fp != fingerprint
    {
        return Err(EnrollError::FingerprintMismatch {
            given: fingerprint,
            announced: fp,
        });
    }
    let config = AgentConfig {
        version: CONFIG_VERSION,
        box_url: url.clone(),
        box_address: address,
        fingerprint: fingerprint.clone(),
        machine_id: answer.machine_id.clone(),
        machine_key: answer.machine_key.clone(),
        chunk_key: answer.chunk_key.clone(),
        state_dir: opts
            .state_dir
            .clone()
            .unwrap_or_else(|| Path::new(DEFAULT_STATE_DIR).to_path_buf()),
    };
    config.save(&opts.config_path)?;
    Ok(Enrolled {
        machine_id: answer.machine_id,
        box_url: url,
        box_hostname: answer.box_hostname,
        fingerprint,
        config: opts.config_path.clone(),
    })
}
