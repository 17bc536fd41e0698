//! The records kept in the state database.

use serde::{Deserialize, Serialize};

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The box's name, fixed at first boot from the primary interface's MAC.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Identity {
    pub mac: String,
    pub hostname: String,
    pub interface: Option<String>,
    pub created: u64,
}

/// Present once the box has been activated with its claim code.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Activation {
    pub activated_at: u64,
}

/// A console user. Only the Argon2id hash of the password is stored.
#[derive(Clone, Serialize, Deserialize)]
pub struct User {
    pub name: String,
    pub password_hash: String,
    pub language: String,
    pub created: u64,
    pub password_changed: u64,
}

/// A console session, found by the SHA-256 of its cookie token.
#[derive(Clone, Serialize, Deserialize)]
pub struct Session {
    pub user: String,
    pub csrf_token: String,
    pub created: u64,
    pub last_seen: u64,
}

/// An API token, found by its id; only the SHA-256 of the secret is kept.
#[derive(Clone, Serialize, Deserialize)]
pub struct ApiToken {
    pub id: String,
    pub name: String,
    pub user: String,
    pub secret_sha256: String,
    pub created: u64,
}

/// Who did what, when.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuditEvent {
    pub time: u64,
    pub actor: String,
    pub action: String,
    pub detail: String,
}

impl AuditEvent {
    pub fn new(actor: &str, action: &str, detail: impl Into<String>) -> Self {
        AuditEvent {
            time: now(),
            actor: actor.to_string(),
            action: action.to_string(),
            detail: detail.into(),
        }
    }
}

/// A protected machine, enrolled with an enrolment token. Only the SHA-256 of its key is kept.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    pub id: String,
    pub hostname: String,
    pub os: String,
    pub agent_version: String,
    pub key_sha256: String,
    pub enrolled: u64,
    pub last_seen: u64,
    /// Set when the console revokes the machine's key; the agent is refused from then on.
    #[serde(default)]
    pub revoked_at: Option<u64>,
    /// The enrolment token used (for the audit trail and later per-contract kits).
    pub enrol_token: String,
}

/// A token that lets agents enrol machines. Several machines may use one until it expires.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EnrolToken {
    pub id: String,
    pub name: String,
    pub secret_sha256: String,
    pub created: u64,
    pub expires: u64,
    pub uses: u64,
    #[serde(default)]
    pub revoked: bool,
}
