//! The OpenAPI 3.1 description of `/api/v1`, served at `/api/v1/openapi.json`.
//!
//! Written by hand from [`OPERATIONS`]; a test checks that every operation the router serves
//! is described here, so the two cannot drift apart silently.

use axum::Json;
use serde_json::{Value, json};

/// One API operation as documented.
pub struct Operation {
    pub method: &'static str,
    pub path: &'static str,
    pub summary: &'static str,
    pub request: Option<&'static str>,
    pub response: &'static str,
    pub needs_auth: bool,
}

const fn op(
    method: &'static str,
    path: &'static str,
    summary: &'static str,
    request: Option<&'static str>,
    response: &'static str,
    needs_auth: bool,
) -> Operation {
    Operation {
        method,
        path,
        summary,
        request,
        response,
        needs_auth,
    }
}

pub const OPERATIONS: &[Operation] = &[
    op(
        "get",
        "/status",
        "What anyone on the LAN may know about the box",
        None,
        "Status",
        false,
    ),
    op(
        "post",
        "/activate",
        "Activate the box with its claim code; returns the admin password once",
        Some("ActivateRequest"),
        "IssuedPassword",
        false,
    ),
    op(
        "post",
        "/login",
        "Open a session (cookie abri_session)",
        Some("LoginRequest"),
        "LoginResponse",
        false,
    ),
    op("post", "/logout", "Close the session", None, "Empty", true),
    op(
        "get",
        "/account",
        "The caller's account and CSRF token",
        None,
        "Account",
        true,
    ),
    op(
        "post",
        "/account/password",
        "Change the caller's password",
        Some("PasswordChange"),
        "Empty",
        true,
    ),
    op(
        "put",
        "/account/language",
        "Set the caller's console language",
        Some("LanguageChange"),
        "Empty",
        true,
    ),
    op(
        "get",
        "/box",
        "The box: names, fingerprint, addresses, version, uptime, disks",
        None,
        "BoxInfo",
        true,
    ),
    op(
        "get",
        "/settings/mail",
        "The mail relay settings (never the password)",
        None,
        "MailView",
        true,
    ),
    op(
        "put",
        "/settings/mail",
        "Change the mail relay settings",
        Some("MailUpdate"),
        "MailView",
        true,
    ),
    op(
        "post",
        "/settings/mail/test",
        "Send a test mail",
        Some("TestMail"),
        "TestMailSent",
        true,
    ),
    op(
        "get",
        "/plans",
        "The default backup plans",
        None,
        "PlanList",
        true,
    ),
    op("get", "/plans/{id}", "One plan", None, "Plan", true),
    op(
        "put",
        "/plans/{id}",
        "Edit a plan",
        Some("PlanSettings"),
        "Plan",
        true,
    ),
    op(
        "get",
        "/tokens",
        "API tokens (without their secrets)",
        None,
        "TokenList",
        true,
    ),
    op(
        "post",
        "/tokens",
        "Create an API token; the secret is shown once",
        Some("NewToken"),
        "Token",
        true,
    ),
    op(
        "delete",
        "/tokens/{id}",
        "Revoke an API token",
        None,
        "Empty",
        true,
    ),
    op(
        "get",
        "/audit",
        "The newest audit events",
        None,
        "AuditList",
        true,
    ),
    op(
        "get",
        "/enrolment-tokens",
        "Enrolment tokens for agents (without their secrets)",
        None,
        "EnrolTokenList",
        true,
    ),
    op(
        "post",
        "/enrolment-tokens",
        "Create an enrolment token; the secret is shown once",
        Some("NewEnrolToken"),
        "EnrolToken",
        true,
    ),
    op(
        "delete",
        "/enrolment-tokens/{id}",
        "Revoke an enrolment token",
        None,
        "Empty",
        true,
    ),
    op(
        "post",
        "/enrolment-tokens/windows-installer",
        "The Windows installer (application/x-msi) with the box's address, fingerprint and this token built in",
        Some("WindowsKit"),
        "Any",
        true,
    ),
    op(
        "get",
        "/machines",
        "Enrolled machines",
        None,
        "MachineList",
        true,
    ),
    op(
        "get",
        "/machines/{id}",
        "One machine",
        None,
        "Machine",
        true,
    ),
    op(
        "post",
        "/machines/{id}/revoke",
        "Revoke a machine's key; its backups are kept",
        None,
        "Empty",
        true,
    ),
    op(
        "post",
        "/machines/{id}/backup",
        "Queue a backup of the machine now",
        Some("BackupNow"),
        "Job",
        true,
    ),
    op(
        "get",
        "/machines/{id}/jobs",
        "The machine's jobs, newest first",
        None,
        "JobList",
        true,
    ),
    op(
        "get",
        "/jobs",
        "Jobs queued or running, with live progress",
        None,
        "JobList",
        true,
    ),
    op(
        "get",
        "/jobs/{id}",
        "One job with its progress and log",
        None,
        "Job",
        true,
    ),
    op(
        "post",
        "/jobs/{id}/cancel",
        "Cancel a queued or running job",
        None,
        "Empty",
        true,
    ),
    op(
        "get",
        "/system/firmware",
        "The running firmware, its slots and the last update",
        None,
        "Any",
        true,
    ),
    op(
        "post",
        "/system/update",
        "Install a signed update bundle (the body, application/octet-stream); the box reboots into it",
        None,
        "Any",
        true,
    ),
    op(
        "post",
        "/system/reboot",
        "Reboot the box",
        None,
        "Empty",
        true,
    ),
    op(
        "get",
        "/system/disks",
        "The disks and whether they can become the backup disk",
        None,
        "Any",
        true,
    ),
    op(
        "post",
        "/system/disks/{id}/adopt",
        "Format a disk as the backup disk (confirm: true when it holds anything)",
        Some("Any"),
        "Any",
        true,
    ),
    op("get", "/openapi.json", "This document", None, "Any", false),
];

fn schemas() -> Value {
    let s = |t: &str| json!({"type": t});
    let strings = json!({"type": "array", "items": {"type": "string"}});
    let obj = |props: Value, required: &[&str]| json!({"type": "object", "properties": props, "required": required, "additionalProperties": false});
    let plan_settings = obj(
        json!({
            "name": s("string"), "enabled": s("boolean"), "interval_hours": s("integer"),
            "window": obj(json!({"start": s("string"), "end": s("string")}), &["start", "end"]),
            "full_every_days": s("integer"),
            "retention": obj(json!({"keep_within_days": s("integer"), "keep_last": s("integer"), "keep_weekly": s("integer"), "keep_monthly": s("integer")}), &["keep_within_days", "keep_last", "keep_weekly", "keep_monthly"]),
            "selections": strings.clone(), "excludes": strings.clone()
        }),
        &[
            "name",
            "interval_hours",
            "window",
            "full_every_days",
            "retention",
            "selections",
            "excludes",
        ],
    );
    let mut plan = plan_settings.clone();
    plan["properties"]["id"] = s("string");
    plan["properties"]["kind"] = json!({"enum": ["files", "image"]});
    let security = json!({"enum": ["starttls", "tls", "none"]});
    let mut schemas = serde_json::Map::new();
    schemas.insert(
        "WindowsKit".into(),
        obj(
            json!({"token": s("string"), "box_url": s("string")}),
            &["token"],
        ),
    );
    schemas.insert(
        "Error".into(),
        obj(
            json!({"error": s("string"), "message": s("string")}),
            &["error", "message"],
        ),
    );
    schemas.insert("Empty".into(), json!({}));
    schemas.insert("Any".into(), json!({}));
    schemas.insert("Status".into(), obj(json!({"hostname": s("string"), "fqdn": {"type": ["string", "null"]}, "fingerprint": s("string"), "activated": s("boolean"), "version": s("string")}), &["hostname", "fingerprint", "activated", "version"]));
    schemas.insert(
        "ActivateRequest".into(),
        obj(json!({"claim_code": s("string")}), &["claim_code"]),
    );
    schemas.insert("IssuedPassword".into(), obj(json!({"user": s("string"), "password": s("string"), "mailed_to_partner": s("boolean")}), &["user", "password", "mailed_to_partner"]));
    schemas.insert(
        "LoginRequest".into(),
        obj(
            json!({"user": s("string"), "password": s("string")}),
            &["user", "password"],
        ),
    );
    schemas.insert(
        "LoginResponse".into(),
        obj(
            json!({"user": s("string"), "csrf_token": s("string"), "language": s("string")}),
            &["user", "csrf_token", "language"],
        ),
    );
    schemas.insert("Account".into(), obj(json!({"user": s("string"), "language": s("string"), "csrf_token": {"type": ["string", "null"]}}), &["user", "language"]));
    schemas.insert(
        "PasswordChange".into(),
        obj(
            json!({"current_password": s("string"), "new_password": s("string")}),
            &["current_password", "new_password"],
        ),
    );
    schemas.insert(
        "LanguageChange".into(),
        obj(json!({"language": {"enum": ["fr", "en"]}}), &["language"]),
    );
    schemas.insert("BoxInfo".into(), obj(json!({"hostname": s("string"), "fqdn": {"type": ["string", "null"]}, "fingerprint": s("string"), "activated": s("boolean"), "version": s("string"), "interface": {"type": ["string", "null"]}, "mac": s("string"), "addresses": strings.clone(), "uptime_seconds": s("integer"), "dev_mode": s("boolean"), "disks": {"type": "array", "items": obj(json!({"mount": s("string"), "device": s("string"), "fs_type": s("string"), "total_bytes": s("integer"), "free_bytes": s("integer")}), &["mount", "total_bytes", "free_bytes"])}}), &["hostname", "fingerprint", "activated"]));
    schemas.insert("MailView".into(), obj(json!({"host": {"type": ["string", "null"]}, "port": s("integer"), "security": security.clone(), "user": {"type": ["string", "null"]}, "password_set": s("boolean"), "sender": s("string"), "recipients": strings.clone()}), &["host", "port", "security", "password_set", "sender", "recipients"]));
    schemas.insert("MailUpdate".into(), obj(json!({"host": s("string"), "port": s("integer"), "security": security, "user": {"type": ["string", "null"]}, "password": {"type": ["string", "null"], "description": "absent: keep; empty: clear"}, "sender": s("string"), "recipients": strings.clone()}), &["host", "port", "security", "sender", "recipients"]));
    schemas.insert(
        "TestMail".into(),
        obj(json!({"to": {"type": ["string", "null"]}}), &[]),
    );
    schemas.insert(
        "TestMailSent".into(),
        obj(
            json!({"sent": s("boolean"), "recipients": strings}),
            &["sent", "recipients"],
        ),
    );
    schemas.insert("PlanSettings".into(), plan_settings);
    schemas.insert("Plan".into(), plan);
    schemas.insert(
        "PlanList".into(),
        json!({"type": "array", "items": {"$ref": "#/components/schemas/Plan"}}),
    );
    schemas.insert(
        "NewToken".into(),
        obj(json!({"name": s("string")}), &["name"]),
    );
    schemas.insert("Token".into(), obj(json!({"id": s("string"), "name": s("string"), "created": s("integer"), "token": s("string")}), &["id", "name", "created"]));
    schemas.insert(
        "TokenList".into(),
        json!({"type": "array", "items": {"$ref": "#/components/schemas/Token"}}),
    );
    schemas.insert(
        "NewEnrolToken".into(),
        obj(
            json!({"name": s("string"), "days": s("integer")}),
            &["name"],
        ),
    );
    schemas.insert("EnrolToken".into(), obj(json!({"id": s("string"), "name": s("string"), "created": s("integer"), "expires": s("integer"), "uses": s("integer"), "revoked": s("boolean"), "token": s("string")}), &["id", "name", "created", "expires", "uses", "revoked"]));
    schemas.insert(
        "EnrolTokenList".into(),
        json!({"type": "array", "items": {"$ref": "#/components/schemas/EnrolToken"}}),
    );
    schemas.insert("Machine".into(), obj(json!({"id": s("string"), "hostname": s("string"), "os": s("string"), "agent_version": s("string"), "enrolled": s("integer"), "last_seen": s("integer"), "revoked": s("boolean")}), &["id", "hostname", "os", "agent_version", "enrolled", "last_seen", "revoked"]));
    schemas.insert(
        "MachineList".into(),
        json!({"type": "array", "items": {"$ref": "#/components/schemas/Machine"}}),
    );
    schemas.insert(
        "BackupNow".into(),
        obj(json!({"plan": s("string"), "full": s("boolean")}), &[]),
    );
    schemas.insert("Job".into(), json!({"type": "object", "properties": {"id": s("string"), "machine": s("string"), "kind": {"enum": ["backup", "restore"]}, "plan": s("string"), "full": s("boolean"), "trigger": s("string"), "state": {"enum": ["queued", "running", "succeeded", "failed", "cancelled"]}, "created": s("integer"), "started": {"type": ["integer", "null"]}, "finished": {"type": ["integer", "null"]}, "progress": {"type": "object"}, "log": strings.clone(), "snapshot": {"type": ["string", "null"]}, "error": {"type": ["string", "null"]}, "cancel_requested": s("boolean")}}));
    schemas.insert(
        "RestoreRequest".into(),
        obj(
            json!({"snapshot": s("string"), "paths": strings.clone(), "target": s("string")}),
            &["snapshot", "target"],
        ),
    );
    schemas.insert(
        "SnapshotList".into(),
        json!({"type": "array", "items": {"type": "object", "properties": {"id": s("string"), "kind": s("string"), "plan": s("string"), "started": s("integer"), "finished": s("integer"), "full": s("boolean"), "stats": {"type": "object"}}}}),
    );
    schemas.insert(
        "DirList".into(),
        json!({"type": "array", "items": obj(json!({"name": s("string"), "path": s("string"), "kind": {"enum": ["file", "dir", "symlink", "fifo", "socket", "device"]}, "size": s("integer"), "mtime": s("integer")}), &["name", "path", "kind", "size", "mtime"])}),
    );
    schemas.insert(
        "JobList".into(),
        json!({"type": "array", "items": {"$ref": "#/components/schemas/Job"}}),
    );
    schemas.insert("AuditList".into(), json!({"type": "array", "items": obj(json!({"time": s("integer"), "actor": s("string"), "action": s("string"), "detail": s("string")}), &["time", "actor", "action", "detail"])}));
    Value::Object(schemas)
}

pub fn build() -> Value {
    let mut paths = serde_json::Map::new();
    for Operation {
        method,
        path,
        summary,
        request,
        response,
        needs_auth: auth,
    } in OPERATIONS
    {
        let reference = |name: &str| json!({"$ref": format!("#/components/schemas/{name}")});
        let mut op = json!({
            "summary": summary,
            "responses": {
                "200": {"description": "success", "content": {"application/json": {"schema": reference(response)}}},
                "default": {"description": "error", "content": {"application/json": {"schema": reference("Error")}}}
            }
        });
        if let Some(req) = request {
            op["requestBody"] = json!({"required": *req != "TestMail", "content": {"application/json": {"schema": reference(req)}}});
        }
        let params: Vec<Value> = ["id", "snapshot"]
            .iter()
            .filter(|p| path.contains(&format!("{{{p}}}")))
            .map(|p| json!({"name": p, "in": "path", "required": true, "schema": {"type": "string"}}))
            .collect();
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        if !auth {
            op["security"] = json!([]);
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": {"title": "Abri box API", "version": crate::app::VERSION,
                 "description": "The JSON API of an Abri backup box. Authenticate with the abri_session cookie (plus the X-CSRF-Token header on state-changing calls) or with an API token as a bearer token."},
        "servers": [{"url": "/api/v1"}],
        "security": [{"session": []}, {"token": []}],
        "paths": paths,
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "session": {"type": "apiKey", "in": "cookie", "name": "abri_session"},
                "token": {"type": "http", "scheme": "bearer"}
            }
        }
    })
}

pub async fn document() -> Json<Value> {
    Json(build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_referenced_schema_exists() {
        let doc = build();
        let text = doc.to_string();
        for part in text.split("#/components/schemas/").skip(1) {
            let name: String = part
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric())
                .collect();
            assert!(
                doc["components"]["schemas"].get(&name).is_some(),
                "missing schema {name}"
            );
        }
    }
}
