//! The people who can sign in: adding them, finding them (the signed-in ones through
//! a short-lived cache), and checking a sign-in against the attempt throttle.

use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

use super::attempts::{self, Claim};
use super::client::ClientAddress;
use super::password::{self, MIN_PASSWORD_CHARS};
use crate::db::{Db, Unique, unique_violation};
use crate::kernel::Role;
use crate::on_backend;

/// Someone who can sign in, without their password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub roles: Vec<Role>,
    pub created_at: DateTime<Utc>,
    /// A session is theirs only while it carries this number: changing their
    /// password moves it on, which ends every other session of theirs.
    pub session_epoch: i64,
}

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

const INSERT_USER: &str = "INSERT INTO users (id, username, password_hash, roles, created_at) \
     VALUES ($1, $2, $3, $4, $5)";

/// Adds the user, or gives an existing one this password and these roles: for the
/// demo, whose passwords are shown only once.
const UPSERT_USER: &str = "INSERT INTO users (id, username, password_hash, roles, created_at) \
     VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (username) DO UPDATE SET password_hash = excluded.password_hash, \
     roles = excluded.roles \
     RETURNING id, username, roles, created_at, session_epoch";

const SELECT_USER_BY_ID: &str =
    "SELECT id, username, roles, created_at, session_epoch FROM users WHERE id = $1";

const SELECT_CREDENTIALS: &str = "SELECT id, username, roles, created_at, session_epoch, \
     password_hash FROM users WHERE username = $1";

const SELECT_CREDENTIALS_BY_ID: &str = "SELECT id, username, roles, created_at, session_epoch, \
     password_hash FROM users WHERE id = $1";

/// A new password, and every other session ended.
const CHANGE_PASSWORD: &str = "UPDATE users SET password_hash = $2, \
     session_epoch = session_epoch + 1 WHERE id = $1 \
     RETURNING id, username, roles, created_at, session_epoch";

#[derive(sqlx::FromRow)]
struct UserRow {
    id: Uuid,
    username: String,
    roles: String,
    created_at: DateTime<Utc>,
    session_epoch: i64,
}

#[derive(sqlx::FromRow)]
struct CredentialsRow {
    #[sqlx(flatten)]
    user: UserRow,
    password_hash: String,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        User {
            id: row.id,
            roles: parse_roles(&row.roles),
            username: row.username,
            created_at: row.created_at,
            session_epoch: row.session_epoch,
        }
    }
}

fn parse_roles(stored: &str) -> Vec<Role> {
    stored
        .split(',')
        .filter(|name| !name.is_empty())
        .filter_map(|name| match name.parse() {
            Ok(role) => Some(role),
            Err(error) => {
                tracing::warn!(%error, "ignoring an unknown role stored for a user");
                None
            }
        })
        .collect()
}

fn roles_text(roles: &[Role]) -> String {
    Role::ALL
        .into_iter()
        .filter(|role| roles.contains(role))
        .map(Role::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

/// The longest username there can be.
pub const MAX_USERNAME_CHARS: usize = 64;

fn is_valid_username(name: &str) -> bool {
    (1..=MAX_USERNAME_CHARS).contains(&name.chars().count())
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || matches!(c, '.' | '-' | '_' | '@'))
}

/// Adds someone who can sign in with `password` and holds `roles`. The password is
/// stored only as an argon2id hash.
#[tracing::instrument(skip(db, password))]
pub async fn add_user(
    db: &Db,
    username: &str,
    password: &str,
    roles: &[Role],
) -> Result<User, AddUserError> {
    let new = NewUser::check(username, password, roles).await?;
    let inserted = on_backend!(db, pool => {
        sqlx::query(INSERT_USER)
            .bind(new.user.id)
            .bind(&new.user.username)
            .bind(&new.password_hash)
            .bind(roles_text(&new.user.roles))
            .bind(new.user.created_at)
            .execute(pool)
            .await
            .map(drop)
    });
    match inserted {
        Ok(_) => {
            tracing::info!(user_id = %new.user.id, "user added");
            Ok(new.user)
        }
        Err(error) if unique_violation(&error) == Some(Unique::Username) => {
            Err(AddUserError::Duplicate(username.to_owned()))
        }
        Err(error) => Err(error.into()),
    }
}

/// Like [`add_user`], but an existing user of that name gets this password and these
/// roles instead, and every wait for their name is lifted.
#[tracing::instrument(skip(db, password))]
pub async fn add_or_reset_user(
    db: &Db,
    username: &str,
    password: &str,
    roles: &[Role],
) -> Result<User, AddUserError> {
    let new = NewUser::check(username, password, roles).await?;
    let row: UserRow = on_backend!(db, pool => {
        sqlx::query_as(UPSERT_USER)
            .bind(new.user.id)
            .bind(&new.user.username)
            .bind(&new.password_hash)
            .bind(roles_text(&new.user.roles))
            .bind(new.user.created_at)
            .fetch_one(pool)
            .await
    })?;
    attempts::forget_name(db, username).await?;
    let user = User::from(row);
    UserCache::shared().put(user.clone()).await;
    Ok(user)
}

/// A user ready to be stored: valid name, roles and password, the password hashed.
struct NewUser {
    user: User,
    password_hash: String,
}

impl NewUser {
    async fn check(username: &str, password: &str, roles: &[Role]) -> Result<Self, AddUserError> {
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
        Ok(NewUser {
            password_hash: password::hash(password).await?,
            user: User {
                id: Uuid::now_v7(),
                username: username.to_owned(),
                roles: parse_roles(&roles_text(roles)),
                // PostgreSQL keeps microseconds: the user returned is the user stored.
                created_at: Utc::now().trunc_subsecs(6),
                session_epoch: 0,
            },
        })
    }
}

/// The user with this id, if they still exist.
pub async fn find_user(db: &Db, id: Uuid) -> Result<Option<User>, sqlx::Error> {
    let row: Option<UserRow> = on_backend!(db, pool => {
        sqlx::query_as(SELECT_USER_BY_ID).bind(id).fetch_optional(pool).await
    })?;
    Ok(row.map(User::from))
}

/// How many users a process keeps in memory.
pub const CACHED_USERS: u64 = 10_000;
/// How long a process answers "who is this user id" from memory. A role changed in
/// this process (`add_or_reset_user`) is seen at once; one changed by another process
/// on the same database (`quoteline demo` resets the demo people's roles) is seen
/// here within this time. Signing out and in again always reads the roles afresh.
pub const CACHED_USER_TIME_TO_LIVE: Duration = Duration::from_secs(5);

/// Users by id, so that a signed-in request does not read its user's row: bounded by
/// entries, each kept at most its time to live from when it was read.
#[derive(Clone, Debug)]
pub struct UserCache {
    users: moka::future::Cache<Uuid, User>,
}

/// The process's own cache: one, so that a role changed anywhere in the process
/// reaches it without the caller holding the application's state.
static SHARED: LazyLock<UserCache> =
    LazyLock::new(|| UserCache::new(CACHED_USERS, CACHED_USER_TIME_TO_LIVE));

impl UserCache {
    pub fn new(capacity: u64, time_to_live: Duration) -> UserCache {
        UserCache {
            users: moka::future::Cache::builder()
                .max_capacity(capacity)
                .time_to_live(time_to_live)
                .build(),
        }
    }

    /// The cache that sign-in, sign-out, `add_or_reset_user` and every signed-in
    /// request use ([`CACHED_USERS`] entries, [`CACHED_USER_TIME_TO_LIVE`]).
    pub fn shared() -> &'static UserCache {
        &SHARED
    }

    /// The user with this id, from memory or else by one query (then kept). A user
    /// who no longer exists is not kept.
    pub async fn find(&self, db: &Db, id: Uuid) -> Result<Option<User>, sqlx::Error> {
        if let Some(user) = self.users.get(&id).await {
            return Ok(Some(user));
        }
        let found = find_user(db, id).await?;
        if let Some(user) = &found {
            self.users.insert(id, user.clone()).await;
        }
        Ok(found)
    }

    /// Keeps `user` as just read or written.
    pub async fn put(&self, user: User) {
        self.users.insert(user.id, user).await;
    }

    /// Drops the user with this id; the next request reads them again.
    pub async fn forget(&self, id: Uuid) {
        self.users.invalidate(&id).await;
    }

    /// How many users are kept, once the cache's pending evictions are done.
    pub async fn entry_count(&self) -> u64 {
        self.users.run_pending_tasks().await;
        self.users.entry_count()
    }
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
    let (user, stored) = match row {
        Some(row) => (Some(row.user), Some(row.password_hash)),
        None => (None, None),
    };
    let right = turn.verify(password, stored).await?;
    match user {
        Some(user) if right => {
            attempts::forget(db, username, address).await?;
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
/// ends every other session of theirs (the epoch moves on). `new` must already
/// have passed [`password::weakness`]. Returns the user as now stored.
#[tracing::instrument(skip(db, current, new))]
pub async fn change_password(
    db: &Db,
    id: Uuid,
    current: &str,
    new: &str,
) -> Result<User, ChangePasswordError> {
    let turn = password::turn().await?;
    let row: Option<CredentialsRow> = on_backend!(db, pool => {
        sqlx::query_as(SELECT_CREDENTIALS_BY_ID).bind(id).fetch_optional(pool).await
    })?;
    let Some(row) = row else {
        return Err(ChangePasswordError::Gone);
    };
    if !turn.verify(current, Some(row.password_hash)).await? {
        return Err(ChangePasswordError::WrongPassword);
    }
    let hash = password::hash(new).await?;
    let row: Option<UserRow> = on_backend!(db, pool => {
        sqlx::query_as(CHANGE_PASSWORD).bind(id).bind(hash).fetch_optional(pool).await
    })?;
    let user = User::from(row.ok_or(ChangePasswordError::Gone)?);
    UserCache::shared().put(user.clone()).await;
    tracing::info!(user_id = %id, "password changed; other sessions ended");
    Ok(user)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_are_stored_in_one_order_without_repeats() {
        let text = roles_text(&[Role::Auditor, Role::Agent, Role::Auditor]);

        assert_eq!(text, "agent,auditor");
        assert_eq!(parse_roles(&text), [Role::Agent, Role::Auditor]);
    }

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
