//! Enrolled machines: the list, one machine, revoking its key, its job history and list
//! of snapshots, and the jobs asked of it (a backup now, a restore onto it), which its
//! agent carries out at its next poll.

use super::AppState;
use crate::errors::{AppError, AppResult, blocking};
use crate::http::extract::{ApiJson, ApiUser};
use crate::machines;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

#[derive(Serialize)]
pub(super) struct MachineView {
    id: String,
    hostname: String,
    os: String,
    agent_version: String,
    enrolled: u64,
    last_seen: u64,
    revoked: bool,
}

impl From<crate::state::Machine> for MachineView {
    fn from(m: crate::state::Machine) -> Self {
        MachineView {
            id: m.id,
            hostname: m.hostname,
            os: m.os,
            agent_version: m.agent_version,
            enrolled: m.enrolled,
            last_seen: m.last_seen,
            revoked: m.revoked_at.is_some(),
        }
    }
}

pub(super) async fn machines(
    State(app): AppState,
    _user: ApiUser,
) -> AppResult<Json<Vec<MachineView>>> {
    Ok(Json(
        machines::machines(&app)?
            .into_iter()
            .map(MachineView::from)
            .collect(),
    ))
}

pub(super) async fn machine(
    State(app): AppState,
    _user: ApiUser,
    Path(id): Path<String>,
) -> AppResult<Json<MachineView>> {
    Ok(Json(machines::machine(&app, &id)?.into()))
}

pub(super) async fn revoke_machine(
    State(app): AppState,
    user: ApiUser,
    Path(id): Path<String>,
) -> AppResult<StatusCode> {
    machines::revoke_machine(&app, &user.name, &id)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BackupNow {
    #[serde(default)]
    plan: Option<String>,
    #[serde(default)]
    full: bool,
}

/// Queues a backup of a machine now; its agent starts it at its next poll.
pub(super) async fn backup_machine(
    State(app): AppState,
    user: ApiUser,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> AppResult<(StatusCode, Json<crate::jobs::Job>)> {
    let req: BackupNow = if body.iter().all(u8::is_ascii_whitespace) {
        BackupNow::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| AppError::Invalid(e.to_string()))?
    };
    let job = crate::backups::queue_backup(
        &app,
        &user.name,
        &id,
        req.plan.as_deref().unwrap_or("files"),
        req.full,
    )?;
    Ok((StatusCode::CREATED, Json(job)))
}

pub(super) async fn machine_jobs(
    State(app): AppState,
    _user: ApiUser,
    Path(id): Path<String>,
) -> AppResult<Json<Vec<crate::jobs::Job>>> {
    machines::machine(&app, &id)?;
    Ok(Json(app.jobs.history(&id, 100)?))
}

/// Queues a restore onto the machine, carried out by its agent.
pub(super) async fn restore_machine(
    State(app): AppState,
    user: ApiUser,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<RestoreBody>,
) -> AppResult<(StatusCode, Json<crate::jobs::Job>)> {
    let request = crate::jobs::RestoreRequest {
        snapshot: req.snapshot,
        paths: req.paths,
        target: req.target,
        image: req.image,
    };
    Ok((
        StatusCode::CREATED,
        Json(crate::backups::queue_restore(
            &app, &user.name, &id, request,
        )?),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RestoreBody {
    snapshot: String,
    #[serde(default)]
    paths: Vec<String>,
    target: String,
    /// Files from inside an image snapshot: `{"image": "sda", "volume": 2}`.
    #[serde(default)]
    image: Option<abri_proto::agent::ImageVolumeRef>,
}

pub(super) async fn machine_snapshots(
    State(app): AppState,
    _user: ApiUser,
    Path(id): Path<String>,
) -> AppResult<Json<Vec<abri_proto::agent::SnapshotSummary>>> {
    machines::machine(&app, &id)?;
    let store = app.store.clone();
    let list = blocking(move || Ok(abri_store::list_snapshots(&store, &id)?)).await?;
    Ok(Json(
        list.iter().map(crate::http::agent_api::summary).collect(),
    ))
}
