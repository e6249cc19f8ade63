//! Reading the queue: the filters, the sorts and their keyset cursor, the SQL of a
//! page and of its count, and the lookups the decision pages make. Each page is
//! read by keyset (never OFFSET) over partial indexes that match each sort and
//! filter.

use chrono::{DateTime, NaiveDate, Utc};
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;
use sqlx::types::Json;
use sqlx::{Database, Encode, FromRow, Postgres, QueryBuilder, Sqlite, Type};
use uuid::Uuid;

use crate::db::{Backend, Db};
use crate::on_backend;

/// A quote waiting for a decision.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, serde::Deserialize)]
pub struct QueueRow {
    pub quote_id: Uuid,
    pub reference: String,
    pub applicant_name: String,
    pub agent: String,
    pub country: Option<String>,
    pub region: Option<String>,
    pub dependents: Option<i32>,
    /// The last submission.
    pub submitted_at: DateTime<Utc>,
    /// The first submission, before any referral back.
    pub first_submitted_at: DateTime<Utc>,
    pub referral_count: i32,
}

const COLUMNS: &str = "quote_id, reference, applicant_name, agent, country, region, dependents, \
    submitted_at, first_submitted_at, referral_count";

/// The oldest waiting quote whose agent is not `underwriter` (nobody decides their
/// own quote): what to look at after a decision.
pub async fn next_for(db: &Db, underwriter: &str) -> Result<Option<QueueRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM approval_queue WHERE submitted_at IS NOT NULL AND agent <> $1 \
         ORDER BY submitted_at, quote_id LIMIT 1"
    );
    on_backend!(db, pool => sqlx::query_as(&sql).bind(underwriter).fetch_optional(pool).await)
}

/// The quote's row if it is waiting for a decision.
pub async fn find(db: &Db, quote_id: Uuid) -> Result<Option<QueueRow>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM approval_queue WHERE quote_id = $1 AND submitted_at IS NOT NULL"
    );
    on_backend!(db, pool => sqlx::query_as(&sql).bind(quote_id).fetch_optional(pool).await)
}

/// Which waiting quotes to show. Dates are whole days in UTC, both inclusive, of
/// the last submission.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueFilter {
    /// ISO 3166-1 alpha-2 code.
    pub country: Option<String>,
    /// The agent's username.
    pub agent: Option<String>,
    pub from: Option<NaiveDate>,
    pub to: Option<NaiveDate>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum QueueSort {
    /// Oldest submission first: the default, first come first served.
    #[default]
    Oldest,
    Newest,
    /// Earliest first submission first: the longest wait, referrals included.
    LongestWaiting,
}

impl QueueSort {
    pub const ALL: [QueueSort; 3] = [
        QueueSort::Oldest,
        QueueSort::Newest,
        QueueSort::LongestWaiting,
    ];

    /// The name used in the page's address.
    pub fn as_str(self) -> &'static str {
        match self {
            QueueSort::Oldest => "oldest",
            QueueSort::Newest => "newest",
            QueueSort::LongestWaiting => "waiting",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            QueueSort::Oldest => "Oldest submission first",
            QueueSort::Newest => "Newest submission first",
            QueueSort::LongestWaiting => "Longest waiting first",
        }
    }

    pub(super) fn parse(input: &str) -> Option<QueueSort> {
        match input.trim() {
            "" => Some(QueueSort::default()),
            other => QueueSort::ALL.into_iter().find(|s| s.as_str() == other),
        }
    }

    /// The column the sort (and its keyset) follows.
    fn key(self) -> &'static str {
        match self {
            QueueSort::Oldest | QueueSort::Newest => "submitted_at",
            QueueSort::LongestWaiting => "first_submitted_at",
        }
    }

    /// The keyset's comparison and the order's direction.
    fn direction(self) -> (&'static str, &'static str) {
        match self {
            QueueSort::Newest => ("<", "DESC"),
            QueueSort::Oldest | QueueSort::LongestWaiting => (">", "ASC"),
        }
    }

    /// The page's `ORDER BY` terms.
    fn order(self) -> String {
        let (_, direction) = self.direction();
        format!("{} {direction}, quote_id {direction}", self.key())
    }

    pub(super) fn key_of(self, row: &QueueRow) -> DateTime<Utc> {
        match self {
            QueueSort::Oldest | QueueSort::Newest => row.submitted_at,
            QueueSort::LongestWaiting => row.first_submitted_at,
        }
    }
}

/// Where a page starts: after the row with this sort key and quote id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub at: DateTime<Utc>,
    pub quote_id: Uuid,
}

impl Cursor {
    /// `<microseconds since 1970>_<quote id>`: event times are kept to the
    /// microsecond, so the key comes back exactly.
    pub fn encode(&self) -> String {
        format!("{}_{}", self.at.timestamp_micros(), self.quote_id)
    }

    pub fn parse(input: &str) -> Option<Cursor> {
        let (micros, id) = input.trim().split_once('_')?;
        Some(Cursor {
            at: DateTime::from_timestamp_micros(micros.parse().ok()?)?,
            quote_id: Uuid::parse_str(id).ok()?,
        })
    }
}

/// A statement over the waiting quotes: what it selects, which quotes `filter`
/// lets through and, for a page, its order, keyset and size. Its SQL is written
/// once, in [`Statement::build`], and built for whichever backend runs it.
#[derive(Debug, Clone, Copy)]
struct Statement<'a> {
    columns: &'static str,
    filter: &'a QueueFilter,
    paging: Option<Paging<'a>>,
}

#[derive(Debug, Clone, Copy)]
struct Paging<'a> {
    sort: QueueSort,
    after: Option<&'a Cursor>,
    limit: i64,
}

impl<'a> Statement<'a> {
    /// Up to `limit` rows after `after`, in `sort` order, with the keyset on (sort
    /// key, quote id) so that equal times page right.
    fn page(
        filter: &'a QueueFilter,
        sort: QueueSort,
        after: Option<&'a Cursor>,
        limit: i64,
    ) -> Self {
        Statement {
            columns: COLUMNS,
            filter,
            paging: Some(Paging { sort, after, limit }),
        }
    }

    fn count(filter: &'a QueueFilter) -> Self {
        Statement {
            columns: "COUNT(*)",
            filter,
            paging: None,
        }
    }

    /// The statement after `prefix` (an EXPLAIN, or nothing), with its parameters
    /// bound in order. A date range implies that the quote waits (its submitted_at
    /// is set), so the statement says so only without one: saying it twice would
    /// make the planner count the waiting share twice.
    fn build<DB>(&self, prefix: &str) -> QueryBuilder<'a, DB>
    where
        DB: Database,
        &'a str: Encode<'a, DB> + Type<DB>,
        DateTime<Utc>: Encode<'a, DB> + Type<DB>,
        Uuid: Encode<'a, DB> + Type<DB>,
        i64: Encode<'a, DB> + Type<DB>,
    {
        let filter = self.filter;
        let mut query = QueryBuilder::new(prefix);
        query.push(format_args!(
            "SELECT {} FROM approval_queue WHERE ",
            self.columns
        ));
        let mut conditions = query.separated(" AND ");
        if filter.from.is_none() && filter.to.is_none() {
            conditions.push("submitted_at IS NOT NULL");
        }
        if let Some(country) = &filter.country {
            conditions
                .push("country = ")
                .push_bind_unseparated(country.as_str());
        }
        if let Some(agent) = &filter.agent {
            conditions
                .push("agent = ")
                .push_bind_unseparated(agent.as_str());
        }
        if let Some(from) = filter.from {
            conditions
                .push("submitted_at >= ")
                .push_bind_unseparated(start_of(from));
        }
        if let Some(end) = filter.to.and_then(|to| to.succ_opt()).map(start_of) {
            conditions
                .push("submitted_at < ")
                .push_bind_unseparated(end);
        }
        if let Some(Paging { sort, after, limit }) = self.paging {
            let key = sort.key();
            let (comparison, _) = sort.direction();
            if let Some(cursor) = after {
                conditions
                    .push(format_args!("({key}, quote_id) {comparison} ("))
                    .push_bind_unseparated(cursor.at)
                    .push_unseparated(", ")
                    .push_bind_unseparated(cursor.quote_id)
                    .push_unseparated(")");
            }
            query
                .push(format_args!(" ORDER BY {} LIMIT ", sort.order()))
                .push_bind(limit);
        }
        query
    }

    /// Runs the statement and decodes each row as `O`.
    async fn fetch_all<O>(&self, db: &Db) -> Result<Vec<O>, sqlx::Error>
    where
        O: Send + Unpin + for<'r> FromRow<'r, SqliteRow> + for<'r> FromRow<'r, PgRow>,
    {
        on_backend!(db, pool => self.build("").build_query_as().fetch_all(pool).await)
    }
}

fn start_of(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// A statement of the queue and its SQL, for the tests and benchmarks that read
/// its plan.
#[doc(hidden)]
pub struct QueueQuery<'a> {
    /// The SQL as PostgreSQL receives it; SQLite receives the same with `?` for
    /// each `$n`.
    pub sql: String,
    statement: Statement<'a>,
}

impl<'a> QueueQuery<'a> {
    fn of(statement: Statement<'a>) -> Self {
        QueueQuery {
            sql: statement.build::<Postgres>("").into_sql(),
            statement,
        }
    }

    /// The plan the database would use (for the tests that hold every page to an
    /// index): SQLite's `EXPLAIN QUERY PLAN` details one a line, or PostgreSQL's
    /// `EXPLAIN (FORMAT JSON)` document.
    pub async fn explain(&self, db: &Db) -> Result<String, sqlx::Error> {
        crate::db::explain(
            db,
            |prefix| self.statement.build(prefix),
            |prefix| self.statement.build(prefix),
        )
        .await
    }
}

/// The SQL of one page of the queue (see [`page`]).
#[doc(hidden)]
pub fn page_query<'a>(
    filter: &'a QueueFilter,
    sort: QueueSort,
    after: Option<&'a Cursor>,
    limit: i64,
) -> QueueQuery<'a> {
    QueueQuery::of(Statement::page(filter, sort, after, limit))
}

/// The SQL counting the waiting quotes that match `filter`.
#[doc(hidden)]
pub fn count_query(filter: &QueueFilter) -> QueueQuery<'_> {
    QueueQuery::of(Statement::count(filter))
}

/// One page of the queue: up to `limit` rows after `after`, in `sort` order.
///
/// On SQLite the page comes as one row holding a JSON array of its rows. sqlx runs
/// SQLite on a thread of its own per connection and hands each result row to the
/// request's task in a message of its own, whose values are allocated there and
/// freed here: a page of 51 rows cost 21 context switches and glibc's arena locks,
/// which bound the page more than its instructions did (BENCHMARKS.md). PostgreSQL's
/// rows come over its socket together, and building the JSON there cost it more than
/// decoding the rows here, so it reads them as they are.
pub async fn page(
    db: &Db,
    filter: &QueueFilter,
    sort: QueueSort,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<Vec<QueueRow>, sqlx::Error> {
    let statement = Statement::page(filter, sort, after, limit);
    match db {
        Backend::Sqlite(pool) => {
            let prefix = format!(
                "SELECT json_group_array({SQLITE_ROW_OBJECT} ORDER BY {}) FROM (",
                sort.order()
            );
            let mut query = statement.build::<Sqlite>(&prefix);
            query.push(") AS page");
            let Json(rows) = query.build_query_scalar().fetch_one(pool).await?;
            Ok(rows)
        }
        Backend::Postgres(_) => statement.fetch_all(db).await,
    }
}

/// A row of the queue as a JSON object of [`COLUMNS`] for SQLite, whose JSON holds no
/// blob: the quote id goes as hex, which `Uuid` reads back.
const SQLITE_ROW_OBJECT: &str = "json_object('quote_id', hex(quote_id), 'reference', reference, \
    'applicant_name', applicant_name, 'agent', agent, 'country', country, 'region', region, \
    'dependents', dependents, 'submitted_at', submitted_at, \
    'first_submitted_at', first_submitted_at, 'referral_count', referral_count)";

const READ_TOTAL: &str = "SELECT waiting FROM approval_queue_total WHERE id = 1";

/// How many quotes wait for a decision among those `filter` lets through. With no
/// filter, the total the projection keeps: one row read, whatever the queue's size.
pub async fn count(db: &Db, filter: &QueueFilter) -> Result<i64, sqlx::Error> {
    if *filter == QueueFilter::default() {
        return on_backend!(db, pool => sqlx::query_scalar(READ_TOTAL).fetch_one(pool).await);
    }
    let rows: Vec<(i64,)> = Statement::count(filter).fetch_all(db).await?;
    Ok(rows.first().map_or(0, |r| r.0))
}

#[cfg(test)]
mod tests {
    use sqlx::{Arguments, Execute, Sqlite};

    use super::*;

    #[test]
    fn a_cursor_round_trips_and_rejects_damage() {
        let cursor = Cursor {
            at: DateTime::from_timestamp_micros(1_740_000_000_123_456).unwrap(),
            quote_id: Uuid::now_v7(),
        };
        assert_eq!(Cursor::parse(&cursor.encode()), Some(cursor));
        for bad in [
            "",
            "x",
            "123",
            "abc_def",
            "1_not-a-uuid",
            &format!("1.5_{}", Uuid::nil()),
        ] {
            assert_eq!(Cursor::parse(bad), None, "{bad}");
        }
    }

    /// How many values a built query binds.
    fn bound<'q, DB: Database>(mut query: impl Execute<'q, DB>) -> usize {
        query
            .take_arguments()
            .unwrap()
            .map_or(0, |values| values.len())
    }

    #[test]
    fn parameters_are_numbered_in_the_order_they_are_bound() {
        let filter = QueueFilter {
            country: Some("IN".into()),
            agent: Some("asha".into()),
            from: NaiveDate::from_ymd_opt(2025, 3, 1),
            to: NaiveDate::from_ymd_opt(2025, 3, 2),
        };
        let cursor = Cursor {
            at: start_of(NaiveDate::from_ymd_opt(2025, 3, 1).unwrap()),
            quote_id: Uuid::nil(),
        };
        let statement = Statement::page(&filter, QueueSort::LongestWaiting, Some(&cursor), 51);
        let numbered = "WHERE country = $1 AND agent = $2 AND submitted_at >= $3 \
                        AND submitted_at < $4 AND (first_submitted_at, quote_id) > ($5, $6) \
                        ORDER BY first_submitted_at ASC, quote_id ASC LIMIT $7";
        let mut postgres = statement.build::<Postgres>("");
        assert!(postgres.sql().ends_with(numbered), "{}", postgres.sql());
        assert_eq!(bound(postgres.build()), 7);
        assert_eq!(
            page_query(&filter, QueueSort::LongestWaiting, Some(&cursor), 51).sql,
            postgres.sql()
        );

        // SQLite gets the same statement with its own marks, one for each value.
        let marked = (1..=7).fold(numbered.to_owned(), |sql, n| {
            sql.replace(&format!("${n}"), "?")
        });
        let mut sqlite = statement.build::<Sqlite>("");
        assert!(sqlite.sql().ends_with(&marked), "{}", sqlite.sql());
        assert_eq!(bound(sqlite.build()), 7);

        let everything = QueueFilter::default();
        let unfiltered = page_query(&everything, QueueSort::Newest, None, 51);
        assert!(
            unfiltered.sql.ends_with(
                "WHERE submitted_at IS NOT NULL \
                 ORDER BY submitted_at DESC, quote_id DESC LIMIT $1"
            ),
            "{}",
            unfiltered.sql
        );
    }
}
