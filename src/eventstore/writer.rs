//! Group commit: one writer task takes every append waiting at the moment it is
//! free and writes them in one transaction, each in its own savepoint. One commit
//! (one fsync) then serves many commands, and a command that conflicts rolls back
//! its own savepoint without failing the others. A caller hears back only after the
//! commit, so an acknowledged event is durable.

use std::sync::Arc;
use std::time::Instant;

use sqlx::postgres::PgConnection;
use sqlx::sqlite::SqliteConnection;
use sqlx::{ConnectOptions, Connection};
use tokio::sync::{Notify, mpsc, oneshot};

use super::append::{AppendError, AppendRequest, append_in, explain_failure};
use super::batch::{append_batch_in, record_step};
use super::model::Appended;
use super::projector::Projectors;
use crate::db::{Backend, Conn, Db, Tx};
use crate::on_backend;

/// The most appends one transaction takes; bounds a batch's latency.
const MAX_BATCH: usize = 256;

pub(super) struct Job {
    pub request: AppendRequest,
    pub reply: oneshot::Sender<Result<Appended, AppendError>>,
}

/// Starts the writer on a thread of its own (see [`on_its_own_thread`]).
pub(super) fn spawn(db: Db, projectors: Projectors) -> mpsc::Sender<Job> {
    let (sender, receiver) = mpsc::channel(4 * MAX_BATCH);
    on_its_own_thread(run(db, projectors, receiver));
    sender
}

/// Runs the writer on a thread of its own, in a runtime of its own, until every
/// sender is gone or the pool closes.
///
/// A batch is a dozen statements, each a round trip to the database (to the
/// thread of sqlx's SQLite connection, or to PostgreSQL). As a task among the
/// requests', the writer waited its turn on the runtime's workers after each of
/// them (under load 1–2 ms for a `BEGIN` on SQLite, 2.5 ms on PostgreSQL); on its
/// own thread it runs as soon as the answer comes (BENCHMARKS.md, "What changed
/// what"). It opens its connection itself, in this runtime: a PostgreSQL
/// connection's socket belongs to the runtime that opened it, and nothing the
/// writer holds outlives the runtime it was made in.
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
    let checkpoints = Arc::new(Notify::new());
    if let Backend::Sqlite(pool) = &db {
        tokio::spawn(checkpoint_after_commits(pool.clone(), checkpoints.clone()));
    }
    loop {
        let received = tokio::select! {
            received = jobs.recv_many(&mut batch, MAX_BATCH) => received,
            () = db_closed(&db), if connection.own.is_some() => {
                connection.close().await;
                continue;
            }
        };
        if received == 0 {
            break;
        }
        // Callers woken by the last commit are often about to send their next
        // append: let the batch take those that arrived meanwhile too.
        tokio::task::yield_now().await;
        let room = MAX_BATCH - batch.len();
        if room > 0 && !jobs.is_empty() {
            jobs.recv_many(&mut batch, room).await;
        }
        let requests: Vec<&AppendRequest> = batch.iter().map(|job| &job.request).collect();
        match commit_batch(&mut connection, &projectors, &requests).await {
            Ok(outcomes) => {
                checkpoints.notify_one();
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

/// Copies the WAL's committed pages into the SQLite database file after commits, on
/// a connection of its own, so that the writer's commits do not: with SQLite's
/// automatic checkpoint every third commit or so also wrote about a thousand pages
/// back and synced the file while every caller in the batch, and every caller
/// queued behind it, waited. A PASSIVE checkpoint never waits for the writer or for
/// readers and the writer never waits for it; commits that come while one runs are
/// taken by the next.
async fn checkpoint_after_commits(pool: sqlx::SqlitePool, commits: Arc<Notify>) {
    let mut own: Option<SqliteConnection> = None;
    loop {
        tokio::select! {
            () = commits.notified() => {}
            () = pool.close_event() => break,
        }
        let began = Instant::now();
        let connection = match own.as_mut() {
            Some(connection) => connection,
            None => match (*pool.connect_options()).clone().connect().await {
                Ok(connection) => own.insert(connection),
                Err(error) => {
                    tracing::warn!(%error, "the checkpointer could not connect; the writer checkpoints past its limit meanwhile");
                    continue;
                }
            },
        };
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut *connection)
            .await
        {
            tracing::warn!(%error, "a checkpoint failed; the next commit tries again");
            own = None;
        }
        record_step("checkpoint", began);
    }
    // The pool's last connection to close checkpoints what is left.
    if let Some(connection) = own {
        let _ = connection.close().await;
    }
}

/// How many pages the WAL may hold before the writer checkpoints after its own
/// commit. `checkpoint_after_commits` keeps the WAL copied back, but SQLite starts
/// the WAL over from its beginning only when a write transaction begins with every
/// page copied back; the checkpointer, started by a commit, rarely finishes before
/// the next batch begins, so the WAL would grow (to 400 MB in 15 s of POSTs). Past
/// this size the writer's own checkpoint (little to copy: the checkpointer has
/// copied the rest) leaves it all copied back as the next batch begins, and the WAL
/// starts over.
const WRITER_CHECKPOINT_PAGES: u32 = 16_384;

/// Resolves when the pool closes.
async fn db_closed(db: &Db) {
    on_backend!(db, pool => pool.close_event().await)
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
    // A kept connection the database has cut since (PostgreSQL restarted, say) fails
    // here, before anything is written: it is dropped, and `commit_batch`'s second
    // attempt runs on a new one.
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
                drop(pooled);
                Err(error.into())
            }
        },
        Err(error) => {
            if tx.rollback().await.is_ok() {
                connection.give_back(pooled);
            } else {
                // A connection in an unknown transaction state must not be used again.
                drop(pooled);
            }
            Err(error)
        }
    }
}

/// The connection a batch is written on: the writer's own, opened beside the pool
/// with its options when first needed (and again after one was discarded), and
/// kept between batches. It never waits for the pool behind the readers, a batch
/// does not ping it as the pool pings a connection it hands out, and the statements
/// the writer prepared stay prepared on it. On SQLite its page cache is larger
/// than the pool's, for the pages that appends touch.
struct WriterConnection {
    db: Db,
    own: Option<BatchConnection>,
}

/// The writer's SQLite page cache, in KiB (the pool's connections have 1 MiB): the
/// indexes' upper pages that every append walks.
const WRITER_CACHE_KIB: u32 = 8 * 1024;

/// A connection taken for one batch.
type BatchConnection = Backend<SqliteConnection, PgConnection>;

impl WriterConnection {
    fn new(db: Db) -> Self {
        WriterConnection { db, own: None }
    }

    async fn take(&mut self) -> Result<BatchConnection, sqlx::Error> {
        if on_backend!(&self.db, pool => pool.is_closed()) {
            // The database was closed: so is the writer's own connection.
            self.close().await;
            return Err(sqlx::Error::PoolClosed);
        }
        if let Some(own) = self.own.take() {
            return Ok(own);
        }
        Ok(match &self.db {
            Backend::Sqlite(pool) => Backend::Sqlite(
                (*pool.connect_options())
                    .clone()
                    .pragma("cache_size", format!("-{WRITER_CACHE_KIB}"))
                    // Its commits leave the WAL to `checkpoint_after_commits`, unless
                    // the WAL has grown past this many pages (see there).
                    .pragma("wal_autocheckpoint", WRITER_CHECKPOINT_PAGES.to_string())
                    // The savepoints' journal (the pages an append changes again
                    // after an earlier one in the batch changed them) in memory:
                    // in a file, SQLite created and deleted one in /var/tmp every
                    // batch.
                    .pragma("temp_store", "memory")
                    .connect()
                    .await?,
            ),
            Backend::Postgres(pool) => {
                Backend::Postgres((*pool.connect_options()).clone().connect().await?)
            }
        })
    }

    /// Closes the writer's own connection, if it has one, when the pool closes: on
    /// SQLite the last connection to close (which checkpoints the WAL into the
    /// database file) should be the pool's, and on PostgreSQL a closed pool means
    /// the database is not to be used any more.
    async fn close(&mut self) {
        let closed = match self.own.take() {
            None => Ok(()),
            Some(Backend::Sqlite(own)) => own.close().await,
            Some(Backend::Postgres(own)) => own.close().await,
        };
        if let Err(error) = closed {
            tracing::warn!(%error, "the writer's connection did not close cleanly");
        }
    }

    /// Keeps the connection for the next batch, once its transaction ended as it
    /// should.
    fn give_back(&mut self, taken: BatchConnection) {
        self.own = Some(taken);
    }
}

impl BatchConnection {
    fn as_conn(&mut self) -> Conn<'_> {
        match self {
            Backend::Sqlite(c) => Backend::Sqlite(c),
            Backend::Postgres(c) => Backend::Postgres(c),
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
