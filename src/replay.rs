//! `quoteline replay --into DATABASE_URL [--until POSITION|TIME] [--quote ID]`: the
//! history copied into another database (a SQLite file or PostgreSQL), migrated, and
//! its projections built there: a place of its own to see how things stood at a
//! moment, isolated from the live database, which it only reads.
//!
//! Events are copied as recorded (ids, versions, times, hashes and positions), so the
//! copy's chains verify and its pages name events by the positions the original
//! shows. A cut keeps a prefix of each stream: once one of a stream's events is past
//! it, none of its later events is copied, so every chain in the copy is whole.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::db::Db;
use crate::eventstore::checkpoints::{self, last_position, read_all_in};
use crate::eventstore::copy::{copy_in, follow_positions};
use crate::eventstore::{
    CatchUpError, GlobalPosition, ReadError, RecordedEvent, Together, catch_up, event_count,
    read_stream_in,
};
use crate::state::rebuildable;

/// Up to where history is copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// Events at or before this global position (as the audit log shows it).
    Position(i64),
    /// Events recorded at or before this moment.
    Time(DateTime<Utc>),
}

impl std::str::FromStr for Until {
    type Err = String;

    /// A whole number is a position; anything else must be an RFC 3339 time.
    fn from_str(text: &str) -> Result<Until, String> {
        if let Ok(position) = text.parse::<i64>() {
            return Ok(Until::Position(position));
        }
        DateTime::parse_from_rfc3339(text)
            .map(|time| Until::Time(time.with_timezone(&Utc)))
            .map_err(|_| {
                format!(
                    "{text:?} is neither a position (a whole number) nor a time such as \
                     2026-11-29T12:00:00Z"
                )
            })
    }
}

/// What to copy: everything, up to a cut, of one quote, or both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Selection {
    pub until: Option<Until>,
    pub quote: Option<Uuid>,
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq)]
pub struct Replayed {
    pub events: u64,
    pub streams: u64,
    pub took: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(
        "the database to replay into holds {0} events already; replay into an empty one (a \
         new SQLite file, or a new PostgreSQL database)"
    )]
    NotEmpty(u64),
    #[error("the database to replay into could not be migrated: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Projections(#[from] CatchUpError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// Events read and written per transaction.
const PAGE: i64 = 5_000;

/// Copies the selected history of `source` into `target` (migrated here, and which
/// must hold no events), then builds every projection there. `progress` hears the
/// events read so far and how many the source held when it began.
pub async fn replay(
    source: &Db,
    target: &Db,
    selection: Selection,
    mut progress: impl FnMut(u64, u64),
) -> Result<Replayed, ReplayError> {
    let began = Instant::now();
    target.migrate().await?;
    let held = event_count(target).await?;
    if held > 0 {
        return Err(ReplayError::NotEmpty(held));
    }
    let mut cut = Cut::new(selection);
    let mut copied = 0u64;
    match selection.quote {
        Some(quote) => {
            let mut pooled = source.acquire().await?;
            let events = read_stream_in(pooled.as_conn(), quote, 0).await?;
            drop(pooled);
            progress(0, events.len() as u64);
            copied += write(target, cut.keep(events)).await?;
            progress(copied, copied);
        }
        None => {
            let total = event_count(source).await?;
            progress(0, total);
            let mut read = 0;
            let mut from = GlobalPosition::START;
            let Some(end) = last_position(source).await? else {
                return finish(target, cut, copied, began).await;
            };
            let mut pause = Duration::from_millis(1);
            while from < end {
                let mut pooled = source.acquire().await?;
                let events = read_all_in(pooled.as_conn(), from, PAGE).await?;
                drop(pooled);
                let Some(last) = events.last() else {
                    // A transaction still open on the source: wait for it (see
                    // `checkpoints::catch_up`).
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(100));
                    continue;
                };
                from = last.global;
                read += events.len() as u64;
                copied += write(target, cut.keep(events)).await?;
                progress(read, total.max(read));
            }
        }
    }
    finish(target, cut, copied, began).await
}

async fn finish(
    target: &Db,
    cut: Cut,
    copied: u64,
    began: Instant,
) -> Result<Replayed, ReplayError> {
    let mut pooled = target.acquire().await?;
    follow_positions(pooled.as_conn()).await?;
    drop(pooled);
    // Into an empty database: every projection stands at the start, so all catch up
    // together, each event read once.
    catch_up(
        target,
        &Together(rebuildable()),
        checkpoints::CATCH_UP_PAGE,
        |_| {},
    )
    .await?;
    Ok(Replayed {
        events: copied,
        streams: cut.streams.len() as u64,
        took: began.elapsed(),
    })
}

async fn write(target: &Db, events: Vec<RecordedEvent>) -> Result<u64, sqlx::Error> {
    if events.is_empty() {
        return Ok(0);
    }
    let mut pooled = target.acquire().await?;
    let mut tx = pooled.as_conn().begin_write().await?;
    copy_in(tx.as_conn(), &events).await?;
    tx.commit().await?;
    Ok(events.len() as u64)
}

/// Which events the selection keeps, as they come in commit order.
struct Cut {
    selection: Selection,
    /// Streams with an event past the cut: none of their later events is kept.
    ended: HashSet<Uuid>,
    /// Streams with at least one event kept.
    streams: HashSet<Uuid>,
}

impl Cut {
    fn new(selection: Selection) -> Cut {
        Cut {
            selection,
            ended: HashSet::new(),
            streams: HashSet::new(),
        }
    }

    fn keep(&mut self, events: Vec<RecordedEvent>) -> Vec<RecordedEvent> {
        let mut kept = Vec::with_capacity(events.len());
        for event in events {
            if self.selection.quote.is_some_and(|q| q != event.stream_id)
                || self.ended.contains(&event.stream_id)
            {
                continue;
            }
            let past = match self.selection.until {
                Some(Until::Position(position)) => event.global.position > position,
                Some(Until::Time(time)) => event.recorded_at > time,
                None => false,
            };
            if past {
                self.ended.insert(event.stream_id);
                continue;
            }
            self.streams.insert(event.stream_id);
            kept.push(event);
        }
        kept
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn until_is_a_position_or_a_time() {
        assert_eq!("1200".parse(), Ok(Until::Position(1200)));
        assert_eq!(
            "2026-11-29T12:00:00+01:00".parse::<Until>(),
            Ok(Until::Time(
                DateTime::parse_from_rfc3339("2026-11-29T11:00:00Z")
                    .unwrap()
                    .with_timezone(&Utc)
            ))
        );
        let refused = "yesterday".parse::<Until>().unwrap_err();
        assert!(refused.contains("neither a position"), "{refused}");
    }
}
