//! Who someone is when signed in: the user as `users` and `credentials` hold them
//! (never the hash), and the short-lived cache every signed-in request reads them
//! through.

use std::sync::LazyLock;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::projection::parse_roles;
use crate::db::Db;
use crate::kernel::Role;
use crate::on_backend;

/// Someone who can sign in, without their password hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub roles: Vec<Role>,
    pub created_at: DateTime<Utc>,
    /// A deactivated person cannot sign in, and their sessions are over.
    pub active: bool,
    /// A session is theirs only while it carries this number: changing their
    /// password, a reset or deactivation moves it on, which ends their sessions.
    pub session_epoch: i64,
    /// Their password is a one-time one, given by an admin: every page but the
    /// password page sends them there until they choose their own.
    pub must_change_password: bool,
}

/// A person with what `credentials` holds of them (never the hash).
const SELECT_USER_BY_ID: &str = "SELECT u.id, u.username, u.roles, u.created_at, u.active, \
     c.session_epoch, c.must_change_password \
     FROM users u JOIN credentials c ON c.user_id = u.id WHERE u.id = $1";

#[derive(sqlx::FromRow)]
pub(super) struct UserRow {
    pub(super) id: Uuid,
    pub(super) username: String,
    roles: String,
    created_at: DateTime<Utc>,
    pub(super) active: bool,
    session_epoch: i64,
    must_change_password: bool,
}

impl From<UserRow> for User {
    fn from(row: UserRow) -> Self {
        User {
            id: row.id,
            roles: parse_roles(&row.roles),
            username: row.username,
            created_at: row.created_at,
            active: row.active,
            session_epoch: row.session_epoch,
            must_change_password: row.must_change_password,
        }
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
/// this process (`identity::people`) is seen at once; one changed by another process
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
