//! The agent <-> box protocol (`/api/v1/agent/...`).
//!
//! Agents dial the box (so NAT never stands in the way) over HTTPS pinned to the box CA.
//! Enrolment trades an enrolment token for a per-machine key; every later call carries
//! `Authorization: Machine <machine_id>.<machine_key>`. The agent then long-polls
//! `GET /agent/commands` for what the box wants (back up, restore, cancel) and reports jobs.
//! Agents can add chunks and snapshots and read their own snapshots; nothing here deletes or
//! overwrites a snapshot, and nothing reads another machine's.

use abri_store::ImageInfo;
use serde::{Deserialize, Serialize};

/// The `Authorization` scheme of machine calls.
pub const MACHINE_AUTH_SCHEME: &str = "Machine";
/// Most digests per `chunks/missing` request.
pub const MAX_DIGESTS_PER_QUERY: usize = 4096;
/// How long the box holds a `commands` long poll before answering "nothing" (seconds).
pub const COMMAND_POLL_SECONDS: u64 = 25;

/// `POST /agent/enrol` (authenticated by the enrolment token in the body).
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnrolRequest {
    pub token: String,
    pub hostname: String,
    /// `linux` or `windows`.
    pub os: String,
    pub agent_version: String,
}

/// Answer to an enrolment: the machine's credentials, shown once.
#[derive(Clone, Serialize, Deserialize)]
pub struct EnrolResponse {
    pub machine_id: String,
    pub machine_key: String,
    /// Hex of the store's BLAKE3 key: agents compute the same chunk digests as the box.
    pub chunk_key: String,
    pub box_hostname: String,
    pub box_fingerprint: String,
}

impl std::fmt::Debug for EnrolResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EnrolResponse")
            .field("machine_id", &self.machine_id)
            .field("machine_key", &"<redacted>")
            .field("chunk_key", &"<redacted>")
            .field("box_hostname", &self.box_hostname)
            .finish()
    }
}

/// What the agent should back up: the effective plan of this machine.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct BackupSpec {
    pub plan: String,
    pub selections: Vec<String>,
    pub excludes: Vec<String>,
    /// Re-read every file instead of trusting size, times and inode (image plans: read
    /// every block and trust no previous image).
    pub full: bool,
    /// Files or image (older boxes send no kind: files).
    #[serde(default)]
    pub kind: crate::plan::PlanKind,
}

/// A command from the box, answered to `GET /agent/commands`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Command {
    Backup {
        job_id: String,
        spec: BackupSpec,
    },
    Restore {
        job_id: String,
        snapshot: String,
        paths: Vec<String>,
        target: String,
        /// Files from inside an image snapshot: which image and volume; `paths` are then
        /// paths of that volume's file system (`/home/ann`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        image: Option<ImageVolumeRef>,
    },
    Cancel {
        job_id: String,
    },
}

/// A volume of an image in an image snapshot.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ImageVolumeRef {
    pub image: String,
    /// The volume's number (a partition number, 0 for an unpartitioned image).
    pub volume: u32,
}

/// `POST /agent/jobs`: the agent starts a job itself (`abri-agent backup --now`).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StartJob {
    pub plan: String,
    #[serde(default)]
    pub full: bool,
}

/// Answer to `POST /agent/jobs`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobStarted {
    pub job_id: String,
    pub spec: BackupSpec,
}

/// `POST /agent/jobs/{id}/progress`: live numbers of a running job.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    pub files_scanned: u64,
    pub bytes_scanned: u64,
    pub bytes_uploaded: u64,
    pub current: Option<String>,
    #[serde(default)]
    pub log: Vec<String>,
}

/// Answer to a progress report: whether the box wants the job cancelled.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProgressAck {
    pub cancel: bool,
}

/// `POST /agent/jobs/{id}/finish` for jobs that end without a snapshot (failed, cancelled,
/// restores).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobEnd {
    /// `succeeded`, `failed` or `cancelled`.
    pub status: String,
    #[serde(default)]
    pub error: Option<String>,
}

/// `POST /agent/chunks/missing`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MissingQuery {
    pub digests: Vec<String>,
}

/// Answer: the subset of the asked digests the box does not have.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MissingAnswer {
    pub missing: Vec<String>,
}

/// `POST /agent/snapshots`: commit a snapshot whose chunks are all uploaded.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitSnapshot {
    pub job_id: String,
    pub plan: String,
    pub full: bool,
    /// Unix seconds when the backup started.
    pub started: u64,
    pub catalog: Vec<String>,
    pub source: String,
    pub stats: SnapshotStatsWire,
    /// The images of an image backup (its plan is an image plan); empty for files.
    #[serde(default)]
    pub images: Vec<ImageInfo>,
    /// True when the agent could not take a volume snapshot (VSS) and read the live files:
    /// the console marks such a backup "without snapshot". Omitted when false.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub without_snapshot: bool,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SnapshotStatsWire {
    pub files: u64,
    pub dirs: u64,
    pub bytes: u64,
    pub new_bytes: u64,
    pub chunks: u64,
    pub new_chunks: u64,
    pub reused_files: u64,
    /// What the snapshot added to the box's store (compressed, deduplicated); set by the
    /// box, ignored when an agent sends it.
    #[serde(default)]
    pub stored_new_bytes: u64,
}

/// A snapshot as agents and the console list it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SnapshotSummary {
    pub id: String,
    pub kind: String,
    pub plan: String,
    pub started: u64,
    pub finished: u64,
    pub full: bool,
    pub stats: SnapshotStatsWire,
    /// The images of an image snapshot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub images: Vec<ImageInfo>,
    /// See [`CommitSnapshot::without_snapshot`].
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub without_snapshot: bool,
}
