//! The facts recorded about a quote, and how they are written to and read from the
//! event store.
//!
//! The store keeps `event_type`, `schema_version` and `payload` in separate columns,
//! and the actor and time in the row's metadata, so an event here carries only what
//! the quote needs. Serialised form: `{"type": "QuoteApproved", "data": {...}}`, of
//! which `type` becomes `event_type` and `data` becomes `payload`.

use serde::de::Error as _;
use serde::{Deserialize, Serialize};

use super::sections::{ContactDetails, FamilyDetails, GeographicDetails, NonEmptyText, PersonName};
use super::status::Status;
use super::upcast;
use crate::eventstore::{NewEvent, RecordedEvent};
use crate::kernel::Role;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum QuoteEvent {
    QuoteStarted {
        reference: String,
        applicant_name: PersonName,
        /// Username of the agent who started the quote.
        agent: String,
    },
    /// The agent corrected the applicant's name given when the quote was started.
    ApplicantNameCorrected {
        applicant_name: PersonName,
    },
    GeographicDetailsProvided(GeographicDetails),
    ContactDetailsProvided(ContactDetails),
    FamilyDetailsProvided(FamilyDetails),
    /// The first section was provided: the quote now has answers worth keeping.
    QuoteSaved {
        from: Status,
        to: Status,
    },
    QuoteFinalized {
        from: Status,
        to: Status,
    },
    QuoteApproved {
        from: Status,
        to: Status,
    },
    QuoteRejected {
        reason: NonEmptyText,
        from: Status,
        to: Status,
    },
    /// An underwriter sent the quote back to its agent for changes.
    QuoteReferredBack {
        note: NonEmptyText,
        from: Status,
        to: Status,
    },
    QuoteWithdrawn {
        from: Status,
        to: Status,
    },
}

/// The kinds of quote event, without their data: what the audit log filters by and
/// what code that cares about *which* event happened matches on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EventKind {
    QuoteStarted,
    ApplicantNameCorrected,
    GeographicDetailsProvided,
    ContactDetailsProvided,
    FamilyDetailsProvided,
    QuoteSaved,
    QuoteFinalized,
    QuoteApproved,
    QuoteRejected,
    QuoteReferredBack,
    QuoteWithdrawn,
}

impl EventKind {
    pub const ALL: [EventKind; 11] = [
        EventKind::QuoteStarted,
        EventKind::ApplicantNameCorrected,
        EventKind::GeographicDetailsProvided,
        EventKind::ContactDetailsProvided,
        EventKind::FamilyDetailsProvided,
        EventKind::QuoteSaved,
        EventKind::QuoteFinalized,
        EventKind::QuoteApproved,
        EventKind::QuoteRejected,
        EventKind::QuoteReferredBack,
        EventKind::QuoteWithdrawn,
    ];

    /// The stored `event_type`: the variant's name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::QuoteStarted => "QuoteStarted",
            EventKind::ApplicantNameCorrected => "ApplicantNameCorrected",
            EventKind::GeographicDetailsProvided => "GeographicDetailsProvided",
            EventKind::ContactDetailsProvided => "ContactDetailsProvided",
            EventKind::FamilyDetailsProvided => "FamilyDetailsProvided",
            EventKind::QuoteSaved => "QuoteSaved",
            EventKind::QuoteFinalized => "QuoteFinalized",
            EventKind::QuoteApproved => "QuoteApproved",
            EventKind::QuoteRejected => "QuoteRejected",
            EventKind::QuoteReferredBack => "QuoteReferredBack",
            EventKind::QuoteWithdrawn => "QuoteWithdrawn",
        }
    }

    /// What happened, in the words shown on the timeline and the audit log.
    pub fn title(self) -> &'static str {
        match self {
            EventKind::QuoteStarted => "Quote started",
            EventKind::ApplicantNameCorrected => "Applicant's name corrected",
            EventKind::GeographicDetailsProvided => "Geographic details provided",
            EventKind::ContactDetailsProvided => "Contact details provided",
            EventKind::FamilyDetailsProvided => "Family details provided",
            EventKind::QuoteSaved => "Quote saved",
            EventKind::QuoteFinalized => "Quote submitted for approval",
            EventKind::QuoteApproved => "Quote approved",
            EventKind::QuoteRejected => "Quote rejected",
            EventKind::QuoteReferredBack => "Quote referred back to the agent",
            EventKind::QuoteWithdrawn => "Quote withdrawn",
        }
    }

    /// An underwriter's decision: the events that take a quote out of the queue by
    /// someone other than its agent.
    pub fn is_decision(self) -> bool {
        matches!(
            self,
            EventKind::QuoteApproved | EventKind::QuoteRejected | EventKind::QuoteReferredBack
        )
    }

    /// The role the actor of such an event acted in. The domain lets only
    /// underwriters decide and only the quote's agent do everything else, so the
    /// event itself says which role was used.
    pub fn acting_role(self) -> Role {
        if self.is_decision() {
            Role::Underwriter
        } else {
            Role::Agent
        }
    }
}

impl std::str::FromStr for EventKind {
    type Err = ();

    fn from_str(s: &str) -> Result<Self, ()> {
        EventKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == s)
            .ok_or(())
    }
}

impl QuoteEvent {
    /// Version of the payload shapes below, the one written. A payload changes shape
    /// by a new step in `upcast`, which reads every older version as this one.
    pub const SCHEMA_VERSION: i32 = upcast::CURRENT;

    /// Which kind of event this is, without its data.
    pub fn kind(&self) -> EventKind {
        match self {
            QuoteEvent::QuoteStarted { .. } => EventKind::QuoteStarted,
            QuoteEvent::ApplicantNameCorrected { .. } => EventKind::ApplicantNameCorrected,
            QuoteEvent::GeographicDetailsProvided(_) => EventKind::GeographicDetailsProvided,
            QuoteEvent::ContactDetailsProvided(_) => EventKind::ContactDetailsProvided,
            QuoteEvent::FamilyDetailsProvided(_) => EventKind::FamilyDetailsProvided,
            QuoteEvent::QuoteSaved { .. } => EventKind::QuoteSaved,
            QuoteEvent::QuoteFinalized { .. } => EventKind::QuoteFinalized,
            QuoteEvent::QuoteApproved { .. } => EventKind::QuoteApproved,
            QuoteEvent::QuoteRejected { .. } => EventKind::QuoteRejected,
            QuoteEvent::QuoteReferredBack { .. } => EventKind::QuoteReferredBack,
            QuoteEvent::QuoteWithdrawn { .. } => EventKind::QuoteWithdrawn,
        }
    }

    /// The variant name, stored as the row's `event_type`.
    pub fn event_type(&self) -> &'static str {
        self.kind().as_str()
    }

    /// The event's data without its type tag, stored as the row's `payload`.
    pub fn to_payload(&self) -> serde_json::Value {
        // Every field is a string, number, list or struct of those, which serde_json
        // cannot fail to represent.
        let mut tagged =
            serde_json::to_value(self).expect("a QuoteEvent always serialises to JSON");
        tagged
            .get_mut("data")
            .map(serde_json::Value::take)
            .unwrap_or_default()
    }

    /// Rebuilds an event from a stored row, of any version this build knows: the
    /// payload is read through the upcasters (the stored one is left as it is).
    pub fn from_stored(
        event_type: &str,
        schema_version: i32,
        payload: serde_json::Value,
    ) -> Result<Self, serde_json::Error> {
        let payload = upcast::upcast(event_type, schema_version, payload)
            .map_err(serde_json::Error::custom)?;
        serde_json::from_value(serde_json::json!({ "type": event_type, "data": payload }))
    }

    /// What happened, in the words shown on the timeline.
    pub fn title(&self) -> &'static str {
        self.kind().title()
    }

    /// The reason for a rejection or the note of a referral: the words an
    /// underwriter wrote with their decision.
    pub fn decision_text(&self) -> Option<&NonEmptyText> {
        match self {
            QuoteEvent::QuoteRejected { reason, .. } => Some(reason),
            QuoteEvent::QuoteReferredBack { note, .. } => Some(note),
            _ => None,
        }
    }

    /// The event as the store keeps it: type, schema version and payload.
    pub fn encode(&self) -> NewEvent {
        NewEvent {
            event_type: self.event_type().to_owned(),
            schema_version: Self::SCHEMA_VERSION,
            payload: self.to_payload(),
        }
    }

    /// The event a stored row holds. Every reader of quote events goes through here.
    pub fn decode(recorded: &RecordedEvent) -> Result<Self, serde_json::Error> {
        Self::from_stored(
            &recorded.event_type,
            recorded.schema_version,
            recorded.payload.clone(),
        )
    }

    /// The status before and after, for events that change it. Starting a quote
    /// moves it from no status at all to Initiated.
    pub fn status_change(&self) -> Option<(Option<Status>, Status)> {
        match self {
            QuoteEvent::QuoteStarted { .. } => Some((None, Status::Initiated)),
            QuoteEvent::ApplicantNameCorrected { .. }
            | QuoteEvent::GeographicDetailsProvided(_)
            | QuoteEvent::ContactDetailsProvided(_)
            | QuoteEvent::FamilyDetailsProvided(_) => None,
            QuoteEvent::QuoteSaved { from, to }
            | QuoteEvent::QuoteFinalized { from, to }
            | QuoteEvent::QuoteApproved { from, to }
            | QuoteEvent::QuoteRejected { from, to, .. }
            | QuoteEvent::QuoteReferredBack { from, to, .. }
            | QuoteEvent::QuoteWithdrawn { from, to } => Some((Some(*from), *to)),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn one_of_each() -> Vec<QuoteEvent> {
        let text = |s: &str| NonEmptyText::parse(s).unwrap();
        vec![
            QuoteEvent::QuoteStarted {
                reference: "Q-7K3M9P".into(),
                applicant_name: PersonName::parse("Asha Rao").unwrap(),
                agent: "alice".into(),
            },
            QuoteEvent::ApplicantNameCorrected {
                applicant_name: PersonName::parse("Asha Rao-Iyer").unwrap(),
            },
            QuoteEvent::GeographicDetailsProvided(
                GeographicDetails::parse("IN", "Maharashtra", "Mumbai", "400001").unwrap(),
            ),
            QuoteEvent::ContactDetailsProvided(
                ContactDetails::parse("asha@example.com", "+91 98765 43210").unwrap(),
            ),
            QuoteEvent::FamilyDetailsProvided(
                FamilyDetails::parse("2", "Vikram Rao", &["Meera".to_owned()]).unwrap(),
            ),
            QuoteEvent::QuoteSaved {
                from: Status::Initiated,
                to: Status::Saved,
            },
            QuoteEvent::QuoteFinalized {
                from: Status::Saved,
                to: Status::Finalized,
            },
            QuoteEvent::QuoteApproved {
                from: Status::Finalized,
                to: Status::Approved,
            },
            QuoteEvent::QuoteRejected {
                reason: text("Income not verified"),
                from: Status::Finalized,
                to: Status::Rejected,
            },
            QuoteEvent::QuoteReferredBack {
                note: text("Please check the postal code"),
                from: Status::Finalized,
                to: Status::Saved,
            },
            QuoteEvent::QuoteWithdrawn {
                from: Status::Saved,
                to: Status::Withdrawn,
            },
        ]
    }

    #[test]
    fn every_event_round_trips_through_its_stored_form() {
        let events = one_of_each();
        let types: Vec<&str> = events.iter().map(QuoteEvent::event_type).collect();
        assert_eq!(
            types,
            [
                "QuoteStarted",
                "ApplicantNameCorrected",
                "GeographicDetailsProvided",
                "ContactDetailsProvided",
                "FamilyDetailsProvided",
                "QuoteSaved",
                "QuoteFinalized",
                "QuoteApproved",
                "QuoteRejected",
                "QuoteReferredBack",
                "QuoteWithdrawn",
            ]
        );
        for event in events {
            let stored = QuoteEvent::from_stored(
                event.event_type(),
                QuoteEvent::SCHEMA_VERSION,
                event.to_payload(),
            );
            assert_eq!(stored.unwrap(), event);
        }
    }

    #[test]
    fn the_payload_is_the_data_without_the_type_tag() {
        let event = QuoteEvent::QuoteRejected {
            reason: NonEmptyText::parse("Income not verified").unwrap(),
            from: Status::Finalized,
            to: Status::Rejected,
        };
        assert_eq!(
            event.to_payload(),
            json!({"reason": "Income not verified", "from": "Finalized", "to": "Rejected"})
        );

        let event = QuoteEvent::ContactDetailsProvided(
            ContactDetails::parse("a@example.com", "+14155550100").unwrap(),
        );
        assert_eq!(
            event.to_payload(),
            json!({"email": "a@example.com", "phone": "+14155550100", "preferred_contact": "email"})
        );
    }

    #[test]
    fn an_unknown_schema_version_is_refused_with_a_clear_error() {
        let error =
            QuoteEvent::from_stored("QuoteSaved", 3, json!({"from": "Initiated", "to": "Saved"}))
                .unwrap_err();
        assert_eq!(
            error.to_string(),
            "QuoteSaved event has schema version 3, but this build reads versions 1 to 2"
        );
    }

    #[test]
    fn a_version_one_contact_event_reads_as_preferring_email_and_a_new_one_keeps_its_choice() {
        let stored = json!({"email": "a@example.com", "phone": "+14155550100"});
        let event = QuoteEvent::from_stored("ContactDetailsProvided", 1, stored).unwrap();
        assert_eq!(
            event,
            QuoteEvent::ContactDetailsProvided(
                ContactDetails::parse("a@example.com", "+14155550100").unwrap()
            )
        );
        let phone = QuoteEvent::ContactDetailsProvided(
            ContactDetails::parse_with("a@example.com", "+14155550100", "phone").unwrap(),
        );
        assert_eq!(phone.encode().schema_version, 2);
        let read = QuoteEvent::from_stored("ContactDetailsProvided", 2, phone.to_payload());
        assert_eq!(read.unwrap(), phone);
        // Without the upcaster a version-one payload does not read at all.
        let bare: Result<QuoteEvent, _> = serde_json::from_value(json!({
            "type": "ContactDetailsProvided",
            "data": {"email": "a@example.com", "phone": "+14155550100"}
        }));
        assert!(bare.is_err());
    }

    #[test]
    fn an_unknown_event_type_is_refused() {
        let error = QuoteEvent::from_stored("QuoteTeleported", 1, json!({})).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("unknown variant `QuoteTeleported`"),
            "{error}"
        );
    }

    #[test]
    fn every_event_has_a_title_in_the_domains_words() {
        let titles: Vec<&str> = one_of_each().iter().map(QuoteEvent::title).collect();
        assert_eq!(
            titles,
            [
                "Quote started",
                "Applicant's name corrected",
                "Geographic details provided",
                "Contact details provided",
                "Family details provided",
                "Quote saved",
                "Quote submitted for approval",
                "Quote approved",
                "Quote rejected",
                "Quote referred back to the agent",
                "Quote withdrawn",
            ]
        );
    }

    #[test]
    fn status_changes_are_reported_for_lifecycle_events_only() {
        let changes: Vec<_> = one_of_each()
            .iter()
            .map(QuoteEvent::status_change)
            .collect();
        assert_eq!(
            changes,
            [
                Some((None, Status::Initiated)),
                None,
                None,
                None,
                None,
                Some((Some(Status::Initiated), Status::Saved)),
                Some((Some(Status::Saved), Status::Finalized)),
                Some((Some(Status::Finalized), Status::Approved)),
                Some((Some(Status::Finalized), Status::Rejected)),
                Some((Some(Status::Finalized), Status::Saved)),
                Some((Some(Status::Saved), Status::Withdrawn)),
            ]
        );
    }
}
