//! Upkeep of the store on request: pruning by the plans' retention and freeing unused
//! chunks, and verifying every chunk. Both are recorded in the audit log first.

use super::AppState;
use crate::errors::AppResult;
use crate::http::extract::ApiUser;
use axum::Json;
use axum::extract::State;
use serde::Serialize;

pub(super) async fn last_upkeep(
    State(app): AppState,
    _user: ApiUser,
) -> Json<Option<crate::maintenance::UpkeepReport>> {
    Json(app.upkeep.last.lock().ok().and_then(|l| l.clone()))
}

/// Prunes by every plan's retention and frees unreferenced chunks now.
pub(super) async fn run_upkeep(
    State(app): AppState,
    user: ApiUser,
) -> AppResult<Json<crate::maintenance::UpkeepReport>> {
    app.db.audit(&crate::state::AuditEvent::new(
        &user.name,
        "upkeep_requested",
        "",
    ))?;
    Ok(Json(crate::maintenance::run_upkeep(app.clone()).await?))
}

#[derive(Serialize)]
pub(super) struct VerifyView {
    clean: bool,
    chunks_checked: u64,
    bytes_checked: u64,
    corrupt: Vec<String>,
    damaged_snapshots: Vec<String>,
}

/// Re-reads and re-hashes every chunk, and checks every snapshot's chunks exist.
pub(super) async fn verify_store(
    State(app): AppState,
    user: ApiUser,
) -> AppResult<Json<VerifyView>> {
    app.db.audit(&crate::state::AuditEvent::new(
        &user.name,
        "verify_requested",
        "",
    ))?;
    let r = crate::maintenance::verify(app.clone()).await?;
    Ok(Json(VerifyView {
        clean: r.is_clean(),
        chunks_checked: r.chunks_checked,
        bytes_checked: r.bytes_checked,
        corrupt: r
            .corrupt
            .iter()
            .map(|c| format!("{} ({})", c.digest, c.problem))
            .collect(),
        damaged_snapshots: r
            .damaged
            .iter()
            .map(|d| format!("{}/{}", d.machine, d.id))
            .collect(),
    }))
}
