//! Group commit: one writer task takes every append waiting at the moment it is
//! free and writes them in one transaction, each in its own savepoint. One commit
//! (one fsync) then serves many commands, and a command that conflicts rolls back
//! its own savepoint without failing the others. A caller hears back only after the
//! commit, so an acknowledged event is durable.

use std::time::Instant;

use sqlx::sqlite::SqliteConnection;
use sqlx::{ConnectOptions, Connection, Postgres};
use tokio::sync::{mpsc, oneshot};

use super::append::{AppendError, AppendRequest, append_in, explain_failure};
use super::batch::{append_batch_in, record_step};
use super::model::Appended;
use super::projector::Projectors;
use crate::db::{Backend, Conn, Db, Tx};

/// The most appends one transaction takes; bounds a batch's latency.
const MAX_BATCH: usize = 256;

pub(super) struct Job {
    pub request: AppendRequest,
    pub reply: oneshot::Sender<Result<Appended, AppendError>>,
}

/// Starts the writer. On SQLite it runs on a thread of its own (see
/// [`on_its_own_thread`]); on PostgreSQL, whose connections belong to the runtime
/// that opened them, as a task of the caller's runtime.
pub(super) fn spawn(db: Db, projectors: Projectors) -> mpsc::Sender<Job> {
    let (sender, receiver) = mpsc::channel(4 * MAX_BATCH);
    match db {
        Backend::Sqlite(_) => on_its_own_thread(run(db, projectors, receiver)),
        Backend::Postgres(_) => drop(tokio::spawn(run(db, projectors, receiver))),
    }
    sender
}

/// Runs the SQLite writer on a thread of its own, in a runtime of its own, until
/// every sender is gone or the pool closes.
///
/// A batch is a dozen statements, each a round trip to the thread of sqlx's
/// SQLite connection. As a task among the requests', the writer waited its turn on
/// the runtime's workers after each of them (under load 1–2 ms for a `BEGIN`); on
/// its own thread it runs as soon as the answer comes (BENCHMARKS.md, "What changed
/// what"). Its connection is its own and SQLite's are not tied to a runtime, so
/// nothing it holds outlives the runtime it was made in.
fn on_its_own_thread(writer: impl Future<Output = ()> + Send + 'static) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime for the group-commit writer");
    std::thread::Builder::new()
        .name("group-commit".into())
        .spawn(move || runtime.block_on(writer))
        .expect("a thread for the group-commit writer");
}

async fn run(db: Db, projectors: Projectors, mut jobs: mpsc::Receiver<Job>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    let mut connection = WriterConnection::new(db.clone());
    loop {
        let received = tokio::select! {
            received = jobs.recv_many(&mut batch, MAX_BATCH) => received,
            () = closed(&db), if connection.own.is_some() => {
                connection.close().await;
                continue;
            }
        };
        if received == 0 {
            break;
        }
        // Callers woken by the last commit are often about to send their next
        // append: let them run once before the batch closes, so it takes them too
        // (on PostgreSQL, whose writer shares their runtime).
        tokio::task::yield_now().await;
        let room = MAX_BATCH - batch.len();
        if room > 0 && !jobs.is_empty() {
            jobs.recv_many(&mut batch, room).await;
        }
        let requests: Vec<&AppendRequest> = batch.iter().map(|job| &job.request).collect();
        match commit_batch(&mut connection, &projectors, &requests).await {
            Ok(outcomes) => {
                count(&outcomes);
                for (job, outcome) in batch.drain(..).zip(outcomes) {
                    // The caller may have gone away (a closed browser tab); the
                    // events are committed all the same.
                    let _ = job.reply.send(outcome);
                }
            }
            Err(error) => {
                tracing::error!(error = %error, batch = batch.len(), "group commit failed; nothing in the batch was written");
                for job in batch.drain(..) {
                    let _ = job.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// Resolves when the pool closes (never for PostgreSQL, whose writer keeps nothing).
async fn closed(db: &Db) {
    match db {
        Backend::Sqlite(pool) => pool.close_event().await,
        Backend::Postgres(_) => std::future::pending().await,
    }
}

async fn record_step_of<T>(step: &'static str, work: impl Future<Output = T>) -> T {
    let began = Instant::now();
    let done = work.await;
    record_step(step, began);
    done
}

/// The batch in the process's metrics: its size, the appends written, the events
/// they wrote, and the appends refused for a stale expected version.
fn count(outcomes: &[Result<Appended, AppendError>]) {
    metrics::histogram!("quoteline_group_commit_batch_size").record(outcomes.len() as f64);
    let mut written = 0u64;
    let mut events = 0u64;
    let mut conflicts = 0u64;
    for outcome in outcomes {
        match outcome {
            Ok(Appended::Written(new)) => {
                written += 1;
                events += new.len() as u64;
            }
            Err(AppendError::Conflict { .. }) => conflicts += 1,
            _ => {}
        }
    }
    metrics::counter!("quoteline_appends_total").increment(written);
    metrics::counter!("quoteline_events_appended_total").increment(events);
    metrics::counter!("quoteline_append_conflicts_total").increment(conflicts);
}

/// Writes a batch in one transaction: set-based first, and if that fails for any
/// reason, again with one savepoint per append. The outer error means the
/// transaction as a whole failed and nothing was written; the inner results are
/// each command's own.
async fn commit_batch(
    connection: &mut WriterConnection,
    projectors: &Projectors,
    requests: &[&AppendRequest],
) -> Result<Vec<Result<Appended, AppendError>>, AppendError> {
    match write_batch(connection, projectors, requests, Mode::SetBased).await {
        Ok(outcomes) => Ok(outcomes),
        Err(error) => {
            tracing::debug!(%error, "set-based batch failed; writing it one append at a time");
            write_batch(connection, projectors, requests, Mode::SavepointEach).await
        }
    }
}

#[derive(Clone, Copy)]
enum Mode {
    SetBased,
    SavepointEach,
}

/// One write transaction on the writer's connection: the batch, then commit; rolled
/// back on any error, and a connection left in a state nobody knows is closed.
async fn write_batch(
    connection: &mut WriterConnection,
    projectors: &Projectors,
    requests: &[&AppendRequest],
    mode: Mode,
) -> Result<Vec<Result<Appended, AppendError>>, AppendError> {
    let began = Instant::now();
    let mut pooled = connection.take().await?;
    let mut tx = pooled.as_conn().begin_write().await?;
    record_step("begin", began);
    let written = async {
        Ok(match mode {
            Mode::SetBased => append_batch_in(tx.as_conn(), projectors, requests).await?,
            Mode::SavepointEach => {
                let mut outcomes = Vec::with_capacity(requests.len());
                for request in requests {
                    outcomes.push(append_in_savepoint(&mut tx, projectors, request).await?);
                }
                outcomes
            }
        })
    }
    .await;
    match written {
        Ok(outcomes) => match record_step_of("commit", tx.commit()).await {
            Ok(()) => {
                connection.give_back(pooled);
                Ok(outcomes)
            }
            Err(error) => {
                // sqlx rolls back a transaction whose commit failed as it drops it, and
                // nobody hears whether that worked: the connection's state is unknown.
                pooled.discard();
                Err(error.into())
            }
        },
        Err(error) => {
            if tx.rollback().await.is_ok() {
                connection.give_back(pooled);
            } else {
                // A connection in an unknown transaction state must not be used again.
                pooled.discard();
            }
            Err(error)
        }
    }
}

/// The connection a batch is written on. On SQLite the writer's own, kept between
/// batches (opened when first needed, and again after one was closed): it never
/// waits for the pool behind the readers, and its page cache, larger than the
/// pool's, keeps the pages that appends touch. On PostgreSQL one from the pool for
/// each batch.
struct WriterConnection {
    db: Db,
    own: Option<SqliteConnection>,
}

/// The writer's SQLite page cache, in KiB (the pool's connections have 1 MiB): the
/// indexes' upper pages that every append walks.
const WRITER_CACHE_KIB: u32 = 8 * 1024;

/// A connection taken for one batch.
type BatchConnection = Backend<SqliteConnection, sqlx::pool::PoolConnection<Postgres>>;

impl WriterConnection {
    fn new(db: Db) -> Self {
        WriterConnection { db, own: None }
    }

    async fn take(&mut self) -> Result<BatchConnection, sqlx::Error> {
        Ok(match &self.db {
            // The database was closed: so is the writer's own connection.
            Backend::Sqlite(pool) if pool.is_closed() => {
                self.close().await;
                return Err(sqlx::Error::PoolClosed);
            }
            Backend::Sqlite(pool) => Backend::Sqlite(match self.own.take() {
                Some(own) => own,
                None => {
                    (*pool.connect_options())
                        .clone()
                        .pragma("cache_size", format!("-{WRITER_CACHE_KIB}"))
                        .connect()
                        .await?
                }
            }),
            Backend::Postgres(pool) => Backend::Postgres(pool.acquire().await?),
        })
    }

    /// Closes the writer's own connection, if it has one: when the pool closes, so
    /// that the last connection to close (which checkpoints SQLite's WAL into the
    /// database file) is the pool's.
    async fn close(&mut self) {
        if let Some(own) = self.own.take()
            && let Err(error) = own.close().await
        {
            tracing::warn!(%error, "the writer's connection did not close cleanly");
        }
    }

    /// Keeps the writer's own connection, or returns the pool's, once its
    /// transaction ended as it should.
    fn give_back(&mut self, taken: BatchConnection) {
        if let Backend::Sqlite(own) = taken {
            self.own = Some(own);
        }
    }
}

impl BatchConnection {
    /// Closes the connection instead of keeping it or returning it to the pool.
    fn discard(self) {
        match self {
            Backend::Sqlite(own) => drop(own),
            Backend::Postgres(pooled) => drop(pooled.detach()),
        }
    }

    fn as_conn(&mut self) -> Conn<'_> {
        match self {
            Backend::Sqlite(c) => Backend::Sqlite(c),
            Backend::Postgres(c) => Backend::Postgres(&mut **c),
        }
    }
}

/// One append in a savepoint of its own, so that its failure undoes only its own
/// statements. sqlx rolls back to a savepoint without releasing it: the next
/// append's savepoint nests inside, and the batch's commit releases them all.
async fn append_in_savepoint(
    tx: &mut Tx<'_>,
    projectors: &Projectors,
    request: &AppendRequest,
) -> Result<Result<Appended, AppendError>, sqlx::Error> {
    let mut savepoint = tx.savepoint().await?;
    match append_in(savepoint.as_conn(), projectors, request).await {
        Ok(appended) => {
            savepoint.commit().await?;
            Ok(Ok(appended))
        }
        Err(error) => {
            savepoint.rollback().await?;
            Ok(explain_failure(tx.as_conn(), request, error).await)
        }
    }
}
