//! The `quote_summary` projection: one row per quote with what the agent's pages
//! show. Kept in the append's transaction: a multi-row INSERT of the quotes a
//! group-commit batch starts, and an UPDATE of the others it changes (a hundred
//! quotes a statement); a rebuild writes each row once, merged from the whole log.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::domain::{QuoteEvent, Status};
use super::projection::{MergedChange, MergingFill, Projected, QuoteFill, QuoteProjection};
use crate::db::{Conn, Db, Tables, UPDATE_FROM_VALUES_ROWS};
use crate::eventstore::ProjectionError;
use crate::on_backend;

/// The row of a quote as a batch writes it: the whole row of a quote it starts, the
/// changes to the row of any other.
macro_rules! summary_columns {
    () => {
        "quote_id, reference, applicant_name, agent, status, geographic_done, contact_done, \
         family_done, country, region, dependents, referral_count, last_referral_note, \
         rejection_reason, version, last_position, created_at, updated_at, submitted_at"
    };
}

const INSERT: &str = concat!("INSERT INTO quote_summary (", summary_columns!(), ") ");

const CHANGES: &str = concat!("WITH changes (", summary_columns!(), ") AS (");

/// Every column a change can make; NULL or FALSE leaves a column as it was, and the
/// referrals are added to the count.
const UPDATE_FROM_CHANGES: &str = ") UPDATE quote_summary SET \
    status = COALESCE(changes.status, quote_summary.status), \
    applicant_name = COALESCE(changes.applicant_name, quote_summary.applicant_name), \
    geographic_done = (quote_summary.geographic_done OR changes.geographic_done), \
    contact_done = (quote_summary.contact_done OR changes.contact_done), \
    family_done = (quote_summary.family_done OR changes.family_done), \
    country = COALESCE(changes.country, quote_summary.country), \
    region = COALESCE(changes.region, quote_summary.region), \
    dependents = COALESCE(changes.dependents, quote_summary.dependents), \
    referral_count = quote_summary.referral_count + changes.referral_count, \
    last_referral_note = COALESCE(changes.last_referral_note, quote_summary.last_referral_note), \
    rejection_reason = COALESCE(changes.rejection_reason, quote_summary.rejection_reason), \
    submitted_at = COALESCE(changes.submitted_at, quote_summary.submitted_at), \
    version = changes.version, last_position = changes.last_position, \
    updated_at = changes.updated_at \
    FROM changes WHERE quote_summary.quote_id = changes.quote_id";

macro_rules! select_summary {
    ($tail:literal) => {
        concat!(
            "SELECT quote_id, reference, applicant_name, agent, status, geographic_done, \
             contact_done, family_done, country, region, dependents, referral_count, \
             last_referral_note, rejection_reason, version, created_at, updated_at, submitted_at \
             FROM quote_summary ",
            $tail
        )
    };
}

const FIND: &str = select_summary!("WHERE quote_id = $1");
const FOR_AGENT: &str = select_summary!("WHERE agent = $1 ORDER BY last_position DESC LIMIT $2");
const FOR_AGENT_WITH_STATUS: &str =
    select_summary!("WHERE agent = $1 AND status = $3 ORDER BY last_position DESC LIMIT $2");

/// The changes a batch (or a rebuild's whole log) makes to one quote's row, merged
/// from its events.
#[derive(Debug, Default)]
struct Change {
    started: Option<(String, String, String)>,
    status: Option<Status>,
    /// The applicant's name as last corrected in the batch.
    applicant_name: Option<String>,
    geographic_done: bool,
    contact_done: bool,
    family_done: bool,
    country: Option<String>,
    region: Option<String>,
    dependents: Option<i32>,
    referrals: i32,
    referral_note: Option<String>,
    rejection_reason: Option<String>,
    submitted_at: Option<DateTime<Utc>>,
    /// The quote's first event in the batch, and its last.
    first_at: Option<DateTime<Utc>>,
    version: i64,
    last_position: i64,
    updated_at: Option<DateTime<Utc>>,
}

impl MergedChange for Change {
    fn add(&mut self, projected: &Projected<'_>) {
        let (event, recorded) = (&projected.event, projected.recorded);
        self.first_at.get_or_insert(recorded.recorded_at);
        self.version = recorded.version;
        self.last_position = recorded.position();
        self.updated_at = Some(recorded.recorded_at);
        if let Some((_, to)) = event.status_change() {
            self.status = Some(to);
        }
        match event {
            QuoteEvent::QuoteStarted {
                reference,
                applicant_name,
                agent,
            } => {
                self.started = Some((reference.clone(), applicant_name.to_string(), agent.clone()));
            }
            QuoteEvent::ApplicantNameCorrected { applicant_name } => {
                self.applicant_name = Some(applicant_name.to_string());
            }
            QuoteEvent::GeographicDetailsProvided(details) => {
                self.geographic_done = true;
                self.country = Some(details.country().as_str().to_owned());
                self.region = Some(details.region().as_str().to_owned());
            }
            QuoteEvent::ContactDetailsProvided(_) => self.contact_done = true,
            QuoteEvent::FamilyDetailsProvided(details) => {
                self.family_done = true;
                self.dependents = Some(details.dependents() as i32);
            }
            QuoteEvent::QuoteFinalized { .. } => self.submitted_at = Some(recorded.recorded_at),
            QuoteEvent::QuoteRejected { reason, .. } => {
                self.rejection_reason = Some(reason.to_string());
            }
            QuoteEvent::QuoteReferredBack { note, .. } => {
                self.referrals += 1;
                self.referral_note = Some(note.to_string());
            }
            QuoteEvent::QuoteSaved { .. }
            | QuoteEvent::QuoteApproved { .. }
            | QuoteEvent::QuoteWithdrawn { .. } => {}
        }
    }

    /// The whole row of each quote started, a thousand a statement; the changes to
    /// every other quote's row, a hundred a statement.
    fn write<'a>(
        mut conn: Conn<'a>,
        tables: Tables,
        changes: Vec<(Uuid, Self)>,
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            let (started, changed): (Vec<_>, Vec<_>) =
                changes.iter().partition(|(_, c)| c.started.is_some());
            let insert = tables.rename(INSERT, TABLES);
            for rows in started.chunks(ROWS_PER_STATEMENT) {
                write_rows(conn.reborrow(), &insert, "", rows).await?;
            }
            let update = tables.rename(UPDATE_FROM_CHANGES, TABLES);
            for rows in changed.chunks(UPDATE_FROM_VALUES_ROWS) {
                write_rows(conn.reborrow(), CHANGES, &update, rows).await?;
            }
            Ok(())
        })
    }
}

/// `head`, the rows as `VALUES` in [`summary_columns!`]'s order, `tail`.
async fn write_rows(
    conn: Conn<'_>,
    head: &str,
    tail: &str,
    rows: &[&(Uuid, Change)],
) -> Result<(), sqlx::Error> {
    on_backend!(conn, c => {
        let mut statement = sqlx::QueryBuilder::new(head);
        statement.push_values(rows, |mut row, (quote_id, change)| {
            let started = change.started.as_ref();
            let started_as = started.map(|(_, applicant_name, _)| applicant_name);
            row.push_bind(*quote_id)
                .push_bind(started.map(|(reference, ..)| reference.as_str()))
                .push_bind(change.applicant_name.as_ref().or(started_as).map(String::as_str))
                .push_bind(started.map(|(.., agent)| agent.as_str()))
                .push_bind(change.status.map(Status::as_str))
                .push_bind(change.geographic_done)
                .push_bind(change.contact_done)
                .push_bind(change.family_done)
                .push_bind(change.country.as_deref())
                .push_bind(change.region.as_deref())
                .push_bind(change.dependents)
                .push_bind(change.referrals)
                .push_bind(change.referral_note.as_deref())
                .push_bind(change.rejection_reason.as_deref())
                .push_bind(change.version)
                .push_bind(change.last_position)
                .push_bind(change.first_at)
                .push_bind(change.updated_at)
                .push_bind(change.submitted_at);
        });
        statement.push(tail);
        statement.build().execute(&mut *c).await?;
    });
    Ok(())
}

/// The tables `quote_summary` writes.
const TABLES: &[&str] = &["quote_summary"];

#[derive(Debug, Default)]
pub struct QuoteSummaryProjection {
    tables: Tables,
}

impl QuoteSummaryProjection {
    /// The projection writing to this copy of its tables.
    pub fn writing_to(tables: Tables) -> Self {
        QuoteSummaryProjection { tables }
    }
}

impl QuoteProjection for QuoteSummaryProjection {
    fn name(&self) -> &'static str {
        "quote_summary"
    }

    fn tables(&self) -> &'static [&'static str] {
        TABLES
    }

    fn clear(&self) -> &'static [&'static str] {
        &["DELETE FROM quote_summary"]
    }

    fn writes_to(&self) -> Tables {
        self.tables
    }

    fn copy(&self, tables: Tables) -> Arc<dyn QuoteProjection> {
        Arc::new(Self::writing_to(tables))
    }

    fn apply<'a>(
        &'a self,
        conn: Conn<'a>,
        events: &'a [Projected<'a>],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Change::apply(conn, self.tables, events)
    }

    fn fill(&self) -> Box<dyn QuoteFill> {
        MergingFill::<Change>::boxed(self.tables)
    }
}

/// Quotes per INSERT: 19 parameters each stays below both backends' limits.
const ROWS_PER_STATEMENT: usize = 1_000;

/// A quote as the agent's pages show it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QuoteSummary {
    pub quote_id: Uuid,
    pub reference: String,
    pub applicant_name: String,
    pub agent: String,
    pub status: String,
    pub geographic_done: bool,
    pub contact_done: bool,
    pub family_done: bool,
    pub country: Option<String>,
    pub region: Option<String>,
    pub dependents: Option<i32>,
    pub referral_count: i32,
    pub last_referral_note: Option<String>,
    pub rejection_reason: Option<String>,
    pub version: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub submitted_at: Option<DateTime<Utc>>,
}

impl QuoteSummary {
    pub fn status(&self) -> Status {
        self.status.parse().unwrap_or(Status::Initiated)
    }

    pub fn sections_complete(&self) -> bool {
        self.geographic_done && self.contact_done && self.family_done
    }
}

pub async fn find(db: &Db, quote_id: Uuid) -> Result<Option<QuoteSummary>, sqlx::Error> {
    on_backend!(db, pool => sqlx::query_as(FIND).bind(quote_id).fetch_optional(pool).await)
}

/// An agent's quotes, most recently changed first, optionally of one status.
pub async fn for_agent(
    db: &Db,
    agent: &str,
    status: Option<Status>,
    limit: i64,
) -> Result<Vec<QuoteSummary>, sqlx::Error> {
    on_backend!(db, pool => {
        let query = match status {
            None => sqlx::query_as(FOR_AGENT).bind(agent).bind(limit),
            Some(status) => sqlx::query_as(FOR_AGENT_WITH_STATUS)
                .bind(agent)
                .bind(limit)
                .bind(status.as_str()),
        };
        query.fetch_all(pool).await
    })
}

pub async fn count(db: &Db) -> Result<i64, sqlx::Error> {
    on_backend!(db, pool => {
        sqlx::query_scalar("SELECT COUNT(*) FROM quote_summary").fetch_one(pool).await
    })
}

/// Finished quotes (approved, rejected, withdrawn) whose last change is older than
/// `before`, in id order, each with its version: what `quoteline archive` may move.
pub async fn finished_before(
    db: &Db,
    before: DateTime<Utc>,
) -> Result<Vec<(Uuid, i64)>, sqlx::Error> {
    on_backend!(db, pool => {
        sqlx::query_as(
            "SELECT quote_id, version FROM quote_summary \
             WHERE status IN ($2, $3, $4) AND updated_at < $1 ORDER BY quote_id",
        )
        .bind(before)
        .bind(Status::Approved.as_str())
        .bind(Status::Rejected.as_str())
        .bind(Status::Withdrawn.as_str())
        .fetch_all(pool)
        .await
    })
}
