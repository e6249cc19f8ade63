//! Signing in and passwords: adding a person with their password, checking a
//! sign-in against the attempt throttle, and changing one's own password.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::accounts::{User, UserCache, UserRow, find_user};
use super::attempts::{self, Claim};
use super::client::ClientAddress;
use super::password::{self, MIN_PASSWORD_CHARS};
use super::people::{self, ChangedBy, PeopleError};
use super::projection::person_named;
use crate::db::Db;
use crate::eventstore::EventStore;
use crate::kernel::Role;
use crate::on_backend;

#[derive(Debug, thiserror::Error)]
pub enum AddUserError {
    #[error("a user named {0} already exists")]
    Duplicate(String),
    #[error(
        "\"{0}\" cannot be a username: use 1 to 64 letters, digits, dots, dashes, underscores or @"
    )]
    InvalidUsername(String),
    #[error("give the user at least one role")]
    NoRoles,
    #[error("no password was given")]
    EmptyPassword,
    #[error("the password is too short: use at least {MIN_PASSWORD_CHARS} characters")]
    PasswordTooShort,
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<sqlx::Error> for AddUserError {
    fn from(error: sqlx::Error) -> Self {
        AddUserError::Other(error.into())
    }
}

impl From<PeopleError> for AddUserError {
    fn from(error: PeopleError) -> Self {
        match error {
            PeopleError::Duplicate(name) => AddUserError::Duplicate(name),
            PeopleError::Other(error) => AddUserError::Other(error),
            other => AddUserError::Other(other.into()),
        }
    }
}

const SELECT_CREDENTIALS: &str = "SELECT u.id, u.username, u.roles, u.created_at, u.active, \
     c.session_epoch, c.must_change_password, c.password_hash \
     FROM users u JOIN credentials c ON c.user_id = u.id WHERE u.username = $1";

const SELECT_CREDENTIALS_BY_ID: &str = "SELECT u.id, u.username, u.roles, u.created_at, \
     u.active, c.session_epoch, c.must_change_password, c.password_hash \
     FROM users u JOIN credentials c ON c.user_id = u.id WHERE u.id = $1";

const RECORD_SIGN_IN: &str = "UPDATE credentials SET last_sign_in_at = $2 WHERE user_id = $1";

#[derive(sqlx::FromRow)]
struct CredentialsRow {
    #[sqlx(flatten)]
    user: UserRow,
    password_hash: String,
}

/// The longest username there can be.
pub const MAX_USERNAME_CHARS: usize = 64;

pub fn is_valid_username(name: &str) -> bool {
    (1..=MAX_USERNAME_CHARS).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'))
}

/// Adds someone who can sign in with `password` and holds `roles`, as a
/// `PersonAdded` event by `by`. The password is stored only as an argon2id hash,
/// beside the event, never in it.
#[tracing::instrument(skip(store, password))]
pub async fn add_user(
    store: &EventStore,
    username: &str,
    password: &str,
    roles: &[Role],
) -> Result<User, AddUserError> {
    add_person(
        store,
        &ChangedBy::tool("command line"),
        username,
        password,
        roles,
        false,
    )
    .await
}

/// Adds a person; with `one_time` they must choose their own password at their
/// first sign-in.
pub async fn add_person(
    store: &EventStore,
    by: &ChangedBy,
    username: &str,
    password: &str,
    roles: &[Role],
    one_time: bool,
) -> Result<User, AddUserError> {
    check_new(username, password, roles)?;
    let hash = password::hash(password).await?;
    let person = people::add(store, by, username, roles, hash, one_time).await?;
    tracing::info!(user_id = %person.id, "user added");
    Ok(User {
        id: person.id,
        username: person.username,
        roles: person.roles,
        created_at: person.created_at,
        active: true,
        session_epoch: 0,
        must_change_password: one_time,
    })
}

/// Like [`add_user`], but an existing user of that name gets this password and these
/// roles instead (and is active again), and every wait for their name is lifted: for
/// the demo, whose passwords are shown only once.
#[tracing::instrument(skip(store, password))]
pub async fn add_or_reset_user(
    store: &EventStore,
    username: &str,
    password: &str,
    roles: &[Role],
) -> Result<User, AddUserError> {
    let by = ChangedBy::tool("demo");
    let db = store.db();
    let user = match person_named(db, username).await? {
        None => add_person(store, &by, username, password, roles, false).await?,
        Some(person) => {
            check_new(username, password, roles)?;
            let hash = password::hash(password).await?;
            people::restore(store, &by, &person, roles, hash).await?;
            find_user(db, person.id)
                .await?
                .ok_or_else(|| anyhow::anyhow!("{username} vanished while being reset"))?
        }
    };
    attempts::forget_name(db, username).await?;
    UserCache::shared().put(user.clone()).await;
    Ok(user)
}

/// A valid name, roles and password for a new person.
fn check_new(username: &str, password: &str, roles: &[Role]) -> Result<(), AddUserError> {
    if !is_valid_username(username) {
        return Err(AddUserError::InvalidUsername(username.to_owned()));
    }
    if roles.is_empty() {
        return Err(AddUserError::NoRoles);
    }
    if password.is_empty() {
        return Err(AddUserError::EmptyPassword);
    }
    if password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(AddUserError::PasswordTooShort);
    }
    Ok(())
}

/// What became of one sign-in attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignIn {
    SignedIn(User),
    /// Unknown username or wrong password: deliberately the same answer.
    Refused,
    /// Too many attempts in a row at this name from this address; no attempt from
    /// there is checked before this time.
    Locked {
        until: DateTime<Utc>,
    },
    /// Every password-hashing thread stayed busy: nothing was checked or counted.
    Busy,
}

/// Checks a username and password from `address`, counting the attempt against that
/// name and address. A name that does not exist is counted, checked (against a hash
/// of no one's password) and refused exactly like a wrong password, so no answer
/// and no wait tells which names exist; a pair that must wait is not checked.
#[tracing::instrument(skip(db, password, username), fields(%address))]
pub async fn authenticate(
    db: &Db,
    username: &str,
    password: &str,
    address: &ClientAddress,
    now: DateTime<Utc>,
) -> anyhow::Result<SignIn> {
    // A turn first, then the count: an attempt answered "busy" is not counted.
    let Ok(turn) = password::turn().await else {
        return Ok(SignIn::Busy);
    };
    // A name no account can have is not looked up (PostgreSQL refuses a NUL in text),
    // and is refused as slowly as an unknown one.
    if !is_valid_username(username) {
        turn.verify(password, None).await?;
        return Ok(SignIn::Refused);
    }
    if let Claim::Locked { until } = attempts::claim(db, username, address, now).await? {
        return Ok(SignIn::Locked { until });
    }
    let row: Option<CredentialsRow> = on_backend!(db, pool => {
        sqlx::query_as(SELECT_CREDENTIALS).bind(username).fetch_optional(pool).await
    })?;
    // A deactivated person is refused like a wrong password: their password is
    // still checked, so no answer and no wait tells them apart.
    let (user, stored) = match row {
        Some(row) => (Some(row.user).filter(|u| u.active), Some(row.password_hash)),
        None => (None, None),
    };
    let right = turn.verify(password, stored).await?;
    match user {
        Some(user) if right => {
            attempts::forget(db, username, address).await?;
            on_backend!(db, pool => {
                sqlx::query(RECORD_SIGN_IN).bind(user.id).bind(now).execute(pool).await.map(drop)
            })?;
            Ok(SignIn::SignedIn(user.into()))
        }
        _ => Ok(SignIn::Refused),
    }
}

/// Why a password was not changed.
#[derive(Debug, thiserror::Error)]
pub enum ChangePasswordError {
    #[error("the current password is not right")]
    WrongPassword,
    #[error("the account no longer exists")]
    Gone,
    #[error(transparent)]
    Busy(#[from] password::Busy),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<sqlx::Error> for ChangePasswordError {
    fn from(error: sqlx::Error) -> Self {
        ChangePasswordError::Other(error.into())
    }
}

/// Gives the user `new` as their password once `current` proves it is them, and
/// ends every other session of theirs (the epoch moves on); a `PasswordChanged`
/// event records it, without the password. `new` must already have passed
/// [`password::weakness`]. Returns the user as now stored.
#[tracing::instrument(skip(store, current, new))]
pub async fn change_password(
    store: &EventStore,
    id: Uuid,
    current: &str,
    new: &str,
) -> Result<User, ChangePasswordError> {
    let db = store.db();
    let turn = password::turn().await?;
    let row: Option<CredentialsRow> = on_backend!(db, pool => {
        sqlx::query_as(SELECT_CREDENTIALS_BY_ID).bind(id).fetch_optional(pool).await
    })?;
    let Some(row) = row.filter(|row| row.user.active) else {
        return Err(ChangePasswordError::Gone);
    };
    if !turn.verify(current, Some(row.password_hash)).await? {
        return Err(ChangePasswordError::WrongPassword);
    }
    let hash = password::hash(new).await?;
    let mut by = ChangedBy::tool(&row.user.username);
    by.id = Some(id);
    match people::password_changed(store, &by, id, hash).await {
        Ok(_) => {}
        Err(PeopleError::NotFound) => return Err(ChangePasswordError::Gone),
        Err(error) => return Err(ChangePasswordError::Other(error.into())),
    }
    let user = find_user(db, id).await?.ok_or(ChangePasswordError::Gone)?;
    UserCache::shared().put(user.clone()).await;
    tracing::info!(user_id = %id, "password changed; other sessions ended");
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_are_short_and_plain() {
        assert!(is_valid_username("alice"));
        assert!(is_valid_username("a.lee-2_x@corp"));
        assert!(!is_valid_username(""));
        assert!(!is_valid_username("alice smith"));
        assert!(!is_valid_username("alice,bob"));
        assert!(!is_valid_username(&"a".repeat(65)));
    }
}
