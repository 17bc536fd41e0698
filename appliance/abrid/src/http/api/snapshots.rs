//! A files snapshot's contents, read straight from the store: its folders listed and a
//! file or folder downloaded. Downloads stream, so no archive is built in memory first.

use super::AppState;
use crate::errors::{AppError, AppResult, blocking};
use crate::http::extract::ApiUser;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

#[derive(Deserialize)]
pub(super) struct TreeQuery {
    #[serde(default)]
    path: String,
}

/// The folders and files directly inside `path` of a snapshot.
pub(super) async fn snapshot_tree(
    State(app): AppState,
    _user: ApiUser,
    Path((id, snapshot)): Path<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<TreeQuery>,
) -> AppResult<Json<Vec<crate::snapshot_files::DirItem>>> {
    let manifest = crate::backups::machine_snapshot(&app, &id, &snapshot)?;
    let dir = crate::snapshot_files::normalize(&q.path)?;
    let store = app.store.clone();
    let items =
        blocking(move || crate::snapshot_files::list_dir(&store, manifest.catalog, &dir)).await?;
    Ok(Json(items))
}

#[derive(Deserialize)]
pub(super) struct DownloadQuery {
    #[serde(default)]
    path: String,
    /// `tar.gz` or `zip` for an archive; absent: the file itself, or tar.gz for a folder.
    #[serde(default)]
    format: Option<String>,
}

/// Streams a file of a snapshot, or a folder as `.tar.gz` / `.zip`.
pub(super) async fn snapshot_download(
    State(app): AppState,
    _user: ApiUser,
    Path((id, snapshot)): Path<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<DownloadQuery>,
) -> AppResult<Response> {
    use crate::snapshot_files::{ArchiveFormat, FileReader, find, streamed_body, write_archive};
    let manifest = crate::backups::machine_snapshot(&app, &id, &snapshot)?;
    let path = crate::snapshot_files::normalize(&q.path)?;
    let store = app.store.clone();
    let (catalog, wanted) = (manifest.catalog.clone(), path.clone());
    let entry = if path.is_empty() {
        None
    } else {
        Some(
            blocking(move || find(&store, catalog, &wanted))
                .await?
                .ok_or_else(|| AppError::NotFound(format!("{} in snapshot {snapshot}", q.path)))?,
        )
    };
    let base = match path.iter().rposition(|b| *b == b'/') {
        Some(i) => String::from_utf8_lossy(&path[i + 1..]).into_owned(),
        None if path.is_empty() => format!("{}-{}", manifest.host, manifest.id),
        None => String::from_utf8_lossy(&path).into_owned(),
    };
    let safe_name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let store = app.store.clone();
    let is_file = entry
        .as_ref()
        .is_some_and(|e| matches!(e.kind, abri_store::EntryKind::File));
    if is_file && q.format.is_none() {
        let entry = entry.ok_or_else(|| AppError::NotFound("file".into()))?;
        let size = entry.size;
        let body = streamed_body(move |out| {
            let mut reader = FileReader::new(store, &entry);
            std::io::copy(&mut reader, out)
                .map_err(|e| AppError::Internal(anyhow::anyhow!("{e}")))?;
            Ok(())
        });
        return Ok((
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (header::CONTENT_LENGTH, size.to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{safe_name}\""),
                ),
            ],
            body,
        )
            .into_response());
    }
    let format = ArchiveFormat::parse(q.format.as_deref().unwrap_or("tar.gz"))?;
    let body = streamed_body(move |out| write_archive(store, manifest.catalog, &path, format, out));
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"{safe_name}.{}\"",
                    format.extension()
                ),
            ),
        ],
        body,
    )
        .into_response())
}
