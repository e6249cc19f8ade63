//! Signing in and out, and the start page that sends each person to their own.

use askama::Template;
use askama_web::WebTemplate;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use serde::Deserialize;
use tower_sessions::Session;
use uuid::Uuid;

use super::csrf;
use super::current_user::{CurrentUser, anonymous_layout};
use super::sessions::{self, USER_ID};
use super::throttle::{wait_in_words, whole_seconds};
use super::users::{self, SignIn, UserCache};
use crate::kernel::Role;
use crate::state::AppState;
use crate::web::{AppError, Form, Layout};

const WRONG_CREDENTIALS: &str = "Enter a correct username and password";

#[derive(Template, WebTemplate)]
#[template(path = "identity/login.html")]
struct SignInPage {
    layout: Layout,
    username: String,
    errors: Vec<(&'static str, &'static str)>,
}

impl SignInPage {
    fn error_for(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|(f, _)| *f == field)
            .map(|(_, message)| *message)
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "identity/locked.html")]
struct LockedPage {
    layout: Layout,
    wait: String,
    until: String,
}

/// The sign-in address visited while signed in: say so, and offer the way on or out
/// (the header's sign-out form), rather than a second sign-in over the first.
#[derive(Template, WebTemplate)]
#[template(path = "identity/signed_in.html")]
struct SignedInPage {
    layout: Layout,
    username: String,
    home: &'static str,
}

#[derive(Template, WebTemplate)]
#[template(path = "identity/admin.html")]
struct AdminPage {
    layout: Layout,
}

/// `GET /`: each person's own start page, or the sign-in page.
pub async fn start(user: Option<CurrentUser>) -> Result<Response, AppError> {
    let Some(user) = user else {
        return Ok(Redirect::to("/login").into_response());
    };
    match user.home() {
        "/" if user.has_role(Role::Admin) => Ok(AdminPage {
            layout: user.layout(),
        }
        .into_response()),
        "/" => Err(AppError::forbidden(
            "Your account has no role yet. Ask an administrator to give you one.",
        )),
        home => Ok(Redirect::to(home).into_response()),
    }
}

/// `GET /login`
pub async fn sign_in_page(
    user: Option<CurrentUser>,
    session: Session,
) -> Result<Response, AppError> {
    if let Some(user) = user {
        return Ok(SignedInPage {
            layout: user.layout(),
            home: user.home(),
            username: user.username,
        }
        .into_response());
    }
    Ok(SignInPage {
        layout: anonymous_layout(&session).await?,
        username: String::new(),
        errors: vec![],
    }
    .into_response())
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// `POST /login`
#[tracing::instrument(skip_all, fields(username = %form.username.trim()))]
pub async fn sign_in(
    State(state): State<AppState>,
    session: Session,
    Form(form): Form<SignInForm>,
) -> Result<Response, AppError> {
    let username = form.username.trim().to_owned();
    let mut errors = vec![];
    if username.is_empty() {
        errors.push(("username", "Enter your username"));
    }
    if form.password.is_empty() {
        errors.push(("password", "Enter your password"));
    }
    if !errors.is_empty() {
        return retry(&session, StatusCode::UNPROCESSABLE_ENTITY, username, errors).await;
    }

    let now = Utc::now();
    match users::authenticate(&state.db, &username, &form.password, now).await? {
        SignIn::SignedIn(user) => {
            // A new session id at the change of privilege: an id planted before
            // sign-in (session fixation) is worth nothing after it.
            session.cycle_id().await.map_err(internal)?;
            session.insert(USER_ID, user.id).await.map_err(internal)?;
            csrf::renew_token(&session).await.map_err(internal)?;
            sessions::renew(&session, now.timestamp())
                .await
                .map_err(internal)?;
            tracing::info!(user_id = %user.id, "signed in");
            let home = super::current_user::home_of(&user.roles);
            // Just read: the first pages after sign-in need not read the user again.
            UserCache::shared().put(user).await;
            Ok(Redirect::to(home).into_response())
        }
        SignIn::Refused => {
            let errors = vec![("username", WRONG_CREDENTIALS)];
            retry(&session, StatusCode::UNAUTHORIZED, username, errors).await
        }
        SignIn::Locked { until } => {
            let wait = until - now;
            let page = LockedPage {
                layout: anonymous_layout(&session).await?,
                wait: wait_in_words(wait),
                until: until.format("%H:%M:%S UTC").to_string(),
            };
            let mut response = (StatusCode::TOO_MANY_REQUESTS, page).into_response();
            let seconds = whole_seconds(wait).to_string();
            if let Ok(value) = HeaderValue::from_str(&seconds) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            Ok(response)
        }
    }
}

/// The sign-in form again, with what was typed (never the password) and why.
async fn retry(
    session: &Session,
    status: StatusCode,
    username: String,
    errors: Vec<(&'static str, &'static str)>,
) -> Result<Response, AppError> {
    let page = SignInPage {
        layout: anonymous_layout(session).await?,
        username,
        errors,
    };
    Ok((status, page).into_response())
}

/// `POST /logout`: ends the session in the store, not only in the browser, and drops
/// the user from this process's cache (signing in again reads their roles afresh).
pub async fn sign_out(session: Session) -> Result<Redirect, AppError> {
    let user_id: Option<Uuid> = session.get(USER_ID).await.map_err(internal)?;
    session.flush().await.map_err(internal)?;
    if let Some(id) = user_id {
        UserCache::shared().forget(id).await;
    }
    Ok(Redirect::to("/login"))
}

fn internal(error: impl Into<anyhow::Error>) -> AppError {
    AppError::Internal(error.into())
}
