//! Getting in: the box's activation, login and logout, and the session cookie they set or
//! clear. The cookie's attributes live here alone, so the console's forms (`pages`) set the
//! very same cookie as the API.

use super::AppState;
use crate::accounts;
use crate::errors::{AppError, AppResult};
use crate::http::extract::{ApiJson, ApiUser, ClientAddr, SESSION_COOKIE, Via};
use abri_proto::api::{ActivateRequest, IssuedPassword, LoginRequest, LoginResponse};
use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

pub(super) async fn activate(
    State(app): AppState,
    ApiJson(req): ApiJson<ActivateRequest>,
) -> AppResult<Json<IssuedPassword>> {
    Ok(Json(accounts::activate(&app, &req.claim_code).await?))
}

/// The `Set-Cookie` value of a session: HTTPS only, invisible to scripts, never cross-site.
pub fn session_cookie(token: &str) -> String {
    format!("{SESSION_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=604800")
}

pub fn clear_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

pub(super) async fn login(
    State(app): AppState,
    ClientAddr(client): ClientAddr,
    ApiJson(req): ApiJson<LoginRequest>,
) -> AppResult<Response> {
    if !app.is_activated()? {
        return Err(AppError::NotActivated);
    }
    let new = accounts::login(&app, &req.user, &req.password, &client).await?;
    let mut response = Json(LoginResponse {
        user: new.session.user,
        csrf_token: new.session.csrf_token,
        language: new.language,
    })
    .into_response();
    set_cookie(response.headers_mut(), &session_cookie(&new.token));
    Ok(response)
}

fn set_cookie(headers: &mut HeaderMap, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(header::SET_COOKIE, v);
    }
}

pub(super) async fn logout(State(app): AppState, user: ApiUser) -> AppResult<Response> {
    if let Via::Session { key } = &user.via {
        accounts::end_session(&app, key)?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    set_cookie(response.headers_mut(), &clear_cookie());
    Ok(response)
}
