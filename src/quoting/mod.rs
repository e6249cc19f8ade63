//! Quoting: the Quote aggregate and its sections, the service that runs its
//! commands, the `quote_summary` projection, and the agent's pages.

pub mod domain;
pub mod pages;
pub mod service;
pub mod summary;

pub use service::{CommandError, Envelope, QuoteService};
pub use summary::{QuoteSummary, QuoteSummaryProjection};
