//! Audit: the timeline projection (every event in the domain's words, with who, when
//! and what changed), time travel to any event of a quote, the log of every event
//! across quotes with its streamed exports, and hash-chain verification.
//!
//! Auditors only read here; the one POST (`/audit/verify`) runs a check and records
//! its result, and changes no quote.

pub mod export;
pub mod log;
pub mod pages;
pub mod timeline;
pub mod verification;

use axum::Router;

use crate::AppState;

pub use timeline::{FieldChange, TimelineEntry, TimelineProjection};
pub use verification::{FoundMismatch, VerificationRun};

pub fn router() -> Router<AppState> {
    pages::router()
}
