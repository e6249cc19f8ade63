//! Read models built from quoting's events: the one projector the event store
//! runs, which decodes each batch once and hands it to every quote projection
//! (quoting's `quote_summary`, underwriting's approval queue, audit's timeline).

use std::sync::Arc;

use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::domain::QuoteEvent;
use crate::db::Conn;
use crate::eventstore::{ProjectionError, Projector, RecordedEvent};

/// A stored event with its decoded quote event.
pub struct Projected<'a> {
    pub recorded: &'a RecordedEvent,
    pub event: QuoteEvent,
}

/// A read model of quotes, kept in the append's transaction. `apply` receives a
/// whole batch in commit order (see [`Projector`]) and should write it in a few
/// multi-row statements, whatever the batch's size.
pub trait QuoteProjection: Send + Sync {
    fn apply<'a>(
        &'a self,
        conn: Conn<'a>,
        events: &'a [Projected<'a>],
    ) -> BoxFuture<'a, Result<(), ProjectionError>>;
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

impl Projector for QuoteProjector {
    fn apply<'a>(
        &'a self,
        mut conn: Conn<'a>,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            let decoded = events
                .iter()
                .map(|recorded| {
                    Ok(Projected {
                        recorded,
                        event: QuoteEvent::decode(recorded)?,
                    })
                })
                .collect::<Result<Vec<_>, serde_json::Error>>()?;
            for projection in &self.projections {
                projection.apply(conn.reborrow(), &decoded).await?;
            }
            Ok(())
        })
    }
}

/// The batch's events grouped by quote, quotes in the order they first appear,
/// each quote's events in order.
pub fn by_quote<'e, 'a>(events: &'e [Projected<'a>]) -> Vec<(Uuid, Vec<&'e Projected<'a>>)> {
    let mut quotes: Vec<(Uuid, Vec<&Projected>)> = Vec::new();
    let mut index: std::collections::HashMap<Uuid, usize> = std::collections::HashMap::new();
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
