//! `GET /static/style.css` from axum and hyper alone: the stylesheet's bytes as they
//! are, with its content type, on tokio's default runtime, as `quoteline serve` runs.
//! What a request costs here is what any page of quoteline costs before its own
//! middleware and handler. Listens on `BIND` (default 127.0.0.1:3100); stops on
//! SIGINT, as `quoteline serve` does (a background job of a script ignores it
//! unless it is handled).

use axum::Router;
use axum::http::header;
use axum::routing::get;

static STYLESHEET: &str = include_str!("../../../static/style.css");

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let bind = std::env::var("BIND").unwrap_or_else(|_| "127.0.0.1:3100".to_owned());
    let app = Router::new().route(
        "/static/style.css",
        get(|| async {
            (
                [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
                STYLESHEET,
            )
        }),
    );
    let listener = tokio::net::TcpListener::bind(&bind).await?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
}
