//! An image snapshot's disks: a whole image downloaded (raw or qcow2), and the files of
//! its volumes (ext4, NTFS) listed and downloaded without restoring the disk first.

use super::AppState;
use crate::errors::{AppError, AppResult, blocking};
use crate::http::extract::ApiUser;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
pub(super) struct VolumeQuery {
    #[serde(default)]
    path: String,
}

#[derive(Serialize)]
pub(super) struct VolumeItem {
    name: String,
    /// `file`, `dir`, `symlink` or `other`.
    kind: &'static str,
    size: u64,
    /// Unix seconds, when known.
    mtime: Option<i64>,
    mode: Option<u32>,
}

fn kind_name(k: abri_fsread::EntryKind) -> &'static str {
    match k {
        abri_fsread::EntryKind::File => "file",
        abri_fsread::EntryKind::Dir => "dir",
        abri_fsread::EntryKind::Symlink => "symlink",
        abri_fsread::EntryKind::Other => "other",
    }
}

/// Opens volume `volume` of an image of a snapshot (ext4 or NTFS).
async fn open_volume(
    app: &std::sync::Arc<crate::app::App>,
    id: &str,
    snapshot: &str,
    image: &str,
    volume: u32,
) -> AppResult<(
    abri_store::SnapshotManifest,
    Box<dyn abri_fsread::FileSystem>,
)> {
    let manifest = crate::backups::machine_snapshot(app, id, snapshot)?;
    let info = crate::snapshot_images::image_of(&manifest, image)?;
    let (a, m) = (app.clone(), manifest.clone());
    let fs = blocking(move || {
        crate::image_browse::open_volume(&a.image_readers, a.store.clone(), &m, info, volume)
    })
    .await?;
    Ok((manifest, fs))
}

/// The entries of a folder inside a volume of an image snapshot.
pub(super) async fn volume_files(
    State(app): AppState,
    _user: ApiUser,
    Path((id, snapshot, image, volume)): Path<(String, String, String, u32)>,
    axum::extract::Query(q): axum::extract::Query<VolumeQuery>,
) -> AppResult<Json<Vec<VolumeItem>>> {
    let path = crate::image_browse::normalize(&q.path)?;
    let (_, fs) = open_volume(&app, &id, &snapshot, &image, volume).await?;
    let items = blocking(move || crate::image_browse::list(fs.as_ref(), &path)).await?;
    Ok(Json(
        items
            .into_iter()
            .map(|e| VolumeItem {
                name: e.name,
                kind: kind_name(e.kind),
                size: e.size,
                mtime: e.mtime_ns.map(|t| t.div_euclid(1_000_000_000)),
                mode: e.mode,
            })
            .collect(),
    ))
}

/// A file inside a volume of an image snapshot, or a folder as `.tar.gz`.
pub(super) async fn volume_download(
    State(app): AppState,
    _user: ApiUser,
    Path((id, snapshot, image, volume)): Path<(String, String, String, u32)>,
    axum::extract::Query(q): axum::extract::Query<VolumeQuery>,
) -> AppResult<Response> {
    let path = crate::image_browse::normalize(&q.path)?;
    let (_, fs) = open_volume(&app, &id, &snapshot, &image, volume).await?;
    let (fs, p) = (std::sync::Arc::new(fs), path.clone());
    let f2 = fs.clone();
    let entry = blocking(move || {
        f2.stat(&p)
            .map_err(|e| AppError::NotFound(format!("{}: {e}", String::from_utf8_lossy(&p))))
    })
    .await?;
    let base = if entry.name.is_empty() {
        format!("{image}-{volume}")
    } else {
        entry.name.clone()
    };
    let safe: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    match entry.kind {
        abri_fsread::EntryKind::File => {
            let body = crate::snapshot_files::streamed_body(move |out| {
                crate::image_browse::write_file(fs.as_ref().as_ref(), &path, out)
            });
            Ok((
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                    (header::CONTENT_LENGTH, entry.size.to_string()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{safe}\""),
                    ),
                ],
                body,
            )
                .into_response())
        }
        abri_fsread::EntryKind::Dir => {
            let body = crate::snapshot_files::streamed_body(move |out| {
                crate::image_browse::write_folder_tgz(fs.as_ref().as_ref(), &path, out)
            });
            Ok((
                [
                    (header::CONTENT_TYPE, "application/gzip".to_string()),
                    (
                        header::CONTENT_DISPOSITION,
                        format!("attachment; filename=\"{safe}.tar.gz\""),
                    ),
                ],
                body,
            )
                .into_response())
        }
        _ => Err(AppError::Invalid(
            "path: only files and folders can be downloaded".into(),
        )),
    }
}

#[derive(Deserialize)]
pub(super) struct ImageDownloadQuery {
    /// `raw` (default) or `qcow2`.
    #[serde(default)]
    format: Option<String>,
}

/// Streams one image of an image snapshot as a raw disk image or as qcow2.
pub(super) async fn image_download(
    State(app): AppState,
    _user: ApiUser,
    Path((id, snapshot, image)): Path<(String, String, String)>,
    axum::extract::Query(q): axum::extract::Query<ImageDownloadQuery>,
) -> AppResult<Response> {
    use crate::snapshot_images::{ImageFormat, download_len, image_of, write_image};
    let format = ImageFormat::parse(q.format.as_deref().unwrap_or("raw"))?;
    let manifest = crate::backups::machine_snapshot(&app, &id, &snapshot)?;
    let info = image_of(&manifest, &image)?;
    let store = app.store.clone();
    let (catalog, i) = (manifest.catalog.clone(), info.clone());
    let len = blocking(move || download_len(&store, &catalog, &i, format)).await?;
    let store = app.store.clone();
    let catalog = manifest.catalog.clone();
    let body = crate::snapshot_files::streamed_body(move |out| {
        write_image(store, catalog, &info, format, out)
    });
    let name = format!(
        "{}-{}-{}.{}",
        manifest
            .host
            .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "_"),
        manifest.id,
        image,
        format.extension()
    );
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_string()),
            (header::CONTENT_LENGTH, len.to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
        ],
        body,
    )
        .into_response())
}
