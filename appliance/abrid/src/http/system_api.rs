//! API of the box's system: firmware and updates, backup disks (`/api/v1/system/...`).

use crate::app::App;
use crate::errors::{AppError, AppResult};
use crate::http::extract::ApiUser;
use crate::{datadisk, firmware};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Json, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use std::sync::Arc;

type AppState = State<Arc<App>>;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/firmware", get(firmware_info))
        .route("/update", post(update))
        .route("/reboot", post(reboot))
        .route("/disks", get(disks))
        .route("/disks/{id}/adopt", post(adopt))
}

/// Paths whose bodies are streamed by their handler instead of read whole first.
pub fn streams_body(path: &str) -> bool {
    path == "/api/v1/system/update" || path == "/settings/system/update"
}

async fn firmware_info(
    State(app): AppState,
    _user: ApiUser,
) -> AppResult<Json<firmware::FirmwareInfo>> {
    Ok(Json(firmware::info(&app.db).await?))
}

/// The body is the bundle itself (`application/octet-stream`).
async fn update(State(app): AppState, user: ApiUser, body: axum::body::Body) -> Response {
    let result = async {
        let turn = firmware::begin_update()?;
        let path = firmware::receive(&turn, &app.state_dir, body.into_data_stream()).await?;
        firmware::install(turn, &app.db, &path, &user.name).await
    }
    .await;
    match result {
        Ok(outcome) => Json(outcome).into_response(),
        Err(e) => close_after(e.into_response()),
    }
}

/// A refusal may leave part of a large upload unread: close the connection after it.
fn close_after(mut response: Response) -> Response {
    response.headers_mut().insert(
        axum::http::header::CONNECTION,
        axum::http::HeaderValue::from_static("close"),
    );
    response
}

async fn reboot(State(app): AppState, user: ApiUser) -> AppResult<StatusCode> {
    let _ = app
        .db
        .audit(&crate::state::AuditEvent::new(&user.name, "box.reboot", ""));
    tokio::spawn(async {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        firmware::reboot().await;
    });
    Ok(StatusCode::ACCEPTED)
}

async fn disks(State(app): AppState, _user: ApiUser) -> AppResult<Json<Vec<datadisk::Disk>>> {
    let db = app.db.clone();
    Ok(Json(
        crate::errors::blocking(move || Ok(datadisk::scan(&db))).await?,
    ))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct AdoptRequest {
    #[serde(default)]
    pub confirm: bool,
}

async fn adopt(
    State(app): AppState,
    user: ApiUser,
    Path(name): Path<String>,
    body: axum::body::Bytes,
) -> AppResult<Json<datadisk::StoreDisk>> {
    // The body is optional: no body means no confirmation.
    let request: AdoptRequest = if body.iter().all(u8::is_ascii_whitespace) {
        AdoptRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| AppError::Invalid(format!("adopt: {e}")))?
    };
    let confirm = request.confirm;
    let record = adopt_and_restart(&app, name, confirm, user.name).await?;
    Ok(Json(record))
}

/// Adopts the disk, then restarts abrid shortly after the answer is sent.
pub async fn adopt_and_restart(
    app: &Arc<App>,
    name: String,
    confirm: bool,
    actor: String,
) -> AppResult<datadisk::StoreDisk> {
    if app.dev {
        return Err(AppError::Invalid(
            "a development box does not adopt disks".into(),
        ));
    }
    let db = app.db.clone();
    let record =
        crate::errors::blocking(move || datadisk::adopt(&db, &name, confirm, &actor)).await?;
    tokio::spawn(async {
        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
        datadisk::restart();
    });
    Ok(record)
}
