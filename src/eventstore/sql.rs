//! The event store's SQL, written once for both backends, and the rows it reads.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use super::model::{GlobalPosition, RecordedEvent};
use crate::db::Backend;

macro_rules! event_columns {
    () => {
        "position, stream_id, version, event_id, event_type, schema_version, payload, \
         actor, recorded_at, request_id, prev_hash, hash"
    };
}

/// Binds an event's columns after `position`, in [`event_columns!`]'s order, to a row
/// of a multi-row `INSERT INTO events (…) VALUES`: the one list the batch append and
/// the copy share.
macro_rules! push_event_values {
    ($row:expr, $e:expr) => {
        $row.push_bind($e.stream_id)
            .push_bind($e.version)
            .push_bind($e.event_id)
            .push_bind(&$e.event_type)
            .push_bind($e.schema_version)
            .push_bind(::sqlx::types::Json(&$e.payload))
            .push_bind(&$e.actor)
            .push_bind($e.recorded_at)
            .push_bind(&$e.request_id)
            .push_bind(&$e.prev_hash)
            .push_bind(&$e.hash)
    };
}
pub(super) use push_event_values;

/// The transaction id as a number, for readers' commit order (see `GlobalPosition`).
macro_rules! pg_commit {
    () => {
        "tx_id::text::bigint AS commit_seq"
    };
}

/// The marker row's columns after `position, stream_id`: literals each backend
/// reads as the column's type (PostgreSQL types a UNION's untyped literals by the
/// first branch); nothing but the version means anything.
macro_rules! archived_marker {
    () => {
        "-1, stream_id, '', 0, '{}', '', '1970-01-01T00:00:00Z', NULL, '', '', 0"
    };
}

pub const INSERT_EVENT_SQLITE: &str = concat!(
    "INSERT INTO events (",
    event_columns!(),
    ") VALUES (NULL, $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
     RETURNING position, position AS commit_seq"
);

pub const INSERT_EVENT_POSTGRES: &str = concat!(
    "INSERT INTO events (stream_id, version, event_id, event_type, schema_version, payload, \
     actor, recorded_at, request_id, prev_hash, hash) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
     RETURNING position, ",
    pg_commit!()
);

pub const UPSERT_STREAM: &str = "INSERT INTO streams (stream_id, version, hash, updated_at) \
     VALUES ($1, $2, $3, $4) \
     ON CONFLICT (stream_id) DO UPDATE \
     SET version = excluded.version, hash = excluded.hash, updated_at = excluded.updated_at";

pub const SELECT_STREAM_HEAD: &str =
    "SELECT stream_id, version, hash FROM streams WHERE stream_id = $1";

pub const SELECT_STREAM_HEADS_PAGE: &str =
    "SELECT stream_id, version, hash FROM streams WHERE stream_id > $1 ORDER BY stream_id LIMIT $2";

/// A statement whose text differs between the backends only where it must.
#[derive(Debug, Clone, Copy)]
pub struct Sql {
    pub sqlite: &'static str,
    pub postgres: &'static str,
}

impl Sql {
    pub fn on<S, P>(&self, backend: &Backend<S, P>) -> &'static str {
        match backend {
            Backend::Sqlite(_) => self.sqlite,
            Backend::Postgres(_) => self.postgres,
        }
    }
}

/// A read of events; the text after the column list is the same on both backends.
macro_rules! select_events {
    ($($tail:expr),+) => {
        Sql {
            sqlite: concat!("SELECT ", event_columns!(), ", position AS commit_seq ", $($tail),+),
            postgres: concat!("SELECT ", event_columns!(), ", ", pg_commit!(), " ", $($tail),+),
        }
    };
}

pub const INSERT_EVENT: Sql = Sql {
    sqlite: INSERT_EVENT_SQLITE,
    postgres: INSERT_EVENT_POSTGRES,
};

pub const SELECT_EVENT_BY_ID: Sql = select_events!("FROM events WHERE event_id = $1");

/// The events of one append, found again by its first event: the same stream from
/// that version on (the caller keeps the ones whose ids the key derives).
pub const SELECT_STREAM_FROM: Sql =
    select_events!("FROM events WHERE stream_id = $1 AND version >= $2 ORDER BY version LIMIT $3");

/// The events of several streams: the caller binds the ids and closes the list.
pub const SELECT_STREAMS: Sql = select_events!("FROM events WHERE stream_id IN (");

/// The stream's hot events after a version and, first, a marker row (version -1)
/// when the archive holds events of it after that version: one statement, one
/// snapshot, and no second round trip for a stream the archive holds nothing more
/// of (the usual read, of a quote cached at its last version).
pub const SELECT_STREAM_AFTER: Sql = select_events!(
    "FROM events WHERE stream_id = $1 AND version > $2 \
     UNION ALL SELECT 0, stream_id, ",
    archived_marker!(),
    " FROM archived_streams WHERE stream_id = $1 AND last_version > $2 ORDER BY version"
);

/// The version of [`SELECT_STREAM_AFTER`]'s marker row.
pub const ARCHIVED_MARKER: i64 = -1;

impl EventRow {
    /// The marker row that says the archive holds more of the stream.
    pub fn is_archived_marker(&self) -> bool {
        self.version == ARCHIVED_MARKER
    }
}

/// Every event in (stream, version) order, a page at a time: the chain verifier's walk.
pub const SELECT_BY_STREAM_PAGE: Sql = select_events!(
    "FROM events WHERE (stream_id, version) > ($1, $2) ORDER BY stream_id, version LIMIT $3"
);

pub const SELECT_ALL: Sql = Sql {
    // One writer at a time, so position order is commit order. ($1 is the commit
    // part of the cursor, which on SQLite is the position itself.) The page comes as
    // one row holding a JSON array of its events, each an array of [`EventRow`]'s
    // fields (ids as hex, the payload as JSON): sqlx hands SQLite's rows over from
    // its worker thread one message each, and those messages cost a rebuild more
    // than the statement did.
    sqlite: concat!(
        "SELECT json_group_array(json_array(position, position, hex(stream_id), version, \
         hex(event_id), event_type, schema_version, json(payload), actor, recorded_at, \
         request_id, prev_hash, hash) ORDER BY position) FROM (SELECT ",
        event_columns!(),
        " FROM events WHERE position > $2 ORDER BY position LIMIT $3) AS page"
    ),
    // Only rows of transactions older than every one still running, in
    // (transaction, position) order. A long transaction delays readers; it cannot
    // make them skip its events.
    postgres: concat!(
        "SELECT ",
        event_columns!(),
        ", ",
        pg_commit!(),
        " FROM events \
         WHERE (tx_id, position) > ($1::text::xid8, $2) \
           AND tx_id < pg_snapshot_xmin(pg_current_snapshot()) \
         ORDER BY tx_id, position LIMIT $3"
    ),
};

/// [`SELECT_ALL`] while no transaction can be writing an event (PostgreSQL: under an
/// EXCLUSIVE lock on `events`): every event there is, in the same order.
pub const SELECT_ALL_QUIESCED: Sql = Sql {
    sqlite: SELECT_ALL.sqlite,
    postgres: concat!(
        "SELECT ",
        event_columns!(),
        ", ",
        pg_commit!(),
        " FROM events WHERE (tx_id, position) > ($1::text::xid8, $2) \
         ORDER BY tx_id, position LIMIT $3"
    ),
};

/// An event as the store's reads return it: a row, or on SQLite an element of a
/// page's JSON array (its columns in this order; see [`SELECT_ALL`]).
#[derive(sqlx::FromRow, serde::Deserialize)]
pub struct EventRow {
    position: i64,
    commit_seq: i64,
    stream_id: Uuid,
    version: i64,
    event_id: Uuid,
    event_type: String,
    schema_version: i32,
    payload: Json<Value>,
    actor: String,
    recorded_at: DateTime<Utc>,
    request_id: Option<String>,
    prev_hash: String,
    hash: String,
}

impl From<EventRow> for RecordedEvent {
    fn from(row: EventRow) -> Self {
        RecordedEvent {
            global: GlobalPosition {
                commit: row.commit_seq,
                position: row.position,
            },
            stream_id: row.stream_id,
            version: row.version,
            event_id: row.event_id,
            event_type: row.event_type,
            schema_version: row.schema_version,
            payload: row.payload.0,
            actor: row.actor,
            recorded_at: row.recorded_at,
            request_id: row.request_id,
            prev_hash: row.prev_hash,
            hash: row.hash,
        }
    }
}

#[derive(sqlx::FromRow)]
pub struct HeadRow {
    pub stream_id: Uuid,
    pub version: i64,
    pub hash: String,
}
