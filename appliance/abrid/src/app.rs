//! The running box: everything request handlers and background tasks share.

use crate::identity::BoxIdentity;
use crate::jobs::Jobs;
use crate::state::{Activation, Db, Table};
use crate::throttle::Throttle;
use crate::tls::BoxCa;
use abri_factory::FactoryData;
use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub struct App {
    pub db: Db,
    pub jobs: Jobs,
    pub store: Arc<abri_store::ChunkStore>,
    /// Digests each recently read snapshot references, for snapshot-scoped chunk reads.
    pub snapshot_refs: Mutex<HashMap<String, Arc<std::collections::HashSet<abri_store::Digest>>>>,
    /// Image readers of recently browsed image snapshots.
    pub image_readers: crate::image_browse::ReaderCache,
    pub identity: BoxIdentity,
    pub factory: FactoryData,
    pub ca: BoxCa,
    pub state_dir: PathBuf,
    pub dev: bool,
    pub started: Instant,
    /// Claim-code attempts are throttled box-wide: there is one code to guess.
    pub claim_throttle: Throttle,
    /// Login attempts are throttled per client address.
    pub login_throttle: Throttle,
    pub addresses: RwLock<Vec<IpAddr>>,
    pub announcer: Mutex<Option<abri_host::Announcer>>,
    pub upkeep: crate::maintenance::UpkeepState,
    /// Where the agent installers the console hands out are (`--installers`).
    pub installers_dir: PathBuf,
}

impl App {
    pub fn new(
        booted: crate::boot::Booted,
        factory: FactoryData,
        state_dir: PathBuf,
        dev: bool,
        addresses: Vec<IpAddr>,
    ) -> Result<App, crate::errors::AppError> {
        let crate::boot::Booted {
            db,
            store,
            identity,
            ca,
        } = booted;
        Ok(App {
            jobs: Jobs::open(db.clone())?,
            db,
            store: Arc::new(store),
            snapshot_refs: Mutex::new(HashMap::new()),
            image_readers: Default::default(),
            identity,
            factory,
            ca,
            state_dir,
            dev,
            started: Instant::now(),
            claim_throttle: Throttle::new(5, Duration::from_secs(30), Duration::from_secs(15 * 60)),
            login_throttle: Throttle::new(5, Duration::from_secs(15), Duration::from_secs(15 * 60)),
            addresses: RwLock::new(addresses),
            announcer: Mutex::new(None),
            upkeep: crate::maintenance::UpkeepState::default(),
            installers_dir: PathBuf::from(crate::installers::DEFAULT_DIR),
        })
    }

    pub fn is_activated(&self) -> Result<bool, crate::state::StateError> {
        Ok(self
            .db
            .get::<Activation>(Table::Config, "activation")?
            .is_some())
    }

    /// The console language before anyone logs in: the partner's, else French.
    pub fn default_language(&self) -> &str {
        self.factory.partner.language.as_deref().unwrap_or("fr")
    }

    pub fn status(&self) -> Result<abri_proto::api::Status, crate::state::StateError> {
        Ok(abri_proto::api::Status {
            hostname: self.identity.hostname.clone(),
            fqdn: self.identity.fqdn.clone(),
            fingerprint: self.ca.fingerprint().to_string(),
            activated: self.is_activated()?,
            version: VERSION.to_string(),
        })
    }

    pub fn addresses(&self) -> Vec<IpAddr> {
        self.addresses.read().map(|a| a.clone()).unwrap_or_default()
    }

    pub fn set_mdns_activated(&self) {
        if let Ok(guard) = self.announcer.lock()
            && let Some(announcer) = guard.as_ref()
            && let Err(e) = announcer.set_activated(true)
        {
            tracing::warn!("cannot update the mDNS announcement: {e}");
        }
    }
}

/// A development box in `dir` for tests: activated or not, no network.
#[cfg(test)]
pub fn test_app(dir: &std::path::Path) -> Arc<App> {
    let factory = crate::boot::load_factory(dir, None, true)
        .expect("a dev factory can be written to a temp dir");
    let booted = crate::boot::boot(
        dir,
        &factory.data,
        Some("52:54:00:12:ab:cd"),
        None,
        true,
        false,
    )
    .expect("a dev box boots in a temp dir");
    Arc::new(
        App::new(booted, factory.data, dir.to_path_buf(), true, Vec::new()).expect("the app opens"),
    )
}
