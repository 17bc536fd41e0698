//! The user's own account: password and language.

use super::{Chrome, Flash, PageUser, render, status_of};
use crate::accounts;
use crate::app::App;
use crate::errors::AppError;
use crate::http::extract::PageForm;
use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;

#[derive(Template)]
#[template(path = "account.html")]
pub struct AccountPage {
    pub c: Chrome,
}

pub async fn account_page(
    State(app): State<Arc<App>>,
    user: PageUser,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let mut c = Chrome::new(&app, &user.language, Some(&user), "account", "/account");
    if q.contains_key("changed") {
        c.flash = Flash::ok(c.t.password_changed);
    } else if q.contains_key("language") {
        c.flash = Flash::ok(c.t.language_saved);
    }
    render(StatusCode::OK, &AccountPage { c })
}

#[derive(Deserialize)]
pub struct PasswordForm {
    csrf: String,
    current_password: String,
    new_password: String,
    confirm_password: String,
}

pub async fn change_password(
    State(app): State<Arc<App>>,
    user: PageUser,
    PageForm(form): PageForm<PasswordForm>,
) -> Response {
    let result = async {
        user.check_csrf(&form.csrf)?;
        if form.new_password != form.confirm_password {
            let t = crate::ui::i18n::texts(&user.language);
            return Err(AppError::Invalid(t.passwords_differ.to_string()));
        }
        accounts::change_password(
            &app,
            &user.name,
            &form.current_password,
            &form.new_password,
            Some(&user.session_key),
        )
        .await
    }
    .await;
    match result {
        Ok(()) => Redirect::to("/account?changed=1").into_response(),
        Err(e) => {
            let c = Chrome::new(&app, &user.language, Some(&user), "account", "/account")
                .with_error(&e);
            render(status_of(&e), &AccountPage { c })
        }
    }
}

#[derive(Deserialize)]
pub struct LanguageForm {
    csrf: String,
    language: String,
    #[serde(default)]
    back: Option<String>,
}

/// Only local paths are followed after a language change (no open redirect).
fn safe_back(back: Option<&str>) -> &str {
    match back {
        Some(p) if p.starts_with('/') && !p.starts_with("//") && !p.contains('\\') => p,
        _ => "/dashboard",
    }
}

pub async fn set_language(
    State(app): State<Arc<App>>,
    user: PageUser,
    PageForm(form): PageForm<LanguageForm>,
) -> Response {
    let result = user
        .check_csrf(&form.csrf)
        .and_then(|()| accounts::set_language(&app, &user.name, &form.language));
    match result {
        Ok(()) => Redirect::to(safe_back(form.back.as_deref())).into_response(),
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::safe_back;

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(safe_back(Some("/settings/mail")), "/settings/mail");
        assert_eq!(safe_back(Some("//evil.example/x")), "/dashboard");
        assert_eq!(safe_back(Some("https://evil.example")), "/dashboard");
        assert_eq!(safe_back(Some("/\\evil")), "/dashboard");
        assert_eq!(safe_back(None), "/dashboard");
    }
}
