//! What abrid does at every start before it serves: read the factory data (creating a
//! development one in dev mode), open the state, fix the identity, create the default plans
//! and the mail relay from the factory, and load the CA. Each step is idempotent, so the
//! first boot and every later boot run the same code.

use crate::identity::{self, BoxIdentity};
use crate::settings;
use crate::state::{Db, Table};
use crate::tls::{BoxCa, write_file};
use abri_factory::{ClaimCode, FACTORY_FORMAT_VERSION, FactoryData, Partner};
use anyhow::{Context, Result, bail};
use std::path::{Path, PathBuf};

/// The factory data, and in dev mode the development claim code to print.
pub struct LoadedFactory {
    pub data: FactoryData,
    pub dev_claim_code: Option<String>,
}

fn dev_paths(state_dir: &Path) -> (PathBuf, PathBuf) {
    (
        state_dir.join("dev-factory.toml"),
        state_dir.join("dev-claim-code"),
    )
}

/// Reads `--factory`, or in dev mode the development factory in the state directory
/// (created on first use). Nothing else is touched before the factory file is known good.
pub fn load_factory(state_dir: &Path, factory: Option<&Path>, dev: bool) -> Result<LoadedFactory> {
    if let Some(path) = factory {
        let data = FactoryData::load(path)?;
        return Ok(LoadedFactory {
            data,
            dev_claim_code: None,
        });
    }
    if !dev {
        bail!(
            "no factory file: give --factory FILE (on the appliance it is on the boot partition)"
        );
    }
    let (factory_path, code_path) = dev_paths(state_dir);
    if !factory_path.exists() {
        std::fs::create_dir_all(state_dir)
            .with_context(|| format!("cannot create {}", state_dir.display()))?;
        let code = ClaimCode::generate();
        let data = FactoryData {
            format: FACTORY_FORMAT_VERSION,
            claim_code_hash: code
                .hash()
                .map_err(|e| anyhow::anyhow!("cannot hash the claim code: {e}"))?,
            partner: Partner {
                name: Some("Development".into()),
                ..Partner::default()
            },
            smtp: None,
        };
        // The code first: a crash between the two writes leaves a code without a factory
        // file, and the next start simply makes a new pair.
        write_file(&code_path, format!("{}\n", code.as_str()).as_bytes(), 0o600)?;
        data.write(&factory_path)?;
    }
    let data = FactoryData::load(&factory_path)?;
    let code = std::fs::read_to_string(&code_path).with_context(|| {
        format!(
            "cannot read the development claim code {}",
            code_path.display()
        )
    })?;
    Ok(LoadedFactory {
        data,
        dev_claim_code: Some(code.trim().to_string()),
    })
}

/// The factory file `reset-password` should check the claim code against.
pub fn factory_for_reset(state_dir: &Path, factory: Option<&Path>) -> Result<FactoryData> {
    match factory {
        Some(path) => Ok(FactoryData::load(path)?),
        None => {
            let (dev_factory, _) = dev_paths(state_dir);
            if dev_factory.exists() {
                Ok(FactoryData::load(&dev_factory)?)
            } else {
                bail!("give --factory FILE: the factory file holds the claim code's hash")
            }
        }
    }
}

pub fn db_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("db")
}

/// Everything known before serving.
pub struct Booted {
    pub db: Db,
    pub store: abri_store::ChunkStore,
    pub identity: BoxIdentity,
    pub ca: BoxCa,
}

pub fn boot(
    state_dir: &Path,
    factory: &FactoryData,
    mac: Option<&str>,
    interface: Option<&str>,
    dev: bool,
    adopt_disks: bool,
) -> Result<Booted> {
    let seen = identity::seen_mac(mac, interface, dev)?;
    let db = Db::open(&db_dir(state_dir))?;
    let identity = identity::establish(&db, &seen, factory.partner.domain.as_deref())?;
    if !dev && let Err(e) = abri_host::set_system_hostname(&identity.hostname) {
        tracing::warn!(
            "cannot set the system hostname to {}: {e}",
            identity.hostname
        );
    }
    settings::ensure_default_plans(&db).map_err(|e| anyhow::anyhow!("{e}"))?;
    seed_mail_relay(&db, factory)?;
    let ca = BoxCa::load_or_create(&state_dir.join("tls"), &identity.hostname)?;
    crate::firmware::settle_last_update(&db)?;
    if adopt_disks && let Some(disk) = crate::datadisk::adopt_first_blank(&db) {
        tracing::info!("adopted the blank disk {} as the backup disk", disk.device);
    }
    let store = open_store(&crate::datadisk::store_dir(state_dir, &db))?;
    Ok(Booted {
        db,
        store,
        identity,
        ca,
    })
}

/// The factory's relay becomes the box's relay until someone edits it in the console.
fn seed_mail_relay(db: &Db, factory: &FactoryData) -> Result<()> {
    if db
        .get::<serde_json::Value>(Table::Config, "mail")?
        .is_some()
    {
        return Ok(());
    }
    let Some(relay) = crate::mailer::relay_from_factory(factory) else {
        return Ok(());
    };
    db.put(Table::Config, "mail", &relay)?;
    Ok(())
}

/// Opens the backup store, creating it on first boot. The store keeps its default reserve of
/// free space for the box itself.
pub fn open_store(dir: &Path) -> Result<abri_store::ChunkStore> {
    if dir.join("store.json").exists() {
        Ok(abri_store::ChunkStore::open(dir)?)
    } else {
        Ok(abri_store::ChunkStore::create(dir)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dev_factory_is_created_once_and_its_code_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let first = load_factory(dir.path(), None, true).unwrap();
        let again = load_factory(dir.path(), None, true).unwrap();
        let code = first.dev_claim_code.clone().unwrap();
        assert_eq!(Some(code.clone()), again.dev_claim_code);
        assert!(abri_factory::code::verify_secret(
            &code,
            &first.data.claim_code_hash
        ));
    }

    #[test]
    fn appliance_mode_needs_a_factory_file_and_a_bad_one_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert!(load_factory(&state, None, false).is_err());
        let bad = dir.path().join("factory.toml");
        std::fs::write(&bad, "format = 1\nclaim_code_hash = \"x\"\n").unwrap();
        let err = load_factory(&state, Some(&bad), false)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("factory.toml"), "{err}");
        assert!(!state.exists(), "nothing created");
    }
}
