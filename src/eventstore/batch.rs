//! The group-commit fast path: a whole batch of appends in a handful of set-based
//! statements (read every head once, check idempotency keys once, insert every event
//! in one statement, move every head in one statement) instead of a savepoint and
//! five statements per append. Conflicts and repeated keys are decided in memory
//! with the heads just read.
//!
//! Anything unexpected (a unique violation from another instance, a projection
//! error) fails the fast path as a whole; the writer then rolls back and runs the
//! batch again one savepoint per append, which answers each command exactly.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use sqlx::types::Json;
use uuid::Uuid;

use super::append::{AppendError, AppendRequest, chain, find_earlier_append, idempotent_event_id};
use super::checkpoints::project;
use super::hash::GENESIS;
use super::model::{Appended, GlobalPosition, RecordedEvent};
use super::projector::Projector;
use super::sql::push_event_values;
use crate::db::{Backend, Conn, in_list};
use crate::on_backend;

/// Rows per INSERT statement: 11 parameters each stays far below both backends'
/// limits on bound parameters.
const ROWS_PER_INSERT: usize = 1_000;

pub type Outcome = Result<Appended, AppendError>;

/// Appends a batch inside the caller's transaction. An `Err` means nothing can be
/// trusted and the caller must roll back; the inner results are each command's own.
pub async fn append_batch_in(
    mut conn: Conn<'_>,
    projectors: &[Arc<dyn Projector>],
    requests: &[&AppendRequest],
) -> Result<Vec<Outcome>, AppendError> {
    let mut outcomes: Vec<Option<Outcome>> = vec![None; requests.len()];
    for (i, request) in requests.iter().enumerate() {
        if request.events.is_empty() {
            outcomes[i] = Some(Err(AppendError::NoEvents));
        }
    }

    // Heads first, keys second: under READ COMMITTED each statement sees what had
    // committed when it began, so an earlier append with a key that committed
    // before the heads were read is always found by the key lookup. The other order
    // would see another instance's append in the head but not by its key, and answer
    // a retry with a conflict instead of its first outcome.
    let began = Instant::now();
    let streams: Vec<Uuid> = requests.iter().map(|r| r.stream_id).collect();
    let mut heads = stream_heads(conn.reborrow(), &streams).await?;

    // Idempotency: which keys were seen in earlier batches, and which repeat a key
    // earlier in this batch (answered after the insert with that request's events).
    let first_ids: Vec<Option<Uuid>> = requests
        .iter()
        .map(|r| {
            r.metadata
                .idempotency_key
                .as_deref()
                .map(|key| idempotent_event_id(r.stream_id, key, 0))
        })
        .collect();
    let keyed: Vec<Uuid> = first_ids.iter().flatten().copied().collect();
    let seen = existing_event_ids(conn.reborrow(), &keyed).await?;
    let mut repeats: Vec<(usize, usize)> = Vec::new();
    let mut first_in_batch: HashMap<Uuid, usize> = HashMap::new();
    for (i, request) in requests.iter().enumerate() {
        let Some(first_id) = first_ids[i] else {
            continue;
        };
        if outcomes[i].is_some() {
            continue;
        }
        if seen.contains(&first_id) {
            let earlier = find_earlier_append(conn.reborrow(), request)
                .await?
                .unwrap_or_default();
            outcomes[i] = Some(Ok(Appended::AlreadyWritten(earlier)));
        } else if let Some(&original) = first_in_batch.get(&first_id) {
            repeats.push((i, original));
        } else {
            first_in_batch.insert(first_id, i);
        }
    }
    let repeat_of: HashMap<usize, usize> = repeats.iter().copied().collect();
    record_step("reads", began);

    // Each command is checked in order against its stream's head as the commands
    // before it left it.
    let mut accepted: Vec<(usize, Vec<RecordedEvent>)> = Vec::new();
    for (i, request) in requests.iter().enumerate() {
        if outcomes[i].is_some() || repeat_of.contains_key(&i) {
            continue;
        }
        let (current, prev_hash) = heads
            .get(&request.stream_id)
            .cloned()
            .unwrap_or_else(|| (0, GENESIS.to_owned()));
        if !request.expected.matches(current) {
            outcomes[i] = Some(Err(AppendError::Conflict {
                stream_id: request.stream_id,
                expected: request.expected,
                actual: current,
            }));
            continue;
        }
        let events = chain(request, current, prev_hash);
        let last = events
            .last()
            .expect("requests with no events were answered above");
        heads.insert(request.stream_id, (last.version, last.hash.clone()));
        accepted.push((i, events));
    }

    if !accepted.is_empty() {
        let began = Instant::now();
        insert_events(conn.reborrow(), &mut accepted).await?;
        move_heads(conn.reborrow(), &accepted).await?;
        record_step("events", began);
        // Every projection sees the whole batch at once, in commit order.
        let batch: Vec<RecordedEvent> = accepted
            .iter()
            .flat_map(|(_, events)| events.iter().cloned())
            .collect();
        let projectors: Vec<&dyn Projector> = projectors.iter().map(|p| p.as_ref()).collect();
        let began = Instant::now();
        project(conn.reborrow(), &projectors, &batch).await?;
        record_step("projections", began);
    }
    let mut written: HashMap<usize, Vec<RecordedEvent>> = HashMap::new();
    for (i, events) in accepted {
        written.insert(i, events.clone());
        outcomes[i] = Some(Ok(Appended::Written(events)));
    }
    for (i, original) in repeats {
        outcomes[i] = Some(match written.get(&original) {
            Some(events) => Ok(Appended::AlreadyWritten(events.clone())),
            // The first command with this key was refused, so this one is too.
            None => outcomes[original].clone().expect("answered above"),
        });
    }
    Ok(outcomes
        .into_iter()
        .map(|o| o.expect("every request is answered"))
        .collect())
}

/// How long one step of writing a batch took, in the process's metrics: `begin`
/// (a connection and the write lock), `reads` (stream heads and idempotency keys),
/// `events` (the events and the new heads), `projections`, and `commit` (with its
/// sync); on SQLite also `checkpoint`, which runs beside the batches, not in them
/// (`writer::checkpoint_after_commits`). The writer is the one place appends queue,
/// so these say what bounds them.
pub(super) fn record_step(step: &'static str, since: Instant) {
    metrics::histogram!("quoteline_group_commit_step_seconds", "step" => step)
        .record(since.elapsed().as_secs_f64());
}

async fn existing_event_ids(conn: Conn<'_>, ids: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    on_backend!(conn, c => {
        in_list("SELECT event_id FROM events WHERE event_id IN (", ids)
            .build_query_scalar()
            .fetch_all(&mut *c)
            .await
    })
}

/// The heads of these streams. On SQLite they come as one row holding a JSON array
/// (ids as hex): sqlx hands SQLite's rows over from its worker thread one message
/// each, and for a batch's heads those hand-overs cost the writer more than the
/// read (see [`super::sql::SELECT_ALL`]).
async fn stream_heads(
    conn: Conn<'_>,
    streams: &[Uuid],
) -> Result<HashMap<Uuid, (i64, String)>, sqlx::Error> {
    const HEADS: &str = "SELECT stream_id, version, hash FROM streams WHERE stream_id IN (";
    const HEADS_AS_JSON: &str = "SELECT json_group_array(json_array(hex(stream_id), version, \
         hash)) FROM streams WHERE stream_id IN (";
    let rows: Vec<(Uuid, i64, String)> = match conn {
        Backend::Sqlite(c) => {
            let Json(rows) = in_list(HEADS_AS_JSON, streams)
                .build_query_scalar()
                .fetch_one(&mut *c)
                .await?;
            rows
        }
        Backend::Postgres(c) => {
            in_list(HEADS, streams)
                .build_query_as()
                .fetch_all(&mut *c)
                .await?
        }
    };
    Ok(rows.into_iter().map(|(id, v, h)| (id, (v, h))).collect())
}

/// One multi-row INSERT per thousand events; fills in each event's position.
///
/// PostgreSQL returns each row's position and transaction. SQLite returns nothing:
/// under its one write lock an `AUTOINCREMENT` table gives a statement's rows the
/// positions after the last one ever used, in the order of its `VALUES`, so they are
/// the `n` positions ending at its last rowid. (`RETURNING` would come back from
/// sqlx's worker thread one message a row; see [`stream_heads`].)
async fn insert_events(
    conn: Conn<'_>,
    accepted: &mut [(usize, Vec<RecordedEvent>)],
) -> Result<(), sqlx::Error> {
    let mut positions: HashMap<Uuid, GlobalPosition> = HashMap::new();
    let all: Vec<&RecordedEvent> = accepted.iter().flat_map(|(_, e)| e.iter()).collect();
    let mut conn = conn;
    for rows in all.chunks(ROWS_PER_INSERT) {
        let returned: Vec<(Uuid, i64, i64)> = match conn.reborrow() {
            Backend::Sqlite(c) => {
                let done = insert_events_statement(rows)
                    .build()
                    .execute(&mut *c)
                    .await?;
                let count = i64::try_from(rows.len()).expect("a chunk's length fits");
                if done.rows_affected() != rows.len() as u64 {
                    return Err(sqlx::Error::Protocol(format!(
                        "{} events inserted of {count}",
                        done.rows_affected()
                    )));
                }
                let first = done.last_insert_rowid() - count + 1;
                (first..)
                    .zip(rows)
                    .map(|(position, e)| (e.event_id, position, position))
                    .collect()
            }
            Backend::Postgres(c) => {
                let mut query = insert_events_statement(rows);
                query.push(" RETURNING event_id, position, tx_id::text::bigint");
                query.build_query_as().fetch_all(&mut *c).await?
            }
        };
        positions.extend(
            returned
                .into_iter()
                .map(|(id, position, commit)| (id, GlobalPosition { commit, position })),
        );
    }
    for (_, events) in accepted.iter_mut() {
        for event in events {
            event.global = *positions.get(&event.event_id).ok_or_else(|| {
                sqlx::Error::Protocol(format!("no position returned for event {}", event.event_id))
            })?;
        }
    }
    Ok(())
}

/// `INSERT INTO events (…) VALUES …` for these events, the values bound.
fn insert_events_statement<'a, DB>(rows: &[&'a RecordedEvent]) -> sqlx::QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    Uuid: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i64: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    i32: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    &'a String: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    &'a Option<String>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    Json<&'a serde_json::Value>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
    chrono::DateTime<chrono::Utc>: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut query = sqlx::QueryBuilder::new(
        "INSERT INTO events (stream_id, version, event_id, event_type, schema_version, \
         payload, actor, recorded_at, request_id, prev_hash, hash) ",
    );
    query.push_values(rows, |mut row, e| {
        push_event_values!(row, e);
    });
    query
}

/// Every touched stream's new head in one statement.
async fn move_heads(
    conn: Conn<'_>,
    accepted: &[(usize, Vec<RecordedEvent>)],
) -> Result<(), sqlx::Error> {
    upsert_heads(conn, accepted.iter().flat_map(|(_, events)| events.iter())).await
}

/// Moves each stream's head to the last of its `events` (in version order), in one
/// statement.
pub(super) async fn upsert_heads<'e>(
    conn: Conn<'_>,
    events: impl Iterator<Item = &'e RecordedEvent>,
) -> Result<(), sqlx::Error> {
    let mut last: HashMap<Uuid, &RecordedEvent> = HashMap::new();
    for event in events {
        last.insert(event.stream_id, event);
    }
    if last.is_empty() {
        return Ok(());
    }
    on_backend!(conn, c => {
        let mut query = sqlx::QueryBuilder::new("INSERT INTO streams (stream_id, version, hash, updated_at) ");
        query.push_values(last.values(), |mut row, e| {
            row.push_bind(e.stream_id)
                .push_bind(e.version)
                .push_bind(&e.hash)
                .push_bind(e.recorded_at);
        });
        query.push(
            " ON CONFLICT (stream_id) DO UPDATE \
              SET version = excluded.version, hash = excluded.hash, updated_at = excluded.updated_at",
        );
        query.build().execute(&mut *c).await?;
    });
    Ok(())
}
