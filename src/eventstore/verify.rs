//! Walks every stream's hash chain and its head in `streams`, reporting each place
//! where the stored history differs from what was appended.

use std::fmt;

use uuid::Uuid;

use super::hash::{GENESIS, HashInput};
use super::model::{RecordedEvent, StreamHead};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub stream_id: Uuid,
    pub version: i64,
    pub problem: Problem,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// The event's content no longer gives the hash stored with it.
    ContentChanged,
    /// The event does not point at the hash of the event before it.
    BrokenLink,
    /// Versions `from..=to` are absent from the log.
    Missing { from: i64, to: i64 },
    /// The `streams` table records a head the log does not end with.
    HeadMismatch {
        head_version: i64,
        last_version: i64,
    },
    /// Events exist for a stream the `streams` table does not know.
    NoHead,
    /// The stream's archived events are in a segment that cannot be read (missing,
    /// altered, or its store unreachable); `reason` names the segment.
    ArchiveUnreadable { reason: String },
    /// The segment's last event of the stream is not the one its manifest records.
    ArchiveManifest { segment: Uuid },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::ContentChanged => write!(f, "the event's content does not match its hash"),
            Problem::BrokenLink => {
                write!(
                    f,
                    "the event does not link to the hash of the event before it"
                )
            }
            Problem::Missing { from, to } if from == to => write!(f, "event {from} is missing"),
            Problem::Missing { from, to } => write!(f, "events {from} to {to} are missing"),
            Problem::HeadMismatch {
                head_version,
                last_version,
            } => write!(
                f,
                "the stream's head says version {head_version} but its last event is version {last_version}"
            ),
            Problem::NoHead => write!(f, "the stream has events but no head in the streams table"),
            Problem::ArchiveUnreadable { reason } => {
                write!(f, "the stream's archived events cannot be read: {reason}")
            }
            Problem::ArchiveManifest { segment } => write!(
                f,
                "archive segment {segment} does not end the stream with the hash its manifest records"
            ),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VerifyReport {
    pub streams_checked: u64,
    /// Archive segments fetched and checked against their manifest.
    pub segments_checked: u64,
    pub events_checked: u64,
    pub mismatches: Vec<Mismatch>,
}

impl VerifyReport {
    pub fn is_intact(&self) -> bool {
        self.mismatches.is_empty()
    }
}

/// Checks one stream's events (in version order) against each other and its head.
pub fn verify_stream(
    stream_id: Uuid,
    head: Option<&StreamHead>,
    events: &[RecordedEvent],
) -> Vec<Mismatch> {
    let mut found = Vec::new();
    let mut mismatch = |version, problem| {
        found.push(Mismatch {
            stream_id,
            version,
            problem,
        })
    };
    let mut expected_version = 1;
    let mut expected_prev = GENESIS;
    for event in events {
        if event.version > expected_version {
            mismatch(
                expected_version,
                Problem::Missing {
                    from: expected_version,
                    to: event.version - 1,
                },
            );
        } else if event.prev_hash != expected_prev {
            mismatch(event.version, Problem::BrokenLink);
        }
        if recompute(event) != event.hash {
            mismatch(event.version, Problem::ContentChanged);
        }
        expected_version = event.version + 1;
        expected_prev = &event.hash;
    }
    let last = events.last();
    match (head, last) {
        (None, Some(_)) => mismatch(1, Problem::NoHead),
        (Some(head), last) => {
            let last_version = last.map_or(0, |e| e.version);
            let last_hash = last.map_or(GENESIS, |e| e.hash.as_str());
            if head.version != last_version || head.hash != last_hash {
                let version = head.version.max(last_version);
                if head.version > last_version {
                    mismatch(
                        last_version + 1,
                        Problem::Missing {
                            from: last_version + 1,
                            to: head.version,
                        },
                    );
                } else {
                    mismatch(
                        version,
                        Problem::HeadMismatch {
                            head_version: head.version,
                            last_version,
                        },
                    );
                }
            }
        }
        (None, None) => {}
    }
    found
}

fn recompute(event: &RecordedEvent) -> String {
    HashInput {
        stream_id: event.stream_id,
        version: event.version,
        event_id: event.event_id,
        event_type: &event.event_type,
        schema_version: event.schema_version,
        payload: &event.payload,
        actor: &event.actor,
        recorded_at: event.recorded_at,
        request_id: event.request_id.as_deref(),
        prev_hash: &event.prev_hash,
    }
    .hash()
}
