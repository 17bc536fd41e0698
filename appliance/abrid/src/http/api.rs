//! `/api/v1`: the JSON API. Every handler is a thin shell over `accounts` and `settings`;
//! errors become answers in `http::error`.

use super::extract::{ApiJson, ApiUser, ClientAddr, SESSION_COOKIE, Via};
use crate::accounts;
use crate::app::App;
use crate::boxinfo;
use crate::errors::{AppError, AppResult, blocking};
use crate::machines;
use crate::settings::{self, MailUpdate, MailView};
use abri_proto::api::{ActivateRequest, IssuedPassword, LoginRequest, LoginResponse, Status};
use abri_proto::plan::{Plan, PlanSettings};
use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

type AppState = State<Arc<App>>;

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/status", get(status))
        .route("/activate", post(activate))
        .route("/login", post(login))
        .route("/logout", post(logout))
        .route("/account", get(account))
        .route("/account/password", post(change_password))
        .route("/account/language", put(set_language))
        .route("/box", get(box_info))
        .route("/settings/mail", get(mail).put(update_mail))
        .route("/settings/mail/test", post(test_mail))
        .route("/plans", get(plans))
        .route("/plans/{id}", get(plan).put(update_plan))
        .route("/tokens", get(tokens).post(create_token))
        .route("/tokens/{id}", delete(delete_token))
        .route("/audit", get(audit))
        .route(
            "/enrolment-tokens",
            get(enrol_tokens).post(create_enrol_token),
        )
        .route("/enrolment-tokens/{id}", delete(revoke_enrol_token))
        .route("/enrolment-tokens/windows-installer", post(windows_kit))
        .route("/machines", get(machines))
        .route("/machines/{id}", get(machine))
        .route("/machines/{id}/revoke", post(revoke_machine))
        .route("/machines/{id}/backup", post(backup_machine))
        .route("/machines/{id}/jobs", get(machine_jobs))
        .route("/machines/{id}/restore", post(restore_machine))
        .route("/machines/{id}/snapshots", get(machine_snapshots))
        .route(
            "/machines/{id}/snapshots/{snapshot}/tree",
            get(snapshot_tree),
        )
        .route(
            "/machines/{id}/snapshots/{snapshot}/download",
            get(snapshot_download),
        )
        .route(
            "/machines/{id}/snapshots/{snapshot}/images/{image}/download",
            get(image_download),
        )
        .route(
            "/machines/{id}/snapshots/{snapshot}/images/{image}/volumes/{volume}/files",
            get(volume_files),
        )
        .route(
            "/machines/{id}/snapshots/{snapshot}/images/{image}/volumes/{volume}/download",
            get(volume_download),
        )
        .route("/maintenance", get(last_upkeep))
        .route("/maintenance/run", post(run_upkeep))
        .route("/maintenance/verify", post(verify_store))
        .route("/jobs", get(active_jobs))
        .route("/jobs/{id}", get(job))
        .route("/jobs/{id}/cancel", post(cancel_job))
        .route("/openapi.json", get(super::openapi::document))
        .fallback(|| async { AppError::NotFound("API route".into()) })
}

async fn status(State(app): AppState) -> AppResult<Json<Status>> {
    Ok(Json(app.status()?))
}

async fn activate(
    State(app): AppState,
    ApiJson(req): ApiJson<ActivateRequest>,
) -> AppResult<Json<IssuedPassword>> {
    Ok(Json(accounts::activate(&app, &req.claim_code).await?))
}

/// The `Set-Cookie` value of a session: HTTPS only, invisible to scripts, never cross-site.
pub fn session_cookie(token: &str) -> String {
    format!("{SESSION_COOKIE}={token}; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=604800")
}

pub fn clear_cookie() -> String {
    format!("{SESSION_COOKIE}=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0")
}

async fn login(
    State(app): AppState,
    ClientAddr(client): ClientAddr,
    ApiJson(req): ApiJson<LoginRequest>,
) -> AppResult<Response> {
    if !app.is_activated()? {
        return Err(AppError::NotActivated);
    }
    let new = accounts::login(&app, &req.user, &req.password, &client).await?;
    let mut response = Json(LoginResponse {
        user: new.session.user,
        csrf_token: new.session.csrf_token,
        language: new.language,
    })
    .into_response();
    set_cookie(response.headers_mut(), &session_cookie(&new.token));
    Ok(response)
}

fn set_cookie(headers: &mut HeaderMap, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(header::SET_COOKIE, v);
    }
}

async fn logout(State(app): AppState, user: ApiUser) -> AppResult<Response> {
    if let Via::Session { key } = &user.via {
        accounts::end_session(&app, key)?;
    }
    let mut response = StatusCode::NO_CONTENT.into_response();
    set_cookie(response.headers_mut(), &clear_cookie());
    Ok(response)
}

#[derive(Serialize)]
struct AccountView {
    user: String,
    language: String,
    csrf_token: Option<String>,
}

async fn account(State(app): AppState, user: ApiUser) -> AppResult<Json<AccountView>> {
    let record = accounts::user(&app, &user.name)?;
    Ok(Json(AccountView {
        user: record.name,
        language: record.language,
        csrf_token: user.csrf_token,
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordChange {
    current_password: String,
    new_password: String,
}

async fn change_password(
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
struct LanguageChange {
    language: String,
}

async fn set_language(
    State(app): AppState,
    user: ApiUser,
    ApiJson(req): ApiJson<LanguageChange>,
) -> AppResult<StatusCode> {
    accounts::set_language(&app, &user.name, &req.language)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn box_info(State(app): AppState, _user: ApiUser) -> AppResult<Json<boxinfo::BoxInfo>> {
    Ok(Json(boxinfo::box_info(&app)?))
}

async fn mail(State(app): AppState, _user: ApiUser) -> Json<MailView> {
    Json(settings::mail_view(&app))
}

async fn update_mail(
    State(app): AppState,
    user: ApiUser,
    ApiJson(update): ApiJson<MailUpdate>,
) -> AppResult<Json<MailView>> {
    Ok(Json(settings::update_mail(&app, &user.name, update)?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TestMail {
    #[serde(default)]
    to: Option<String>,
}

#[derive(Serialize)]
struct TestMailSent {
    sent: bool,
    recipients: Vec<String>,
}

async fn test_mail(
    State(app): AppState,
    user: ApiUser,
    body: axum::body::Bytes,
) -> AppResult<Json<TestMailSent>> {
    // The body is optional: empty means "to the configured recipients".
    let to = if body.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        let parsed: TestMail =
            serde_json::from_slice(&body).map_err(|e| AppError::Invalid(e.to_string()))?;
        parsed.to
    };
    let language = accounts::user(&app, &user.name)?.language;
    let recipients = settings::send_test_mail(&app, to, &language).await?;
    Ok(Json(TestMailSent {
        sent: true,
        recipients,
    }))
}

async fn plans(State(app): AppState, _user: ApiUser) -> AppResult<Json<Vec<Plan>>> {
    Ok(Json(settings::plans(&app)?))
}

async fn plan(
    State(app): AppState,
    _user: ApiUser,
    Path(id): Path<String>,
) -> AppResult<Json<Plan>> {
    Ok(Json(settings::plan(&app, &id)?))
}

async fn update_plan(
    State(app): AppState,
    user: ApiUser,
    Path(id): Path<String>,
    ApiJson(edit): ApiJson<PlanSettings>,
) -> AppResult<Json<Plan>> {
    Ok(Json(settings::update_plan(&app, &user.name, &id, edit)?))
}

#[derive(Serialize)]
struct TokenView {
    id: String,
    name: String,
    created: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

async fn tokens(State(app): AppState, _user: ApiUser) -> AppResult<Json<Vec<TokenView>>> {
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
struct NewToken {
    name: String,
}

async fn create_token(
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

async fn delete_token(
    State(app): AppState,
    user: ApiUser,
    Path(id): Path<String>,
) -> AppResult<StatusCode> {
    accounts::delete_token(&app, &user.name, &id)?;
    Ok(StatusCode::NO_CONTENT)
}

async fn audit(
    State(app): AppState,
    _user: ApiUser,
) -> AppResult<Json<Vec<crate::state::AuditEvent>>> {
    Ok(Json(app.db.recent_audit(200)?))
}

#[derive(Serialize)]
struct EnrolTokenView {
    id: String,
    name: String,
    created: u64,
    expires: u64,
    uses: u64,
    revoked: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

impl From<crate::state::EnrolToken> for EnrolTokenView {
    fn from(t: crate::state::EnrolToken) -> Self {
        EnrolTokenView {
            id: t.id,
            name: t.name,
            created: t.created,
            expires: t.expires,
            uses: t.uses,
            revoked: t.revoked,
            token: None,
        }
    }
}

async fn enrol_tokens(
    State(app): AppState,
    _user: ApiUser,
) -> AppResult<Json<Vec<EnrolTokenView>>> {
    Ok(Json(
        machines::enrol_tokens(&app)?
            .into_iter()
            .map(EnrolTokenView::from)
            .collect(),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEnrolToken {
    name: String,
    #[serde(default = "default_token_days")]
    days: u32,
}

fn default_token_days() -> u32 {
    30
}

async fn create_enrol_token(
    State(app): AppState,
    user: ApiUser,
    ApiJson(req): ApiJson<NewEnrolToken>,
) -> AppResult<(StatusCode, Json<EnrolTokenView>)> {
    let (token, secret) = machines::create_enrol_token(&app, &user.name, &req.name, req.days)?;
    let mut view = EnrolTokenView::from(token);
    view.token = Some(secret);
    Ok((StatusCode::CREATED, Json(view)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KitRequest {
    token: String,
    /// The address agents reach the box at; the box's mDNS name when absent.
    #[serde(default)]
    box_url: Option<String>,
}

/// The Windows installer with the box's address, fingerprint and the given token built in.
async fn windows_kit(
    State(app): AppState,
    _user: ApiUser,
    ApiJson(req): ApiJson<KitRequest>,
) -> AppResult<Response> {
    let box_url = req
        .box_url
        .unwrap_or_else(|| crate::installers::default_box_url(&app));
    let kit_app = app.clone();
    let bytes =
        blocking(move || crate::installers::windows_kit(&kit_app, &req.token, &box_url)).await?;
    Ok(super::pages::machines::kit_response(&app, bytes))
}

async fn revoke_enrol_token(
    State(app): AppState,
    user: ApiUser,
    Path(id): Path<String>,
) -> AppResult<StatusCode> {
    machines::revoke_enrol_token(&app, &user.name, &id)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize)]
struct MachineView {
    id: String,
    hostname: String,
    os: String,
    agent_version: String,
    enrolled: u64,
    last_seen: u64,
    revoked: bool,
}

impl From<crate::state::Machine> for MachineView {
    fn from(m: crate::state::Machine) -> Self {
        MachineView {
            id: m.id,
            hostname: m.hostname,
            os: m.os,
            agent_version: m.agent_version,
            enrolled: m.enrolled,
            last_seen: m.last_seen,
            revoked: m.revoked_at.is_some(),
        }
    }
}

async fn machines(State(app): AppState, _user: ApiUser) -> AppResult<Json<Vec<MachineView>>> {
    Ok(Json(
        machines::machines(&app)?
            .into_iter()
            .map(MachineView::from)
            .collect(),
    ))
}

async fn machine(
    State(app): AppState,
    _user: ApiUser,
    Path(id): Path<String>,
) -> AppResult<Json<MachineView>> {
    Ok(Json(machines::machine(&app, &id)?.into()))
}

async fn revoke_machine(
    State(app): AppState,
    user: ApiUser,
    Path(id): Path<String>,
) -> AppResult<StatusCode> {
    machines::revoke_machine(&app, &user.name, &id)?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct BackupNow {
    #[serde(default)]
    plan: Option<String>,
    #[serde(default)]
    full: bool,
}

/// Queues a backup of a machine now; its agent starts it at its next poll.
async fn backup_machine(
    State(app): AppState,
    user: ApiUser,
    Path(id): Path<String>,
    body: axum::body::Bytes,
) -> AppResult<(StatusCode, Json<crate::jobs::Job>)> {
    let req: BackupNow = if body.iter().all(u8::is_ascii_whitespace) {
        BackupNow::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| AppError::Invalid(e.to_string()))?
    };
    let job = crate::backups::queue_backup(
        &app,
        &user.name,
        &id,
        req.plan.as_deref().unwrap_or("files"),
        req.full,
    )?;
    Ok((StatusCode::CREATED, Json(job)))
}

async fn machine_jobs(
    State(app): AppState,
    _user: ApiUser,
    Path(id): Path<String>,
) -> AppResult<Json<Vec<crate::jobs::Job>>> {
    machines::machine(&app, &id)?;
    Ok(Json(app.jobs.history(&id, 100)?))
}

async fn active_jobs(State(app): AppState, _user: ApiUser) -> Json<Vec<crate::jobs::Job>> {
    Json(app.jobs.active())
}

async fn job(
    State(app): AppState,
    _user: ApiUser,
    Path(id): Path<String>,
) -> AppResult<Json<crate::jobs::Job>> {
    Ok(Json(app.jobs.get(&id)?))
}

async fn cancel_job(
    State(app): AppState,
    user: ApiUser,
    Path(id): Path<String>,
) -> AppResult<StatusCode> {
    crate::backups::cancel_job(&app, &user.name, &id)?;
    Ok(StatusCode::ACCEPTED)
}

/// Queues a restore onto the machine, carried out by its agent.
async fn restore_machine(
    State(app): AppState,
    user: ApiUser,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<RestoreBody>,
) -> AppResult<(StatusCode, Json<crate::jobs::Job>)> {
    let request = crate::jobs::RestoreRequest {
        snapshot: req.snapshot,
        paths: req.paths,
        target: req.target,
        image: req.image,
    };
    Ok((
        StatusCode::CREATED,
        Json(crate::backups::queue_restore(
            &app, &user.name, &id, request,
        )?),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RestoreBody {
    snapshot: String,
    #[serde(default)]
    paths: Vec<String>,
    target: String,
    /// Files from inside an image snapshot: `{"image": "sda", "volume": 2}`.
    #[serde(default)]
    image: Option<abri_proto::agent::ImageVolumeRef>,
}

async fn machine_snapshots(
    State(app): AppState,
    _user: ApiUser,
    Path(id): Path<String>,
) -> AppResult<Json<Vec<abri_proto::agent::SnapshotSummary>>> {
    machines::machine(&app, &id)?;
    let store = app.store.clone();
    let list = blocking(move || Ok(abri_store::list_snapshots(&store, &id)?)).await?;
    Ok(Json(list.iter().map(super::agent_api::summary).collect()))
}

#[derive(Deserialize)]
struct TreeQuery {
    #[serde(default)]
    path: String,
}

/// The folders and files directly inside `path` of a snapshot.
async fn snapshot_tree(
    State(app): AppState,
    _user: ApiUser,
    Path((id, snapshot)): Path<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<TreeQuery>,
) -> AppResult<Json<Vec<crate::snapshot_files::DirItem>>> {
    let manifest = crate::backups::machine_snapshot(&app, &id, &snapshot)?;
    let dir = crate::snapshot_files::normalize(&q.path)?;
    let store = app.store.clone();
    let items =
        blocking(move || crate::snapshot_files::list_dir(&store, manifest.catalog, &dir)).await?;
    Ok(Json(items))
}

#[derive(Deserialize)]
struct VolumeQuery {
    #[serde(default)]
    path: String,
}

#[derive(Serialize)]
struct VolumeItem {
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
async fn volume_files(
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
async fn volume_download(
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
struct ImageDownloadQuery {
    /// `raw` (default) or `qcow2`.
    #[serde(default)]
    format: Option<String>,
}

/// Streams one image of an image snapshot as a raw disk image or as qcow2.
async fn image_download(
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

#[derive(Deserialize)]
struct DownloadQuery {
    #[serde(default)]
    path: String,
    /// `tar.gz` or `zip` for an archive; absent: the file itself, or tar.gz for a folder.
    #[serde(default)]
    format: Option<String>,
}

/// Streams a file of a snapshot, or a folder as `.tar.gz` / `.zip`.
async fn snapshot_download(
    State(app): AppState,
    _user: ApiUser,
    Path((id, snapshot)): Path<(String, String)>,
    axum::extract::Query(q): axum::extract::Query<DownloadQuery>,
) -> AppResult<Response> {
    use crate::snapshot_files::{ArchiveFormat, FileReader, find, streamed_body, write_archive};
    let manifest = crate::backups::machine_snapshot(&app, &id, &snapshot)?;
    let path = crate::snapshot_files::normalize(&q.path)?;
    let store = app.store.clone();
    let (catalog, wanted) = (manifest.catalog.clone(), path.clone());
    let entry = if path.is_empty() {
        None
    } else {
        Some(
            blocking(move || find(&store, catalog, &wanted))
                .await?
                .ok_or_else(|| AppError::NotFound(format!("{} in snapshot {snapshot}", q.path)))?,
        )
    };
    let base = match path.iter().rposition(|b| *b == b'/') {
        Some(i) => String::from_utf8_lossy(&path[i + 1..]).into_owned(),
        None if path.is_empty() => format!("{}-{}", manifest.host, manifest.id),
        None => String::from_utf8_lossy(&path).into_owned(),
    };
    let safe_name: String = base
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let store = app.store.clone();
    let is_file = entry
        .as_ref()
        .is_some_and(|e| matches!(e.kind, abri_store::EntryKind::File));
    if is_file && q.format.is_none() {
        let entry = entry.ok_or_else(|| AppError::NotFound("file".into()))?;
        let size = entry.size;
        let body = streamed_body(move |out| {
            let mut reader = FileReader::new(store, &entry);
            std::io::copy(&mut reader, out)
                .map_err(|e| AppError::Internal(anyhow::anyhow!("{e}")))?;
            Ok(())
        });
        return Ok((
            [
                (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                (header::CONTENT_LENGTH, size.to_string()),
                (
                    header::CONTENT_DISPOSITION,
                    format!("attachment; filename=\"{safe_name}\""),
                ),
            ],
            body,
        )
            .into_response());
    }
    let format = ArchiveFormat::parse(q.format.as_deref().unwrap_or("tar.gz"))?;
    let body = streamed_body(move |out| write_archive(store, manifest.catalog, &path, format, out));
    Ok((
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (
                header::CONTENT_DISPOSITION,
                format!(
                    "attachment; filename=\"{safe_name}.{}\"",
                    format.extension()
                ),
            ),
        ],
        body,
    )
        .into_response())
}

async fn last_upkeep(
    State(app): AppState,
    _user: ApiUser,
) -> Json<Option<crate::maintenance::UpkeepReport>> {
    Json(app.upkeep.last.lock().ok().and_then(|l| l.clone()))
}

/// Prunes by every plan's retention and frees unreferenced chunks now.
async fn run_upkeep(
    State(app): AppState,
    user: ApiUser,
) -> AppResult<Json<crate::maintenance::UpkeepReport>> {
    app.db.audit(&crate::state::AuditEvent::new(
        &user.name,
        "upkeep_requested",
        "",
    ))?;
    Ok(Json(crate::maintenance::run_upkeep(app.clone()).await?))
}

#[derive(Serialize)]
struct VerifyView {
    clean: bool,
    chunks_checked: u64,
    bytes_checked: u64,
    corrupt: Vec<String>,
    damaged_snapshots: Vec<String>,
}

/// Re-reads and re-hashes every chunk, and checks every snapshot's chunks exist.
async fn verify_store(State(app): AppState, user: ApiUser) -> AppResult<Json<VerifyView>> {
    app.db.audit(&crate::state::AuditEvent::new(
        &user.name,
        "verify_requested",
        "",
    ))?;
    let r = crate::maintenance::verify(app.clone()).await?;
    Ok(Json(VerifyView {
        clean: r.is_clean(),
        chunks_checked: r.chunks_checked,
        bytes_checked: r.bytes_checked,
        corrupt: r
            .corrupt
            .iter()
            .map(|c| format!("{} ({})", c.digest, c.problem))
            .collect(),
        damaged_snapshots: r
            .damaged
            .iter()
            .map(|d| format!("{}/{}", d.machine, d.id))
            .collect(),
    }))
}
