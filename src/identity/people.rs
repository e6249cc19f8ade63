//! Changing a person's record: each change is person events appended to their
//! stream, and what must never enter an event (the password hash, the session
//! epoch, whether the password is a one-time one) written beside them in
//! `credentials`, in the same transaction. The rules every caller shares (the
//! command line, the demo, the admin pages, a person's own password change) are
//! here: an admin cannot take away their own admin role nor deactivate themselves,
//! and no change may leave the installation without an active admin.

use chrono::{DateTime, SubsecRound, Utc};
use uuid::Uuid;

use super::accounts::UserCache;
use super::person::{Person, PersonEvent, role_changes};
use super::projection::{self, active_admins};
use crate::db::{Conn, Db, Unique};
use crate::eventstore::{
    AppendError, AppendRequest, Appended, EventStore, ExpectedVersion, Metadata, RecordedEvent,
};
use crate::kernel::Role;
use crate::on_backend;

/// Who is making a change, and the request it came with.
#[derive(Debug, Clone)]
pub struct ChangedBy {
    /// The admin's user id; `None` for the command line, the demo and the import.
    pub id: Option<Uuid>,
    /// Recorded as the events' actor.
    pub actor: String,
    pub at: DateTime<Utc>,
    pub request_id: Option<String>,
    pub idempotency_key: Option<String>,
}

impl ChangedBy {
    /// A tool that is not a signed-in person (`quoteline user add`, the demo).
    pub fn tool(actor: &str) -> ChangedBy {
        ChangedBy {
            id: None,
            actor: actor.to_owned(),
            at: Utc::now(),
            request_id: None,
            idempotency_key: None,
        }
    }

    fn metadata(&self) -> Metadata {
        let mut metadata = Metadata::new(&self.actor, self.at);
        metadata.request_id = self.request_id.clone();
        metadata.idempotency_key = self.idempotency_key.clone();
        metadata
    }
}

/// Why a change was not made. Nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum PeopleError {
    #[error("no such person")]
    NotFound,
    #[error("a person named {0} already exists")]
    Duplicate(String),
    /// The form was drawn from an older version of the record.
    #[error("{username}'s record changed since this page was drawn")]
    Stale { username: String },
    /// A rule says no, in words to show.
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

impl From<sqlx::Error> for PeopleError {
    fn from(error: sqlx::Error) -> Self {
        PeopleError::Other(error.into())
    }
}

/// What a change writes to `credentials` beside its events.
#[derive(Debug, Clone)]
pub enum Credentials {
    Unchanged,
    /// A new person's password.
    Create {
        hash: String,
        one_time: bool,
    },
    /// A new password, every session ended.
    Replace {
        hash: String,
        one_time: bool,
    },
    /// Every session ended (deactivation).
    EndSessions,
}

const INSERT_CREDENTIALS: &str = "INSERT INTO credentials \
     (user_id, password_hash, session_epoch, must_change_password) VALUES ($1, $2, 0, $3)";

const REPLACE_PASSWORD: &str = "UPDATE credentials SET password_hash = $2, \
     must_change_password = $3, session_epoch = session_epoch + 1 WHERE user_id = $1";

const END_SESSIONS: &str =
    "UPDATE credentials SET session_epoch = session_epoch + 1 WHERE user_id = $1";

/// Changes of people take turns across processes (SQLite's write lock does this by
/// itself), so that two admins deactivating each other cannot both see the other
/// still active.
const PEOPLE_LOCK: &str = "SELECT pg_advisory_xact_lock(7319046158)";

/// One change: events for one person, on condition of their version, and what goes
/// to `credentials`.
struct Change {
    person: Uuid,
    expected: ExpectedVersion,
    events: Vec<PersonEvent>,
    credentials: Credentials,
    /// The change takes an admin away (their role, or them): it must leave another.
    removes_an_admin: bool,
}

/// Appends the change's events and writes its credentials in one transaction,
/// refusing it if it leaves no active admin. Returns the person as now recorded and
/// whether this was a retry of a change already made (same idempotency key).
async fn execute(
    store: &EventStore,
    by: &ChangedBy,
    change: Change,
) -> Result<(Person, bool), PeopleError> {
    let request = AppendRequest {
        stream_id: change.person,
        expected: change.expected,
        events: change.events.iter().map(PersonEvent::encode).collect(),
        metadata: by.metadata(),
    };
    let mut pooled = store.db().acquire().await?;
    let mut tx = pooled.as_conn().begin_write().await?;
    if let Conn::Postgres(c) = tx.as_conn() {
        sqlx::query(PEOPLE_LOCK).execute(&mut *c).await?;
    }
    let appended = match store.append_within(tx.as_conn(), &request).await {
        Ok(appended) => appended,
        Err(error) => {
            tx.rollback().await?;
            return Err(refusal(store.db(), change.person, error).await);
        }
    };
    let retried = matches!(appended, Appended::AlreadyWritten(_));
    if !retried {
        write_credentials(tx.as_conn(), change.person, &change.credentials).await?;
        if change.removes_an_admin && active_admins(tx.as_conn()).await? == 0 {
            tx.rollback().await?;
            return Err(PeopleError::Refused(
                "This would leave no active admin: someone must always be able to manage people."
                    .to_owned(),
            ));
        }
    }
    let person = projection::person(tx.as_conn(), change.person)
        .await?
        .ok_or(PeopleError::NotFound)?;
    tx.commit().await?;
    UserCache::shared().forget(change.person).await;
    if !retried {
        let kinds: Vec<&str> = change.events.iter().map(PersonEvent::event_type).collect();
        tracing::info!(user_id = %change.person, by = %by.actor, events = ?kinds, "person changed");
    }
    Ok((person, retried))
}

async fn write_credentials(
    conn: Conn<'_>,
    id: Uuid,
    credentials: &Credentials,
) -> Result<(), sqlx::Error> {
    on_backend!(conn, c => {
        match credentials {
            Credentials::Unchanged => {}
            Credentials::Create { hash, one_time } => {
                sqlx::query(INSERT_CREDENTIALS).bind(id).bind(hash).bind(one_time)
                    .execute(&mut *c).await?;
            }
            Credentials::Replace { hash, one_time } => {
                sqlx::query(REPLACE_PASSWORD).bind(id).bind(hash).bind(one_time)
                    .execute(&mut *c).await?;
            }
            Credentials::EndSessions => {
                sqlx::query(END_SESSIONS).bind(id).execute(&mut *c).await?;
            }
        }
    });
    Ok(())
}

/// What an append's refusal means for a change of a person.
async fn refusal(db: &Db, id: Uuid, error: AppendError) -> PeopleError {
    match error {
        AppendError::Conflict {
            expected: ExpectedVersion::NoStream,
            ..
        } => PeopleError::Refused("This person has been added already.".to_owned()),
        AppendError::Conflict { .. } => {
            let mut pooled = match db.acquire().await {
                Ok(pooled) => pooled,
                Err(error) => return error.into(),
            };
            match projection::person(pooled.as_conn(), id).await {
                Ok(Some(person)) => PeopleError::Stale {
                    username: person.username,
                },
                Ok(None) => PeopleError::NotFound,
                Err(error) => error.into(),
            }
        }
        AppendError::UniqueViolation(Unique::Username) => PeopleError::Duplicate(String::new()),
        error => PeopleError::Other(error.into()),
    }
}

/// Adds a person with these roles; `hash` is their password's hash.
pub async fn add(
    store: &EventStore,
    by: &ChangedBy,
    username: &str,
    roles: &[Role],
    hash: String,
    one_time: bool,
) -> Result<Person, PeopleError> {
    let change = Change {
        person: Uuid::now_v7(),
        expected: ExpectedVersion::NoStream,
        events: vec![PersonEvent::PersonAdded {
            username: username.to_owned(),
            roles: super::person::in_order(roles),
        }],
        credentials: Credentials::Create { hash, one_time },
        removes_an_admin: false,
    };
    match execute(store, by, change).await {
        Err(PeopleError::Duplicate(_)) => Err(PeopleError::Duplicate(username.to_owned())),
        outcome => outcome.map(|(person, _)| person),
    }
}

/// The person as `users` holds them, or `NotFound`.
pub async fn find(db: &Db, id: Uuid) -> Result<Person, PeopleError> {
    let mut pooled = db.acquire().await?;
    projection::person(pooled.as_conn(), id)
        .await?
        .ok_or(PeopleError::NotFound)
}

/// Gives the person exactly `roles`: a grant for each new one, a revocation for each
/// one taken away.
pub async fn set_roles(
    store: &EventStore,
    by: &ChangedBy,
    id: Uuid,
    version: i64,
    roles: &[Role],
) -> Result<Person, PeopleError> {
    let person = find(store.db(), id).await?;
    if roles.is_empty() {
        return Err(PeopleError::Refused(
            "Give them at least one role, or deactivate them instead.".to_owned(),
        ));
    }
    if by.id == Some(id) && person.roles.contains(&Role::Admin) && !roles.contains(&Role::Admin) {
        return Err(PeopleError::Refused(
            "You cannot take away your own admin role: ask another admin.".to_owned(),
        ));
    }
    let events = role_changes(&person.roles, roles);
    let removes_an_admin = events.contains(&PersonEvent::RoleRevoked { role: Role::Admin });
    if events.is_empty() {
        return Err(PeopleError::Refused(format!(
            "{} already holds exactly these roles.",
            person.username
        )));
    }
    let change = Change {
        person: id,
        expected: ExpectedVersion::Exact(version),
        events,
        credentials: Credentials::Unchanged,
        removes_an_admin,
    };
    Ok(execute(store, by, change).await?.0)
}

/// Why the admin `by` may not deactivate `person`, if they may not.
pub fn deactivation_refused(by: Option<Uuid>, person: &Person) -> Option<String> {
    if by == Some(person.id) {
        Some("You cannot deactivate yourself: ask another admin.".to_owned())
    } else if !person.active {
        Some(format!("{} is deactivated already.", person.username))
    } else {
        None
    }
}

/// Why `person` cannot be reactivated, if they cannot.
pub fn reactivation_refused(person: &Person) -> Option<String> {
    person
        .active
        .then(|| format!("{} is active already.", person.username))
}

/// Why `person`'s password cannot be reset, if it cannot.
pub fn reset_refused(person: &Person) -> Option<String> {
    (!person.active).then(|| format!("{} is deactivated: reactivate them first.", person.username))
}

/// Ends the person's sessions and keeps them from signing in.
pub async fn deactivate(
    store: &EventStore,
    by: &ChangedBy,
    id: Uuid,
    version: i64,
) -> Result<Person, PeopleError> {
    let person = find(store.db(), id).await?;
    if let Some(why) = deactivation_refused(by.id, &person) {
        return Err(PeopleError::Refused(why));
    }
    let change = Change {
        person: id,
        expected: ExpectedVersion::Exact(version),
        events: vec![PersonEvent::PersonDeactivated {}],
        credentials: Credentials::EndSessions,
        removes_an_admin: person.is_admin(),
    };
    Ok(execute(store, by, change).await?.0)
}

/// Lets a deactivated person sign in again.
pub async fn reactivate(
    store: &EventStore,
    by: &ChangedBy,
    id: Uuid,
    version: i64,
) -> Result<Person, PeopleError> {
    let person = find(store.db(), id).await?;
    if let Some(why) = reactivation_refused(&person) {
        return Err(PeopleError::Refused(why));
    }
    let change = Change {
        person: id,
        expected: ExpectedVersion::Exact(version),
        events: vec![PersonEvent::PersonReactivated {}],
        credentials: Credentials::Unchanged,
        removes_an_admin: false,
    };
    Ok(execute(store, by, change).await?.0)
}

/// Gives the person a new password (`hash`), ending their sessions. Returns `false`
/// when this was a retry of a reset already made (the form sent twice): then
/// nothing changed and `hash` is not theirs.
pub async fn reset_password(
    store: &EventStore,
    by: &ChangedBy,
    id: Uuid,
    version: i64,
    hash: String,
    one_time: bool,
) -> Result<(Person, bool), PeopleError> {
    if let Some(why) = reset_refused(&find(store.db(), id).await?) {
        return Err(PeopleError::Refused(why));
    }
    let change = Change {
        person: id,
        expected: ExpectedVersion::Exact(version),
        events: vec![PersonEvent::PasswordReset { one_time }],
        credentials: Credentials::Replace { hash, one_time },
        removes_an_admin: false,
    };
    let (person, retried) = execute(store, by, change).await?;
    Ok((person, !retried))
}

/// Records that the person changed their own password to `hash`; every session of
/// theirs ends (the caller moves its own on).
pub async fn password_changed(
    store: &EventStore,
    by: &ChangedBy,
    id: Uuid,
    hash: String,
) -> Result<Person, PeopleError> {
    let change = Change {
        person: id,
        expected: ExpectedVersion::Any,
        events: vec![PersonEvent::PasswordChanged {}],
        credentials: Credentials::Replace {
            hash,
            one_time: false,
        },
        removes_an_admin: false,
    };
    Ok(execute(store, by, change).await?.0)
}

/// Like an admin's changes, for the demo: the person gets exactly these roles, is
/// active, and has this (not one-time) password, in one append.
pub async fn restore(
    store: &EventStore,
    by: &ChangedBy,
    person: &Person,
    roles: &[Role],
    hash: String,
) -> Result<Person, PeopleError> {
    let mut events = role_changes(&person.roles, roles);
    if !person.active {
        events.push(PersonEvent::PersonReactivated {});
    }
    events.push(PersonEvent::PasswordReset { one_time: false });
    let change = Change {
        person: person.id,
        expected: ExpectedVersion::Exact(person.version),
        removes_an_admin: events.contains(&PersonEvent::RoleRevoked { role: Role::Admin }),
        events,
        credentials: Credentials::Replace {
            hash,
            one_time: false,
        },
    };
    Ok(execute(store, by, change).await?.0)
}

/// Users without a stream of their own: there from before people were events.
const UNRECORDED: &str = "SELECT id, username, roles, created_at FROM users \
     WHERE NOT EXISTS (SELECT 1 FROM streams WHERE streams.stream_id = users.id) \
     ORDER BY created_at, id";

/// Gives every user added before people were events a `PersonAdded` (at the time
/// they were added, by "import"), so that `users` is the fold of the person events.
/// Another process importing the same person at once is harmless: one append wins.
pub async fn import_unrecorded(store: &EventStore) -> Result<u64, PeopleError> {
    let rows: Vec<(Uuid, String, String, DateTime<Utc>)> = on_backend!(store.db(), pool => {
        sqlx::query_as(UNRECORDED).fetch_all(pool).await
    })?;
    let mut imported = 0;
    for (id, username, roles, created_at) in rows {
        let request = AppendRequest {
            stream_id: id,
            expected: ExpectedVersion::NoStream,
            events: vec![
                PersonEvent::PersonAdded {
                    username,
                    roles: projection::parse_roles(&roles),
                }
                .encode(),
            ],
            metadata: Metadata::new("import", created_at.trunc_subsecs(6)),
        };
        match store.append(request).await {
            Ok(_) => imported += 1,
            Err(AppendError::Conflict { .. }) => {}
            Err(error) => return Err(PeopleError::Other(error.into())),
        }
    }
    if imported > 0 {
        tracing::info!(people = imported, "people recorded as events");
    }
    Ok(imported)
}

const DIRECTORY: &str = "SELECT u.id, u.username, u.roles, u.created_at, u.active, u.version, \
     c.last_sign_in_at FROM users u LEFT JOIN credentials c ON c.user_id = u.id \
     ORDER BY u.username";

/// Everyone, by username, with when they last signed in.
pub async fn directory(db: &Db) -> Result<Vec<(Person, Option<DateTime<Utc>>)>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Listed {
        #[sqlx(flatten)]
        person: projection::PersonRow,
        last_sign_in_at: Option<DateTime<Utc>>,
    }
    let rows: Vec<Listed> = on_backend!(db, pool => {
        sqlx::query_as(DIRECTORY).fetch_all(pool).await
    })?;
    Ok(rows
        .into_iter()
        .map(|row| (Person::from(row.person), row.last_sign_in_at))
        .collect())
}

/// A person's whole stream, each event decoded, oldest first.
pub async fn history(
    store: &EventStore,
    id: Uuid,
) -> Result<Vec<(RecordedEvent, PersonEvent)>, anyhow::Error> {
    let recorded = store.read_stream(id, 0).await?;
    recorded
        .into_iter()
        .map(|r| {
            let event = PersonEvent::decode(&r)?;
            Ok((r, event))
        })
        .collect()
}

/// A person as they are now, with every change to their record.
#[derive(Debug, Clone)]
pub struct Record {
    pub person: Person,
    pub events: Vec<(RecordedEvent, PersonEvent)>,
}

impl Record {
    /// The person as their record stood at `at`; `None` before they were added.
    pub fn as_at(&self, at: DateTime<Utc>) -> Option<Person> {
        Person::fold(
            self.events
                .iter()
                .take_while(|(recorded, _)| recorded.recorded_at <= at)
                .map(|(recorded, event)| (recorded, event)),
        )
    }

    /// The roles they held at `at`: none before they were added or while deactivated.
    pub fn roles_at(&self, at: DateTime<Utc>) -> Vec<Role> {
        self.as_at(at)
            .filter(|then| then.active)
            .map(|then| then.roles)
            .unwrap_or_default()
    }
}

/// The record of the person with this id.
pub async fn record(store: &EventStore, id: Uuid) -> Result<Record, PeopleError> {
    let person = find(store.db(), id).await?;
    let events = history(store, id).await?;
    Ok(Record { person, events })
}

/// The record of the person named `username`, if there is one.
pub async fn record_named(
    store: &EventStore,
    username: &str,
) -> Result<Option<Record>, anyhow::Error> {
    let Some(person) = projection::person_named(store.db(), username).await? else {
        return Ok(None);
    };
    let events = history(store, person.id).await?;
    Ok(Some(Record { person, events }))
}
