//! The `audit_timeline` projection: one row per event, in the domain's words, with
//! who did it and in which role, the status before and after, the reason or note,
//! and the field-level changes against the quote's previous values ("City: Pune →
//! Mumbai", "Child added: Asha").
//!
//! Kept in the append's transaction. The previous values come from
//! `audit_quote_state`, one row per quote holding the folded `Quote` as JSON: an
//! append reads that row by key, writes its timeline rows in one statement and the
//! new state in another, so a section POST never replays its stream. Only when the
//! state row is missing, behind or of another schema version (a quote older than this
//! projection, a new `Quote` shape) is the stream's earlier history read from the
//! log, and any timeline rows it never got are written then.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::types::Json;
use uuid::Uuid;

use crate::db::{Conn, Db};
use crate::eventstore::{Projector, RecordedEvent};
use crate::on_backend;
use crate::quoting::domain::{Quote, QuoteEvent, Role, Status, evolve};

/// One field that an event changed. `before` is `None` when the field had no value
/// yet, `after` when the event took it away (a spouse no longer listed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

/// The field name of one child in the family's list: a change to it is an addition
/// or a removal, never an edit.
pub const CHILD: &str = "Child";

impl FieldChange {
    fn new(field: &str, before: Option<String>, after: Option<String>) -> Self {
        FieldChange {
            field: field.to_owned(),
            before,
            after,
        }
    }

    /// The change as the timeline says it.
    pub fn line(&self) -> String {
        let field = &self.field;
        match (&self.before, &self.after) {
            (None, Some(after)) if field == CHILD => format!("Child added: {after}"),
            (Some(before), None) if field == CHILD => format!("Child removed: {before}"),
            (None, Some(after)) => format!("{field}: {after}"),
            (Some(before), None) => format!("{field} removed: {before}"),
            (Some(before), Some(after)) => format!("{field}: {before} → {after}"),
            (None, None) => field.clone(),
        }
    }
}

/// Every field whose value differs between two states of a quote, in the order the
/// pages ask for them. Children are compared as a list of names: each name not
/// matched on the other side is an addition or a removal.
pub fn changes(before: &Quote, after: &Quote) -> Vec<FieldChange> {
    let mut found = Vec::new();
    let mut compare = |field: &str, old: Option<String>, new: Option<String>| {
        if old != new {
            found.push(FieldChange::new(field, old, new));
        }
    };
    let name = |q: &Quote| q.applicant_name.as_ref().map(|n| n.to_string());
    compare("Applicant name", name(before), name(after));

    let geographic = |q: &Quote, pick: fn(&crate::quoting::domain::GeographicDetails) -> String| {
        q.geographic.as_ref().map(pick)
    };
    compare(
        "Country",
        geographic(before, |g| g.country().name().to_owned()),
        geographic(after, |g| g.country().name().to_owned()),
    );
    compare(
        "State",
        geographic(before, |g| g.region().to_string()),
        geographic(after, |g| g.region().to_string()),
    );
    compare(
        "City",
        geographic(before, |g| g.city().to_string()),
        geographic(after, |g| g.city().to_string()),
    );
    compare(
        "Postal code",
        geographic(before, |g| g.postal_code().to_string()),
        geographic(after, |g| g.postal_code().to_string()),
    );

    let email = |q: &Quote| q.contact.as_ref().map(|c| c.email().to_string());
    let phone = |q: &Quote| q.contact.as_ref().map(|c| c.phone().to_string());
    compare("Email", email(before), email(after));
    compare("Phone number", phone(before), phone(after));

    let dependents = |q: &Quote| q.family.as_ref().map(|f| f.dependents().to_string());
    let spouse = |q: &Quote| {
        q.family
            .as_ref()
            .and_then(|f| f.spouse_name())
            .map(|s| s.to_string())
    };
    compare(
        "Number of dependents",
        dependents(before),
        dependents(after),
    );
    compare("Spouse name", spouse(before), spouse(after));

    let children = |q: &Quote| -> Vec<String> {
        q.family
            .as_ref()
            .map(|f| f.children().iter().map(|c| c.to_string()).collect())
            .unwrap_or_default()
    };
    let mut added = children(after);
    let mut removed = Vec::new();
    for child in children(before) {
        match added.iter().position(|name| *name == child) {
            Some(index) => {
                added.remove(index);
            }
            None => removed.push(child),
        }
    }
    for child in removed {
        found.push(FieldChange::new(CHILD, Some(child), None));
    }
    for child in added {
        found.push(FieldChange::new(CHILD, None, Some(child)));
    }
    found
}

/// The role an event's actor acted in, derived from the event rather than looked up
/// in `users`: the domain lets only underwriters decide (approve, reject, refer back)
/// and only the quote's agent do everything else, so the event itself says which
/// role was used. A lookup would record the roles a person holds when the projection
/// runs, not when they acted, and would make a rebuild depend on the users table.
pub fn acting_role(event: &QuoteEvent) -> Role {
    match event {
        QuoteEvent::QuoteApproved { .. }
        | QuoteEvent::QuoteRejected { .. }
        | QuoteEvent::QuoteReferredBack { .. } => Role::Underwriter,
        _ => Role::Agent,
    }
}

/// The reason for a rejection or the note of a referral.
fn detail_of(event: &QuoteEvent) -> Option<String> {
    match event {
        QuoteEvent::QuoteRejected { reason, .. } => Some(reason.to_string()),
        QuoteEvent::QuoteReferredBack { note, .. } => Some(note.to_string()),
        _ => None,
    }
}

/// One row of the timeline.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TimelineEntry {
    /// The event's global position.
    pub position: i64,
    pub stream_id: Uuid,
    pub version: i64,
    pub event_id: Uuid,
    pub event_type: String,
    pub reference: String,
    pub actor: String,
    pub actor_role: String,
    pub recorded_at: DateTime<Utc>,
    pub title: String,
    pub status_before: Option<String>,
    pub status_after: Option<String>,
    pub detail: Option<String>,
    pub changes: Json<Vec<FieldChange>>,
}

impl TimelineEntry {
    /// "Status: Saved → Submitted", or `None` when the event left the status as it was.
    pub fn status_line(&self) -> Option<String> {
        let label = |s: &Option<String>| {
            s.as_deref().map(|s| {
                s.parse::<Status>()
                    .map_or(s.to_owned(), |s| s.label().to_owned())
            })
        };
        match (label(&self.status_before), label(&self.status_after)) {
            (None, Some(after)) => Some(format!("Status: {after}")),
            (Some(before), Some(after)) if before != after => {
                Some(format!("Status: {before} → {after}"))
            }
            _ => None,
        }
    }

    /// Each change as the timeline says it.
    pub fn change_lines(&self) -> Vec<String> {
        self.changes.0.iter().map(FieldChange::line).collect()
    }
}

/// The parts of a stored event a timeline row is made from, whether it came with
/// the append or was read back from the log.
struct Source {
    position: i64,
    stream_id: Uuid,
    version: i64,
    event_id: Uuid,
    event_type: String,
    actor: String,
    recorded_at: DateTime<Utc>,
}

impl From<&RecordedEvent> for Source {
    fn from(e: &RecordedEvent) -> Self {
        Source {
            position: e.position(),
            stream_id: e.stream_id,
            version: e.version,
            event_id: e.event_id,
            event_type: e.event_type.clone(),
            actor: e.actor.clone(),
            recorded_at: e.recorded_at,
        }
    }
}

fn entry(source: Source, event: &QuoteEvent, before: &Quote, after: &Quote) -> TimelineEntry {
    TimelineEntry {
        position: source.position,
        stream_id: source.stream_id,
        version: source.version,
        event_id: source.event_id,
        event_type: source.event_type,
        reference: after.reference.clone(),
        actor: source.actor,
        actor_role: acting_role(event).as_str().to_owned(),
        recorded_at: source.recorded_at,
        title: event.title().to_owned(),
        status_before: before.status.map(|s| s.as_str().to_owned()),
        status_after: after.status.map(|s| s.as_str().to_owned()),
        detail: detail_of(event),
        changes: Json(changes(before, after)),
    }
}

const SELECT_STATE: &str =
    "SELECT version, schema_version, state FROM audit_quote_state WHERE quote_id = $1";

const UPSERT_STATE: &str = "INSERT INTO audit_quote_state \
     (quote_id, reference, version, schema_version, state) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (quote_id) DO UPDATE SET reference = excluded.reference, \
     version = excluded.version, schema_version = excluded.schema_version, state = excluded.state";

/// The stream's history between what the state row has folded and the new events.
const SELECT_EARLIER_EVENTS: &str = "SELECT position, version, event_id, event_type, \
     schema_version, payload, actor, recorded_at FROM events \
     WHERE stream_id = $1 AND version > $2 AND version < $3 ORDER BY version";

const COLUMNS: &str = "position, stream_id, version, event_id, event_type, reference, actor, \
     actor_role, recorded_at, title, status_before, status_after, detail, changes";
const COLUMN_COUNT: usize = 14;

/// Rows per INSERT: one statement for any ordinary append, well inside both
/// backends' limits on parameters for a long one.
const INSERT_BATCH: usize = 100;

#[derive(sqlx::FromRow)]
struct StateRow {
    version: i64,
    schema_version: i32,
    state: Json<Value>,
}

impl StateRow {
    /// The folded quote, unless it was stored in a shape this build does not read.
    fn quote(self) -> Option<Quote> {
        (self.schema_version == Quote::SCHEMA_VERSION)
            .then(|| serde_json::from_value(self.state.0).ok())
            .flatten()
    }
}

#[derive(sqlx::FromRow)]
struct EarlierEvent {
    position: i64,
    version: i64,
    event_id: Uuid,
    event_type: String,
    schema_version: i32,
    payload: Json<Value>,
    actor: String,
    recorded_at: DateTime<Utc>,
}

fn decode_error(error: serde_json::Error) -> sqlx::Error {
    sqlx::Error::Decode(error.into())
}

pub struct TimelineProjection;

impl Projector for TimelineProjection {
    fn apply<'a>(
        &'a self,
        mut conn: Conn<'a>,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), sqlx::Error>> {
        Box::pin(async move {
            let (Some(first), Some(last)) = (events.first(), events.last()) else {
                return Ok(());
            };
            let stream_id = first.stream_id;
            let stored: Option<StateRow> = on_backend!(conn.reborrow(), c => {
                sqlx::query_as(SELECT_STATE).bind(stream_id).fetch_optional(&mut *c).await?
            });
            // Rows exist up to `rows_up_to`; the state is folded up to `folded_to`.
            let rows_up_to = stored.as_ref().map_or(0, |s| s.version);
            let (mut quote, folded_to) = match stored.and_then(StateRow::quote) {
                Some(quote) => (quote, rows_up_to),
                None => (Quote::default(), 0),
            };

            let mut rows = Vec::with_capacity(events.len());
            if folded_to < first.version - 1 {
                let earlier: Vec<EarlierEvent> = on_backend!(conn.reborrow(), c => {
                    sqlx::query_as(SELECT_EARLIER_EVENTS)
                        .bind(stream_id)
                        .bind(folded_to)
                        .bind(first.version)
                        .fetch_all(&mut *c)
                        .await?
                });
                for e in earlier {
                    let event =
                        QuoteEvent::from_stored(&e.event_type, e.schema_version, e.payload.0)
                            .map_err(decode_error)?;
                    let before = quote.clone();
                    quote = evolve(quote, &event);
                    if e.version > rows_up_to {
                        let source = Source {
                            position: e.position,
                            stream_id,
                            version: e.version,
                            event_id: e.event_id,
                            event_type: e.event_type,
                            actor: e.actor,
                            recorded_at: e.recorded_at,
                        };
                        rows.push(entry(source, &event, &before, &quote));
                    }
                }
            }
            for recorded in events.iter().filter(|e| e.version > rows_up_to) {
                let event = crate::quoting::service::decode(recorded).map_err(decode_error)?;
                let before = quote.clone();
                quote = evolve(quote, &event);
                rows.push(entry(Source::from(recorded), &event, &before, &quote));
            }

            for batch in rows.chunks(INSERT_BATCH) {
                insert(conn.reborrow(), batch).await?;
            }
            let state = serde_json::to_value(&quote).map_err(decode_error)?;
            on_backend!(conn, c => {
                sqlx::query(UPSERT_STATE)
                    .bind(stream_id)
                    .bind(&quote.reference)
                    .bind(last.version.max(rows_up_to))
                    .bind(Quote::SCHEMA_VERSION)
                    .bind(Json(&state))
                    .execute(&mut *c)
                    .await?;
            });
            Ok(())
        })
    }
}

fn insert_sql(rows: usize) -> String {
    let mut sql = format!("INSERT INTO audit_timeline ({COLUMNS}) VALUES ");
    for row in 0..rows {
        if row > 0 {
            sql.push_str(", ");
        }
        sql.push('(');
        for column in 0..COLUMN_COUNT {
            if column > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!("${}", row * COLUMN_COUNT + column + 1));
        }
        sql.push(')');
    }
    sql
}

async fn insert(conn: Conn<'_>, rows: &[TimelineEntry]) -> Result<(), sqlx::Error> {
    let sql = insert_sql(rows.len());
    on_backend!(conn, c => {
        let mut query = sqlx::query(&sql);
        for row in rows {
            query = query
                .bind(row.position)
                .bind(row.stream_id)
                .bind(row.version)
                .bind(row.event_id)
                .bind(&row.event_type)
                .bind(&row.reference)
                .bind(&row.actor)
                .bind(&row.actor_role)
                .bind(row.recorded_at)
                .bind(&row.title)
                .bind(&row.status_before)
                .bind(&row.status_after)
                .bind(&row.detail)
                .bind(&row.changes);
        }
        query.execute(&mut *c).await?;
    });
    Ok(())
}

// ----- Reading ---------------------------------------------------------------------

/// A read of timeline rows: every column of a [`TimelineEntry`], then `$tail`.
macro_rules! select_entry {
    ($tail:literal) => {
        concat!(
            "SELECT position, stream_id, version, event_id, event_type, reference, actor, \
             actor_role, recorded_at, title, status_before, status_after, detail, changes \
             FROM audit_timeline ",
            $tail
        )
    };
}

/// Every column of a [`TimelineEntry`], for the log's filtered reads.
pub const SELECT_ENTRY: &str = select_entry!("");

const FOR_QUOTE: &str =
    select_entry!("WHERE stream_id = $1 AND version < $2 ORDER BY version DESC LIMIT $3");

const AT_VERSION: &str = select_entry!("WHERE stream_id = $1 AND version = $2");

/// A quote's entries below `before_version` (all, with `None`), newest first.
pub async fn for_quote(
    db: &Db,
    quote_id: Uuid,
    before_version: Option<i64>,
    limit: i64,
) -> Result<Vec<TimelineEntry>, sqlx::Error> {
    on_backend!(db, pool => {
        sqlx::query_as(FOR_QUOTE)
            .bind(quote_id)
            .bind(before_version.unwrap_or(i64::MAX))
            .bind(limit)
            .fetch_all(pool)
            .await
    })
}

/// The entry of one event of a quote.
pub async fn at_version(
    db: &Db,
    quote_id: Uuid,
    version: i64,
) -> Result<Option<TimelineEntry>, sqlx::Error> {
    on_backend!(db, pool => {
        sqlx::query_as(AT_VERSION).bind(quote_id).bind(version).fetch_optional(pool).await
    })
}

/// A quote as the timeline last saw it: its reference, version and values.
#[derive(Debug, Clone)]
pub struct QuoteHeader {
    pub reference: String,
    pub version: i64,
    pub quote: Quote,
}

pub async fn header(db: &Db, quote_id: Uuid) -> Result<Option<QuoteHeader>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        reference: String,
        version: i64,
        schema_version: i32,
        state: Json<Value>,
    }
    let row: Option<Row> = on_backend!(db, pool => {
        sqlx::query_as(
            "SELECT reference, version, schema_version, state FROM audit_quote_state WHERE quote_id = $1",
        )
        .bind(quote_id)
        .fetch_optional(pool)
        .await?
    });
    Ok(row.map(|row| QuoteHeader {
        reference: row.reference,
        version: row.version,
        quote: StateRow {
            version: row.version,
            schema_version: row.schema_version,
            state: row.state,
        }
        .quote()
        .unwrap_or_default(),
    }))
}

/// The references of these quotes, for those the timeline knows.
pub async fn references(db: &Db, quote_ids: &[Uuid]) -> Result<HashMap<Uuid, String>, sqlx::Error> {
    let mut found = HashMap::with_capacity(quote_ids.len());
    // A bounded IN list per statement; verification reports are capped anyway.
    for ids in quote_ids.chunks(500) {
        let placeholders: Vec<String> = (1..=ids.len()).map(|n| format!("${n}")).collect();
        let sql = format!(
            "SELECT quote_id, reference FROM audit_quote_state WHERE quote_id IN ({})",
            placeholders.join(", ")
        );
        let rows: Vec<(Uuid, String)> = on_backend!(db, pool => {
            let mut query = sqlx::query_as(&sql);
            for id in ids {
                query = query.bind(*id);
            }
            query.fetch_all(pool).await?
        });
        found.extend(rows);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quoting::domain::{
        ContactDetails, FamilyDetails, GeographicDetails, NonEmptyText, PersonName,
    };

    fn quote() -> Quote {
        let events = [
            QuoteEvent::QuoteStarted {
                reference: "Q-7K3M9P".into(),
                applicant_name: PersonName::parse("Meera Iyer").unwrap(),
                agent: "asha".into(),
            },
            QuoteEvent::GeographicDetailsProvided(
                GeographicDetails::parse("IN", "Maharashtra", "Pune", "411001").unwrap(),
            ),
            QuoteEvent::ContactDetailsProvided(
                ContactDetails::parse("a@x.com", "+919876543210").unwrap(),
            ),
            QuoteEvent::FamilyDetailsProvided(
                FamilyDetails::parse("2", "Ravi", &["Kiran".into()]).unwrap(),
            ),
        ];
        crate::quoting::domain::fold(&events)
    }

    fn lines(before: &Quote, after: &Quote) -> Vec<String> {
        changes(before, after)
            .iter()
            .map(FieldChange::line)
            .collect()
    }

    #[test]
    fn a_changed_field_reads_old_value_arrow_new_value() {
        let before = quote();
        let mut after = before.clone();
        after.geographic =
            Some(GeographicDetails::parse("IN", "Maharashtra", "Mumbai", "400001").unwrap());
        after.contact = Some(ContactDetails::parse("b@x.com", "+919876543210").unwrap());

        assert_eq!(
            lines(&before, &after),
            [
                "City: Pune → Mumbai",
                "Postal code: 411001 → 400001",
                "Email: a@x.com → b@x.com"
            ]
        );
    }

    #[test]
    fn children_are_added_and_removed_by_name_and_a_spouse_can_be_removed() {
        let before = quote();
        let mut after = before.clone();
        after.family =
            Some(FamilyDetails::parse("3", "", &["Asha".into(), "Kiran".into()]).unwrap());

        assert_eq!(
            lines(&before, &after),
            [
                "Number of dependents: 2 → 3",
                "Spouse name removed: Ravi",
                "Child added: Asha"
            ]
        );
        assert_eq!(
            lines(&after, &before).last().unwrap(),
            "Child removed: Asha"
        );
    }

    #[test]
    fn a_first_answer_shows_its_value_alone() {
        let before = Quote::default();
        let after = quote();

        let found = lines(&before, &after);

        assert_eq!(found[0], "Applicant name: Meera Iyer");
        assert!(found.contains(&"Country: India".to_owned()), "{found:?}");
        assert!(
            found.contains(&"Child added: Kiran".to_owned()),
            "{found:?}"
        );
        assert!(lines(&after, &after).is_empty());
    }

    #[test]
    fn decisions_are_an_underwriters_and_everything_else_an_agents() {
        let reason = NonEmptyText::parse("No").unwrap();
        let rejected = QuoteEvent::QuoteRejected {
            reason: reason.clone(),
            from: Status::Finalized,
            to: Status::Rejected,
        };
        assert_eq!(acting_role(&rejected), Role::Underwriter);
        assert_eq!(detail_of(&rejected), Some("No".to_owned()));
        let withdrawn = QuoteEvent::QuoteWithdrawn {
            from: Status::Finalized,
            to: Status::Withdrawn,
        };
        assert_eq!(acting_role(&withdrawn), Role::Agent);
    }

    #[test]
    fn the_insert_numbers_every_parameter_once() {
        let sql = insert_sql(2);
        assert!(
            sql.ends_with(
                "$14), ($15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26, $27, $28)"
            ),
            "{sql}"
        );
    }
}
