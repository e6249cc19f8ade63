//! Serving the router over HTTP/1.1, with the two limits `axum::serve` does not
//! offer: how long a client may take to send a request's headers, and how many
//! connections are open at once.
//!
//! A connection is taken from the listener only while fewer than the cap are open;
//! past it, new connections wait in the kernel's accept queue until one closes. The
//! header timeout also closes a keep-alive connection that sends nothing, so a client
//! cannot hold one of the capped connections by sending a request slowly or by
//! sending none. Bodies are read by handlers, under the request timeout of the
//! middleware stack.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{ConnectInfo, Request};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;

/// How much a server lets its clients hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// A connection that has not sent a whole request head this long after it
    /// opened, or after its last response, is closed without an answer.
    pub header_read_timeout: Duration,
    /// Connections served at once; further ones wait to be accepted.
    pub max_connections: usize,
}

impl Default for Limits {
    /// 10 seconds, plenty for a browser, which sends its headers at once; 512
    /// connections, well inside the usual limit of 1,024 open files per process.
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 512,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` completes, then stops accepting
/// and waits for the open connections to finish their requests. Each request
/// carries the client's address as `ConnectInfo<SocketAddr>`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        if slots.available_permits() == 0 {
            tracing::warn!(
                limit = limits.max_connections,
                "every connection is in use; new ones wait until one closes"
            );
        }
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    wait_after_accept_error(error).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let service = router
            .clone()
            .map_request(move |mut request: Request<Incoming>| {
                request.extensions_mut().insert(ConnectInfo(client));
                request
            });
        let connection = graceful
            .watch(http.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service)));
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%client, %error, "connection closed");
            }
            // The connection's socket is closed by now; its slot is free.
            drop(slot);
        });
    }
    tracing::info!("shutting down: waiting for open requests");
    graceful.shutdown().await;
}

/// A failed accept: the client's own trouble (it reset the connection) needs no
/// pause; anything else (out of file descriptors, say) would fail again at once, so
/// wait a second, as `axum::serve` does.
async fn wait_after_accept_error(error: std::io::Error) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(%error, "cannot accept a connection; trying again in a second");
    tokio::time::sleep(Duration::from_secs(1)).await;
}
