//! The event store's append benchmark (docs/ARCHITECTURE.md §9): EventStore::append with 1 and
//! 16 concurrent writers, each beside the raw limit measured in the same run, one
//! INSERT per transaction of an events row on 1 and 16 connections.
//!
//! `cargo bench --bench append -- [--backend sqlite|postgres|both] [--events N]
//! [--writers LIST] [--warmup N]`
//!
//! Commits are durable: SQLite in WAL with synchronous=FULL (as `Db::connect_sqlite`
//! sets), PostgreSQL as the server is configured (its synchronous_commit and fsync
//! are printed). Results go to standard output as a table; BENCHMARKS.md keeps them.

mod common;

use common::{CommonArgs, WholeRun, millis, number, percentile, positive, share};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Parser;
use quoteline::db::{Backend, Db};
use quoteline::eventstore::{
    AppendRequest, Appended, EventStore, ExpectedVersion, Metadata, NewEvent,
};
use quoteline::on_backend;
use serde_json::{Value, json};
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::types::Json;
use sqlx::{Connection, PgConnection, SqliteConnection};
use tokio::sync::Barrier;
use uuid::Uuid;

/// §9: what append with 16 writers must reach, as a multiple of the raw limit.
const BUDGET_WRITERS: usize = 16;

fn budget(backend: &str) -> f64 {
    match backend {
        "sqlite" => 3.0,
        _ => 1.5,
    }
}

/// The raw limit's statement: the same row an append writes, without the stream
/// head, the checks or the savepoint. Its own transaction (autocommit), which is the
/// cheapest way to commit one row on either backend.
const RAW_INSERT: &str = "INSERT INTO events (stream_id, version, event_id, event_type, \
     schema_version, payload, actor, recorded_at, request_id, prev_hash, hash) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING position";

/// A section's worth of form fields, about the size a quote event carries.
fn payload() -> Value {
    json!({
        "section": "contact",
        "fields": {
            "name": "Ada Lovelace",
            "email": "ada.lovelace@example.com",
            "phone": "+44 20 7946 0000",
            "address": "12 St James's Square",
            "postcode": "SW1Y 4JH",
            "country": "GB"
        }
    })
}

/// The event store's append benchmark (docs/ARCHITECTURE.md §9): EventStore::append with 1 and
/// 16 concurrent writers, each beside one INSERT per transaction.
#[derive(Parser, Debug)]
#[command(
    name = "append",
    bin_name = "cargo bench --bench append --",
    after_help = common::postgres_help(),
    args_override_self = true
)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Timed operations per configuration.
    #[arg(long, value_name = "N", default_value = "5000", value_parser = positive)]
    events: usize,
    /// Untimed operations before each configuration [default: events/10, at least 100]
    #[arg(long, value_name = "N", value_parser = number)]
    warmup: Option<usize>,
    /// Concurrent writers, one configuration each, comma-separated.
    #[arg(
        long,
        value_name = "LIST",
        value_delimiter = ',',
        action = clap::ArgAction::Set,
        default_value = "1,16",
        value_parser = positive
    )]
    writers: Vec<usize>,
}

impl Args {
    fn warmup(&self) -> usize {
        self.warmup.unwrap_or((self.events / 10).max(100))
    }
}

const RAW: &str = "raw INSERT/txn";
const STORE: &str = "EventStore::append";
const CEILING: &str = "fallback: savepoint each";

/// One configuration's outcome.
struct Measured {
    path: &'static str,
    writers: usize,
    operations: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// Appends per commit, where the backend lets us count commits.
    per_commit: Option<f64>,
}

impl Measured {
    fn new(
        path: &'static str,
        writers: usize,
        elapsed: Duration,
        mut latencies: Vec<Duration>,
    ) -> Self {
        latencies.sort_unstable();
        Measured {
            path,
            writers,
            operations: latencies.len(),
            elapsed,
            latencies,
            per_commit: None,
        }
    }

    fn rate(&self) -> f64 {
        self.operations as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }
}

/// A backend under test: the options of its fresh database, to open connections
/// of the raw limit's own.
type Target = Backend<SqliteConnectOptions, PgConnectOptions>;

type RawConn = Backend<SqliteConnection, PgConnection>;

async fn open(target: &Target) -> Result<RawConn, sqlx::Error> {
    Ok(match target {
        Backend::Sqlite(options) => Backend::Sqlite(SqliteConnection::connect_with(options).await?),
        Backend::Postgres(options) => Backend::Postgres(PgConnection::connect_with(options).await?),
    })
}

async fn insert_one(conn: &mut RawConn, payload: &Value) -> Result<(), sqlx::Error> {
    on_backend!(conn, c => {
        sqlx::query_scalar::<_, i64>(RAW_INSERT)
            .bind(Uuid::now_v7())
            .bind(1i64)
            .bind(Uuid::now_v7())
            .bind("ContactDetailsGiven")
            .bind(1i32)
            .bind(Json(payload))
            .bind("bench@example.com")
            .bind(Utc::now())
            .bind(Some("bench-request"))
            .bind(FAKE_HASH)
            .bind(FAKE_HASH)
            .fetch_one(&mut *c)
            .await
            .map(drop)
    })
}

async fn close(conn: RawConn) {
    let _ = on_backend!(conn, c => c.close().await);
}

/// A SHA-256 in hex: the length of the real hashes.
const FAKE_HASH: &str = "5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";

/// One INSERT per transaction, `writers` connections at once, each its own.
async fn raw_limit(
    target: &Target,
    writers: usize,
    total: usize,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let mut conns = Vec::with_capacity(writers);
    for _ in 0..writers {
        conns.push(open(target).await?);
    }
    let start_line = Arc::new(Barrier::new(writers + 1));
    let mut tasks = Vec::with_capacity(writers);
    for (writer, mut conn) in conns.into_iter().enumerate() {
        let start_line = start_line.clone();
        let count = share(total, writers, writer);
        tasks.push(tokio::spawn(async move {
            let payload = payload();
            let mut latencies = Vec::with_capacity(count);
            start_line.wait().await;
            for _ in 0..count {
                let began = Instant::now();
                insert_one(&mut conn, &payload).await?;
                latencies.push(began.elapsed());
            }
            close(conn).await;
            Ok::<_, sqlx::Error>(latencies)
        }));
    }
    start_line.wait().await;
    let began = Instant::now();
    let mut latencies = Vec::with_capacity(total);
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok((began.elapsed(), latencies))
}

/// `writers` tasks appending through the store at once, each one event at a time to
/// a stream of its own, with the version it last saw: what a command handler does.
async fn appends(
    store: &EventStore,
    writers: usize,
    total: usize,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let start_line = Arc::new(Barrier::new(writers + 1));
    let mut tasks = Vec::with_capacity(writers);
    for writer in 0..writers {
        let store = store.clone();
        let start_line = start_line.clone();
        let count = share(total, writers, writer);
        tasks.push(tokio::spawn(async move {
            let stream_id = Uuid::now_v7();
            let event = NewEvent {
                event_type: "ContactDetailsGiven".into(),
                schema_version: 1,
                payload: payload(),
            };
            let mut latencies = Vec::with_capacity(count);
            start_line.wait().await;
            for version in 0..count as i64 {
                // Every form carries an idempotency key, so every append checks it.
                let metadata = Metadata::new("bench@example.com", Utc::now())
                    .with_request_id("bench-request")
                    .with_idempotency_key(Uuid::now_v7().to_string());
                let request = AppendRequest {
                    stream_id,
                    expected: ExpectedVersion::from(version),
                    events: vec![event.clone()],
                    metadata,
                };
                let began = Instant::now();
                let appended = store.append(request).await?;
                latencies.push(began.elapsed());
                anyhow::ensure!(
                    matches!(appended, Appended::Written(ref e) if e.len() == 1),
                    "append to {stream_id} at {version} wrote nothing new"
                );
            }
            Ok(latencies)
        }));
    }
    start_line.wait().await;
    let began = Instant::now();
    let mut latencies = Vec::with_capacity(total);
    for task in tasks {
        latencies.extend(task.await??);
    }
    Ok((began.elapsed(), latencies))
}

/// Not a budget figure: the writer's fallback path (one savepoint and its own
/// statements per append, used when the set-based path fails) in full batches of
/// `batch` appends per transaction, so nothing waits on other tasks.
async fn full_batches(
    store: &EventStore,
    batch: usize,
    total: usize,
) -> anyhow::Result<(Duration, Vec<Duration>)> {
    let streams: Vec<Uuid> = (0..batch).map(|_| Uuid::now_v7()).collect();
    let event = NewEvent {
        event_type: "ContactDetailsGiven".into(),
        schema_version: 1,
        payload: payload(),
    };
    let mut latencies = Vec::with_capacity(total);
    let began = Instant::now();
    let mut written = 0;
    let mut version = 0i64;
    while written < total {
        let size = batch.min(total - written);
        let batch_began = Instant::now();
        let mut pooled = store.db().acquire().await?;
        let mut tx = pooled.as_conn().begin_write().await?;
        for &stream_id in &streams[..size] {
            let request = AppendRequest {
                stream_id,
                expected: ExpectedVersion::from(version),
                events: vec![event.clone()],
                metadata: Metadata::new("bench@example.com", Utc::now())
                    .with_request_id("bench-request")
                    .with_idempotency_key(Uuid::now_v7().to_string()),
            };
            let mut savepoint = tx.savepoint().await?;
            store.append_within(savepoint.as_conn(), &request).await?;
            savepoint.commit().await?;
        }
        tx.commit().await?;
        latencies.extend(std::iter::repeat_n(batch_began.elapsed(), size));
        written += size;
        version += 1;
    }
    Ok((began.elapsed(), latencies))
}

/// The median time of one trivial statement on a pooled connection: what every
/// statement of an append costs before it does any work.
async fn round_trip(db: &Db) -> Result<Duration, sqlx::Error> {
    const TIMES: usize = 2_000;
    let mut pooled = db.acquire().await?;
    let mut conn = pooled.as_conn();
    for _ in 0..TIMES / 10 {
        conn.execute_plain("SELECT 1").await?;
    }
    let mut times = Vec::with_capacity(TIMES);
    for _ in 0..TIMES {
        let began = Instant::now();
        conn.execute_plain("SELECT 1").await?;
        times.push(began.elapsed());
    }
    times.sort_unstable();
    Ok(times[TIMES / 2])
}

/// Counts the commits the store makes, to tell how many appends one commit served.
enum Commits {
    /// A commit hook on every connection of the pool: SQLite keeps no trace of
    /// which transaction wrote a row.
    Sqlite(Arc<AtomicU64>),
    /// PostgreSQL stamps each event with its transaction id.
    Postgres,
}

impl Commits {
    async fn watch(db: &Db) -> Result<Commits, sqlx::Error> {
        let Backend::Sqlite(pool) = db else {
            return Ok(Commits::Postgres);
        };
        let count = Arc::new(AtomicU64::new(0));
        // Hold every connection the pool may open, so that each gets the hook.
        let mut held = Vec::new();
        for _ in 0..pool.options().get_max_connections() {
            let mut conn = pool.acquire().await?;
            let count = count.clone();
            conn.lock_handle().await?.set_commit_hook(move || {
                count.fetch_add(1, Ordering::Relaxed);
                true
            });
            held.push(conn);
        }
        Ok(Commits::Sqlite(count))
    }

    async fn so_far(&self, db: &Db) -> Result<u64, sqlx::Error> {
        match (self, db) {
            (Commits::Sqlite(count), _) => Ok(count.load(Ordering::Relaxed)),
            (Commits::Postgres, Backend::Postgres(pool)) => {
                sqlx::query_scalar::<_, i64>("SELECT count(DISTINCT tx_id) FROM events")
                    .fetch_one(pool)
                    .await
                    .map(|n| n as u64)
            }
            (Commits::Postgres, Backend::Sqlite(_)) => unreachable!("watched as PostgreSQL"),
        }
    }
}

/// Every configuration on one backend: the raw limit, then the store.
async fn measure(db: &Db, args: &Args) -> anyhow::Result<Vec<Measured>> {
    db.migrate().await?;
    // The raw limit's connections are set exactly as the pool's (WAL, FULL sync, busy
    // timeout; search_path), but are its own, so that 16 of them can be open at once.
    let target: Target = match db {
        Backend::Sqlite(pool) => Backend::Sqlite((*pool.connect_options()).clone()),
        Backend::Postgres(pool) => Backend::Postgres((*pool.connect_options()).clone()),
    };
    let target = &target;
    let trip = round_trip(db).await?;
    println!(
        "{}: one statement's round trip on a pooled connection (median): {:.0} µs",
        db.backend_name(),
        trip.as_secs_f64() * 1e6
    );
    let commits = Commits::watch(db).await?;
    let store = EventStore::new(db.clone(), vec![]);
    // Each store figure is measured right after the raw limit it is compared with,
    // so that a change in the machine's load between the two moves the ratio less.
    let mut results = Vec::new();
    for &writers in &args.writers {
        raw_limit(target, writers, args.warmup()).await?;
        let (elapsed, latencies) = raw_limit(target, writers, args.events).await?;
        let mut measured = Measured::new(RAW, writers, elapsed, latencies);
        measured.per_commit = Some(1.0); // by construction
        results.push(measured);

        appends(&store, writers, args.warmup()).await?;
        let before = commits.so_far(db).await?;
        let (elapsed, latencies) = appends(&store, writers, args.events).await?;
        let committed = commits.so_far(db).await? - before;
        let mut measured = Measured::new(STORE, writers, elapsed, latencies);
        measured.per_commit =
            (committed > 0).then(|| measured.operations as f64 / committed as f64);
        results.push(measured);
    }
    let batch = args.writers.iter().copied().max().unwrap_or(1);
    full_batches(&store, batch, args.warmup()).await?;
    let (elapsed, latencies) = full_batches(&store, batch, args.events).await?;
    let mut measured = Measured::new(CEILING, batch, elapsed, latencies);
    measured.per_commit = Some(batch as f64);
    results.push(measured);
    results.sort_by_key(|m| {
        (
            [RAW, STORE, CEILING].iter().position(|p| *p == m.path),
            m.writers,
        )
    });
    Ok(results)
}

async fn bench_sqlite(args: &Args) -> anyhow::Result<Vec<Measured>> {
    let folder = tempfile::tempdir()?;
    let path = folder.path().join("bench.db");
    let options = SqliteConnectOptions::new().filename(&path);
    let db = Db::connect_sqlite(options.clone()).await?;
    common::describe_sqlite(&db, &path).await?;
    let results = measure(&db, args).await;
    db.close().await;
    results
}

/// Ok(None) with the reason printed when the server cannot be reached.
async fn bench_postgres(args: &Args) -> anyhow::Result<Option<Vec<Measured>>> {
    common::BenchSchema::run("bench_append", |options| async move {
        let db = Db::connect_postgres(options).await?;
        let results = measure(&db, args).await;
        db.close().await;
        results
    })
    .await
}

fn print_table(backend: &str, results: &[Measured]) {
    println!();
    println!(
        "| {:<8} | {:<21} | {:>7} | {:>7} | {:>10} | {:>8} | {:>8} | {:>10} |",
        "backend", "path", "writers", "events", "events/s", "p50 ms", "p99 ms", "per commit"
    );
    println!(
        "| {:-<8} | {:-<21} | {:->7} | {:->7} | {:->10} | {:->8} | {:->8} | {:->10} |",
        "", "", "", "", "", "", "", ""
    );
    for m in results {
        println!(
            "| {:<8} | {:<21} | {:>7} | {:>7} | {:>10.0} | {:>8} | {:>8} | {:>10} |",
            backend,
            m.path,
            m.writers,
            m.operations,
            m.rate(),
            millis(m.percentile(50.0)),
            millis(m.percentile(99.0)),
            m.per_commit.map_or("-".into(), |n| format!("{n:.1}")),
        );
    }
    let find = |path: &str, writers: usize| {
        results
            .iter()
            .find(|m| m.path == path && m.writers == writers)
    };
    let Some(store) = find(STORE, BUDGET_WRITERS) else {
        println!("({backend}: no {BUDGET_WRITERS}-writer append measured, no budget check)");
        return;
    };
    // §9's baseline is one INSERT per transaction from one connection; the same on
    // 16 connections is shown beside it, since PostgreSQL commits those in groups of
    // its own while SQLite's busy timeout makes them sleep.
    let budget = budget(backend);
    if let Some(raw) = find(RAW, 1) {
        let ratio = store.rate() / raw.rate();
        println!(
            "{backend} budget: append with {BUDGET_WRITERS} writers / raw INSERT per txn on 1 connection \
             = {:.0} / {:.0} = {ratio:.2}x; §9 asks >= {budget}x: {}",
            store.rate(),
            raw.rate(),
            if ratio >= budget { "met" } else { "NOT MET" },
        );
    }
    let beside = [
        (STORE, BUDGET_WRITERS, RAW, BUDGET_WRITERS),
        (CEILING, BUDGET_WRITERS, RAW, 1),
    ];
    for (path, writers, raw_path, raw_writers) in beside {
        if let (Some(m), Some(raw)) = (find(path, writers), find(raw_path, raw_writers)) {
            println!(
                "{backend} beside it: {path} ({writers}) / {raw_path} ({raw_writers}) = {:.2}x",
                m.rate() / raw.rate()
            );
        }
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    println!(
        "append benchmark: {} events per configuration after {} warm-up, writers {:?}, {} cores",
        args.events,
        args.warmup(),
        args.writers,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let whole_run = WholeRun::start();
    let mut tables = Vec::new();
    if args.common.backend.sqlite() {
        tables.push(("sqlite", bench_sqlite(&args).await?));
    }
    if args.common.backend.postgres()
        && let Some(results) = bench_postgres(&args).await?
    {
        tables.push(("postgres", results));
    }
    for (backend, results) in &tables {
        print_table(backend, results);
    }
    whole_run.finish();
    Ok(())
}
