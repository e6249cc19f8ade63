//! The web layer's one error type. Every failure becomes an HTML page with a fitting
//! status and a sentence a person understands; causes of server errors go to the
//! log, never to the page.

use askama::Template;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};

use super::Layout;
use crate::eventstore::ReadError;
use crate::quoting::CommandError;
use crate::quoting::domain::DomainError;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// A request we refuse, with what to tell the person.
    #[error("{status}: {message}")]
    Refused {
        status: StatusCode,
        heading: String,
        message: String,
    },
    /// Something broke on our side.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl AppError {
    pub fn refused(
        status: StatusCode,
        heading: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        AppError::Refused {
            status,
            heading: heading.into(),
            message: message.into(),
        }
    }

    pub fn not_found() -> Self {
        Self::for_status(StatusCode::NOT_FOUND)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::refused(StatusCode::FORBIDDEN, "You cannot do that", message)
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::refused(
            StatusCode::BAD_REQUEST,
            "Something was wrong with that request",
            message,
        )
    }

    pub fn conflict(heading: impl Into<String>, message: impl Into<String>) -> Self {
        Self::refused(StatusCode::CONFLICT, heading, message)
    }

    /// The page for a bare status, used for failures that happen before a handler
    /// runs (body too large, a malformed form, a timeout, an unknown address).
    pub fn for_status(status: StatusCode) -> Self {
        let (heading, message) = match status.as_u16() {
            400 => (
                "Something was wrong with that request",
                "The page could not read what was sent. Go back and try again.",
            ),
            403 => (
                "You cannot do that",
                "This request was refused. If you followed a link from another site, go back to quoteline and try again from there.",
            ),
            404 => (
                "Page not found",
                "There is nothing at this address. If you typed it, check it is correct.",
            ),
            405 => (
                "That action is not available here",
                "This page cannot be used that way.",
            ),
            408 | 503 => (
                "Sorry, that took too long",
                "The service is busy. Try again in a moment; nothing was lost.",
            ),
            413 => (
                "That was too much to send",
                "What you sent is larger than this service accepts. Shorten it and try again.",
            ),
            415 | 422 => (
                "Something was wrong with that form",
                "The form could not be read. Go back, check your answers and try again.",
            ),
            429 => ("Too many attempts", "Wait a minute before trying again."),
            _ if status.is_server_error() => (
                "Sorry, there is a problem with the service",
                "Try again later. Nothing you sent was half-written.",
            ),
            _ => ("Something went wrong", "Go back and try again."),
        };
        Self::refused(status, heading, message)
    }
}

/// The heading of the page (or of the notice on a form) that says the quote moved
/// on since the page was drawn.
pub const STALE_HEADING: &str = "This quote changed while you were editing";

/// A command that led to no events, as a page; handlers use `?`.
impl From<CommandError> for AppError {
    fn from(error: CommandError) -> Self {
        match error {
            CommandError::Rejected(rule) => rule.into(),
            CommandError::Stale { .. } => AppError::conflict(
                STALE_HEADING,
                "Someone else changed this quote after you opened the page. Nothing you sent was saved. Go back to the quote to see it as it is now.",
            ),
            CommandError::Corrupt(e) => AppError::Internal(e.into()),
            CommandError::Store(e) => AppError::Internal(e.into()),
            CommandError::Read(e) => e.into(),
        }
    }
}

/// A history that could not be read. An archive segment that is missing, altered or
/// out of reach is not a fault of this request: a page that says which, with a 503
/// (it may come back, and `quoteline verify` reports it).
impl From<ReadError> for AppError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::Database(e) => AppError::Internal(e.into()),
            ReadError::Archive(e) => {
                tracing::error!(error = %e, "archived history could not be read");
                AppError::refused(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "This quote's archived history cannot be read",
                    format!(
                        "The quote's earlier events are kept in the archive, and they cannot \
                         be read just now ({}). Nothing was changed. Tell the administrator; \
                         `quoteline verify` reports every segment that is affected.",
                        e.summary()
                    ),
                )
            }
        }
    }
}

/// A rule that said no, in its own words: someone else's quote does not exist for
/// an agent; a missing role or one's own quote is forbidden; the rest conflict with
/// the quote's state.
impl From<DomainError> for AppError {
    fn from(rule: DomainError) -> Self {
        match rule {
            DomainError::QuoteNotFound | DomainError::NotTheQuotesAgent => AppError::not_found(),
            DomainError::RoleRequired { .. } | DomainError::OwnQuote => {
                AppError::forbidden(rule.to_string())
            }
            _ => AppError::conflict("That cannot be done to this quote", rule.to_string()),
        }
    }
}

impl From<sqlx::Error> for AppError {
    fn from(error: sqlx::Error) -> Self {
        AppError::Internal(error.into())
    }
}

#[derive(Template)]
#[template(path = "errors/error.html")]
struct ErrorPage<'a> {
    layout: Layout,
    heading: &'a str,
    message: &'a str,
    back_href: &'a str,
    back_label: &'a str,
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, heading, message) = match &self {
            AppError::Refused {
                status,
                heading,
                message,
            } => (*status, heading.as_str(), message.as_str()),
            AppError::Internal(cause) => {
                tracing::error!(error = ?cause, "request failed");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Sorry, there is a problem with the service",
                    "Try again later. Nothing you sent was half-written.",
                )
            }
        };
        render_error_page(status, heading, message)
    }
}

pub fn render_error_page(status: StatusCode, heading: &str, message: &str) -> Response {
    let page = ErrorPage {
        layout: Layout::anonymous(),
        heading,
        message,
        back_href: "/",
        back_label: "Go to the start page",
    };
    match page.render() {
        Ok(body) => (status, Html(body)).into_response(),
        Err(error) => {
            tracing::error!(%error, "the error page itself failed to render");
            let mut response = (status, format!("{heading}. {message}")).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
        }
    }
}
