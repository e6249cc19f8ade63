//! The pieces of the middleware stack that belong to no context: limits, security
//! headers, and an HTML page for every error response. The stack itself is
//! assembled in `app::middleware`, read top to bottom.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::AppError;

/// Forms here are small; anything bigger is refused before it is read.
pub const BODY_LIMIT: usize = 64 * 1024;
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// How long a browser that has seen the app over HTTPS reaches it only over HTTPS:
/// a year. Not `includeSubDomains`: the app does not speak for its domain's other
/// hosts.
pub const HSTS: &str = "max-age=31536000";

/// Headers that keep every page from being framed, sniffed, made to load or post
/// anywhere but here, or kept by a cache: pages show personal data, so nothing may
/// be stored unless its handler says so (the static files, `public`). Served over
/// HTTPS (the state, `true`), Strict-Transport-Security too. A header the handler
/// set is left as it is.
pub async fn security_headers(State(https): State<bool>, mut response: Response) -> Response {
    let headers = response.headers_mut();
    let hsts = https.then_some((header::STRICT_TRANSPORT_SECURITY, HSTS));
    for (name, value) in SECURITY_HEADERS.into_iter().chain(hsts) {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    response
}

const SECURITY_HEADERS: [(HeaderName, &str); 5] = [
    (
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::X_FRAME_OPTIONS, "DENY"),
    (header::REFERRER_POLICY, "same-origin"),
    (header::CACHE_CONTROL, "no-store"),
];

/// Error responses made by layers and extractors (a body over the limit, a form
/// that does not parse, a timeout) come without a page; give them ours.
pub async fn html_error_pages(response: Response) -> Response {
    let status = response.status();
    let is_error = status.is_client_error() || status.is_server_error();
    let is_html = response
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
    if !is_error || is_html {
        return response;
    }
    let (parts, _) = response.into_parts();
    let mut page = AppError::for_status(status).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            page.headers_mut().append(name.clone(), value.clone());
        }
    }
    page
}
