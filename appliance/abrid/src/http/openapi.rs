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
    op("get", "/openapi.json", "This document", None, "Any", false),
];

fn schemas() -> Value {
    let s = |t: &str| json!({"type": t});
    let strings = json!({"type": "array", "items": {"type": "string"}});
    let obj = |props: Value, required: &[&str]| json!({"type": "object", "properties": props, "required": required, "additionalProperties": false});
    let plan_settings = obj(
        json!({
            "name": s("string"), "interval_hours": s("integer"),
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
    json!({
        "Error": obj(json!({"error": s("string"), "message": s("string")}), &["error", "message"]),
        "Empty": {},
        "Any": {},
        "Status": obj(json!({"hostname": s("string"), "fqdn": {"type": ["string", "null"]}, "fingerprint": s("string"), "activated": s("boolean"), "version": s("string")}), &["hostname", "fingerprint", "activated", "version"]),
        "ActivateRequest": obj(json!({"claim_code": s("string")}), &["claim_code"]),
        "IssuedPassword": obj(json!({"user": s("string"), "password": s("string"), "mailed_to_partner": s("boolean")}), &["user", "password", "mailed_to_partner"]),
        "LoginRequest": obj(json!({"user": s("string"), "password": s("string")}), &["user", "password"]),
        "LoginResponse": obj(json!({"user": s("string"), "csrf_token": s("string"), "language": s("string")}), &["user", "csrf_token", "language"]),
        "Account": obj(json!({"user": s("string"), "language": s("string"), "csrf_token": {"type": ["string", "null"]}}), &["user", "language"]),
        "PasswordChange": obj(json!({"current_password": s("string"), "new_password": s("string")}), &["current_password", "new_password"]),
        "LanguageChange": obj(json!({"language": {"enum": ["fr", "en"]}}), &["language"]),
        "BoxInfo": obj(json!({"hostname": s("string"), "fqdn": {"type": ["string", "null"]}, "fingerprint": s("string"), "activated": s("boolean"), "version": s("string"), "interface": {"type": ["string", "null"]}, "mac": s("string"), "addresses": strings.clone(), "uptime_seconds": s("integer"), "dev_mode": s("boolean"), "disks": {"type": "array", "items": obj(json!({"mount": s("string"), "device": s("string"), "fs_type": s("string"), "total_bytes": s("integer"), "free_bytes": s("integer")}), &["mount", "total_bytes", "free_bytes"])}}), &["hostname", "fingerprint", "activated"]),
        "MailView": obj(json!({"host": {"type": ["string", "null"]}, "port": s("integer"), "security": security.clone(), "user": {"type": ["string", "null"]}, "password_set": s("boolean"), "sender": s("string"), "recipients": strings.clone()}), &["host", "port", "security", "password_set", "sender", "recipients"]),
        "MailUpdate": obj(json!({"host": s("string"), "port": s("integer"), "security": security, "user": {"type": ["string", "null"]}, "password": {"type": ["string", "null"], "description": "absent: keep; empty: clear"}, "sender": s("string"), "recipients": strings.clone()}), &["host", "port", "security", "sender", "recipients"]),
        "TestMail": obj(json!({"to": {"type": ["string", "null"]}}), &[]),
        "TestMailSent": obj(json!({"sent": s("boolean"), "recipients": strings}), &["sent", "recipients"]),
        "PlanSettings": plan_settings,
        "Plan": plan,
        "PlanList": {"type": "array", "items": {"$ref": "#/components/schemas/Plan"}},
        "NewToken": obj(json!({"name": s("string")}), &["name"]),
        "Token": obj(json!({"id": s("string"), "name": s("string"), "created": s("integer"), "token": s("string")}), &["id", "name", "created"]),
        "TokenList": {"type": "array", "items": {"$ref": "#/components/schemas/Token"}},
        "AuditList": {"type": "array", "items": obj(json!({"time": s("integer"), "actor": s("string"), "action": s("string"), "detail": s("string")}), &["time", "actor", "action", "detail"])},
    })
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
        if path.contains("{id}") {
            op["parameters"] = json!([{"name": "id", "in": "path", "required": true, "schema": {"type": "string"}}]);
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
