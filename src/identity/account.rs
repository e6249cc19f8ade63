//! A signed-in person's own account: changing their password. The current password
//! proves it is them; the new one must be long enough and hard to guess (zxcvbn's
//! estimate, its advice shown); once changed, every other session of theirs ends.

use askama::Template;
use askama_web::WebTemplate;
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use serde::Deserialize;
use tower_sessions::Session;

use super::current_user::CurrentUser;
use super::password::{SIGN_IN_WAIT, weakness};
use super::sessions::SESSION_EPOCH;
use super::users::{self, ChangePasswordError};
use crate::state::AppState;
use crate::web::{AppError, FieldErrors, Form, Layout};

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/account/password",
            get(password_page).post(change_password),
        )
        .route("/account/password/changed", get(changed_page))
}

#[derive(Template, WebTemplate)]
#[template(path = "identity/password.html")]
struct PasswordPage {
    layout: Layout,
    errors: FieldErrors,
    /// Signed in with a one-time password: this page comes before any other.
    must_change: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "identity/password_changed.html")]
struct ChangedPage {
    layout: Layout,
    home: &'static str,
}

async fn password_page(user: CurrentUser) -> PasswordPage {
    PasswordPage {
        layout: user.layout(),
        errors: FieldErrors::default(),
        must_change: user.must_change_password,
    }
}

async fn changed_page(user: CurrentUser) -> ChangedPage {
    ChangedPage {
        layout: user.layout(),
        home: user.home(),
    }
}

/// The form; passwords are never drawn back into it.
#[derive(Deserialize)]
struct PasswordForm {
    #[serde(default)]
    current_password: String,
    #[serde(default)]
    new_password: String,
    #[serde(default)]
    confirm_password: String,
}

impl PasswordForm {
    /// What is wrong with the new password before the current one is checked.
    fn errors(&self, username: &str) -> FieldErrors {
        let mut errors = FieldErrors::default();
        if self.current_password.is_empty() {
            errors.push("current_password", "Enter your current password");
        }
        if self.new_password.is_empty() {
            errors.push("new_password", "Enter a new password");
        } else if self.new_password == self.current_password {
            errors.push(
                "new_password",
                "Choose a new password that is not your current one",
            );
        } else if let Some(why) = weakness(&self.new_password, &[username, "quoteline"]) {
            errors.push("new_password", why);
        } else if self.confirm_password != self.new_password {
            errors.push(
                "confirm_password",
                "Enter the same new password again to confirm it",
            );
        }
        errors
    }
}

async fn change_password(
    State(state): State<AppState>,
    user: CurrentUser,
    session: Session,
    Form(form): Form<PasswordForm>,
) -> Result<Response, AppError> {
    let refuse = |errors: FieldErrors| {
        let page = PasswordPage {
            layout: user.layout(),
            errors,
            must_change: user.must_change_password,
        };
        Ok((StatusCode::UNPROCESSABLE_ENTITY, page).into_response())
    };
    let errors = form.errors(&user.username);
    if !errors.is_empty() {
        return refuse(errors);
    }
    match users::change_password(
        &state.store,
        user.id,
        &form.current_password,
        &form.new_password,
    )
    .await
    {
        Ok(changed) => {
            // This session goes on, under a new id and the new epoch.
            session.cycle_id().await.map_err(internal)?;
            session
                .insert(SESSION_EPOCH, changed.session_epoch)
                .await
                .map_err(internal)?;
            Ok(Redirect::to("/account/password/changed").into_response())
        }
        Err(ChangePasswordError::WrongPassword) => {
            tracing::info!(user_id = %user.id, "password not changed: the current one was wrong");
            let mut errors = FieldErrors::default();
            errors.push("current_password", "Your current password is not right");
            refuse(errors)
        }
        Err(ChangePasswordError::Gone) => Err(AppError::not_found()),
        Err(ChangePasswordError::Busy(_)) => {
            let mut response =
                AppError::for_status(StatusCode::SERVICE_UNAVAILABLE).into_response();
            response.headers_mut().insert(
                header::RETRY_AFTER,
                HeaderValue::from(SIGN_IN_WAIT.as_secs()),
            );
            Ok(response)
        }
        Err(ChangePasswordError::Other(e)) => Err(AppError::Internal(e)),
    }
}

fn internal(error: impl Into<anyhow::Error>) -> AppError {
    AppError::Internal(error.into())
}
