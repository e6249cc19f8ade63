//! What every form carries besides its answers, and the errors a page shows beside
//! its inputs.

use axum::http::HeaderMap;
use chrono::Utc;
use serde::Deserialize;
use uuid::Uuid;

use super::AppError;
use super::middleware::REQUEST_ID;
use crate::kernel::Envelope;

/// The hidden fields of every command form: the version of the quote the page was
/// drawn from (the append's expected version) and the form's idempotency key.
#[derive(Debug, Clone, Default, Deserialize)]
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

    /// The command's envelope: now, this request's id, and the form's key (a key
    /// that is blank or too long to be ours is no key).
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

/// A fresh idempotency key for a form about to be drawn: a UUID v7, whose time
/// orders the ids of the events it is sent with (`eventstore::idempotent_event_id`).
pub fn new_key() -> String {
    Uuid::now_v7().to_string()
}

/// One problem with one input, keyed by the input's HTML `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// Every problem found in one submitted form, in form order: the page's error
/// summary links each to its input, and each input shows its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(pub Vec<FieldError>);

impl FieldErrors {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first message for the input named `field`.
    pub fn message_for(&self, field: impl AsRef<str>) -> Option<&str> {
        self.0
            .iter()
            .find(|error| error.field == field.as_ref())
            .map(|error| error.message.as_str())
    }

    pub fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }
}

impl std::fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let messages: Vec<&str> = self.0.iter().map(|e| e.message.as_str()).collect();
        f.write_str(&messages.join("; "))
    }
}
