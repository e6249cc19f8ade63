//! Identity: the people who can sign in and their roles, recorded as events on a
//! stream per person (`users` is their projection), passwords (argon2id) beside them,
//! server-side sessions, CSRF protection, the people pages, and the extractors that
//! tell every other context who is asking and whether they may.

mod account;
mod accounts;
pub mod attempts;
mod client;
pub mod csrf;
mod current_user;
mod pages;
pub mod password;
pub mod people;
mod people_pages;
pub mod person;
pub mod projection;
pub mod sessions;
mod signed_out;
pub mod throttle;
mod users;

use axum::Router;
use axum::routing::{get, post};

pub use accounts::{CACHED_USER_TIME_TO_LIVE, CACHED_USERS, User, UserCache, find_user};
pub use client::{ClientAddress, REMEMBERED_ADDRESSES, SignInLimits};
pub use current_user::{
    Admin, AdminOrAuditor, Agent, AgentUnderwriterOrAuditor, Auditor, CurrentUser, Underwriter,
    UnderwriterOrAuditor, home_of,
};
pub use people::{ChangedBy, PeopleError};
pub use projection::UsersProjection;
pub use sessions::Sessions;
pub use throttle::{AddressLimit, sign_in_allowed};
pub use users::{AddUserError, SignIn, add_or_reset_user, add_person, add_user, authenticate};

use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::start))
        .route("/login", get(pages::sign_in_page).post(pages::sign_in))
        .route("/logout", post(pages::sign_out))
        .merge(account::router())
        .merge(people_pages::router())
}
