//! Enrolling machines: the tokens an agent joins with, the command lines that use a new
//! one (shown once, since the box keeps only its hash), and the Windows installer kit with
//! a token built in.

use super::super::dashboard::human_time;
use super::super::{Chrome, PageUser, render, status_of};
use super::CsrfForm;
use crate::app::App;
use crate::errors::AppError;
use crate::http::extract::PageForm;
use crate::machines;
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use std::sync::Arc;

pub struct TokenRow {
    pub id: String,
    pub name: String,
    pub expires: String,
    pub uses: u64,
    pub revoked: bool,
}

#[derive(Template)]
#[template(path = "enrol.html")]
pub struct EnrolPage {
    pub c: Chrome,
    pub tokens: Vec<TokenRow>,
    /// The command line with a token just created, shown once.
    pub new_command: Option<String>,
    /// The same for Windows: a silent install of the MSI (docs/windows.md).
    pub new_windows_command: Option<String>,
    /// The token just created, for the Windows installer kit form.
    pub new_token: Option<String>,
    /// Whether this box carries the Windows installer it can make kits of.
    pub windows_installer: bool,
    /// The address a kit gives agents by default.
    pub box_url: String,
}

/// What the enrolment page shows once a token is made: the Linux and Windows command lines
/// and the token itself (for the installer kit).
pub struct NewToken {
    pub command: String,
    pub windows_command: String,
    pub token: String,
}

fn enrol_view(app: &App, c: Chrome, new: Option<NewToken>, status: StatusCode) -> Response {
    let (new_command, new_windows_command, new_token) = match new {
        Some(n) => (Some(n.command), Some(n.windows_command), Some(n.token)),
        None => (None, None, None),
    };
    let tokens = machines::enrol_tokens(app)
        .unwrap_or_default()
        .into_iter()
        .map(|t| TokenRow {
            expires: human_time(t.expires),
            id: t.id,
            name: t.name,
            uses: t.uses,
            revoked: t.revoked,
        })
        .collect();
    render(
        status,
        &EnrolPage {
            c,
            tokens,
            new_command,
            new_windows_command,
            new_token,
            windows_installer: crate::installers::windows_msi(&app.installers_dir).is_some(),
            box_url: crate::installers::default_box_url(app),
        },
    )
}

fn enrol_chrome(app: &App, user: &PageUser) -> Chrome {
    Chrome::new(
        app,
        &user.language,
        Some(user),
        "machines",
        "/machines/enrol",
    )
}

/// The enrolment page again, with what went wrong.
fn enrol_failed(app: &App, user: &PageUser, e: &AppError) -> Response {
    enrol_view(
        app,
        enrol_chrome(app, user).with_error(e),
        None,
        status_of(e),
    )
}

pub async fn enrol_page(State(app): State<Arc<App>>, user: PageUser) -> Response {
    let c = enrol_chrome(&app, &user);
    enrol_view(&app, c, None, StatusCode::OK)
}

#[derive(Deserialize)]
pub struct TokenForm {
    csrf: String,
    name: String,
    days: String,
}

pub async fn create_token(
    State(app): State<Arc<App>>,
    user: PageUser,
    PageForm(form): PageForm<TokenForm>,
) -> Response {
    let result = user.check_csrf(&form.csrf).and_then(|()| {
        let days: u32 = form
            .days
            .trim()
            .parse()
            .map_err(|_| AppError::Invalid("days: a whole number of days".into()))?;
        machines::create_enrol_token(&app, &user.name, &form.name, days)
    });
    match result {
        Ok((_, secret)) => {
            let box_url = crate::installers::default_box_url(&app);
            let fingerprint = app.ca.fingerprint();
            let command = format!(
                "abri-agent enroll --box {box_url} --fingerprint {fingerprint} --token {secret}"
            );
            let windows_command = format!(
                "msiexec /i abri-agent.msi /qn BOX_URL={box_url} \
                 FINGERPRINT={fingerprint} TOKEN={secret}"
            );
            let new = NewToken {
                command,
                windows_command,
                token: secret,
            };
            enrol_view(&app, enrol_chrome(&app, &user), Some(new), StatusCode::OK)
        }
        Err(e) => enrol_failed(&app, &user, &e),
    }
}

#[derive(Deserialize)]
pub struct KitForm {
    csrf: String,
    token: String,
    box_url: String,
}

/// The Windows installer with the box's address, its fingerprint and a token built in.
pub async fn windows_kit(
    State(app): State<Arc<App>>,
    user: PageUser,
    PageForm(form): PageForm<KitForm>,
) -> Response {
    let result = match user.check_csrf(&form.csrf) {
        Ok(()) => {
            let app = app.clone();
            crate::errors::blocking(move || {
                crate::installers::windows_kit(&app, &form.token, &form.box_url)
            })
            .await
        }
        Err(e) => Err(e),
    };
    match result {
        Ok(bytes) => kit_response(&app, bytes),
        Err(e) => enrol_failed(&app, &user, &e),
    }
}

/// An installer kit as a download; it holds a token, so no cache keeps it.
pub fn kit_response(app: &App, bytes: Vec<u8>) -> Response {
    use axum::http::header;
    let name = format!("abri-agent-{}.msi", app.identity.hostname);
    (
        [
            (header::CONTENT_TYPE, "application/x-msi".to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{name}\""),
            ),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ],
        bytes,
    )
        .into_response()
}

pub async fn revoke_token(
    State(app): State<Arc<App>>,
    user: PageUser,
    Path(id): Path<String>,
    PageForm(form): PageForm<CsrfForm>,
) -> Response {
    let result = user
        .check_csrf(&form.csrf)
        .and_then(|()| machines::revoke_enrol_token(&app, &user.name, &id));
    match result {
        Ok(()) => Redirect::to("/machines/enrol").into_response(),
        Err(e) => enrol_failed(&app, &user, &e),
    }
}
