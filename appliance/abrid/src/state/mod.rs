//! The box's state: one LMDB environment (heed) in `<state-dir>/db`.
//!
//! Every change is one write transaction, so a crash or power cut leaves either the old or the
//! new state, never half of one. Values are JSON (serde) so records can grow fields; the
//! schema version in `meta` says which migrations have run. Tables:
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `schema_version` | u32 |
//! | `config` | `identity`, `activation`, `mail` | [`Identity`], [`Activation`], relay settings |
//! | `users` | user name | [`User`] |
//! | `sessions` | SHA-256 of the session token (hex) | [`Session`] |
//! | `plans` | plan id | `abri_proto::plan::Plan` |
//! | `tokens` | token id | [`ApiToken`] |
//! | `machines` | machine id | [`Machine`] |
//! | `enrol_tokens` | enrolment token id | [`EnrolToken`] |
//! | `jobs` | job id (sortable by creation) | `jobs::Job` |
//! | `audit` | big-endian time + sequence | [`AuditEvent`] |

pub mod records;

pub use records::{Activation, ApiToken, AuditEvent, EnrolToken, Identity, Machine, Session, User};

use heed::byteorder::BigEndian;
use heed::types::{Bytes, SerdeJson, Str, U32};
use heed::{Database, Env, EnvOpenOptions, RoTxn, RwTxn};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// The schema this abrid writes. Raise it with a migration in [`MIGRATIONS`].
pub const SCHEMA_VERSION: u32 = 1;

/// Migration `i` brings a store from version `i + 1` to `i + 2`.
type Migration = fn(&Db, &mut RwTxn) -> Result<(), StateError>;
const MIGRATIONS: &[Migration] = &[];

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot open the state database at {path}: {source}")]
    Open { path: PathBuf, source: heed::Error },
    #[error("cannot create the state directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the state at {path} has schema version {found}, newer than this abrid's {SCHEMA_VERSION}: \
         run a newer abrid or restore an older state"
    )]
    TooNew { path: PathBuf, found: u32 },
    #[error("state database error: {0}")]
    Db(#[from] heed::Error),
}

type JsonTable = Database<Str, SerdeJson<serde_json::Value>>;

/// The open state database.
#[derive(Clone)]
pub struct Db {
    env: Env,
    meta: Database<Str, U32<BigEndian>>,
    config: JsonTable,
    users: JsonTable,
    sessions: JsonTable,
    plans: JsonTable,
    tokens: JsonTable,
    machines: JsonTable,
    enrol_tokens: JsonTable,
    jobs: JsonTable,
    audit: Database<Bytes, SerdeJson<serde_json::Value>>,
}

/// A table of JSON records keyed by string.
#[derive(Clone, Copy, Debug)]
pub enum Table {
    Config,
    Users,
    Sessions,
    Plans,
    Tokens,
    Machines,
    EnrolTokens,
    Jobs,
}

impl Db {
    /// Opens (creating if needed) the database in `dir` and runs pending migrations.
    pub fn open(dir: &Path) -> Result<Db, StateError> {
        std::fs::create_dir_all(dir).map_err(|source| StateError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let open_err = |source| StateError::Open {
            path: dir.to_path_buf(),
            source,
        };
        // SAFETY: heed requires that the same environment is not opened twice in one process
        // and that the file is not modified by non-LMDB code; abrid opens it once at start and
        // `abrid reset-password` is a separate process, which LMDB supports.
        let env = unsafe {
            EnvOpenOptions::new()
                .map_size(256 << 20)
                .max_dbs(16)
                .open(dir)
                .map_err(open_err)?
        };
        let mut wtxn = env.write_txn()?;
        let db = Db {
            meta: env.create_database(&mut wtxn, Some("meta"))?,
            config: env.create_database(&mut wtxn, Some("config"))?,
            users: env.create_database(&mut wtxn, Some("users"))?,
            sessions: env.create_database(&mut wtxn, Some("sessions"))?,
            plans: env.create_database(&mut wtxn, Some("plans"))?,
            tokens: env.create_database(&mut wtxn, Some("tokens"))?,
            machines: env.create_database(&mut wtxn, Some("machines"))?,
            enrol_tokens: env.create_database(&mut wtxn, Some("enrol_tokens"))?,
            jobs: env.create_database(&mut wtxn, Some("jobs"))?,
            audit: env.create_database(&mut wtxn, Some("audit"))?,
            env: env.clone(),
        };
        let found = db.meta.get(&wtxn, "schema_version")?;
        match found {
            None => db.meta.put(&mut wtxn, "schema_version", &SCHEMA_VERSION)?,
            Some(v) if v > SCHEMA_VERSION => {
                return Err(StateError::TooNew {
                    path: dir.to_path_buf(),
                    found: v,
                });
            }
            Some(v) => {
                for migration in MIGRATIONS.iter().skip(v.saturating_sub(1) as usize) {
                    migration(&db, &mut wtxn)?;
                }
                db.meta.put(&mut wtxn, "schema_version", &SCHEMA_VERSION)?;
            }
        }
        wtxn.commit()?;
        Ok(db)
    }

    #[cfg(test)]
    pub fn schema_version(&self) -> Result<u32, StateError> {
        let rtxn = self.env.read_txn()?;
        Ok(self.meta.get(&rtxn, "schema_version")?.unwrap_or(0))
    }

    pub fn read_txn(&self) -> Result<RoTxn<'_, heed::WithTls>, StateError> {
        Ok(self.env.read_txn()?)
    }

    pub fn write_txn(&self) -> Result<RwTxn<'_>, StateError> {
        Ok(self.env.write_txn()?)
    }

    fn table(&self, table: Table) -> JsonTable {
        match table {
            Table::Config => self.config,
            Table::Users => self.users,
            Table::Sessions => self.sessions,
            Table::Plans => self.plans,
            Table::Tokens => self.tokens,
            Table::Machines => self.machines,
            Table::EnrolTokens => self.enrol_tokens,
            Table::Jobs => self.jobs,
        }
    }

    /// Reads one record in a transaction. A record that no longer parses is an error, not a
    /// silent default: it means the state was damaged or written by another version.
    pub fn get_in<T: DeserializeOwned>(
        &self,
        txn: &RoTxn,
        table: Table,
        key: &str,
    ) -> Result<Option<T>, StateError> {
        match self.table(table).get(txn, key)? {
            None => Ok(None),
            Some(value) => serde_json::from_value(value)
                .map(Some)
                .map_err(|e| StateError::Db(heed::Error::Decoding(Box::new(e)))),
        }
    }

    pub fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        key: &str,
    ) -> Result<Option<T>, StateError> {
        let rtxn = self.read_txn()?;
        self.get_in(&rtxn, table, key)
    }

    pub fn put_in<T: Serialize>(
        &self,
        txn: &mut RwTxn,
        table: Table,
        key: &str,
        value: &T,
    ) -> Result<(), StateError> {
        let value = serde_json::to_value(value)
            .map_err(|e| StateError::Db(heed::Error::Encoding(Box::new(e))))?;
        self.table(table).put(txn, key, &value)?;
        Ok(())
    }

    /// Writes one record in its own transaction.
    pub fn put<T: Serialize>(&self, table: Table, key: &str, value: &T) -> Result<(), StateError> {
        let mut wtxn = self.write_txn()?;
        self.put_in(&mut wtxn, table, key, value)?;
        wtxn.commit()?;
        Ok(())
    }

    pub fn delete_in(&self, txn: &mut RwTxn, table: Table, key: &str) -> Result<bool, StateError> {
        Ok(self.table(table).delete(txn, key)?)
    }

    pub fn delete(&self, table: Table, key: &str) -> Result<bool, StateError> {
        let mut wtxn = self.write_txn()?;
        let existed = self.delete_in(&mut wtxn, table, key)?;
        wtxn.commit()?;
        Ok(existed)
    }

    /// All records of a table, in key order. Records that fail to parse are errors.
    pub fn list<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<(String, T)>, StateError> {
        let rtxn = self.read_txn()?;
        let mut out = Vec::new();
        for item in self.table(table).iter(&rtxn)? {
            let (key, value) = item?;
            let record = serde_json::from_value(value)
                .map_err(|e| StateError::Db(heed::Error::Decoding(Box::new(e))))?;
            out.push((key.to_string(), record));
        }
        Ok(out)
    }

    /// Appends an audit event (who did what) in the given transaction.
    pub fn audit_in(&self, txn: &mut RwTxn, event: &AuditEvent) -> Result<(), StateError> {
        let seq = self.audit.len(txn)?;
        let mut key = Vec::with_capacity(16);
        key.extend_from_slice(&event.time.to_be_bytes());
        key.extend_from_slice(&seq.to_be_bytes());
        let value = serde_json::to_value(event)
            .map_err(|e| StateError::Db(heed::Error::Encoding(Box::new(e))))?;
        self.audit.put(txn, &key, &value)?;
        Ok(())
    }

    pub fn audit(&self, event: &AuditEvent) -> Result<(), StateError> {
        let mut wtxn = self.write_txn()?;
        self.audit_in(&mut wtxn, event)?;
        wtxn.commit()?;
        Ok(())
    }

    /// The newest `limit` audit events, newest first.
    pub fn recent_audit(&self, limit: usize) -> Result<Vec<AuditEvent>, StateError> {
        let rtxn = self.read_txn()?;
        let mut out = Vec::new();
        for item in self.audit.rev_iter(&rtxn)?.take(limit) {
            let (_, value) = item?;
            if let Ok(event) = serde_json::from_value(value) {
                out.push(event);
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_survive_reopen_and_schema_is_set() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Db::open(dir.path()).unwrap();
            assert_eq!(db.schema_version().unwrap(), SCHEMA_VERSION);
            db.put(Table::Config, "k", &serde_json::json!({"a": 1}))
                .unwrap();
        }
        let db = Db::open(dir.path()).unwrap();
        let v: Option<serde_json::Value> = db.get(Table::Config, "k").unwrap();
        assert_eq!(v, Some(serde_json::json!({"a": 1})));
    }

    #[test]
    fn refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Db::open(dir.path()).unwrap();
            let mut w = db.write_txn().unwrap();
            db.meta
                .put(&mut w, "schema_version", &(SCHEMA_VERSION + 1))
                .unwrap();
            w.commit().unwrap();
        }
        let err = Db::open(dir.path()).err().unwrap().to_string();
        assert!(err.contains("newer"), "{err}");
    }

    #[test]
    fn an_uncommitted_transaction_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        {
            let mut w = db.write_txn().unwrap();
            db.put_in(&mut w, Table::Plans, "p", &1u32).unwrap();
            // dropped without commit
        }
        assert_eq!(db.get::<u32>(Table::Plans, "p").unwrap(), None);
    }

    #[test]
    fn list_and_audit() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path()).unwrap();
        for i in 0..5u32 {
            db.put(Table::Tokens, &format!("t{i}"), &i).unwrap();
        }
        assert!(db.delete(Table::Tokens, "t1").unwrap());
        assert!(!db.delete(Table::Tokens, "t1").unwrap());
        assert_eq!(db.list::<u32>(Table::Tokens).unwrap().len(), 4);
        for i in 0..3 {
            db.audit(&AuditEvent::new("admin", "test", format!("event {i}")))
                .unwrap();
        }
        let recent = db.recent_audit(2).unwrap();
        assert_eq!(recent.len(), 2);
        assert_eq!(recent[0].detail, "event 2");
    }
}
