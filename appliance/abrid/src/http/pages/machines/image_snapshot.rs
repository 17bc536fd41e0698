//! An image snapshot's page (its disks and their volumes), browsing the files of a volume
//! (ext4, NTFS), and restoring files from a volume onto the machine.

use super::super::dashboard::human_bytes;
use super::super::dashboard::human_time;
use super::super::{Chrome, PageUser, render};
use super::machine::{SnapshotRow, snapshot_row};
use super::snapshot::{Crumb, ItemRow, crumbs};
use super::{Q, RestoreForm};
use crate::app::App;
use crate::backups;
use crate::errors::AppError;
use crate::http::extract::PageForm;
use crate::machines;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use std::sync::Arc;

/// One image of an image snapshot, as its page shows it.
pub struct ImageCard {
    pub name: String,
    pub source: String,
    pub size: String,
    pub table: String,
    pub read: String,
    pub volumes: Vec<VolumeRow>,
}

pub struct VolumeRow {
    pub number: u32,
    pub label: String,
    pub fs: String,
    pub size: String,
    pub used: String,
    pub browsable: bool,
}

#[derive(Template)]
#[template(path = "image_snapshot.html")]
pub struct ImageSnapshotPage {
    pub c: Chrome,
    pub machine_id: String,
    pub hostname: String,
    pub snapshot: SnapshotRow,
    pub images: Vec<ImageCard>,
}

pub(super) fn image_snapshot_view(
    app: &Arc<App>,
    c: Chrome,
    id: &str,
    manifest: abri_store::SnapshotManifest,
) -> Response {
    let machine = match machines::machine(app, id) {
        Ok(m) => m,
        Err(e) => return e.into_response(),
    };
    let images = manifest
        .images
        .iter()
        .map(|i| ImageCard {
            name: i.name.clone(),
            source: i.source.clone(),
            size: human_bytes(i.size),
            table: i.table.clone(),
            read: i.read.clone(),
            volumes: i
                .volumes
                .iter()
                .map(|v| VolumeRow {
                    number: v.number,
                    label: v.label.clone(),
                    fs: v.fs.clone(),
                    size: human_bytes(v.size),
                    used: v.used_bytes.map(human_bytes).unwrap_or_else(|| "—".into()),
                    browsable: !v.fs.is_empty(),
                })
                .collect(),
        })
        .collect();
    let page = ImageSnapshotPage {
        machine_id: machine.id.clone(),
        hostname: machine.hostname.clone(),
        snapshot: snapshot_row(&manifest),
        images,
        c,
    };
    render(StatusCode::OK, &page)
}

#[derive(Template)]
#[template(path = "volume.html")]
pub struct VolumePage {
    pub c: Chrome,
    pub machine_id: String,
    pub hostname: String,
    pub snapshot: SnapshotRow,
    pub image: String,
    pub volume: u32,
    pub fs: String,
    pub path: String,
    pub crumbs: Vec<Crumb>,
    pub items: Vec<ItemRow>,
    pub default_target: String,
}

/// Browses a volume of an image snapshot (ext4, NTFS).
pub async fn volume_page(
    State(app): State<Arc<App>>,
    user: PageUser,
    Path((id, sid, image, volume)): Path<(String, String, String, u32)>,
    Query(q): Q,
) -> Response {
    let raw_path = q.get("path").cloned().unwrap_or_default();
    let c = Chrome::new(
        &app,
        &user.language,
        Some(&user),
        "machines",
        &format!("/machines/{id}"),
    );
    let result = async {
        let machine = machines::machine(&app, &id)?;
        let manifest = backups::machine_snapshot(&app, &id, &sid)?;
        let info = crate::snapshot_images::image_of(&manifest, &image)?;
        let fs_name = crate::image_browse::volume_of(&info, volume)?.fs;
        let dir = crate::image_browse::normalize(&raw_path)?;
        let (a, m) = (app.clone(), manifest.clone());
        let listing_dir = dir.clone();
        let items = crate::errors::blocking(move || {
            let fs = crate::image_browse::open_volume(
                &a.image_readers,
                a.store.clone(),
                &m,
                info,
                volume,
            )?;
            crate::image_browse::list(fs.as_ref(), &listing_dir)
        })
        .await?;
        Ok::<_, AppError>((machine, manifest, fs_name, dir, items))
    }
    .await;
    let (machine, manifest, fs, dir, items) = match result {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let path = String::from_utf8_lossy(&dir)
        .trim_start_matches('/')
        .to_string();
    let page = VolumePage {
        machine_id: machine.id.clone(),
        hostname: machine.hostname.clone(),
        snapshot: snapshot_row(&manifest),
        default_target: if machine.os == "windows" {
            format!("C:\\abri-restore\\{sid}")
        } else {
            format!("/var/tmp/abri-restore/{sid}")
        },
        image,
        volume,
        fs,
        crumbs: crumbs(&path),
        items: items
            .into_iter()
            .map(|e| {
                let kind = match e.kind {
                    abri_fsread::EntryKind::File => "file",
                    abri_fsread::EntryKind::Dir => "dir",
                    abri_fsread::EntryKind::Symlink => "symlink",
                    abri_fsread::EntryKind::Other => "other",
                };
                ItemRow {
                    is_dir: kind == "dir",
                    is_file: kind == "file",
                    kind,
                    size: human_bytes(e.size),
                    modified: e
                        .mtime_ns
                        .map(|t| human_time(t.div_euclid(1_000_000_000).max(0) as u64))
                        .unwrap_or_default(),
                    path: if path.is_empty() {
                        e.name.clone()
                    } else {
                        format!("{path}/{}", e.name)
                    },
                    name: e.name,
                }
            })
            .collect(),
        path,
        c,
    };
    render(StatusCode::OK, &page)
}

/// "Restore to the machine" from a volume of an image snapshot.
pub async fn volume_restore(
    State(app): State<Arc<App>>,
    user: PageUser,
    Path((id, sid, image, volume)): Path<(String, String, String, u32)>,
    PageForm(form): PageForm<RestoreForm>,
) -> Response {
    let result = user.check_csrf(&form.csrf).and_then(|()| {
        let request = crate::jobs::RestoreRequest {
            snapshot: sid.clone(),
            paths: vec![format!("/{}", form.path.trim_matches('/'))],
            target: form.target.trim().to_string(),
            image: Some(abri_proto::agent::ImageVolumeRef {
                image: image.clone(),
                volume,
            }),
        };
        backups::queue_restore(&app, &user.name, &id, request)
    });
    match result {
        Ok(_) => Redirect::to(&format!("/machines/{id}?restore=1")).into_response(),
        Err(e) => e.into_response(),
    }
}
