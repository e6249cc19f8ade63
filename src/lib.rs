//! quoteline: quote capture, underwriting and audit over an event store in SQL.
//!
//! This file assembles the application: it opens the database, starts the event
//! store with every context's projections, and merges the contexts' routers under
//! the one middleware stack.

pub mod audit;
pub mod db;
pub mod demo;
pub mod eventstore;
pub mod identity;
pub mod quoting;
pub mod underwriting;
pub mod web;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use db::Db;
use eventstore::{EventStore, Projector};
use web::AppError;

/// Everything a request handler may need, cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub store: EventStore,
    pub quotes: quoting::QuoteService,
    pub sessions: identity::Sessions,
}

impl AppState {
    /// Applies migrations and starts the event store with every projection that
    /// must be kept in the append's transaction.
    pub async fn open(db: Db) -> anyhow::Result<AppState> {
        db.migrate().await?;
        let projectors: Vec<Arc<dyn Projector>> = vec![
            Arc::new(quoting::QuoteSummaryProjection),
            Arc::new(underwriting::queue::ApprovalQueueProjection),
            Arc::new(audit::TimelineProjection),
        ];
        let store = EventStore::new(db.clone(), projectors);
        let quotes = quoting::QuoteService::new(store.clone());
        let sessions = identity::Sessions::open(&db).await?;
        sessions.spawn_expired_deletion();
        Ok(AppState {
            db,
            store,
            quotes,
            sessions,
        })
    }
}

pub fn router(state: AppState) -> Router {
    let sessions = state.sessions.clone();
    let routes = Router::new()
        .merge(identity::router())
        .merge(quoting::pages::router())
        .merge(underwriting::router())
        .merge(audit::router())
        .route("/healthz", get(healthz))
        .route("/static/style.css", get(stylesheet))
        .route("/static/favicon.svg", get(favicon))
        .fallback(|| async { AppError::not_found() })
        .with_state(state);
    web::middleware::apply(routes, &sessions)
}

/// Liveness: the process answers and its database does too.
async fn healthz(State(state): State<AppState>) -> Result<&'static str, AppError> {
    on_backend!(&state.db, pool => sqlx::query("SELECT 1").execute(pool).await.map(drop))?;
    Ok("ok")
}

async fn stylesheet() -> impl IntoResponse {
    static_file(
        "text/css; charset=utf-8",
        include_str!("../static/style.css"),
    )
}

async fn favicon() -> impl IntoResponse {
    static_file("image/svg+xml", include_str!("../static/favicon.svg"))
}

fn static_file(content_type: &'static str, body: &'static str) -> impl IntoResponse {
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
}
