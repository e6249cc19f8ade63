//! The approval queue: every submitted quote awaiting a decision.

use axum::Router;

use crate::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
}
