//! The `approval_queue` projection, built from quoting's events alone (not from
//! `quote_summary`) so that it can be rebuilt on its own, and kept in the append's
//! transaction: a quote leaves the queue in the same commit as its approval,
//! rejection, referral or withdrawal.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use uuid::Uuid;

use crate::db::{Conn, Tables, UPDATE_FROM_VALUES_ROWS, in_list};
use crate::eventstore::ProjectionError;
use crate::on_backend;
use crate::quoting::domain::{QuoteEvent, Status};
use crate::quoting::projection::{
    MergedChange, MergingFill, Projected, QuoteFill, QuoteProjection,
};

const INSERT: &str = "INSERT INTO approval_queue \
    (quote_id, reference, applicant_name, agent, country, region, dependents, \
     submitted_at, first_submitted_at, earliest_submission_at, referral_count) ";

/// Every column a batch can change, one row of `changes` per quote; NULL (or 0
/// referrals) leaves a column as it was. `waiting` says whether the quote now waits
/// (TRUE), is back with its agent (FALSE) or neither changed (NULL); a quote that
/// waits again keeps its first submission.
const CHANGES: &str = "WITH changes (quote_id, applicant_name, country, region, dependents, waiting, \
    submitted_at, first_submission, referrals) AS (";

const UPDATE_FROM_CHANGES: &str = ") UPDATE approval_queue SET \
    applicant_name = COALESCE(changes.applicant_name, approval_queue.applicant_name), \
    country = COALESCE(changes.country, approval_queue.country), \
    region = COALESCE(changes.region, approval_queue.region), \
    dependents = COALESCE(changes.dependents, approval_queue.dependents), \
    submitted_at = CASE WHEN changes.waiting THEN changes.submitted_at \
        WHEN NOT changes.waiting THEN NULL ELSE approval_queue.submitted_at END, \
    first_submitted_at = CASE \
        WHEN changes.waiting THEN COALESCE(approval_queue.earliest_submission_at, changes.first_submission) \
        WHEN NOT changes.waiting THEN NULL ELSE approval_queue.first_submitted_at END, \
    earliest_submission_at = COALESCE(approval_queue.earliest_submission_at, changes.first_submission), \
    referral_count = approval_queue.referral_count + changes.referrals \
    FROM changes WHERE approval_queue.quote_id = changes.quote_id";

const DELETE: &str = "DELETE FROM approval_queue WHERE quote_id IN (";

/// Keeps the number of waiting quotes, so that the unfiltered page counts them
/// with one row read.
const MOVE_TOTAL: &str = "UPDATE approval_queue_total SET waiting = waiting + $1 WHERE id = 1";

/// Quotes per statement: at most 11 parameters each stays far below both backends' limits.
const ROWS_PER_STATEMENT: usize = 1_000;

/// What one quote's events in a batch do to its row, merged so that each quote is
/// one row of one statement (and none when nothing the queue keeps changed).
#[derive(Debug, Default)]
struct Change {
    started: Option<(String, String, String)>,
    /// Approved, rejected or withdrawn: the quote is gone for good.
    ended: bool,
    /// The applicant's name as last corrected.
    applicant_name: Option<String>,
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

impl MergedChange for Change {
    fn add(&mut self, projected: &Projected<'_>) {
        let (event, recorded) = (&projected.event, projected.recorded);
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
            QuoteEvent::ApplicantNameCorrected { applicant_name } => {
                if let Some((_, started_as, _)) = &mut self.started {
                    *started_as = applicant_name.to_string();
                }
                self.applicant_name = Some(applicant_name.to_string());
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

    /// Four kinds of statement: the total, deletions and insertions (a thousand
    /// quotes a statement), updates (a hundred a statement).
    fn write<'a>(
        conn: Conn<'a>,
        tables: Tables,
        changes: Vec<(Uuid, Self)>,
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move { Ok(Writes::plan(changes).write(conn, tables).await?) })
    }
}

impl Change {
    fn changes_row(&self) -> bool {
        self.applicant_name.is_some()
            || self.country.is_some()
            || self.region.is_some()
            || self.dependents.is_some()
            || self.waiting.is_some()
            || self.referrals != 0
    }
}

/// What the batch does to the queue, statement by statement.
#[derive(Default)]
struct Writes {
    waiting_delta: i64,
    deleted: Vec<Uuid>,
    inserted: Vec<(Uuid, Change)>,
    updated: Vec<(Uuid, Change)>,
}

impl Writes {
    fn plan(changes: Vec<(Uuid, Change)>) -> Writes {
        let mut writes = Writes::default();
        for (quote_id, change) in changes {
            writes.waiting_delta += change.waiting_delta;
            match (change.ended, change.started.is_some()) {
                // A quote started and ended within the same batch never had a row.
                (true, true) => {}
                (true, false) => writes.deleted.push(quote_id),
                (false, true) => writes.inserted.push((quote_id, change)),
                (false, false) if change.changes_row() => writes.updated.push((quote_id, change)),
                (false, false) => {}
            }
        }
        writes
    }

    async fn write(self, mut conn: Conn<'_>, tables: Tables) -> Result<(), sqlx::Error> {
        if self.waiting_delta != 0 {
            on_backend!(conn.reborrow(), c => {
                sqlx::query(&tables.rename(MOVE_TOTAL, TABLES)).bind(self.waiting_delta).execute(&mut *c).await?;
            });
        }
        for ids in self.deleted.chunks(ROWS_PER_STATEMENT) {
            on_backend!(conn.reborrow(), c => {
                in_list(tables.rename(DELETE, TABLES), ids).build().execute(&mut *c).await?;
            });
        }
        for rows in self.inserted.chunks(ROWS_PER_STATEMENT) {
            on_backend!(conn.reborrow(), c => {
                let mut insert = sqlx::QueryBuilder::new(tables.rename(INSERT, TABLES));
                insert.push_values(rows, |mut row, (quote_id, change)| {
                    let (reference, applicant_name, agent) =
                        change.started.as_ref().expect("planned as started");
                    let waits = change.waiting == Some(true);
                    row.push_bind(*quote_id)
                        .push_bind(reference)
                        .push_bind(applicant_name)
                        .push_bind(agent)
                        .push_bind(&change.country)
                        .push_bind(&change.region)
                        .push_bind(change.dependents)
                        .push_bind(change.submitted_at.filter(|_| waits))
                        .push_bind(change.first_submission.filter(|_| waits))
                        .push_bind(change.first_submission)
                        .push_bind(change.referrals);
                });
                insert.build().execute(&mut *c).await?;
            });
        }
        for rows in self.updated.chunks(UPDATE_FROM_VALUES_ROWS) {
            on_backend!(conn.reborrow(), c => {
                let mut update = sqlx::QueryBuilder::new(CHANGES);
                update.push_values(rows, |mut row, (quote_id, change)| {
                    row.push_bind(*quote_id)
                        .push_bind(&change.applicant_name)
                        .push_bind(&change.country)
                        .push_bind(&change.region)
                        .push_bind(change.dependents)
                        .push_bind(change.waiting)
                        .push_bind(change.submitted_at)
                        .push_bind(change.first_submission)
                        .push_bind(change.referrals);
                });
                update.push(tables.rename(UPDATE_FROM_CHANGES, TABLES));
                update.build().execute(&mut *c).await?;
            });
        }
        Ok(())
    }
}

/// The tables the approval queue writes.
const TABLES: &[&str] = &["approval_queue", "approval_queue_total"];

#[derive(Debug, Default)]
pub struct ApprovalQueueProjection {
    tables: Tables,
}

impl ApprovalQueueProjection {
    /// The projection writing to this copy of its tables.
    pub fn writing_to(tables: Tables) -> Self {
        ApprovalQueueProjection { tables }
    }
}

impl QuoteProjection for ApprovalQueueProjection {
    fn name(&self) -> &'static str {
        "approval_queue"
    }

    fn tables(&self) -> &'static [&'static str] {
        TABLES
    }

    fn clear(&self) -> &'static [&'static str] {
        &[
            "DELETE FROM approval_queue",
            "DELETE FROM approval_queue_total",
            "INSERT INTO approval_queue_total (id, waiting) VALUES (1, 0)",
        ]
    }

    fn writes_to(&self) -> Tables {
        self.tables
    }

    fn copy(&self, tables: Tables) -> Arc<dyn QuoteProjection> {
        Arc::new(Self::writing_to(tables))
    }

    /// Each quote's events in the batch are merged into one change.
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
