//! A person's record as events: who was added with which roles, every role granted
//! or taken away, deactivation, reactivation and password resets, on a stream of
//! their own (keyed by their user id) in the same event store as the quotes, with
//! the same hash chain. Passwords and their hashes never enter an event: they live
//! beside the stream in `credentials` (`identity::people`).
//!
//! Pure: the events, their one codec, and the fold that the `users` projection, the
//! person's page and "which roles did they hold then" all share.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::eventstore::{NewEvent, RecordedEvent};
use crate::kernel::Role;

/// One change to a person's record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum PersonEvent {
    PersonAdded {
        username: String,
        roles: Vec<Role>,
    },
    RoleGranted {
        role: Role,
    },
    RoleRevoked {
        role: Role,
    },
    /// Their sessions end and they cannot sign in until reactivated.
    PersonDeactivated {},
    PersonReactivated {},
    /// An administrator gave them a new password; a one-time one must be changed at
    /// the next sign-in.
    PasswordReset {
        one_time: bool,
    },
    /// They changed their own password.
    PasswordChanged {},
}

/// The event types a person's stream holds, by name.
pub const PERSON_EVENT_TYPES: [&str; 7] = [
    "PersonAdded",
    "RoleGranted",
    "RoleRevoked",
    "PersonDeactivated",
    "PersonReactivated",
    "PasswordReset",
    "PasswordChanged",
];

impl PersonEvent {
    /// The payload's shape; a change of it adds an upcaster, as quotes do.
    pub const SCHEMA_VERSION: i32 = 1;

    pub fn event_type(&self) -> &'static str {
        match self {
            PersonEvent::PersonAdded { .. } => "PersonAdded",
            PersonEvent::RoleGranted { .. } => "RoleGranted",
            PersonEvent::RoleRevoked { .. } => "RoleRevoked",
            PersonEvent::PersonDeactivated {} => "PersonDeactivated",
            PersonEvent::PersonReactivated {} => "PersonReactivated",
            PersonEvent::PasswordReset { .. } => "PasswordReset",
            PersonEvent::PasswordChanged {} => "PasswordChanged",
        }
    }

    pub fn encode(&self) -> NewEvent {
        let mut tagged = serde_json::to_value(self).expect("a person event is plain data");
        let payload = tagged
            .get_mut("data")
            .map(serde_json::Value::take)
            .unwrap_or_else(|| serde_json::json!({}));
        NewEvent {
            event_type: self.event_type().to_owned(),
            schema_version: Self::SCHEMA_VERSION,
            payload,
        }
    }

    /// The event a stored row holds. Every reader of person events goes through here.
    pub fn decode(recorded: &RecordedEvent) -> Result<Self, serde_json::Error> {
        if recorded.schema_version != Self::SCHEMA_VERSION {
            return Err(serde::de::Error::custom(format!(
                "person events of schema version {} cannot be read (this build reads {})",
                recorded.schema_version,
                Self::SCHEMA_VERSION
            )));
        }
        serde_json::from_value(serde_json::json!({
            "type": recorded.event_type,
            "data": recorded.payload,
        }))
    }

    /// What happened, in the words a person's page shows.
    pub fn describe(&self) -> String {
        match self {
            PersonEvent::PersonAdded { username, roles } => {
                format!("{username} added as {}", roles_phrase(roles))
            }
            PersonEvent::RoleGranted { role } => format!("Role granted: {role}"),
            PersonEvent::RoleRevoked { role } => format!("Role taken away: {role}"),
            PersonEvent::PersonDeactivated {} => "Deactivated: cannot sign in".to_owned(),
            PersonEvent::PersonReactivated {} => "Reactivated: can sign in again".to_owned(),
            PersonEvent::PasswordReset { one_time: true } => {
                "Password reset (one-time, to be changed at the next sign-in)".to_owned()
            }
            PersonEvent::PasswordReset { one_time: false } => "Password reset".to_owned(),
            PersonEvent::PasswordChanged {} => "Changed their own password".to_owned(),
        }
    }
}

/// Whether a stored event is one of a person's: its type is a person event's.
pub fn is_person_event(recorded: &RecordedEvent) -> bool {
    PERSON_EVENT_TYPES.contains(&recorded.event_type.as_str())
}

/// "agent", "agent and auditor", "agent, underwriter and admin".
pub fn roles_phrase(roles: &[Role]) -> String {
    let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
    match names.as_slice() {
        [] => "no role".to_owned(),
        [one] => (*one).to_owned(),
        [rest @ .., last] => format!("{} and {last}", rest.join(", ")),
    }
}

/// A person as their events leave them: what the `users` table holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Person {
    pub id: Uuid,
    pub username: String,
    /// In `Role::ALL` order, without repeats.
    pub roles: Vec<Role>,
    pub active: bool,
    /// When they were added.
    pub created_at: DateTime<Utc>,
    /// The stream's version: a form drawn from it appends on that condition.
    pub version: i64,
}

impl Person {
    /// The person after `event` (the first must be `PersonAdded`); `None` for a
    /// stream that does not start with one.
    pub fn evolve(
        state: Option<Person>,
        recorded: &RecordedEvent,
        event: &PersonEvent,
    ) -> Option<Person> {
        let mut person = match (state, event) {
            (None, PersonEvent::PersonAdded { username, roles }) => Person {
                id: recorded.stream_id,
                username: username.clone(),
                roles: in_order(roles),
                active: true,
                created_at: recorded.recorded_at,
                version: 0,
            },
            (None, _) => return None,
            (Some(person), _) => person,
        };
        match event {
            PersonEvent::PersonAdded { .. } => {}
            PersonEvent::RoleGranted { role } => {
                person.roles.push(*role);
                person.roles = in_order(&person.roles);
            }
            PersonEvent::RoleRevoked { role } => person.roles.retain(|r| r != role),
            PersonEvent::PersonDeactivated {} => person.active = false,
            PersonEvent::PersonReactivated {} => person.active = true,
            PersonEvent::PasswordReset { .. } | PersonEvent::PasswordChanged {} => {}
        }
        person.version = recorded.version;
        Some(person)
    }

    /// The fold of a whole stream (or a prefix of it).
    pub fn fold<'a>(
        events: impl IntoIterator<Item = (&'a RecordedEvent, &'a PersonEvent)>,
    ) -> Option<Person> {
        events.into_iter().fold(None, |state, (recorded, event)| {
            Person::evolve(state, recorded, event)
        })
    }

    pub fn is_admin(&self) -> bool {
        self.active && self.roles.contains(&Role::Admin)
    }
}

/// Roles in `Role::ALL` order, each once.
pub fn in_order(roles: &[Role]) -> Vec<Role> {
    Role::ALL
        .into_iter()
        .filter(|role| roles.contains(role))
        .collect()
}

/// The events that take a person from `from` roles to `to` roles: grants first,
/// then what is taken away, each in `Role::ALL` order.
pub fn role_changes(from: &[Role], to: &[Role]) -> Vec<PersonEvent> {
    let granted = Role::ALL
        .into_iter()
        .filter(|role| to.contains(role) && !from.contains(role))
        .map(|role| PersonEvent::RoleGranted { role });
    let revoked = Role::ALL
        .into_iter()
        .filter(|role| from.contains(role) && !to.contains(role))
        .map(|role| PersonEvent::RoleRevoked { role });
    granted.chain(revoked).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eventstore::GlobalPosition;

    fn recorded(version: i64, event: &PersonEvent) -> RecordedEvent {
        let new = event.encode();
        RecordedEvent {
            global: GlobalPosition::START,
            stream_id: Uuid::nil(),
            version,
            event_id: Uuid::nil(),
            event_type: new.event_type,
            schema_version: new.schema_version,
            payload: new.payload,
            actor: "root".into(),
            recorded_at: Utc::now(),
            request_id: None,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    #[test]
    fn every_event_reads_back_as_written_under_its_own_type() {
        let events = [
            PersonEvent::PersonAdded {
                username: "asha".into(),
                roles: vec![Role::Agent],
            },
            PersonEvent::RoleGranted {
                role: Role::Auditor,
            },
            PersonEvent::RoleRevoked { role: Role::Agent },
            PersonEvent::PersonDeactivated {},
            PersonEvent::PersonReactivated {},
            PersonEvent::PasswordReset { one_time: true },
            PersonEvent::PasswordChanged {},
        ];
        for (n, event) in events.iter().enumerate() {
            let stored = recorded(n as i64 + 1, event);
            assert_eq!(stored.event_type, PERSON_EVENT_TYPES[n]);
            assert!(is_person_event(&stored));
            assert_eq!(&PersonEvent::decode(&stored).unwrap(), event);
        }
    }

    #[test]
    fn a_payload_holds_no_password() {
        let reset = PersonEvent::PasswordReset { one_time: true }.encode();
        assert_eq!(reset.payload, serde_json::json!({ "one_time": true }));
        let changed = PersonEvent::PasswordChanged {}.encode();
        assert_eq!(changed.payload, serde_json::json!({}));
    }

    #[test]
    fn the_fold_follows_grants_revocations_and_deactivation() {
        let events = [
            PersonEvent::PersonAdded {
                username: "uma".into(),
                roles: vec![Role::Admin, Role::Agent],
            },
            PersonEvent::RoleGranted {
                role: Role::Underwriter,
            },
            PersonEvent::RoleRevoked { role: Role::Agent },
            PersonEvent::PersonDeactivated {},
        ];
        let stored: Vec<RecordedEvent> = events
            .iter()
            .enumerate()
            .map(|(n, e)| recorded(n as i64 + 1, e))
            .collect();
        let person = Person::fold(stored.iter().zip(&events)).unwrap();

        assert_eq!(person.roles, [Role::Underwriter, Role::Admin]);
        assert!(!person.active);
        assert!(!person.is_admin());
        assert_eq!(person.version, 4);
        assert_eq!(
            Person::fold(stored[1..].iter().zip(&events[1..])),
            None,
            "a stream must start with PersonAdded"
        );
    }

    #[test]
    fn role_changes_grant_and_take_away_only_the_difference() {
        assert_eq!(
            role_changes(&[Role::Agent, Role::Admin], &[Role::Admin, Role::Auditor]),
            [
                PersonEvent::RoleGranted {
                    role: Role::Auditor
                },
                PersonEvent::RoleRevoked { role: Role::Agent },
            ]
        );
        assert!(role_changes(&[Role::Agent], &[Role::Agent]).is_empty());
        assert_eq!(
            roles_phrase(&[Role::Agent, Role::Underwriter, Role::Admin]),
            "agent, underwriter and admin"
        );
    }
}
