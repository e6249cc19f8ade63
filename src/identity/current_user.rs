//! Who is asking: the signed-in person as an extractor, and the role guards every
//! other context puts in its handlers' arguments (docs/ARCHITECTURE.md §8).

use axum::extract::{FromRequestParts, OptionalFromRequestParts};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Redirect, Response};
use tower_sessions::Session;
use uuid::Uuid;

use super::accounts::UserCache;
use super::csrf;
use super::people::ChangedBy;
use super::sessions::{self, SESSION_EPOCH, USER_ID};
use crate::kernel::{Actor, Role};
use crate::state::AppState;
use crate::web::layout::Viewer;
use crate::web::{AppError, Layout};

/// The signed-in person. As an extractor it sends anyone signed out to `/login`
/// (303, whatever the method).
#[derive(Clone)]
pub struct CurrentUser {
    pub id: Uuid,
    pub username: String,
    pub roles: Vec<Role>,
    /// Signed in with a one-time password: every page but the password page (and
    /// signing out) sends them to choose their own.
    pub must_change_password: bool,
    csrf_token: String,
}

/// Without the CSRF token, which has no business in a log.
impl std::fmt::Debug for CurrentUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CurrentUser")
            .field("id", &self.id)
            .field("username", &self.username)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

impl CurrentUser {
    pub fn actor(&self) -> Actor {
        Actor::new(self.username.clone(), self.roles.iter().copied())
    }

    /// The page frame for this person: who is signed in, and the token for forms.
    pub fn layout(&self) -> Layout {
        Layout {
            viewer: Some(Viewer {
                username: self.username.clone(),
                roles: self.roles.iter().map(|r| r.as_str().to_owned()).collect(),
            }),
            csrf_token: self.csrf_token.clone(),
        }
    }

    pub fn csrf_token(&self) -> &str {
        &self.csrf_token
    }

    /// Who made a change, for a person's record.
    pub fn changed_by(&self, envelope: &crate::kernel::Envelope) -> ChangedBy {
        ChangedBy {
            id: Some(self.id),
            actor: self.username.clone(),
            at: envelope.at,
            request_id: envelope.request_id.clone(),
            idempotency_key: envelope.idempotency_key.clone(),
        }
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// A 403 page unless this person holds `role`.
    pub fn require(&self, role: Role) -> Result<(), AppError> {
        if self.has_role(role) {
            Ok(())
        } else {
            Err(AppError::forbidden(format!(
                "This page is for {}s.",
                role.as_str()
            )))
        }
    }

    /// Where this person starts: the page of their first role in the order agent,
    /// underwriter, auditor, admin.
    pub fn home(&self) -> &'static str {
        home_of(&self.roles)
    }
}

pub fn home_of(roles: &[Role]) -> &'static str {
    [
        (Role::Agent, "/quotes"),
        (Role::Underwriter, "/underwriting/queue"),
        (Role::Auditor, "/audit"),
        (Role::Admin, "/people"),
    ]
    .into_iter()
    .find(|(role, _)| roles.contains(role))
    .map_or("/", |(_, path)| path)
}

/// Where someone signed in with a one-time password is sent until they change it.
pub const PASSWORD_PAGE: &str = "/account/password";

fn internal(error: impl Into<anyhow::Error>) -> AppError {
    AppError::Internal(error.into())
}

impl OptionalFromRequestParts<AppState> for CurrentUser {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        if let Some(user) = parts.extensions.get::<CurrentUser>() {
            return Ok(Some(user.clone()));
        }
        let session = sessions::of(parts).map_err(|e| internal(e).into_response())?;
        let user = signed_in(&session, state)
            .await
            .map_err(IntoResponse::into_response)?;
        if let Some(user) = &user {
            parts.extensions.insert(user.clone());
        }
        Ok(user)
    }
}

impl FromRequestParts<AppState> for CurrentUser {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let user = <Self as OptionalFromRequestParts<AppState>>::from_request_parts(parts, state)
            .await?
            .ok_or_else(|| Redirect::to("/login").into_response())?;
        if user.must_change_password && !parts.uri.path().starts_with(PASSWORD_PAGE) {
            return Err(Redirect::to(PASSWORD_PAGE).into_response());
        }
        Ok(user)
    }
}

/// The person whose id the session holds, unless the session has outlived its
/// lifetime: from the user cache, else one query by primary key.
async fn signed_in(session: &Session, state: &AppState) -> Result<Option<CurrentUser>, AppError> {
    let Some(id) = session.get::<Uuid>(USER_ID).await.map_err(internal)? else {
        return Ok(None);
    };
    if state
        .sessions
        .has_outlived(session)
        .await
        .map_err(internal)?
    {
        tracing::info!(user_id = %id, "session ended: its lifetime since sign-in is over");
        session.flush().await.map_err(internal)?;
        return Ok(None);
    }
    let Some(user) = UserCache::shared().find(&state.db, id).await? else {
        // Removed since signing in: the session means nothing now.
        session.flush().await.map_err(internal)?;
        return Ok(None);
    };
    let epoch = session
        .get::<i64>(SESSION_EPOCH)
        .await
        .map_err(internal)?
        .unwrap_or_default();
    if epoch < user.session_epoch || !user.active {
        tracing::info!(
            user_id = %id,
            active = user.active,
            "session ended: deactivated, or the password was changed or reset since sign-in"
        );
        session.flush().await.map_err(internal)?;
        return Ok(None);
    }
    let csrf_token = csrf::token(session).await.map_err(internal)?;
    sessions::renew(session, state.sessions.settings().clock.now())
        .await
        .map_err(internal)?;
    Ok(Some(CurrentUser {
        id: user.id,
        username: user.username,
        roles: user.roles,
        must_change_password: user.must_change_password,
        csrf_token,
    }))
}

/// Declares a guard: an extractor that yields the signed-in person when they hold
/// one of `roles`, sends the signed-out to `/login`, and shows everyone else a 403.
macro_rules! role_guard {
    ($(#[$doc:meta])* $name:ident, [$($role:ident),+], $for_whom:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone)]
        pub struct $name(pub CurrentUser);

        impl FromRequestParts<AppState> for $name {
            type Rejection = Response;

            async fn from_request_parts(
                parts: &mut Parts,
                state: &AppState,
            ) -> Result<Self, Response> {
                let user =
                    <CurrentUser as FromRequestParts<AppState>>::from_request_parts(parts, state)
                        .await?;
                if [$(Role::$role),+].into_iter().any(|role| user.has_role(role)) {
                    Ok($name(user))
                } else {
                    Err(AppError::forbidden(concat!("This page is for ", $for_whom, "."))
                        .into_response())
                }
            }
        }
    };
}

role_guard!(
    /// An agent: their quotes, starting and editing one.
    Agent, [Agent], "agents"
);
role_guard!(
    /// An underwriter: the approval queue and decisions.
    Underwriter, [Underwriter], "underwriters"
);
role_guard!(
    /// An auditor: the event log and its verification.
    Auditor, [Auditor], "auditors"
);
role_guard!(
    /// An underwriter or an auditor: a quote's timeline.
    UnderwriterOrAuditor, [Underwriter, Auditor], "underwriters and auditors"
);
role_guard!(
    /// An admin: the people who can sign in.
    Admin, [Admin], "admins"
);
role_guard!(
    /// An admin or an auditor: a person's record and its history.
    AdminOrAuditor, [Admin, Auditor], "admins and auditors"
);
role_guard!(
    /// Anyone who works on quotes: a quote's task list.
    AgentUnderwriterOrAuditor, [Agent, Underwriter, Auditor], "agents, underwriters and auditors"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_role_starts_at_its_own_page_taking_the_first_in_order() {
        assert_eq!(home_of(&[Role::Agent]), "/quotes");
        assert_eq!(home_of(&[Role::Underwriter]), "/underwriting/queue");
        assert_eq!(home_of(&[Role::Auditor]), "/audit");
        assert_eq!(home_of(&[Role::Admin]), "/people");
        assert_eq!(home_of(&[Role::Admin, Role::Auditor]), "/audit");
        assert_eq!(
            home_of(&[Role::Auditor, Role::Underwriter]),
            "/underwriting/queue"
        );
    }

    #[test]
    fn require_names_the_missing_role() {
        let user = CurrentUser {
            id: Uuid::nil(),
            username: "ann".into(),
            roles: vec![Role::Agent],
            must_change_password: false,
            csrf_token: String::new(),
        };

        assert!(user.require(Role::Agent).is_ok());
        let refused = user.require(Role::Underwriter).unwrap_err().to_string();
        assert!(
            refused.contains("This page is for underwriters."),
            "{refused}"
        );
    }
}
