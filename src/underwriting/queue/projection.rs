//! The `approval_queue` projection, built from quoting's events alone (not from
//! `quote_summary`) so that it can be rebuilt on its own, and kept in the append's
//! transaction: a quote leaves the queue in the same commit as its approval,
//! rejection, referral or withdrawal.

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use uuid::Uuid;

use crate::db::Conn;
use crate::eventstore::{Projector, RecordedEvent};
use crate::on_backend;
use crate::quoting::domain::{QuoteEvent, Status};

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

/// Keeps the number of waiting quotes, so that the unfiltered page counts them
/// with one row read.
const MOVE_TOTAL: &str = "UPDATE approval_queue_total SET waiting = waiting + $1 WHERE id = 1";

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
                    let event =
                        QuoteEvent::decode(recorded).map_err(|e| sqlx::Error::Decode(e.into()))?;
                    change.add(&event, recorded);
                }
                change.write(conn.reborrow(), run[0].stream_id).await?;
            }
            Ok(())
        })
    }
}
