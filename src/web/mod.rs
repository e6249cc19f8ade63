//! Shared web parts: the page layout, error pages, and the middleware stack.

pub mod error;
pub mod layout;
pub mod middleware;

pub use error::AppError;
pub use layout::Layout;
