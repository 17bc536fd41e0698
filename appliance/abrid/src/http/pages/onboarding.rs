//! The pages of a box's first minutes and of every visit: activation, login, logout.

use super::{Chrome, PageUser, anonymous_language, render, status_of};
use crate::accounts;
use crate::app::App;
use crate::errors::AppError;
use crate::http::api::{clear_cookie, session_cookie};
use crate::http::extract::{ClientAddr, PageForm};
use askama::Template;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;

type Q = Query<HashMap<String, String>>;

pub async fn root(State(app): State<Arc<App>>, user: Result<PageUser, Response>) -> Response {
    match user {
        Ok(_) => Redirect::to("/dashboard").into_response(),
        Err(redirect) => {
            let _ = app;
            redirect
        }
    }
}

#[derive(Template)]
#[template(path = "activate.html")]
pub struct ActivatePage {
    pub c: Chrome,
    pub fingerprint: String,
}

#[derive(Template)]
#[template(path = "activated.html")]
pub struct ActivatedPage {
    pub c: Chrome,
    pub password: String,
    pub mailed: bool,
}

pub async fn activate_page(State(app): State<Arc<App>>, Query(q): Q) -> Response {
    if app.is_activated().unwrap_or(false) {
        return Redirect::to("/login").into_response();
    }
    let lang = anonymous_language(&app, &q);
    render(
        StatusCode::OK,
        &ActivatePage {
            c: Chrome::new(&app, &lang, None, "activate", "/activate"),
            fingerprint: abri_proto::pin::display_fingerprint(app.ca.fingerprint()),
        },
    )
}

#[derive(Deserialize)]
pub struct ActivateForm {
    claim_code: String,
    #[serde(default)]
    lang: Option<String>,
}

pub async fn activate(
    State(app): State<Arc<App>>,
    form: Result<PageForm<ActivateForm>, AppError>,
) -> Response {
    let (result, lang) = match form {
        Ok(PageForm(f)) => {
            let lang = f.lang.filter(|l| crate::ui::i18n::is_supported(l));
            (accounts::activate(&app, &f.claim_code).await, lang)
        }
        Err(e) => (Err(e), None),
    };
    let lang = lang.unwrap_or_else(|| app.default_language().to_string());
    match result {
        Ok(issued) => render(
            StatusCode::OK,
            &ActivatedPage {
                c: Chrome::new(&app, &lang, None, "activate", "/activate"),
                password: issued.password,
                mailed: issued.mailed_to_partner,
            },
        ),
        Err(AppError::AlreadyActivated) => Redirect::to("/login").into_response(),
        Err(e) => {
            let c = Chrome::new(&app, &lang, None, "activate", "/activate").with_error(&e);
            let mut response = render(
                status_of(&e),
                &ActivatePage {
                    c,
                    fingerprint: abri_proto::pin::display_fingerprint(app.ca.fingerprint()),
                },
            );
            if let Some(secs) = e.retry_after()
                && let Ok(v) = secs.to_string().parse()
            {
                response.headers_mut().insert(header::RETRY_AFTER, v);
            }
            response
        }
    }
}

#[derive(Template)]
#[template(path = "login.html")]
pub struct LoginPage {
    pub c: Chrome,
    pub user_name: String,
}

pub async fn login_page(State(app): State<Arc<App>>, Query(q): Q) -> Response {
    if !app.is_activated().unwrap_or(false) {
        return Redirect::to("/activate").into_response();
    }
    let lang = anonymous_language(&app, &q);
    render(
        StatusCode::OK,
        &LoginPage {
            c: Chrome::new(&app, &lang, None, "login", "/login"),
            user_name: accounts::ADMIN.to_string(),
        },
    )
}

#[derive(Deserialize)]
pub struct LoginForm {
    user: String,
    password: String,
    #[serde(default)]
    lang: Option<String>,
}

pub async fn login(
    State(app): State<Arc<App>>,
    ClientAddr(client): ClientAddr,
    form: Result<PageForm<LoginForm>, AppError>,
) -> Response {
    let PageForm(form) = match form {
        Ok(f) => f,
        Err(e) => return e.into_response(),
    };
    let lang = form
        .lang
        .clone()
        .filter(|l| crate::ui::i18n::is_supported(l))
        .unwrap_or_else(|| app.default_language().to_string());
    let result = match app.is_activated() {
        Ok(true) => accounts::login(&app, &form.user, &form.password, &client).await,
        Ok(false) => Err(AppError::NotActivated),
        Err(e) => Err(e.into()),
    };
    match result {
        Ok(new) => {
            let mut response = Redirect::to("/dashboard").into_response();
            if let Ok(v) = session_cookie(&new.token).parse() {
                response.headers_mut().insert(header::SET_COOKIE, v);
            }
            response
        }
        Err(e) => render(
            status_of(&e),
            &LoginPage {
                c: Chrome::new(&app, &lang, None, "login", "/login").with_error(&e),
                user_name: form.user,
            },
        ),
    }
}

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

pub async fn logout(
    State(app): State<Arc<App>>,
    user: PageUser,
    PageForm(form): PageForm<CsrfForm>,
) -> Response {
    if let Err(e) = user.check_csrf(&form.csrf) {
        return e.into_response();
    }
    if let Err(e) = accounts::end_session(&app, &user.session_key) {
        return e.into_response();
    }
    let mut response = Redirect::to("/login").into_response();
    if let Ok(v) = clear_cookie().parse() {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}
