//! The console's system page: firmware version, slots, update upload, backup disks.

use super::{Chrome, Flash, PageUser, render, status_of};
use crate::app::App;
use crate::datadisk::{self, DiskState};
use crate::errors::AppError;
use crate::firmware;
use crate::http::extract::PageForm;
use askama::Template;
use axum::extract::{Multipart, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Template)]
#[template(path = "system.html")]
pub struct SystemPage {
    pub c: Chrome,
    pub fw: firmware::FirmwareInfo,
    pub disks: Vec<datadisk::Disk>,
}

async fn page(
    app: &Arc<App>,
    user: &PageUser,
    flash: Option<Flash>,
    status: StatusCode,
) -> Response {
    let fw = match firmware::info(&app.db).await {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let db = app.db.clone();
    let disks = tokio::task::spawn_blocking(move || datadisk::scan(&db))
        .await
        .unwrap_or_default();
    let mut c = Chrome::new(app, &user.language, Some(user), "box", "/settings/system");
    if flash.is_some() {
        c.flash = flash;
    }
    render(status, &SystemPage { c, fw, disks })
}

pub async fn system_page(
    State(app): State<Arc<App>>,
    user: PageUser,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    // Only a disk name comes from the address, never the text shown: a crafted link cannot
    // make the console say anything.
    let flash = q
        .get("adopted")
        .filter(|name| is_disk_name(name))
        .and_then(|name| Flash::ok(&format!("{} {name}", user_texts(&user).disk_adopted)));
    page(&app, &user, flash, StatusCode::OK).await
}

/// The form sends `csrf` first, then the file `bundle`.
pub async fn upload_update(
    State(app): State<Arc<App>>,
    user: PageUser,
    mut form: Multipart,
) -> Response {
    let result = async {
        let mut csrf_ok = false;
        while let Some(field) = form
            .next_field()
            .await
            .map_err(|e| AppError::Invalid(format!("the upload form is malformed: {e}")))?
        {
            match field.name() {
                Some("csrf") => {
                    let value = field.text().await.map_err(|e| {
                        AppError::Invalid(format!("the upload form is malformed: {e}"))
                    })?;
                    user.check_csrf(&value)?;
                    csrf_ok = true;
                }
                Some("bundle") if csrf_ok => {
                    let turn = firmware::begin_update()?;
                    let path = firmware::receive(&turn, &app.state_dir, Box::pin(field)).await?;
                    return firmware::install(turn, &app.db, &path, &user.name).await;
                }
                _ => {}
            }
        }
        Err(if csrf_ok {
            AppError::Invalid("choose an update file (.raucb)".into())
        } else {
            AppError::Csrf
        })
    }
    .await;
    match result {
        Ok(outcome) => {
            let text = format!(
                "{} {} — {}",
                user_texts(&user).update_installed,
                outcome.version,
                user_texts(&user).rebooting
            );
            page(&app, &user, Flash::ok(&text), StatusCode::OK).await
        }
        Err(e) => {
            let mut response = page(&app, &user, Flash::error(e.to_string()), status_of(&e)).await;
            response.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            response
        }
    }
}

fn user_texts(user: &PageUser) -> &'static crate::ui::i18n::Texts {
    crate::ui::i18n::texts(&user.language)
}

#[derive(Deserialize)]
pub struct AdoptForm {
    csrf: String,
    #[serde(default)]
    confirm: Option<String>,
}

pub async fn adopt_disk(
    State(app): State<Arc<App>>,
    user: PageUser,
    Path(name): Path<String>,
    PageForm(form): PageForm<AdoptForm>,
) -> Response {
    let result = match user.check_csrf(&form.csrf) {
        Ok(()) => {
            crate::http::system_api::adopt_and_restart(
                &app,
                name.clone(),
                form.confirm.is_some(),
                user.name.clone(),
            )
            .await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => Redirect::to(&format!("/settings/system?adopted={name}")).into_response(),
        Err(e) => page(&app, &user, Flash::error(e.to_string()), status_of(&e)).await,
    }
}

/// A kernel disk name as `/sys/block` lists them (`sda`, `vdb`, `nvme0n1`).
fn is_disk_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::is_disk_name;

    #[test]
    fn only_disk_names_come_from_the_address() {
        for name in ["sda", "vdb", "nvme0n1", "mmcblk0"] {
            assert!(is_disk_name(name), "{name}");
        }
        for name in [
            "",
            "Your box is broken",
            "sda/../x",
            "vdb%20",
            &"a".repeat(33),
        ] {
            assert!(!is_disk_name(name), "{name}");
        }
    }
}
