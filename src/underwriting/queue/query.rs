//! Reading the queue: the filters, the sorts and their keyset cursor, the SQL of a
//! page and of its count, and the lookups the decision pages make. Each page is
//! read by keyset (never OFFSET) over partial indexes that match each sort and
//! filter.

use chrono::{DateTime, NaiveDate, Utc};
use uuid::Uuid;

use crate::db::{Backend, Db};
use crate::on_backend;

/// A quote waiting for a decision.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
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

/// A value bound to a queue query's `$n` parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    Text(String),
    Time(DateTime<Utc>),
    Id(Uuid),
    Int(i64),
}

/// One SQL text for both backends and its parameters, in order.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueQuery {
    pub sql: String,
    pub binds: Vec<Bind>,
}

impl QueueQuery {
    /// The waiting quotes that `filter` lets through. A date range implies that
    /// the quote waits (its submitted_at is set), so it says so only without one:
    /// saying it twice would make the planner count the waiting share twice.
    fn select(columns: &str, filter: &QueueFilter) -> Self {
        let mut query = QueueQuery {
            sql: format!("SELECT {columns} FROM approval_queue WHERE "),
            binds: Vec::new(),
        };
        let mut and = "";
        let mut condition = |query: &mut QueueQuery, sql: &str, value: Option<Bind>| {
            query.sql.push_str(and);
            query.push(sql, value);
            and = " AND ";
        };
        if filter.from.is_none() && filter.to.is_none() {
            condition(&mut query, "submitted_at IS NOT NULL", None);
        }
        if let Some(country) = &filter.country {
            condition(&mut query, "country = ?", Some(Bind::Text(country.clone())));
        }
        if let Some(agent) = &filter.agent {
            condition(&mut query, "agent = ?", Some(Bind::Text(agent.clone())));
        }
        if let Some(from) = filter.from {
            condition(
                &mut query,
                "submitted_at >= ?",
                Some(Bind::Time(start_of(from))),
            );
        }
        if let Some(end) = filter.to.and_then(|to| to.succ_opt()).map(start_of) {
            condition(&mut query, "submitted_at < ?", Some(Bind::Time(end)));
        }
        query
    }

    /// Appends `sql` with its `?` marks numbered as the next parameters, one value
    /// of `binds` for each.
    fn push(&mut self, sql: &str, binds: impl IntoIterator<Item = Bind>) {
        let mut binds = binds.into_iter();
        for (i, part) in sql.split('?').enumerate() {
            if i > 0 {
                self.binds.push(binds.next().expect("a value for each ?"));
                self.sql.push_str(&format!("${}", self.binds.len()));
            }
            self.sql.push_str(part);
        }
    }

    /// Runs the query with its parameters bound and decodes each row as `O`.
    async fn fetch_all<O>(&self, db: &Db) -> Result<Vec<O>, sqlx::Error>
    where
        O: Send
            + Unpin
            + for<'r> sqlx::FromRow<'r, sqlx::sqlite::SqliteRow>
            + for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow>,
    {
        on_backend!(db, pool => {
            let mut query = sqlx::query_as(&self.sql);
            for bind in &self.binds {
                query = match bind {
                    Bind::Text(value) => query.bind(value.as_str()),
                    Bind::Time(value) => query.bind(*value),
                    Bind::Id(value) => query.bind(*value),
                    Bind::Int(value) => query.bind(*value),
                };
            }
            query.fetch_all(pool).await
        })
    }

    /// The plan the database would use (for the tests that hold every page to an
    /// index): SQLite's `EXPLAIN QUERY PLAN` details one a line, or PostgreSQL's
    /// `EXPLAIN (FORMAT JSON)` document.
    #[doc(hidden)]
    pub async fn explain(&self, db: &Db) -> Result<String, sqlx::Error> {
        let plan = QueueQuery {
            sql: match db {
                Backend::Sqlite(_) => format!("EXPLAIN QUERY PLAN {}", self.sql),
                Backend::Postgres(_) => format!("EXPLAIN (FORMAT JSON) {}", self.sql),
            },
            binds: self.binds.clone(),
        };
        Ok(match db {
            Backend::Sqlite(_) => {
                let rows: Vec<(i64, i64, i64, String)> = plan.fetch_all(db).await?;
                let details: Vec<String> = rows.into_iter().map(|r| r.3).collect();
                details.join("\n")
            }
            Backend::Postgres(_) => {
                let rows: Vec<(sqlx::types::Json<serde_json::Value>,)> = plan.fetch_all(db).await?;
                rows.into_iter().map(|r| r.0.0.to_string()).collect()
            }
        })
    }
}

fn start_of(day: NaiveDate) -> DateTime<Utc> {
    day.and_time(chrono::NaiveTime::MIN).and_utc()
}

/// The SQL of one page of the queue: up to `limit` rows after `after`, in `sort`
/// order, with the keyset on (sort key, quote id) so that equal times page right.
#[doc(hidden)]
pub fn page_query(
    filter: &QueueFilter,
    sort: QueueSort,
    after: Option<&Cursor>,
    limit: i64,
) -> QueueQuery {
    let mut query = QueueQuery::select(COLUMNS, filter);
    let key = sort.key();
    let (comparison, direction) = match sort {
        QueueSort::Newest => ("<", "DESC"),
        QueueSort::Oldest | QueueSort::LongestWaiting => (">", "ASC"),
    };
    if let Some(cursor) = after {
        query.push(
            &format!(" AND ({key}, quote_id) {comparison} (?, ?)"),
            [Bind::Time(cursor.at), Bind::Id(cursor.quote_id)],
        );
    }
    query.push(
        &format!(" ORDER BY {key} {direction}, quote_id {direction} LIMIT ?"),
        [Bind::Int(limit)],
    );
    query
}

/// The SQL counting the waiting quotes that match `filter`.
#[doc(hidden)]
pub fn count_query(filter: &QueueFilter) -> QueueQuery {
    QueueQuery::select("COUNT(*)", filter)
}

/// One page of the queue.
pub async fn page(
    db: &Db,
    filter: &QueueFilter,
    sort: QueueSort,
    after: Option<&Cursor>,
    limit: i64,
) -> Result<Vec<QueueRow>, sqlx::Error> {
    page_query(filter, sort, after, limit).fetch_all(db).await
}

const READ_TOTAL: &str = "SELECT waiting FROM approval_queue_total WHERE id = 1";

/// How many quotes wait for a decision among those `filter` lets through. With no
/// filter, the total the projection keeps: one row read, whatever the queue's size.
pub async fn count(db: &Db, filter: &QueueFilter) -> Result<i64, sqlx::Error> {
    if *filter == QueueFilter::default() {
        return on_backend!(db, pool => sqlx::query_scalar(READ_TOTAL).fetch_one(pool).await);
    }
    let rows: Vec<(i64,)> = count_query(filter).fetch_all(db).await?;
    Ok(rows.first().map_or(0, |r| r.0))
}

#[cfg(test)]
mod tests {
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
        let query = page_query(&filter, QueueSort::LongestWaiting, Some(&cursor), 51);
        assert!(
            query.sql.ends_with(
                "WHERE country = $1 AND agent = $2 AND submitted_at >= $3 \
                 AND submitted_at < $4 AND (first_submitted_at, quote_id) > ($5, $6) \
                 ORDER BY first_submitted_at ASC, quote_id ASC LIMIT $7"
            ),
            "{}",
            query.sql
        );
        assert_eq!(query.binds.len(), 7);
        assert_eq!(query.binds[0], Bind::Text("IN".into()));
        assert_eq!(
            query.binds[3],
            Bind::Time(start_of(NaiveDate::from_ymd_opt(2025, 3, 3).unwrap()))
        );
        assert_eq!(query.binds[5], Bind::Id(Uuid::nil()));
        assert_eq!(query.binds[6], Bind::Int(51));

        let unfiltered = page_query(&QueueFilter::default(), QueueSort::Newest, None, 51);
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
