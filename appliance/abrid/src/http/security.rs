//! Middleware that applies to every HTTPS answer: security headers, and refusal of
//! state-changing requests sent by another site (an `Origin` that is not this box).

use axum::extract::Request;
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

pub async fn headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    let set = |h: &mut axum::http::HeaderMap, name: &'static str, value: &'static str| {
        h.insert(name, HeaderValue::from_static(value));
    };
    set(h, "strict-transport-security", "max-age=31536000");
    set(h, "x-content-type-options", "nosniff");
    set(h, "x-frame-options", "DENY");
    // Not `no-referrer`: with it browsers send `Origin: null` on form posts, which
    // `same_origin` must refuse; `same-origin` still keeps referrers off other sites.
    set(h, "referrer-policy", "same-origin");
    set(
        h,
        "content-security-policy",
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        set(h, "cache-control", "no-store");
    }
    response
}

/// A browser always sends `Origin` on cross-site POSTs; if it names another site, refuse.
pub async fn same_origin(request: Request, next: Next) -> Response {
    let safe = matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if !safe {
        let origin = request
            .headers()
            .get(header::ORIGIN)
            .and_then(|v| v.to_str().ok());
        // HTTP/2 carries the host in the URI's authority instead of a Host header.
        let host = request
            .headers()
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .or_else(|| request.uri().authority().map(|a| a.to_string()));
        if let Some(origin) = origin {
            let origin_host = origin.strip_prefix("https://").unwrap_or("");
            let same = host.is_some_and(|h| h.eq_ignore_ascii_case(origin_host));
            if !same {
                return crate::errors::AppError::Csrf.into_response();
            }
        }
    }
    next.run(request).await
}

/// The largest body a path takes: chunk uploads carry chunks, digest lists up to their
/// documented counts, everything else is a small form or JSON document.
fn body_limit(path: &str) -> usize {
    use super::agent_api::{FETCH_QUERY_LIMIT, MISSING_QUERY_LIMIT};
    match path {
        "/api/v1/agent/chunks" => abri_proto::batch::MAX_BATCH_BYTES,
        "/api/v1/agent/chunks/missing" => MISSING_QUERY_LIMIT,
        p if p.starts_with("/api/v1/agent/chunks/") => abri_store::MAX_CHUNK_LEN + 64,
        p if p.starts_with("/api/v1/agent/snapshots/") && p.ends_with("/chunks") => {
            FETCH_QUERY_LIMIT
        }
        _ => super::extract::BODY_LIMIT,
    }
}

/// Reads the whole request body (within the route's limit) before any handler or extractor
/// runs. A refusal sent while the client is still sending (a missing CSRF token, no
/// session) would otherwise leave unread bytes on an HTTP/1.1 connection, and the client's
/// next request on it would fail. A body over the limit is refused with 413 and the
/// connection closed.
pub async fn read_body_first(request: Request, next: Next) -> Response {
    if super::system_api::streams_body(request.uri().path()) {
        return next.run(request).await;
    }
    let limit = body_limit(request.uri().path());
    let http1 = request.version() <= axum::http::Version::HTTP_11;
    let (parts, body) = request.into_parts();
    match axum::body::to_bytes(body, limit).await {
        Ok(bytes) => {
            next.run(Request::from_parts(parts, axum::body::Body::from(bytes)))
                .await
        }
        Err(_) => {
            let mut response = crate::errors::AppError::TooLarge(limit).into_response();
            if http1 {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            response
        }
    }
}
