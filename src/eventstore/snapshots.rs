//! Snapshots: a stream's state as folded at a version, kept so that a load reads only
//! the events after it. The store knows streams, versions and JSON, not what the
//! state means; the aggregate's owner says which schema version its state has.
//!
//! A snapshot is a hint, never the truth:
//! - a load starts from the newest snapshot at or below the version it wants, of the
//!   state's current schema version, and folds the events after it; one of another
//!   schema version is ignored (and replaced by one of the current shape);
//! - snapshots are written after the command's commit, by a task of their own
//!   ([`Snapshotter`]), off the request's path: a snapshot that is never written
//!   costs a longer fold, nothing else;
//! - which versions get one is the [`SnapshotPolicy`]: every N events, when the newest
//!   snapshot is older than T, or both (whichever comes first).

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU64;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use sqlx::types::Json;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use uuid::Uuid;

use crate::db::Db;
use crate::on_backend;

/// When a stream gets a new snapshot. With neither rule, never.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotPolicy {
    /// Once this many events have been appended since the newest snapshot.
    pub every: Option<NonZeroU64>,
    /// Once the newest snapshot (or, with none, the stream's first event) is older
    /// than this and events have been appended since.
    pub older_than: Option<Duration>,
}

impl Default for SnapshotPolicy {
    /// Every 50 events: a typical quote (under 30 events) never needs one, and a long
    /// stream folds at most 49 events after its snapshot, which keeps a cold load
    /// under a millisecond on SQLite (100 events after it took 1.2 ms; BENCHMARKS.md).
    fn default() -> Self {
        SnapshotPolicy {
            every: NonZeroU64::new(50),
            older_than: None,
        }
    }
}

impl SnapshotPolicy {
    /// No snapshots at all.
    pub const NEVER: SnapshotPolicy = SnapshotPolicy {
        every: None,
        older_than: None,
    };

    pub fn is_never(&self) -> bool {
        self.every.is_none() && self.older_than.is_none()
    }

    /// Whether a stream now at `version` needs a snapshot, given its newest one (or
    /// its start) at `newest`.
    pub fn is_due(&self, version: i64, newest: Mark, now: DateTime<Utc>) -> bool {
        if version <= newest.version {
            return false;
        }
        let by_count = self
            .every
            .is_some_and(|n| (version - newest.version) as u64 >= n.get());
        let by_age = self.older_than.is_some_and(|age| {
            now.signed_duration_since(newest.at)
                .to_std()
                .is_ok_and(|elapsed| elapsed >= age)
        });
        by_count || by_age
    }
}

/// Where a stream's newest snapshot stands: its version and when it was taken. A
/// stream with none is marked at version 0 when its first event was recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    pub version: i64,
    pub at: DateTime<Utc>,
}

/// A stored snapshot, its state not yet read into the aggregate's type.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub stream_id: Uuid,
    pub version: i64,
    pub schema_version: i32,
    pub state: Value,
    pub taken_at: DateTime<Utc>,
}

impl Snapshot {
    /// The state as `T` when it was taken in `schema_version`; `None` when it is of
    /// another shape (or, against expectation, does not read as `T`).
    pub fn state_as<T: DeserializeOwned>(&self, schema_version: i32) -> Option<T> {
        if self.schema_version != schema_version {
            return None;
        }
        match serde_json::from_value(self.state.clone()) {
            Ok(state) => Some(state),
            Err(error) => {
                tracing::warn!(stream_id = %self.stream_id, version = self.version, %error,
                    "a snapshot of the current schema version does not read; ignored");
                None
            }
        }
    }
}

/// The `snapshots` table.
#[derive(Clone)]
pub struct Snapshots {
    db: Db,
}

type SnapshotRow = (i64, i32, Json<Value>, DateTime<Utc>);

/// Rows per INSERT of snapshots: 5 parameters each, far below both backends' limits.
const SNAPSHOTS_PER_INSERT: usize = 500;

const DISCARD_OTHER_SCHEMAS: &str =
    "DELETE FROM snapshots WHERE stream_id = $1 AND schema_version <> $2";

/// A snapshot to keep: the stream's state at a version.
pub struct Taken<'a, T> {
    pub stream_id: Uuid,
    pub version: i64,
    pub state: &'a T,
    /// The stream's snapshots of other schema versions go.
    pub replace: bool,
}

impl Snapshots {
    pub fn new(db: Db) -> Self {
        Snapshots { db }
    }

    /// The stream's newest snapshot at or below `up_to` (any version without it), of
    /// whatever schema version.
    pub async fn newest(
        &self,
        stream_id: Uuid,
        up_to: Option<i64>,
    ) -> Result<Option<Snapshot>, sqlx::Error> {
        let row: Option<SnapshotRow> = on_backend!(&self.db, pool => {
            sqlx::query_as(
                "SELECT version, schema_version, state, taken_at FROM snapshots \
                 WHERE stream_id = $1 AND version <= $2 ORDER BY version DESC LIMIT 1",
            )
            .bind(stream_id)
            .bind(up_to.unwrap_or(i64::MAX))
            .fetch_optional(pool)
            .await?
        });
        Ok(
            row.map(|(version, schema_version, state, taken_at)| Snapshot {
                stream_id,
                version,
                schema_version,
                state: state.0,
                taken_at,
            }),
        )
    }

    /// Keeps `state` as the stream's state at `version` (replacing a snapshot of that
    /// version, whatever its schema version).
    pub async fn save<T: Serialize + Sync>(
        &self,
        stream_id: Uuid,
        version: i64,
        schema_version: i32,
        state: &T,
        taken_at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let taken = Taken {
            stream_id,
            version,
            state,
            replace: false,
        };
        self.save_all(&[taken], schema_version, taken_at).await
    }

    /// Keeps every one of `taken` in one write transaction (one commit, however many),
    /// and deletes the snapshots of other schema versions of those that replace them.
    /// One offered twice for a stream and version is kept once (the last state), and
    /// rows are written in key order, so that two processes writing the same streams
    /// lock them in the same order.
    pub async fn save_all<T: Serialize + Sync>(
        &self,
        taken: &[Taken<'_, T>],
        schema_version: i32,
        taken_at: DateTime<Utc>,
    ) -> Result<(), sqlx::Error> {
        let mut kept: BTreeMap<(Uuid, i64), (&T, bool)> = BTreeMap::new();
        for taken in taken {
            let entry = kept
                .entry((taken.stream_id, taken.version))
                .or_insert((taken.state, false));
            *entry = (taken.state, entry.1 || taken.replace);
        }
        let taken: Vec<Taken<'_, T>> = kept
            .into_iter()
            .map(|((stream_id, version), (state, replace))| Taken {
                stream_id,
                version,
                state,
                replace,
            })
            .collect();
        if taken.is_empty() {
            return Ok(());
        }
        let mut pooled = self.db.acquire().await?;
        let mut tx = pooled.as_conn().begin_write().await?;
        on_backend!(tx.as_conn(), c => {
            for chunk in taken.chunks(SNAPSHOTS_PER_INSERT) {
                let mut insert = sqlx::QueryBuilder::new(
                    "INSERT INTO snapshots (stream_id, version, schema_version, state, taken_at) ",
                );
                insert.push_values(chunk, |mut row, taken| {
                    row.push_bind(taken.stream_id)
                        .push_bind(taken.version)
                        .push_bind(schema_version)
                        .push_bind(Json(taken.state))
                        .push_bind(taken_at);
                });
                insert.push(
                    " ON CONFLICT (stream_id, version) DO UPDATE \
                     SET schema_version = excluded.schema_version, state = excluded.state, \
                         taken_at = excluded.taken_at",
                );
                insert.build().execute(&mut *c).await?;
            }
            for taken in taken.iter().filter(|taken| taken.replace) {
                sqlx::query(DISCARD_OTHER_SCHEMAS)
                    .bind(taken.stream_id)
                    .bind(schema_version)
                    .execute(&mut *c)
                    .await?;
            }
        });
        tx.commit().await
    }

    /// Where the stream's newest snapshot of `schema_version` stands, or with none its
    /// first event; `None` for a stream with no events.
    pub async fn mark(
        &self,
        stream_id: Uuid,
        schema_version: i32,
    ) -> Result<Option<Mark>, sqlx::Error> {
        let newest: Option<(i64, DateTime<Utc>)> = on_backend!(&self.db, pool => {
            sqlx::query_as(
                "SELECT version, taken_at FROM snapshots \
                 WHERE stream_id = $1 AND schema_version = $2 ORDER BY version DESC LIMIT 1",
            )
            .bind(stream_id)
            .bind(schema_version)
            .fetch_optional(pool)
            .await?
        });
        if let Some((version, at)) = newest {
            return Ok(Some(Mark { version, at }));
        }
        let started: Option<DateTime<Utc>> = on_backend!(&self.db, pool => {
            sqlx::query_scalar("SELECT recorded_at FROM events WHERE stream_id = $1 AND version = 1")
                .bind(stream_id)
                .fetch_optional(pool)
                .await?
        });
        Ok(started.map(|at| Mark { version: 0, at }))
    }
}

/// How many offers may wait for the snapshot task; more are dropped (the next
/// command on the stream offers again).
const WAITING_OFFERS: usize = 1_024;
/// How many streams' marks the task remembers.
const REMEMBERED_MARKS: u64 = 100_000;

enum Message<T> {
    Offer {
        stream_id: Uuid,
        version: i64,
        state: Arc<T>,
        /// Written whatever the policy, and the stream's snapshots of other schema
        /// versions deleted: the newest one was of another shape.
        replace: bool,
    },
    Flush(oneshot::Sender<()>),
}

/// Writes snapshots of `T` (schema version `schema_version`) as the policy asks, in a
/// task of its own. Cheap to clone.
pub struct Snapshotter<T> {
    sender: mpsc::Sender<Message<T>>,
    policy: SnapshotPolicy,
}

impl<T> Clone for Snapshotter<T> {
    fn clone(&self) -> Self {
        Snapshotter {
            sender: self.sender.clone(),
            policy: self.policy,
        }
    }
}

impl<T: Serialize + Send + Sync + 'static> Snapshotter<T> {
    /// Starts the task; call from within the tokio runtime.
    pub fn spawn(snapshots: Snapshots, policy: SnapshotPolicy, schema_version: i32) -> Self {
        let (sender, receiver) = mpsc::channel(WAITING_OFFERS);
        tokio::spawn(run(snapshots, policy, schema_version, receiver));
        Snapshotter { sender, policy }
    }

    pub fn policy(&self) -> SnapshotPolicy {
        self.policy
    }

    /// The stream's state at `version`, kept when the policy says so. Never waits.
    pub fn offer(&self, stream_id: Uuid, version: i64, state: Arc<T>) {
        if !self.policy.is_never() {
            self.send(Message::Offer {
                stream_id,
                version,
                state,
                replace: false,
            });
        }
    }

    /// The stream's state at `version`, kept whatever the policy, because its newest
    /// snapshot is of another schema version (which goes). Never waits.
    pub fn replace(&self, stream_id: Uuid, version: i64, state: Arc<T>) {
        self.send(Message::Offer {
            stream_id,
            version,
            state,
            replace: true,
        });
    }

    fn send(&self, message: Message<T>) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.sender.try_send(message) {
            tracing::debug!("the snapshot task is behind; an offer was dropped");
        }
    }

    /// Returns once every offer made before the call has been dealt with.
    pub async fn flush(&self) {
        let (done, finished) = oneshot::channel();
        if self.sender.send(Message::Flush(done)).await.is_ok() {
            let _ = finished.await;
        }
    }
}

async fn run<T: Serialize + Send + Sync>(
    snapshots: Snapshots,
    policy: SnapshotPolicy,
    schema_version: i32,
    mut messages: mpsc::Receiver<Message<T>>,
) {
    // Each stream's mark as last read or written here. Other processes' snapshots
    // are not seen until the entry goes; the worst that does is a snapshot more.
    let marks: moka::future::Cache<Uuid, Mark> = moka::future::Cache::new(REMEMBERED_MARKS);
    let mut received = Vec::with_capacity(WAITING_OFFERS);
    let mut written_at: Option<Instant> = None;
    while messages.recv_many(&mut received, WAITING_OFFERS).await > 0 {
        // Offers come a few at a time, one per command: gather those of the next
        // moment, unless someone waits for a flush, so that one commit keeps many.
        // On SQLite every commit of this task also waits for, and holds up, the
        // appends' group commit.
        let flushing = received.iter().any(|m| matches!(m, Message::Flush(_)));
        if let Some(at) = written_at.filter(|_| !flushing) {
            tokio::time::sleep_until(at + GATHER).await;
            while received.len() < WAITING_OFFERS {
                match messages.try_recv() {
                    Ok(message) => received.push(message),
                    Err(_) => break,
                }
            }
        }
        let mut offers = Vec::with_capacity(received.len());
        let mut flushes = Vec::new();
        for message in received.drain(..) {
            match message {
                Message::Offer {
                    stream_id,
                    version,
                    state,
                    replace,
                } => offers.push((stream_id, version, state, replace)),
                Message::Flush(done) => flushes.push(done),
            }
        }
        if take(&snapshots, &marks, policy, schema_version, offers).await {
            written_at = Some(Instant::now());
        }
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// How long the task gathers offers after it has written some.
const GATHER: Duration = Duration::from_millis(100);

type Offer<T> = (Uuid, i64, Arc<T>, bool);

/// Writes those of `offers` that are due (or must replace another shape), in one
/// commit; whether it wrote any. The marks they move are remembered only once
/// they are written.
async fn take<T: Serialize + Sync>(
    snapshots: &Snapshots,
    marks: &moka::future::Cache<Uuid, Mark>,
    policy: SnapshotPolicy,
    schema_version: i32,
    offers: Vec<Offer<T>>,
) -> bool {
    let now = Utc::now();
    // The newest mark each stream will have once `due` is written.
    let mut moved: HashMap<Uuid, Mark> = HashMap::new();
    let mut due: Vec<Taken<'_, T>> = Vec::new();
    for (stream_id, version, state, replace) in &offers {
        let (stream_id, version, replace) = (*stream_id, *version, *replace);
        if !replace {
            let mark = match moved.get(&stream_id) {
                Some(mark) => Some(*mark),
                None => match marks.get(&stream_id).await {
                    Some(mark) => Some(mark),
                    None => match snapshots.mark(stream_id, schema_version).await {
                        Ok(mark) => {
                            if let Some(mark) = mark {
                                marks.insert(stream_id, mark).await;
                            }
                            mark
                        }
                        Err(error) => {
                            tracing::warn!(%stream_id, version, %error, "a snapshot's mark could not be read");
                            continue;
                        }
                    },
                },
            };
            if !mark.is_some_and(|mark| policy.is_due(version, mark, now)) {
                continue;
            }
        }
        due.push(Taken {
            stream_id,
            version,
            state,
            replace,
        });
        let newest = moved.entry(stream_id).or_insert(Mark { version, at: now });
        newest.version = newest.version.max(version);
    }
    if due.is_empty() {
        return false;
    }
    if let Err(error) = snapshots.save_all(&due, schema_version, now).await {
        tracing::warn!(snapshots = due.len(), %error, "snapshots could not be written");
        return false;
    }
    for (stream_id, mark) in moved {
        let remembered = marks.get(&stream_id).await;
        if remembered.is_none_or(|remembered| remembered.version < mark.version) {
            marks.insert(stream_id, mark).await;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + seconds, 0).unwrap()
    }

    fn mark(version: i64, seconds: i64) -> Mark {
        Mark {
            version,
            at: at(seconds),
        }
    }

    #[test]
    fn every_n_events_counts_from_the_newest_snapshot() {
        let policy = SnapshotPolicy {
            every: NonZeroU64::new(10),
            older_than: None,
        };
        assert!(!policy.is_due(9, mark(0, 0), at(0)));
        assert!(policy.is_due(10, mark(0, 0), at(0)));
        assert!(!policy.is_due(19, mark(10, 0), at(1_000_000)));
        assert!(policy.is_due(23, mark(10, 0), at(0)));
    }

    #[test]
    fn older_than_t_needs_events_since_the_newest_snapshot() {
        let policy = SnapshotPolicy {
            every: None,
            older_than: Some(Duration::from_secs(3600)),
        };
        assert!(!policy.is_due(5, mark(0, 0), at(3599)));
        assert!(policy.is_due(5, mark(0, 0), at(3600)));
        assert!(!policy.is_due(5, mark(5, 0), at(100_000)), "nothing new");
        assert!(policy.is_due(6, mark(5, 0), at(100_000)));
    }

    #[test]
    fn hybrid_is_whichever_comes_first() {
        let policy = SnapshotPolicy {
            every: NonZeroU64::new(100),
            older_than: Some(Duration::from_secs(60)),
        };
        assert!(policy.is_due(100, mark(0, 0), at(1)), "by count");
        assert!(policy.is_due(2, mark(0, 0), at(60)), "by age");
        assert!(!policy.is_due(99, mark(0, 0), at(59)));
    }

    #[test]
    fn never_is_never_due() {
        assert!(SnapshotPolicy::NEVER.is_never());
        assert!(!SnapshotPolicy::NEVER.is_due(1_000_000, mark(0, 0), at(1_000_000)));
        assert!(!SnapshotPolicy::default().is_never());
    }

    #[test]
    fn a_snapshot_of_another_schema_version_does_not_read() {
        let snapshot = Snapshot {
            stream_id: Uuid::nil(),
            version: 3,
            schema_version: 1,
            state: serde_json::json!({"n": 3}),
            taken_at: at(0),
        };
        #[derive(serde::Deserialize, PartialEq, Debug)]
        struct State {
            n: u32,
        }
        assert_eq!(snapshot.state_as::<State>(1), Some(State { n: 3 }));
        assert_eq!(snapshot.state_as::<State>(2), None);
        let misshapen = Snapshot {
            state: serde_json::json!({"m": 3}),
            ..snapshot
        };
        assert_eq!(misshapen.state_as::<State>(1), None);
    }
}
