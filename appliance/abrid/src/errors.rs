//! What can go wrong in a request, as the user should hear it. The HTTP layer maps each kind
//! to a status and a stable code in one place (`http::error`).

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("the box is not activated yet: activate it with its claim code first")]
    NotActivated,
    #[error("the box is already activated")]
    AlreadyActivated,
    #[error("wrong claim code: check the code on the box's label")]
    BadClaimCode,
    #[error("too many failed attempts: try again in {} seconds", .0.as_secs().max(1))]
    Throttled(Duration),
    #[error("{0}")]
    Unauthenticated(&'static str),
    #[error("missing or wrong CSRF token: reload the page and try again")]
    Csrf,
    #[error("{0}")]
    Invalid(String),
    #[error("the request body is larger than {0} bytes")]
    TooLarge(usize),
    #[error("{0} not found")]
    NotFound(String),
    #[error("{0}")]
    DiskFull(String),
    #[error("the mail could not be sent: {0}")]
    MailFailed(String),
    #[error("{0}")]
    ConfirmationRequired(String),
    #[error("the update was not installed: {0}")]
    UpdateRejected(String),
    #[error("internal error: {0:#}")]
    Internal(#[from] anyhow::Error),
}

impl From<crate::state::StateError> for AppError {
    fn from(e: crate::state::StateError) -> Self {
        AppError::Internal(e.into())
    }
}

pub type AppResult<T> = Result<T, AppError>;

/// The store's errors as the client should hear them: the client's fault is `invalid`, a full
/// disk is `disk_full`, anything else is the box's problem.
impl From<abri_store::StoreError> for AppError {
    fn from(e: abri_store::StoreError) -> Self {
        use abri_store::StoreError as S;
        match e {
            S::DiskFull { .. } | S::BelowReserve { .. } => AppError::DiskFull(e.to_string()),
            S::SnapshotNotFound { .. } => AppError::NotFound(e.to_string()),
            S::BadChunk { .. }
            | S::InvalidCatalog { .. }
            | S::InvalidPath { .. }
            | S::InvalidId { .. }
            | S::InvalidManifest { .. }
            | S::MissingChunk { .. } => AppError::Invalid(e.to_string()),
            other => AppError::Internal(other.into()),
        }
    }
}

/// Runs blocking work (hashing, file-system I/O of the store) off the async runtime.
pub async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> AppResult<T> + Send + 'static,
) -> AppResult<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| AppError::Internal(anyhow::anyhow!("background task failed: {e}")))?
}
