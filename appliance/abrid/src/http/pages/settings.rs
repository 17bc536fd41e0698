//! Settings pages: mail relay, default plans, the box.

use super::dashboard::DiskRow;
use super::{Chrome, Flash, PageUser, render, status_of};
use crate::app::App;
use crate::boxinfo;
use crate::errors::AppError;
use crate::http::extract::PageForm;
use crate::settings::{self, MailUpdate, MailView};
use abri_mail::Security;
use abri_proto::plan::{Plan, PlanSettings, Retention, Window};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;

type Q = Query<HashMap<String, String>>;

fn lines(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect()
}

fn number<T: std::str::FromStr>(field: &str, text: &str) -> Result<T, AppError> {
    text.trim()
        .parse()
        .map_err(|_| AppError::Invalid(format!("{field}: {text:?} is not a whole number in range")))
}

// ---- mail ----

/// The mail form's values as shown (after a failed post: as typed).
pub struct MailFields {
    pub host: String,
    pub port: String,
    pub security: &'static str,
    pub user: String,
    pub password_set: bool,
    pub sender: String,
    pub recipients: String,
}

impl From<MailView> for MailFields {
    fn from(v: MailView) -> Self {
        MailFields {
            host: v.host.unwrap_or_default(),
            port: v.port.to_string(),
            security: security_name(v.security),
            user: v.user.unwrap_or_default(),
            password_set: v.password_set,
            sender: v.sender,
            recipients: v.recipients.join("\n"),
        }
    }
}

fn security_name(s: Security) -> &'static str {
    match s {
        Security::Starttls => "starttls",
        Security::Tls => "tls",
        Security::None => "none",
    }
}

#[derive(Template)]
#[template(path = "mail.html")]
pub struct MailPage {
    pub c: Chrome,
    pub f: MailFields,
}

pub async fn mail_page(State(app): State<Arc<App>>, user: PageUser, Query(q): Q) -> Response {
    let mut c = Chrome::new(&app, &user.language, Some(&user), "mail", "/settings/mail");
    if q.contains_key("saved") {
        c.flash = Flash::ok(c.t.mail_saved);
    } else if q.contains_key("sent") {
        c.flash = Flash::ok(c.t.mail_sent);
    }
    let f = MailFields::from(settings::mail_view(&app));
    render(StatusCode::OK, &MailPage { c, f })
}

#[derive(Deserialize)]
pub struct MailForm {
    csrf: String,
    host: String,
    port: String,
    security: String,
    #[serde(default)]
    user: String,
    #[serde(default)]
    password: String,
    sender: String,
    #[serde(default)]
    recipients: String,
}

fn mail_update(form: &MailForm) -> Result<MailUpdate, AppError> {
    let security = match form.security.as_str() {
        "starttls" => Security::Starttls,
        "tls" => Security::Tls,
        "none" => Security::None,
        other => {
            return Err(AppError::Invalid(format!(
                "security: {other:?} is not starttls, tls or none"
            )));
        }
    };
    Ok(MailUpdate {
        host: form.host.clone(),
        port: number("port", &form.port)?,
        security,
        user: Some(form.user.clone()),
        // An empty password field keeps the stored password.
        password: Some(form.password.clone()).filter(|p| !p.is_empty()),
        sender: form.sender.clone(),
        recipients: lines(&form.recipients),
    })
}

pub async fn save_mail(
    State(app): State<Arc<App>>,
    user: PageUser,
    PageForm(form): PageForm<MailForm>,
) -> Response {
    let result = user
        .check_csrf(&form.csrf)
        .and_then(|()| mail_update(&form))
        .and_then(|update| settings::update_mail(&app, &user.name, update));
    match result {
        Ok(_) => Redirect::to("/settings/mail?saved=1").into_response(),
        Err(e) => {
            let c = Chrome::new(&app, &user.language, Some(&user), "mail", "/settings/mail")
                .with_error(&e);
            let f = MailFields {
                host: form.host,
                port: form.port,
                security: match form.security.as_str() {
                    "tls" => "tls",
                    "none" => "none",
                    _ => "starttls",
                },
                user: form.user,
                password_set: settings::mail_view(&app).password_set,
                sender: form.sender,
                recipients: form.recipients,
            };
            render(status_of(&e), &MailPage { c, f })
        }
    }
}

#[derive(Deserialize)]
pub struct TestMailForm {
    csrf: String,
    #[serde(default)]
    to: String,
}

pub async fn test_mail(
    State(app): State<Arc<App>>,
    user: PageUser,
    PageForm(form): PageForm<TestMailForm>,
) -> Response {
    let result = match user.check_csrf(&form.csrf) {
        Ok(()) => settings::send_test_mail(&app, Some(form.to), &user.language).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(_) => Redirect::to("/settings/mail?sent=1").into_response(),
        Err(e) => {
            let c = Chrome::new(&app, &user.language, Some(&user), "mail", "/settings/mail")
                .with_error(&e);
            let f = MailFields::from(settings::mail_view(&app));
            render(status_of(&e), &MailPage { c, f })
        }
    }
}

// ---- plans ----

#[derive(Template)]
#[template(path = "plans.html")]
pub struct PlansPage {
    pub c: Chrome,
    pub plans: Vec<Plan>,
}

pub async fn plans_page(State(app): State<Arc<App>>, user: PageUser) -> Response {
    match settings::plans(&app) {
        Ok(plans) => render(
            StatusCode::OK,
            &PlansPage {
                c: Chrome::new(
                    &app,
                    &user.language,
                    Some(&user),
                    "plans",
                    "/settings/plans",
                ),
                plans,
            },
        ),
        Err(e) => e.into_response(),
    }
}

/// The plan form's values as shown.
pub struct PlanFields {
    pub id: String,
    pub kind: String,
    pub name: String,
    pub enabled: bool,
    pub interval_hours: String,
    pub window_start: String,
    pub window_end: String,
    pub full_every_days: String,
    pub keep_within_days: String,
    pub keep_last: String,
    pub keep_weekly: String,
    pub keep_monthly: String,
    pub selections: String,
    pub excludes: String,
}

impl From<&Plan> for PlanFields {
    fn from(p: &Plan) -> Self {
        let s = &p.settings;
        PlanFields {
            id: p.id.clone(),
            kind: serde_json::to_value(p.kind)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default(),
            name: s.name.clone(),
            enabled: s.enabled,
            interval_hours: s.interval_hours.to_string(),
            window_start: s.window.start.clone(),
            window_end: s.window.end.clone(),
            full_every_days: s.full_every_days.to_string(),
            keep_within_days: s.retention.keep_within_days.to_string(),
            keep_last: s.retention.keep_last.to_string(),
            keep_weekly: s.retention.keep_weekly.to_string(),
            keep_monthly: s.retention.keep_monthly.to_string(),
            selections: s.selections.join("\n"),
            excludes: s.excludes.join("\n"),
        }
    }
}

#[derive(Template)]
#[template(path = "plan.html")]
pub struct PlanPage {
    pub c: Chrome,
    pub f: PlanFields,
}

pub async fn plan_page(
    State(app): State<Arc<App>>,
    user: PageUser,
    Path(id): Path<String>,
    Query(q): Q,
) -> Response {
    let path = format!("/settings/plans/{id}");
    let plan = match settings::plan(&app, &id) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let mut c = Chrome::new(&app, &user.language, Some(&user), "plans", &path);
    if q.contains_key("saved") {
        c.flash = Flash::ok(c.t.plan_saved);
    }
    render(
        StatusCode::OK,
        &PlanPage {
            c,
            f: PlanFields::from(&plan),
        },
    )
}

#[derive(Deserialize)]
pub struct PlanForm {
    csrf: String,
    name: String,
    /// A checkbox: present (any value) when ticked.
    #[serde(default)]
    enabled: Option<String>,
    interval_hours: String,
    window_start: String,
    window_end: String,
    full_every_days: String,
    keep_within_days: String,
    keep_last: String,
    keep_weekly: String,
    keep_monthly: String,
    #[serde(default)]
    selections: String,
    #[serde(default)]
    excludes: String,
}

fn plan_settings(form: &PlanForm) -> Result<PlanSettings, AppError> {
    Ok(PlanSettings {
        name: form.name.trim().to_string(),
        enabled: form.enabled.is_some(),
        interval_hours: number("interval_hours", &form.interval_hours)?,
        window: Window {
            start: form.window_start.trim().to_string(),
            end: form.window_end.trim().to_string(),
        },
        full_every_days: number("full_every_days", &form.full_every_days)?,
        retention: Retention {
            keep_within_days: number("keep_within_days", &form.keep_within_days)?,
            keep_last: number("keep_last", &form.keep_last)?,
            keep_weekly: number("keep_weekly", &form.keep_weekly)?,
            keep_monthly: number("keep_monthly", &form.keep_monthly)?,
        },
        selections: lines(&form.selections),
        excludes: lines(&form.excludes),
    })
}

pub async fn save_plan(
    State(app): State<Arc<App>>,
    user: PageUser,
    Path(id): Path<String>,
    PageForm(form): PageForm<PlanForm>,
) -> Response {
    let result = user
        .check_csrf(&form.csrf)
        .and_then(|()| plan_settings(&form))
        .and_then(|s| settings::update_plan(&app, &user.name, &id, s));
    let path = format!("/settings/plans/{id}");
    match result {
        Ok(_) => Redirect::to(&format!("{path}?saved=1")).into_response(),
        Err(e) => {
            let kind = settings::plan(&app, &id)
                .map(|p| PlanFields::from(&p).kind)
                .unwrap_or_default();
            let c = Chrome::new(&app, &user.language, Some(&user), "plans", &path).with_error(&e);
            let f = PlanFields {
                id,
                kind,
                name: form.name,
                enabled: form.enabled.is_some(),
                interval_hours: form.interval_hours,
                window_start: form.window_start,
                window_end: form.window_end,
                full_every_days: form.full_every_days,
                keep_within_days: form.keep_within_days,
                keep_last: form.keep_last,
                keep_weekly: form.keep_weekly,
                keep_monthly: form.keep_monthly,
                selections: form.selections,
                excludes: form.excludes,
            };
            render(status_of(&e), &PlanPage { c, f })
        }
    }
}

// ---- the box ----

#[derive(Template)]
#[template(path = "box.html")]
pub struct BoxPage {
    pub c: Chrome,
    pub info: boxinfo::BoxInfo,
    pub fingerprint: String,
    pub uptime: String,
    pub disks: Vec<DiskRow>,
}

fn human_duration(secs: u64) -> String {
    let (d, h, m) = (secs / 86400, secs % 86400 / 3600, secs % 3600 / 60);
    if d > 0 {
        format!("{d} d {h} h")
    } else if h > 0 {
        format!("{h} h {m} min")
    } else {
        format!("{m} min")
    }
}

pub async fn box_page(State(app): State<Arc<App>>, user: PageUser) -> Response {
    let info = match boxinfo::box_info(&app) {
        Ok(i) => i,
        Err(e) => return AppError::from(e).into_response(),
    };
    let page = BoxPage {
        c: Chrome::new(&app, &user.language, Some(&user), "box", "/settings/box"),
        fingerprint: abri_proto::pin::display_fingerprint(&info.fingerprint),
        uptime: human_duration(info.uptime_seconds),
        disks: info.disks.iter().map(DiskRow::from).collect(),
        info,
    };
    render(StatusCode::OK, &page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(59), "0 min");
        assert_eq!(human_duration(3 * 3600 + 120), "3 h 2 min");
        assert_eq!(human_duration(2 * 86400 + 3600), "2 d 1 h");
    }

    #[test]
    fn plan_form_numbers_name_their_field() {
        let form = PlanForm {
            csrf: String::new(),
            name: "Files".into(),
            enabled: None,
            interval_hours: "x".into(),
            window_start: "00:00".into(),
            window_end: "24:00".into(),
            full_every_days: "30".into(),
            keep_within_days: "90".into(),
            keep_last: "40".into(),
            keep_weekly: "0".into(),
            keep_monthly: "0".into(),
            selections: "/\n\n/home\n".into(),
            excludes: String::new(),
        };
        let err = plan_settings(&form).unwrap_err().to_string();
        assert!(err.contains("interval_hours"), "{err}");
        let ok = PlanForm {
            interval_hours: "6".into(),
            ..form
        };
        let s = plan_settings(&ok).unwrap();
        assert_eq!(s.selections, vec!["/".to_string(), "/home".to_string()]);
        assert!(!s.enabled, "an unticked box pauses the plan");
        let ticked = PlanForm {
            enabled: Some("on".into()),
            ..ok
        };
        assert!(plan_settings(&ticked).unwrap().enabled);
    }
}
