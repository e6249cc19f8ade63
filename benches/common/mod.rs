//! What the benchmarks share: a PostgreSQL schema of their own, argument parsing and
//! output helpers. Not every benchmark uses every piece.
#![allow(dead_code)]

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fresh schema on the benchmark server (`QUOTELINE_BENCH_POSTGRES`, default the
/// local test server), reached through `search_path`; dropped by [`BenchSchema::drop`].
pub struct BenchSchema {
    admin: PgConnection,
    schema: String,
    /// Connect options whose `search_path` is the schema.
    pub options: PgConnectOptions,
}

impl BenchSchema {
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

/// A count from the command line; `_` and `,` may group digits.
pub fn number(text: &str) -> Result<usize, String> {
    text.trim()
        .replace(['_', ','], "")
        .parse()
        .map_err(|_| format!("not a number: {text}"))
}

/// Splits `total` operations over `parts` as evenly as whole numbers allow.
pub fn share(total: usize, parts: usize, part: usize) -> usize {
    total / parts + usize::from(part < total % parts)
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
