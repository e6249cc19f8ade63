//! Shared web parts: the page layout, error pages, the form pieces and extractors
//! every context's pages use, and the middleware that gives error responses a page.
//! It knows no context's pages; contexts build on it.

pub mod assets;
pub mod compression;
pub mod error;
pub mod extract;
pub mod form;
pub mod layout;
pub mod middleware;

pub use error::AppError;
pub use extract::{Form, QuoteId};
pub use form::{FieldErrors, FormMeta, new_key};
pub use layout::Layout;
