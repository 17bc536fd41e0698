//! The HTTPS server (console + API on one port) and the plain-HTTP redirector.

pub mod agent_api;
pub mod api;
pub mod error;
pub mod extract;
pub mod listener;
pub mod openapi;
mod pages;
mod security;
pub mod system_api;

use crate::app::App;
use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Redirect, Response};
use std::sync::Arc;

/// The whole HTTPS application.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .nest(
            "/api/v1",
            api::routes()
                .nest("/agent", agent_api::routes())
                .nest("/system", system_api::routes()),
        )
        .merge(pages::routes())
        .layer(axum::middleware::from_fn(security::headers))
        .layer(axum::middleware::from_fn(security::same_origin))
        .layer(axum::middleware::from_fn(security::read_body_first))
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .with_state(app)
}

/// The plain-HTTP application: every request is sent to the same path over HTTPS.
pub fn redirector(https_port: u16, fallback_host: String) -> Router {
    Router::new().fallback(move |headers: axum::http::HeaderMap, uri: Uri| {
        let fallback_host = fallback_host.clone();
        async move {
            let host = headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(strip_port)
                .filter(|h| {
                    !h.is_empty()
                        && h.chars()
                            .all(|c| c.is_ascii_alphanumeric() || ".-[]:".contains(c))
                })
                .unwrap_or(fallback_host);
            let port = if https_port == 443 {
                String::new()
            } else {
                format!(":{https_port}")
            };
            let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
            Redirect::permanent(&format!("https://{host}{port}{path}")).into_response()
        }
    })
}

fn strip_port(host: &str) -> String {
    if let Some(rest) = host.strip_prefix('[') {
        // [v6]:port
        return rest
            .split(']')
            .next()
            .map(|h| format!("[{h}]"))
            .unwrap_or_default();
    }
    host.rsplit_once(':')
        .map(|(h, _)| h)
        .unwrap_or(host)
        .to_string()
}

pub fn internal_error_page() -> Response {
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal error: see the box's log",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::strip_port;
    use axum::body::Body;
    use axum::http::Request;
    use tower::ServiceExt;

    /// Every documented operation is routed: on a box not yet activated it answers with
    /// `not_activated` (or works, for the public ones), never with the router's fallback.
    #[tokio::test]
    async fn every_documented_operation_is_routed() {
        let dir = tempfile::tempdir().unwrap();
        let router = super::router(crate::app::test_app(dir.path()));
        for op in super::openapi::OPERATIONS {
            let path = format!(
                "/api/v1{}",
                op.path.replace("{id}", "x").replace("{snapshot}", "y")
            );
            let request = Request::builder()
                .method(op.method.to_uppercase().as_str())
                .uri(&path)
                .header("content-type", "application/json")
                .body(Body::from("{}"))
                .unwrap();
            let response = router.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            let text = String::from_utf8_lossy(&body);
            assert!(
                !text.contains("API route not found"),
                "{} {path} is documented but not routed",
                op.method
            );
            if op.needs_auth && op.path != "/login" {
                assert!(
                    text.contains("not_activated"),
                    "{} {path} answered {status} {text}",
                    op.method
                );
            }
        }
    }

    #[test]
    fn strips_ports_from_host_headers() {
        assert_eq!(strip_port("backup-abcd.local:8080"), "backup-abcd.local");
        assert_eq!(strip_port("backup-abcd.local"), "backup-abcd.local");
        assert_eq!(strip_port("[::1]:8080"), "[::1]");
        assert_eq!(strip_port("192.0.2.1:80"), "192.0.2.1");
    }
}
