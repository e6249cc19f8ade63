//! What goes into the store and what comes out of it.

use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// An event a command decided on, not yet recorded.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub event_type: String,
    pub schema_version: i32,
    pub payload: Value,
}

/// Who and what caused an append. Recorded on every event it writes.
#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    pub actor: String,
    pub request_id: Option<String>,
    /// A retry carrying the same key returns the first outcome and writes nothing.
    pub idempotency_key: Option<String>,
    pub recorded_at: DateTime<Utc>,
}

impl Metadata {
    pub fn new(actor: impl Into<String>, recorded_at: DateTime<Utc>) -> Self {
        Metadata {
            actor: actor.into(),
            request_id: None,
            idempotency_key: None,
            // PostgreSQL keeps microseconds; truncating here makes the hash computed
            // before the write equal the one recomputed from what was stored.
            recorded_at: recorded_at.trunc_subsecs(6),
        }
    }

    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }

    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = Some(key.into());
        self
    }
}

/// The version a writer believes a stream is at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedVersion {
    /// Append whatever the stream's version (used by tools, never by commands).
    Any,
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have exactly this version.
    Exact(i64),
}

impl ExpectedVersion {
    pub fn matches(self, current: i64) -> bool {
        match self {
            ExpectedVersion::Any => true,
            ExpectedVersion::NoStream => current == 0,
            ExpectedVersion::Exact(v) => current == v,
        }
    }
}

impl From<i64> for ExpectedVersion {
    fn from(version: i64) -> Self {
        if version == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(version)
        }
    }
}

/// A place in the store's total order. On SQLite `commit` equals `position`, since
/// one writer at a time makes position order the commit order. On PostgreSQL
/// `commit` is the writing transaction's id: readers order by (commit, position),
/// which never lets an event that commits late slip behind one already read.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct GlobalPosition {
    pub commit: i64,
    pub position: i64,
}

impl GlobalPosition {
    /// Before the first event.
    pub const START: GlobalPosition = GlobalPosition {
        commit: 0,
        position: 0,
    };
}

/// An event as the store holds it (and as an archive segment holds it, one JSON
/// object a line).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedEvent {
    pub global: GlobalPosition,
    pub stream_id: Uuid,
    pub version: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub schema_version: i32,
    pub payload: Value,
    pub actor: String,
    pub recorded_at: DateTime<Utc>,
    pub request_id: Option<String>,
    pub prev_hash: String,
    pub hash: String,
}

impl RecordedEvent {
    pub fn position(&self) -> i64 {
        self.global.position
    }
}

/// What an append did.
#[derive(Debug, Clone, PartialEq)]
pub enum Appended {
    /// The events were written now.
    Written(Vec<RecordedEvent>),
    /// The idempotency key had been seen: these are the events the first append
    /// wrote, and nothing was written this time.
    AlreadyWritten(Vec<RecordedEvent>),
}

impl Appended {
    pub fn events(&self) -> &[RecordedEvent] {
        match self {
            Appended::Written(events) | Appended::AlreadyWritten(events) => events,
        }
    }

    pub fn into_events(self) -> Vec<RecordedEvent> {
        match self {
            Appended::Written(events) | Appended::AlreadyWritten(events) => events,
        }
    }

    /// The stream's version after the append.
    pub fn last_version(&self) -> Option<i64> {
        self.events().last().map(|e| e.version)
    }
}

/// A stream's head as kept in the `streams` table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamHead {
    pub stream_id: Uuid,
    pub version: i64,
    pub hash: String,
}
