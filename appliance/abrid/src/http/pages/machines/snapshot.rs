//! Browsing a snapshot: the folders and files of a files snapshot, and restoring a part of
//! it onto the machine. An image snapshot is handed to `image_snapshot`, since its page
//! shows disks and volumes rather than one tree.

use super::super::dashboard::{human_bytes, human_time};
use super::super::{Chrome, PageUser, render, status_of};
use super::image_snapshot::image_snapshot_view;
use super::machine::{SnapshotRow, snapshot_row};
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

pub struct Crumb {
    pub name: String,
    pub path: String,
}

pub struct ItemRow {
    pub name: String,
    pub path: String,
    pub is_dir: bool,
    pub is_file: bool,
    pub kind: &'static str,
    pub size: String,
    pub modified: String,
}

#[derive(Template)]
#[template(path = "snapshot.html")]
pub struct SnapshotPage {
    pub c: Chrome,
    pub machine_id: String,
    pub hostname: String,
    pub snapshot: SnapshotRow,
    pub path: String,
    pub crumbs: Vec<Crumb>,
    pub items: Vec<ItemRow>,
    pub default_target: String,
}

pub(super) fn crumbs(path: &str) -> Vec<Crumb> {
    let mut out = Vec::new();
    let mut acc = String::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if !acc.is_empty() {
            acc.push('/');
        }
        acc.push_str(part);
        out.push(Crumb {
            name: part.to_string(),
            path: acc.clone(),
        });
    }
    out
}

pub async fn snapshot_page(
    State(app): State<Arc<App>>,
    user: PageUser,
    Path((id, sid)): Path<(String, String)>,
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
    snapshot_view(&app, c, &id, &sid, &raw_path, StatusCode::OK)
}

fn snapshot_view(
    app: &Arc<App>,
    c: Chrome,
    id: &str,
    sid: &str,
    raw_path: &str,
    status: StatusCode,
) -> Response {
    if let Ok(manifest) = backups::machine_snapshot(app, id, sid)
        && manifest.kind == abri_store::SnapshotKind::Image
    {
        return image_snapshot_view(app, c, id, manifest);
    }
    let result = (|| {
        let machine = machines::machine(app, id)?;
        let manifest = backups::machine_snapshot(app, id, sid)?;
        let dir = crate::snapshot_files::normalize(raw_path)?;
        let items = crate::snapshot_files::list_dir(&app.store, manifest.catalog.clone(), &dir)?;
        Ok::<_, AppError>((machine, manifest, dir, items))
    })();
    let (machine, manifest, dir, items) = match result {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let path = String::from_utf8_lossy(&dir).into_owned();
    let page = SnapshotPage {
        machine_id: machine.id.clone(),
        hostname: machine.hostname.clone(),
        snapshot: snapshot_row(&manifest),
        crumbs: crumbs(&path),
        items: items
            .into_iter()
            .map(|i| ItemRow {
                is_dir: i.kind == "dir",
                is_file: i.kind == "file",
                kind: i.kind,
                size: human_bytes(i.size),
                modified: human_time(i.mtime.max(0) as u64),
                name: i.name,
                path: i.path,
            })
            .collect(),
        default_target: if machine.os == "windows" {
            format!("C:\\abri-restore\\{sid}")
        } else {
            format!("/var/tmp/abri-restore/{sid}")
        },
        path,
        c,
    };
    render(status, &page)
}

pub async fn restore(
    State(app): State<Arc<App>>,
    user: PageUser,
    Path((id, sid)): Path<(String, String)>,
    PageForm(form): PageForm<RestoreForm>,
) -> Response {
    let result = user.check_csrf(&form.csrf).and_then(|()| {
        let paths = if form.path.trim_matches('/').is_empty() {
            Vec::new()
        } else {
            vec![form.path.trim_matches('/').to_string()]
        };
        let request = crate::jobs::RestoreRequest {
            snapshot: sid.clone(),
            paths,
            target: form.target.trim().to_string(),
            image: None,
        };
        backups::queue_restore(&app, &user.name, &id, request)
    });
    match result {
        Ok(_) => Redirect::to(&format!("/machines/{id}?restore=1")).into_response(),
        Err(e) => {
            let c = Chrome::new(
                &app,
                &user.language,
                Some(&user),
                "machines",
                &format!("/machines/{id}"),
            )
            .with_error(&e);
            let status = status_of(&e);
            snapshot_view(&app, c, &id, &sid, &form.path, status)
        }
    }
}
