//! Protected machines: enrolment tokens, enrolment, per-machine keys and their revocation.
//!
//! An enrolment token (`<id>.<secret>`, made in the console or API, valid for N days and any
//! number of machines) is traded by an agent for a machine id and a 256-bit machine key. The
//! box keeps only SHA-256 digests of both secrets. Revoking a machine refuses its key from the
//! next request on; its backups stay.

use crate::app::App;
use crate::errors::{AppError, AppResult};
use crate::secrets::{constant_time_eq, generate_token, sha256_hex};
use crate::state::records::now;
use crate::state::{AuditEvent, EnrolToken, Machine, StateError, Table};
use abri_proto::agent::{EnrolRequest, EnrolResponse};

pub const MAX_TOKEN_DAYS: u32 = 365;

/// Creates an enrolment token; the returned string is shown once.
pub fn create_enrol_token(
    app: &App,
    actor: &str,
    name: &str,
    days: u32,
) -> AppResult<(EnrolToken, String)> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 80 || name.chars().any(char::is_control) {
        return Err(AppError::Invalid(
            "name: must be 1 to 80 printable characters".into(),
        ));
    }
    if !(1..=MAX_TOKEN_DAYS).contains(&days) {
        return Err(AppError::Invalid(format!(
            "days: must be between 1 and {MAX_TOKEN_DAYS}"
        )));
    }
    let id = generate_token()[..16].to_string();
    let secret = generate_token();
    let t = now();
    let token = EnrolToken {
        id: id.clone(),
        name: name.to_string(),
        secret_sha256: sha256_hex(&secret),
        created: t,
        expires: t + u64::from(days) * 86400,
        uses: 0,
        revoked: false,
    };
    let mut txn = app.db.write_txn()?;
    app.db.put_in(&mut txn, Table::EnrolTokens, &id, &token)?;
    app.db.audit_in(
        &mut txn,
        &AuditEvent::new(actor, "enrol_token_created", name),
    )?;
    txn.commit().map_err(StateError::from)?;
    Ok((token, format!("{id}.{secret}")))
}

pub fn enrol_tokens(app: &App) -> AppResult<Vec<EnrolToken>> {
    Ok(app
        .db
        .list::<EnrolToken>(Table::EnrolTokens)?
        .into_iter()
        .map(|(_, t)| t)
        .collect())
}

pub fn revoke_enrol_token(app: &App, actor: &str, id: &str) -> AppResult<()> {
    let mut txn = app.db.write_txn()?;
    let mut token: EnrolToken = app
        .db
        .get_in(&txn, Table::EnrolTokens, id)?
        .ok_or_else(|| AppError::NotFound(format!("enrolment token {id}")))?;
    token.revoked = true;
    app.db.put_in(&mut txn, Table::EnrolTokens, id, &token)?;
    app.db.audit_in(
        &mut txn,
        &AuditEvent::new(actor, "enrol_token_revoked", &token.name),
    )?;
    txn.commit().map_err(StateError::from)?;
    Ok(())
}

fn check_hostname(hostname: &str) -> AppResult<()> {
    let ok = !hostname.is_empty()
        && hostname.len() <= 253
        && hostname
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(AppError::Invalid(
            "hostname: 1 to 253 letters, digits, '-', '_' or '.'".into(),
        ))
    }
}

/// The record of `presented` (`<id>.<secret>`) if it is known, unexpired and not revoked.
fn valid_enrol_token(
    app: &App,
    txn: &heed::RoTxn,
    presented: &str,
) -> AppResult<(String, EnrolToken)> {
    let refused = || AppError::Unauthenticated("unknown, expired or revoked enrolment token");
    let (id, secret) = presented.trim().split_once('.').ok_or_else(refused)?;
    let token = app
        .db
        .get_in::<EnrolToken>(txn, Table::EnrolTokens, id)?
        .ok_or_else(refused)?;
    if token.revoked
        || token.expires < now()
        || !constant_time_eq(&sha256_hex(secret), &token.secret_sha256)
    {
        return Err(refused());
    }
    Ok((id.to_string(), token))
}

/// Checks that an enrolment token would be accepted now (for an installer kit).
pub fn check_enrol_token(app: &App, presented: &str) -> AppResult<EnrolToken> {
    let txn = app.db.read_txn()?;
    Ok(valid_enrol_token(app, &txn, presented)?.1)
}

/// Trades a valid enrolment token for a new machine's credentials.
pub fn enrol(app: &App, req: &EnrolRequest, chunk_key_hex: &str) -> AppResult<EnrolResponse> {
    check_hostname(&req.hostname)?;
    if req.os != "linux" && req.os != "windows" {
        return Err(AppError::Invalid(
            "os: must be \"linux\" or \"windows\"".into(),
        ));
    }
    if req.agent_version.is_empty() || req.agent_version.len() > 40 {
        return Err(AppError::Invalid(
            "agent_version: 1 to 40 characters".into(),
        ));
    }
    let mut txn = app.db.write_txn()?;
    let (id, mut token) = valid_enrol_token(app, &txn, &req.token)?;
    token.uses += 1;
    let machine_id = format!("m-{}", &generate_token()[..12]);
    let machine_key = generate_token();
    let t = now();
    let machine = Machine {
        id: machine_id.clone(),
        hostname: req.hostname.clone(),
        os: req.os.clone(),
        agent_version: req.agent_version.clone(),
        key_sha256: sha256_hex(&machine_key),
        enrolled: t,
        last_seen: t,
        revoked_at: None,
        enrol_token: token.id.clone(),
    };
    app.db.put_in(&mut txn, Table::EnrolTokens, &id, &token)?;
    app.db
        .put_in(&mut txn, Table::Machines, &machine_id, &machine)?;
    app.db.audit_in(
        &mut txn,
        &AuditEvent::new(
            "-",
            "machine_enrolled",
            format!("{} ({machine_id}) with token {}", req.hostname, token.name),
        ),
    )?;
    txn.commit().map_err(StateError::from)?;
    Ok(EnrolResponse {
        machine_id,
        machine_key,
        chunk_key: chunk_key_hex.to_string(),
        box_hostname: app.identity.hostname.clone(),
        box_fingerprint: app.ca.fingerprint().to_string(),
    })
}

/// The machine behind `<machine_id>.<machine_key>`, if the key is right and not revoked.
/// `last_seen` is written at most once a minute.
pub fn authenticate(app: &App, presented: &str) -> AppResult<Machine> {
    let refused = || AppError::Unauthenticated("unknown machine or wrong machine key");
    let (id, key) = presented.trim().split_once('.').ok_or_else(refused)?;
    let mut machine: Machine = app.db.get(Table::Machines, id)?.ok_or_else(refused)?;
    if !constant_time_eq(&sha256_hex(key), &machine.key_sha256) {
        return Err(refused());
    }
    if machine.revoked_at.is_some() {
        return Err(AppError::Unauthenticated(
            "this machine's key was revoked in the console",
        ));
    }
    let t = now();
    if t.saturating_sub(machine.last_seen) > 60 {
        machine.last_seen = t;
        app.db.put(Table::Machines, id, &machine)?;
    }
    Ok(machine)
}

pub fn machines(app: &App) -> AppResult<Vec<Machine>> {
    Ok(app
        .db
        .list::<Machine>(Table::Machines)?
        .into_iter()
        .map(|(_, m)| m)
        .collect())
}

pub fn machine(app: &App, id: &str) -> AppResult<Machine> {
    app.db
        .get(Table::Machines, id)?
        .ok_or_else(|| AppError::NotFound(format!("machine {id}")))
}

/// Refuses the machine's key from now on. Its snapshots are kept.
pub fn revoke_machine(app: &App, actor: &str, id: &str) -> AppResult<()> {
    let mut txn = app.db.write_txn()?;
    let mut machine: Machine = app
        .db
        .get_in(&txn, Table::Machines, id)?
        .ok_or_else(|| AppError::NotFound(format!("machine {id}")))?;
    machine.revoked_at.get_or_insert(now());
    app.db.put_in(&mut txn, Table::Machines, id, &machine)?;
    app.db.audit_in(
        &mut txn,
        &AuditEvent::new(
            actor,
            "machine_key_revoked",
            format!("{} ({id})", machine.hostname),
        ),
    )?;
    txn.commit().map_err(StateError::from)?;
    Ok(())
}
