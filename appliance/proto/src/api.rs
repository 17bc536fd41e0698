//! JSON bodies of the box's `/api/v1`. Field names are a contract with the tests and tools.

use serde::{Deserialize, Serialize};

/// `GET /api/v1/status`: what anyone on the LAN may know about a box.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Status {
    pub hostname: String,
    pub fqdn: Option<String>,
    /// Lower-case hex SHA-256 of the box CA certificate.
    pub fingerprint: String,
    pub activated: bool,
    pub version: String,
}

/// `POST /api/v1/activate`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActivateRequest {
    pub claim_code: String,
}

/// Answer to activation and to a password re-issue: shown once, never stored in clear.
#[derive(Clone, Serialize, Deserialize)]
pub struct IssuedPassword {
    pub user: String,
    pub password: String,
    /// True when the password was also mailed to the partner.
    pub mailed_to_partner: bool,
}

impl std::fmt::Debug for IssuedPassword {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedPassword")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("mailed_to_partner", &self.mailed_to_partner)
            .finish()
    }
}

/// `POST /api/v1/login`.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub user: String,
    pub password: String,
}

/// Answer to a login; the session itself travels in the `abri_session` cookie. State-changing
/// calls made with that cookie must carry `csrf_token` in the `X-CSRF-Token` header.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LoginResponse {
    pub user: String,
    pub csrf_token: String,
    pub language: String,
}

/// Every error body: a stable machine code and a sentence for people.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct ApiError {
    pub error: String,
    pub message: String,
}
