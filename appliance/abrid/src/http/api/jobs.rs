//! Jobs across machines: those under way, one job's progress, and cancelling one.

use super::AppState;
use crate::errors::AppResult;
use crate::http::extract::ApiUser;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;

pub(super) async fn active_jobs(
    State(app): AppState,
    _user: ApiUser,
) -> Json<Vec<crate::jobs::Job>> {
    Json(app.jobs.active())
}

pub(super) async fn job(
    State(app): AppState,
    _user: ApiUser,
    Path(id): Path<String>,
) -> AppResult<Json<crate::jobs::Job>> {
    Ok(Json(app.jobs.get(&id)?))
}

pub(super) async fn cancel_job(
    State(app): AppState,
    user: ApiUser,
    Path(id): Path<String>,
) -> AppResult<StatusCode> {
    crate::backups::cancel_job(&app, &user.name, &id)?;
    Ok(StatusCode::ACCEPTED)
}
