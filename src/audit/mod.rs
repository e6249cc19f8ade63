//! Audit: the timeline projection (every event in the domain's words, with who, when
//! and what changed), time travel to any event of a quote, the log of every event
//! across quotes with its streamed exports, and hash-chain verification.
//!
//! Auditors only read here; the one POST (`/audit/verify`) runs a check and records
//! its result, and changes no quote.

pub mod changes;
pub mod compare;
pub mod export;
pub mod log;
mod pages;
pub mod proof;
pub mod signing;
pub mod timeline;
pub mod verification;

use axum::Router;

use crate::state::AppState;

pub use changes::FieldChange;
pub use timeline::{TimelineEntry, TimelineProjection};
pub use verification::{FoundMismatch, VerificationRun};

pub fn router() -> Router<AppState> {
    pages::router()
}
