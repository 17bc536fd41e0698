//! The agent's configuration file: where the box is, how to trust it, who this machine is.
//!
//! Written once by `enroll` (TOML, mode 0600, tmp + fsync + rename so a crash leaves the old
//! file or the new one, never half of one) and read by every other command. The machine key
//! and the chunk key are secrets: `Debug` redacts them and nothing logs them.

use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
#[cfg(unix)]
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Where the configuration lives unless `--config` or `ABRI_AGENT_CONFIG` says otherwise.
#[cfg(unix)]
pub const DEFAULT_CONFIG_PATH: &str = "/etc/abri/agent.toml";
/// Where local state (lock, last job) lives unless the configuration says otherwise.
#[cfg(unix)]
pub const DEFAULT_STATE_DIR: &str = "/var/lib/abri-agent";
/// Where the configuration lives on Windows (the installer writes it there).
#[cfg(windows)]
pub const DEFAULT_CONFIG_PATH: &str = r"C:\ProgramData\Abri\agent.toml";
/// Local state on Windows.
#[cfg(windows)]
pub const DEFAULT_STATE_DIR: &str = r"C:\ProgramData\Abri\state";
/// The configuration format this build writes and reads.
pub const CONFIG_VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read the agent configuration {}: {source}; enrol this machine first with \
         `abri-agent enroll --box URL|auto --token TOKEN`",
        path.display()
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the agent configuration {} is not valid: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot write the agent configuration {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Everything the agent needs to talk to its box.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub version: u32,
    /// `https://host:port` of the box.
    pub box_url: String,
    /// `ip:port` to use for the box's host name when the system resolver cannot find it
    /// (mDNS `.local` names without nss-mdns); learnt at enrolment by `--box auto`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub box_address: Option<String>,
    /// Lower-case hex SHA-256 of the box CA: the only certificate authority trusted.
    pub fingerprint: String,
    pub machine_id: String,
    pub machine_key: String,
    /// Hex of the store's BLAKE3 key (chunk digests are computed with it).
    pub chunk_key: String,
    /// Local state: the job lock and the last job's result.
    pub state_dir: PathBuf,
}

impl std::fmt::Debug for AgentConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentConfig")
            .field("version", &self.version)
            .field("box_url", &self.box_url)
            .field("box_address", &self.box_address)
            .field("fingerprint", &self.fingerprint)
            .field("machine_id", &self.machine_id)
            .field("machine_key", &"<redacted>")
            .field("chunk_key", &"<redacted>")
            .field("state_dir", &self.state_dir)
            .finish()
    }
}

impl AgentConfig {
    /// Reads and checks the file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let invalid = |reason: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let config: AgentConfig = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        if config.version != CONFIG_VERSION {
            return Err(invalid(format!(
                "version {} is not supported (this agent reads {CONFIG_VERSION})",
                config.version
            )));
        }
        if abri_store::ChunkKey::from_hex(&config.chunk_key).is_none() {
            return Err(invalid("chunk_key is not 64 hex digits".into()));
        }
        abri_proto::pin::normalize_fingerprint(&config.fingerprint)
            .map_err(|e| invalid(e.to_string()))?;
        Ok(config)
    }

    /// Writes the file atomically with mode 0600, creating its directory if needed.
    pub fn save(&self, path: &Path) -> Result<(), ConfigError> {
        let err = |source| ConfigError::Write {
            path: path.to_path_buf(),
            source,
        };
        let text = toml::to_string(self)
            .map_err(|e| err(std::io::Error::new(std::io::ErrorKind::InvalidData, e)))?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&dir).map_err(err)?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "agent.toml".into());
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        let write = || -> std::io::Result<()> {
            let mut opts = fs::OpenOptions::new();
            opts.write(true).create(true).truncate(true);
            #[cfg(unix)]
            opts.mode(0o600);
            let mut f = opts.open(&tmp)?;
            // Windows: only SYSTEM and Administrators may read it (the mode 0600 of Unix).
            #[cfg(windows)]
            crate::platform::restrict_to_administrators(&tmp)?;
            f.write_all(text.as_bytes())?;
            f.sync_all()?;
            fs::rename(&tmp, path)?;
            #[cfg(unix)]
            fs::File::open(&dir)?.sync_all()?;
            Ok(())
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            err(e)
        })
    }

    /// The store key of the box.
    pub fn chunk_key(&self) -> abri_store::ChunkKey {
        // `load` and `enroll` check the hex, so this fallback only hides a caller bug; a
        // wrong key makes every digest differ and the box refuse every chunk, loudly.
        abri_store::ChunkKey::from_hex(&self.chunk_key)
            .unwrap_or_else(|| abri_store::ChunkKey::from_bytes([0; 32]))
    }

    /// The `Authorization` header value.
    pub fn authorization(&self) -> String {
        format!(
            "{} {}.{}",
            abri_proto::agent::MACHINE_AUTH_SCHEME,
            self.machine_id,
            self.machine_key
        )
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sample(state: &Path) -> AgentConfig {
        AgentConfig {
            version: CONFIG_VERSION,
            box_url: "https://backup-abcd.local".into(),
            box_address: Some("192.0.2.7:443".into()),
            fingerprint: "ab".repeat(32),
            machine_id: "m-1".into(),
            machine_key: "secret-key-value".into(),
            chunk_key: "cd".repeat(32),
            state_dir: state.to_path_buf(),
        }
    }

    #[test]
    fn saves_privately_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/agent.toml");
        let config = sample(dir.path());
        config.save(&path).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(AgentConfig::load(&path).unwrap(), config);
        assert!(!format!("{config:?}").contains("secret-key-value"));
        assert!(!format!("{config:?}").contains(&"cd".repeat(32)));
        // Overwrite keeps the mode and leaves no temporary file behind.
        config.save(&path).unwrap();
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[test]
    fn refuses_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.toml");
        assert!(matches!(
            AgentConfig::load(&path),
            Err(ConfigError::Read { .. })
        ));
        let mut config = sample(dir.path());
        config.chunk_key = "zz".into();
        config.save(&path).unwrap();
        assert!(matches!(
            AgentConfig::load(&path),
            Err(ConfigError::Invalid { .. })
        ));
        let mut config = sample(dir.path());
        config.version = 9;
        config.save(&path).unwrap();
        assert!(AgentConfig::load(&path).is_err());
    }
}
