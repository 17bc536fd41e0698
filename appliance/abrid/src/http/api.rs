//! `/api/v1`: the JSON API. Every handler is a thin shell over `accounts`, `machines`,
//! `settings` and the store; errors become answers in `http::error`.
//!
//! The route table below is the whole API, read top to bottom; the handlers live in one
//! module per resource beside it.

mod account;
mod box_info;
mod enrolment;
mod images;
mod jobs;
mod machines;
mod maintenance;
mod session;
mod settings;
mod snapshots;

use crate::app::App;
use crate::errors::AppError;
use axum::Router;
use axum::extract::State;
use axum::routing::{delete, get, post, put};
use std::sync::Arc;

pub use session::{clear_cookie, session_cookie};

type AppState = State<Arc<App>>;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/status", get(box_info::status))
        .route("/activate", post(session::activate))
        .route("/login", post(session::login))
        .route("/logout", post(session::logout))
        .route("/account", get(account::account))
        .route("/account/password", post(account::change_password))
        .route("/account/language", put(account::set_language))
        .route("/box", get(box_info::box_info))
        .route(
            "/settings/mail",
            get(settings::mail).put(settings::update_mail),
        )
        .route("/settings/mail/test", post(settings::test_mail))
        .route("/plans", get(settings::plans))
        .route(
            "/plans/{id}",
            get(settings::plan).put(settings::update_plan),
        )
        .route("/tokens", get(account::tokens).post(account::create_token))
        .route("/tokens/{id}", delete(account::delete_token))
        .route("/audit", get(box_info::audit))
        .route(
            "/enrolment-tokens",
            get(enrolment::enrol_tokens).post(enrolment::create_enrol_token),
        )
        .route(
            "/enrolment-tokens/{id}",
            delete(enrolment::revoke_enrol_token),
        )
        .route(
            "/enrolment-tokens/windows-installer",
            post(enrolment::windows_kit),
        )
        .route("/machines", get(machines::machines))
        .route("/machines/{id}", get(machines::machine))
        .route("/machines/{id}/revoke", post(machines::revoke_machine))
        .route("/machines/{id}/backup", post(machines::backup_machine))
        .route("/machines/{id}/jobs", get(machines::machine_jobs))
        .route("/machines/{id}/restore", post(machines::restore_machine))
        .route("/machines/{id}/snapshots", get(machines::machine_snapshots))
        .route(
            "/machines/{id}/snapshots/{snapshot}/tree",
            get(snapshots::snapshot_tree),
        )
        .route(
            "/machines/{id}/snapshots/{snapshot}/download",
            get(snapshots::snapshot_download),
        )
        .route(
            "/machines/{id}/snapshots/{snapshot}/images/{image}/download",
            get(images::image_download),
        )
        .route(
            "/machines/{id}/snapshots/{snapshot}/images/{image}/volumes/{volume}/files",
            get(images::volume_files),
        )
        .route(
            "/machines/{id}/snapshots/{snapshot}/images/{image}/volumes/{volume}/download",
            get(images::volume_download),
        )
        .route("/maintenance", get(maintenance::last_upkeep))
        .route("/maintenance/run", post(maintenance::run_upkeep))
        .route("/maintenance/verify", post(maintenance::verify_store))
        .route("/jobs", get(jobs::active_jobs))
        .route("/jobs/{id}", get(jobs::job))
        .route("/jobs/{id}/cancel", post(jobs::cancel_job))
        .route("/openapi.json", get(super::openapi::document))
        .fallback(|| async { AppError::NotFound("API route".into()) })
}
