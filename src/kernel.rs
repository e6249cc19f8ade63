//! The shared kernel: the few words every context uses, owned by none of them.
//!
//! Who is acting (`Actor`, with their `Role`s) and the envelope a command arrives in
//! (when, which request, which form). Identity fills them in from the session; the
//! Quote aggregate decides with them; the event store records them. Nothing here
//! imports any other module of the crate.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a signed-in person may do. One person can hold several roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Agent,
    Underwriter,
    Auditor,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Agent, Role::Underwriter, Role::Auditor, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Underwriter => "underwriter",
            Role::Auditor => "auditor",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("\"{0}\" is not a role; use agent, underwriter, auditor or admin")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        Role::ALL
            .into_iter()
            .find(|role| role.as_str().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// The person giving a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    pub username: String,
    pub roles: Vec<Role>,
}

impl Actor {
    pub fn new(username: impl Into<String>, roles: impl IntoIterator<Item = Role>) -> Self {
        Self {
            username: username.into(),
            roles: roles.into_iter().collect(),
        }
    }

    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }
}

/// Who sent a command, when, and with which form.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub at: DateTime<Utc>,
    pub request_id: Option<String>,
    /// The form's idempotency key: a repeated submission of it appends nothing.
    pub idempotency_key: Option<String>,
}
