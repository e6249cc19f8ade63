//! Checkpoints: how far each projection has read the log. A projection's checkpoint
//! is the global position of the last event it applied, written in the same
//! transaction as its rows, so the two never disagree:
//!
//! - inline, every append's transaction applies its events and moves the checkpoints
//!   of every projection it ran ([`project`]);
//! - a projection that is new or behind catches up from its checkpoint, reading all
//!   events in commit order (the gap-safe read), a page per transaction
//!   ([`catch_up`]); an event at or before the checkpoint is never applied again.
//!
//! On PostgreSQL transactions of several instances can commit out of id order; a
//! checkpoint only ever moves forward, and an inline projection applies its own
//! transaction's events whatever the checkpoint says.

use sqlx::types::Json;

use super::archive::{self, ReadError};
use super::model::{GlobalPosition, RecordedEvent};
use super::projector::{ProjectionError, Projector};
use super::sql::{self, Sql};
use crate::db::{Backend, Conn, Db};
use crate::on_backend;

/// Applies `events` (one transaction's, in commit order) to every projector and
/// moves their projections' checkpoints to the last of them, on `conn` inside the
/// caller's transaction.
pub async fn project(
    mut conn: Conn<'_>,
    projectors: &[&dyn Projector],
    events: &[RecordedEvent],
) -> Result<(), ProjectionError> {
    let Some(last) = events.last() else {
        return Ok(());
    };
    let mut names = Vec::new();
    for projector in projectors {
        projector.apply(conn.reborrow(), events).await?;
        names.extend(projector.projections());
    }
    advance(conn, &names, last.global).await?;
    Ok(())
}

/// Moves each named projection's checkpoint to `to`, unless it is there or further.
pub async fn advance(
    conn: Conn<'_>,
    names: &[String],
    to: GlobalPosition,
) -> Result<(), sqlx::Error> {
    if names.is_empty() {
        return Ok(());
    }
    on_backend!(conn, c => {
        let mut query = sqlx::QueryBuilder::new(
            "INSERT INTO projection_checkpoints (projection, commit_seq, position) ",
        );
        query.push_values(names, |mut row, name| {
            row.push_bind(name).push_bind(to.commit).push_bind(to.position);
        });
        query.push(
            " ON CONFLICT (projection) DO UPDATE \
              SET commit_seq = excluded.commit_seq, position = excluded.position \
              WHERE (excluded.commit_seq, excluded.position) \
                  > (projection_checkpoints.commit_seq, projection_checkpoints.position)",
        );
        query.build().execute(&mut *c).await?;
    });
    Ok(())
}

const SELECT_CHECKPOINT: Sql = Sql {
    sqlite: "SELECT commit_seq, position FROM projection_checkpoints WHERE projection = $1",
    // Held until the transaction ends: two catch-ups of one projection take turns.
    postgres: "SELECT commit_seq, position FROM projection_checkpoints WHERE projection = $1 \
               FOR UPDATE",
};

/// The projection's checkpoint; `None` when it has never applied an event. Inside a
/// transaction on PostgreSQL the row stays locked until it ends.
pub async fn checkpoint(conn: Conn<'_>, name: &str) -> Result<Option<GlobalPosition>, sqlx::Error> {
    let query = SELECT_CHECKPOINT.on(&conn);
    let row: Option<(i64, i64)> = on_backend!(conn, c => {
        sqlx::query_as(query).bind(name).fetch_optional(&mut *c).await?
    });
    Ok(row.map(|(commit, position)| GlobalPosition { commit, position }))
}

/// Forgets the projection's checkpoint: it will catch up from the first event.
/// The caller empties its tables in the same transaction.
pub async fn forget(conn: Conn<'_>, name: &str) -> Result<(), sqlx::Error> {
    on_backend!(conn, c => {
        sqlx::query("DELETE FROM projection_checkpoints WHERE projection = $1")
            .bind(name)
            .execute(&mut *c)
            .await?;
    });
    Ok(())
}

/// Why a projection could not catch up. What it applied before stays applied, with
/// its checkpoint.
#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    #[error(transparent)]
    Projection(#[from] ProjectionError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// The log (or the archive behind it) could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// One projector's projections stand at different places in the log; each must
    /// catch up on its own.
    #[error("the projections {names:?} are at different checkpoints")]
    Diverged { names: Vec<String> },
}

/// Events per catch-up transaction.
pub const CATCH_UP_PAGE: i64 = 2_000;

/// Brings `projector` up to the end of the log as it stands when called: reads the
/// events after its projections' checkpoint in commit order, a page at a time, and
/// applies each page in a transaction of its own with the checkpoint. Calls
/// `progress` with the number of events applied so far after each page; returns how
/// many were applied.
///
/// On PostgreSQL the gap-safe read stops before any transaction still running (in
/// the whole cluster); catching up then waits for it to end rather than stopping
/// short of the end it set out for.
pub async fn catch_up(
    db: &Db,
    projector: &dyn Projector,
    page: i64,
    progress: impl FnMut(u64),
) -> Result<u64, CatchUpError> {
    let mut pooled = db.acquire().await?;
    catch_up_on(pooled.as_conn(), projector, page, progress).await
}

/// [`catch_up`] on a connection the caller holds (one it gave settings of its own,
/// such as a larger page cache for a rebuild).
pub async fn catch_up_on(
    mut conn: Conn<'_>,
    projector: &dyn Projector,
    page: i64,
    mut progress: impl FnMut(u64),
) -> Result<u64, CatchUpError> {
    let Some(end) = last_position_in(conn.reborrow()).await? else {
        return Ok(0);
    };
    let mut applied = 0;
    let mut pause = std::time::Duration::from_millis(1);
    loop {
        let mut tx = conn.reborrow().begin_write().await?;
        let from = common_checkpoint(tx.as_conn(), projector).await?;
        if from >= end {
            tx.commit().await?;
            return Ok(applied);
        }
        let events = read_all_in(tx.as_conn(), from, page).await?;
        if events.is_empty() {
            // An older transaction is still running: its events may come before
            // those after it. Nothing else to do but wait for it.
            tx.rollback().await?;
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(std::time::Duration::from_millis(100));
            continue;
        }
        project(tx.as_conn(), &[projector], &events).await?;
        tx.commit().await?;
        applied += events.len() as u64;
        progress(applied);
    }
}

const SELECT_LAST_POSITION: Sql = Sql {
    sqlite: "SELECT position, position FROM events ORDER BY position DESC LIMIT 1",
    postgres: "SELECT tx_id::text::bigint, position FROM events \
               ORDER BY tx_id DESC, position DESC LIMIT 1",
};

/// The position of the last event committed, in the gap-safe read's order, archived
/// ones included; `None` when the log is empty.
pub async fn last_position(db: &Db) -> Result<Option<GlobalPosition>, sqlx::Error> {
    let mut pooled = db.acquire().await?;
    last_position_in(pooled.as_conn()).await
}

async fn last_position_in(mut conn: Conn<'_>) -> Result<Option<GlobalPosition>, sqlx::Error> {
    let query = SELECT_LAST_POSITION.on(&conn);
    let row: Option<(i64, i64)> = on_backend!(conn.reborrow(), c => {
        sqlx::query_as(query).fetch_optional(&mut *c).await?
    });
    let hot = row.map(|(commit, position)| GlobalPosition { commit, position });
    Ok(hot.max(archive::last_position(conn).await?))
}

/// Applies those of `events` (in commit order) that come after the projector's
/// checkpoint, in one transaction with the checkpoint; returns how many that was.
/// Applying a batch twice changes nothing the second time.
pub async fn apply_new(
    db: &Db,
    projector: &dyn Projector,
    events: &[RecordedEvent],
) -> Result<u64, CatchUpError> {
    let mut pooled = db.acquire().await?;
    let mut tx = pooled.as_conn().begin_write().await?;
    let from = common_checkpoint(tx.as_conn(), projector).await?;
    let new: Vec<RecordedEvent> = events.iter().filter(|e| e.global > from).cloned().collect();
    project(tx.as_conn(), &[projector], &new).await?;
    tx.commit().await?;
    Ok(new.len() as u64)
}

/// The checkpoint all of the projector's projections stand at.
async fn common_checkpoint(
    mut conn: Conn<'_>,
    projector: &dyn Projector,
) -> Result<GlobalPosition, CatchUpError> {
    let names = projector.projections();
    let mut common = None;
    for name in &names {
        let at = checkpoint(conn.reborrow(), name)
            .await?
            .unwrap_or(GlobalPosition::START);
        if common.is_some_and(|common| common != at) {
            return Err(CatchUpError::Diverged { names });
        }
        common = Some(at);
    }
    Ok(common.unwrap_or(GlobalPosition::START))
}

/// Up to `limit` events after `after` in commit order, read inside the caller's
/// unit of work (see `EventStore::read_all`).
pub async fn read_all_in(
    conn: Conn<'_>,
    after: GlobalPosition,
    limit: i64,
) -> Result<Vec<RecordedEvent>, ReadError> {
    read_all_with(conn, false, after, limit).await
}

/// [`read_all_in`] for a transaction that has shut appends out (on PostgreSQL an
/// EXCLUSIVE lock on `events`): no transaction that wrote an event is still running,
/// so nothing is left out for one.
pub async fn read_all_quiesced(
    conn: Conn<'_>,
    after: GlobalPosition,
    limit: i64,
) -> Result<Vec<RecordedEvent>, ReadError> {
    read_all_with(conn, true, after, limit).await
}

/// The hot page merged with the archived events after `after` (see
/// [`archive::merge_after`] for why the reads go in this order).
async fn read_all_with(
    mut conn: Conn<'_>,
    quiesced: bool,
    after: GlobalPosition,
    limit: i64,
) -> Result<Vec<RecordedEvent>, ReadError> {
    let horizon = archive::horizon(conn.reborrow(), quiesced).await?;
    let sql = if quiesced {
        sql::SELECT_ALL_QUIESCED
    } else {
        sql::SELECT_ALL
    };
    let query = sql.on(&conn);
    // The same three parameters on both; SQLite answers with one row (see the
    // statement).
    let rows: Vec<sql::EventRow> = match conn.reborrow() {
        Backend::Sqlite(c) => {
            let Json(rows) = sqlx::query_scalar(query)
                .bind(after.commit)
                .bind(after.position)
                .bind(limit)
                .fetch_one(&mut *c)
                .await?;
            rows
        }
        Backend::Postgres(c) => {
            sqlx::query_as(query)
                .bind(after.commit)
                .bind(after.position)
                .bind(limit)
                .fetch_all(&mut *c)
                .await?
        }
    };
    let hot = rows.into_iter().map(RecordedEvent::from).collect();
    archive::merge_after(conn, hot, after, horizon, limit).await
}
