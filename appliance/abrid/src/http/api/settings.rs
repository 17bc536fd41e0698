//! The box's settings: how it sends mail (with a test message) and the backup plans.

use super::AppState;
use crate::accounts;
use crate::errors::{AppError, AppResult};
use crate::http::extract::{ApiJson, ApiUser};
use crate::settings::{self, MailUpdate, MailView};
use abri_proto::plan::{Plan, PlanSettings};
use axum::Json;
use axum::extract::{Path, State};
use serde::{Deserialize, Serialize};

pub(super) async fn mail(State(app): AppState, _user: ApiUser) -> Json<MailView> {
    Json(settings::mail_view(&app))
}

pub(super) async fn update_mail(
    State(app): AppState,
    user: ApiUser,
    ApiJson(update): ApiJson<MailUpdate>,
) -> AppResult<Json<MailView>> {
    Ok(Json(settings::update_mail(&app, &user.name, update)?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TestMail {
    #[serde(default)]
    to: Option<String>,
}

#[derive(Serialize)]
pub(super) struct TestMailSent {
    sent: bool,
    recipients: Vec<String>,
}

pub(super) async fn test_mail(
    State(app): AppState,
    user: ApiUser,
    body: axum::body::Bytes,
) -> AppResult<Json<TestMailSent>> {
    // The body is optional: empty means "to the configured recipients".
    let to = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let parsed: TestMail =
            serde_json::from_slice(&body).map_err(|e| AppError::Invalid(e.to_string()))?;
        parsed.to
    };
    let language = accounts::user(&app, &user.name)?.language;
    let recipients = settings::send_test_mail(&app, to, &language).await?;
    Ok(Json(TestMailSent {
        sent: true,
        recipients,
    }))
}

pub(super) async fn plans(State(app): AppState, _user: ApiUser) -> AppResult<Json<Vec<Plan>>> {
    Ok(Json(settings::plans(&app)?))
}

pub(super) async fn plan(
    State(app): AppState,
    _user: ApiUser,
    Path(id): Path<String>,
) -> AppResult<Json<Plan>> {
    Ok(Json(settings::plan(&app, &id)?))
}

pub(super) async fn update_plan(
    State(app): AppState,
    user: ApiUser,
    Path(id): Path<String>,
    ApiJson(edit): ApiJson<PlanSettings>,
) -> AppResult<Json<Plan>> {
    Ok(Json(settings::update_plan(&app, &user.name, &id, edit)?))
}
