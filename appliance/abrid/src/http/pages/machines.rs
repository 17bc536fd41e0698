//! Machines: the list, one machine's page, enrolment tokens, and browsing and restoring
//! their snapshots. One module per page; this one holds what several of them share.

mod enrolment;
mod image_snapshot;
mod list;
mod machine;
mod snapshot;

use axum::extract::Query;
use serde::Deserialize;
use std::collections::HashMap;

pub use enrolment::{create_token, enrol_page, kit_response, revoke_token, windows_kit};
pub use image_snapshot::{volume_page, volume_restore};
pub use list::{MachineRow, machine_rows, machines_page};
pub use machine::{JobRow, backup_now, cancel_job, job_row, machine_page, revoke};
pub use snapshot::{restore, snapshot_page};

type Q = Query<HashMap<String, String>>;

/// A form whose only field is the CSRF token: the posts that act on an id in their path.
#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: String,
}

/// "Restore to the machine", from a files snapshot or from a volume of an image snapshot.
#[derive(Deserialize)]
pub struct RestoreForm {
    csrf: String,
    #[serde(default)]
    path: String,
    target: String,
}
