//! One maintenance job at a time across all processes: a rebuild or an archive run.
//! An advisory lock on PostgreSQL (held by a connection of its own, gone with it), a
//! lock row on SQLite (taken over when its holder has not beaten for a minute).

use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use crate::db::{Backend, Db, PooledConn};
use crate::on_backend;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another rebuild or archive run is going on ({holder}); only one runs at a time, so \
         try again once it has finished"
    )]
    Busy { holder: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The advisory lock's first key on PostgreSQL ("qlrb"); the second is the schema's
/// name hashed, so that installations in separate schemas of one database (and tests)
/// do not hold each other up. Advisory locks are per database already.
const ADVISORY_CLASS: i32 = 0x716c_7262;
/// A SQLite lock row whose holder has not beaten for this long is abandoned.
const ABANDONED_AFTER: Duration = Duration::from_secs(60);
const HEARTBEAT: Duration = Duration::from_secs(10);

/// Held while a rebuild or an archive run goes on.
pub struct MaintenanceLock {
    held: Held,
}

enum Held {
    /// The connection that holds the advisory lock.
    Postgres(PooledConn),
    /// This holder's id in the lock row, and the task beating for it.
    Sqlite {
        db: Db,
        holder: String,
        heartbeat: tokio::task::JoinHandle<()>,
    },
}

impl MaintenanceLock {
    /// Takes the lock, or says who holds it.
    pub async fn take(db: &Db, job: &str) -> Result<MaintenanceLock, LockError> {
        match db {
            Backend::Postgres(_) => {
                let mut pooled = db.acquire().await?;
                let Backend::Postgres(c) = &mut pooled else {
                    unreachable!("a PostgreSQL pool gives PostgreSQL connections")
                };
                let taken: bool = sqlx::query_scalar(
                    "SELECT pg_try_advisory_lock($1, hashtext(current_schema()))",
                )
                .bind(ADVISORY_CLASS)
                .fetch_one(&mut **c)
                .await?;
                if !taken {
                    return Err(LockError::Busy {
                        holder: "another process holds the maintenance lock".into(),
                    });
                }
                Ok(MaintenanceLock {
                    held: Held::Postgres(pooled),
                })
            }
            Backend::Sqlite(pool) => {
                let holder = format!(
                    "{job} by process {} on {}, since {}",
                    std::process::id(),
                    hostname(),
                    Utc::now().format("%Y-%m-%d %H:%M:%S UTC")
                );
                let id = format!("{holder} ({})", Uuid::now_v7());
                let now = Utc::now();
                let abandoned =
                    now - chrono::Duration::from_std(ABANDONED_AFTER).unwrap_or_default();
                // Takes a free lock or an abandoned one; a live holder's row stays.
                let taken = sqlx::query(
                    "INSERT INTO rebuild_lock (id, holder, beat_at) VALUES (1, $1, $2) \
                     ON CONFLICT (id) DO UPDATE SET holder = excluded.holder, \
                         beat_at = excluded.beat_at \
                     WHERE rebuild_lock.beat_at < $3",
                )
                .bind(&id)
                .bind(now)
                .bind(abandoned)
                .execute(pool)
                .await?
                .rows_affected();
                if taken == 0 {
                    let holder: Option<String> =
                        sqlx::query_scalar("SELECT holder FROM rebuild_lock WHERE id = 1")
                            .fetch_optional(pool)
                            .await?;
                    return Err(LockError::Busy {
                        holder: holder.unwrap_or_else(|| "another process".into()),
                    });
                }
                let heartbeat = tokio::spawn(beat(pool.clone(), id.clone()));
                Ok(MaintenanceLock {
                    held: Held::Sqlite {
                        db: db.clone(),
                        holder: id,
                        heartbeat,
                    },
                })
            }
        }
    }

    /// Gives the lock back. (A process that dies gives it back too: with its
    /// connection on PostgreSQL, after a minute without a beat on SQLite.)
    pub async fn release(self) {
        match self.held {
            Held::Postgres(mut pooled) => {
                let unlocked = match &mut pooled {
                    Backend::Postgres(c) => {
                        sqlx::query("SELECT pg_advisory_unlock($1, hashtext(current_schema()))")
                            .bind(ADVISORY_CLASS)
                            .execute(&mut **c)
                            .await
                            .is_ok()
                    }
                    Backend::Sqlite(_) => false,
                };
                if !unlocked {
                    // Closing the session ends the lock.
                    pooled.discard();
                }
            }
            Held::Sqlite {
                db,
                holder,
                heartbeat,
            } => {
                heartbeat.abort();
                let deleted = on_backend!(&db, pool => {
                    sqlx::query("DELETE FROM rebuild_lock WHERE id = 1 AND holder = $1")
                        .bind(&holder)
                        .execute(pool)
                        .await
                        .map(drop)
                });
                if let Err(error) = deleted {
                    tracing::warn!(%error, "the rebuild lock row could not be deleted; it is abandoned in a minute");
                }
            }
        }
    }
}

async fn beat(pool: sqlx::SqlitePool, holder: String) {
    loop {
        tokio::time::sleep(HEARTBEAT).await;
        let beat = sqlx::query("UPDATE rebuild_lock SET beat_at = $1 WHERE id = 1 AND holder = $2")
            .bind(Utc::now())
            .bind(&holder)
            .execute(&pool)
            .await;
        if let Err(error) = beat {
            tracing::warn!(%error, "the rebuild lock's heartbeat failed");
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "this machine".into())
}
