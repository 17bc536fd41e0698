//! Request extractors: JSON bodies with our error shape, the client address, and the
//! authentication of API calls (session cookie + CSRF header, or bearer token).

use crate::accounts;
use crate::app::App;
use crate::errors::AppError;
use crate::secrets::constant_time_eq;
use axum::extract::rejection::{FormRejection, JsonRejection};
use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::sync::Arc;

pub const SESSION_COOKIE: &str = "abri_session";
pub const CSRF_HEADER: &str = "x-csrf-token";
pub const BODY_LIMIT: usize = 64 * 1024;

/// A JSON body; malformed, unknown fields or oversize become `invalid` / `too_large`.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(ApiJson(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> AppError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return AppError::TooLarge(BODY_LIMIT);
    }
    match rejection {
        JsonRejection::JsonDataError(e) => AppError::Invalid(e.body_text().replace(
            "Failed to deserialize the JSON body into the target type: ",
            "",
        )),
        JsonRejection::JsonSyntaxError(_) => AppError::Invalid("the body is not valid JSON".into()),
        JsonRejection::MissingJsonContentType(_) => {
            AppError::Invalid("send the body as JSON with Content-Type: application/json".into())
        }
        other => AppError::Invalid(other.body_text()),
    }
}

/// A form body, with the same error mapping as [`ApiJson`].
pub struct PageForm<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for PageForm<T> {
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Form::<T>::from_request(req, state).await {
            Ok(axum::Form(value)) => Ok(PageForm(value)),
            Err(rejection) => Err(form_rejection(rejection)),
        }
    }
}

fn form_rejection(rejection: FormRejection) -> AppError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        AppError::TooLarge(BODY_LIMIT)
    } else {
        AppError::Invalid(rejection.body_text())
    }
}

/// The client's IP address, used to key login throttling.
pub struct ClientAddr(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientAddr {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let ip = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|c| c.0.ip().to_string())
            .unwrap_or_else(|| "unknown".into());
        Ok(ClientAddr(ip))
    }
}

pub fn cookie_value(parts: &Parts, name: &str) -> Option<String> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.to_string())
}

/// How an API call was authenticated.
pub enum Via {
    /// Session cookie: the session's SHA-256 key.
    Session {
        key: String,
    },
    Token,
}

/// An authenticated API caller on an activated box. State-changing calls made with the
/// session cookie have passed the CSRF check.
pub struct ApiUser {
    pub name: String,
    pub via: Via,
    pub csrf_token: Option<String>,
}

impl FromRequestParts<Arc<App>> for ApiUser {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        if !app.is_activated()? {
            return Err(AppError::NotActivated);
        }
        let bearer = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if let Some(presented) = bearer {
            return match accounts::token_user(app, presented.trim())? {
                Some(name) => Ok(ApiUser {
                    name,
                    via: Via::Token,
                    csrf_token: None,
                }),
                None => Err(AppError::Unauthenticated("unknown or revoked API token")),
            };
        }
        let token = cookie_value(parts, SESSION_COOKIE).ok_or(AppError::Unauthenticated(
            "log in first (POST /api/v1/login) or send an API token",
        ))?;
        let session = accounts::session_for(app, &token)?.ok_or(AppError::Unauthenticated(
            "the session has ended: log in again",
        ))?;
        let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        if !safe {
            let presented = parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !constant_time_eq(presented, &session.csrf_token) {
                return Err(AppError::Csrf);
            }
        }
        Ok(ApiUser {
            name: session.user,
            via: Via::Session {
                key: crate::secrets::sha256_hex(&token),
            },
            csrf_token: Some(session.csrf_token),
        })
    }
}
