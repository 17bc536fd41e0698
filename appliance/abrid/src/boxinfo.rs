//! What the console and `GET /api/v1/box` tell about the box itself.

use crate::app::{App, VERSION};
use abri_host::DiskUsage;
use serde::Serialize;

#[derive(Serialize)]
pub struct BoxInfo {
    pub hostname: String,
    pub fqdn: Option<String>,
    pub fingerprint: String,
    pub activated: bool,
    pub version: String,
    pub interface: Option<String>,
    pub mac: String,
    pub addresses: Vec<String>,
    pub uptime_seconds: u64,
    pub disks: Vec<DiskView>,
    pub dev_mode: bool,
}

#[derive(Serialize)]
pub struct DiskView {
    pub mount: String,
    pub device: String,
    pub fs_type: String,
    pub total_bytes: u64,
    pub free_bytes: u64,
}

impl From<DiskUsage> for DiskView {
    fn from(d: DiskUsage) -> Self {
        DiskView {
            mount: d.mount,
            device: d.device,
            fs_type: d.fs_type,
            total_bytes: d.total_bytes,
            free_bytes: d.free_bytes,
        }
    }
}

/// The disks to show: every real file system, and always the one holding the state.
fn disks(app: &App) -> Vec<DiskView> {
    let mut disks = abri_host::disks();
    if let Ok(state_disk) = abri_host::usage_of(&app.state_dir)
        && !disks.iter().any(|d| d.mount == state_disk.mount)
    {
        disks.push(state_disk);
    }
    disks.into_iter().map(DiskView::from).collect()
}

pub fn box_info(app: &App) -> Result<BoxInfo, crate::state::StateError> {
    Ok(BoxInfo {
        hostname: app.identity.hostname.clone(),
        fqdn: app.identity.fqdn.clone(),
        fingerprint: app.ca.fingerprint().to_string(),
        activated: app.is_activated()?,
        version: VERSION.to_string(),
        interface: app.identity.interface.clone(),
        mac: app.identity.mac.clone(),
        addresses: app.addresses().iter().map(|a| a.to_string()).collect(),
        // The machine's uptime; abrid's own when /proc is not readable.
        uptime_seconds: abri_host::uptime()
            .unwrap_or_else(|_| app.started.elapsed())
            .as_secs(),
        disks: disks(app),
        dev_mode: app.dev,
    })
}
