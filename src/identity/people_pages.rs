//! The people pages: admins list, add, change the roles of, deactivate, reactivate
//! and reset the password of the people who can sign in, each change behind a
//! confirm step; admins and auditors read a person's record, every change to it,
//! and which roles they held at any moment.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::current_user::{Admin, AdminOrAuditor, CurrentUser};
use super::people::{self, PeopleError};
use super::person::{Person, PersonEvent, in_order, role_changes, roles_phrase};
use super::users::{AddUserError, MAX_USERNAME_CHARS, add_person, is_valid_username};
use super::{UserCache, password};
use crate::kernel::Role;
use crate::state::AppState;
use crate::web::{AppError, FieldErrors, Form, FormMeta, Layout, new_key};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/people", get(list))
        .route("/people/new", get(new_form).post(add))
        .route("/people/{id}", get(record))
        .route("/people/{id}/roles", get(roles_form).post(change_roles))
        .route("/people/{id}/{step}", get(confirm_step).post(make_step))
}

/// A role offered on a form, and whether it is ticked.
pub struct RoleChoice {
    pub role: Role,
    pub checked: bool,
}

fn choices(chosen: &[Role]) -> Vec<RoleChoice> {
    Role::ALL
        .into_iter()
        .map(|role| RoleChoice {
            role,
            checked: chosen.contains(&role),
        })
        .collect()
}

// ----- The list --------------------------------------------------------------------

pub struct Row {
    pub person: Person,
    pub roles: String,
    pub last_sign_in: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "identity/people/list.html")]
struct ListPage {
    layout: Layout,
    rows: Vec<Row>,
    /// Admins change people; auditors read their records.
    is_admin: bool,
}

async fn list(
    State(state): State<AppState>,
    AdminOrAuditor(user): AdminOrAuditor,
) -> Result<ListPage, AppError> {
    let rows = people::directory(&state.db)
        .await
        .map_err(internal)?
        .into_iter()
        .map(|(person, last)| Row {
            roles: roles_phrase(&person.roles),
            last_sign_in: last.map_or_else(|| "Never".to_owned(), when),
            person,
        })
        .collect();
    Ok(ListPage {
        is_admin: user.has_role(Role::Admin),
        layout: user.layout(),
        rows,
    })
}

fn when(at: DateTime<Utc>) -> String {
    at.format("%-d %b %Y %H:%M:%S UTC").to_string()
}

// ----- Adding a person ----------------------------------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "identity/people/new.html")]
struct NewPage {
    layout: Layout,
    errors: FieldErrors,
    username: String,
    choices: Vec<RoleChoice>,
    idempotency_key: String,
}

async fn new_form(Admin(user): Admin) -> NewPage {
    NewPage {
        layout: user.layout(),
        errors: FieldErrors::default(),
        username: String::new(),
        choices: choices(&[]),
        idempotency_key: new_key(),
    }
}

/// The add and change-roles forms: the roles ticked, and whether this is the
/// confirm step's "yes".
#[derive(Deserialize)]
struct PersonForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    confirmed: Option<String>,
    #[serde(flatten)]
    meta: FormMeta,
}

impl PersonForm {
    /// The roles ticked; a value that is no role is an error on the field.
    fn roles(&self, errors: &mut FieldErrors) -> Vec<Role> {
        let mut roles = Vec::new();
        for name in &self.roles {
            match name.parse() {
                Ok(role) => roles.push(role),
                Err(_) => errors.push("roles", "Choose roles from the list"),
            }
        }
        if roles.is_empty() && errors.message_for("roles").is_none() {
            errors.push("roles", "Choose at least one role");
        }
        in_order(&roles)
    }

    fn confirmed(&self) -> bool {
        self.confirmed.as_deref() == Some("yes")
    }
}

/// A confirm step: what will happen, and the form that makes it happen.
#[derive(Template, WebTemplate)]
#[template(path = "identity/people/confirm.html")]
struct ConfirmPage {
    layout: Layout,
    caption: String,
    heading: String,
    lines: Vec<String>,
    action: String,
    hidden: Vec<(&'static str, String)>,
    button: &'static str,
    warning: bool,
    back: String,
}

/// A password shown once.
#[derive(Template)]
#[template(path = "identity/people/one_time.html")]
struct OneTimePage {
    layout: Layout,
    heading: String,
    username: String,
    person_id: Uuid,
    password: String,
}

impl IntoResponse for OneTimePage {
    fn into_response(self) -> Response {
        match self.render() {
            // Never kept by the browser or a proxy: shown once means once.
            Ok(html) => (
                [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
                Html(html),
            )
                .into_response(),
            Err(error) => AppError::Internal(error.into()).into_response(),
        }
    }
}

async fn add(
    State(state): State<AppState>,
    Admin(user): Admin,
    headers: HeaderMap,
    Form(form): Form<PersonForm>,
) -> Result<Response, AppError> {
    let username = form.username.trim().to_owned();
    let mut errors = FieldErrors::default();
    if username.is_empty() {
        errors.push("username", "Enter a username");
    } else if !is_valid_username(&username) {
        errors.push(
            "username",
            format!(
                "Use 1 to {MAX_USERNAME_CHARS} letters, digits, dots, dashes, underscores or @"
            ),
        );
    }
    let roles = form.roles(&mut errors);
    let refuse = |errors: FieldErrors| {
        let page = NewPage {
            layout: user.layout(),
            errors,
            username: username.clone(),
            choices: choices(&roles),
            idempotency_key: form.meta.idempotency_key.clone(),
        };
        Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
    };
    if errors.is_empty()
        && super::projection::person_named(&state.db, &username)
            .await
            .map_err(internal)?
            .is_some()
    {
        errors.push(
            "username",
            format!("{username} is taken: choose another name"),
        );
    }
    if !errors.is_empty() {
        return refuse(errors);
    }
    if !form.confirmed() {
        let mut hidden = vec![("username", username.clone())];
        hidden.extend(roles.iter().map(|r| ("roles", r.as_str().to_owned())));
        return Ok(ConfirmPage {
            layout: user.layout(),
            caption: "Add a person".to_owned(),
            heading: format!("Add {username} as {}?", roles_phrase(&roles)),
            lines: vec![
                "They get a one-time password, shown to you once on the next page. \
                 At their first sign-in they must choose their own."
                    .to_owned(),
            ],
            action: "/people/new".to_owned(),
            hidden: with_meta(hidden, "0", &form.meta.idempotency_key),
            button: "Add this person",
            warning: false,
            back: "/people/new".to_owned(),
        }
        .into_response());
    }
    let password = one_time_password();
    let by = user.changed_by(&form.meta.envelope(&headers));
    match add_person(&state.store, &by, &username, &password, &roles, true).await {
        Ok(added) => Ok(OneTimePage {
            layout: user.layout(),
            heading: format!("{} was added", added.username),
            username: added.username,
            person_id: added.id,
            password,
        }
        .into_response()),
        Err(AddUserError::Duplicate(_)) => {
            let mut errors = FieldErrors::default();
            errors.push(
                "username",
                format!("{username} is taken: choose another name"),
            );
            refuse(errors)
        }
        Err(AddUserError::Other(error)) => Err(AppError::Internal(error)),
        Err(other) => Err(AppError::bad_request(other.to_string())),
    }
}

/// The hidden fields of a confirm step, with the form's version and key.
fn with_meta(
    mut hidden: Vec<(&'static str, String)>,
    version: &str,
    key: &str,
) -> Vec<(&'static str, String)> {
    hidden.push(("version", version.to_owned()));
    hidden.push(("idempotency_key", key.to_owned()));
    hidden.push(("confirmed", "yes".to_owned()));
    hidden
}

/// A one-time password: sixteen characters to read out and type.
fn one_time_password() -> String {
    password::generate(16)
}

// ----- A person's record -----------------------------------------------------------

pub struct Entry {
    pub version: i64,
    pub at: String,
    pub actor: String,
    pub what: String,
    pub roles: String,
    pub active: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "identity/people/person.html")]
struct PersonPage {
    layout: Layout,
    person: Person,
    roles: String,
    added_at: String,
    entries: Vec<Entry>,
    /// "At 3 Dec 2026 10:04 UTC, uma held: underwriter".
    then: Option<(String, String)>,
    is_admin: bool,
    is_self: bool,
}

#[derive(Deserialize)]
struct AtQuery {
    at: Option<String>,
}

async fn record(
    State(state): State<AppState>,
    AdminOrAuditor(user): AdminOrAuditor,
    Path(id): Path<String>,
    Query(query): Query<AtQuery>,
) -> Result<Response, AppError> {
    let id = person_id(&id)?;
    let record = people::record(&state.store, id).await.map_err(refused)?;
    let at = match query.at.as_deref().filter(|at| !at.is_empty()) {
        None => None,
        Some(text) => Some(
            DateTime::parse_from_rfc3339(text)
                .map_err(|_| {
                    AppError::bad_request("The time to look at must be like 2026-12-06T10:04:00Z.")
                })?
                .with_timezone(&Utc),
        ),
    };
    let then = at.map(|at| {
        let held = match record.as_at(at) {
            Some(p) if p.active => roles_phrase(&p.roles),
            Some(_) => "no role: they were deactivated".to_owned(),
            None => "no role: they had not been added yet".to_owned(),
        };
        (when(at), held)
    });
    let mut entries = Vec::new();
    let mut after: Option<Person> = None;
    for (recorded, event) in &record.events {
        after = Person::evolve(after, recorded, event);
        entries.push(Entry {
            version: recorded.version,
            at: when(recorded.recorded_at),
            actor: recorded.actor.clone(),
            what: event.describe(),
            roles: after
                .as_ref()
                .map_or_else(String::new, |p| roles_phrase(&p.roles)),
            active: after.as_ref().is_some_and(|p| p.active),
        });
    }
    entries.reverse();
    let person = record.person;
    Ok(PersonPage {
        layout: user.layout(),
        roles: roles_phrase(&person.roles),
        added_at: when(person.created_at),
        entries,
        then,
        is_admin: user.has_role(Role::Admin),
        is_self: user.id == person.id,
        person,
    }
    .into_response())
}

fn person_id(text: &str) -> Result<Uuid, AppError> {
    Uuid::parse_str(text).map_err(|_| AppError::not_found())
}

fn found(outcome: Result<Person, PeopleError>) -> Result<Person, AppError> {
    outcome.map_err(refused)
}

/// A change the rules or the store refused, as a page.
fn refused(error: PeopleError) -> AppError {
    match error {
        PeopleError::NotFound => AppError::not_found(),
        PeopleError::Stale { username } => AppError::conflict(
            "This record changed since you opened the page",
            format!(
                "Someone else changed {username}'s record meanwhile. Go back to their page \
                 to see it as it is now, then try again."
            ),
        ),
        PeopleError::Refused(why) => AppError::conflict("This change cannot be made", why),
        PeopleError::Duplicate(name) => {
            AppError::conflict("This name is taken", format!("{name} exists already."))
        }
        PeopleError::Other(error) => AppError::Internal(error),
    }
}

// ----- Roles ------------------------------------------------------------------------

#[derive(Template, WebTemplate)]
#[template(path = "identity/people/roles.html")]
struct RolesPage {
    layout: Layout,
    errors: FieldErrors,
    person: Person,
    choices: Vec<RoleChoice>,
    version: i64,
    idempotency_key: String,
}

async fn roles_form(
    State(state): State<AppState>,
    Admin(user): Admin,
    Path(id): Path<String>,
) -> Result<RolesPage, AppError> {
    let person = found(people::find(&state.db, person_id(&id)?).await)?;
    Ok(RolesPage {
        layout: user.layout(),
        errors: FieldErrors::default(),
        choices: choices(&person.roles),
        version: person.version,
        idempotency_key: new_key(),
        person,
    })
}

async fn change_roles(
    State(state): State<AppState>,
    Admin(user): Admin,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<PersonForm>,
) -> Result<Response, AppError> {
    let id = person_id(&id)?;
    let version = form.meta.version()?;
    let person = found(people::find(&state.db, id).await)?;
    let mut errors = FieldErrors::default();
    let roles = form.roles(&mut errors);
    if errors.is_empty() {
        if user.id == id && person.roles.contains(&Role::Admin) && !roles.contains(&Role::Admin) {
            errors.push(
                "roles",
                "You cannot take away your own admin role: ask another admin",
            );
        } else if role_changes(&person.roles, &roles).is_empty() {
            if form.confirmed() {
                // Sent again after it was made (or someone made it meanwhile): what
                // was asked for holds.
                return Ok(Redirect::to(&format!("/people/{id}")).into_response());
            }
            errors.push(
                "roles",
                format!("{} already holds exactly these roles", person.username),
            );
        }
    }
    if !errors.is_empty() {
        let page = RolesPage {
            layout: user.layout(),
            errors,
            choices: choices(&roles),
            version,
            idempotency_key: form.meta.idempotency_key.clone(),
            person,
        };
        return Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response());
    }
    if !form.confirmed() {
        let lines = role_changes(&person.roles, &roles)
            .iter()
            .map(PersonEvent::describe)
            .chain([format!(
                "Their roles will be: {}. The change holds from their next page.",
                roles_phrase(&roles)
            )])
            .collect();
        let hidden = roles.iter().map(|r| ("roles", r.as_str().to_owned()));
        return Ok(ConfirmPage {
            layout: user.layout(),
            caption: person.username.clone(),
            heading: format!("Change {}'s roles?", person.username),
            lines,
            action: format!("/people/{id}/roles"),
            hidden: with_meta(
                hidden.collect(),
                &version.to_string(),
                &form.meta.idempotency_key,
            ),
            button: "Change roles",
            warning: false,
            back: format!("/people/{id}/roles"),
        }
        .into_response());
    }
    let by = user.changed_by(&form.meta.envelope(&headers));
    people::set_roles(&state.store, &by, id, version, &roles)
        .await
        .map_err(refused)?;
    Ok(Redirect::to(&format!("/people/{id}")).into_response())
}

// ----- Deactivate, reactivate, reset ------------------------------------------------

/// What each of the three one-button changes says and does.
#[derive(Clone, Copy)]
enum Step {
    Deactivate,
    Reactivate,
    Reset,
}

impl Step {
    fn path(self) -> &'static str {
        match self {
            Step::Deactivate => "deactivate",
            Step::Reactivate => "reactivate",
            Step::Reset => "reset",
        }
    }

    /// Why the change cannot be offered now, if it cannot.
    fn refusal(self, user: &CurrentUser, person: &Person) -> Option<String> {
        match self {
            Step::Deactivate => people::deactivation_refused(Some(user.id), person),
            Step::Reactivate => people::reactivation_refused(person),
            Step::Reset => people::reset_refused(person),
        }
    }

    fn confirm(self, user: &CurrentUser, person: &Person) -> ConfirmPage {
        let name = &person.username;
        let (heading, lines, button, warning) = match self {
            Step::Deactivate => (
                format!("Deactivate {name}?"),
                vec![
                    format!("{name} is signed out everywhere at once and cannot sign in."),
                    "Their record and everything they did are kept; you can reactivate them later."
                        .to_owned(),
                ],
                "Deactivate",
                true,
            ),
            Step::Reactivate => (
                format!("Reactivate {name}?"),
                vec![format!(
                    "{name} can sign in again, with their password and roles as they were ({}).",
                    roles_phrase(&person.roles)
                )],
                "Reactivate",
                false,
            ),
            Step::Reset => (
                format!("Reset {name}'s password?"),
                vec![
                    format!("{name} is signed out everywhere and their password stops working."),
                    "You get a one-time password to give them, shown once; they must choose \
                     their own at their next sign-in."
                        .to_owned(),
                ],
                "Reset password",
                true,
            ),
        };
        ConfirmPage {
            layout: user.layout(),
            caption: name.clone(),
            heading,
            lines,
            action: format!("/people/{}/{}", person.id, self.path()),
            hidden: with_meta(Vec::new(), &person.version.to_string(), &new_key()),
            button,
            warning,
            back: format!("/people/{}", person.id),
        }
    }

    async fn show(
        self,
        state: &AppState,
        user: CurrentUser,
        id: &str,
    ) -> Result<Response, AppError> {
        let person = found(people::find(&state.db, person_id(id)?).await)?;
        if let Some(why) = self.refusal(&user, &person) {
            return Err(AppError::conflict("This change cannot be made", why));
        }
        Ok(self.confirm(&user, &person).into_response())
    }

    async fn make(
        self,
        state: &AppState,
        user: CurrentUser,
        id: &str,
        headers: &HeaderMap,
        meta: FormMeta,
    ) -> Result<Response, AppError> {
        let id = person_id(id)?;
        let version = meta.version()?;
        let by = user.changed_by(&meta.envelope(headers));
        let store = &state.store;
        match self {
            Step::Deactivate => {
                people::deactivate(store, &by, id, version)
                    .await
                    .map_err(refused)?;
            }
            Step::Reactivate => {
                people::reactivate(store, &by, id, version)
                    .await
                    .map_err(refused)?;
            }
            Step::Reset => {
                let password = one_time_password();
                let hash = password::hash(&password).await.map_err(internal)?;
                let (person, made) = people::reset_password(store, &by, id, version, hash, true)
                    .await
                    .map_err(refused)?;
                if !made {
                    return Err(AppError::conflict(
                        "This password was reset already",
                        "The form was sent twice; the password given the first time stands. \
                         If it is lost, reset it again from their page.",
                    ));
                }
                return Ok(OneTimePage {
                    layout: user.layout(),
                    heading: format!("{}'s password was reset", person.username),
                    username: person.username,
                    person_id: person.id,
                    password,
                }
                .into_response());
            }
        }
        UserCache::shared().forget(id).await;
        Ok(Redirect::to(&format!("/people/{id}")).into_response())
    }
}

impl std::str::FromStr for Step {
    type Err = AppError;

    fn from_str(path: &str) -> Result<Self, AppError> {
        [Step::Deactivate, Step::Reactivate, Step::Reset]
            .into_iter()
            .find(|step| step.path() == path)
            .ok_or_else(AppError::not_found)
    }
}

/// `GET /people/{id}/{deactivate,reactivate,reset}`: the confirm step.
async fn confirm_step(
    State(state): State<AppState>,
    Admin(user): Admin,
    Path((id, step)): Path<(String, String)>,
) -> Result<Response, AppError> {
    step.parse::<Step>()?.show(&state, user, &id).await
}

/// `POST /people/{id}/{deactivate,reactivate,reset}`: the change.
async fn make_step(
    State(state): State<AppState>,
    Admin(user): Admin,
    Path((id, step)): Path<(String, String)>,
    headers: HeaderMap,
    Form(meta): Form<FormMeta>,
) -> Result<Response, AppError> {
    step.parse::<Step>()?
        .make(&state, user, &id, &headers, meta)
        .await
}

fn internal(error: impl Into<anyhow::Error>) -> AppError {
    AppError::Internal(error.into())
}
