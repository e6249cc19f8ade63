//! Pages compressed with zstd, from a compression context each thread keeps.
//!
//! tower-http's `CompressionLayer` makes every response a fresh compressor. For
//! zstd that is a context of over 1 MiB, allocated and cleared per response; for
//! brotli, hash tables and Huffman codes built from nothing, which cost half the
//! instructions of a task list (2 KB of HTML) and 40% of a queue page (35 KB). A
//! page here is rendered whole before it is sent, so it can be compressed in one
//! call, sized to the page, by a context that is set up once per thread: a
//! fraction of the cost. Clients that prefer zstd (today's Chrome, Edge and Firefox)
//! get that; the others (Safari) get tower-http's brotli or gzip, which sits
//! outside this layer and leaves an encoded response alone.

use std::cell::RefCell;

use axum::body::{Body, HttpBody};
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppError;

/// Smaller bodies cost more to compress than they save on the wire.
pub const MIN_BODY: u64 = 1024;
/// Larger bodies (none of the pages) are left to tower-http, which streams them
/// rather than holding them whole.
const MAX_BODY: u64 = 4 << 20;
/// zstd's fastest level with its full match finder: a 35 KB queue page shrinks
/// about as far as brotli's fastest takes it.
const LEVEL: i32 = 1;

thread_local! {
    /// Made on a thread's first page, then reused; zstd sizes each frame's tables
    /// to its page.
    static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { RefCell::new(None) };
}

/// Compresses the response with zstd when the client prefers it and the body is
/// text of a known size between [`MIN_BODY`] and 4 MiB, not already encoded.
pub async fn zstd_pages(request: Request, next: Next) -> Response {
    let wanted = prefers_zstd(request.headers());
    let response = next.run(request).await;
    if !wanted {
        return response;
    }
    let size = match response.body().size_hint().exact() {
        Some(size) if (MIN_BODY..=MAX_BODY).contains(&size) => size,
        _ => return response,
    };
    if !is_compressible(response.headers()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    // A body of exact size is held whole (a rendered page), so this read does not wait.
    let bytes = match axum::body::to_bytes(body, size as usize).await {
        Ok(bytes) => bytes,
        Err(error) => {
            tracing::error!(%error, "a response body failed before it was compressed");
            return AppError::for_status(axum::http::StatusCode::INTERNAL_SERVER_ERROR)
                .into_response();
        }
    };
    vary_on_accept_encoding(&mut parts.headers);
    match compress(&bytes) {
        Ok(compressed) if compressed.len() < bytes.len() => {
            parts
                .headers
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
            parts.headers.remove(header::CONTENT_LENGTH);
            Response::from_parts(parts, Body::from(compressed))
        }
        Ok(_) => Response::from_parts(parts, Body::from(bytes)),
        Err(error) => {
            tracing::warn!(%error, "zstd could not compress a page; it goes as it is");
            Response::from_parts(parts, Body::from(bytes))
        }
    }
}

/// `bytes` in one zstd frame, from this thread's context.
pub fn compress(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    COMPRESSOR.with_borrow_mut(|compressor| {
        let compressor = match compressor {
            Some(compressor) => compressor,
            None => compressor.insert(zstd::bulk::Compressor::new(LEVEL)?),
        };
        compressor.compress(bytes)
    })
}

/// Text (pages, CSV, JSON), with no encoding or range yet and nothing that forbids
/// changing it.
fn is_compressible(headers: &HeaderMap) -> bool {
    let text = headers.get(header::CONTENT_TYPE).is_some_and(|value| {
        let value = value.as_bytes();
        value.starts_with(b"text/") || value.starts_with(b"application/json")
    });
    let no_transform = headers
        .get_all(header::CACHE_CONTROL)
        .iter()
        .any(|value| contains_ignore_case(value.as_bytes(), b"no-transform"));
    text && !no_transform
        && !headers.contains_key(header::CONTENT_ENCODING)
        && !headers.contains_key(header::CONTENT_RANGE)
}

fn vary_on_accept_encoding(headers: &mut HeaderMap) {
    let varies = headers
        .get_all(header::VARY)
        .iter()
        .any(|value| contains_ignore_case(value.as_bytes(), b"accept-encoding"));
    if !varies {
        headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    }
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window.eq_ignore_ascii_case(needle))
}

/// Whether `Accept-Encoding` accepts zstd at least as readily as anything else it
/// names (br, gzip, deflate, identity, `*`); on a tie zstd wins, as in tower-http.
pub fn prefers_zstd(headers: &HeaderMap) -> bool {
    let mut zstd = 0.0_f32;
    let mut others = 0.0_f32;
    for (name, quality) in accepted_codings(headers) {
        if name.eq_ignore_ascii_case("zstd") {
            zstd = zstd.max(quality);
        } else {
            others = others.max(quality);
        }
    }
    zstd > 0.0 && zstd >= others
}

/// Each coding `Accept-Encoding` names, with its q-value (1 when it gives none). An
/// entry whose q-value is not a number from 0 to 1 is left out, as tower-http does.
pub fn accepted_codings(headers: &HeaderMap) -> impl Iterator<Item = (&str, f32)> {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|entry| {
            let mut parts = entry.split(';');
            let name = parts.next().unwrap_or("").trim();
            let quality = parts
                .filter_map(|p| {
                    let (key, value) = p.split_once('=')?;
                    key.trim().eq_ignore_ascii_case("q").then_some(value)
                })
                .map(|q| {
                    q.trim()
                        .parse::<f32>()
                        .ok()
                        .filter(|q| (0.0..=1.0).contains(q))
                })
                .next()
                .unwrap_or(Some(1.0))?;
            (!name.is_empty()).then_some((name, quality))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT_ENCODING, value.parse().unwrap());
        headers
    }

    #[test]
    fn zstd_is_chosen_when_the_client_likes_it_best_or_as_well_as_any() {
        assert!(prefers_zstd(&accept("gzip, deflate, br, zstd")));
        assert!(prefers_zstd(&accept("zstd")));
        assert!(prefers_zstd(&accept("ZSTD;q=0.5, gzip;q=0.5")));
        assert!(!prefers_zstd(&accept("gzip, deflate, br")));
        assert!(!prefers_zstd(&accept("br;q=1, zstd;q=0.8")));
        assert!(!prefers_zstd(&accept("zstd;q=0, gzip")));
        assert!(!prefers_zstd(&accept("zstd;q=0")));
        assert!(!prefers_zstd(&accept("zstd;Q=0")), "Q is q");
        assert!(!prefers_zstd(&accept("identity, zstd;q=0.5")));
        assert!(!prefers_zstd(&accept("x-gzip, zstd;q=0.5")));
        assert!(
            !prefers_zstd(&accept("zstd;q=2")),
            "a q-value above 1 leaves the entry out"
        );
        assert!(
            prefers_zstd(&accept("zstd, br;q=x")),
            "so does one that is no number"
        );
        assert!(!prefers_zstd(&HeaderMap::new()));
    }

    #[test]
    fn a_compressed_page_decodes_to_itself() {
        let page = "<tr><td>Asha</td><td>India</td></tr>\n".repeat(500);
        let compressed = compress(page.as_bytes()).unwrap();
        assert!(compressed.len() < page.len() / 10);
        // The context is reused: a second page comes out whole too.
        let other = "<p>Something else entirely.</p>".repeat(100);
        let again = compress(other.as_bytes()).unwrap();
        assert_eq!(zstd::decode_all(&compressed[..]).unwrap(), page.as_bytes());
        assert_eq!(zstd::decode_all(&again[..]).unwrap(), other.as_bytes());
    }
}
