//! Enrolment tokens, which let a new machine's agent join the box, and the Windows
//! installer with one built in. A token's secret is shown once, in the answer that made it.

use super::AppState;
use crate::errors::{AppResult, blocking};
use crate::http::extract::{ApiJson, ApiUser};
use crate::machines;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::{Deserialize, Serialize};

#[derive(Serialize)]
pub(super) struct EnrolTokenView {
    id: String,
    name: String,
    created: u64,
    expires: u64,
    uses: u64,
    revoked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

impl From<crate::state::EnrolToken> for EnrolTokenView {
    fn from(t: crate::state::EnrolToken) -> Self {
        EnrolTokenView {
            id: t.id,
            name: t.name,
            created: t.created,
            expires: t.expires,
            uses: t.uses,
            revoked: t.revoked,
            token: None,
        }
    }
}

pub(super) async fn enrol_tokens(
    State(app): AppState,
    _user: ApiUser,
) -> AppResult<Json<Vec<EnrolTokenView>>> {
    Ok(Json(
        machines::enrol_tokens(&app)?
            .into_iter()
            .map(EnrolTokenView::from)
            .collect(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewEnrolToken {
    name: String,
    #[serde(default = "default_token_days")]
    days: u32,
}

fn default_token_days() -> u32 {
    30
}

pub(super) async fn create_enrol_token(
    State(app): AppState,
    user: ApiUser,
    ApiJson(req): ApiJson<NewEnrolToken>,
) -> AppResult<(StatusCode, Json<EnrolTokenView>)> {
    let (token, secret) = machines::create_enrol_token(&app, &user.name, &req.name, req.days)?;
    let mut view = EnrolTokenView::from(token);
    view.token = Some(secret);
    Ok((StatusCode::CREATED, Json(view)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KitRequest {
    token: String,
    /// The address agents reach the box at; the box's mDNS name when absent.
    #[serde(default)]
    box_url: Option<String>,
}

/// The Windows installer with the box's address, fingerprint and the given token built in.
pub(super) async fn windows_kit(
    State(app): AppState,
    _user: ApiUser,
    ApiJson(req): ApiJson<KitRequest>,
) -> AppResult<Response> {
    let box_url = req
        .box_url
        .unwrap_or_else(|| crate::installers::default_box_url(&app));
    let kit_app = app.clone();
    let bytes =
        blocking(move || crate::installers::windows_kit(&kit_app, &req.token, &box_url)).await?;
    Ok(crate::http::pages::machines::kit_response(&app, bytes))
}

pub(super) async fn revoke_enrol_token(
    State(app): AppState,
    user: ApiUser,
    Path(id): Path<String>,
) -> AppResult<StatusCode> {
    machines::revoke_enrol_token(&app, &user.name, &id)?;
    Ok(StatusCode::NO_CONTENT)
}
