//! Box settings edited from the console: the mail relay and the default plans.

use crate::app::App;
use crate::errors::{AppError, AppResult};
use crate::mailer;
use crate::state::{AuditEvent, Table};
use abri_mail::{RelaySettings, Security};
use abri_proto::plan::{Plan, PlanSettings, default_file_plan, default_image_plan};
use serde::{Deserialize, Serialize};

/// The mail settings as shown: never the password, only whether one is set.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct MailView {
    pub host: Option<String>,
    pub port: u16,
    pub security: Security,
    pub user: Option<String>,
    pub password_set: bool,
    pub sender: String,
    pub recipients: Vec<String>,
}

/// The mail settings as edited. `password`: absent keeps the stored one, empty clears it.
#[derive(Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct MailUpdate {
    pub host: String,
    pub port: u16,
    pub security: Security,
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    pub sender: String,
    pub recipients: Vec<String>,
}

pub fn mail_view(app: &App) -> MailView {
    match mailer::configured_relay(app) {
        Some(r) => MailView {
            host: Some(r.host),
            port: r.port,
            security: r.security,
            user: r.user,
            password_set: r.password.is_some(),
            sender: r.sender,
            recipients: r.recipients,
        },
        None => MailView {
            host: None,
            port: 587,
            security: Security::Starttls,
            user: None,
            password_set: false,
            sender: format!("{}@localhost", app.identity.hostname),
            recipients: app.factory.partner.email.iter().cloned().collect(),
        },
    }
}

pub fn update_mail(app: &App, actor: &str, update: MailUpdate) -> AppResult<MailView> {
    let stored = mailer::configured_relay(app);
    let blank = |s: Option<String>| s.map(|v| v.trim().to_string()).filter(|v| !v.is_empty());
    let password = match update.password {
        None => stored.and_then(|s| s.password),
        Some(p) if p.is_empty() => None,
        Some(p) => Some(p),
    };
    let relay = RelaySettings {
        host: update.host.trim().to_string(),
        port: update.port,
        security: update.security,
        user: blank(update.user),
        password,
        sender: update.sender.trim().to_string(),
        recipients: update
            .recipients
            .iter()
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty())
            .collect(),
    };
    relay.validate().map_err(AppError::Invalid)?;
    let mut txn = app.db.write_txn()?;
    app.db.put_in(&mut txn, Table::Config, "mail", &relay)?;
    app.db.audit_in(
        &mut txn,
        &AuditEvent::new(
            actor,
            "mail_settings_changed",
            format!("relay {}:{}", relay.host, relay.port),
        ),
    )?;
    txn.commit().map_err(crate::state::StateError::from)?;
    Ok(mail_view(app))
}

/// Sends the test mail to `to` (when given) or to the configured recipients.
pub async fn send_test_mail(
    app: &App,
    to: Option<String>,
    language: &str,
) -> AppResult<Vec<String>> {
    let relay = mailer::configured_relay(app)
        .ok_or_else(|| AppError::Invalid("host: configure and save the mail relay first".into()))?;
    let recipients = match to.map(|t| t.trim().to_string()).filter(|t| !t.is_empty()) {
        Some(address) => {
            let probe = RelaySettings {
                recipients: vec![address.clone()],
                ..relay.clone()
            };
            probe
                .validate()
                .map_err(|e| AppError::Invalid(format!("to: {e}")))?;
            vec![address]
        }
        None => relay.recipients.clone(),
    };
    if recipients.is_empty() {
        return Err(AppError::Invalid(
            "recipients: add at least one recipient".into(),
        ));
    }
    let message = mailer::test_message(app, recipients.clone(), language);
    abri_mail::send(&relay, &message)
        .await
        .map_err(|e| AppError::MailFailed(e.to_string()))?;
    Ok(recipients)
}

/// Creates the default plans at first boot (and any default that went missing).
pub fn ensure_default_plans(app_db: &crate::state::Db) -> AppResult<()> {
    let mut txn = app_db.write_txn()?;
    for plan in [default_file_plan(), default_image_plan()] {
        if app_db
            .get_in::<Plan>(&txn, Table::Plans, &plan.id)?
            .is_none()
        {
            app_db.put_in(&mut txn, Table::Plans, &plan.id, &plan)?;
        }
    }
    txn.commit().map_err(crate::state::StateError::from)?;
    Ok(())
}

pub fn plans(app: &App) -> AppResult<Vec<Plan>> {
    Ok(app
        .db
        .list::<Plan>(Table::Plans)?
        .into_iter()
        .map(|(_, p)| p)
        .collect())
}

pub fn plan(app: &App, id: &str) -> AppResult<Plan> {
    app.db
        .get(Table::Plans, id)?
        .ok_or_else(|| AppError::NotFound(format!("plan {id}")))
}

pub fn update_plan(app: &App, actor: &str, id: &str, settings: PlanSettings) -> AppResult<Plan> {
    settings
        .validate()
        .map_err(|e| AppError::Invalid(e.to_string()))?;
    let mut txn = app.db.write_txn()?;
    let mut plan: Plan = app
        .db
        .get_in(&txn, Table::Plans, id)?
        .ok_or_else(|| AppError::NotFound(format!("plan {id}")))?;
    plan.settings = settings;
    app.db.put_in(&mut txn, Table::Plans, id, &plan)?;
    app.db
        .audit_in(&mut txn, &AuditEvent::new(actor, "plan_changed", id))?;
    txn.commit().map_err(crate::state::StateError::from)?;
    Ok(plan)
}

/// What a machine's agent should back up for a plan (the box's defaults; per-machine
/// overrides come with the machine page's plan tab).
pub fn backup_spec(
    app: &App,
    plan_id: &str,
    full: bool,
) -> AppResult<abri_proto::agent::BackupSpec> {
    let plan = plan(app, plan_id)?;
    Ok(abri_proto::agent::BackupSpec {
        plan: plan.id,
        selections: plan.settings.selections,
        excludes: plan.settings.excludes,
        full,
        kind: plan.kind,
    })
}
