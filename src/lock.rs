//! Jobs that run once across all processes: maintenance (a rebuild or an archive
//! run) and the NATS publisher. An advisory lock on PostgreSQL (held by a connection
//! of its own, gone with it), a lease row on SQLite (taken over when its holder has
//! not beaten for a while).

use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use sqlx::Connection;

use crate::db::{Backend, Db};
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

/// What a lock is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockKind {
    /// A rebuild or an archive run.
    Maintenance,
    /// The one process that publishes events to NATS.
    Publisher,
}

impl LockKind {
    /// The advisory lock's first key on PostgreSQL ("qlrb", "qlpu"); the second is
    /// the schema's name hashed, so that installations in separate schemas of one
    /// database (and tests) do not hold each other up.
    fn advisory_class(self) -> i32 {
        match self {
            LockKind::Maintenance => 0x716c_7262,
            LockKind::Publisher => 0x716c_7075,
        }
    }

    /// The lease row's name on SQLite.
    fn lease(self) -> &'static str {
        match self {
            LockKind::Maintenance => "maintenance",
            LockKind::Publisher => "publisher",
        }
    }

    /// How often the SQLite holder beats, and after how long without a beat its
    /// lease is abandoned: a publisher must hand over within seconds.
    fn timing(self) -> (Duration, Duration) {
        match self {
            LockKind::Maintenance => (Duration::from_secs(10), Duration::from_secs(60)),
            LockKind::Publisher => (Duration::from_secs(1), Duration::from_secs(5)),
        }
    }
}

/// Held while a rebuild or an archive run goes on.
pub struct MaintenanceLock;

impl MaintenanceLock {
    /// Takes the maintenance lock, or says who holds it.
    pub async fn take(db: &Db, job: &str) -> Result<Lock, LockError> {
        Lock::take(db, LockKind::Maintenance, job).await
    }
}

/// A lock held; given back by [`Lock::release`] or by the process ending.
pub struct Lock {
    kind: LockKind,
    held: Held,
}

enum Held {
    /// The connection that holds the advisory lock, taken out of the pool: dropped
    /// (the lock dropped unreleased, its task aborted), it closes and the lock goes
    /// with it, never back to the pool still held.
    Postgres(sqlx::PgConnection),
    /// This holder's id in the lock row, and the task beating for it.
    Sqlite {
        db: Db,
        holder: String,
        heartbeat: Heartbeat,
    },
}

/// The task that beats for a lease, stopped when the lock is dropped.
struct Heartbeat(tokio::task::JoinHandle<()>);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Lock {
    /// Takes the lock, or says who holds it.
    pub async fn take(db: &Db, kind: LockKind, job: &str) -> Result<Lock, LockError> {
        match db {
            Backend::Postgres(pool) => {
                let mut connection = pool.acquire().await?.detach();
                let taken: bool = sqlx::query_scalar(
                    "SELECT pg_try_advisory_lock($1, hashtext(current_schema()))",
                )
                .bind(kind.advisory_class())
                .fetch_one(&mut connection)
                .await?;
                if !taken {
                    return Err(LockError::Busy {
                        holder: format!("another process holds the {} lock", kind.lease()),
                    });
                }
                Ok(Lock {
                    kind,
                    held: Held::Postgres(connection),
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
                let (every, abandoned_after) = kind.timing();
                let abandoned =
                    now - chrono::Duration::from_std(abandoned_after).unwrap_or_default();
                // Takes a free lease or an abandoned one; a live holder's row stays.
                let taken = sqlx::query(
                    "INSERT INTO leases (name, holder, beat_at) VALUES ($1, $2, $3) \
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, \
                         beat_at = excluded.beat_at \
                     WHERE leases.beat_at < $4",
                )
                .bind(kind.lease())
                .bind(&id)
                .bind(now)
                .bind(abandoned)
                .execute(pool)
                .await?
                .rows_affected();
                if taken == 0 {
                    let holder: Option<String> =
                        sqlx::query_scalar("SELECT holder FROM leases WHERE name = $1")
                            .bind(kind.lease())
                            .fetch_optional(pool)
                            .await?;
                    return Err(LockError::Busy {
                        holder: holder.unwrap_or_else(|| "another process".into()),
                    });
                }
                let heartbeat = tokio::spawn(beat(pool.clone(), kind, id.clone(), every));
                Ok(Lock {
                    kind,
                    held: Held::Sqlite {
                        db: db.clone(),
                        holder: id,
                        heartbeat: Heartbeat(heartbeat),
                    },
                })
            }
        }
    }

    /// Whether this process still holds the lock: its connection alive on
    /// PostgreSQL, its lease row still its own on SQLite.
    pub async fn is_held(&mut self) -> bool {
        match &mut self.held {
            Held::Postgres(connection) => sqlx::query("SELECT 1").execute(connection).await.is_ok(),
            Held::Sqlite { db, holder, .. } => {
                let found: Result<Option<String>, sqlx::Error> = on_backend!(&*db, pool => {
                    sqlx::query_scalar("SELECT holder FROM leases WHERE name = $1")
                        .bind(self.kind.lease())
                        .fetch_optional(pool)
                        .await
                });
                found.is_ok_and(|found| found.as_deref() == Some(holder.as_str()))
            }
        }
    }

    /// Gives the lock back. (A process that dies gives it back too: with its
    /// connection on PostgreSQL, after a minute without a beat on SQLite.)
    pub async fn release(self) {
        match self.held {
            Held::Postgres(mut connection) => {
                // Unlocked first: the server ends a closed session (and its locks) a
                // moment after the client has gone, so a lock taken right after this
                // returns could still find it held. Closing the session ends it anyway.
                if let Err(error) =
                    sqlx::query("SELECT pg_advisory_unlock($1, hashtext(current_schema()))")
                        .bind(self.kind.advisory_class())
                        .execute(&mut connection)
                        .await
                {
                    tracing::warn!(%error, "the lock could not be given back; closing its session ends it");
                }
                if let Err(error) = connection.close().await {
                    tracing::warn!(%error, "the lock's connection did not close cleanly; the server ends its session");
                }
            }
            Held::Sqlite {
                db,
                holder,
                heartbeat,
            } => {
                drop(heartbeat);
                let deleted = on_backend!(&db, pool => {
                    sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
                        .bind(self.kind.lease())
                        .bind(&holder)
                        .execute(pool)
                        .await
                        .map(drop)
                });
                if let Err(error) = deleted {
                    tracing::warn!(%error, "the lease row could not be deleted; it is abandoned soon");
                }
            }
        }
    }
}

async fn beat(pool: sqlx::SqlitePool, kind: LockKind, holder: String, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let beat = sqlx::query("UPDATE leases SET beat_at = $1 WHERE name = $2 AND holder = $3")
            .bind(Utc::now())
            .bind(kind.lease())
            .bind(&holder)
            .execute(&pool)
            .await;
        if let Err(error) = beat {
            tracing::warn!(%error, "the lease's heartbeat failed");
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "this machine".into())
}
