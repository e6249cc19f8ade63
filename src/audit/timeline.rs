//! The `audit_timeline` projection: one row per event, in the domain's words, with
//! who did it and in which role, the status before and after, the reason or note,
//! and the field-level changes against the quote's previous values ("City: Pune →
//! Mumbai", "Child added: Asha").
//!
//! Kept in the append's transaction. The previous values come from
//! `audit_quote_state`, one row per quote holding the folded `Quote` as JSON: an
//! append reads that row by key, writes its timeline rows in one statement and the
//! new state in another, so a section POST never replays its stream. Only when the
//! state row is missing, behind or of another schema version (a quote older than this
//! projection, a new `Quote` shape) is the stream's earlier history read from the
//! log, and any timeline rows it never got are written then.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde_json::value::RawValue;
use sqlx::types::Json;
use uuid::Uuid;

use super::changes::{FieldChange, changes};
use crate::db::{Backend, Conn, Db, Tables, in_list};
use crate::eventstore::{self, ProjectionError, RecordedEvent};
use crate::on_backend;
use crate::quoting::domain::{Quote, QuoteEvent, Status, evolve};
use crate::quoting::projection::{Kept, Projected, QuoteFill, QuoteProjection, by_quote};

/// One row of the timeline.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow, serde::Deserialize)]
pub struct TimelineEntry {
    /// The event's global position.
    pub position: i64,
    pub stream_id: Uuid,
    pub version: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub reference: String,
    pub actor: String,
    pub actor_role: String,
    pub recorded_at: DateTime<Utc>,
    pub title: String,
    pub status_before: Option<String>,
    pub status_after: Option<String>,
    pub detail: Option<String>,
    pub changes: Json<Vec<FieldChange>>,
}

impl TimelineEntry {
    /// "Status: Saved → Submitted", or `None` when the event left the status as it was.
    pub fn status_line(&self) -> Option<String> {
        let label = |s: &Option<String>| {
            s.as_deref().map(|s| {
                s.parse::<Status>()
                    .map_or(s.to_owned(), |s| s.label().to_owned())
            })
        };
        match (label(&self.status_before), label(&self.status_after)) {
            (None, Some(after)) => Some(format!("Status: {after}")),
            (Some(before), Some(after)) if before != after => {
                Some(format!("Status: {before} → {after}"))
            }
            _ => None,
        }
    }

    /// Each change as the timeline says it.
    pub fn change_lines(&self) -> Vec<String> {
        self.changes.0.iter().map(FieldChange::line).collect()
    }
}

fn entry(
    source: &RecordedEvent,
    event: &QuoteEvent,
    before: &Quote,
    after: &Quote,
) -> TimelineEntry {
    TimelineEntry {
        position: source.position(),
        stream_id: source.stream_id,
        version: source.version,
        event_id: source.event_id,
        event_type: source.event_type.clone(),
        reference: after.reference.clone(),
        actor: source.actor.clone(),
        actor_role: event.kind().acting_role().as_str().to_owned(),
        recorded_at: source.recorded_at,
        title: event.title().to_owned(),
        status_before: before.status.map(|s| s.as_str().to_owned()),
        status_after: after.status.map(|s| s.as_str().to_owned()),
        detail: event.decision_text().map(|text| text.to_string()),
        changes: Json(changes(before, after)),
    }
}

const SELECT_STATES: &str =
    "SELECT quote_id, version, schema_version, state FROM audit_quote_state WHERE quote_id IN (";
/// [`SELECT_STATES`] as one row holding a JSON array, for SQLite (ids as hex, the
/// state as the JSON it is): sqlx hands SQLite's rows over from its worker thread
/// one message each, and in the writer's transaction those hand-overs cost more
/// than the read.
const SELECT_STATES_AS_JSON: &str = "SELECT json_group_array(json_object(\
     'quote_id', hex(quote_id), 'version', version, 'schema_version', schema_version, \
     'state', json(state))) FROM audit_quote_state WHERE quote_id IN (";

const UPSERT_STATES: &str =
    "INSERT INTO audit_quote_state (quote_id, reference, version, schema_version, state) ";
/// A quote's reference never changes, so the update leaves it (and on SQLite its
/// index's page) alone.
const ON_CONFLICT_REPLACE_STATE: &str = " ON CONFLICT (quote_id) DO UPDATE SET \
     version = excluded.version, schema_version = excluded.schema_version, \
     state = excluded.state";

const INSERT: &str = "INSERT INTO audit_timeline (position, stream_id, version, event_id, \
     event_type, reference, actor, actor_role, recorded_at, title, status_before, status_after, \
     detail, changes) ";

/// Rows per statement: one statement for any ordinary batch, well inside both
/// backends' limits on parameters (14 a timeline row).
const ROWS_PER_STATEMENT: usize = 1_000;

#[derive(sqlx::FromRow, serde::Deserialize)]
struct StateRow {
    quote_id: Uuid,
    version: i64,
    schema_version: i32,
    /// Kept as text until its schema version is known to be this build's, then
    /// read straight into a `Quote` (not through a `serde_json::Value` first).
    state: Json<Box<RawValue>>,
}

impl StateRow {
    /// The folded quote, unless it was stored in a shape this build does not read.
    fn quote(self) -> Option<Quote> {
        (self.schema_version == Quote::SCHEMA_VERSION)
            .then(|| serde_json::from_str(self.state.0.get()).ok())
            .flatten()
    }
}

/// The tables the timeline writes.
const TABLES: &[&str] = &["audit_timeline", "audit_quote_state"];

#[derive(Debug, Default)]
pub struct TimelineProjection {
    tables: Tables,
}

impl TimelineProjection {
    /// The projection writing to this copy of its tables.
    pub fn writing_to(tables: Tables) -> Self {
        TimelineProjection { tables }
    }
}

impl QuoteProjection for TimelineProjection {
    fn name(&self) -> &'static str {
        "audit_timeline"
    }

    fn tables(&self) -> &'static [&'static str] {
        TABLES
    }

    fn clear(&self) -> &'static [&'static str] {
        &[
            "DELETE FROM audit_timeline",
            "DELETE FROM audit_quote_state",
        ]
    }

    fn writes_to(&self) -> Tables {
        self.tables
    }

    fn copy(&self, tables: Tables) -> Arc<dyn QuoteProjection> {
        Arc::new(Self::writing_to(tables))
    }

    /// For the whole batch: one read of the touched quotes' state rows, one insert
    /// of every timeline row, one upsert of the new states.
    fn apply<'a>(
        &'a self,
        mut conn: Conn<'a>,
        events: &'a [Projected<'a>],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            let quotes = by_quote(events);
            let ids: Vec<Uuid> = quotes.iter().map(|(id, _)| *id).collect();
            let mut stored = states(conn.reborrow(), self.tables, &ids).await?;
            let mut rows = Vec::with_capacity(events.len());
            let mut states = Vec::with_capacity(quotes.len());
            for (quote_id, events) in quotes {
                let stored = stored.remove(&quote_id);
                // Rows exist up to `rows_up_to`; the state is folded up to `folded_to`.
                let rows_up_to = stored.as_ref().map_or(0, |s| s.version);
                let (mut quote, folded_to) = match stored.and_then(StateRow::quote) {
                    Some(quote) => (quote, rows_up_to),
                    None => (Quote::default(), 0),
                };
                let first = events[0].recorded.version;
                let last = events[events.len() - 1].recorded.version;
                // The history between what the state row has folded and the batch's
                // events, read only when the state row is missing or behind.
                if folded_to < first - 1 {
                    let earlier =
                        eventstore::read_stream_in(conn.reborrow(), quote_id, folded_to).await?;
                    for recorded in earlier.iter().take_while(|e| e.version < first) {
                        let event = QuoteEvent::decode(recorded)?;
                        let before = quote.clone();
                        quote = evolve(quote, &event);
                        if recorded.version > rows_up_to {
                            rows.push(entry(recorded, &event, &before, &quote));
                        }
                    }
                }
                for projected in events {
                    let before = quote.clone();
                    quote = evolve(quote, &projected.event);
                    if projected.recorded.version > rows_up_to {
                        rows.push(entry(projected.recorded, &projected.event, &before, &quote));
                    }
                }
                states.push((quote_id, last.max(rows_up_to), quote));
            }
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                insert(conn.reborrow(), self.tables, chunk).await?;
            }
            write_states(conn, self.tables, &states).await?;
            Ok(())
        })
    }

    fn fill(&self) -> Box<dyn QuoteFill> {
        Box::new(TimelineFill {
            tables: self.tables,
            states: Kept::default(),
        })
    }
}

/// The timeline's pass over the whole log: each quote's state and version kept in
/// memory from its first event, its rows written a page at a time (no later event
/// changes them), the states once at the end.
struct TimelineFill {
    tables: Tables,
    states: Kept<(i64, Quote)>,
}

impl QuoteFill for TimelineFill {
    fn page<'a>(
        &'a mut self,
        mut conn: Conn<'a>,
        events: &'a [Projected<'a>],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            let mut rows = Vec::with_capacity(events.len());
            for projected in events {
                let (version, quote) = self.states.of(projected.recorded.stream_id);
                let before = std::mem::take(quote);
                *quote = evolve(before.clone(), &projected.event);
                *version = projected.recorded.version;
                rows.push(entry(projected.recorded, &projected.event, &before, quote));
            }
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                insert(conn.reborrow(), self.tables, chunk).await?;
            }
            Ok(())
        })
    }

    fn flush<'a>(
        &'a mut self,
        conn: Conn<'a>,
        rows: usize,
    ) -> BoxFuture<'a, Result<bool, ProjectionError>> {
        let (chunk, more) = self.states.next_chunk(rows);
        let states: Vec<(Uuid, i64, Quote)> = chunk
            .into_iter()
            .map(|(quote_id, (version, quote))| (quote_id, version, quote))
            .collect();
        let tables = self.tables;
        Box::pin(async move {
            write_states(conn, tables, &states).await?;
            Ok(more)
        })
    }
}

/// Writes (or replaces) the state rows of these quotes: each folded at its version.
async fn write_states(
    mut conn: Conn<'_>,
    tables: Tables,
    states: &[(Uuid, i64, Quote)],
) -> Result<(), sqlx::Error> {
    for chunk in states.chunks(ROWS_PER_STATEMENT) {
        on_backend!(conn.reborrow(), c => {
            let mut upsert = sqlx::QueryBuilder::new(tables.rename(UPSERT_STATES, TABLES));
            upsert.push_values(chunk, |mut row, (quote_id, version, quote)| {
                row.push_bind(*quote_id)
                    .push_bind(quote.reference.as_str())
                    .push_bind(*version)
                    .push_bind(Quote::SCHEMA_VERSION)
                    .push_bind(Json(quote));
            });
            upsert.push(ON_CONFLICT_REPLACE_STATE);
            upsert.build().execute(&mut *c).await?;
        });
    }
    Ok(())
}

/// The state rows of these quotes, by quote.
async fn states(
    mut conn: Conn<'_>,
    tables: Tables,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, StateRow>, sqlx::Error> {
    let mut found = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(ROWS_PER_STATEMENT) {
        let rows: Vec<StateRow> = match conn.reborrow() {
            Backend::Sqlite(c) => {
                let Json(rows) = in_list(tables.rename(SELECT_STATES_AS_JSON, TABLES), chunk)
                    .build_query_scalar()
                    .fetch_one(&mut *c)
                    .await?;
                rows
            }
            Backend::Postgres(c) => {
                in_list(tables.rename(SELECT_STATES, TABLES), chunk)
                    .build_query_as()
                    .fetch_all(&mut *c)
                    .await?
            }
        };
        found.extend(rows.into_iter().map(|row| (row.quote_id, row)));
    }
    Ok(found)
}

/// Binds borrow the rows' text: a `String` bound by reference is copied first.
async fn insert(conn: Conn<'_>, tables: Tables, rows: &[TimelineEntry]) -> Result<(), sqlx::Error> {
    on_backend!(conn, c => {
        let mut insert = sqlx::QueryBuilder::new(tables.rename(INSERT, TABLES));
        insert.push_values(rows, |mut values, row| {
            values
                .push_bind(row.position)
                .push_bind(row.stream_id)
                .push_bind(row.version)
                .push_bind(row.event_id)
                .push_bind(row.event_type.as_str())
                .push_bind(row.reference.as_str())
                .push_bind(row.actor.as_str())
                .push_bind(row.actor_role.as_str())
                .push_bind(row.recorded_at)
                .push_bind(row.title.as_str())
                .push_bind(row.status_before.as_deref())
                .push_bind(row.status_after.as_deref())
                .push_bind(row.detail.as_deref())
                .push_bind(&row.changes);
        });
        insert.build().execute(&mut *c).await?;
    });
    Ok(())
}

// ----- Reading ---------------------------------------------------------------------

/// A read of timeline rows: every column of a [`TimelineEntry`], then `$tail`.
macro_rules! select_entry {
    ($tail:literal) => {
        concat!(
            "SELECT position, stream_id, version, event_id, event_type, reference, actor, \
             actor_role, recorded_at, title, status_before, status_after, detail, changes \
             FROM audit_timeline ",
            $tail
        )
    };
}

/// Every column of a [`TimelineEntry`], for the log's filtered reads.
pub const SELECT_ENTRY: &str = select_entry!("");

/// A quote's entries below a version, newest first, up to a limit.
macro_rules! entries_before {
    () => {
        select_entry!("WHERE stream_id = $1 AND version < $2 ORDER BY version DESC LIMIT $3")
    };
}

const FOR_QUOTE: &str = entries_before!();

/// [`FOR_QUOTE`] as one JSON array in one row, for SQLite (see [`for_quote`]). Its
/// JSON holds no blob: ids go as hex, which `Uuid` reads back; `changes` is JSON
/// text already.
const FOR_QUOTE_AS_JSON: &str = concat!(
    "SELECT json_group_array(json_object('position', position, 'stream_id', hex(stream_id), \
     'version', version, 'event_id', hex(event_id), 'event_type', event_type, \
     'reference', reference, 'actor', actor, 'actor_role', actor_role, \
     'recorded_at', recorded_at, 'title', title, 'status_before', status_before, \
     'status_after', status_after, 'detail', detail, 'changes', json(changes)) \
     ORDER BY version DESC) FROM (",
    entries_before!(),
    ") AS page"
);

const AT_VERSION: &str = select_entry!("WHERE stream_id = $1 AND version = $2");

/// A quote's entries below `before_version` (all, with `None`), newest first.
///
/// On SQLite they come as one row holding a JSON array, as the queue's page does
/// (`underwriting::queue::query::page` says why); PostgreSQL reads the rows.
pub async fn for_quote(
    db: &Db,
    quote_id: Uuid,
    before_version: Option<i64>,
    limit: i64,
) -> Result<Vec<TimelineEntry>, sqlx::Error> {
    let before_version = before_version.unwrap_or(i64::MAX);
    match db {
        Backend::Sqlite(pool) => {
            let Json(entries) = sqlx::query_scalar(FOR_QUOTE_AS_JSON)
                .bind(quote_id)
                .bind(before_version)
                .bind(limit)
                .fetch_one(pool)
                .await?;
            Ok(entries)
        }
        Backend::Postgres(pool) => {
            sqlx::query_as(FOR_QUOTE)
                .bind(quote_id)
                .bind(before_version)
                .bind(limit)
                .fetch_all(pool)
                .await
        }
    }
}

/// The entry of one event of a quote.
pub async fn at_version(
    db: &Db,
    quote_id: Uuid,
    version: i64,
) -> Result<Option<TimelineEntry>, sqlx::Error> {
    on_backend!(db, pool => {
        sqlx::query_as(AT_VERSION).bind(quote_id).bind(version).fetch_optional(pool).await
    })
}

/// A quote as the timeline last saw it: its reference, version and values.
#[derive(Debug, Clone)]
pub struct QuoteHeader {
    pub reference: String,
    pub version: i64,
    pub quote: Quote,
}

pub async fn header(db: &Db, quote_id: Uuid) -> Result<Option<QuoteHeader>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        reference: String,
        version: i64,
        schema_version: i32,
        state: Json<Box<RawValue>>,
    }
    let row: Option<Row> = on_backend!(db, pool => {
        sqlx::query_as(
            "SELECT reference, version, schema_version, state FROM audit_quote_state WHERE quote_id = $1",
        )
        .bind(quote_id)
        .fetch_optional(pool)
        .await?
    });
    Ok(row.map(|row| QuoteHeader {
        reference: row.reference,
        version: row.version,
        quote: StateRow {
            quote_id,
            version: row.version,
            schema_version: row.schema_version,
            state: row.state,
        }
        .quote()
        .unwrap_or_default(),
    }))
}

/// The references of these quotes, for those the timeline knows.
pub async fn references(db: &Db, quote_ids: &[Uuid]) -> Result<HashMap<Uuid, String>, sqlx::Error> {
    let mut found = HashMap::with_capacity(quote_ids.len());
    // A bounded IN list per statement; verification reports are capped anyway.
    for ids in quote_ids.chunks(500) {
        let placeholders: Vec<String> = (1..=ids.len()).map(|n| format!("${n}")).collect();
        let sql = format!(
            "SELECT quote_id, reference FROM audit_quote_state WHERE quote_id IN ({})",
            placeholders.join(", ")
        );
        let rows: Vec<(Uuid, String)> = on_backend!(db, pool => {
            let mut query = sqlx::query_as(&sql);
            for id in ids {
                query = query.bind(*id);
            }
            query.fetch_all(pool).await?
        });
        found.extend(rows);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::Role;
    use crate::quoting::domain::NonEmptyText;

    #[test]
    fn decisions_are_an_underwriters_and_everything_else_an_agents() {
        let rejected = QuoteEvent::QuoteRejected {
            reason: NonEmptyText::parse("No").unwrap(),
            from: Status::Finalized,
            to: Status::Rejected,
        };
        assert_eq!(rejected.kind().acting_role(), Role::Underwriter);
        assert_eq!(rejected.decision_text().map(|t| t.as_str()), Some("No"));
        let withdrawn = QuoteEvent::QuoteWithdrawn {
            from: Status::Finalized,
            to: Status::Withdrawn,
        };
        assert_eq!(withdrawn.kind().acting_role(), Role::Agent);
    }
}
