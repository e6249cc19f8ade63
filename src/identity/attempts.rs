//! The count of sign-in attempts per (name as typed, client address), in the
//! database, whether or not the name exists (the rule is `throttle`'s).
//!
//! In the database rather than in memory: several processes serving one database
//! see one count, so a guesser gains nothing by reaching another process. Rows
//! are small and short-lived: a successful sign-in deletes its row, and
//! [`spawn_pruning`] deletes rows whose last attempt is older than [`FORGET_AFTER`]
//! (longer than the longest wait, so no wait is cut short).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use super::client::ClientAddress;
use super::throttle::{lock_after, sign_in_allowed};
use crate::db::Db;
use crate::on_backend;

/// A (name, address) with no attempt for this long starts again from nothing.
pub const FORGET_AFTER: TimeDelta = TimeDelta::hours(1);
const PRUNE_EVERY: Duration = Duration::from_secs(5 * 60);

const SELECT_ATTEMPTS: &str = "SELECT failed_attempts, locked_until FROM sign_in_attempts \
     WHERE username = $1 AND address = $2";

/// The first attempt of a (name, address): claimed unless a concurrent one was first.
const INSERT_FIRST: &str = "INSERT INTO sign_in_attempts \
     (username, address, failed_attempts, locked_until, last_attempt_at) \
     VALUES ($1, $2, 1, NULL, $3) ON CONFLICT (username, address) DO NOTHING";

/// Claims one attempt: succeeds only if no other attempt was counted since the row
/// was read, so that concurrent guesses cannot share a slot.
const COUNT_ATTEMPT: &str = "UPDATE sign_in_attempts \
     SET failed_attempts = $3, locked_until = $4, last_attempt_at = $5 \
     WHERE username = $1 AND address = $2 AND failed_attempts = $6";

const FORGET_PAIR: &str = "DELETE FROM sign_in_attempts WHERE username = $1 AND address = $2";
const FORGET_NAME: &str = "DELETE FROM sign_in_attempts WHERE username = $1";
const PRUNE: &str = "DELETE FROM sign_in_attempts WHERE last_attempt_at < $1";

/// What counting an attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Counted; the password may be checked.
    Counted,
    /// Too many in a row from this address for this name; none before `until`.
    Locked { until: DateTime<Utc> },
}

#[derive(sqlx::FromRow)]
struct AttemptsRow {
    failed_attempts: i32,
    locked_until: Option<DateTime<Utc>>,
}

/// Counts one attempt at `username` from `address`, unless that pair must wait.
pub async fn claim(
    db: &Db,
    username: &str,
    address: &ClientAddress,
    now: DateTime<Utc>,
) -> Result<Claim, sqlx::Error> {
    // Each pass that fails to claim lost to a concurrent attempt; a few passes
    // settle it, and a storm of them is answered as throttled.
    for _ in 0..8 {
        let row: Option<AttemptsRow> = on_backend!(db, pool => {
            sqlx::query_as(SELECT_ATTEMPTS)
                .bind(username)
                .bind(address.as_str())
                .fetch_optional(pool)
                .await
        })?;
        let claimed = match row {
            None => on_backend!(db, pool => {
                sqlx::query(INSERT_FIRST)
                    .bind(username)
                    .bind(address.as_str())
                    .bind(now)
                    .execute(pool)
                    .await
                    .map(|done| done.rows_affected())
            })?,
            Some(row) => {
                let failed = u32::try_from(row.failed_attempts).unwrap_or(0);
                if let Err(until) = sign_in_allowed(failed, row.locked_until, now) {
                    return Ok(Claim::Locked { until });
                }
                let counted = failed.saturating_add(1);
                let locked_until = lock_after(counted).map(|wait| now + wait);
                on_backend!(db, pool => {
                    sqlx::query(COUNT_ATTEMPT)
                        .bind(username)
                        .bind(address.as_str())
                        .bind(i32::try_from(counted).unwrap_or(i32::MAX))
                        .bind(locked_until)
                        .bind(now)
                        .bind(row.failed_attempts)
                        .execute(pool)
                        .await
                        .map(|done| done.rows_affected())
                })?
            }
        };
        if claimed == 1 {
            return Ok(Claim::Counted);
        }
    }
    Ok(Claim::Locked {
        until: now + TimeDelta::seconds(1),
    })
}

/// Forgets the attempts at `username` from `address`: the right password was given.
pub async fn forget(db: &Db, username: &str, address: &ClientAddress) -> Result<(), sqlx::Error> {
    on_backend!(db, pool => {
        sqlx::query(FORGET_PAIR)
            .bind(username)
            .bind(address.as_str())
            .execute(pool)
            .await
            .map(drop)
    })
}

/// Forgets every attempt at `username`, from anywhere: a new password was set.
pub async fn forget_name(db: &Db, username: &str) -> Result<(), sqlx::Error> {
    on_backend!(db, pool => {
        sqlx::query(FORGET_NAME).bind(username).execute(pool).await.map(drop)
    })
}

/// Deletes the counts whose last attempt is older than [`FORGET_AFTER`]; returns how
/// many.
pub async fn prune(db: &Db, now: DateTime<Utc>) -> Result<u64, sqlx::Error> {
    on_backend!(db, pool => {
        sqlx::query(PRUNE)
            .bind(now - FORGET_AFTER)
            .execute(pool)
            .await
            .map(|done| done.rows_affected())
    })
}

/// Prunes every few minutes, for as long as the runtime lives.
pub fn spawn_pruning(db: Db) {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(PRUNE_EVERY);
        loop {
            every.tick().await;
            if let Err(error) = prune(&db, Utc::now()).await {
                tracing::warn!(%error, "could not delete old sign-in attempts");
            }
        }
    });
}
