//! Identity: the people who can sign in and their roles, passwords (argon2id),
//! server-side sessions, CSRF protection, and the extractors that tell every other
//! context who is asking and whether they may.

mod account;
pub mod attempts;
mod client;
pub mod csrf;
mod current_user;
mod pages;
pub mod password;
pub mod sessions;
mod signed_out;
pub mod throttle;
mod users;

use axum::Router;
use axum::routing::{get, post};

pub use client::{ClientAddress, REMEMBERED_ADDRESSES, SignInLimits};
pub use current_user::{
    Agent, AgentUnderwriterOrAuditor, Auditor, CurrentUser, Underwriter, UnderwriterOrAuditor,
    home_of,
};
pub use sessions::Sessions;
pub use throttle::{AddressLimit, sign_in_allowed};
pub use users::{
    AddUserError, CACHED_USER_TIME_TO_LIVE, CACHED_USERS, SignIn, User, UserCache,
    add_or_reset_user, add_user, authenticate, find_user,
};

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::start))
        .route("/login", get(pages::sign_in_page).post(pages::sign_in))
        .route("/logout", post(pages::sign_out))
        .merge(account::router())
}
