//! The one place where errors become HTTP answers: status, stable code, and message.

use crate::errors::AppError;
use abri_proto::api::ApiError;
use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

impl AppError {
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            AppError::NotActivated => (StatusCode::FORBIDDEN, "not_activated"),
            AppError::AlreadyActivated => (StatusCode::CONFLICT, "already_activated"),
            AppError::BadClaimCode => (StatusCode::FORBIDDEN, "bad_claim_code"),
            AppError::Throttled(_) => (StatusCode::TOO_MANY_REQUESTS, "throttled"),
            AppError::Unauthenticated(_) => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            AppError::Csrf => (StatusCode::FORBIDDEN, "csrf"),
            AppError::Invalid(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid"),
            AppError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            AppError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            AppError::MailFailed(_) => (StatusCode::BAD_GATEWAY, "mail_failed"),
            AppError::DiskFull(_) => (StatusCode::INSUFFICIENT_STORAGE, "disk_full"),
            AppError::ConfirmationRequired(_) => (StatusCode::CONFLICT, "confirmation_required"),
            AppError::UpdateRejected(_) => (StatusCode::UNPROCESSABLE_ENTITY, "update_rejected"),
            AppError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// Seconds to put in `Retry-After`, for throttling.
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            AppError::Throttled(d) => Some(d.as_secs().max(1)),
            _ => None,
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        let message = match &self {
            // Internal details go to the log, not to the client.
            AppError::Internal(e) => {
                tracing::error!("request failed: {e:#}");
                "internal error: see the box's log".to_string()
            }
            other => other.to_string(),
        };
        let retry = self.retry_after();
        let mut response = (
            status,
            Json(ApiError {
                error: code.to_string(),
                message,
            }),
        )
            .into_response();
        if let Some(secs) = retry
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}
