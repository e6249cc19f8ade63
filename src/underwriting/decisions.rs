//! The underwriter's view of a quote and their decisions: approve, reject with a
//! reason, refer back with a note, each behind its own confirm step. Nobody decides
//! a quote they created; when two decide at once, one wins and the other is told
//! who decided and how.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::queue::{self, QueueRow};
use crate::identity::{CurrentUser, Underwriter};
use crate::quoting::domain::{
    Action, ActionKind, Command, DomainError, EventKind, NonEmptyText, Quote, QuoteEvent, Status,
    evolve,
};
use crate::quoting::{AnswerSection, CommandError, answers_of};
use crate::state::AppState;
use crate::web::{AppError, FieldErrors, Form, FormMeta, Layout, QuoteId, new_key};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/quotes/{id}/approve", get(confirm).post(decision))
        .route("/quotes/{id}/reject", get(confirm).post(decision))
        .route("/quotes/{id}/refer", get(confirm).post(decision))
        .route("/quotes/{id}/decided", get(decided))
}

/// One line of a quote's history, in short.
pub struct HistoryLine {
    pub kind: EventKind,
    pub title: &'static str,
    pub actor: String,
    pub at: DateTime<Utc>,
    pub detail: Option<String>,
}

/// The quote as its events fold, with its history in short.
async fn quote_with_history(
    state: &AppState,
    id: Uuid,
) -> Result<(Quote, Vec<HistoryLine>), AppError> {
    let recorded = state.store.read_stream(id, 0).await?;
    let mut quote = Quote::default();
    let mut history = Vec::with_capacity(recorded.len());
    for event in &recorded {
        let decoded = QuoteEvent::decode(event).map_err(|e| AppError::Internal(e.into()))?;
        history.push(HistoryLine {
            kind: decoded.kind(),
            title: decoded.title(),
            actor: event.actor.clone(),
            at: event.recorded_at,
            detail: decoded.decision_text().map(NonEmptyText::to_string),
        });
        quote = evolve(quote, &decoded);
    }
    if !quote.is_started() {
        return Err(AppError::not_found());
    }
    Ok((quote, history))
}

#[derive(Template, WebTemplate)]
#[template(path = "underwriting/quote.html")]
struct QuoteView {
    layout: Layout,
    quote_id: Uuid,
    quote: Quote,
    status: Status,
    answers: Vec<AnswerSection>,
    history: Vec<HistoryLine>,
    can_decide: bool,
    own_quote: bool,
}

/// What underwriters and auditors see at `/quotes/{id}`: every answer read-only,
/// the history in short, and (for an underwriter, on a submitted quote that is not
/// their own) the three decisions.
pub async fn quote_view(
    state: &AppState,
    user: &CurrentUser,
    id: Uuid,
) -> Result<Response, AppError> {
    let (quote, history) = quote_with_history(state, id).await?;
    let status = quote.status.unwrap_or(Status::Initiated);
    let decision = quote.permits(&user.actor(), ActionKind::Approve);
    Ok(QuoteView {
        layout: user.layout(),
        quote_id: id,
        answers: answers_of(&quote),
        status,
        history,
        can_decide: decision.is_ok(),
        own_quote: decision == Err(DomainError::OwnQuote),
        quote,
    }
    .into_response())
}

/// The three decisions, as their pages name them.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Decision {
    Approve,
    Reject,
    Refer,
}

impl Decision {
    fn slug(self) -> &'static str {
        match self {
            Decision::Approve => "approve",
            Decision::Reject => "reject",
            Decision::Refer => "refer",
        }
    }

    fn heading(self) -> &'static str {
        match self {
            Decision::Approve => "Approve this quote",
            Decision::Reject => "Reject this quote",
            Decision::Refer => "Refer this quote back to the agent",
        }
    }

    fn button(self) -> &'static str {
        match self {
            Decision::Approve => "Approve quote",
            Decision::Reject => "Reject quote",
            Decision::Refer => "Refer back to agent",
        }
    }

    /// The text the decision needs: (label, hint, message when missing).
    fn text(self) -> Option<(&'static str, &'static str, &'static str)> {
        match self {
            Decision::Approve => None,
            Decision::Reject => Some((
                "Reason for rejecting",
                "The agent and the auditors will see this",
                "Enter the reason for rejecting the quote",
            )),
            Decision::Refer => Some((
                "Note to the agent",
                "Say what the agent should check or change",
                "Enter a note saying what the agent should change",
            )),
        }
    }

    fn action(self, text: Option<NonEmptyText>) -> Action {
        match (self, text) {
            (Decision::Approve, _) => Action::Approve,
            (Decision::Reject, Some(reason)) => Action::Reject { reason },
            (Decision::Refer, Some(note)) => Action::ReferBack { note },
            (_, None) => unreachable!("the text is parsed before the action is built"),
        }
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "underwriting/confirm.html")]
struct ConfirmPage {
    layout: Layout,
    quote_id: Uuid,
    reference: String,
    applicant_name: String,
    agent: String,
    heading: &'static str,
    button: &'static str,
    slug: &'static str,
    text_field: Option<(&'static str, &'static str, &'static str)>,
    text: String,
    version: i64,
    idempotency_key: String,
    errors: FieldErrors,
}

/// A submitted quote this underwriter may decide, or the page that says why not.
async fn decidable(state: &AppState, user: &CurrentUser, id: Uuid) -> Result<Quote, AppError> {
    let (quote, history) = quote_with_history(state, id).await?;
    match quote.permits(&user.actor(), ActionKind::Approve) {
        Ok(()) => Ok(quote),
        Err(DomainError::NotPermitted { .. }) => Err(already_decided(&quote, &history)),
        Err(rule) => Err(rule.into()),
    }
}

/// Why a decision can no longer be made: who decided the quote, and how.
fn already_decided(quote: &Quote, history: &[HistoryLine]) -> AppError {
    let status = quote.status.unwrap_or(Status::Initiated);
    let last_change = history
        .iter()
        .rev()
        .find(|line| line.kind.is_decision() || line.kind == EventKind::QuoteWithdrawn);
    let message = match last_change {
        Some(line) => format!(
            "{} by {} on {}.{}",
            line.title,
            line.actor,
            line.at.format("%d %b %Y at %H:%M UTC"),
            line.detail
                .as_ref()
                .map(|d| format!(" They wrote: “{d}”"))
                .unwrap_or_default()
        ),
        None => format!(
            "The quote is {} and not waiting for a decision.",
            status.label()
        ),
    };
    AppError::conflict("This quote has already been decided", message)
}

fn confirm_page(user: &CurrentUser, id: Uuid, quote: &Quote, decision: Decision) -> ConfirmPage {
    ConfirmPage {
        layout: user.layout(),
        quote_id: id,
        reference: quote.reference.clone(),
        applicant_name: quote.applicant(),
        agent: quote.agent.clone(),
        heading: decision.heading(),
        button: decision.button(),
        slug: decision.slug(),
        text_field: decision.text(),
        text: String::new(),
        version: quote.version as i64,
        idempotency_key: new_key(),
        errors: FieldErrors::default(),
    }
}

async fn show_confirm(
    state: &AppState,
    user: CurrentUser,
    id: Uuid,
    decision: Decision,
) -> Result<Response, AppError> {
    let quote = decidable(state, &user, id).await?;
    Ok(confirm_page(&user, id, &quote, decision).into_response())
}

#[derive(Deserialize)]
struct DecisionForm {
    #[serde(flatten)]
    meta: FormMeta,
    #[serde(default)]
    text: String,
}

#[tracing::instrument(skip_all, fields(quote_id = %id, decision = decision.slug()))]
async fn decide(
    state: &AppState,
    user: CurrentUser,
    id: Uuid,
    headers: &HeaderMap,
    form: DecisionForm,
    decision: Decision,
) -> Result<Response, AppError> {
    let version = form.meta.version()?;
    let text = match decision.text() {
        None => None,
        Some((label, _, missing)) => match NonEmptyText::parse_as(&form.text, label, missing) {
            Ok(text) => Some(text),
            Err(message) => {
                let quote = decidable(state, &user, id).await?;
                let mut page = confirm_page(&user, id, &quote, decision);
                page.errors.push("text", message);
                page.text = form.text;
                page.version = version;
                page.idempotency_key = form.meta.idempotency_key;
                return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
            }
        },
    };
    let command = Command::new(user.actor(), decision.action(text));
    match state
        .quotes
        .execute(id, version, command, &form.meta.envelope(headers))
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!("/quotes/{id}/decided")).into_response()),
        Err(
            CommandError::Stale { .. } | CommandError::Rejected(DomainError::NotPermitted { .. }),
        ) => {
            let (quote, history) = quote_with_history(state, id).await?;
            Err(already_decided(&quote, &history))
        }
        Err(error) => Err(error.into()),
    }
}

/// The decision a route names, from its last path segment.
impl<S: Send + Sync> FromRequestParts<S> for Decision {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        [Decision::Approve, Decision::Reject, Decision::Refer]
            .into_iter()
            .find(|d| parts.uri.path().ends_with(&format!("/{}", d.slug())))
            .ok_or_else(AppError::not_found)
    }
}

async fn confirm(
    State(state): State<AppState>,
    Underwriter(user): Underwriter,
    QuoteId(id): QuoteId,
    decision: Decision,
) -> Result<Response, AppError> {
    show_confirm(&state, user, id, decision).await
}

async fn decision(
    State(state): State<AppState>,
    Underwriter(user): Underwriter,
    QuoteId(id): QuoteId,
    decision: Decision,
    headers: HeaderMap,
    Form(form): Form<DecisionForm>,
) -> Result<Response, AppError> {
    decide(&state, user, id, &headers, form, decision).await
}

#[derive(Template, WebTemplate)]
#[template(path = "underwriting/decided.html")]
struct DecidedPage {
    layout: Layout,
    reference: String,
    applicant_name: String,
    outcome: &'static str,
    detail: Option<String>,
    next: Option<QueueRow>,
}

/// After a decision: what was decided, and the next quote waiting.
async fn decided(
    State(state): State<AppState>,
    Underwriter(user): Underwriter,
    QuoteId(id): QuoteId,
) -> Result<Response, AppError> {
    let (quote, history) = quote_with_history(&state, id).await?;
    let last = history.last().ok_or_else(AppError::not_found)?;
    let next = queue::next_for(&state.db, &user.username).await?;
    Ok(DecidedPage {
        layout: user.layout(),
        reference: quote.reference.clone(),
        applicant_name: quote.applicant(),
        outcome: last.title,
        detail: last.detail.clone(),
        next,
    }
    .into_response())
}
