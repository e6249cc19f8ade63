//! The static files, built into the binary and compressed once, on first use, with
//! the strongest setting (brotli and gzip): a request picks the smallest encoding its
//! `Accept-Encoding` allows. The compression layers leave a response that already
//! has a `Content-Encoding` alone; only a client that accepts neither (zstd alone,
//! say) gets a file compressed as it goes out.

use std::io::Write;
use std::sync::LazyLock;

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::compression::accepted_codings;

/// One static file in each encoding we serve.
pub struct Asset {
    content_type: &'static str,
    identity: &'static [u8],
    brotli: Vec<u8>,
    gzip: Vec<u8>,
}

pub static STYLESHEET: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        "text/css; charset=utf-8",
        include_bytes!("../../static/style.css"),
    )
});

pub static FAVICON: LazyLock<Asset> =
    LazyLock::new(|| Asset::new("image/svg+xml", include_bytes!("../../static/favicon.svg")));

/// How long browsers and proxies may keep a static file.
const CACHE_CONTROL: &str = "public, max-age=3600";

impl Asset {
    fn new(content_type: &'static str, identity: &'static [u8]) -> Asset {
        Asset {
            content_type,
            identity,
            brotli: brotli_of(identity),
            gzip: gzip_of(identity),
        }
    }

    /// The file in the smallest encoding the request accepts.
    pub fn respond(&'static self, request: &HeaderMap) -> Response {
        let accepts = |coding| accepts(request, coding);
        let (encoding, body): (Option<&str>, &'static [u8]) =
            if accepts("br") && self.brotli.len() < self.identity.len() {
                (Some("br"), &self.brotli)
            } else if accepts("gzip") && self.gzip.len() < self.identity.len() {
                (Some("gzip"), &self.gzip)
            } else {
                (None, self.identity)
            };
        let mut response = (
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, self.content_type),
                (header::CACHE_CONTROL, CACHE_CONTROL),
                (header::VARY, "accept-encoding"),
            ],
            Bytes::from_static(body),
        )
            .into_response();
        if let Some(encoding) = encoding {
            response
                .headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static(encoding));
        }
        response
    }
}

/// Whether `Accept-Encoding` allows `coding`: named (or `*`) with a q-value above
/// zero. An explicit entry for the coding wins over `*`.
fn accepts(request: &HeaderMap, coding: &str) -> bool {
    let mut wildcard = None;
    for (name, q) in accepted_codings(request) {
        if name.eq_ignore_ascii_case(coding) {
            return q > 0.0;
        }
        if name == "*" {
            wildcard = Some(q > 0.0);
        }
    }
    wildcard.unwrap_or(false)
}

fn brotli_of(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut writer = brotli::CompressorWriter::new(&mut out, 4096, 11, 22);
        writer
            .write_all(data)
            .expect("writing to memory cannot fail");
    }
    out
}

fn gzip_of(data: &[u8]) -> Vec<u8> {
    let mut writer = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    writer
        .write_all(data)
        .expect("writing to memory cannot fail");
    writer.finish().expect("writing to memory cannot fail")
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;

    fn asking(accept_encoding: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::ACCEPT_ENCODING,
            HeaderValue::from_str(accept_encoding).unwrap(),
        );
        headers
    }

    async fn body_of(response: Response) -> Vec<u8> {
        axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec()
    }

    #[tokio::test]
    async fn a_browser_gets_brotli_that_decodes_to_the_file() {
        let response = STYLESHEET.respond(&asking("gzip, deflate, br, zstd"));
        assert_eq!(response.headers()[header::CONTENT_ENCODING], "br");
        assert_eq!(response.headers()[header::VARY], "accept-encoding");
        let mut decoded = Vec::new();
        brotli::Decompressor::new(&body_of(response).await[..], 4096)
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, include_bytes!("../../static/style.css"));
    }

    #[tokio::test]
    async fn gzip_when_brotli_is_not_accepted() {
        let response = STYLESHEET.respond(&asking("gzip;q=0.5, br;q=0"));
        assert_eq!(response.headers()[header::CONTENT_ENCODING], "gzip");
        let mut decoded = Vec::new();
        flate2::read::GzDecoder::new(&body_of(response).await[..])
            .read_to_end(&mut decoded)
            .unwrap();
        assert_eq!(decoded, include_bytes!("../../static/style.css"));
    }

    #[tokio::test]
    async fn the_file_itself_without_an_accepted_encoding() {
        for asked in ["", "identity", "deflate", "*;q=0", "gzip;q=0"] {
            let response = STYLESHEET.respond(&asking(asked));
            assert!(
                !response.headers().contains_key(header::CONTENT_ENCODING),
                "{asked:?}"
            );
            assert_eq!(
                body_of(response).await,
                include_bytes!("../../static/style.css"),
                "{asked:?}"
            );
        }
    }

    #[test]
    fn a_wildcard_accepts_what_is_not_named() {
        assert!(accepts(&asking("*"), "br"));
        assert!(!accepts(&asking("br;q=0, *"), "br"));
        assert!(accepts(&asking("BR;q=0.1"), "br"));
    }
}
