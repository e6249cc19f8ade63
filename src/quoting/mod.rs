//! Quoting: the Quote aggregate and its sections, the service that runs its
//! commands, the `quote_summary` projection, what a quote shows (its answers), and
//! the agent's pages.
//!
//! Other contexts use `domain`, `service`, `answers` and `summary`; `forms` and
//! `pages` are quoting's own.

pub mod answers;
pub mod domain;
mod forms;
mod pages;
pub mod projection;
pub mod service;
pub mod summary;

pub use answers::{AnswerRow, AnswerSection, answers_of};
pub use pages::{router, task_list};
pub use service::{CommandError, QuoteService};
pub use summary::{QuoteSummary, QuoteSummaryProjection};
