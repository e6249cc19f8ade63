//! The approval queue: every submitted quote awaiting a decision.
//!
//! Owns the `approval_queue` projection, built from quoting's events alone (not from
//! `quote_summary`) so that it can be rebuilt on its own, and kept in the append's
//! transaction: a quote leaves the queue in the same commit as its approval,
//! rejection, referral or withdrawal. Also owns the underwriter's queue page, paged
//! by keyset (never OFFSET) over partial indexes that match each sort and filter.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Query, State};
use axum::routing::get;
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use futures_util::future::BoxFuture;
use serde::Deserialize;
use uuid::Uuid;

use crate::AppState;
use crate::db::{Backend, Conn, Db};
use crate::eventstore::{Projector, RecordedEvent};
use crate::identity::Underwriter;
use crate::on_backend;
use crate::quoting::domain::{COUNTRIES, QuoteEvent, Status, countries::country_name};
use crate::quoting::service::decode;
use crate::web::{AppError, Layout};

pub fn router() -> Router<AppState> {
    Router::new().route("/underwriting/queue", get(queue_page))
}

// ----- The projection ------------------------------------------------------------

const INSERT: &str = "INSERT INTO approval_queue \
    (quote_id, reference, applicant_name, agent, country, region, dependents, \
     submitted_at, first_submitted_at, earliest_submission_at, referral_count) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";

/// Every column an append can change; NULL (or 0 referrals) leaves a column as it
/// was. $5 says whether the quote now waits (TRUE), is back with its agent (FALSE)
/// or neither changed (NULL); a quote that waits again keeps its first submission.
const UPDATE: &str = "UPDATE approval_queue SET \
    country = COALESCE($2, country), \
    region = COALESCE($3, region), \
    dependents = COALESCE($4, dependents), \
    submitted_at = CASE WHEN $5 THEN $6 WHEN NOT $5 THEN NULL ELSE submitted_at END, \
    first_submitted_at = CASE WHEN $5 THEN COALESCE(earliest_submission_at, $7) \
        WHEN NOT $5 THEN NULL ELSE first_submitted_at END, \
    earliest_submission_at = COALESCE(earliest_submission_at, $7), \
    referral_count = referral_count + $8 \
    WHERE quote_id = $1";

const DELETE: &str = "DELETE FROM approval_queue WHERE quote_id = $1";

/// What one quote's events in one append do to its row, merged so that an append
/// costs at most one statement (and none when nothing the queue keeps changed).
#[derive(Debug, Default)]
struct Change {
    started: Option<(String, String, String)>,
    /// Approved, rejected or withdrawn: the quote is gone for good.
    ended: bool,
    country: Option<String>,
    region: Option<String>,
    dependents: Option<i32>,
    /// Submitted (true) or referred back (false), whichever came last.
    waiting: Option<bool>,
    /// The last submission among these events, and the first.
    submitted_at: Option<DateTime<Utc>>,
    first_submission: Option<DateTime<Utc>>,
    referrals: i32,
    /// How these events change the number of quotes waiting: +1 for each submission,
    /// -1 for each decision or withdrawal of a submitted quote.
    waiting_delta: i64,
}

impl Change {
    fn add(&mut self, event: &QuoteEvent, recorded: &RecordedEvent) {
        if let Some((from, to)) = event.status_change() {
            self.waiting_delta +=
                i64::from(to == Status::Finalized) - i64::from(from == Some(Status::Finalized));
        }
        match event {
            QuoteEvent::QuoteStarted {
                reference,
                applicant_name,
                agent,
            } => {
                self.started = Some((reference.clone(), applicant_name.to_string(), agent.clone()));
            }
            QuoteEvent::GeographicDetailsProvided(details) => {
                self.country = Some(details.country().as_str().to_owned());
                self.region = Some(details.region().as_str().to_owned());
            }
            QuoteEvent::FamilyDetailsProvided(details) => {
                self.dependents = Some(details.dependents() as i32);
            }
            QuoteEvent::QuoteFinalized { .. } => {
                self.waiting = Some(true);
                self.submitted_at = Some(recorded.recorded_at);
                self.first_submission.get_or_insert(recorded.recorded_at);
            }
            QuoteEvent::QuoteReferredBack { .. } => {
                self.waiting = Some(false);
                self.referrals += 1;
            }
            QuoteEvent::QuoteApproved { .. }
            | QuoteEvent::QuoteRejected { .. }
            | QuoteEvent::QuoteWithdrawn { .. } => self.ended = true,
            QuoteEvent::ContactDetailsProvided(_) | QuoteEvent::QuoteSaved { .. } => {}
        }
    }

    fn changes_row(&self) -> bool {
        self.country.is_some()
            || self.region.is_some()
            || self.dependents.is_some()
            || self.waiting.is_some()
            || self.referrals != 0
    }

    async fn write(self, mut conn: Conn<'_>, quote_id: Uuid) -> Result<(), sqlx::Error> {
        if self.waiting_delta != 0 {
            on_backend!(conn.reborrow(), c => {
                sqlx::query(MOVE_TOTAL).bind(self.waiting_delta).execute(&mut *c).await?;
            });
        }
        if self.ended {
            // A quote started and ended within the same events never had a row.
            if self.started.is_none() {
                on_backend!(conn, c => {
                    sqlx::query(DELETE).bind(quote_id).execute(&mut *c).await?;
                });
            }
            return Ok(());
        }
        if let Some((reference, applicant_name, agent)) = &self.started {
            let waits = self.waiting == Some(true);
            on_backend!(conn, c => {
                sqlx::query(INSERT)
                    .bind(quote_id)
                    .bind(reference)
                    .bind(applicant_name)
                    .bind(agent)
                    .bind(&self.country)
                    .bind(&self.region)
                    .bind(self.dependents)
                    .bind(self.submitted_at.filter(|_| waits))
                    .bind(self.first_submission.filter(|_| waits))
                    .bind(self.first_submission)
                    .bind(self.referrals)
                    .execute(&mut *c)
                    .await?;
            });
        } else if self.changes_row() {
            on_backend!(conn, c => {
                sqlx::query(UPDATE)
                    .bind(quote_id)
                    .bind(&self.country)
                    .bind(&self.region)
                    .bind(self.dependents)
                    .bind(self.waiting)
                    .bind(self.submitted_at)
                    .bind(self.first_submission)
                    .bind(self.referrals)
                    .execute(&mut *c)
                    .await?;
            });
        }
        Ok(())
    }
}

pub struct ApprovalQueueProjection;

impl Projector for ApprovalQueueProjection {
    /// An append brings one quote's events; a rebuild may bring many quotes' at once,
    /// so each run of one quote's events is merged and written on its own.
    fn apply<'a>(
        &'a self,
        mut conn: Conn<'a>,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            for run in events.chunk_by(|a, b| a.stream_id == b.stream_id) {
                let mut change = Change::default();
                for recorded in run {
                    let event = decode(recorded).map_err(|e| sqlx::Error::Decode(e.into()))?;
                    change.add(&event, recorded);
                }
                change.write(conn.reborrow(), run[0].stream_id).await?;
            }
            Ok(())
        })
    }
}

// ----- Reading the queue -----------------------------------------------------------

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

    fn parse(input: &str) -> Option<QueueSort> {
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

    fn key_of(self, row: &QueueRow) -> DateTime<Utc> {
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

const MOVE_TOTAL: &str = "UPDATE approval_queue_total SET waiting = waiting + $1 WHERE id = 1";
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

// ----- The page ----------------------------------------------------------------------

pub const PAGE_SIZE: i64 = 50;
const MAX_AGENT_CHARS: usize = 100;

/// The page's address parameters, as typed; parsed into a filter by [`Params::parse`].
#[derive(Debug, Default, Deserialize)]
struct Params {
    #[serde(default)]
    country: String,
    #[serde(default)]
    agent: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    sort: String,
    #[serde(default)]
    next: String,
}

struct Parsed {
    filter: QueueFilter,
    sort: QueueSort,
    after: Option<Cursor>,
}

impl Params {
    fn parse(&self) -> Result<Parsed, AppError> {
        let country = match self.country.trim() {
            "" => None,
            code => {
                let code = code.to_ascii_uppercase();
                if country_name(&code).is_none() {
                    return Err(AppError::bad_request(
                        "There is no such country to filter by. Choose one from the list.",
                    ));
                }
                Some(code)
            }
        };
        let agent = match self.agent.trim() {
            "" => None,
            name if name.chars().count() > MAX_AGENT_CHARS => {
                return Err(AppError::bad_request(format!(
                    "An agent's username is at most {MAX_AGENT_CHARS} characters."
                )));
            }
            name => Some(name.to_owned()),
        };
        let from = parse_date(&self.from, "from")?;
        let to = parse_date(&self.to, "to")?;
        if let (Some(from), Some(to)) = (from, to)
            && from > to
        {
            return Err(AppError::bad_request(
                "The \"Submitted from\" date is after the \"Submitted to\" date. Swap them and try again.",
            ));
        }
        let sort = QueueSort::parse(&self.sort)
            .ok_or_else(|| AppError::bad_request("There is no such order to sort the queue by."))?;
        let after = match self.next.trim() {
            "" => None,
            next => Some(Cursor::parse(next).ok_or_else(|| {
                AppError::bad_request(
                    "The link to the next page is damaged. Go back to the first page of the queue.",
                )
            })?),
        };
        Ok(Parsed {
            filter: QueueFilter {
                country,
                agent,
                from,
                to,
            },
            sort,
            after,
        })
    }
}

fn parse_date(input: &str, which: &str) -> Result<Option<NaiveDate>, AppError> {
    let input = input.trim();
    if input.is_empty() {
        return Ok(None);
    }
    NaiveDate::parse_from_str(input, "%Y-%m-%d")
        .ok()
        // The day after must exist too: it bounds the range.
        .filter(|day| day.succ_opt().is_some())
        .map(Some)
        .ok_or_else(|| {
            AppError::bad_request(format!(
                "The \"Submitted {which}\" date is not a real date. Use the form year-month-day, for example 2025-03-31."
            ))
        })
}

/// The filters as they go back into the form and the paging links.
struct FormValues {
    country: String,
    agent: String,
    from: String,
    to: String,
    sort: QueueSort,
}

impl FormValues {
    fn of(filter: &QueueFilter, sort: QueueSort) -> Self {
        let date = |d: Option<NaiveDate>| d.map(|d| d.format("%Y-%m-%d").to_string());
        FormValues {
            country: filter.country.clone().unwrap_or_default(),
            agent: filter.agent.clone().unwrap_or_default(),
            from: date(filter.from).unwrap_or_default(),
            to: date(filter.to).unwrap_or_default(),
            sort,
        }
    }

    /// The queue's address with these filters, and `next` when given.
    fn href(&self, next: Option<&Cursor>) -> String {
        let mut pairs: Vec<(&str, String)> = [
            ("country", self.country.clone()),
            ("agent", self.agent.clone()),
            ("from", self.from.clone()),
            ("to", self.to.clone()),
        ]
        .into_iter()
        .filter(|(_, value)| !value.is_empty())
        .collect();
        if self.sort != QueueSort::default() {
            pairs.push(("sort", self.sort.as_str().to_owned()));
        }
        if let Some(next) = next {
            pairs.push(("next", next.encode()));
        }
        let query: Vec<String> = pairs
            .iter()
            .map(|(name, value)| format!("{name}={}", percent_encode(value)))
            .collect();
        if query.is_empty() {
            "/underwriting/queue".to_owned()
        } else {
            format!("/underwriting/queue?{}", query.join("&"))
        }
    }

    fn is_filtered(&self) -> bool {
        !(self.country.is_empty()
            && self.agent.is_empty()
            && self.from.is_empty()
            && self.to.is_empty())
    }
}

/// Percent-encodes everything but RFC 3986's unreserved characters.
fn percent_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

struct CountryOption {
    code: &'static str,
    name: &'static str,
    selected: bool,
}

struct SortOption {
    value: &'static str,
    label: &'static str,
    selected: bool,
}

/// A row as the table shows it.
struct RowView {
    quote_id: Uuid,
    reference: String,
    applicant_name: String,
    agent: String,
    country: String,
    region: String,
    dependents: String,
    submitted_iso: String,
    submitted: String,
    waiting: String,
    referrals: String,
}

impl RowView {
    fn of(row: QueueRow, now: DateTime<Utc>) -> Self {
        let country = row
            .country
            .as_deref()
            .map(|code| country_name(code).unwrap_or(code).to_owned())
            .unwrap_or_default();
        RowView {
            quote_id: row.quote_id,
            reference: row.reference,
            applicant_name: row.applicant_name,
            agent: row.agent,
            country,
            region: row.region.unwrap_or_default(),
            dependents: row.dependents.map(|d| d.to_string()).unwrap_or_default(),
            submitted_iso: row.submitted_at.to_rfc3339(),
            submitted: row.submitted_at.format("%-d %b %Y %H:%M UTC").to_string(),
            waiting: duration_in_words(now - row.first_submitted_at),
            referrals: times_in_words(row.referral_count),
        }
    }
}

/// "3 days", "1 hour", "less than a minute": the largest whole unit.
pub fn duration_in_words(elapsed: TimeDelta) -> String {
    let plural = |n: i64, unit: &str| {
        if n == 1 {
            format!("1 {unit}")
        } else {
            format!("{n} {unit}s")
        }
    };
    match elapsed {
        e if e.num_days() >= 1 => plural(e.num_days(), "day"),
        e if e.num_hours() >= 1 => plural(e.num_hours(), "hour"),
        e if e.num_minutes() >= 1 => plural(e.num_minutes(), "minute"),
        _ => "less than a minute".to_owned(),
    }
}

fn times_in_words(count: i32) -> String {
    match count {
        0 => "Never".to_owned(),
        1 => "Once".to_owned(),
        2 => "Twice".to_owned(),
        n => format!("{n} times"),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "underwriting/queue.html")]
struct QueuePage {
    layout: Layout,
    rows: Vec<RowView>,
    total: i64,
    filtered: bool,
    form: FormValues,
    countries: Vec<CountryOption>,
    sorts: Vec<SortOption>,
    caption: &'static str,
    next_href: Option<String>,
    first_href: Option<String>,
}

#[tracing::instrument(skip_all)]
async fn queue_page(
    State(state): State<AppState>,
    Underwriter(user): Underwriter,
    Query(params): Query<Params>,
) -> Result<QueuePage, AppError> {
    let Parsed {
        filter,
        sort,
        after,
    } = params.parse()?;
    let mut rows = page(&state.db, &filter, sort, after.as_ref(), PAGE_SIZE + 1).await?;
    let total = count(&state.db, &filter).await?;
    let more = rows.len() as i64 > PAGE_SIZE;
    rows.truncate(PAGE_SIZE as usize);
    let form = FormValues::of(&filter, sort);
    let next_href = more.then(|| rows.last()).flatten().map(|last| {
        form.href(Some(&Cursor {
            at: sort.key_of(last),
            quote_id: last.quote_id,
        }))
    });
    let first_href = after.is_some().then(|| form.href(None));
    let now = Utc::now();
    Ok(QueuePage {
        layout: user.layout(),
        rows: rows.into_iter().map(|row| RowView::of(row, now)).collect(),
        total,
        filtered: form.is_filtered(),
        countries: COUNTRIES
            .iter()
            .map(|&(code, name)| CountryOption {
                code,
                name,
                selected: code == form.country,
            })
            .collect(),
        sorts: QueueSort::ALL
            .into_iter()
            .map(|s| SortOption {
                value: s.as_str(),
                label: s.label(),
                selected: s == sort,
            })
            .collect(),
        caption: match sort {
            QueueSort::Oldest => "Quotes waiting for a decision, oldest submission first",
            QueueSort::Newest => "Quotes waiting for a decision, newest submission first",
            QueueSort::LongestWaiting => "Quotes waiting for a decision, longest waiting first",
        },
        form,
        next_href,
        first_href,
    })
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

    #[test]
    fn waiting_times_read_as_words() {
        assert_eq!(
            duration_in_words(TimeDelta::seconds(30)),
            "less than a minute"
        );
        assert_eq!(duration_in_words(TimeDelta::minutes(1)), "1 minute");
        assert_eq!(duration_in_words(TimeDelta::minutes(59)), "59 minutes");
        assert_eq!(duration_in_words(TimeDelta::hours(1)), "1 hour");
        assert_eq!(duration_in_words(TimeDelta::hours(47)), "1 day");
        assert_eq!(duration_in_words(TimeDelta::days(3)), "3 days");
    }

    #[test]
    fn links_keep_the_filters_and_encode_them() {
        let form = FormValues {
            country: "IN".into(),
            agent: "a&b c".into(),
            from: String::new(),
            to: "2025-03-02".into(),
            sort: QueueSort::Newest,
        };
        assert_eq!(
            form.href(None),
            "/underwriting/queue?country=IN&agent=a%26b%20c&to=2025-03-02&sort=newest"
        );
        let plain = FormValues::of(&QueueFilter::default(), QueueSort::Oldest);
        assert_eq!(plain.href(None), "/underwriting/queue");
    }
}
