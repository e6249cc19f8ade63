//! The hook by which read models are kept from the events: a [`Projector`] and the
//! errors it may answer with.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::model::RecordedEvent;
use crate::db::Conn;

/// Keeps a projection up to date inside the append's transaction: what it writes
/// commits or rolls back with the events.
///
/// Each call brings the events of a whole group-commit batch, in commit order: any
/// number of streams, each stream's events in version order (a stream may appear
/// more than once, and its appends need not be next to each other). A projection
/// is expected to write them in a few multi-row statements whatever the batch's
/// size. When the batch has to be replayed one append at a time (a conflict from
/// another instance, a failing projection), each call brings one append's events.
pub trait Projector: Send + Sync {
    /// The name of each projection this projector keeps: each has a checkpoint
    /// (`eventstore::checkpoints`), moved in the same transaction as its rows.
    fn projections(&self) -> Vec<String>;

    fn apply<'a>(
        &'a self,
        conn: Conn<'a>,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>>;
}

/// Why a projection could not take a batch. Nothing of the batch is written.
#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// An event the projection cannot read (a payload of an unknown shape).
    #[error("an event could not be read: {0}")]
    Decode(#[from] serde_json::Error),
    /// The projection's tables refused the write (a unique constraint, a lost
    /// connection).
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// Events the projection needed (archived ones, say) could not be read.
    #[error(transparent)]
    Read(#[from] super::ReadError),
}

pub type Projectors = Arc<[Arc<dyn Projector>]>;
