//! What the box tells about itself: its status (name, CA fingerprint, whether it is
//! activated, version; open without login, since it is needed before there is a user), its
//! description, and the audit log of what its users did.

use super::AppState;
use crate::boxinfo;
use crate::errors::AppResult;
use crate::http::extract::ApiUser;
use abri_proto::api::Status;
use axum::Json;
use axum::extract::State;

pub(super) async fn status(State(app): AppState) -> AppResult<Json<Status>> {
    Ok(Json(app.status()?))
}

pub(super) async fn box_info(
    State(app): AppState,
    _user: ApiUser,
) -> AppResult<Json<boxinfo::BoxInfo>> {
    Ok(Json(boxinfo::box_info(&app)?))
}

pub(super) async fn audit(
    State(app): AppState,
    _user: ApiUser,
) -> AppResult<Json<Vec<crate::state::AuditEvent>>> {
    Ok(Json(app.db.recent_audit(200)?))
}
