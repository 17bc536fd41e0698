//! Activation, users, sessions and API tokens.
//!
//! Passwords are generated here, shown once, and stored only as Argon2id hashes; session and
//! API tokens are stored as SHA-256 digests. Slow hashing runs on the blocking pool.

use crate::app::App;
use crate::errors::{AppError, AppResult, blocking};
use crate::mailer;
use crate::secrets::{constant_time_eq, generate_password, generate_token, sha256_hex};
use crate::state::records::now;
use crate::state::{Activation, ApiToken, AuditEvent, Db, Session, Table, User};
use abri_factory::code::{hash_secret, verify_secret};
use abri_factory::{ClaimCode, FactoryData};
use abri_proto::api::IssuedPassword;
use anyhow::Context;
use std::sync::OnceLock;

pub const ADMIN: &str = "admin";
/// A session ends after this long without a request...
const SESSION_IDLE_SECS: u64 = 12 * 3600;
/// ...and in any case this long after login.
const SESSION_MAX_SECS: u64 = 7 * 86400;
pub const MIN_PASSWORD_CHARS: usize = 12;

async fn hash_password(password: String) -> AppResult<String> {
    blocking(move || {
        hash_secret(&password)
            .map_err(|e| AppError::Internal(anyhow::anyhow!("cannot hash the password: {e}")))
    })
    .await
}

/// Checks the claim code and, if right, creates the admin account with a fresh password.
pub async fn activate(app: &App, typed_code: &str) -> AppResult<IssuedPassword> {
    app.claim_throttle
        .check("claim")
        .map_err(AppError::Throttled)?;
    if app.is_activated()? {
        return Err(AppError::AlreadyActivated);
    }
    let hash = app.factory.claim_code_hash.clone();
    let code = ClaimCode::parse(typed_code);
    let right = match code {
        Some(code) => blocking(move || Ok(verify_secret(code.as_str(), &hash))).await?,
        None => false,
    };
    if !right {
        app.claim_throttle.fail("claim");
        app.db.audit(&AuditEvent::new(
            "-",
            "activation_refused",
            "wrong claim code",
        ))?;
        return Err(AppError::BadClaimCode);
    }
    app.claim_throttle.succeed("claim");
    let password = generate_password();
    let password_hash = hash_password(password.clone()).await?;
    {
        let db = &app.db;
        let mut txn = db.write_txn()?;
        if db
            .get_in::<Activation>(&txn, Table::Config, "activation")?
            .is_some()
        {
            return Err(AppError::AlreadyActivated);
        }
        let t = now();
        let user = User {
            name: ADMIN.into(),
            password_hash,
            language: app.default_language().to_string(),
            created: t,
            password_changed: t,
        };
        db.put_in(&mut txn, Table::Users, ADMIN, &user)?;
        db.put_in(
            &mut txn,
            Table::Config,
            "activation",
            &Activation { activated_at: t },
        )?;
        db.audit_in(
            &mut txn,
            &AuditEvent::new("-", "activated", "admin password issued"),
        )?;
        txn.commit().map_err(crate::state::StateError::from)?;
    }
    tracing::info!("the box was activated; the admin password was issued to the activator");
    app.set_mdns_activated();
    let mailed = mailer::mail_password_to_partner(app, &password).await;
    Ok(IssuedPassword {
        user: ADMIN.into(),
        password,
        mailed_to_partner: mailed,
    })
}

/// A hash to verify against when the user does not exist, so that timing does not tell
/// which user names exist.
fn decoy_hash() -> &'static str {
    static DECOY: OnceLock<String> = OnceLock::new();
    DECOY.get_or_init(|| hash_secret(&generate_token()).unwrap_or_default())
}

/// A new session: the cookie token (returned once) and its record.
pub struct NewSession {
    pub token: String,
    pub session: Session,
    pub language: String,
}

pub async fn login(app: &App, user: &str, password: &str, client: &str) -> AppResult<NewSession> {
    app.login_throttle
        .check(client)
        .map_err(AppError::Throttled)?;
    let record: Option<User> = app.db.get(Table::Users, user)?;
    let hash = record
        .as_ref()
        .map(|u| u.password_hash.clone())
        .unwrap_or_else(|| decoy_hash().to_string());
    let typed = password.to_string();
    let verified = blocking(move || Ok(verify_secret(&typed, &hash))).await?;
    let Some(record) = record.filter(|_| verified) else {
        app.login_throttle.fail(client);
        app.db.audit(&AuditEvent::new(
            user,
            "login_refused",
            format!("from {client}"),
        ))?;
        return Err(AppError::Unauthenticated("wrong user name or password"));
    };
    app.login_throttle.succeed(client);
    let token = generate_token();
    let t = now();
    let session = Session {
        user: record.name.clone(),
        csrf_token: generate_token(),
        created: t,
        last_seen: t,
    };
    let mut txn = app.db.write_txn()?;
    app.db
        .put_in(&mut txn, Table::Sessions, &sha256_hex(&token), &session)?;
    app.db.audit_in(
        &mut txn,
        &AuditEvent::new(&record.name, "login", format!("from {client}")),
    )?;
    txn.commit().map_err(crate::state::StateError::from)?;
    Ok(NewSession {
        token,
        session,
        language: record.language,
    })
}

/// The live session of a cookie token, if any. Expired sessions are removed on sight;
/// `last_seen` is written at most once a minute to keep reads cheap.
pub fn session_for(app: &App, token: &str) -> AppResult<Option<Session>> {
    let key = sha256_hex(token);
    let Some(mut session) = app.db.get::<Session>(Table::Sessions, &key)? else {
        return Ok(None);
    };
    let t = now();
    if t.saturating_sub(session.last_seen) > SESSION_IDLE_SECS
        || t.saturating_sub(session.created) > SESSION_MAX_SECS
    {
        app.db.delete(Table::Sessions, &key)?;
        return Ok(None);
    }
    if t.saturating_sub(session.last_seen) > 60 {
        session.last_seen = t;
        app.db.put(Table::Sessions, &key, &session)?;
    }
    Ok(Some(session))
}

/// Ends a session, given its key (the SHA-256 of its token).
pub fn end_session(app: &App, session_key: &str) -> AppResult<()> {
    app.db.delete(Table::Sessions, session_key)?;
    Ok(())
}

pub fn user(app: &App, name: &str) -> AppResult<User> {
    app.db
        .get(Table::Users, name)?
        .ok_or_else(|| AppError::NotFound(format!("user {name}")))
}

pub fn check_new_password(current: &str, new: &str) -> AppResult<()> {
    let n = new.chars().count();
    if n < MIN_PASSWORD_CHARS {
        return Err(AppError::Invalid(format!(
            "new_password: must have at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if n > 256 {
        return Err(AppError::Invalid(
            "new_password: at most 256 characters".into(),
        ));
    }
    if new == current {
        return Err(AppError::Invalid(
            "new_password: must differ from the current password".into(),
        ));
    }
    Ok(())
}

/// Changes a user's password after checking the current one; closes the user's other
/// sessions (`keep_session` is the SHA-256 key of the caller's own session, if any).
pub async fn change_password(
    app: &App,
    name: &str,
    current: &str,
    new: &str,
    keep_session: Option<&str>,
) -> AppResult<()> {
    let throttle_key = format!("password:{name}");
    app.login_throttle
        .check(&throttle_key)
        .map_err(AppError::Throttled)?;
    let mut record = user(app, name)?;
    let (typed, hash) = (current.to_string(), record.password_hash.clone());
    if !blocking(move || Ok(verify_secret(&typed, &hash))).await? {
        app.login_throttle.fail(&throttle_key);
        return Err(AppError::Invalid("current_password: wrong password".into()));
    }
    check_new_password(current, new)?;
    record.password_hash = hash_password(new.to_string()).await?;
    record.password_changed = now();
    let others: Vec<String> = app
        .db
        .list::<Session>(Table::Sessions)?
        .into_iter()
        .filter(|(key, s)| s.user == name && Some(key.as_str()) != keep_session)
        .map(|(key, _)| key)
        .collect();
    let mut txn = app.db.write_txn()?;
    app.db.put_in(&mut txn, Table::Users, name, &record)?;
    for key in &others {
        app.db.delete_in(&mut txn, Table::Sessions, key)?;
    }
    app.db.audit_in(
        &mut txn,
        &AuditEvent::new(name, "password_changed", "other sessions closed"),
    )?;
    txn.commit().map_err(crate::state::StateError::from)?;
    Ok(())
}

pub fn set_language(app: &App, name: &str, language: &str) -> AppResult<()> {
    if !crate::ui::i18n::is_supported(language) {
        return Err(AppError::Invalid(format!(
            "language: {language:?} is not \"fr\" or \"en\""
        )));
    }
    let mut record = user(app, name)?;
    record.language = language.to_string();
    app.db.put(Table::Users, name, &record)?;
    Ok(())
}

/// API tokens are `<id>.<secret>`; the id finds the record, the secret is compared by digest.
pub fn create_token(app: &App, user: &str, name: &str) -> AppResult<(ApiToken, String)> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 80 || name.chars().any(char::is_control) {
        return Err(AppError::Invalid(
            "name: must be 1 to 80 printable characters".into(),
        ));
    }
    let id = generate_token()[..16].to_string();
    let secret = generate_token();
    let token = ApiToken {
        id: id.clone(),
        name: name.to_string(),
        user: user.to_string(),
        secret_sha256: sha256_hex(&secret),
        created: now(),
    };
    let mut txn = app.db.write_txn()?;
    app.db.put_in(&mut txn, Table::Tokens, &id, &token)?;
    app.db
        .audit_in(&mut txn, &AuditEvent::new(user, "token_created", name))?;
    txn.commit().map_err(crate::state::StateError::from)?;
    Ok((token, format!("{id}.{secret}")))
}

pub fn token_user(app: &App, presented: &str) -> AppResult<Option<String>> {
    let Some((id, secret)) = presented.split_once('.') else {
        return Ok(None);
    };
    let Some(token) = app.db.get::<ApiToken>(Table::Tokens, id)? else {
        return Ok(None);
    };
    Ok(constant_time_eq(&sha256_hex(secret), &token.secret_sha256).then_some(token.user))
}

pub fn delete_token(app: &App, actor: &str, id: &str) -> AppResult<()> {
    let mut txn = app.db.write_txn()?;
    if !app.db.delete_in(&mut txn, Table::Tokens, id)? {
        return Err(AppError::NotFound(format!("token {id}")));
    }
    app.db
        .audit_in(&mut txn, &AuditEvent::new(actor, "token_deleted", id))?;
    txn.commit().map_err(crate::state::StateError::from)?;
    Ok(())
}

/// The recovery path (`abrid reset-password`): someone with a shell on the box and the
/// claim code gets a new admin password; every session is closed.
pub fn reset_password(db: &Db, factory: &FactoryData, typed_code: &str) -> anyhow::Result<String> {
    let right = ClaimCode::parse(typed_code)
        .is_some_and(|c| verify_secret(c.as_str(), &factory.claim_code_hash));
    if !right {
        db.audit(&AuditEvent::new(
            "console",
            "password_reset_refused",
            "wrong claim code",
        ))?;
        anyhow::bail!("wrong claim code: nothing was changed");
    }
    let mut record: User = db
        .get(Table::Users, ADMIN)?
        .context("the box is not activated yet: activate it instead of resetting the password")?;
    let password = generate_password();
    record.password_hash =
        hash_secret(&password).map_err(|e| anyhow::anyhow!("cannot hash: {e}"))?;
    record.password_changed = now();
    let sessions: Vec<String> = db
        .list::<Session>(Table::Sessions)?
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let mut txn = db.write_txn()?;
    db.put_in(&mut txn, Table::Users, ADMIN, &record)?;
    for key in &sessions {
        db.delete_in(&mut txn, Table::Sessions, key)?;
    }
    db.audit_in(
        &mut txn,
        &AuditEvent::new("console", "password_reset", "admin password re-issued"),
    )?;
    txn.commit()?;
    Ok(password)
}
