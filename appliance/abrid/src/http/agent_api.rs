//! `/api/v1/agent`: what agents call. Authenticated by the machine key (except enrolment,
//! which trades an enrolment token for one). Agents add chunks and snapshots and read their
//! own snapshots; nothing here deletes, overwrites, or reads another machine's data.

use super::extract::ApiJson;
use crate::app::App;
use crate::errors::{AppError, AppResult, blocking};
use crate::jobs::JobState;
use crate::machines;
use crate::state::Machine;
use crate::state::records::now;
use abri_proto::agent::{
    COMMAND_POLL_SECONDS, CommitSnapshot, EnrolRequest, EnrolResponse, JobEnd, JobStarted,
    MACHINE_AUTH_SCHEME, MAX_DIGESTS_PER_QUERY, MissingAnswer, MissingQuery, Progress, ProgressAck,
    SnapshotStatsWire, SnapshotSummary, StartJob,
};
use abri_proto::batch;
use abri_store::{CatalogReader, Digest, SnapshotKind, SnapshotManifest, SnapshotStats};
use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

type AppState = State<Arc<App>>;

/// A list of `n` digests as JSON (`{"digests": ["<64 hex>", ...]}`: 64 digits, quotes, a
/// comma and some white space each), with room to spare.
const fn digest_list_bytes(n: usize) -> usize {
    n * 72 + 1024
}
/// Body limit of `POST /chunks/missing`.
pub const MISSING_QUERY_LIMIT: usize = digest_list_bytes(MAX_DIGESTS_PER_QUERY);
/// Body limit of `POST /snapshots/{id}/chunks`.
pub const FETCH_QUERY_LIMIT: usize = digest_list_bytes(batch::MAX_FETCH_CHUNKS);

pub fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/enrol", post(enrol))
        .route("/commands", get(commands))
        .route("/jobs", post(start_job))
        .route("/jobs/{id}/progress", post(progress))
        .route("/jobs/{id}/finish", post(finish))
        .route(
            "/chunks/missing",
            post(missing).layer(DefaultBodyLimit::max(MISSING_QUERY_LIMIT)),
        )
        .route(
            "/chunks",
            post(upload_chunks).layer(DefaultBodyLimit::max(batch::MAX_BATCH_BYTES)),
        )
        .route(
            "/chunks/{digest}",
            put(upload_chunk).layer(DefaultBodyLimit::max(abri_store::MAX_CHUNK_LEN + 64)),
        )
        .route("/snapshots", get(snapshots).post(commit))
        .route("/snapshots/{id}", get(snapshot))
        .route(
            "/snapshots/{id}/chunks",
            post(snapshot_chunks).layer(DefaultBodyLimit::max(FETCH_QUERY_LIMIT)),
        )
        .route("/snapshots/{id}/chunks/{digest}", get(snapshot_chunk))
}

/// The machine behind `Authorization: Machine <id>.<key>`.
pub struct AgentMachine(pub Machine);

impl FromRequestParts<Arc<App>> for AgentMachine {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix(MACHINE_AUTH_SCHEME))
            .and_then(|v| v.strip_prefix(' '))
            .map(str::to_string)
            .ok_or(AppError::Unauthenticated(
                "send the machine key: Authorization: Machine <id>.<key>",
            ))?;
        Ok(AgentMachine(machines::authenticate(app, &presented)?))
    }
}

async fn enrol(
    State(app): AppState,
    ApiJson(req): ApiJson<EnrolRequest>,
) -> AppResult<(StatusCode, Json<EnrolResponse>)> {
    if !app.is_activated()? {
        return Err(AppError::NotActivated);
    }
    let response = machines::enrol(&app, &req, &app.store.key().to_hex())?;
    Ok((StatusCode::CREATED, Json(response)))
}

#[derive(Deserialize)]
struct Wait {
    wait: Option<u64>,
}

async fn commands(
    State(app): AppState,
    AgentMachine(m): AgentMachine,
    Query(q): Query<Wait>,
) -> AppResult<Response> {
    let wait = Duration::from_secs(
        q.wait
            .unwrap_or(COMMAND_POLL_SECONDS)
            .min(COMMAND_POLL_SECONDS),
    );
    Ok(match app.jobs.next_command(&m.id, wait).await? {
        Some(command) => Json(command).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

async fn start_job(
    State(app): AppState,
    AgentMachine(m): AgentMachine,
    ApiJson(req): ApiJson<StartJob>,
) -> AppResult<(StatusCode, Json<JobStarted>)> {
    let spec = crate::backups::spec_for(&app, &m.id, &req.plan, req.full)?;
    let job = app.jobs.start_agent_backup(&m.id, &spec)?;
    Ok((
        StatusCode::CREATED,
        Json(JobStarted {
            job_id: job.id,
            spec,
        }),
    ))
}

async fn progress(
    State(app): AppState,
    AgentMachine(m): AgentMachine,
    Path(id): Path<String>,
    ApiJson(report): ApiJson<Progress>,
) -> AppResult<Json<ProgressAck>> {
    let cancel = app.jobs.report(&m.id, &id, report)?;
    Ok(Json(ProgressAck { cancel }))
}

async fn finish(
    State(app): AppState,
    AgentMachine(m): AgentMachine,
    Path(id): Path<String>,
    ApiJson(end): ApiJson<JobEnd>,
) -> AppResult<StatusCode> {
    let state = match end.status.as_str() {
        "succeeded" => JobState::Succeeded,
        "failed" => JobState::Failed,
        "cancelled" => JobState::Cancelled,
        other => {
            return Err(AppError::Invalid(format!(
                "status: {other:?} is not succeeded, failed or cancelled"
            )));
        }
    };
    let job = app.jobs.get(&id)?;
    if state == JobState::Succeeded && job.kind == crate::jobs::JobKind::Backup {
        return Err(AppError::Invalid(
            "status: a backup succeeds by committing its snapshot (POST /agent/snapshots)".into(),
        ));
    }
    app.jobs.finish(&m.id, &id, state, end.error, None)?;
    Ok(StatusCode::NO_CONTENT)
}

fn parse_digest(text: &str) -> AppResult<Digest> {
    text.parse()
        .map_err(|_| AppError::Invalid(format!("digest {text:?} is not 64 hexadecimal digits")))
}

/// A request's digest list, each checked.
fn parse_digests(texts: &[String]) -> AppResult<Vec<Digest>> {
    texts.iter().map(|d| parse_digest(d)).collect()
}

async fn missing(
    State(app): AppState,
    AgentMachine(_m): AgentMachine,
    ApiJson(q): ApiJson<MissingQuery>,
) -> AppResult<Json<MissingAnswer>> {
    if q.digests.len() > MAX_DIGESTS_PER_QUERY {
        return Err(AppError::Invalid(format!(
            "digests: ask at most {MAX_DIGESTS_PER_QUERY} per request"
        )));
    }
    let digests = parse_digests(&q.digests)?;
    let store = app.store.clone();
    let missing = blocking(move || Ok(store.missing(&digests))).await?;
    Ok(Json(MissingAnswer {
        missing: missing.iter().map(Digest::to_hex).collect(),
    }))
}

/// Stores one uploaded chunk after verifying it (decode + keyed hash); an existing chunk is
/// only touched, never overwritten.
async fn upload_chunk(
    State(app): AppState,
    AgentMachine(m): AgentMachine,
    Path(digest): Path<String>,
    body: axum::body::Bytes,
) -> AppResult<StatusCode> {
    let digest = parse_digest(&digest)?;
    let store = app.store.clone();
    let inserted = blocking(move || Ok(store.insert_encoded(&digest, &body)?)).await?;
    if inserted.new {
        app.jobs.add_stored(&m.id, inserted.stored_bytes);
    }
    Ok(if inserted.new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    })
}

/// Answer of a batch upload.
#[derive(Serialize)]
struct BatchStored {
    /// Chunks stored now.
    stored: usize,
    /// Chunks the box already had (touched).
    present: usize,
}

/// Stores a batch of chunks ([`abri_proto::batch`] frames) after verifying every one of
/// them: a batch with one bad chunk stores nothing.
async fn upload_chunks(
    State(app): AppState,
    AgentMachine(m): AgentMachine,
    body: axum::body::Bytes,
) -> AppResult<Json<BatchStored>> {
    let store = app.store.clone();
    let inserted = blocking(move || {
        let frames = batch::parse_frames(&body)
            .map_err(|e| AppError::Invalid(format!("chunk batch: {e}")))?;
        Ok(store.insert_batch(&frames)?)
    })
    .await?;
    let stored_bytes: u64 = inserted.iter().map(|i| i.stored_bytes).sum();
    let stored = inserted.iter().filter(|i| i.new).count();
    if stored > 0 {
        app.jobs.add_stored(&m.id, stored_bytes);
    }
    Ok(Json(BatchStored {
        stored,
        present: inserted.len() - stored,
    }))
}

fn stats_from_wire(w: &SnapshotStatsWire) -> SnapshotStats {
    SnapshotStats {
        files: w.files,
        dirs: w.dirs,
        bytes: w.bytes,
        new_bytes: w.new_bytes,
        stored_new_bytes: 0,
        chunks: w.chunks,
        new_chunks: w.new_chunks,
        reused_files: w.reused_files,
    }
}

pub fn summary(m: &SnapshotManifest) -> SnapshotSummary {
    SnapshotSummary {
        id: m.id.clone(),
        kind: match m.kind {
            SnapshotKind::Files => "files".into(),
            SnapshotKind::Image => "image".into(),
        },
        plan: m.plan.clone(),
        started: m.started.max(0) as u64,
        finished: m.finished.max(0) as u64,
        full: m.full,
        stats: SnapshotStatsWire {
            files: m.stats.files,
            dirs: m.stats.dirs,
            bytes: m.stats.bytes,
            new_bytes: m.stats.new_bytes,
            chunks: m.stats.chunks,
            new_chunks: m.stats.new_chunks,
            reused_files: m.stats.reused_files,
            stored_new_bytes: m.stats.stored_new_bytes,
        },
        images: m.images.clone(),
        without_snapshot: m.without_snapshot,
    }
}

/// Commits a snapshot: every referenced chunk must be on the box and every path valid, or
/// nothing is written. Committing the same job twice returns the first snapshot.
async fn commit(
    State(app): AppState,
    AgentMachine(m): AgentMachine,
    ApiJson(req): ApiJson<CommitSnapshot>,
) -> AppResult<(StatusCode, Json<SnapshotSummary>)> {
    let job = app.jobs.get(&req.job_id)?;
    if job.machine != m.id {
        return Err(AppError::NotFound(format!("job {}", req.job_id)));
    }
    if let Some(existing) = job.snapshot.as_deref() {
        let store = app.store.clone();
        let (machine, id) = (m.id.clone(), existing.to_string());
        let manifest =
            blocking(move || Ok(abri_store::load_snapshot(&store, &machine, &id)?)).await?;
        return Ok((StatusCode::OK, Json(summary(&manifest))));
    }
    let catalog = req
        .catalog
        .iter()
        .map(|d| parse_digest(d))
        .collect::<AppResult<Vec<_>>>()?;
    // The plan decides what the snapshot is; an image plan must describe its images.
    let kind = match crate::settings::plan(&app, &req.plan)?.kind {
        abri_proto::plan::PlanKind::Files => SnapshotKind::Files,
        abri_proto::plan::PlanKind::Image => SnapshotKind::Image,
    };
    let mut stats = stats_from_wire(&req.stats);
    stats.stored_new_bytes = app.jobs.take_stored(&m.id);
    let mut manifest = SnapshotManifest {
        format: 1,
        id: String::new(), // chosen at commit
        machine: m.id.clone(),
        kind,
        plan: req.plan.clone(),
        started: req.started as i64,
        finished: now() as i64,
        full: req.full,
        catalog,
        stats,
        source: req.source.clone(),
        host: m.hostname.clone(),
        images: req.images.clone(),
        without_snapshot: req.without_snapshot,
    };
    let store = app.store.clone();
    let to_commit = manifest.clone();
    let committed = blocking(move || {
        // One syncfs makes every chunk of this backup durable before the manifest names them.
        store.sync()?;
        commit_with_new_id(to_commit, &store)
    })
    .await;
    let committed = committed.map(|id| manifest.id = id);
    if let Err(e) = committed {
        // Not committed: the bytes stay counted for the next snapshot that uses them.
        app.jobs.add_stored(&m.id, manifest.stats.stored_new_bytes);
        let _ = app.jobs.report(
            &m.id,
            &req.job_id,
            Progress {
                log: vec![format!("the box refused the snapshot: {e}")],
                ..job.progress.clone()
            },
        );
        return Err(e);
    }
    app.jobs.finish(
        &m.id,
        &req.job_id,
        JobState::Succeeded,
        None,
        Some(manifest.id.clone()),
    )?;
    tracing::info!(machine = %m.hostname, snapshot = %manifest.id, "snapshot committed");
    Ok((StatusCode::CREATED, Json(summary(&manifest))))
}

/// Commits `manifest` under the machine's next snapshot id (see
/// [`abri_store::next_snapshot_id`]); a commit of the same machine that took that id first
/// makes this one take the following id.
fn commit_with_new_id(
    mut manifest: SnapshotManifest,
    store: &abri_store::ChunkStore,
) -> AppResult<String> {
    let mut retries = 8;
    loop {
        manifest.id =
            abri_store::next_snapshot_id(store, &manifest.machine, std::time::SystemTime::now())?;
        match abri_store::commit_snapshot(&manifest, store) {
            Err(abri_store::StoreError::SnapshotExists { .. }) if retries > 0 => retries -= 1,
            other => return Ok(other.map(|()| manifest.id)?),
        }
    }
}

async fn snapshots(
    State(app): AppState,
    AgentMachine(m): AgentMachine,
) -> AppResult<Json<Vec<SnapshotSummary>>> {
    let store = app.store.clone();
    let list = blocking(move || Ok(abri_store::list_snapshots(&store, &m.id)?)).await?;
    Ok(Json(list.iter().map(summary).collect()))
}

#[derive(Serialize)]
struct SnapshotDetail {
    #[serde(flatten)]
    summary: SnapshotSummary,
    catalog: Vec<String>,
}

async fn own_snapshot(app: &Arc<App>, machine: &str, id: &str) -> AppResult<SnapshotManifest> {
    abri_store::validate_id("snapshot", id)?;
    let store = app.store.clone();
    let (machine, id) = (machine.to_string(), id.to_string());
    blocking(move || {
        abri_store::load_snapshot(&store, &machine, &id).map_err(|e| match e {
            abri_store::StoreError::Io { source, .. }
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                AppError::NotFound(format!("snapshot {id}"))
            }
            other => other.into(),
        })
    })
    .await
}

async fn snapshot(
    State(app): AppState,
    AgentMachine(m): AgentMachine,
    Path(id): Path<String>,
) -> AppResult<Json<SnapshotDetail>> {
    let manifest = own_snapshot(&app, &m.id, &id).await?;
    Ok(Json(SnapshotDetail {
        summary: summary(&manifest),
        catalog: manifest.catalog.iter().map(Digest::to_hex).collect(),
    }))
}

/// Every digest a snapshot references (catalog chunks and file extents), cached for a few
/// snapshots at a time.
pub async fn referenced(
    app: &Arc<App>,
    manifest: &SnapshotManifest,
) -> AppResult<Arc<HashSet<Digest>>> {
    let key = format!("{}/{}", manifest.machine, manifest.id);
    if let Some(set) = app
        .snapshot_refs
        .lock()
        .ok()
        .and_then(|c| c.get(&key).cloned())
    {
        return Ok(set);
    }
    let store = app.store.clone();
    let catalog = manifest.catalog.clone();
    let set = blocking(move || {
        let mut set: HashSet<Digest> = catalog.iter().copied().collect();
        for entry in CatalogReader::new(&*store, catalog) {
            set.extend(entry?.extents.iter().map(|e| e.digest));
        }
        Ok(set)
    })
    .await?;
    let set = Arc::new(set);
    if let Ok(mut cache) = app.snapshot_refs.lock() {
        if cache.len() >= 8 {
            cache.clear();
        }
        cache.insert(key, set.clone());
    }
    Ok(set)
}

/// A chunk of one of the machine's own snapshots, as stored (encoded, verified by the agent).
/// Several chunks of one of the machine's snapshots, as [`abri_proto::batch`] frames in the
/// order asked (encoded, as stored: the agent verifies them). Every digest must belong to
/// the snapshot, or nothing is sent.
async fn snapshot_chunks(
    State(app): AppState,
    AgentMachine(m): AgentMachine,
    Path(id): Path<String>,
    ApiJson(q): ApiJson<MissingQuery>,
) -> AppResult<Response> {
    if q.digests.is_empty() || q.digests.len() > batch::MAX_FETCH_CHUNKS {
        return Err(AppError::Invalid(format!(
            "digests: ask for 1 to {} chunks per request",
            batch::MAX_FETCH_CHUNKS
        )));
    }
    let digests = parse_digests(&q.digests)?;
    let manifest = own_snapshot(&app, &m.id, &id).await?;
    let refs = referenced(&app, &manifest).await?;
    if let Some(d) = digests.iter().find(|d| !refs.contains(d)) {
        return Err(AppError::NotFound(format!("chunk {d} in snapshot {id}")));
    }
    let store = app.store.clone();
    let body = blocking(move || {
        // Room for what an agent asks for at once, so the body is not copied as it grows;
        // each chunk file is read straight into it.
        let mut body = Vec::with_capacity(
            batch::BATCH_TARGET_BYTES
                + digests.len() * (batch::FRAME_HEADER_LEN + abri_store::CHUNK_HEADER_LEN),
        );
        store.read_ahead(&digests);
        for (i, d) in digests.iter().enumerate() {
            batch::push_frame_with(&mut body, d, |out| store.read_encoded_into(d, out))?;
            if body.len() > batch::MAX_BATCH_BYTES && i > 0 {
                return Err(AppError::Invalid(format!(
                    "the chunks asked for exceed {} bytes: ask for fewer",
                    batch::MAX_BATCH_BYTES
                )));
            }
        }
        Ok(body)
    })
    .await?;
    Ok(([(header::CONTENT_TYPE, batch::CONTENT_TYPE)], body).into_response())
}

async fn snapshot_chunk(
    State(app): AppState,
    AgentMachine(m): AgentMachine,
    Path((id, digest)): Path<(String, String)>,
) -> AppResult<Response> {
    let digest = parse_digest(&digest)?;
    let manifest = own_snapshot(&app, &m.id, &id).await?;
    if !referenced(&app, &manifest).await?.contains(&digest) {
        return Err(AppError::NotFound(format!(
            "chunk {digest} in snapshot {id}"
        )));
    }
    let store = app.store.clone();
    let bytes = blocking(move || Ok(store.read_encoded(&digest)?)).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response())
}
