//! The hook by which read models are kept from the events: a [`Projector`] and the
//! errors it may answer with.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::model::RecordedEvent;
use crate::db::{Conn, Tables};

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

/// One projection a [`Rebuildable`] projector keeps: its name (its checkpoint's, for
/// the live tables), its tables and the statements that empty them, by live names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    pub name: &'static str,
    pub tables: &'static [&'static str],
    pub clear: &'static [&'static str],
}

/// A projector whose tables a rebuild can fill beside the live ones (a copy of it
/// writing to [`Tables::Shadow`]) and swap in.
pub trait Rebuildable: Projector {
    /// The projections it keeps.
    fn parts(&self) -> Vec<Part>;

    /// Which copy of its tables it writes.
    fn writes_to(&self) -> Tables;

    /// The same projector, writing to that copy of its tables.
    fn copy(&self, tables: Tables) -> Arc<dyn Rebuildable>;

    /// The projector of the projection `name` alone, if it keeps one of that name.
    fn alone(&self, name: &str) -> Option<Arc<dyn Rebuildable>>;

    /// How it fills its (empty) tables from the whole log. By default each page is
    /// applied as a batch, as inline; a projector whose rows change many times over
    /// a history keeps them in memory instead (see [`Fill`]).
    fn fill(&self) -> Box<dyn Fill> {
        page_by_page(self.copy(self.writes_to()))
    }
}

/// A rebuild's pass over the whole log into empty tables: every event from the
/// first, a page at a time in commit order, then [`Fill::flush`] until nothing is
/// left. Unlike an inline batch, nothing needs to be read back from the tables: a
/// fill may keep each row in memory until the last page has changed it, and write
/// it once.
///
/// Pages and flushes are written in transactions of their own (each short, so that
/// appends to the live tables go on); what a fill writes is only whole once the
/// last flush has run, in the transaction that sets its checkpoints.
pub trait Fill: Send {
    /// Takes the log's next page; may write rows that no later event changes.
    fn page<'a>(
        &'a mut self,
        conn: Conn<'a>,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>>;

    /// Writes up to `rows` of the rows it kept in memory; `true` while some are left.
    fn flush<'a>(
        &'a mut self,
        conn: Conn<'a>,
        rows: usize,
    ) -> BoxFuture<'a, Result<bool, ProjectionError>>;
}

/// The default [`Fill`]: each page applied as an inline batch is.
pub fn page_by_page(projector: Arc<dyn Rebuildable>) -> Box<dyn Fill> {
    Box::new(PageByPage(projector))
}

struct PageByPage(Arc<dyn Rebuildable>);

impl Fill for PageByPage {
    fn page<'a>(
        &'a mut self,
        conn: Conn<'a>,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        self.0.apply(conn, events)
    }

    fn flush<'a>(
        &'a mut self,
        _: Conn<'a>,
        _: usize,
    ) -> BoxFuture<'a, Result<bool, ProjectionError>> {
        Box::pin(async { Ok(false) })
    }
}

/// Empties `part`'s copy of its tables (the one `tables` names) and forgets its
/// checkpoint, in the caller's transaction: it then catches up from the first event.
pub async fn clear_part(
    mut conn: Conn<'_>,
    part: &Part,
    tables: Tables,
) -> Result<(), sqlx::Error> {
    for statement in part.clear {
        conn.execute_plain(&tables.rename(statement, part.tables))
            .await?;
    }
    super::checkpoints::forget(conn, &tables.name(part.name)).await
}

/// Several projectors as one: each applies every batch, in order. A rebuild fills
/// them together, reading the log once.
pub struct Together(pub Vec<Arc<dyn Rebuildable>>);

impl Projector for Together {
    fn projections(&self) -> Vec<String> {
        self.0.iter().flat_map(|p| p.projections()).collect()
    }

    fn apply<'a>(
        &'a self,
        mut conn: Conn<'a>,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            for projector in &self.0 {
                projector.apply(conn.reborrow(), events).await?;
            }
            Ok(())
        })
    }
}
