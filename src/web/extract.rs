//! Extractors every context's handlers share.

use axum::extract::{FromRequestParts, Path};
use axum::http::request::Parts;
use uuid::Uuid;

use super::AppError;

/// The quote id of a `/quotes/{id}/…` route. Anything that is not one is a page
/// that does not exist (404), not a malformed request.
#[derive(Debug, Clone, Copy)]
pub struct QuoteId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for QuoteId {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Path(id) = Path::<Uuid>::from_request_parts(parts, state)
            .await
            .map_err(|_| AppError::not_found())?;
        Ok(QuoteId(id))
    }
}
