//! The approval queue: every submitted quote awaiting a decision, split by layer.
//!
//! - `projection`: the `approval_queue` projection, kept in the append's
//!   transaction.
//! - `query`: the filters, sorts and keyset cursor, and the SQL that reads a page,
//!   its count, and the next quote to decide.
//! - `page`: the underwriter's queue page and its links.
//!
//! Other modules use the items re-exported here.

mod drawn;
mod page;
mod projection;
mod query;

pub use drawn::{DrawnPages, KEEP_DRAWN};
pub use page::{PAGE_SIZE, duration_in_words, router};
pub use projection::ApprovalQueueProjection;
pub use query::{
    Cursor, QueueFilter, QueueQuery, QueueRow, QueueSort, count, count_query, find, next_for, page,
    page_query,
};
