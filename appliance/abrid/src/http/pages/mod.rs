//! The console's HTML pages. Server-rendered (askama templates in `appliance/ui/templates`),
//! plain forms, no script needed. Each form carries the session's CSRF token; successful
//! posts redirect (303) so a reload never re-submits.

mod account;
mod dashboard;
pub(in crate::http) mod machines;
mod onboarding;
mod settings;
mod system;

use crate::accounts;
use crate::app::App;
use crate::errors::AppError;
use crate::secrets::constant_time_eq;
use crate::ui::i18n::{LANGUAGES, Texts, texts};
use askama::Template;
use axum::Router;
use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use std::sync::Arc;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/", get(onboarding::root))
        .route(
            "/activate",
            get(onboarding::activate_page).post(onboarding::activate),
        )
        .route(
            "/login",
            get(onboarding::login_page).post(onboarding::login),
        )
        .route("/logout", post(onboarding::logout))
        .route("/dashboard", get(dashboard::dashboard))
        .route("/account", get(account::account_page))
        .route("/account/password", post(account::change_password))
        .route("/account/language", post(account::set_language))
        .route(
            "/settings/mail",
            get(settings::mail_page).post(settings::save_mail),
        )
        .route("/settings/mail/test", post(settings::test_mail))
        .route("/settings/plans", get(settings::plans_page))
        .route(
            "/settings/plans/{id}",
            get(settings::plan_page).post(settings::save_plan),
        )
        .route("/settings/box", get(settings::box_page))
        .route("/settings/system", get(system::system_page))
        .route(
            "/settings/system/update",
            // The form carries a whole update bundle.
            post(system::upload_update).layer(axum::extract::DefaultBodyLimit::max(
                crate::firmware::MAX_BUNDLE_BYTES as usize + (1 << 20),
            )),
        )
        .route(
            "/settings/system/disks/{id}/adopt",
            post(system::adopt_disk),
        )
        .route("/machines", get(machines::machines_page))
        .route(
            "/machines/enrol",
            get(machines::enrol_page).post(machines::create_token),
        )
        .route("/machines/enrol/{id}/revoke", post(machines::revoke_token))
        .route(
            "/machines/enrol/windows-installer",
            post(machines::windows_kit),
        )
        .route("/machines/{id}", get(machines::machine_page))
        .route("/machines/{id}/backup", post(machines::backup_now))
        .route("/machines/{id}/revoke", post(machines::revoke))
        .route(
            "/machines/{id}/snapshots/{snapshot}",
            get(machines::snapshot_page),
        )
        .route(
            "/machines/{id}/snapshots/{snapshot}/restore",
            post(machines::restore),
        )
        .route(
            "/machines/{id}/snapshots/{snapshot}/images/{image}/volumes/{volume}",
            get(machines::volume_page),
        )
        .route(
            "/machines/{id}/snapshots/{snapshot}/images/{image}/volumes/{volume}/restore",
            post(machines::volume_restore),
        )
        .route("/jobs/{id}/cancel", post(machines::cancel_job))
        .route("/ca.pem", get(ca_certificate))
        .route("/static/abri.css", get(stylesheet))
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        crate::ui::STYLESHEET,
    )
        .into_response()
}

async fn ca_certificate(axum::extract::State(app): axum::extract::State<Arc<App>>) -> Response {
    let disposition = format!("attachment; filename=\"{}-ca.pem\"", app.identity.hostname);
    (
        [
            (header::CONTENT_TYPE, "application/x-pem-file".to_string()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        app.ca.ca_pem().to_string(),
    )
        .into_response()
}

/// A message at the top of a page.
pub struct Flash {
    pub kind: &'static str,
    pub text: String,
}

impl Flash {
    pub fn ok(text: &str) -> Option<Flash> {
        Some(Flash {
            kind: "ok",
            text: text.to_string(),
        })
    }

    pub fn error(text: String) -> Option<Flash> {
        Some(Flash {
            kind: "error",
            text,
        })
    }
}

pub struct LanguageOption {
    pub code: &'static str,
    pub name: &'static str,
    pub selected: bool,
}

/// What every page's frame needs: texts, language, the user and CSRF token when logged in.
pub struct Chrome {
    pub t: &'static Texts,
    pub lang: String,
    pub user: Option<String>,
    pub csrf: String,
    pub hostname: String,
    pub active: &'static str,
    pub path: String,
    pub flash: Option<Flash>,
    pub languages: Vec<LanguageOption>,
    /// Reload the page every N seconds (live progress without scripts).
    pub refresh: Option<u32>,
}

impl Chrome {
    pub fn new(
        app: &App,
        lang: &str,
        user: Option<&PageUser>,
        active: &'static str,
        path: &str,
    ) -> Chrome {
        let lang = if crate::ui::i18n::is_supported(lang) {
            lang
        } else {
            "fr"
        };
        Chrome {
            t: texts(lang),
            lang: lang.to_string(),
            user: user.map(|u| u.name.clone()),
            csrf: user.map(|u| u.csrf_token.clone()).unwrap_or_default(),
            hostname: app.identity.hostname.clone(),
            active,
            path: path.to_string(),
            flash: None,
            languages: LANGUAGES
                .iter()
                .map(|(code, name)| LanguageOption {
                    code,
                    name,
                    selected: *code == lang,
                })
                .collect(),
            refresh: None,
        }
    }

    /// The text shown for an error: translated for the common cases.
    pub fn error_text(&self, error: &AppError) -> String {
        match error {
            AppError::Csrf => self.t.error_csrf.to_string(),
            AppError::Internal(e) => {
                tracing::error!("page failed: {e:#}");
                self.t.error_generic.to_string()
            }
            other => other.to_string(),
        }
    }

    pub fn with_error(mut self, error: &AppError) -> Chrome {
        self.flash = Flash::error(self.error_text(error));
        self
    }
}

/// Renders a template; an error status for failed form posts.
pub fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!("template failed: {e}");
            super::internal_error_page()
        }
    }
}

pub fn status_of(error: &AppError) -> StatusCode {
    error.status_and_code().0
}

/// A logged-in console user on an activated box; otherwise the request is redirected to
/// the activation or login page.
pub struct PageUser {
    pub name: String,
    pub csrf_token: String,
    pub session_key: String,
    pub language: String,
}

impl PageUser {
    pub fn check_csrf(&self, presented: &str) -> Result<(), AppError> {
        if constant_time_eq(presented, &self.csrf_token) {
            Ok(())
        } else {
            Err(AppError::Csrf)
        }
    }
}

impl FromRequestParts<Arc<App>> for PageUser {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        let fail = |e: AppError| e.into_response();
        if !app.is_activated().map_err(|e| fail(e.into()))? {
            return Err(Redirect::to("/activate").into_response());
        }
        let token = super::extract::cookie_value(parts, super::extract::SESSION_COOKIE);
        let session = match token.as_deref() {
            Some(t) => accounts::session_for(app, t)
                .map_err(fail)?
                .map(|s| (s, t.to_string())),
            None => None,
        };
        let Some((session, token)) = session else {
            return Err(Redirect::to("/login").into_response());
        };
        let language = accounts::user(app, &session.user)
            .map(|u| u.language)
            .unwrap_or_else(|_| app.default_language().to_string());
        Ok(PageUser {
            name: session.user,
            csrf_token: session.csrf_token,
            session_key: crate::secrets::sha256_hex(&token),
            language,
        })
    }
}

/// The `?lang=` of pages shown before login, else the box's default language.
pub fn anonymous_language(app: &App, query: &std::collections::HashMap<String, String>) -> String {
    query
        .get("lang")
        .filter(|l| crate::ui::i18n::is_supported(l))
        .cloned()
        .unwrap_or_else(|| app.default_language().to_string())
}
