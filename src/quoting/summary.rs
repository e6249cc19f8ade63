//! The `quote_summary` projection: one row per quote with what the agent's pages
//! show. Kept in the append's transaction, one statement per append.

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::domain::{QuoteEvent, Status};

use crate::db::{Conn, Db};
use crate::eventstore::{Projector, RecordedEvent};
use crate::on_backend;

const INSERT: &str = "INSERT INTO quote_summary \
    (quote_id, reference, applicant_name, agent, status, version, last_position, created_at, updated_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)";

/// Every column an event can change; NULL or FALSE leaves a column as it was.
const UPDATE: &str = "UPDATE quote_summary SET \
    status = COALESCE($2, status), \
    geographic_done = (geographic_done OR $3), \
    contact_done = (contact_done OR $4), \
    family_done = (family_done OR $5), \
    country = COALESCE($6, country), \
    region = COALESCE($7, region), \
    dependents = COALESCE($8, dependents), \
    referral_count = referral_count + $9, \
    last_referral_note = COALESCE($10, last_referral_note), \
    rejection_reason = COALESCE($11, rejection_reason), \
    submitted_at = COALESCE($12, submitted_at), \
    version = $13, last_position = $14, updated_at = $15 \
    WHERE quote_id = $1";

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

/// The changes one append makes to a quote's row, merged from its events.
#[derive(Debug, Default)]
struct Change {
    started: Option<(String, String, String)>,
    status: Option<Status>,
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
}

impl Change {
    fn add(&mut self, event: &QuoteEvent, recorded: &RecordedEvent) {
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
}

pub struct QuoteSummaryProjection;

impl Projector for QuoteSummaryProjection {
    fn apply<'a>(
        &'a self,
        mut conn: Conn<'a>,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            let (Some(first), Some(last)) = (events.first(), events.last()) else {
                return Ok(());
            };
            let mut change = Change::default();
            for recorded in events {
                let event =
                    QuoteEvent::decode(recorded).map_err(|e| sqlx::Error::Decode(e.into()))?;
                change.add(&event, recorded);
            }
            if let Some((reference, applicant_name, agent)) = &change.started {
                on_backend!(conn.reborrow(), c => {
                    sqlx::query(INSERT)
                        .bind(first.stream_id)
                        .bind(reference)
                        .bind(applicant_name)
                        .bind(agent)
                        .bind(Status::Initiated.as_str())
                        .bind(last.version)
                        .bind(last.position())
                        .bind(first.recorded_at)
                        .execute(&mut *c)
                        .await?;
                });
                if events.len() == 1 {
                    return Ok(());
                }
            }
            on_backend!(conn, c => {
                sqlx::query(UPDATE)
                    .bind(first.stream_id)
                    .bind(change.status.map(Status::as_str))
                    .bind(change.geographic_done)
                    .bind(change.contact_done)
                    .bind(change.family_done)
                    .bind(&change.country)
                    .bind(&change.region)
                    .bind(change.dependents)
                    .bind(change.referrals)
                    .bind(&change.referral_note)
                    .bind(&change.rejection_reason)
                    .bind(change.submitted_at)
                    .bind(last.version)
                    .bind(last.position())
                    .bind(last.recorded_at)
                    .execute(&mut *c)
                    .await?;
            });
            Ok(())
        })
    }
}

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
