//! Underwriting: the approval queue projection and its page, and the underwriter's
//! decisions (approve, reject with a reason, refer back with a note).

pub mod decisions;
pub mod queue;

pub use decisions::quote_view;

use axum::Router;

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .merge(queue::router())
        .merge(decisions::router())
}
