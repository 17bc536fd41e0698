//! The logged-in user's own account: who they are, their password and language, and the
//! API tokens they use instead of a session.

use super::AppState;
use crate::accounts;
use crate::errors::AppResult;
use crate::http::extract::{ApiJson, ApiUser, Via};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

#[derive(Serialize)]
pub(super) struct AccountView {
    user: String,
    language: String,
    csrf_token: Option<String>,
}

pub(super) async fn account(State(app): AppState, user: ApiUser) -> AppResult<Json<AccountView>> {
    let record = accounts::user(&app, &user.name)?;
    Ok(Json(AccountView {
        user: record.name,
        language: record.language,
        csrf_token: user.csrf_token,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PasswordChange {
    current_password: String,
    new_password: String,
}

pub(super) async fn change_password(
    State(app): AppState,
    user: ApiUser,
    ApiJson(req): ApiJson<PasswordChange>,
) -> AppResult<StatusCode> {
    let keep = match &user.via {
        Via::Session { key } => Some(key.as_str()),
        Via::Token => None,
    };
    accounts::change_password(
        &app,
        &user.name,
        &req.current_password,
        &req.new_password,
        keep,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LanguageChange {
    language: String,
}

pub(super) async fn set_language(
    State(app): AppState,
    user: ApiUser,
    ApiJson(req): ApiJson<LanguageChange>,
) -> AppResult<StatusCode> {
    accounts::set_language(&app, &user.name, &req.language)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
pub(super) struct TokenView {
    id: String,
    name: String,
    created: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

pub(super) async fn tokens(
    State(app): AppState,
    _user: ApiUser,
) -> AppResult<Json<Vec<TokenView>>> {
    let list = app
        .db
        .list::<crate::state::ApiToken>(crate::state::Table::Tokens)?;
    Ok(Json(
        list.into_iter()
            .map(|(_, t)| TokenView {
                id: t.id,
                name: t.name,
                created: t.created,
                token: None,
            })
            .collect(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct NewToken {
    name: String,
}

pub(super) async fn create_token(
    State(app): AppState,
    user: ApiUser,
    ApiJson(req): ApiJson<NewToken>,
) -> AppResult<(StatusCode, Json<TokenView>)> {
    let (token, secret) = accounts::create_token(&app, &user.name, &req.name)?;
    Ok((
        StatusCode::CREATED,
        Json(TokenView {
            id: token.id,
            name: token.name,
            created: token.created,
            token: Some(secret),
        }),
    ))
}

pub(super) async fn delete_token(
    State(app): AppState,
    user: ApiUser,
    Path(id): Path<String>,
) -> AppResult<StatusCode> {
    accounts::delete_token(&app, &user.name, &id)?;
    Ok(StatusCode::NO_CONTENT)
}
