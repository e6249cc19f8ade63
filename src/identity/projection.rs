//! The `users` table: the projection of the person events, kept in the append's
//! transaction like the quote projections, with a checkpoint of its own (`users`).
//! Each row is [`Person::fold`] of the person's stream; the password hash and the
//! session epoch are not here but in `credentials` (`identity::people`).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use uuid::Uuid;

use super::person::{Person, PersonEvent, is_person_event};
use std::sync::Arc;

use crate::db::{Conn, Db, Tables};
use crate::eventstore::{
    Part, ProjectionError, Projector, Rebuildable, RecordedEvent, catch_up, checkpoints,
};
use crate::kernel::Role;
use crate::on_backend;

/// The name of the projection (its checkpoint).
pub const USERS: &str = "users";

/// Keeps `users` (or a rebuild's shadow of it) from the person events; leaves every
/// other event alone.
#[derive(Debug, Default, Clone, Copy)]
pub struct UsersProjection {
    tables: Tables,
}

/// Its tables, by their live names.
const TABLES: &[&str] = &["users"];

/// Empties it. `credentials` is not its: a rebuild leaves passwords alone.
const CLEAR: &[&str] = &["DELETE FROM users"];

impl UsersProjection {
    /// Brings `users` up to the end of the log (before appends start).
    pub async fn catch_up(&self, db: &Db) -> Result<u64, crate::eventstore::CatchUpError> {
        let applied = catch_up(db, self, checkpoints::CATCH_UP_PAGE, |_| {}).await?;
        if applied > 0 {
            tracing::info!(projection = USERS, events = applied, "projection caught up");
        }
        Ok(applied)
    }
}

const SELECT_PERSON: &str =
    "SELECT id, username, roles, created_at, active, version FROM users WHERE id = $1";

const SELECT_PERSON_BY_NAME: &str =
    "SELECT id, username, roles, created_at, active, version FROM users WHERE username = $1";

/// How many active people hold the admin role.
const COUNT_ACTIVE_ADMINS: &str =
    "SELECT COUNT(*) FROM users WHERE active AND (',' || roles || ',') LIKE '%,admin,%'";

/// A row of `users`.
#[derive(sqlx::FromRow)]
pub struct PersonRow {
    id: Uuid,
    username: String,
    roles: String,
    created_at: DateTime<Utc>,
    active: bool,
    version: i64,
}

impl From<PersonRow> for Person {
    fn from(row: PersonRow) -> Self {
        Person {
            id: row.id,
            username: row.username,
            roles: parse_roles(&row.roles),
            created_at: row.created_at,
            active: row.active,
            version: row.version,
        }
    }
}

/// Roles as `users.roles` stores them: names in `Role::ALL` order, comma-separated.
pub fn roles_text(roles: &[Role]) -> String {
    Role::ALL
        .into_iter()
        .filter(|role| roles.contains(role))
        .map(Role::as_str)
        .collect::<Vec<_>>()
        .join(",")
}

pub fn parse_roles(stored: &str) -> Vec<Role> {
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

/// The person with this id as `users` holds them.
pub async fn person(conn: Conn<'_>, id: Uuid) -> Result<Option<Person>, sqlx::Error> {
    person_in(conn, Tables::Live, id).await
}

/// The person with this id as that copy of `users` holds them.
async fn person_in(
    conn: Conn<'_>,
    tables: Tables,
    id: Uuid,
) -> Result<Option<Person>, sqlx::Error> {
    let sql = tables.rename(SELECT_PERSON, TABLES);
    let row: Option<PersonRow> = on_backend!(conn, c => {
        sqlx::query_as(&sql).bind(id).fetch_optional(&mut *c).await
    })?;
    Ok(row.map(Person::from))
}

/// The person with this username.
pub async fn person_named(db: &Db, username: &str) -> Result<Option<Person>, sqlx::Error> {
    let row: Option<PersonRow> = on_backend!(db, pool => {
        sqlx::query_as(SELECT_PERSON_BY_NAME).bind(username).fetch_optional(pool).await
    })?;
    Ok(row.map(Person::from))
}

/// How many active admins there are, in the caller's transaction.
pub async fn active_admins(conn: Conn<'_>) -> Result<i64, sqlx::Error> {
    on_backend!(conn, c => sqlx::query_scalar(COUNT_ACTIVE_ADMINS).fetch_one(&mut *c).await)
}

impl Rebuildable for UsersProjection {
    fn parts(&self) -> Vec<Part> {
        vec![Part {
            name: USERS,
            tables: TABLES,
            clear: CLEAR,
        }]
    }

    fn writes_to(&self) -> Tables {
        self.tables
    }

    fn copy(&self, tables: Tables) -> Arc<dyn Rebuildable> {
        Arc::new(UsersProjection { tables })
    }

    fn alone(&self, name: &str) -> Option<Arc<dyn Rebuildable>> {
        (name == USERS).then(|| Arc::new(*self) as Arc<dyn Rebuildable>)
    }
}

impl Projector for UsersProjection {
    fn projections(&self) -> Vec<String> {
        vec![self.tables.name(USERS).into_owned()]
    }

    fn apply<'a>(
        &'a self,
        mut conn: Conn<'a>,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            // Each person's events in the batch folded onto their row as it stands.
            let mut people: Vec<Person> = Vec::new();
            let mut index: HashMap<Uuid, usize> = HashMap::new();
            for recorded in events.iter().filter(|r| is_person_event(r)) {
                let event = PersonEvent::decode(recorded)?;
                let at = match index.get(&recorded.stream_id) {
                    Some(at) => Some(*at),
                    None if matches!(event, PersonEvent::PersonAdded { .. }) => None,
                    None => {
                        let Some(stored) =
                            person_in(conn.reborrow(), self.tables, recorded.stream_id).await?
                        else {
                            return Err(not_added(recorded));
                        };
                        people.push(stored);
                        index.insert(recorded.stream_id, people.len() - 1);
                        Some(people.len() - 1)
                    }
                };
                let before = at.map(|at| people[at].clone());
                let after =
                    Person::evolve(before, recorded, &event).ok_or_else(|| not_added(recorded))?;
                match at {
                    Some(at) => people[at] = after,
                    None => {
                        people.push(after);
                        index.insert(recorded.stream_id, people.len() - 1);
                    }
                }
            }
            if people.is_empty() {
                return Ok(());
            }
            on_backend!(conn, c => {
                let mut query = sqlx::QueryBuilder::new(format!(
                    "INSERT INTO {} (id, username, roles, created_at, active, version) ",
                    self.tables.name("users")
                ));
                query.push_values(&people, |mut row, person| {
                    row.push_bind(person.id)
                        .push_bind(&person.username)
                        .push_bind(roles_text(&person.roles))
                        .push_bind(person.created_at)
                        .push_bind(person.active)
                        .push_bind(person.version);
                });
                // A person added before their events existed (the start-up import)
                // already has a row: it becomes the fold's.
                query.push(
                    " ON CONFLICT (id) DO UPDATE SET username = excluded.username, \
                      roles = excluded.roles, created_at = excluded.created_at, \
                      active = excluded.active, version = excluded.version",
                );
                query.build().execute(&mut *c).await?;
            });
            Ok(())
        })
    }
}

/// A person's event whose stream has no `PersonAdded` before it.
fn not_added(recorded: &RecordedEvent) -> ProjectionError {
    ProjectionError::Decode(serde::de::Error::custom(format!(
        "{} at version {} of stream {} comes before the person was added",
        recorded.event_type, recorded.version, recorded.stream_id
    )))
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
}
