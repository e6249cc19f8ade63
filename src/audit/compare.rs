//! Two versions of a quote side by side: every answer whose value differs between
//! them, grouped by section, each with the events between that changed it and who
//! made them; and every change of status between them. Pure: the page reads the
//! quote at the first version and the events up to the second, and this walks them.

use chrono::{DateTime, Utc};

use super::changes::{FieldChange, field_changes};
use crate::eventstore::RecordedEvent;
use crate::quoting::answers::{SECTION_TITLES, section_title};
use crate::quoting::domain::{Field, Quote, QuoteEvent, Status, evolve};

/// What differs between two versions of a quote.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// The sections with a difference, in the pages' order.
    pub sections: Vec<ComparedSection>,
    /// Every change of status between the two versions, oldest first.
    pub status_changes: Vec<StatusChange>,
    /// The events after the first version, up to and including the second.
    pub events_between: usize,
    /// The quote at the second version.
    pub after: Quote,
}

impl Comparison {
    /// Every difference, in the order the page shows them.
    pub fn differences(&self) -> impl Iterator<Item = &ComparedField> {
        self.sections.iter().flat_map(|s| s.fields.iter())
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct ComparedSection {
    pub title: &'static str,
    pub fields: Vec<ComparedField>,
}

/// One answer that differs: its value at the first version and at the second, and
/// each event between that changed it.
#[derive(Debug, Clone, PartialEq)]
pub struct ComparedField {
    pub change: FieldChange,
    pub changed_by: Vec<Step>,
}

/// One event between the two versions: which, by whom, when.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub version: i64,
    pub title: &'static str,
    pub actor: String,
    pub recorded_at: DateTime<Utc>,
}

impl Step {
    fn of(recorded: &RecordedEvent, event: &QuoteEvent) -> Self {
        Step {
            version: recorded.version,
            title: event.title(),
            actor: recorded.actor.clone(),
            recorded_at: recorded.recorded_at,
        }
    }
}

/// A change of status between the two versions, with the reason or note given.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusChange {
    pub step: Step,
    pub before: Option<Status>,
    pub after: Status,
    pub detail: Option<String>,
}

/// Compares `before` (the quote at the first version) with what `steps` (the events
/// after it, up to the second version) make of it.
pub fn compare(before: &Quote, steps: &[(RecordedEvent, QuoteEvent)]) -> Comparison {
    let mut state = before.clone();
    let mut touched: Vec<(Field, FieldChange, Step)> = Vec::new();
    let mut status_changes = Vec::new();
    for (recorded, event) in steps {
        let next = evolve(state.clone(), event);
        let step = Step::of(recorded, event);
        for (field, change) in field_changes(&state, &next) {
            touched.push((field, change, step.clone()));
        }
        if let Some((from, to)) = event.status_change()
            && from != Some(to)
        {
            status_changes.push(StatusChange {
                step,
                before: from,
                after: to,
                detail: event.decision_text().map(ToString::to_string),
            });
        }
        state = next;
    }

    let mut sections: Vec<ComparedSection> = Vec::new();
    let differences = field_changes(before, &state);
    for title in SECTION_TITLES {
        let fields: Vec<ComparedField> = differences
            .iter()
            .filter(|(field, _)| section_title(*field) == title)
            .map(|(field, change)| ComparedField {
                changed_by: touched
                    .iter()
                    .filter(|(f, c, _)| same_answer((*field, change), (*f, c)))
                    .map(|(_, _, step)| step.clone())
                    .collect(),
                change: change.clone(),
            })
            .collect();
        if !fields.is_empty() {
            sections.push(ComparedSection { title, fields });
        }
    }
    Comparison {
        sections,
        status_changes,
        events_between: steps.len(),
        after: state,
    }
}

/// Whether an event's change is about the same answer as a difference: the same
/// field, or for a child the same name added or removed.
fn same_answer(difference: (Field, &FieldChange), change: (Field, &FieldChange)) -> bool {
    match (difference.0, change.0) {
        (Field::Child(_), Field::Child(_)) => {
            let name = |c: &FieldChange| c.before.clone().or_else(|| c.after.clone());
            name(difference.1) == name(change.1)
        }
        (a, b) => a == b,
    }
}

#[cfg(test)]
mod tests {
    use chrono::Utc;
    use serde_json::Value;
    use uuid::Uuid;

    use super::*;
    use crate::eventstore::GlobalPosition;
    use crate::quoting::domain::{
        ContactDetails, FamilyDetails, GeographicDetails, NonEmptyText, PersonName, fold,
    };

    fn recorded(version: i64, actor: &str) -> RecordedEvent {
        RecordedEvent {
            global: GlobalPosition::START,
            stream_id: Uuid::nil(),
            version,
            event_id: Uuid::nil(),
            event_type: String::new(),
            schema_version: 1,
            payload: Value::Null,
            actor: actor.to_owned(),
            recorded_at: Utc::now(),
            request_id: None,
            prev_hash: String::new(),
            hash: String::new(),
        }
    }

    fn history() -> Vec<(RecordedEvent, QuoteEvent)> {
        let events = [
            (
                "asha",
                QuoteEvent::QuoteStarted {
                    reference: "Q-7K3M9P".into(),
                    applicant_name: PersonName::parse("Meera Iyer").unwrap(),
                    agent: "asha".into(),
                },
            ),
            (
                "asha",
                QuoteEvent::GeographicDetailsProvided(
                    GeographicDetails::parse("IN", "Maharashtra", "Pune", "411001").unwrap(),
                ),
            ),
            (
                "asha",
                QuoteEvent::QuoteSaved {
                    from: Status::Initiated,
                    to: Status::Saved,
                },
            ),
            (
                "asha",
                QuoteEvent::FamilyDetailsProvided(
                    FamilyDetails::parse("2", "Ravi", &["Kiran".into()]).unwrap(),
                ),
            ),
            (
                "asha",
                QuoteEvent::QuoteFinalized {
                    from: Status::Saved,
                    to: Status::Finalized,
                },
            ),
            (
                "uma",
                QuoteEvent::QuoteReferredBack {
                    note: NonEmptyText::parse("Which city?").unwrap(),
                    from: Status::Finalized,
                    to: Status::Saved,
                },
            ),
            (
                "bilal",
                QuoteEvent::GeographicDetailsProvided(
                    GeographicDetails::parse("IN", "Maharashtra", "Mumbai", "411001").unwrap(),
                ),
            ),
            (
                "asha",
                QuoteEvent::FamilyDetailsProvided(
                    FamilyDetails::parse("3", "Ravi", &["Kiran".into(), "Asha".into()]).unwrap(),
                ),
            ),
            (
                "asha",
                QuoteEvent::ContactDetailsProvided(
                    ContactDetails::parse("m@example.com", "+919876543210").unwrap(),
                ),
            ),
            (
                "asha",
                QuoteEvent::GeographicDetailsProvided(
                    GeographicDetails::parse("IN", "Maharashtra", "Mumbai", "400001").unwrap(),
                ),
            ),
        ];
        events
            .into_iter()
            .enumerate()
            .map(|(i, (actor, event))| (recorded(i as i64 + 1, actor), event))
            .collect()
    }

    fn at(steps: &[(RecordedEvent, QuoteEvent)], version: usize) -> Quote {
        fold(steps[..version].iter().map(|(_, e)| e))
    }

    #[test]
    fn the_differences_are_those_of_the_two_versions_grouped_by_section_with_who_changed_each() {
        let steps = history();
        let before = at(&steps, 4);
        let comparison = compare(&before, &steps[4..]);

        let titles: Vec<&str> = comparison.sections.iter().map(|s| s.title).collect();
        assert_eq!(
            titles,
            ["Geographic details", "Contact details", "Family details"]
        );
        let lines: Vec<(String, Vec<(i64, &str)>)> = comparison
            .differences()
            .map(|d| {
                let by = d
                    .changed_by
                    .iter()
                    .map(|s| (s.version, s.actor.as_str()))
                    .collect();
                (d.change.line(), by)
            })
            .collect();
        assert_eq!(
            lines,
            [
                ("City: Pune → Mumbai".to_owned(), vec![(7, "bilal")]),
                (
                    "Postal code: 411001 → 400001".to_owned(),
                    vec![(10, "asha")]
                ),
                ("Email: m@example.com".to_owned(), vec![(9, "asha")]),
                ("Phone number: +919876543210".to_owned(), vec![(9, "asha")]),
                ("Preferred contact: Email".to_owned(), vec![(9, "asha")]),
                ("Number of dependents: 2 → 3".to_owned(), vec![(8, "asha")]),
                ("Child added: Asha".to_owned(), vec![(8, "asha")]),
            ]
        );
        let differences: Vec<FieldChange> =
            comparison.differences().map(|d| d.change.clone()).collect();
        assert_eq!(
            differences,
            super::super::changes::changes(&before, &at(&steps, 10))
        );
        assert_eq!(comparison.events_between, 6);
    }

    #[test]
    fn status_changes_between_are_listed_with_their_note_and_a_field_changed_back_is_no_difference()
    {
        let steps = history();
        let comparison = compare(&at(&steps, 3), &steps[3..7]);

        let statuses: Vec<(i64, Option<Status>, Status, Option<&str>)> = comparison
            .status_changes
            .iter()
            .map(|c| (c.step.version, c.before, c.after, c.detail.as_deref()))
            .collect();
        assert_eq!(
            statuses,
            [
                (5, Some(Status::Saved), Status::Finalized, None),
                (
                    6,
                    Some(Status::Finalized),
                    Status::Saved,
                    Some("Which city?")
                ),
            ]
        );

        // Pune → Mumbai → back is nothing to show.
        let mut steps = history();
        steps.push((
            recorded(11, "asha"),
            QuoteEvent::GeographicDetailsProvided(
                GeographicDetails::parse("IN", "Maharashtra", "Pune", "411001").unwrap(),
            ),
        ));
        let comparison = compare(&at(&steps, 6), &steps[6..]);
        assert!(
            comparison.differences().all(|d| d.change.field != "City"),
            "{comparison:?}"
        );
        assert!(comparison.status_changes.is_empty());
    }
}
