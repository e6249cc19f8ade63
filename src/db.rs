//! The two storage backends behind one type.
//!
//! Every query in quoteline is written once, with `$1`-style parameters that both
//! SQLite and PostgreSQL accept, and run through [`on_backend!`], which expands the
//! same code once per backend. A real difference between the two is a small named
//! function that matches on [`Backend`] itself.

use std::str::FromStr;
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{
    Connection, PgConnection, PgPool, Postgres, Sqlite, SqliteConnection, SqlitePool, Transaction,
};

/// One value per backend. Used for pools ([`Db`]), pooled connections and borrowed
/// connections ([`Conn`]), so that one macro serves all three.
#[derive(Debug, Clone)]
pub enum Backend<S, P> {
    Sqlite(S),
    Postgres(P),
}

/// The application's database: a pool for one of the two backends.
pub type Db = Backend<SqlitePool, PgPool>;

/// A connection borrowed for the length of a unit of work (often a transaction).
pub type Conn<'c> = Backend<&'c mut SqliteConnection, &'c mut PgConnection>;

/// A connection taken from the pool.
pub type PooledConn = Backend<PoolConnection<Sqlite>, PoolConnection<Postgres>>;

/// A transaction on a borrowed connection, or a savepoint when begun inside another
/// ([`Tx::savepoint`]). Rolled back if dropped without [`Tx::commit`].
pub type Tx<'c> = Backend<Transaction<'c, Sqlite>, Transaction<'c, Postgres>>;

/// Runs the same expression against whichever backend `$target` holds, binding the
/// backend's pool or connection to `$c`.
#[macro_export]
macro_rules! on_backend {
    ($target:expr, $c:ident => $body:expr) => {
        match $target {
            $crate::db::Backend::Sqlite($c) => $body,
            $crate::db::Backend::Postgres($c) => $body,
        }
    };
}

/// `select`, which ends with `IN (`, followed by the ids bound and the list closed.
pub fn in_list<'a, DB>(
    select: impl Into<String>,
    ids: &'a [uuid::Uuid],
) -> sqlx::QueryBuilder<'a, DB>
where
    DB: sqlx::Database,
    uuid::Uuid: sqlx::Encode<'a, DB> + sqlx::Type<DB>,
{
    let mut query = sqlx::QueryBuilder::new(select);
    let mut list = query.separated(", ");
    for id in ids {
        list.push_bind(*id);
    }
    query.push(")");
    query
}

/// What the database would do with a statement, for the tests that hold a page to
/// its index: SQLite's `EXPLAIN QUERY PLAN` details one a line, or PostgreSQL's
/// `EXPLAIN (FORMAT JSON)` document. `build` gives the statement, for each backend,
/// after the prefix it is handed.
pub async fn explain<'a>(
    db: &Db,
    sqlite: impl FnOnce(&str) -> sqlx::QueryBuilder<'a, Sqlite>,
    postgres: impl FnOnce(&str) -> sqlx::QueryBuilder<'a, Postgres>,
) -> Result<String, sqlx::Error> {
    Ok(match db {
        Backend::Sqlite(pool) => {
            let rows: Vec<(i64, i64, i64, String)> = sqlite("EXPLAIN QUERY PLAN ")
                .build_query_as()
                .fetch_all(pool)
                .await?;
            let details: Vec<String> = rows.into_iter().map(|r| r.3).collect();
            details.join("\n")
        }
        Backend::Postgres(pool) => {
            let plans: Vec<sqlx::types::Json<serde_json::Value>> =
                postgres("EXPLAIN (FORMAT JSON) ")
                    .build_query_scalar()
                    .fetch_all(pool)
                    .await?;
            plans.into_iter().map(|plan| plan.0.to_string()).collect()
        }
    })
}

/// The default database when `DATABASE_URL` is not set.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://data/quoteline.db";

/// Rows of a `WITH changes (…) AS (VALUES …) UPDATE t … FROM changes` statement. SQLite
/// (3.46 bundled, 3.51 alike) plans one with a few hundred rows or more as a scan of
/// the whole table, with the rows as a Bloom filter: every such statement then costs
/// the table's size. At 200 rows and fewer it looks each row up by key.
pub const UPDATE_FROM_VALUES_ROWS: usize = 100;

/// The page cache of each pooled SQLite connection, in KiB: half SQLite's default.
/// The pages a request reads (one quote, the first page of a list) stay in the OS's
/// cache anyway, and eight connections' caches count against the server's memory.
pub const POOL_CACHE_KIB: i64 = 1024;

impl Db {
    /// Opens a pool for `url` (`sqlite://path` or `postgres://…`); a SQLite file and
    /// its folder are created when missing.
    pub async fn connect(url: &str) -> Result<Db, sqlx::Error> {
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Self::connect_postgres(PgConnectOptions::from_str(url)?).await
        } else {
            let options = SqliteConnectOptions::from_str(url)?;
            Self::connect_sqlite(options).await
        }
    }

    /// SQLite tuned for a durable, concurrent store: WAL so readers never block the
    /// writer, FULL sync so an acknowledged append survives a crash, and a busy
    /// timeout so a writer waits for another rather than failing.
    pub async fn connect_sqlite(options: SqliteConnectOptions) -> Result<Db, sqlx::Error> {
        if let Some(folder) = options.get_filename().parent()
            && !folder.as_os_str().is_empty()
        {
            std::fs::create_dir_all(folder).map_err(sqlx::Error::Io)?;
        }
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("cache_size", format!("-{POOL_CACHE_KIB}"));
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .min_connections(1)
            // A connection to a file cannot go stale between uses, so it is not
            // pinged before each: the ping is a round trip to the connection's
            // worker thread, as long as the statement that follows it.
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        Ok(Backend::Sqlite(pool))
    }

    pub async fn connect_postgres(options: PgConnectOptions) -> Result<Db, sqlx::Error> {
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options)
            .await?;
        Ok(Backend::Postgres(pool))
    }

    /// Applies the migrations of this backend (embedded at build time).
    pub async fn migrate(&self) -> Result<(), sqlx::migrate::MigrateError> {
        match self {
            Backend::Sqlite(pool) => sqlx::migrate!("migrations/sqlite").run(pool).await,
            Backend::Postgres(pool) => sqlx::migrate!("migrations/postgres").run(pool).await,
        }
    }

    pub async fn acquire(&self) -> Result<PooledConn, sqlx::Error> {
        Ok(match self {
            Backend::Sqlite(pool) => Backend::Sqlite(pool.acquire().await?),
            Backend::Postgres(pool) => Backend::Postgres(pool.acquire().await?),
        })
    }

    pub fn backend_name(&self) -> &'static str {
        match self {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    pub async fn close(&self) {
        on_backend!(self, pool => pool.close().await)
    }
}

impl PooledConn {
    /// Closes the connection instead of returning it to the pool: for a connection
    /// left in a transaction state nobody knows.
    pub fn discard(self) {
        on_backend!(self, c => drop(c.detach()))
    }

    pub fn as_conn(&mut self) -> Conn<'_> {
        match self {
            Backend::Sqlite(c) => Backend::Sqlite(&mut **c),
            Backend::Postgres(c) => Backend::Postgres(&mut **c),
        }
    }
}

impl Conn<'_> {
    /// A shorter-lived copy of this borrow, to hand to one step of a unit of work.
    pub fn reborrow(&mut self) -> Conn<'_> {
        match self {
            Backend::Sqlite(c) => Backend::Sqlite(&mut **c),
            Backend::Postgres(c) => Backend::Postgres(&mut **c),
        }
    }

    /// Runs a statement that takes no parameters.
    pub async fn execute_plain(&mut self, sql: &str) -> Result<(), sqlx::Error> {
        on_backend!(self, c => sqlx::query(sql).execute(&mut **c).await.map(drop))
    }
}

impl<'c> Conn<'c> {
    /// Starts a write transaction on this connection. SQLite must take the write
    /// lock up front: a deferred BEGIN that later writes fails with SQLITE_BUSY
    /// under concurrency.
    pub async fn begin_write(self) -> Result<Tx<'c>, sqlx::Error> {
        Ok(match self {
            Backend::Sqlite(c) => Backend::Sqlite(c.begin_with("BEGIN IMMEDIATE").await?),
            Backend::Postgres(c) => Backend::Postgres(c.begin().await?),
        })
    }
}

impl Tx<'_> {
    /// The transaction's connection, to run statements in it.
    pub fn as_conn(&mut self) -> Conn<'_> {
        match self {
            Backend::Sqlite(tx) => Backend::Sqlite(&mut **tx),
            Backend::Postgres(tx) => Backend::Postgres(&mut **tx),
        }
    }

    /// A savepoint inside this transaction: a nested transaction whose
    /// [`Tx::rollback`] undoes only what ran since it began.
    pub async fn savepoint(&mut self) -> Result<Tx<'_>, sqlx::Error> {
        Ok(match self {
            Backend::Sqlite(tx) => Backend::Sqlite(tx.begin().await?),
            Backend::Postgres(tx) => Backend::Postgres(tx.begin().await?),
        })
    }

    /// Commits the transaction, or releases the savepoint.
    pub async fn commit(self) -> Result<(), sqlx::Error> {
        on_backend!(self, tx => tx.commit().await)
    }

    /// Rolls the transaction back, or back to the savepoint.
    pub async fn rollback(self) -> Result<(), sqlx::Error> {
        on_backend!(self, tx => tx.rollback().await)
    }
}

/// What a unique constraint that refused a write means. The one place where the
/// schema's unique constraints are named and the backends' ways of reporting them
/// are read; everything above matches on the meaning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unique {
    /// An event with this id exists: an idempotency key used before.
    EventId,
    /// The stream has an event at this version: another append got there first.
    StreamVersion,
    /// Another quote has this reference.
    QuoteReference,
    /// Another person has this username.
    Username,
    /// A constraint this table does not know, as the database named it.
    Other(String),
}

/// Each meaning with its PostgreSQL constraint name and the columns SQLite names
/// in "UNIQUE constraint failed: …" (SQLite does not report constraint names).
const UNIQUE_CONSTRAINTS: [(Unique, &str, &str); 4] = [
    (Unique::EventId, "events_event_id_key", "events.event_id"),
    (
        Unique::StreamVersion,
        "events_stream_id_version_key",
        "events.stream_id, events.version",
    ),
    (
        Unique::QuoteReference,
        "quote_summary_reference_key",
        "quote_summary.reference",
    ),
    (Unique::Username, "users_username_key", "users.username"),
];

/// Which unique constraint `error` violated, if it was a unique violation.
pub fn unique_violation(error: &sqlx::Error) -> Option<Unique> {
    let db_error = error.as_database_error()?;
    if !db_error.is_unique_violation() {
        return None;
    }
    let sqlite_columns = db_error
        .message()
        .strip_prefix("UNIQUE constraint failed: ");
    let known = UNIQUE_CONSTRAINTS
        .iter()
        .find(|(_, postgres, sqlite)| {
            db_error.constraint() == Some(*postgres) || sqlite_columns == Some(*sqlite)
        })
        .map(|(meaning, _, _)| meaning.clone());
    Some(known.unwrap_or_else(|| {
        Unique::Other(
            db_error
                .constraint()
                .unwrap_or_else(|| db_error.message())
                .to_owned(),
        )
    }))
}

/// Which copy of a read model's tables a projection writes: the live tables, or the
/// shadow copy a rebuild fills while the live ones keep serving, then swaps in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tables {
    #[default]
    Live,
    Shadow,
}

impl Tables {
    /// What a shadow table's (or index's, or checkpoint's) name ends with.
    pub const SHADOW_SUFFIX: &'static str = "__rebuild";

    /// `name` (a table, an index, a projection) as this copy names it.
    pub fn name(self, name: &str) -> std::borrow::Cow<'_, str> {
        match self {
            Tables::Live => name.into(),
            Tables::Shadow => format!("{name}{}", Self::SHADOW_SUFFIX).into(),
        }
    }

    /// `sql` with every one of `tables` that it names as a whole identifier renamed
    /// for this copy; unchanged for the live tables. Our statements never hold a
    /// table's name inside a string literal, which this does not tell apart.
    pub fn rename<'s>(self, sql: &'s str, tables: &[&str]) -> std::borrow::Cow<'s, str> {
        match self {
            Tables::Live => sql.into(),
            Tables::Shadow => rename_identifiers(sql, tables, Self::SHADOW_SUFFIX).into(),
        }
    }
}

/// `sql` with `suffix` after each whole identifier that is one of `names`.
pub fn rename_identifiers(sql: &str, names: &[&str], suffix: &str) -> String {
    let is_identifier = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut renamed = String::with_capacity(sql.len() + 32);
    let mut rest = sql;
    let mut previous: Option<char> = None;
    while let Some(c) = rest.chars().next() {
        if previous.is_none_or(|p| !is_identifier(p)) && is_identifier(c) {
            let length = rest.find(|c: char| !is_identifier(c)).unwrap_or(rest.len());
            let word = &rest[..length];
            renamed.push_str(word);
            if names.contains(&word) {
                renamed.push_str(suffix);
            }
            previous = word.chars().last();
            rest = &rest[length..];
        } else {
            renamed.push(c);
            previous = Some(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    renamed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_identifiers_are_renamed() {
        let tables = ["approval_queue", "approval_queue_total"];
        assert_eq!(
            Tables::Shadow.rename(
                "UPDATE approval_queue_total SET waiting = 0; DELETE FROM approval_queue \
                 WHERE approval_queue.quote_id IN (SELECT quote_id FROM x_approval_queue)",
                &tables
            ),
            "UPDATE approval_queue_total__rebuild SET waiting = 0; DELETE FROM \
             approval_queue__rebuild WHERE approval_queue__rebuild.quote_id IN \
             (SELECT quote_id FROM x_approval_queue)"
        );
        assert_eq!(
            Tables::Live.rename("DELETE FROM approval_queue", &tables),
            "DELETE FROM approval_queue"
        );
        assert_eq!(
            rename_identifiers("(approval_queue,approval_queue)é", &tables, "_2"),
            "(approval_queue_2,approval_queue_2)é"
        );
        assert_eq!(
            Tables::Shadow.name("quote_summary"),
            "quote_summary__rebuild"
        );
    }
}
