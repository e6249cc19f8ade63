//! The event store: an append-only log of domain events in SQL, on SQLite or
//! PostgreSQL. It knows streams, versions and bytes, not quotes.
//!
//! Appends go through one group-commit writer ([`writer`]); each append checks the
//! stream's expected version, honours idempotency keys, extends the stream's hash
//! chain and runs the registered [`Projector`]s in the same transaction.

mod append;
pub mod archive;
mod batch;
pub mod checkpoints;
pub mod copy;
mod fill;
pub mod hash;
pub mod heads;
mod model;
mod projector;
mod snapshots;
mod sql;
mod verify;
mod writer;

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

pub use append::{AppendError, AppendRequest, idempotent_event_id};
pub use archive::{ArchiveError, ArchiveLocation, ReadError};
pub use checkpoints::{CatchUpError, catch_up};
pub use fill::fill;
pub use hash::GENESIS;
pub use heads::{Follower, Heads, HeadsFeed};
pub use model::{
    Appended, ExpectedVersion, GlobalPosition, Metadata, NewEvent, RecordedEvent, StreamHead,
};
pub use projector::{Fill, Part, ProjectionError, Projector, Rebuildable, Together, clear_part};
pub use snapshots::{Mark, Snapshot, SnapshotPolicy, Snapshots, Snapshotter, Taken};
pub use verify::{Mismatch, Problem, VerifyReport, verify_stream};

use crate::db::{Conn, Db};
use crate::on_backend;

#[derive(Clone)]
pub struct EventStore {
    db: Db,
    writer: mpsc::Sender<writer::Job>,
    projectors: projector::Projectors,
}

impl EventStore {
    /// Starts the store's writer, on a thread of its own; call from within the tokio
    /// runtime.
    pub fn new(db: Db, projectors: Vec<Arc<dyn Projector>>) -> Self {
        let projectors: projector::Projectors = projectors.into();
        let writer = writer::spawn(db.clone(), projectors.clone());
        EventStore {
            db,
            writer,
            projectors,
        }
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    /// Appends through the group-commit writer. Returns once the events are
    /// committed (or were already, for a repeated idempotency key).
    #[tracing::instrument(skip_all, fields(stream_id = %request.stream_id, events = request.events.len()))]
    pub async fn append(&self, request: AppendRequest) -> Result<Appended, AppendError> {
        let (reply, answer) = oneshot::channel();
        self.writer
            .send(writer::Job { request, reply })
            .await
            .map_err(|_| AppendError::Closed)?;
        answer.await.map_err(|_| AppendError::Closed)?
    }

    /// Appends inside a transaction the caller holds open (tools and tests that
    /// must control the transaction). On error the caller must roll back.
    pub async fn append_within(
        &self,
        conn: Conn<'_>,
        request: &AppendRequest,
    ) -> Result<Appended, AppendError> {
        append::append_in(conn, &self.projectors, request).await
    }

    /// The stream's events with a version above `after_version`, in order, archived
    /// ones included.
    pub async fn read_stream(
        &self,
        stream_id: Uuid,
        after_version: i64,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let mut pooled = self.db.acquire().await?;
        read_stream_in(pooled.as_conn(), stream_id, after_version).await
    }

    /// Up to `limit` events after `after`, in commit order. Never skips an event:
    /// one that commits later than those returned always comes after them.
    pub async fn read_all(
        &self,
        after: GlobalPosition,
        limit: i64,
    ) -> Result<Vec<RecordedEvent>, ReadError> {
        let mut pooled = self.db.acquire().await?;
        checkpoints::read_all_in(pooled.as_conn(), after, limit).await
    }

    pub async fn stream_head(&self, stream_id: Uuid) -> Result<Option<StreamHead>, sqlx::Error> {
        let row: Option<sql::HeadRow> = on_backend!(&self.db, pool => {
            sqlx::query_as(sql::SELECT_STREAM_HEAD).bind(stream_id).fetch_optional(pool).await?
        });
        Ok(row.map(StreamHead::from))
    }

    /// Walks every stream's chain against its head: events in (stream, version)
    /// order merged with heads in stream order, a page of each at a time.
    #[tracing::instrument(skip_all)]
    pub async fn verify(&self) -> Result<VerifyReport, sqlx::Error> {
        const PAGE: i64 = 2_000;
        let mut report = VerifyReport::default();
        let archive = archive::Checked::check(&self.db, &mut report).await?;
        let mut heads = HeadCursor::new(self, &archive, PAGE);
        let mut stream: Vec<RecordedEvent> = Vec::new();
        let mut after = (Uuid::nil(), 0i64);
        let query = sql::SELECT_BY_STREAM_PAGE.on(&self.db);
        loop {
            let rows: Vec<sql::EventRow> = on_backend!(&self.db, pool => {
                sqlx::query_as(query).bind(after.0).bind(after.1).bind(PAGE).fetch_all(pool).await?
            });
            let done = (rows.len() as i64) < PAGE;
            for event in rows.into_iter().map(RecordedEvent::from) {
                after = (event.stream_id, event.version);
                if stream
                    .first()
                    .is_some_and(|e| e.stream_id != event.stream_id)
                {
                    heads
                        .check(&mut report, std::mem::take(&mut stream))
                        .await?;
                }
                stream.push(event);
            }
            if done {
                break;
            }
        }
        if !stream.is_empty() {
            heads.check(&mut report, stream).await?;
        }
        heads.finish(&mut report).await?;
        Ok(report)
    }
}

/// The stream's events with a version above `after_version`, in order, read inside
/// the caller's unit of work (a projection catching up within an append's
/// transaction sees the events written before it in that transaction). Archived
/// events come first. The hot rows and whether the manifest holds more of the
/// stream are one statement (one snapshot); only then are segments read, and the
/// manifest again, so an event moved meanwhile is found (and kept once).
pub async fn read_stream_in(
    mut conn: Conn<'_>,
    stream_id: Uuid,
    after_version: i64,
) -> Result<Vec<RecordedEvent>, ReadError> {
    let query = sql::SELECT_STREAM_AFTER.on(&conn);
    let rows: Vec<sql::EventRow> = on_backend!(conn.reborrow(), c => {
        sqlx::query_as(query).bind(stream_id).bind(after_version).fetch_all(&mut *c).await?
    });
    let archived_beyond = rows.first().is_some_and(sql::EventRow::is_archived_marker);
    let hot: Vec<RecordedEvent> = rows
        .into_iter()
        .filter(|row| !row.is_archived_marker())
        .map(RecordedEvent::from)
        .collect();
    if !archived_beyond {
        return Ok(hot);
    }
    let mut events = archive::stream_after(conn, stream_id, after_version).await?;
    let archived_to = events.last().map_or(after_version, |e| e.version);
    events.extend(hot.into_iter().filter(|e| e.version > archived_to));
    Ok(events)
}

/// How many events the log holds, hot and archived.
pub async fn event_count(db: &Db) -> Result<u64, sqlx::Error> {
    let hot: i64 = on_backend!(db, pool => {
        sqlx::query_scalar("SELECT COUNT(*) FROM events").fetch_one(pool).await?
    });
    Ok((hot + archive::archived_event_count(db).await?) as u64)
}

impl From<sql::HeadRow> for StreamHead {
    fn from(row: sql::HeadRow) -> Self {
        StreamHead {
            stream_id: row.stream_id,
            version: row.version,
            hash: row.hash,
        }
    }
}

/// The `streams` table read in stream order beside the events, for `verify`.
struct HeadCursor<'a> {
    store: &'a EventStore,
    archive: &'a archive::Checked,
    page: i64,
    buffered: std::collections::VecDeque<StreamHead>,
    after: Uuid,
    exhausted: bool,
}

impl<'a> HeadCursor<'a> {
    fn new(store: &'a EventStore, archive: &'a archive::Checked, page: i64) -> Self {
        HeadCursor {
            store,
            archive,
            page,
            buffered: Default::default(),
            after: Uuid::nil(),
            exhausted: false,
        }
    }

    async fn peek(&mut self) -> Result<Option<&StreamHead>, sqlx::Error> {
        if self.buffered.is_empty() && !self.exhausted {
            let rows: Vec<sql::HeadRow> = on_backend!(&self.store.db, pool => {
                sqlx::query_as(sql::SELECT_STREAM_HEADS_PAGE)
                    .bind(self.after)
                    .bind(self.page)
                    .fetch_all(pool)
                    .await?
            });
            self.exhausted = (rows.len() as i64) < self.page;
            self.buffered.extend(rows.into_iter().map(StreamHead::from));
            if let Some(last) = self.buffered.back() {
                self.after = last.stream_id;
            }
        }
        Ok(self.buffered.front())
    }

    /// Checks one stream's events; heads of streams before it that have no events
    /// at all are checked (and found wanting) on the way.
    async fn check(
        &mut self,
        report: &mut VerifyReport,
        events: Vec<RecordedEvent>,
    ) -> Result<(), sqlx::Error> {
        let stream_id = events[0].stream_id;
        let mut head = None;
        while let Some(next) = self.peek().await? {
            if next.stream_id > stream_id {
                break;
            }
            let next = self.buffered.pop_front().expect("peeked");
            if next.stream_id == stream_id {
                head = Some(next);
                break;
            }
            self.record(report, next.stream_id, Some(&next), Vec::new())
                .await;
        }
        self.record(report, stream_id, head.as_ref(), events).await;
        Ok(())
    }

    async fn finish(&mut self, report: &mut VerifyReport) -> Result<(), sqlx::Error> {
        while self.peek().await?.is_some() {
            let head = self.buffered.pop_front().expect("peeked");
            self.record(report, head.stream_id, Some(&head), Vec::new())
                .await;
        }
        Ok(())
    }

    /// Checks one stream, its archived events first; a stream whose segment cannot be
    /// read was reported when the segments were checked.
    async fn record(
        &self,
        report: &mut VerifyReport,
        stream_id: Uuid,
        head: Option<&StreamHead>,
        hot: Vec<RecordedEvent>,
    ) {
        report.streams_checked += 1;
        let events = match self.archive.with_archived(stream_id, hot).await {
            Ok(events) => events,
            Err(None) => return,
            Err(Some(problem)) => {
                report.mismatches.push(Mismatch {
                    stream_id,
                    version: 0,
                    problem,
                });
                return;
            }
        };
        report.events_checked += events.len() as u64;
        report
            .mismatches
            .extend(verify_stream(stream_id, head, &events));
    }
}
