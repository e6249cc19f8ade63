//! The auditors' pages: a quote's timeline and the quote as it stood after any
//! event, the log of every event with its exports, and the hash-chain check.
//!
//! Everything here reads, except `POST /audit/verify`, which runs a check and records
//! its result; it changes no quote.

use std::collections::HashMap;

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use chrono::Utc;
use serde::Deserialize;
use uuid::Uuid;

use super::compare::{self, Comparison};
use super::export::{self, Format};
use super::log::{self, Cursor, FilterForm};
use super::proof::Proof;
use super::timeline::{self, TimelineEntry};
use super::verification::{self, VerificationRun};
use crate::eventstore::{StreamHead, verify_stream};
use crate::identity::people;
use crate::identity::person::roles_phrase;
use crate::identity::{Auditor, CurrentUser, UnderwriterOrAuditor};
use crate::kernel::Role;
use crate::quoting::domain::{EventKind, Quote, QuoteEvent, Status};
use crate::quoting::{AnswerSection, answers_of};
use crate::state::AppState;
use crate::web::{AppError, FieldErrors, Layout, QuoteId};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/quotes/{id}/timeline", get(timeline_page))
        .route("/quotes/{id}/compare", get(compare_page))
        .route("/quotes/{id}/proof.json", get(proof_file))
        .route("/audit", get(log_page))
        .route("/audit/export.csv", get(export_csv))
        .route("/audit/export.jsonl", get(export_json_lines))
        .route("/audit/verify", get(verify_page).post(run_verification))
}

/// Entries on one page of a quote's timeline: a page costs what it shows, however
/// long the history.
pub const TIMELINE_PAGE: i64 = 50;
/// Entries on one page of the log.
pub const LOG_PAGE: i64 = 50;

/// An optional number from the query string: absent or blank is `None`, anything
/// else must be a whole number.
fn number(value: &Option<String>, what: &str) -> Result<Option<i64>, AppError> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(text) => text
            .parse()
            .map(Some)
            .map_err(|_| AppError::bad_request(format!("{what} must be a whole number."))),
    }
}

/// Where "back" goes: the person's own list.
fn back_link(user: &CurrentUser) -> (&'static str, &'static str) {
    if user.has_role(Role::Auditor) {
        ("/audit", "Back to the audit log")
    } else {
        ("/underwriting/queue", "Back to the approval queue")
    }
}

// ----- A quote's timeline ----------------------------------------------------------

#[derive(Deserialize)]
struct TimelineQuery {
    as_of: Option<String>,
    before: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "audit/timeline.html")]
struct TimelinePage {
    layout: Layout,
    quote_id: Uuid,
    reference: String,
    applicant_name: String,
    status: Option<Status>,
    events: i64,
    /// Each entry, with the decider's record at the moment for a decision.
    entries: Vec<(TimelineEntry, Option<Decider>)>,
    older: Option<i64>,
    first_page: bool,
    back: (&'static str, &'static str),
    /// Auditors may download the quote's history as a proof, and open people's
    /// records.
    can_export: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "audit/as_of.html")]
struct AsOfPage {
    layout: Layout,
    quote_id: Uuid,
    reference: String,
    applicant_name: String,
    as_of: i64,
    events: i64,
    status: Status,
    quote: Quote,
    answers: Vec<AnswerSection>,
    entry: Option<TimelineEntry>,
    previous: Option<i64>,
    next: Option<i64>,
}

#[tracing::instrument(skip_all, fields(quote_id = %id))]
async fn timeline_page(
    State(state): State<AppState>,
    UnderwriterOrAuditor(user): UnderwriterOrAuditor,
    QuoteId(id): QuoteId,
    Query(query): Query<TimelineQuery>,
) -> Result<Response, AppError> {
    if query.as_of.is_some() {
        let as_of = number(&query.as_of, "The event number")?;
        return as_of_page(&state, &user, id, as_of.unwrap_or(0)).await;
    }
    let before = number(&query.before, "The event number to page from")?;
    let header = timeline::header(&state.db, id)
        .await?
        .ok_or_else(AppError::not_found)?;
    let mut entries = timeline::for_quote(&state.db, id, before, TIMELINE_PAGE + 1).await?;
    let older = if entries.len() as i64 > TIMELINE_PAGE {
        entries.pop();
        entries.last().map(|e| e.version)
    } else {
        None
    };
    let entries = with_deciders(&state, entries).await?;
    Ok(TimelinePage {
        layout: user.layout(),
        quote_id: id,
        reference: header.reference,
        applicant_name: header.quote.applicant(),
        status: header.quote.status,
        events: header.version,
        entries,
        older,
        first_page: before.is_none(),
        back: back_link(&user),
        can_export: user.has_role(Role::Auditor),
    }
    .into_response())
}

/// Who made a decision, as their record stood when they made it.
struct Decider {
    person_id: Uuid,
    /// The roles they held then, in words.
    roles: String,
    /// The decision's time, for the link to their record at that moment.
    at: String,
}

/// Each decision's underwriter, with the roles their record gave them at the
/// decision's time (each decider's record read once a page).
async fn with_deciders(
    state: &AppState,
    entries: Vec<TimelineEntry>,
) -> Result<Vec<(TimelineEntry, Option<Decider>)>, AppError> {
    let mut records: HashMap<String, Option<people::Record>> = HashMap::new();
    let mut out = Vec::with_capacity(entries.len());
    for entry in entries {
        let is_decision = entry
            .event_type
            .parse::<EventKind>()
            .is_ok_and(EventKind::is_decision);
        if !is_decision {
            out.push((entry, None));
            continue;
        }
        if !records.contains_key(&entry.actor) {
            let record = people::record_named(&state.store, &entry.actor)
                .await
                .map_err(AppError::Internal)?;
            records.insert(entry.actor.clone(), record);
        }
        let decider = records[&entry.actor].as_ref().map(|record| Decider {
            person_id: record.person.id,
            roles: roles_phrase(&record.roles_at(entry.recorded_at)),
            at: entry
                .recorded_at
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        });
        out.push((entry, decider));
    }
    Ok(out)
}

/// The quote exactly as it stood after event `as_of`, replayed from the log (not
/// read from a projection), with the event itself and links to step either way.
async fn as_of_page(
    state: &AppState,
    user: &CurrentUser,
    id: Uuid,
    as_of: i64,
) -> Result<Response, AppError> {
    let head = head_of(state, id).await?;
    if as_of < 1 || as_of > head.version {
        return Err(no_such_event(head.version));
    }
    let quote = state
        .quotes
        .load(id, Some(as_of))
        .await?
        .filter(|q| q.version as i64 == as_of)
        .ok_or_else(AppError::not_found)?;
    let entry = timeline::at_version(&state.db, id, as_of).await?;
    Ok(AsOfPage {
        layout: user.layout(),
        quote_id: id,
        reference: quote.reference.clone(),
        applicant_name: quote.applicant(),
        as_of,
        events: head.version,
        status: quote.status.unwrap_or(Status::Initiated),
        answers: answers_of(&quote),
        entry,
        previous: (as_of > 1).then_some(as_of - 1),
        next: (as_of < head.version).then_some(as_of + 1),
        quote,
    }
    .into_response())
}

// ----- A proof that travels ---------------------------------------------------------

/// The quote's whole history as one JSON file, signed with the installation's key
/// when it has one: what `quoteline verify --file` checks with no database.
#[tracing::instrument(skip_all, fields(quote_id = %id))]
async fn proof_file(
    State(state): State<AppState>,
    Auditor(user): Auditor,
    QuoteId(id): QuoteId,
) -> Result<Response, AppError> {
    // The head first: events appended after it are left out, so the file's history
    // ends where its head says.
    let head = head_of(&state, id).await?;
    let mut events = state.store.read_stream(id, 0).await?;
    events.truncate(usize::try_from(head.version).unwrap_or(0));
    // The installation vouches only for a history that verifies.
    let broken = verify_stream(id, Some(&head), &events);
    if let Some(first) = broken.first() {
        tracing::error!(version = first.version, problem = %first.problem, "proof refused: the quote's chain does not verify");
        return Err(AppError::conflict(
            "This quote's history does not verify",
            format!(
                "Its event {} does not match its hash chain ({}), so the installation \
                 cannot vouch for it. Nothing was exported. `quoteline verify` reports \
                 every mismatch.",
                first.version, first.problem
            ),
        ));
    }
    let reference = match events.first().map(QuoteEvent::decode) {
        Some(Ok(QuoteEvent::QuoteStarted { reference, .. })) => reference,
        _ => return Err(AppError::not_found()),
    };
    let proof = Proof::new(&head, &reference, &events, &user.username, Utc::now());
    let file = proof.to_file(state.signing_key.as_deref());
    tracing::info!(reference = %reference, events = events.len(), "proof exported");
    let disposition = format!("attachment; filename=\"quote-{reference}-proof.json\"");
    Ok((
        [
            (header::CONTENT_TYPE, "application/json".to_owned()),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        file,
    )
        .into_response())
}

// ----- Two versions compared -------------------------------------------------------

#[derive(Deserialize)]
struct CompareQuery {
    from: Option<String>,
    to: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "audit/compare.html")]
struct ComparePage {
    layout: Layout,
    quote_id: Uuid,
    reference: String,
    applicant_name: String,
    events: i64,
    from: i64,
    to: i64,
    comparison: Comparison,
}

/// Every answer that differs between events `from` and `to` of a quote, replayed
/// from the log, with who changed it in between; the two may come in either order.
#[tracing::instrument(skip_all, fields(quote_id = %id))]
async fn compare_page(
    State(state): State<AppState>,
    UnderwriterOrAuditor(user): UnderwriterOrAuditor,
    QuoteId(id): QuoteId,
    Query(query): Query<CompareQuery>,
) -> Result<Response, AppError> {
    let first = number(&query.from, "The first event's number")?;
    let second = number(&query.to, "The second event's number")?;
    let (Some(first), Some(second)) = (first, second) else {
        return Err(AppError::bad_request(
            "Choose two events to compare: one as “from” and one as “to”.",
        ));
    };
    if first == second {
        return Err(AppError::bad_request(
            "Choose two different events to compare.",
        ));
    }
    let (from, to) = (first.min(second), first.max(second));
    let head = head_of(&state, id).await?;
    if from < 1 || to > head.version {
        return Err(no_such_event(head.version));
    }
    let (before, steps) = state.quotes.history_between(id, from, to).await?;
    let comparison = compare::compare(&before, &steps);
    Ok(ComparePage {
        layout: user.layout(),
        quote_id: id,
        reference: comparison.after.reference.clone(),
        applicant_name: comparison.after.applicant(),
        events: head.version,
        from,
        to,
        comparison,
    }
    .into_response())
}

/// The quote's stream head: how many events it has and the last one's hash.
async fn head_of(state: &AppState, id: Uuid) -> Result<StreamHead, AppError> {
    state
        .store
        .stream_head(id)
        .await?
        .ok_or_else(AppError::not_found)
}

/// The page for an event number the quote does not have.
fn no_such_event(events: i64) -> AppError {
    AppError::refused(
        StatusCode::NOT_FOUND,
        "There is no such event",
        format!("This quote has events 1 to {events}. Choose one of those."),
    )
}

// ----- The log -----------------------------------------------------------------------

#[derive(Deserialize)]
struct LogQuery {
    #[serde(flatten)]
    form: FilterForm,
    before: Option<String>,
    after: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "audit/log.html")]
struct LogPage {
    layout: Layout,
    form: FilterForm,
    errors: FieldErrors,
    event_types: &'static [EventKind],
    entries: Vec<TimelineEntry>,
    filtered: bool,
    filter_query: String,
    older: Option<i64>,
    newer: Option<i64>,
}

impl LogPage {
    /// A link to this view with `extra` (a cursor) added to its filters.
    fn href(&self, extra: &str) -> String {
        match (self.filter_query.is_empty(), extra.is_empty()) {
            (true, _) => format!("?{extra}"),
            (false, true) => format!("?{}", self.filter_query),
            (false, false) => format!("?{}&{extra}", self.filter_query),
        }
    }

    fn export_href(&self, extension: &str) -> String {
        let query = self.href("");
        format!(
            "/audit/export.{extension}{}",
            if query == "?" { "" } else { &query }
        )
    }
}

#[tracing::instrument(skip_all)]
async fn log_page(
    State(state): State<AppState>,
    Auditor(user): Auditor,
    Query(query): Query<LogQuery>,
) -> Result<Response, AppError> {
    let before = number(&query.before, "The position to page from")?;
    let after = number(&query.after, "The position to page from")?;
    let cursor = match (before, after) {
        (Some(position), _) => Cursor::Before(position),
        (None, Some(position)) => Cursor::After(position),
        (None, None) => Cursor::Newest,
    };
    let mut page = LogPage {
        layout: user.layout(),
        form: query.form.clone(),
        errors: FieldErrors::default(),
        event_types: &EventKind::ALL,
        entries: Vec::new(),
        filtered: false,
        filter_query: String::new(),
        older: None,
        newer: None,
    };
    let filter = match query.form.parse() {
        Ok(filter) => filter,
        Err(errors) => {
            page.errors = errors;
            return Ok((StatusCode::BAD_REQUEST, page).into_response());
        }
    };
    let found = log::page(&state.db, &filter, cursor, LOG_PAGE).await?;
    page.filtered = !filter.is_empty();
    page.filter_query = filter.query_string();
    page.entries = found.entries;
    page.older = found.older;
    page.newer = found.newer;
    Ok(page.into_response())
}

async fn export(state: AppState, form: FilterForm, format: Format) -> Result<Response, AppError> {
    let filter = form
        .parse()
        .map_err(|errors| AppError::bad_request(format!("{errors}.")))?;
    tracing::info!(?filter, ?format, "audit log exported");
    Ok(export::response(state.db.clone(), filter, format))
}

async fn export_csv(
    State(state): State<AppState>,
    Auditor(_): Auditor,
    Query(form): Query<FilterForm>,
) -> Result<Response, AppError> {
    export(state, form, Format::Csv).await
}

async fn export_json_lines(
    State(state): State<AppState>,
    Auditor(_): Auditor,
    Query(form): Query<FilterForm>,
) -> Result<Response, AppError> {
    export(state, form, Format::JsonLines).await
}

// ----- Verification ------------------------------------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "audit/verify.html")]
struct VerifyPage {
    layout: Layout,
    run: Option<VerificationRun>,
    public_key: Option<String>,
}

async fn verify_page(
    State(state): State<AppState>,
    Auditor(user): Auditor,
) -> Result<VerifyPage, AppError> {
    Ok(VerifyPage {
        layout: user.layout(),
        run: verification::latest(&state.db).await?,
        public_key: state.signing_key.as_ref().map(|key| key.public_hex()),
    })
}

/// Runs a check and shows its result. The check runs in a task of its own so that
/// one outlasting the request's time limit still finishes and is recorded.
async fn run_verification(
    State(state): State<AppState>,
    Auditor(user): Auditor,
) -> Result<Redirect, AppError> {
    let store = state.store.clone();
    let run_by = user.username.clone();
    tokio::spawn(async move { verification::run(&store, &run_by).await })
        .await
        .map_err(|e| AppError::Internal(e.into()))??;
    Ok(Redirect::to("/audit/verify"))
}
