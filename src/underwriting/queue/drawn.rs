//! Approval queue pages as drawn for each session, sent again without reading or
//! rendering anything while nothing has moved.
//!
//! A page is kept by the session it was drawn for (its form token is on the page),
//! its address and its encoding (zstd for a client that prefers it, else the page
//! as it is, which the compression layer then encodes), with the heads feed's epoch
//! from before it was read. It is sent again while the feed is live and its epoch
//! has not moved (a quote moved by this process moves it before the command
//! answers; another process's append once the feed tells), and for at most
//! [`KEEP_DRAWN`], since the page says how long each quote has waited. Any stream
//! that moves draws every page again, a queued quote or not.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::http::{HeaderValue, header};
use axum::response::Response;

use crate::eventstore::HeadsFeed;
use crate::web::compression;

/// How long a drawn page is sent again at most: its waiting times are in minutes.
pub const KEEP_DRAWN: Duration = Duration::from_secs(5);
/// The drawn pages kept at most, by their bodies' bytes.
const DRAWN_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Clone)]
pub struct DrawnPages(moka::future::Cache<DrawnKey, Arc<Drawn>>);

impl Default for DrawnPages {
    fn default() -> Self {
        DrawnPages(
            moka::future::Cache::builder()
                .max_capacity(DRAWN_BYTES)
                .weigher(|_key: &DrawnKey, drawn: &Arc<Drawn>| {
                    u32::try_from(drawn.body.len()).unwrap_or(u32::MAX)
                })
                .time_to_live(KEEP_DRAWN)
                .build(),
        )
    }
}

/// A session (its form token), the page's address, and whether the client prefers
/// zstd.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct DrawnKey {
    pub session: String,
    pub query: String,
    pub zstd: bool,
}

struct Drawn {
    /// The heads feed's epoch from before the page was read.
    epoch: u64,
    body: Bytes,
    zstd: bool,
}

impl DrawnPages {
    /// The page drawn for `key`, if the feed is live and nothing moved since.
    pub async fn again(&self, feed: Option<&HeadsFeed>, key: &DrawnKey) -> Option<Response> {
        let feed = feed.filter(|feed| feed.is_live())?;
        let drawn = self.0.get(key).await?;
        (drawn.epoch == feed.epoch()).then(|| drawn.response())
    }

    /// The feed's epoch, taken before a page is read, if the feed is live.
    pub fn epoch(feed: Option<&HeadsFeed>) -> Option<u64> {
        feed.filter(|feed| feed.is_live()).map(HeadsFeed::epoch)
    }

    /// The response for `html`, encoded as `key` says; kept when the feed is live
    /// and its epoch still `epoch` (nothing moved while the page was read and drawn).
    pub async fn keep(
        &self,
        feed: Option<&HeadsFeed>,
        epoch: Option<u64>,
        key: DrawnKey,
        html: String,
    ) -> Response {
        let compressed = key
            .zstd
            .then(|| compression::compress(html.as_bytes()).ok())
            .flatten()
            .filter(|compressed| compressed.len() < html.len());
        let drawn = Arc::new(Drawn {
            epoch: epoch.unwrap_or_default(),
            zstd: compressed.is_some(),
            body: compressed.map_or_else(|| Bytes::from(html), Bytes::from),
        });
        if let (Some(feed), Some(epoch)) = (feed, epoch)
            && feed.is_live()
            && feed.epoch() == epoch
        {
            self.0.insert(key, Arc::clone(&drawn)).await;
        }
        drawn.response()
    }
}

impl Drawn {
    fn response(&self) -> Response {
        let mut response = Response::new(Body::from(self.body.clone()));
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        headers.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
        if self.zstd {
            headers.insert(header::CONTENT_ENCODING, HeaderValue::from_static("zstd"));
        }
        response
    }
}
