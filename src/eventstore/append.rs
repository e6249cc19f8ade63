//! One append: the optimistic-concurrency check, the idempotency check, the hash
//! chain, the stream head and the inline projections, all on one connection inside
//! the caller's transaction.

use std::sync::Arc;

use sha2::{Digest, Sha256};
use sqlx::types::Json;
use uuid::Uuid;

use super::checkpoints::project;
use super::hash::{GENESIS, HashInput};
use super::model::{Appended, ExpectedVersion, GlobalPosition, Metadata, NewEvent, RecordedEvent};
use super::projector::{ProjectionError, Projector};
use super::sql;
use crate::db::{Conn, Unique, unique_violation};
use crate::on_backend;

#[derive(Debug, Clone, PartialEq)]
pub struct AppendRequest {
    pub stream_id: Uuid,
    pub expected: ExpectedVersion,
    pub events: Vec<NewEvent>,
    pub metadata: Metadata,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum AppendError {
    /// Another writer got there first: the stream is not at the version the command
    /// was decided on.
    #[error("stream {stream_id} is at version {actual}, not at {expected:?}")]
    Conflict {
        stream_id: Uuid,
        expected: ExpectedVersion,
        actual: i64,
    },
    /// A projection's unique constraint refused the events (for example a quote
    /// reference already taken). Nothing was written.
    #[error("unique constraint violated: {0:?}")]
    UniqueViolation(Unique),
    #[error("an append must carry at least one event")]
    NoEvents,
    #[error("the event store is shut down")]
    Closed,
    /// A projection could not read the events; nothing was written.
    #[error("projection failed: {0}")]
    Projection(Arc<ProjectionError>),
    #[error("database error: {0}")]
    Database(Arc<sqlx::Error>),
}

impl From<sqlx::Error> for AppendError {
    fn from(error: sqlx::Error) -> Self {
        AppendError::Database(Arc::new(error))
    }
}

/// The id of the `index`-th event of an append carrying `key`. Derived, so that a
/// retry of the same command finds the first attempt's events by their unique ids.
///
/// A key that is a UUID v7 (the forms' keys, minted as the form is drawn) gives its
/// time, to the millisecond, as the id's first 48 bits: the ids of recent appends
/// then sit together at the end of the events' `event_id` index, where a hashed id
/// lands each append on a page of its own anywhere in it (a page read and written
/// again for every event on SQLite). Any other key gives a hashed id, as every key
/// did before; a key's id never changes.
pub fn idempotent_event_id(stream_id: Uuid, key: &str, index: usize) -> Uuid {
    let digest = Sha256::new()
        .chain_update(b"quoteline/idempotency/v1\0")
        .chain_update(stream_id.as_bytes())
        .chain_update((key.len() as u64).to_be_bytes())
        .chain_update(key.as_bytes())
        .chain_update((index as u64).to_be_bytes())
        .finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    if let Some(minted) = time_ordered(key) {
        bytes[..6].copy_from_slice(&minted.as_bytes()[..6]);
    }
    uuid::Builder::from_custom_bytes(bytes).into_uuid()
}

/// The key as a UUID v7, if it is one. The rest of the id is hashed from the whole
/// key, so two keys of one millisecond still get ids of their own.
fn time_ordered(key: &str) -> Option<Uuid> {
    Uuid::try_parse(key)
        .ok()
        .filter(|uuid| uuid.get_version() == Some(uuid::Version::SortRand))
}

/// Appends inside the caller's transaction, without a savepoint: on error the
/// caller must roll back (the group-commit writer rolls back to its savepoint).
pub async fn append_in(
    mut conn: Conn<'_>,
    projectors: &[Arc<dyn Projector>],
    request: &AppendRequest,
) -> Result<Appended, AppendError> {
    if request.events.is_empty() {
        return Err(AppendError::NoEvents);
    }
    // The head before the key: see `append_batch_in` for why the order matters.
    let (current, prev_hash) = head_of(conn.reborrow(), request.stream_id).await?;
    if let Some(earlier) = find_earlier_append(conn.reborrow(), request).await? {
        return Ok(Appended::AlreadyWritten(earlier));
    }
    if !request.expected.matches(current) {
        return Err(AppendError::Conflict {
            stream_id: request.stream_id,
            expected: request.expected,
            actual: current,
        });
    }

    let mut recorded = chain(request, current, prev_hash);
    let insert = sql::INSERT_EVENT.on(&conn);
    for event in &mut recorded {
        let (position, commit): (i64, i64) = on_backend!(conn.reborrow(), c => {
            sqlx::query_as(insert)
                .bind(event.stream_id)
                .bind(event.version)
                .bind(event.event_id)
                .bind(&event.event_type)
                .bind(event.schema_version)
                .bind(Json(&event.payload))
                .bind(&event.actor)
                .bind(event.recorded_at)
                .bind(&event.request_id)
                .bind(&event.prev_hash)
                .bind(&event.hash)
                .fetch_one(&mut *c)
                .await
                .map_err(classify)?
        });
        event.global = GlobalPosition { commit, position };
    }

    let head = recorded.last().expect("an append has events");
    on_backend!(conn.reborrow(), c => {
        sqlx::query(sql::UPSERT_STREAM)
            .bind(head.stream_id)
            .bind(head.version)
            .bind(&head.hash)
            .bind(head.recorded_at)
            .execute(&mut *c)
            .await
            .map_err(classify)?;
    });

    let projectors: Vec<&dyn Projector> = projectors.iter().map(|p| p.as_ref()).collect();
    project(conn, &projectors, &recorded)
        .await
        .map_err(AppendError::from)?;
    Ok(Appended::Written(recorded))
}

/// The request's events with versions, ids and the hash chain; positions are
/// filled in by the insert.
pub(super) fn chain(
    request: &AppendRequest,
    current: i64,
    mut prev_hash: String,
) -> Vec<RecordedEvent> {
    let meta = &request.metadata;
    request
        .events
        .iter()
        .enumerate()
        .map(|(index, event)| {
            let version = current + 1 + index as i64;
            let event_id = match &meta.idempotency_key {
                Some(key) => idempotent_event_id(request.stream_id, key, index),
                None => Uuid::now_v7(),
            };
            let hash = HashInput {
                stream_id: request.stream_id,
                version,
                event_id,
                event_type: &event.event_type,
                schema_version: event.schema_version,
                payload: &event.payload,
                actor: &meta.actor,
                recorded_at: meta.recorded_at,
                request_id: meta.request_id.as_deref(),
                prev_hash: &prev_hash,
            }
            .hash();
            RecordedEvent {
                global: GlobalPosition::START,
                stream_id: request.stream_id,
                version,
                event_id,
                event_type: event.event_type.clone(),
                schema_version: event.schema_version,
                payload: event.payload.clone(),
                actor: meta.actor.clone(),
                recorded_at: meta.recorded_at,
                request_id: meta.request_id.clone(),
                prev_hash: std::mem::replace(&mut prev_hash, hash.clone()),
                hash,
            }
        })
        .collect()
}

/// After a failed append has been rolled back: a unique violation on the events
/// themselves means another writer (another instance, or a retry of this very
/// command) got there first. Work out which, and answer as the first one would.
pub async fn explain_failure(
    mut conn: Conn<'_>,
    request: &AppendRequest,
    error: AppendError,
) -> Result<Appended, AppendError> {
    if !matches!(
        error,
        AppendError::UniqueViolation(Unique::EventId | Unique::StreamVersion)
    ) {
        return Err(error);
    }
    if let Some(earlier) = find_earlier_append(conn.reborrow(), request).await? {
        return Ok(Appended::AlreadyWritten(earlier));
    }
    let (actual, _) = head_of(conn, request.stream_id).await?;
    Err(AppendError::Conflict {
        stream_id: request.stream_id,
        expected: request.expected,
        actual,
    })
}

impl From<ProjectionError> for AppendError {
    /// A unique constraint of a projection's table keeps its meaning (a quote
    /// reference already taken); anything else says which side failed.
    fn from(error: ProjectionError) -> Self {
        match error {
            ProjectionError::Database(error) => classify(error),
            other => AppendError::Projection(Arc::new(other)),
        }
    }
}

fn classify(error: sqlx::Error) -> AppendError {
    match unique_violation(&error) {
        Some(constraint) => AppendError::UniqueViolation(constraint),
        None => AppendError::from(error),
    }
}

async fn head_of(conn: Conn<'_>, stream_id: Uuid) -> Result<(i64, String), AppendError> {
    let head: Option<sql::HeadRow> = on_backend!(conn, c => {
        sqlx::query_as(sql::SELECT_STREAM_HEAD)
            .bind(stream_id)
            .fetch_optional(&mut *c)
            .await?
    });
    Ok(head.map_or_else(|| (0, GENESIS.to_owned()), |h| (h.version, h.hash)))
}

/// The events an earlier append with the same idempotency key wrote, if any.
pub(super) async fn find_earlier_append(
    mut conn: Conn<'_>,
    request: &AppendRequest,
) -> Result<Option<Vec<RecordedEvent>>, AppendError> {
    let Some(key) = &request.metadata.idempotency_key else {
        return Ok(None);
    };
    let first_id = idempotent_event_id(request.stream_id, key, 0);
    let (by_id, stream_from) = (
        sql::SELECT_EVENT_BY_ID.on(&conn),
        sql::SELECT_STREAM_FROM.on(&conn),
    );
    let first: Option<sql::EventRow> = on_backend!(conn.reborrow(), c => {
        sqlx::query_as(by_id)
            .bind(first_id)
            .fetch_optional(&mut *c)
            .await?
    });
    let Some(first) = first.map(RecordedEvent::from) else {
        return Ok(None);
    };
    let rows: Vec<sql::EventRow> = on_backend!(conn, c => {
        sqlx::query_as(stream_from)
            .bind(first.stream_id)
            .bind(first.version)
            .bind(MAX_EVENTS_PER_APPEND)
            .fetch_all(&mut *c)
            .await?
    });
    let events = rows
        .into_iter()
        .map(RecordedEvent::from)
        .enumerate()
        .take_while(|(i, e)| e.event_id == idempotent_event_id(request.stream_id, key, *i))
        .map(|(_, e)| e)
        .collect();
    Ok(Some(events))
}

/// More than any command decides; bounds the read that finds an earlier append.
const MAX_EVENTS_PER_APPEND: i64 = 256;

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: Uuid = Uuid::from_u128(0x0190_0000_0000_7000_8000_0000_0000_0001);

    fn v7(millis: u64, random: u8) -> String {
        uuid::Builder::from_unix_timestamp_millis(millis, &[random; 10])
            .into_uuid()
            .to_string()
    }

    #[test]
    fn a_key_that_is_no_uuid_v7_keeps_the_hashed_id_it_always_had() {
        // Ids already stored must be found again by a retry after an upgrade: these
        // are SHA-256 of the inputs, worked out beside the code (Python's hashlib).
        let v4 = "2f1e4c1a-9b7d-4c3e-8a5f-0d6b7e8f9a10";
        assert_eq!(
            idempotent_event_id(STREAM, v4, 0).to_string(),
            "3efd1f3d-e041-8c7d-834f-9efacd265f81"
        );
        assert_eq!(
            idempotent_event_id(STREAM, "bench-1-7", 0).to_string(),
            "5ac789b4-01a3-8bef-a595-8a286cfa7b2a"
        );
    }

    #[test]
    fn a_uuid_v7_key_puts_its_time_first_and_the_ids_in_the_order_of_their_keys() {
        let early = v7(1_796_000_000_000, 1);
        let id = idempotent_event_id(STREAM, &early, 0);
        assert_eq!(
            id.as_bytes()[..6],
            Uuid::parse_str(&early).unwrap().as_bytes()[..6]
        );
        assert_eq!(id.get_version(), Some(uuid::Version::Custom));
        assert_eq!(id, idempotent_event_id(STREAM, &early, 0));
        let later = idempotent_event_id(STREAM, &v7(1_796_000_000_001, 0), 0);
        assert!(id < later);
        // The rest is the key's hash: another key of the same millisecond, another
        // event of the append and another stream each get an id of their own.
        let others = [
            idempotent_event_id(STREAM, &v7(1_796_000_000_000, 2), 0),
            idempotent_event_id(STREAM, &early, 1),
            idempotent_event_id(Uuid::now_v7(), &early, 0),
        ];
        for other in others {
            assert_ne!(other, id);
            assert_eq!(other.as_bytes()[..6], id.as_bytes()[..6]);
        }
    }
}
