//! Read models built from quoting's events: the one projector the event store
//! runs, which decodes each batch once and hands it to every quote projection
//! (quoting's `quote_summary`, underwriting's approval queue, audit's timeline).

use std::collections::HashMap;
use std::sync::Arc;

use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::domain::{EventKind, QuoteEvent};
use crate::db::{Conn, Db, Tables};
use crate::eventstore::checkpoints::CATCH_UP_PAGE;
use crate::eventstore::{
    CatchUpError, Fill, Part, ProjectionError, Projector, Rebuildable, RecordedEvent, catch_up,
    clear_part,
};

/// A stored event with its decoded quote event.
pub struct Projected<'a> {
    pub recorded: &'a RecordedEvent,
    pub event: QuoteEvent,
}

/// A read model of quotes, kept in the append's transaction. `apply` receives a
/// whole batch in commit order (see [`Projector`]) and should write it in a few
/// multi-row statements, whatever the batch's size.
pub trait QuoteProjection: Send + Sync {
    /// The projection's name, under which its checkpoint is kept.
    fn name(&self) -> &'static str;

    /// The tables it writes, by their live names.
    fn tables(&self) -> &'static [&'static str];

    /// Statements that leave its tables (by their live names) as before the first
    /// event, to catch up again from it.
    fn clear(&self) -> &'static [&'static str];

    /// Which copy of its tables it writes.
    fn writes_to(&self) -> Tables;

    /// The same projection, writing to that copy of its tables.
    fn copy(&self, tables: Tables) -> Arc<dyn QuoteProjection>;

    fn apply<'a>(
        &'a self,
        conn: Conn<'a>,
        events: &'a [Projected<'a>],
    ) -> BoxFuture<'a, Result<(), ProjectionError>>;

    /// How a rebuild fills its copy of the tables from the whole log (see
    /// [`eventstore::Fill`](crate::eventstore::Fill)).
    fn fill(&self) -> Box<dyn QuoteFill>;
}

/// A [`QuoteProjection`]'s pass over the whole log, the quote events of each page
/// decoded once for all of them (see [`Fill`]).
pub trait QuoteFill: Send {
    fn page<'a>(
        &'a mut self,
        conn: Conn<'a>,
        events: &'a [Projected<'a>],
    ) -> BoxFuture<'a, Result<(), ProjectionError>>;

    /// Writes up to `rows` of the rows it kept; `true` while some are left.
    fn flush<'a>(
        &'a mut self,
        conn: Conn<'a>,
        rows: usize,
    ) -> BoxFuture<'a, Result<bool, ProjectionError>>;
}

/// What a fill keeps for each quote over the whole log, then hands out a chunk at a
/// time, in quote id order (each table's rows written in key order).
pub struct Kept<T> {
    by_quote: HashMap<Uuid, T>,
    /// Once handing out has begun: what is left, the highest ids first.
    left: Option<Vec<(Uuid, T)>>,
}

impl<T> Default for Kept<T> {
    fn default() -> Self {
        Kept {
            by_quote: HashMap::new(),
            left: None,
        }
    }
}

impl<T: Default> Kept<T> {
    /// What is kept for this quote.
    pub fn of(&mut self, quote_id: Uuid) -> &mut T {
        self.by_quote.entry(quote_id).or_default()
    }

    /// The next `count` quotes' in id order, and whether any are left after them.
    pub fn next_chunk(&mut self, count: usize) -> (Vec<(Uuid, T)>, bool) {
        let left = self.left.get_or_insert_with(|| {
            // Taken, not drained: the map's memory goes as soon as it is sorted.
            let mut all: Vec<(Uuid, T)> = std::mem::take(&mut self.by_quote).into_iter().collect();
            all.sort_unstable_by(|(a, _), (b, _)| b.cmp(a));
            all
        });
        let mut chunk = left.split_off(left.len().saturating_sub(count));
        chunk.reverse();
        (chunk, !left.is_empty())
    }
}

/// A read model whose row of a quote is what the quote's events, merged into one
/// change, do to it: a batch merges each quote's events in it, a rebuild's fill
/// each quote's events over the whole log.
pub trait MergedChange: Default + Send + Sync + 'static {
    /// Adds the quote's next event.
    fn add(&mut self, projected: &Projected<'_>);

    /// Writes the changes of these quotes to that copy of the tables.
    fn write<'a>(
        conn: Conn<'a>,
        tables: Tables,
        changes: Vec<(Uuid, Self)>,
    ) -> BoxFuture<'a, Result<(), ProjectionError>>;

    /// Applies a batch: each quote's events in it merged, then written.
    fn apply<'a>(
        conn: Conn<'a>,
        tables: Tables,
        events: &[Projected<'_>],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Self::write(conn, tables, merged_by_quote(events, Self::add))
    }
}

/// The fill of a [`MergedChange`] read model: every quote's change kept in memory
/// over the whole log, and written once at the end, in quote id order.
pub struct MergingFill<C> {
    tables: Tables,
    changes: Kept<C>,
}

impl<C: MergedChange> MergingFill<C> {
    pub fn boxed(tables: Tables) -> Box<dyn QuoteFill> {
        Box::new(MergingFill::<C> {
            tables,
            changes: Kept::default(),
        })
    }
}

impl<C: MergedChange> QuoteFill for MergingFill<C> {
    fn page<'a>(
        &'a mut self,
        _: Conn<'a>,
        events: &'a [Projected<'a>],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        for projected in events {
            self.changes.of(projected.recorded.stream_id).add(projected);
        }
        Box::pin(async { Ok(()) })
    }

    fn flush<'a>(
        &'a mut self,
        conn: Conn<'a>,
        rows: usize,
    ) -> BoxFuture<'a, Result<bool, ProjectionError>> {
        let (chunk, more) = self.changes.next_chunk(rows);
        let write = C::write(conn, self.tables, chunk);
        Box::pin(async move {
            write.await?;
            Ok(more)
        })
    }
}

/// The store's projector for quote events.
pub struct QuoteProjector {
    projections: Vec<Arc<dyn QuoteProjection>>,
}

impl QuoteProjector {
    pub fn new(projections: Vec<Arc<dyn QuoteProjection>>) -> Self {
        QuoteProjector { projections }
    }
}

impl QuoteProjector {
    /// Each of these projections alone, to catch up from its own checkpoint.
    pub fn each(&self) -> impl Iterator<Item = QuoteProjector> + '_ {
        self.projections
            .iter()
            .map(|projection| QuoteProjector::new(vec![Arc::clone(projection)]))
    }

    /// Brings every projection up to the end of the log: all together when they
    /// stand at one checkpoint (a new database, a replay: each event read and decoded
    /// once for all of them), else each from its own. All of them at the end already,
    /// the usual case, costs a read or two. Call before appends start, so that none
    /// applies an event twice.
    pub async fn catch_up(&self, db: &Db) -> Result<u64, CatchUpError> {
        match catch_up(db, self, CATCH_UP_PAGE, |_| {}).await {
            Err(CatchUpError::Diverged { .. }) => {}
            outcome => {
                let applied = outcome?;
                if applied > 0 {
                    let names = self.projections().join(", ");
                    tracing::info!(projections = %names, events = applied, "projections caught up");
                }
                return Ok(applied);
            }
        }
        let mut applied = 0;
        for alone in self.each() {
            let caught_up = catch_up(db, &alone, CATCH_UP_PAGE, |_| {}).await?;
            if caught_up > 0 {
                let name = &alone.projections()[0];
                tracing::info!(projection = %name, events = caught_up, "projection caught up");
            }
            applied += caught_up;
        }
        Ok(applied)
    }

    /// Empties the projection `name` and forgets its checkpoint, in one transaction:
    /// it then catches up from the first event. `false` when no projection has that
    /// name.
    pub async fn reset(&self, db: &Db, name: &str) -> Result<bool, sqlx::Error> {
        let Some(projection) = self.projections.iter().find(|p| p.name() == name) else {
            return Ok(false);
        };
        let mut pooled = db.acquire().await?;
        let mut tx = pooled.as_conn().begin_write().await?;
        clear(tx.as_conn(), projection.as_ref()).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// These projections, writing to that copy of their tables.
    pub fn copy(&self, tables: Tables) -> QuoteProjector {
        QuoteProjector::new(self.projections.iter().map(|p| p.copy(tables)).collect())
    }

    /// The projections this projector keeps.
    pub fn members(&self) -> &[Arc<dyn QuoteProjection>] {
        &self.projections
    }
}

/// The checkpoint name of `projection`, for the copy of its tables it writes.
pub fn checkpoint_name(projection: &dyn QuoteProjection) -> String {
    projection.writes_to().name(projection.name()).into_owned()
}

/// The projection as a rebuild sees it: its name, tables and emptying statements.
pub fn part_of(projection: &dyn QuoteProjection) -> Part {
    Part {
        name: projection.name(),
        tables: projection.tables(),
        clear: projection.clear(),
    }
}

/// Empties the projection's copy of its tables and forgets its checkpoint, in the
/// caller's transaction.
pub async fn clear(conn: Conn<'_>, projection: &dyn QuoteProjection) -> Result<(), sqlx::Error> {
    clear_part(conn, &part_of(projection), projection.writes_to()).await
}

impl Rebuildable for QuoteProjector {
    fn parts(&self) -> Vec<Part> {
        self.projections
            .iter()
            .map(|p| part_of(p.as_ref()))
            .collect()
    }

    fn writes_to(&self) -> Tables {
        self.projections
            .first()
            .map_or(Tables::Live, |p| p.writes_to())
    }

    fn copy(&self, tables: Tables) -> Arc<dyn Rebuildable> {
        Arc::new(QuoteProjector::copy(self, tables))
    }

    fn alone(&self, name: &str) -> Option<Arc<dyn Rebuildable>> {
        self.each()
            .find(|alone| alone.projections[0].name() == name)
            .map(|alone| Arc::new(alone) as Arc<dyn Rebuildable>)
    }

    fn fill(&self) -> Box<dyn Fill> {
        Box::new(QuoteProjectorFill(
            self.projections.iter().map(|p| p.fill()).collect(),
            0,
        ))
    }
}

/// Each projection's fill, fed every page's quote events decoded once, and how many
/// of them have written all they kept.
struct QuoteProjectorFill(Vec<Box<dyn QuoteFill>>, usize);

impl Fill for QuoteProjectorFill {
    fn page<'a>(
        &'a mut self,
        mut conn: Conn<'a>,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            let decoded = decoded(events)?;
            for fill in &mut self.0 {
                fill.page(conn.reborrow(), &decoded).await?;
            }
            Ok(())
        })
    }

    /// The projections' fills one after another.
    fn flush<'a>(
        &'a mut self,
        conn: Conn<'a>,
        rows: usize,
    ) -> BoxFuture<'a, Result<bool, ProjectionError>> {
        Box::pin(async move {
            let Some(fill) = self.0.get_mut(self.1) else {
                return Ok(false);
            };
            if !fill.flush(conn, rows).await? {
                self.1 += 1;
            }
            Ok(self.1 < self.0.len())
        })
    }
}

/// The quote events among `events`, each decoded.
fn decoded(events: &[RecordedEvent]) -> Result<Vec<Projected<'_>>, serde_json::Error> {
    // The store holds other streams than quotes; their events are not ours.
    events
        .iter()
        .filter(|recorded| is_quote_event(recorded))
        .map(|recorded| {
            Ok(Projected {
                recorded,
                event: QuoteEvent::decode(recorded)?,
            })
        })
        .collect()
}

impl Projector for QuoteProjector {
    fn projections(&self) -> Vec<String> {
        self.projections
            .iter()
            .map(|p| checkpoint_name(p.as_ref()))
            .collect()
    }

    fn apply<'a>(
        &'a self,
        mut conn: Conn<'a>,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            let decoded = decoded(events)?;
            if decoded.is_empty() {
                return Ok(());
            }
            for projection in &self.projections {
                projection.apply(conn.reborrow(), &decoded).await?;
            }
            Ok(())
        })
    }
}

/// Whether a stored event is one of a quote's: its type is a quote event's. Every
/// event type in the store has one context's name, so the projectors of each
/// context pick out their own (a broken payload of a quote event still fails).
pub fn is_quote_event(recorded: &RecordedEvent) -> bool {
    recorded.event_type.parse::<EventKind>().is_ok()
}

/// The batch's events grouped by quote, quotes in the order they first appear,
/// each quote's events in order.
pub fn by_quote<'e, 'a>(events: &'e [Projected<'a>]) -> Vec<(Uuid, Vec<&'e Projected<'a>>)> {
    let mut quotes: Vec<(Uuid, Vec<&Projected>)> = Vec::new();
    let mut index: HashMap<Uuid, usize> = HashMap::new();
    for projected in events {
        let id = projected.recorded.stream_id;
        let at = *index.entry(id).or_insert_with(|| {
            quotes.push((id, Vec::new()));
            quotes.len() - 1
        });
        quotes[at].1.push(projected);
    }
    quotes
}

/// Each quote's events in the batch folded into one change of a read model's row,
/// quotes in the order they first appear.
pub fn merged_by_quote<C: Default>(
    events: &[Projected<'_>],
    mut add: impl FnMut(&mut C, &Projected<'_>),
) -> Vec<(Uuid, C)> {
    by_quote(events)
        .into_iter()
        .map(|(quote_id, events)| {
            let mut change = C::default();
            for projected in events {
                add(&mut change, projected);
            }
            (quote_id, change)
        })
        .collect()
}
