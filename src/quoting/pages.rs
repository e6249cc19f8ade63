//! The agent's pages: my quotes, start a quote, the task list, one page per section,
//! check your answers, submit and withdraw.
//!
//! Every POST: parse the form into the section's value objects (422 and the same
//! page on invalid input) → decide on the version the form was rendered from →
//! append (with the projections) → 303 to the next page. What may be done to a quote
//! is asked of the quote (`Quote::permits`), never re-decided here.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use uuid::Uuid;

use super::answers::{AnswerSection, answers_of};
use super::domain::{Action, ActionKind, Command, Field, PersonName, Quote, Status};
use super::forms::{
    ApplicantForm, ContactForm, FamilyForm, FormContext, GeographicForm, SectionForm,
};
use super::forms::{InputName, field_errors};
use super::service::CommandError;
use super::summary::{self, QuoteSummary};
use crate::identity::{Agent, CurrentUser};
use crate::state::AppState;
use crate::web::error::STALE_HEADING;
use crate::web::{AppError, FieldErrors, Form, FormMeta, Layout, QuoteId, new_key};

/// The agent's routes. `GET /quotes/{id}` is shared with underwriters and auditors
/// and is dispatched in `app`, which calls [`task_list`] for the quote's agent.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/quotes", get(my_quotes).post(start_quote))
        .route("/quotes/new", get(new_quote))
        .merge(section::<ApplicantForm>())
        .merge(section::<GeographicForm>())
        .merge(section::<ContactForm>())
        .merge(section::<FamilyForm>())
        .route("/quotes/{id}/review", get(review_page))
        .route("/quotes/{id}/finalize", post(finalize))
        .route(
            "/quotes/{id}/withdraw",
            get(confirm_withdraw).post(withdraw),
        )
}

/// The quote, if `user` is its agent. Anyone else's quote does not exist for them.
async fn own_quote(state: &AppState, user: &CurrentUser, id: Uuid) -> Result<Quote, AppError> {
    state
        .quotes
        .load(id, None)
        .await?
        .filter(|q| q.agent == user.username)
        .ok_or_else(AppError::not_found)
}

// ----- My quotes --------------------------------------------------------------

#[derive(Deserialize)]
struct ListFilter {
    #[serde(default)]
    status: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "quoting/my_quotes.html")]
struct MyQuotesPage {
    layout: Layout,
    quotes: Vec<QuoteSummary>,
    statuses: &'static [Status],
    selected: Option<Status>,
    limit: i64,
}

const LIST_LIMIT: i64 = 200;

async fn my_quotes(
    State(state): State<AppState>,
    Agent(user): Agent,
    Query(filter): Query<ListFilter>,
) -> Result<MyQuotesPage, AppError> {
    let selected = match filter.status.as_str() {
        "" => None,
        other => Some(
            other
                .parse::<Status>()
                .map_err(|_| AppError::bad_request("There is no such status to filter by."))?,
        ),
    };
    let quotes = summary::for_agent(&state.db, &user.username, selected, LIST_LIMIT).await?;
    Ok(MyQuotesPage {
        layout: user.layout(),
        quotes,
        statuses: &Status::ALL,
        selected,
        limit: LIST_LIMIT,
    })
}

// ----- Start a quote -----------------------------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "quoting/new.html")]
struct NewQuotePage {
    layout: Layout,
    quote_id: Uuid,
    idempotency_key: String,
    applicant_name: String,
    errors: FieldErrors,
}

async fn new_quote(Agent(user): Agent) -> NewQuotePage {
    NewQuotePage {
        layout: user.layout(),
        quote_id: Uuid::now_v7(),
        idempotency_key: new_key(),
        applicant_name: String::new(),
        errors: FieldErrors::default(),
    }
}

#[derive(Deserialize)]
struct NewQuoteForm {
    #[serde(default)]
    quote_id: String,
    #[serde(default)]
    idempotency_key: String,
    #[serde(default)]
    applicant_name: String,
}

async fn start_quote(
    State(state): State<AppState>,
    Agent(user): Agent,
    headers: HeaderMap,
    Form(form): Form<NewQuoteForm>,
) -> Result<Response, AppError> {
    let quote_id = Uuid::parse_str(form.quote_id.trim()).map_err(|_| {
        AppError::bad_request(
            "The form was missing its quote number. Go back, reload the page and try again.",
        )
    })?;
    let name = match PersonName::parse_as(
        &form.applicant_name,
        Field::ApplicantName.label(),
        "Enter the applicant's name",
    ) {
        Ok(name) => name,
        Err(message) => {
            let mut errors = FieldErrors::default();
            errors.push(Field::ApplicantName.input_name(), message);
            let page = NewQuotePage {
                layout: user.layout(),
                quote_id,
                idempotency_key: form.idempotency_key,
                applicant_name: form.applicant_name,
                errors,
            };
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
        }
    };
    let meta = FormMeta {
        version: "0".into(),
        idempotency_key: form.idempotency_key,
    };
    state
        .quotes
        .start(quote_id, user.actor(), name, &meta.envelope(&headers))
        .await
        .map_err(|error| match error {
            CommandError::Stale { .. } => AppError::conflict(
                "This quote has already been started",
                "A quote with this number exists already. Start a new quote from your list.",
            ),
            other => other.into(),
        })?;
    Ok(Redirect::to(&format!("/quotes/{quote_id}")).into_response())
}

// ----- Task list ---------------------------------------------------------------

struct SectionState {
    slug: &'static str,
    title: &'static str,
    done: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "quoting/task_list.html")]
struct TaskListPage {
    layout: Layout,
    quote_id: Uuid,
    quote: Quote,
    status: Status,
    sections: Vec<SectionState>,
    editable: bool,
    can_submit: bool,
    can_withdraw: bool,
}

/// The task list of `quote`, for its own agent: each section's state, and the
/// actions the quote permits them now.
pub fn task_list(user: &CurrentUser, id: Uuid, quote: &Quote) -> Result<Response, AppError> {
    let actor = user.actor();
    let permits = |action| quote.permits(&actor, action).is_ok();
    let status = quote.status.ok_or_else(AppError::not_found)?;
    Ok(TaskListPage {
        layout: user.layout(),
        quote_id: id,
        status,
        sections: vec![
            SectionState {
                slug: GeographicForm::SLUG,
                title: "Geographic details",
                done: quote.geographic.is_some(),
            },
            SectionState {
                slug: ContactForm::SLUG,
                title: "Contact details",
                done: quote.contact.is_some(),
            },
            SectionState {
                slug: FamilyForm::SLUG,
                title: "Family details",
                done: quote.family.is_some(),
            },
        ],
        editable: permits(ActionKind::ProvideGeographic),
        can_submit: permits(ActionKind::Finalize),
        can_withdraw: permits(ActionKind::Withdraw),
        quote: quote.clone(),
    }
    .into_response())
}

// ----- Section pages -----------------------------------------------------------

/// A section's page and its POST, written once for every [`SectionForm`].
fn section<F: SectionForm>() -> Router<AppState> {
    Router::new().route(
        &format!("/quotes/{{id}}/{}", F::SLUG),
        get(show_section::<F>).post(save_section::<F>),
    )
}

/// Only a quote whose answers can still change shows its forms.
fn ensure_editable(quote: &Quote, user: &CurrentUser) -> Result<(), AppError> {
    match (
        quote.status,
        quote.permits(&user.actor(), ActionKind::ProvideGeographic),
    ) {
        (_, Ok(())) => Ok(()),
        (Some(status), Err(_)) => Err(AppError::conflict(
            "This quote can no longer be changed",
            format!(
                "The quote is {}, so its answers are read-only.",
                status.label()
            ),
        )),
        (None, Err(_)) => Err(AppError::not_found()),
    }
}

fn form_context(
    user: &CurrentUser,
    id: Uuid,
    quote: &Quote,
    version: i64,
    key: String,
) -> FormContext {
    FormContext {
        layout: user.layout(),
        quote_id: id,
        reference: quote.reference.clone(),
        version,
        idempotency_key: key,
        errors: FieldErrors::default(),
        notice: None,
    }
}

async fn show_section<F: SectionForm>(
    State(state): State<AppState>,
    Agent(user): Agent,
    QuoteId(id): QuoteId,
) -> Result<Response, AppError> {
    let quote = own_quote(&state, &user, id).await?;
    ensure_editable(&quote, &user)?;
    let context = form_context(&user, id, &quote, quote.version as i64, new_key());
    Ok(F::from_quote(&quote).render(context))
}

#[derive(Deserialize)]
struct Submitted<F> {
    #[serde(flatten)]
    meta: FormMeta,
    /// The button pressed, for forms with more than one.
    #[serde(default)]
    action: String,
    #[serde(flatten)]
    form: F,
}

async fn save_section<F: SectionForm>(
    State(state): State<AppState>,
    Agent(user): Agent,
    QuoteId(id): QuoteId,
    headers: HeaderMap,
    Form(submitted): Form<Submitted<F>>,
) -> Result<Response, AppError> {
    let Submitted {
        meta,
        action: button,
        mut form,
    } = submitted;
    let version = meta.version()?;
    let quote = own_quote(&state, &user, id).await?;
    let context = |key: String| form_context(&user, id, &quote, version, key);
    if form.edit(&button)? {
        ensure_editable(&quote, &user)?;
        return Ok(form.render(context(meta.idempotency_key)));
    }
    let action = match form.parse() {
        Ok(action) => action,
        Err(invalid) => {
            let mut context = context(meta.idempotency_key);
            context.errors = field_errors(invalid);
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, form.render(context)).into_response());
        }
    };
    let command = Command::new(user.actor(), action);
    match state
        .quotes
        .execute_on(id, &quote, version, command, &meta.envelope(&headers))
        .await
    {
        Ok((_, after)) => Ok(Redirect::to(&next_page(id, &after)).into_response()),
        Err(CommandError::Stale { actual, .. }) if quote.status.is_some_and(|s| !s.is_final()) => {
            // Keep what they typed; the form now carries the current version.
            let mut context = context(new_key());
            context.version = actual;
            context.notice = Some(STALE_HEADING);
            Ok((StatusCode::CONFLICT, form.render(context)).into_response())
        }
        Err(error) => Err(error.into()),
    }
}

/// After a section: the next one not yet answered, else check your answers.
fn next_page(id: Uuid, quote: &Quote) -> String {
    let slug = if quote.geographic.is_none() {
        GeographicForm::SLUG
    } else if quote.contact.is_none() {
        ContactForm::SLUG
    } else if quote.family.is_none() {
        FamilyForm::SLUG
    } else {
        "review"
    };
    format!("/quotes/{id}/{slug}")
}

// ----- Check your answers, submit, withdraw -------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "quoting/review.html")]
struct ReviewPage {
    layout: Layout,
    quote_id: Uuid,
    reference: String,
    version: i64,
    idempotency_key: String,
    answers: Vec<AnswerSection>,
    editable: bool,
    notice: Option<&'static str>,
}

impl ReviewPage {
    /// Where a "Change" link lands: the answer's input on its section's page.
    fn input_of(&self, field: &Field) -> String {
        match field {
            Field::Children => Field::Child(0),
            other => *other,
        }
        .input_name()
    }
}

async fn review_page(
    State(state): State<AppState>,
    Agent(user): Agent,
    QuoteId(id): QuoteId,
) -> Result<Response, AppError> {
    let quote = own_quote(&state, &user, id).await?;
    ensure_editable(&quote, &user)?;
    if !quote.sections_complete() {
        return Ok(Redirect::to(&next_page(id, &quote)).into_response());
    }
    Ok(ReviewPage {
        layout: user.layout(),
        quote_id: id,
        reference: quote.reference.clone(),
        version: quote.version as i64,
        idempotency_key: new_key(),
        answers: answers_of(&quote),
        editable: true,
        notice: None,
    }
    .into_response())
}

async fn finalize(
    State(state): State<AppState>,
    Agent(user): Agent,
    QuoteId(id): QuoteId,
    headers: HeaderMap,
    Form(meta): Form<FormMeta>,
) -> Result<Response, AppError> {
    lifecycle(&state, user, id, &headers, meta, Action::Finalize).await
}

#[derive(Template, WebTemplate)]
#[template(path = "quoting/withdraw.html")]
struct WithdrawPage {
    layout: Layout,
    quote_id: Uuid,
    reference: String,
    applicant_name: String,
    version: i64,
    idempotency_key: String,
}

/// Withdrawing is final, so it asks first.
async fn confirm_withdraw(
    State(state): State<AppState>,
    Agent(user): Agent,
    QuoteId(id): QuoteId,
) -> Result<Response, AppError> {
    let quote = own_quote(&state, &user, id).await?;
    if quote.permits(&user.actor(), ActionKind::Withdraw).is_err() {
        return Err(AppError::conflict(
            "This quote can no longer be withdrawn",
            format!(
                "The quote is {}, which is final.",
                quote.status.map_or("closed", Status::label)
            ),
        ));
    }
    Ok(WithdrawPage {
        layout: user.layout(),
        quote_id: id,
        reference: quote.reference.clone(),
        applicant_name: quote.applicant(),
        version: quote.version as i64,
        idempotency_key: new_key(),
    }
    .into_response())
}

async fn withdraw(
    State(state): State<AppState>,
    Agent(user): Agent,
    QuoteId(id): QuoteId,
    headers: HeaderMap,
    Form(meta): Form<FormMeta>,
) -> Result<Response, AppError> {
    lifecycle(&state, user, id, &headers, meta, Action::Withdraw).await
}

/// A command without answers of its own: run it and go back to the task list.
async fn lifecycle(
    state: &AppState,
    user: CurrentUser,
    id: Uuid,
    headers: &HeaderMap,
    meta: FormMeta,
    action: Action,
) -> Result<Response, AppError> {
    let version = meta.version()?;
    let quote = own_quote(state, &user, id).await?;
    state
        .quotes
        .execute_on(
            id,
            &quote,
            version,
            Command::new(user.actor(), action),
            &meta.envelope(headers),
        )
        .await?;
    Ok(Redirect::to(&format!("/quotes/{id}")).into_response())
}
