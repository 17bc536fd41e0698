//! The box as the backup's [`Destination`] and the restore's [`ChunkSource`], plus the two
//! job drivers that tie client, engine and progress together.
//!
//! The engine is synchronous and multi-threaded; the client is async. Engine threads call
//! `Handle::block_on` on the process's tokio runtime, so eight uploader threads are eight
//! requests in flight on the one HTTP/2 connection.

use abri_proto::agent::{BackupSpec, CommitSnapshot, SnapshotSummary};
use abri_proto::batch;
use abri_proto::plan::PlanKind;
use abri_store::{
    CatalogReader, ChunkKey, ChunkSource, ChunkerParams, Digest, PlacedChunk, StoreError,
};
use std::path::PathBuf;
use std::sync::Arc;
use tokio::runtime::Handle;

use crate::backup::{BackupError, BackupJob, BackupReport, run_backup};
use crate::client::{BoxClient, ClientError};
use crate::config::AgentConfig;
use crate::image::backup::{ImageJob, PreviousImages, run_image_backup};
use crate::image::restore::{
    ImageRestoreError, ImageRestoreOptions, ImageRestoreReport, choose_image, run_image_restore,
};
use crate::incremental::Previous;
use crate::platform;
use crate::progress::{Counters, report_to_box};
use crate::restore::{RestoreError, RestoreOptions, RestoreReport, run_restore};
use crate::upload::{Destination, DestinationError};

/// Backups go to the box over HTTPS.
pub struct HttpDestination {
    client: BoxClient,
    handle: Handle,
    /// The job and its counters: the last numbers are reported just before the commit,
    /// which ends the job on the box.
    job: Option<(String, Arc<Counters>)>,
}

impl HttpDestination {
    pub fn new(client: BoxClient, handle: Handle, job: Option<(String, Arc<Counters>)>) -> Self {
        HttpDestination {
            client,
            handle,
            job,
        }
    }
}

impl Destination for HttpDestination {
    fn missing(&self, digests: &[Digest]) -> Result<Vec<Digest>, DestinationError> {
        let mut out = Vec::new();
        for batch in digests.chunks(abri_proto::agent::MAX_DIGESTS_PER_QUERY) {
            let hex = batch.iter().map(Digest::to_hex).collect();
            let missing = self.handle.block_on(self.client.missing(hex))?;
            for m in missing {
                let d = m.parse::<Digest>().map_err(|_| {
                    DestinationError::Other(format!("the box named an invalid digest {m:?}"))
                })?;
                out.push(d);
            }
        }
        Ok(out)
    }

    fn put_batch(&self, frames: Vec<u8>, count: usize) -> Result<(), DestinationError> {
        Ok(self
            .handle
            .block_on(self.client.put_chunks(frames, count))?)
    }

    fn commit(&self, commit: &CommitSnapshot) -> Result<SnapshotSummary, DestinationError> {
        if let Some((job_id, counters)) = &self.job {
            let last = counters.take_progress();
            if let Err(e) = self.handle.block_on(self.client.progress(job_id, &last)) {
                tracing::debug!("last progress report failed: {e}");
            }
        }
        Ok(self.handle.block_on(self.client.commit(commit))?)
    }
}

/// Chunks of one snapshot, fetched from the box and verified with the chunk key.
pub struct HttpChunkSource {
    client: BoxClient,
    handle: Handle,
    snapshot: String,
    key: ChunkKey,
}

impl HttpChunkSource {
    pub fn new(client: BoxClient, handle: Handle, snapshot: String, key: ChunkKey) -> Self {
        HttpChunkSource {
            client,
            handle,
            snapshot,
            key,
        }
    }

    fn failed(&self, reason: String) -> StoreError {
        StoreError::Io {
            action: "cannot fetch chunks from the box",
            path: PathBuf::from(format!("snapshot {} chunks", self.snapshot)),
            source: std::io::Error::other(reason),
        }
    }

    /// The box's answer to one request for `digests`.
    fn fetch(&self, digests: &[Digest]) -> Result<bytes::Bytes, StoreError> {
        let hex = digests.iter().map(Digest::to_hex).collect();
        self.handle
            .block_on(self.client.snapshot_chunks(&self.snapshot, hex))
            .map_err(|e| self.failed(e.to_string()))
    }

    /// The box's answer to a request for one chunk (encoded).
    fn fetch_one(&self, digest: &Digest) -> Result<bytes::Bytes, StoreError> {
        self.handle
            .block_on(self.client.snapshot_chunk(&self.snapshot, &digest.to_hex()))
            .map_err(|e| StoreError::Io {
                action: "cannot fetch a chunk from the box",
                path: PathBuf::from(format!("snapshot {} chunk {digest}", self.snapshot)),
                source: std::io::Error::other(e.to_string()),
            })
    }

    /// The encoded chunks of `body`, checked to be the ones asked for, in order.
    fn frames<'b>(&self, body: &'b [u8], digests: &[Digest]) -> Result<Vec<&'b [u8]>, StoreError> {
        let frames = batch::parse_frames(body).map_err(|e| self.failed(e.to_string()))?;
        if frames.len() != digests.len() {
            return Err(self.failed(format!(
                "asked for {} chunks, the box sent {}",
                digests.len(),
                frames.len()
            )));
        }
        frames
            .into_iter()
            .zip(digests)
            .map(|((sent, encoded), asked)| {
                if sent != *asked {
                    return Err(
                        self.failed(format!("asked for chunk {asked}, the box sent {sent}"))
                    );
                }
                Ok(encoded)
            })
            .collect()
    }
}

impl ChunkSource for HttpChunkSource {
    fn read_chunk(&self, digest: &Digest) -> Result<Vec<u8>, StoreError> {
        let bytes = self.fetch_one(digest)?;
        abri_store::decode_chunk(&bytes, &self.key, digest)
    }

    fn read_chunk_placed(&self, digest: &Digest, lead: usize) -> Result<PlacedChunk, StoreError> {
        let bytes = self.fetch_one(digest)?;
        abri_store::decode_chunk_placed(&bytes, &self.key, digest, lead)
    }

    /// One request for all of `digests`, each verified; the box must answer exactly them.
    fn read_chunks(&self, digests: &[Digest]) -> Result<Vec<Vec<u8>>, StoreError> {
        let body = self.fetch(digests)?;
        self.frames(&body, digests)?
            .into_iter()
            .zip(digests)
            .map(|(encoded, asked)| abri_store::decode_chunk(encoded, &self.key, asked))
            .collect()
    }

    fn read_chunks_into(
        &self,
        digests: &[Digest],
        lens: &[usize],
        dest: &mut [u8],
    ) -> Result<(), StoreError> {
        if lens.len() != digests.len() || lens.iter().sum::<usize>() != dest.len() {
            return Err(self.failed(format!(
                "{} chunks asked for {} places in {} bytes",
                digests.len(),
                lens.len(),
                dest.len()
            )));
        }
        let body = self.fetch(digests)?;
        let mut rest = dest;
        for ((encoded, asked), &len) in self
            .frames(&body, digests)?
            .into_iter()
            .zip(digests)
            .zip(lens)
        {
            let (slot, tail) = std::mem::take(&mut rest).split_at_mut(len);
            abri_store::decode_chunk_into(encoded, &self.key, asked, slot)?;
            rest = tail;
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Backup(#[from] BackupError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error("snapshot {0} names an invalid catalog digest")]
    BadCatalog(String),
    #[error(transparent)]
    ImageRestore(#[from] ImageRestoreError),
    #[error("{0}")]
    Refused(String),
    #[error("the job's thread failed: {0}")]
    Join(String),
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn parse_catalog(id: &str, hex: &[String]) -> Result<Vec<Digest>, JobError> {
    hex.iter()
        .map(|h| h.parse::<Digest>())
        .collect::<Result<_, _>>()
        .map_err(|_| JobError::BadCatalog(id.to_string()))
}

/// Backs up `spec` for job `job_id`, reporting progress to the box every second.
pub async fn backup_job(
    client: &BoxClient,
    config: &AgentConfig,
    job_id: &str,
    spec: BackupSpec,
    counters: Arc<Counters>,
) -> Result<BackupReport, JobError> {
    if spec.kind == PlanKind::Image {
        return image_backup_job(client, config, job_id, spec, counters).await;
    }
    let started = unix_now();
    let key = config.chunk_key();
    let handle = Handle::current();
    // The newest snapshot of the same plan is the base of an incremental run.
    let previous = if spec.full {
        None
    } else {
        match client.snapshots().await {
            Ok(list) => list
                .into_iter()
                .filter(|s| s.plan == spec.plan && s.kind == "files")
                .max_by_key(|s| (s.started, s.finished)),
            Err(e) => {
                counters.warn(format!(
                    "cannot list previous snapshots ({e}): this backup reads every file"
                ));
                None
            }
        }
    };
    let previous = match previous {
        Some(s) => match client.snapshot(&s.id).await {
            Ok(detail) => {
                let digests = parse_catalog(&s.id, &detail.catalog)?;
                let source =
                    HttpChunkSource::new(client.clone(), handle.clone(), s.id.clone(), key.clone());
                Previous::new(CatalogReader::new(source, digests))
            }
            Err(e) => {
                counters.warn(format!(
                    "cannot read snapshot {} ({e}): this backup reads every file",
                    s.id
                ));
                Previous::none()
            }
        },
        None => Previous::none(),
    };
    let job = BackupJob {
        job_id: job_id.to_string(),
        spec,
        root: PathBuf::from("/"),
        key,
        params: ChunkerParams::DEFAULT,
        source: platform::hostname(),
        started,
    };
    let done = Arc::new(tokio::sync::Notify::new());
    let reporter = tokio::spawn(report_to_box(
        client.clone(),
        job_id.to_string(),
        counters.clone(),
        done.clone(),
    ));
    let dest = HttpDestination::new(
        client.clone(),
        handle,
        Some((job_id.to_string(), counters.clone())),
    );
    let c = counters.clone();
    let result = tokio::task::spawn_blocking(move || run_backup(&job, &dest, previous, &c)).await;
    done.notify_one();
    let _ = reporter.await;
    Ok(result.map_err(|e| JobError::Join(e.to_string()))??)
}

/// Restores `snapshot` for job `job_id` (or a CLI restore when `job_id` is `None`).
pub async fn restore_job(
    client: &BoxClient,
    config: &AgentConfig,
    job_id: Option<&str>,
    snapshot: &str,
    opts: RestoreOptions,
    counters: Arc<Counters>,
) -> Result<RestoreReport, JobError> {
    let detail = client.snapshot(snapshot).await?;
    let digests = parse_catalog(snapshot, &detail.catalog)?;
    let handle = Handle::current();
    let source = HttpChunkSource::new(
        client.clone(),
        handle,
        snapshot.to_string(),
        config.chunk_key(),
    );
    let done = Arc::new(tokio::sync::Notify::new());
    let reporter = job_id.map(|id| {
        tokio::spawn(report_to_box(
            client.clone(),
            id.to_string(),
            counters.clone(),
            done.clone(),
        ))
    });
    let c = counters.clone();
    let result =
        tokio::task::spawn_blocking(move || run_restore(&source, digests, &opts, &c)).await;
    done.notify_one();
    if let Some(r) = reporter {
        let _ = r.await;
    }
    Ok(result.map_err(|e| JobError::Join(e.to_string()))??)
}

/// Runs an image backup for job `job_id`: the newest image snapshot of the plan is the
/// base (its chunks are known, and with a dirty bitmap its unchanged blocks are not read).
async fn image_backup_job(
    client: &BoxClient,
    config: &AgentConfig,
    job_id: &str,
    spec: BackupSpec,
    counters: Arc<Counters>,
) -> Result<BackupReport, JobError> {
    let started = unix_now();
    let key = config.chunk_key();
    let handle = Handle::current();
    let mut previous = None;
    if !spec.full {
        let newest = match client.snapshots().await {
            Ok(list) => list
                .into_iter()
                .filter(|s| s.plan == spec.plan && s.kind == "image")
                .max_by_key(|s| (s.started, s.finished)),
            Err(e) => {
                counters.warn(format!(
                    "cannot list previous snapshots ({e}): every chunk is checked with the box"
                ));
                None
            }
        };
        if let Some(s) = newest {
            match client.snapshot(&s.id).await {
                Ok(detail) => {
                    let digests = parse_catalog(&s.id, &detail.catalog)?;
                    let source = HttpChunkSource::new(
                        client.clone(),
                        handle.clone(),
                        s.id.clone(),
                        key.clone(),
                    );
                    previous = Some(PreviousImages {
                        reader: CatalogReader::new(source, digests),
                        images: detail.summary.images.clone(),
                    });
                }
                Err(e) => counters.warn(format!(
                    "cannot read snapshot {} ({e}): every chunk is checked with the box",
                    s.id
                )),
            }
        }
    }
    let job = ImageJob {
        job_id: job_id.to_string(),
        spec,
        key,
        source: platform::hostname(),
        started,
    };
    let done = Arc::new(tokio::sync::Notify::new());
    let reporter = tokio::spawn(report_to_box(
        client.clone(),
        job_id.to_string(),
        counters.clone(),
        done.clone(),
    ));
    let dest = HttpDestination::new(
        client.clone(),
        handle,
        Some((job_id.to_string(), counters.clone())),
    );
    let c = counters.clone();
    let result =
        tokio::task::spawn_blocking(move || run_image_backup(&job, &dest, previous, &c)).await;
    done.notify_one();
    let _ = reporter.await;
    Ok(result.map_err(|e| JobError::Join(e.to_string()))??)
}

/// Restores one image of `snapshot` to a device or file (`abri-agent restore-image`).
pub async fn image_restore_job(
    client: &BoxClient,
    config: &AgentConfig,
    snapshot: &str,
    image: Option<&str>,
    opts: ImageRestoreOptions,
    counters: Arc<Counters>,
) -> Result<ImageRestoreReport, JobError> {
    let detail = client.snapshot(snapshot).await?;
    if detail.summary.kind != "image" {
        return Err(JobError::Refused(format!(
            "snapshot {snapshot} is a file snapshot; use abri-agent restore"
        )));
    }
    let info = choose_image(&detail.summary.images, image).map_err(JobError::Refused)?;
    let digests = parse_catalog(snapshot, &detail.catalog)?;
    let source = HttpChunkSource::new(
        client.clone(),
        Handle::current(),
        snapshot.to_string(),
        config.chunk_key(),
    );
    let c = counters.clone();
    let result =
        tokio::task::spawn_blocking(move || run_image_restore(&source, digests, &info, &opts, &c))
            .await;
    Ok(result.map_err(|e| JobError::Join(e.to_string()))??)
}

/// Restores files and folders from a volume inside an image snapshot into `target` (the
/// console's "restore to the machine" on an image, or `abri-agent restore --image`).
#[allow(clippy::too_many_arguments)]
pub async fn image_files_restore_job(
    client: &BoxClient,
    config: &AgentConfig,
    job_id: Option<&str>,
    snapshot: &str,
    volume: &abri_proto::agent::ImageVolumeRef,
    paths: Vec<String>,
    target: PathBuf,
    counters: Arc<Counters>,
) -> Result<RestoreReport, JobError> {
    let detail = client.snapshot(snapshot).await?;
    let info =
        choose_image(&detail.summary.images, Some(&volume.image)).map_err(JobError::Refused)?;
    let digests = parse_catalog(snapshot, &detail.catalog)?;
    let source = HttpChunkSource::new(
        client.clone(),
        Handle::current(),
        snapshot.to_string(),
        config.chunk_key(),
    );
    let done = Arc::new(tokio::sync::Notify::new());
    let reporter = job_id.map(|id| {
        tokio::spawn(report_to_box(
            client.clone(),
            id.to_string(),
            counters.clone(),
            done.clone(),
        ))
    });
    let c = counters.clone();
    let number = volume.volume;
    let result = tokio::task::spawn_blocking(move || {
        let fs = crate::image::files::open_volume(source, digests, info, number)?;
        crate::image::files::restore_paths(
            fs.as_ref(),
            &paths,
            &target,
            crate::platform::is_root(),
            &c,
        )
    })
    .await;
    done.notify_one();
    if let Some(r) = reporter {
        let _ = r.await;
    }
    Ok(result.map_err(|e| JobError::Join(e.to_string()))??)
}
