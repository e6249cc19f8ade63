//! `quoteline archive --older-than DAYS`: the events of finished quotes (approved,
//! rejected, withdrawn) whose last change is older than the cut-off move out of the
//! hot `events` table into compressed segments (see `eventstore::archive`), and stay
//! readable everywhere.
//!
//! 1. One maintenance job at a time ([`MaintenanceLock`], shared with rebuild).
//! 2. Objects a stopped run left without a manifest are removed first.
//! 3. The quotes to move, in id order, are cut into segments of about
//!    `segment_events` events (a quote is never split); each segment is written, read
//!    back and checked, then recorded with its events deleted in one transaction.

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::db::{Backend, Db};
use crate::eventstore::archive::{self, ArchiveLocation, MoveError};
use crate::lock::{LockError, MaintenanceLock};
use crate::quoting::summary::finished_before;

/// The folder segments go to when no location is configured.
pub const DEFAULT_LOCATION: &str = "data/archive";
/// Events a segment holds, about (a quote is never split between two).
pub const SEGMENT_EVENTS: u64 = 50_000;

/// The hot table's size: rows, and bytes on disk (table and indexes) where the
/// database says.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HotSize {
    pub rows: i64,
    pub bytes: Option<i64>,
}

/// What an archive run did.
#[derive(Debug, Clone, PartialEq)]
pub struct Archived {
    pub segments: u64,
    pub quotes: u64,
    pub events: u64,
    /// Compressed bytes written.
    pub bytes: u64,
    /// Objects of an earlier, stopped run removed first.
    pub orphans_removed: u64,
    pub before: HotSize,
    pub after: HotSize,
    pub took: Duration,
}

impl Archived {
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.took.as_secs_f64().max(1e-9)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveRunError {
    #[error(transparent)]
    Busy(#[from] LockError),
    #[error(transparent)]
    Move(#[from] MoveError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Moves the events of every quote finished before `cutoff` to `location`.
/// `progress` hears the events moved so far and how many there are to move.
pub async fn archive(
    db: &Db,
    location: &ArchiveLocation,
    cutoff: DateTime<Utc>,
    segment_events: u64,
    mut progress: impl FnMut(u64, u64),
) -> Result<Archived, ArchiveRunError> {
    let started = Instant::now();
    let lock = MaintenanceLock::take(db, "archive").await?;
    let outcome = async {
        let orphans_removed = archive::remove_orphans(db, location).await?;
        let before = hot_size(db).await?;
        let archived = archive::archived_versions(db).await?;
        // Each finished quote with the events it still has in the hot table.
        let quotes: Vec<(Uuid, u64)> = finished_before(db, cutoff)
            .await?
            .into_iter()
            .map(|(id, version)| {
                (
                    id,
                    (version - archived.get(&id).copied().unwrap_or(0)).max(0) as u64,
                )
            })
            .filter(|(_, hot)| *hot > 0)
            .collect();
        let total: u64 = quotes.iter().map(|(_, hot)| hot).sum();
        progress(0, total);
        let mut done = Archived {
            segments: 0,
            quotes: 0,
            events: 0,
            bytes: 0,
            orphans_removed,
            before,
            after: before,
            took: Duration::ZERO,
        };
        for group in segments_of(&quotes, segment_events.max(1)) {
            let moved = archive::move_streams(db, location, &group).await?;
            done.segments += u64::from(moved.segment_id.is_some());
            done.quotes += moved.streams;
            done.events += moved.events;
            done.bytes += moved.bytes;
            progress(done.events, total);
        }
        done.after = hot_size(db).await?;
        done.took = started.elapsed();
        Ok(done)
    }
    .await;
    lock.release().await;
    outcome
}

/// The quotes cut into groups of about `limit` events, in order; a quote larger than
/// `limit` is a group of its own.
fn segments_of(quotes: &[(Uuid, u64)], limit: u64) -> Vec<Vec<Uuid>> {
    let mut groups: Vec<Vec<Uuid>> = Vec::new();
    let mut filled = limit;
    for &(id, events) in quotes {
        if filled + events > limit && filled > 0 {
            groups.push(Vec::new());
            filled = 0;
        }
        groups.last_mut().expect("a group was opened").push(id);
        filled += events;
    }
    groups
}

/// Rows in `events`, and its size with its indexes (PostgreSQL's relation size;
/// SQLite's pages of the table and its indexes, where the `dbstat` table exists).
pub async fn hot_size(db: &Db) -> Result<HotSize, sqlx::Error> {
    match db {
        Backend::Postgres(pool) => {
            let (rows, bytes): (i64, i64) = sqlx::query_as(
                "SELECT (SELECT COUNT(*) FROM events), pg_total_relation_size('events'::regclass)",
            )
            .fetch_one(pool)
            .await?;
            Ok(HotSize {
                rows,
                bytes: Some(bytes),
            })
        }
        Backend::Sqlite(pool) => {
            let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
                .fetch_one(pool)
                .await?;
            let bytes: Option<i64> = sqlx::query_scalar(
                "SELECT SUM(pgsize) FROM dbstat \
                 WHERE name IN (SELECT name FROM sqlite_schema WHERE tbl_name = 'events')",
            )
            .fetch_one(pool)
            .await
            .ok()
            .flatten();
            Ok(HotSize { rows, bytes })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_grouped_by_events_and_never_split() {
        let ids: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
        let quotes = vec![
            (ids[0], 4),
            (ids[1], 4),
            (ids[2], 30),
            (ids[3], 1),
            (ids[4], 9),
        ];
        assert_eq!(
            segments_of(&quotes, 10),
            vec![vec![ids[0], ids[1]], vec![ids[2]], vec![ids[3], ids[4]],]
        );
        assert!(segments_of(&[], 10).is_empty());
    }
}
