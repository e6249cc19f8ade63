//! `/metrics` in the Prometheus text format: requests by route and status with their
//! latency, appends and conflicts, group-commit batch sizes, and the NATS publisher's
//! lag, output and errors (README.md says what each means).
//!
//! The page is for the machines that watch the service: it answers a request from
//! this machine (loopback, and not relayed by a proxy) or one that carries the
//! configured bearer token, and no one else.

use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::Instant;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use subtle::ConstantTimeEq;

use crate::state::AppState;
use crate::web::AppError;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process's recorder, installed on first use (the apps of one test process
/// share it).
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let seconds = [
            0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
        ];
        let sizes = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
        let steps = [
            0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
        ];
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full("quoteline_http_request_duration_seconds".into()),
                &seconds,
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("quoteline_group_commit_batch_size".into()),
                    &sizes,
                )
            })
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Full("quoteline_group_commit_step_seconds".into()),
                    &steps,
                )
            })
            .unwrap_or_else(|_| PrometheusBuilder::new());
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("another metrics recorder is installed; /metrics stays empty");
        }
        handle
    })
}

/// Counts each request by method, route (its pattern, `/quotes/{id}`) and status,
/// and records how long it took.
pub async fn track(request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", MatchedPath::as_str)
        .to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("quoteline_http_requests_total",
        "method" => method.clone(), "route" => route.clone(), "status" => status)
    .increment(1);
    metrics::histogram!("quoteline_http_request_duration_seconds",
        "method" => method, "route" => route)
    .record(started.elapsed().as_secs_f64());
    response
}

/// Whether a request may read the metrics: it carries the configured bearer token,
/// or it comes from this machine directly (a request relayed by a proxy on this
/// machine comes from loopback too, and says so in its forwarding headers).
pub fn may_read(peer: Option<SocketAddr>, headers: &HeaderMap, token: Option<&str>) -> bool {
    if let Some(token) = token.filter(|t| !t.is_empty()) {
        let offered = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if offered.is_some_and(|offered| bool::from(offered.as_bytes().ct_eq(token.as_bytes()))) {
            return true;
        }
    }
    let relayed =
        headers.contains_key("x-forwarded-for") || headers.contains_key(header::FORWARDED);
    peer.is_some_and(|peer| peer.ip().is_loopback()) && !relayed
}

/// `GET /metrics`.
pub async fn page(State(state): State<AppState>, request: Request) -> Response {
    let peer = request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| *peer);
    if !may_read(peer, request.headers(), state.metrics_token.as_deref()) {
        return AppError::forbidden(
            "The metrics are read from this machine, or with the token configured in \
             QUOTELINE_METRICS_TOKEN.",
        )
        .into_response();
    }
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        handle().render(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_this_machine_or_the_token_reads_the_metrics() {
        let local: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let remote: SocketAddr = "203.0.113.9:5000".parse().unwrap();
        let none = HeaderMap::new();
        assert!(may_read(Some(local), &none, None));
        assert!(!may_read(Some(remote), &none, None));
        assert!(!may_read(None, &none, None));

        let mut relayed = HeaderMap::new();
        relayed.insert("x-forwarded-for", "203.0.113.9".parse().unwrap());
        assert!(
            !may_read(Some(local), &relayed, None),
            "through a local proxy"
        );

        let mut bearer = HeaderMap::new();
        bearer.insert(header::AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        assert!(may_read(Some(remote), &bearer, Some("s3cret")));
        assert!(!may_read(Some(remote), &bearer, Some("other")));
        assert!(!may_read(Some(remote), &bearer, None));
        assert!(
            !may_read(Some(remote), &bearer, Some("")),
            "an empty token is none"
        );
    }
}
