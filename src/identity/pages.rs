//! Signing in and out, and the start page that sends each person to their own.

use askama::Template;
use askama_web::WebTemplate;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use chrono::{TimeDelta, Utc};
use serde::Deserialize;
use tower_sessions::Session;
use uuid::Uuid;

use super::accounts::UserCache;
use super::client::ClientAddress;
use super::csrf;
use super::current_user::CurrentUser;
use super::password::SIGN_IN_WAIT;
use super::sessions::{self, SESSION_EPOCH, USER_ID};
use super::signed_out::SignedOutForm;
use super::throttle::{wait_in_words, whole_seconds};
use super::users::{self, MAX_USERNAME_CHARS, SignIn};
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

/// `GET /`: each person's own start page, or the sign-in page.
pub async fn start(user: Option<CurrentUser>) -> Result<Response, AppError> {
    let Some(user) = user else {
        return Ok(Redirect::to("/login").into_response());
    };
    match user.home() {
        "/" => Err(AppError::forbidden(
            "Your account has no role yet. Ask an administrator to give you one.",
        )),
        home => Ok(Redirect::to(home).into_response()),
    }
}

/// Where a request comes from, by the application's rule (`SignInLimits`). Here, not
/// beside the type: the state holds the limits, so their file cannot import it.
impl FromRequestParts<AppState> for ClientAddress {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(peer)| peer.ip());
        Ok(state.sign_ins.client_address(peer, &parts.headers))
    }
}

/// `GET /login`. A signed-out visitor gets the form and, the first time, the cookie
/// its token is signed for; no session.
pub async fn sign_in_page(
    user: Option<CurrentUser>,
    form: SignedOutForm,
) -> Result<Response, AppError> {
    if let Some(user) = user {
        return Ok(SignedInPage {
            layout: user.layout(),
            home: user.home(),
            username: user.username,
        }
        .into_response());
    }
    Ok(form.respond(SignInPage {
        layout: form.layout(),
        username: String::new(),
        errors: vec![],
    }))
}

#[derive(Deserialize)]
pub struct SignInForm {
    #[serde(default)]
    username: String,
    #[serde(default)]
    password: String,
}

/// `POST /login`. Each failure is logged with the address and the name as typed
/// (escaped, so a name cannot write a line of its own into the log).
#[tracing::instrument(skip_all, fields(%address))]
pub async fn sign_in(
    State(state): State<AppState>,
    address: ClientAddress,
    session: Session,
    signed_out: SignedOutForm,
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
        return Ok(retry(
            &signed_out,
            StatusCode::UNPROCESSABLE_ENTITY,
            username,
            errors,
        ));
    }

    if let Err(wait) = state.sign_ins.take(&address).await {
        tracing::info!(username = ?username, "sign-in refused: too many failures from this address");
        return Ok(too_many(
            &signed_out,
            TimeDelta::from_std(wait).unwrap_or(TimeDelta::MAX),
        ));
    }
    if username.chars().count() > MAX_USERNAME_CHARS {
        // No such name can exist, and everyone may know that: nothing to check.
        tracing::info!(username = ?username, "sign-in refused: no such username");
        let errors = vec![("username", WRONG_CREDENTIALS)];
        return Ok(retry(
            &signed_out,
            StatusCode::UNAUTHORIZED,
            username,
            errors,
        ));
    }

    let now = Utc::now();
    match users::authenticate(&state.db, &username, &form.password, &address, now).await? {
        SignIn::SignedIn(user) => {
            state.sign_ins.give_back(&address).await;
            // A new session id at the change of privilege: an id planted before
            // sign-in (session fixation) is worth nothing after it.
            session.cycle_id().await.map_err(internal)?;
            session.insert(USER_ID, user.id).await.map_err(internal)?;
            session
                .insert(SESSION_EPOCH, user.session_epoch)
                .await
                .map_err(internal)?;
            csrf::renew_token(&session).await.map_err(internal)?;
            sessions::renew(&session, now.timestamp())
                .await
                .map_err(internal)?;
            tracing::info!(user_id = %user.id, "signed in");
            let home = if user.must_change_password {
                super::current_user::PASSWORD_PAGE
            } else {
                super::current_user::home_of(&user.roles)
            };
            // Just read: the first pages after sign-in need not read the user again.
            UserCache::shared().put(user).await;
            Ok(Redirect::to(home).into_response())
        }
        SignIn::Refused => {
            tracing::info!(username = ?username, "sign-in refused: wrong username or password");
            let errors = vec![("username", WRONG_CREDENTIALS)];
            Ok(retry(
                &signed_out,
                StatusCode::UNAUTHORIZED,
                username,
                errors,
            ))
        }
        SignIn::Locked { until } => {
            tracing::info!(username = ?username, %until, "sign-in refused: too many attempts at this name from this address");
            Ok(too_many(&signed_out, until - now))
        }
        SignIn::Busy => {
            // Nothing was checked: the attempt is not the address's to pay for.
            state.sign_ins.give_back(&address).await;
            tracing::warn!(username = ?username, "sign-in refused: every password-hashing thread is busy");
            let mut response =
                AppError::for_status(StatusCode::SERVICE_UNAVAILABLE).into_response();
            response.headers_mut().insert(
                header::RETRY_AFTER,
                retry_after(SIGN_IN_WAIT.as_secs() as i64),
            );
            Ok(response)
        }
    }
}

/// The sign-in form again, with what was typed (never the password) and why.
fn retry(
    signed_out: &SignedOutForm,
    status: StatusCode,
    username: String,
    errors: Vec<(&'static str, &'static str)>,
) -> Response {
    let page = SignInPage {
        layout: signed_out.layout(),
        username,
        errors,
    };
    signed_out.respond((status, page))
}

/// 429: wait this long before the next attempt from here.
fn too_many(signed_out: &SignedOutForm, wait: TimeDelta) -> Response {
    let until = Utc::now() + wait;
    let page = LockedPage {
        layout: signed_out.layout(),
        wait: wait_in_words(wait),
        until: until.format("%H:%M:%S UTC").to_string(),
    };
    let mut response = signed_out.respond((StatusCode::TOO_MANY_REQUESTS, page));
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, retry_after(whole_seconds(wait)));
    response
}

fn retry_after(seconds: i64) -> HeaderValue {
    HeaderValue::from(seconds.max(1))
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
