//! What the benchmarks share: the command-line pieces every one accepts, a
//! PostgreSQL schema of their own, the SQLite settings they print, and the figures
//! and output helpers. Not every benchmark uses every piece.
#![allow(dead_code)]

use std::future::Future;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, Instant};

use quoteline::db::{Backend, Db};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The end of every benchmark's `--help`.
pub fn postgres_help() -> String {
    format!("PostgreSQL: QUOTELINE_BENCH_POSTGRES (default {DEFAULT_POSTGRES_URL})")
}

/// Which backends a run measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backends {
    Sqlite,
    Postgres,
    Both,
}

impl Backends {
    pub fn sqlite(self) -> bool {
        matches!(self, Backends::Sqlite | Backends::Both)
    }

    pub fn postgres(self) -> bool {
        matches!(self, Backends::Postgres | Backends::Both)
    }
}

/// The arguments every benchmark takes.
#[derive(clap::Args, Debug)]
pub struct CommonArgs {
    /// The backends to measure.
    #[arg(long, value_enum, default_value_t = Backends::Both)]
    pub backend: Backends,
    // `cargo bench` passes `--bench` to every benchmark built with `harness = false`:
    // accepted so that it is not an unknown argument, and otherwise ignored.
    #[arg(long = "bench", hide = true)]
    bench: bool,
}

/// A fresh schema on the benchmark server (`QUOTELINE_BENCH_POSTGRES`, default the
/// local test server), reached through `search_path`.
pub struct BenchSchema {
    admin: PgConnection,
    schema: String,
    /// Connect options whose `search_path` is the schema.
    pub options: PgConnectOptions,
}

impl BenchSchema {
    /// Runs `work` with the options of a fresh schema, then drops the schema whether
    /// `work` succeeded or not. `Ok(None)`, with the reason printed, when the server
    /// cannot be reached: a run of both backends still gives SQLite's figures.
    pub async fn run<T, F, Fut>(prefix: &str, work: F) -> anyhow::Result<Option<T>>
    where
        F: FnOnce(PgConnectOptions) -> Fut,
        Fut: Future<Output = anyhow::Result<T>>,
    {
        let Some(bench_schema) = BenchSchema::create(prefix).await? else {
            return Ok(None);
        };
        let outcome = work(bench_schema.options.clone()).await;
        bench_schema.drop().await?;
        outcome.map(Some)
    }

    /// `Ok(None)`, with the reason printed, when the server cannot be reached.
    pub async fn create(prefix: &str) -> anyhow::Result<Option<BenchSchema>> {
        let url = std::env::var("QUOTELINE_BENCH_POSTGRES")
            .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.into());
        let base = PgConnectOptions::from_str(&url)?;
        let connecting = PgConnection::connect_with(&base);
        let mut admin = match tokio::time::timeout(Duration::from_secs(5), connecting).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(error)) => {
                println!("postgres: skipped, {url} is unreachable: {error}");
                return Ok(None);
            }
            Err(_) => {
                println!("postgres: skipped, {url} did not answer within 5 s");
                return Ok(None);
            }
        };
        let schema = format!("{prefix}_{}", Uuid::now_v7().simple());
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut admin)
            .await?;
        let (version, synchronous_commit, fsync): (String, String, String) = sqlx::query_as(
            "SELECT current_setting('server_version'), current_setting('synchronous_commit'), \
             current_setting('fsync')",
        )
        .fetch_one(&mut admin)
        .await?;
        println!(
            "postgres {version}: {url}, schema {schema} (synchronous_commit={synchronous_commit}, fsync={fsync})"
        );
        let options = base.options([("search_path", schema.as_str())]);
        Ok(Some(BenchSchema {
            admin,
            schema,
            options,
        }))
    }

    pub async fn drop(mut self) -> anyhow::Result<()> {
        sqlx::query(&format!("DROP SCHEMA {} CASCADE", self.schema))
            .execute(&mut self.admin)
            .await?;
        self.admin.close().await?;
        Ok(())
    }
}

/// Prints the SQLite version and the durability the pool's connections were given,
/// since the figures mean little without them.
pub async fn describe_sqlite(db: &Db, path: &Path) -> anyhow::Result<()> {
    let Backend::Sqlite(pool) = db else {
        anyhow::bail!("not a SQLite database");
    };
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(pool)
        .await?;
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(pool)
        .await?;
    let version: String = sqlx::query_scalar("SELECT sqlite_version()")
        .fetch_one(pool)
        .await?;
    println!(
        "sqlite {version}: {} (journal_mode={mode}, synchronous={})",
        path.display(),
        match sync {
            2 => "FULL".to_owned(),
            3 => "EXTRA".to_owned(),
            other => other.to_string(),
        }
    );
    Ok(())
}

/// A count from the command line; `_` and `,` may group digits.
pub fn number(text: &str) -> Result<usize, String> {
    text.trim()
        .replace(['_', ','], "")
        .parse()
        .map_err(|_| format!("not a number: {text}"))
}

/// A count from the command line that must be at least 1.
pub fn positive(text: &str) -> Result<usize, String> {
    match number(text)? {
        0 => Err("must be at least 1".into()),
        n => Ok(n),
    }
}

/// Splits `total` operations over `parts` as evenly as whole numbers allow.
pub fn share(total: usize, parts: usize, part: usize) -> usize {
    total / parts + usize::from(part < total % parts)
}

/// Nearest-rank percentile of latencies sorted in ascending order.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn millis(duration: Duration) -> String {
    format!("{:.2}", duration.as_secs_f64() * 1e3)
}

/// The 1-minute load average (Linux), or "?".
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|text| text.split_whitespace().next().map(str::to_owned))
        .unwrap_or_else(|| "?".into())
}

/// A whole run's length and the machine's load before and after it: other work on
/// the machine moves the figures, and the load says whether there was any.
pub struct WholeRun {
    began: Instant,
    load_before: String,
}

impl WholeRun {
    pub fn start() -> WholeRun {
        WholeRun {
            load_before: load_average(),
            began: Instant::now(),
        }
    }

    pub fn finish(self) {
        println!(
            "\nwhole run: {:.1} s; load average before {}, after {}",
            self.began.elapsed().as_secs_f64(),
            self.load_before,
            load_average()
        );
    }
}
