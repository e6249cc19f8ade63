//! The agent's pages: my quotes, start a quote, the task list, one page per section,
//! check your answers, submit and withdraw.
//!
//! Every POST: parse the form into the section's value objects (422 and the same
//! page on invalid input) → decide on the version the form was rendered from →
//! append (with the quote_summary row) → 303 to the next page.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum_extra::extract::Form;
use chrono::Utc;
use serde::Deserialize;
use uuid::Uuid;

use super::domain::{
    Action, COUNTRIES, Command, ContactDetails, DomainError, FamilyDetails, FieldErrors,
    GeographicDetails, PersonName, Quote, Role, Status,
};
use super::service::{CommandError, Envelope};
use super::summary::{self, QuoteSummary};
use crate::AppState;
use crate::identity::{Agent, AgentUnderwriterOrAuditor, CurrentUser};
use crate::web::middleware::REQUEST_ID;
use crate::web::{AppError, Layout};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/quotes", get(my_quotes).post(start_quote))
        .route("/quotes/new", get(new_quote))
        .route("/quotes/{id}", get(task_list))
        .route(
            "/quotes/{id}/geographic",
            get(geographic_page).post(save_geographic),
        )
        .route("/quotes/{id}/contact", get(contact_page).post(save_contact))
        .route("/quotes/{id}/family", get(family_page).post(save_family))
        .route("/quotes/{id}/review", get(review_page))
        .route("/quotes/{id}/finalize", post(finalize))
        .route(
            "/quotes/{id}/withdraw",
            get(confirm_withdraw).post(withdraw),
        )
}

/// A quote id from the path; anything that is not one is a page that does not exist.
pub struct QuoteId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for QuoteId {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, AppError> {
        let id = parts
            .uri
            .path()
            .split('/')
            .nth(2)
            .and_then(|segment| Uuid::parse_str(segment).ok())
            .ok_or_else(AppError::not_found)?;
        Ok(QuoteId(id))
    }
}

/// The fields every command form carries besides its answers.
#[derive(Debug, Deserialize)]
pub struct FormMeta {
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub idempotency_key: String,
}

impl FormMeta {
    pub fn version(&self) -> Result<i64, AppError> {
        self.version
            .parse()
            .ok()
            .filter(|v| *v >= 0)
            .ok_or_else(|| AppError::bad_request("The form was missing its quote version. Go back, reload the page and try again."))
    }

    pub fn envelope(&self, headers: &HeaderMap) -> Envelope {
        let key = self.idempotency_key.trim();
        Envelope {
            at: Utc::now(),
            request_id: headers
                .get(REQUEST_ID)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            idempotency_key: (!key.is_empty() && key.len() <= 100).then(|| key.to_owned()),
        }
    }
}

pub fn new_key() -> String {
    Uuid::new_v4().to_string()
}

/// The quote, if `user` is its agent. Anyone else's quote does not exist for them.
async fn own_quote(state: &AppState, user: &CurrentUser, id: Uuid) -> Result<Quote, AppError> {
    let quote = state
        .quotes
        .load(id, None)
        .await
        .map_err(into_app_error)?
        .filter(|q| q.agent == user.username)
        .ok_or_else(AppError::not_found)?;
    Ok(quote)
}

pub fn into_app_error(error: CommandError) -> AppError {
    match error {
        CommandError::Rejected(rule) => refusal(rule),
        CommandError::Stale { .. } => AppError::conflict(
            STALE_HEADING,
            "Someone else changed this quote after you opened the page. Nothing you sent was saved. Go back to the quote to see it as it is now.",
        ),
        CommandError::Corrupt(e) => AppError::Internal(e.into()),
        CommandError::Store(e) => AppError::Internal(e),
    }
}

const STALE_HEADING: &str = "This quote changed while you were editing";

/// A rule that said no, as a page: someone else's quote does not exist for an
/// agent; the rest are conflicts with the quote's state or role.
fn refusal(rule: DomainError) -> AppError {
    match rule {
        DomainError::QuoteNotFound | DomainError::NotTheQuotesAgent => AppError::not_found(),
        DomainError::RoleRequired { .. } | DomainError::OwnQuote => {
            AppError::forbidden(rule.to_string())
        }
        _ => AppError::conflict("That cannot be done to this quote", rule.to_string()),
    }
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
        "Applicant name",
        "Enter the applicant's name",
    ) {
        Ok(name) => name,
        Err(message) => {
            let mut errors = FieldErrors::default();
            errors.push("applicant_name", message);
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
            other => into_app_error(other),
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
    quote: QuoteSummary,
    sections: Vec<SectionState>,
    editable: bool,
    can_withdraw: bool,
}

async fn task_list(
    State(state): State<AppState>,
    AgentUnderwriterOrAuditor(user): AgentUnderwriterOrAuditor,
    QuoteId(id): QuoteId,
) -> Result<Response, AppError> {
    let quote = summary::find(&state.db, id)
        .await?
        .ok_or_else(AppError::not_found)?;
    let is_owner = quote.agent == user.username && user.has_role(Role::Agent);
    let is_staff = user.has_role(Role::Underwriter) || user.has_role(Role::Auditor);
    if !is_owner {
        // Underwriters and auditors read the quote whole; other agents never see it.
        return match is_staff {
            true => crate::underwriting::decisions::quote_view(&state, &user, id).await,
            false => Err(AppError::not_found()),
        };
    }
    let status = quote.status();
    let editable = matches!(status, Status::Initiated | Status::Saved);
    let can_withdraw = matches!(
        status,
        Status::Initiated | Status::Saved | Status::Finalized
    );
    Ok(TaskListPage {
        layout: user.layout(),
        sections: vec![
            SectionState {
                slug: "geographic",
                title: "Geographic details",
                done: quote.geographic_done,
            },
            SectionState {
                slug: "contact",
                title: "Contact details",
                done: quote.contact_done,
            },
            SectionState {
                slug: "family",
                title: "Family details",
                done: quote.family_done,
            },
        ],
        quote,
        editable,
        can_withdraw,
    }
    .into_response())
}

// ----- Section pages -----------------------------------------------------------

/// What a section page needs besides its own answers.
struct FormContext {
    layout: Layout,
    quote_id: Uuid,
    reference: String,
    version: i64,
    idempotency_key: String,
    errors: FieldErrors,
    notice: Option<&'static str>,
}

/// One section's form: how it reads its answers, and how its page is drawn.
trait SectionForm: Sized {
    fn from_quote(quote: &Quote) -> Self;
    fn parse(&self) -> Result<Action, FieldErrors>;
    fn render(self, context: FormContext) -> Response;
}

/// Only a quote that can still take answers shows its forms.
fn ensure_editable(quote: &Quote) -> Result<(), AppError> {
    match quote.status {
        Some(Status::Initiated | Status::Saved) => Ok(()),
        Some(status) => Err(AppError::conflict(
            "This quote can no longer be changed",
            format!(
                "The quote is {}, so its answers are read-only.",
                status.label()
            ),
        )),
        None => Err(AppError::not_found()),
    }
}

async fn show_section<F: SectionForm>(
    state: &AppState,
    user: CurrentUser,
    id: Uuid,
) -> Result<Response, AppError> {
    let quote = own_quote(state, &user, id).await?;
    ensure_editable(&quote)?;
    let context = FormContext {
        layout: user.layout(),
        quote_id: id,
        reference: quote.reference.clone(),
        version: quote.version as i64,
        idempotency_key: new_key(),
        errors: FieldErrors::default(),
        notice: None,
    };
    Ok(F::from_quote(&quote).render(context))
}

async fn save_section<F: SectionForm>(
    state: &AppState,
    user: CurrentUser,
    id: Uuid,
    headers: &HeaderMap,
    meta: FormMeta,
    form: F,
) -> Result<Response, AppError> {
    let version = meta.version()?;
    let quote = own_quote(state, &user, id).await?;
    let context = |errors, notice, version| FormContext {
        layout: user.layout(),
        quote_id: id,
        reference: quote.reference.clone(),
        version,
        idempotency_key: meta.idempotency_key.clone(),
        errors,
        notice,
    };
    let action = match form.parse() {
        Ok(action) => action,
        Err(errors) => {
            let page = form.render(context(errors, None, version));
            return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
        }
    };
    let command = Command::new(user.actor(), action);
    match state
        .quotes
        .execute_on(id, &quote, version, command, &meta.envelope(headers))
        .await
    {
        Ok((_, after)) => Ok(Redirect::to(&next_page(id, &after)).into_response()),
        Err(CommandError::Stale { actual, .. }) if quote.status.is_some_and(|s| !s.is_final()) => {
            // Keep what they typed; the form now carries the current version.
            let mut context = context(FieldErrors::default(), Some(STALE_HEADING), actual);
            context.idempotency_key = new_key();
            Ok((StatusCode::CONFLICT, form.render(context)).into_response())
        }
        Err(error) => Err(into_app_error(error)),
    }
}

/// After a section: the next one not yet answered, else check your answers.
fn next_page(id: Uuid, quote: &Quote) -> String {
    let slug = if quote.geographic.is_none() {
        "geographic"
    } else if quote.contact.is_none() {
        "contact"
    } else if quote.family.is_none() {
        "family"
    } else {
        "review"
    };
    format!("/quotes/{id}/{slug}")
}

#[derive(Debug, Default, Deserialize)]
struct GeographicForm {
    #[serde(default)]
    country: String,
    #[serde(default)]
    region: String,
    #[serde(default)]
    city: String,
    #[serde(default)]
    postal_code: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "quoting/geographic.html")]
struct GeographicPage {
    layout: Layout,
    quote_id: Uuid,
    reference: String,
    version: i64,
    idempotency_key: String,
    errors: FieldErrors,
    notice: Option<&'static str>,
    form: GeographicForm,
    countries: &'static [(&'static str, &'static str)],
}

impl SectionForm for GeographicForm {
    fn from_quote(quote: &Quote) -> Self {
        quote
            .geographic
            .as_ref()
            .map_or_else(Self::default, |g| GeographicForm {
                country: g.country().as_str().to_owned(),
                region: g.region().as_str().to_owned(),
                city: g.city().as_str().to_owned(),
                postal_code: g.postal_code().as_str().to_owned(),
            })
    }

    fn parse(&self) -> Result<Action, FieldErrors> {
        GeographicDetails::parse(&self.country, &self.region, &self.city, &self.postal_code)
            .map(Action::ProvideGeographic)
    }

    fn render(self, c: FormContext) -> Response {
        GeographicPage {
            layout: c.layout,
            quote_id: c.quote_id,
            reference: c.reference,
            version: c.version,
            idempotency_key: c.idempotency_key,
            errors: c.errors,
            notice: c.notice,
            form: self,
            countries: COUNTRIES,
        }
        .into_response()
    }
}

#[derive(Debug, Default, Deserialize)]
struct ContactForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    phone: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "quoting/contact.html")]
struct ContactPage {
    layout: Layout,
    quote_id: Uuid,
    reference: String,
    version: i64,
    idempotency_key: String,
    errors: FieldErrors,
    notice: Option<&'static str>,
    form: ContactForm,
}

impl SectionForm for ContactForm {
    fn from_quote(quote: &Quote) -> Self {
        quote
            .contact
            .as_ref()
            .map_or_else(Self::default, |c| ContactForm {
                email: c.email().as_str().to_owned(),
                phone: c.phone().as_str().to_owned(),
            })
    }

    fn parse(&self) -> Result<Action, FieldErrors> {
        ContactDetails::parse(&self.email, &self.phone).map(Action::ProvideContact)
    }

    fn render(self, c: FormContext) -> Response {
        ContactPage {
            layout: c.layout,
            quote_id: c.quote_id,
            reference: c.reference,
            version: c.version,
            idempotency_key: c.idempotency_key,
            errors: c.errors,
            notice: c.notice,
            form: self,
        }
        .into_response()
    }
}

#[derive(Debug, Default, Deserialize)]
struct FamilyForm {
    #[serde(default)]
    dependents: String,
    #[serde(default)]
    spouse_name: String,
    #[serde(default)]
    children: Vec<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "quoting/family.html")]
struct FamilyPage {
    layout: Layout,
    quote_id: Uuid,
    reference: String,
    version: i64,
    idempotency_key: String,
    errors: FieldErrors,
    notice: Option<&'static str>,
    form: FamilyForm,
}

impl FamilyPage {
    /// The id of the n-th child's input, as `FamilyDetails::parse` names its errors.
    fn child_field(&self, index: &usize) -> String {
        format!("children-{index}")
    }
}

impl SectionForm for FamilyForm {
    fn from_quote(quote: &Quote) -> Self {
        quote.family.as_ref().map_or_else(
            || FamilyForm {
                children: vec![String::new()],
                ..Self::default()
            },
            |f| FamilyForm {
                dependents: f.dependents().to_string(),
                spouse_name: f
                    .spouse_name()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default(),
                children: f.children().iter().map(|c| c.as_str().to_owned()).collect(),
            },
        )
    }

    fn parse(&self) -> Result<Action, FieldErrors> {
        FamilyDetails::parse(&self.dependents, &self.spouse_name, &self.children)
            .map(Action::ProvideFamily)
    }

    fn render(mut self, c: FormContext) -> Response {
        if self.children.is_empty() {
            self.children.push(String::new());
        }
        FamilyPage {
            layout: c.layout,
            quote_id: c.quote_id,
            reference: c.reference,
            version: c.version,
            idempotency_key: c.idempotency_key,
            errors: c.errors,
            notice: c.notice,
            form: self,
        }
        .into_response()
    }
}

#[derive(Deserialize)]
struct Submitted<F> {
    #[serde(flatten)]
    meta: FormMeta,
    #[serde(flatten)]
    form: F,
}

async fn geographic_page(
    State(state): State<AppState>,
    Agent(user): Agent,
    QuoteId(id): QuoteId,
) -> Result<Response, AppError> {
    show_section::<GeographicForm>(&state, user, id).await
}

async fn save_geographic(
    State(state): State<AppState>,
    Agent(user): Agent,
    QuoteId(id): QuoteId,
    headers: HeaderMap,
    Form(submitted): Form<Submitted<GeographicForm>>,
) -> Result<Response, AppError> {
    save_section(&state, user, id, &headers, submitted.meta, submitted.form).await
}

async fn contact_page(
    State(state): State<AppState>,
    Agent(user): Agent,
    QuoteId(id): QuoteId,
) -> Result<Response, AppError> {
    show_section::<ContactForm>(&state, user, id).await
}

async fn save_contact(
    State(state): State<AppState>,
    Agent(user): Agent,
    QuoteId(id): QuoteId,
    headers: HeaderMap,
    Form(submitted): Form<Submitted<ContactForm>>,
) -> Result<Response, AppError> {
    save_section(&state, user, id, &headers, submitted.meta, submitted.form).await
}

async fn family_page(
    State(state): State<AppState>,
    Agent(user): Agent,
    QuoteId(id): QuoteId,
) -> Result<Response, AppError> {
    show_section::<FamilyForm>(&state, user, id).await
}

#[derive(Deserialize)]
struct FamilySubmitted {
    #[serde(default)]
    version: String,
    #[serde(default)]
    idempotency_key: String,
    #[serde(default)]
    dependents: String,
    #[serde(default)]
    spouse_name: String,
    #[serde(default)]
    children: Vec<String>,
    #[serde(default)]
    action: String,
}

/// "Add another child" and "Remove" redraw the page with one child more or fewer,
/// writing nothing; only "Save and continue" sends the command.
async fn save_family(
    State(state): State<AppState>,
    Agent(user): Agent,
    QuoteId(id): QuoteId,
    headers: HeaderMap,
    Form(submitted): Form<FamilySubmitted>,
) -> Result<Response, AppError> {
    let meta = FormMeta {
        version: submitted.version,
        idempotency_key: submitted.idempotency_key,
    };
    let mut form = FamilyForm {
        dependents: submitted.dependents,
        spouse_name: submitted.spouse_name,
        children: submitted.children,
    };
    let edit = match submitted.action.as_str() {
        "add-child" => {
            form.children.push(String::new());
            true
        }
        remove if remove.starts_with("remove-") => {
            let index: usize = remove["remove-".len()..]
                .parse()
                .map_err(|_| AppError::bad_request("That button is not one this page has."))?;
            if index < form.children.len() {
                form.children.remove(index);
            }
            true
        }
        _ => false,
    };
    if !edit {
        return save_section(&state, user, id, &headers, meta, form).await;
    }
    let version = meta.version()?;
    let quote = own_quote(&state, &user, id).await?;
    ensure_editable(&quote)?;
    Ok(form.render(FormContext {
        layout: user.layout(),
        quote_id: id,
        reference: quote.reference,
        version,
        idempotency_key: meta.idempotency_key,
        errors: FieldErrors::default(),
        notice: None,
    }))
}

// ----- Check your answers, submit, withdraw -------------------------------------

pub struct AnswerRow {
    pub label: &'static str,
    pub field: &'static str,
    pub value: String,
}

pub struct AnswerSection {
    pub slug: &'static str,
    pub title: &'static str,
    pub rows: Vec<AnswerRow>,
}

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

/// The quote's answers as label/value rows, for check-your-answers and for the
/// underwriter's read-only view.
pub fn answers_of(quote: &Quote) -> Vec<AnswerSection> {
    let row = |label, field, value: String| AnswerRow {
        label,
        field,
        value,
    };
    let not_given = || "Not given".to_owned();
    let applicant = quote
        .applicant_name
        .as_ref()
        .map(|n| n.to_string())
        .unwrap_or_else(not_given);
    let mut sections = vec![AnswerSection {
        slug: "",
        title: "Applicant",
        rows: vec![row("Applicant name", "applicant_name", applicant)],
    }];
    if let Some(g) = &quote.geographic {
        sections.push(AnswerSection {
            slug: "geographic",
            title: "Geographic details",
            rows: vec![
                row("Country", "country", g.country().name().to_owned()),
                row("State", "region", g.region().to_string()),
                row("City", "city", g.city().to_string()),
                row("Postal code", "postal_code", g.postal_code().to_string()),
            ],
        });
    }
    if let Some(c) = &quote.contact {
        sections.push(AnswerSection {
            slug: "contact",
            title: "Contact details",
            rows: vec![
                row("Email", "email", c.email().to_string()),
                row("Phone number", "phone", c.phone().to_string()),
            ],
        });
    }
    if let Some(f) = &quote.family {
        let children = f
            .children()
            .iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>();
        sections.push(AnswerSection {
            slug: "family",
            title: "Family details",
            rows: vec![
                row(
                    "Number of dependents",
                    "dependents",
                    f.dependents().to_string(),
                ),
                row(
                    "Spouse name",
                    "spouse_name",
                    f.spouse_name()
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "None".into()),
                ),
                row(
                    "Children",
                    "children-0",
                    if children.is_empty() {
                        "None".into()
                    } else {
                        children.join("\n")
                    },
                ),
            ],
        });
    }
    sections
}

async fn review_page(
    State(state): State<AppState>,
    Agent(user): Agent,
    QuoteId(id): QuoteId,
) -> Result<Response, AppError> {
    let quote = own_quote(&state, &user, id).await?;
    ensure_editable(&quote)?;
    if !quote.sections_complete() {
        return Ok(Redirect::to(&next_page(id, &quote)).into_response());
    }
    Ok(ReviewPage {
        layout: user.layout(),
        quote_id: id,
        reference: quote.reference.clone(),
        version: quote.version as i64,
        idempotency_key: new_key(),
        answers: answers_of(&quote)
            .into_iter()
            .filter(|s| !s.slug.is_empty())
            .collect(),
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
    if quote.status.is_none_or(Status::is_final) {
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
        applicant_name: quote
            .applicant_name
            .as_ref()
            .map(|n| n.to_string())
            .unwrap_or_default(),
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
        .await
        .map_err(into_app_error)?;
    Ok(Redirect::to(&format!("/quotes/{id}")).into_response())
}
