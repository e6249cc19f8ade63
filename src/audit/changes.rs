//! What changed between two states of a quote, field by field, in the words of the
//! pages ("City: Pune → Mumbai", "Child added: Asha"). Pure: the timeline projection
//! stores these with each event; the fields, their labels and their values come from
//! quoting's answers, so they read the same as everywhere else.

use serde::{Deserialize, Serialize};

use crate::quoting::domain::{Field, Quote};

/// One field that an event changed. `before` is `None` when the field had no value
/// yet, `after` when the event took it away (a spouse no longer listed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub before: Option<String>,
    pub after: Option<String>,
}

impl FieldChange {
    fn new(field: Field, before: Option<String>, after: Option<String>) -> Self {
        FieldChange {
            field: field.label().to_owned(),
            before,
            after,
        }
    }

    fn is_child(&self) -> bool {
        self.field == Field::Child(0).label()
    }

    /// The change as the timeline says it.
    pub fn line(&self) -> String {
        let field = &self.field;
        match (&self.before, &self.after) {
            (None, Some(after)) if self.is_child() => format!("Child added: {after}"),
            (Some(before), None) if self.is_child() => format!("Child removed: {before}"),
            (None, Some(after)) => format!("{field}: {after}"),
            (Some(before), None) => format!("{field} removed: {before}"),
            (Some(before), Some(after)) => format!("{field}: {before} → {after}"),
            (None, None) => field.clone(),
        }
    }
}

/// Every field whose value differs between two states of a quote, in the order the
/// pages ask for them. Children are compared as a list of names: each name not
/// matched on the other side is an addition or a removal.
pub fn changes(before: &Quote, after: &Quote) -> Vec<FieldChange> {
    field_changes(before, after)
        .into_iter()
        .map(|(_, change)| change)
        .collect()
}

/// [`changes`], each with the field it is about (`Field::Child(0)` for a child
/// added or removed). Only the sections that differ are formatted and compared: most
/// events change one section or none.
pub fn field_changes(before: &Quote, after: &Quote) -> Vec<(Field, FieldChange)> {
    let mut found: Vec<(Field, FieldChange)> = Field::ANSWERS
        .into_iter()
        .filter(|&field| !before.same_source_of(after, field))
        .filter_map(|field| {
            let (old, new) = (before.answer(field), after.answer(field));
            (old != new).then(|| (field, FieldChange::new(field, old, new)))
        })
        .collect();
    if before.same_source_of(after, Field::Children) {
        return found;
    }

    let mut added = after.children();
    let mut removed = Vec::new();
    for child in before.children() {
        match added.iter().position(|name| *name == child) {
            Some(index) => {
                added.remove(index);
            }
            None => removed.push(child),
        }
    }
    let child = |before, after| {
        (
            Field::Child(0),
            FieldChange::new(Field::Child(0), before, after),
        )
    };
    found.extend(removed.into_iter().map(|name| child(Some(name), None)));
    found.extend(added.into_iter().map(|name| child(None, Some(name))));
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quoting::domain::{
        ContactDetails, FamilyDetails, GeographicDetails, PersonName, QuoteEvent,
    };

    fn quote() -> Quote {
        let events = [
            QuoteEvent::QuoteStarted {
                reference: "Q-7K3M9P".into(),
                applicant_name: PersonName::parse("Meera Iyer").unwrap(),
                agent: "asha".into(),
            },
            QuoteEvent::GeographicDetailsProvided(
                GeographicDetails::parse("IN", "Maharashtra", "Pune", "411001").unwrap(),
            ),
            QuoteEvent::ContactDetailsProvided(
                ContactDetails::parse("a@x.com", "+919876543210").unwrap(),
            ),
            QuoteEvent::FamilyDetailsProvided(
                FamilyDetails::parse("2", "Ravi", &["Kiran".into()]).unwrap(),
            ),
        ];
        crate::quoting::domain::fold(&events)
    }

    fn lines(before: &Quote, after: &Quote) -> Vec<String> {
        changes(before, after)
            .iter()
            .map(FieldChange::line)
            .collect()
    }

    #[test]
    fn a_changed_field_reads_old_value_arrow_new_value() {
        let before = quote();
        let mut after = before.clone();
        after.geographic =
            Some(GeographicDetails::parse("IN", "Maharashtra", "Mumbai", "400001").unwrap());
        after.contact = Some(ContactDetails::parse("b@x.com", "+919876543210").unwrap());

        assert_eq!(
            lines(&before, &after),
            [
                "City: Pune → Mumbai",
                "Postal code: 411001 → 400001",
                "Email: a@x.com → b@x.com"
            ]
        );
    }

    #[test]
    fn children_are_added_and_removed_by_name_and_a_spouse_can_be_removed() {
        let before = quote();
        let mut after = before.clone();
        after.family =
            Some(FamilyDetails::parse("3", "", &["Asha".into(), "Kiran".into()]).unwrap());

        assert_eq!(
            lines(&before, &after),
            [
                "Number of dependents: 2 → 3",
                "Spouse name removed: Ravi",
                "Child added: Asha"
            ]
        );
        assert_eq!(
            lines(&after, &before).last().unwrap(),
            "Child removed: Asha"
        );
    }

    #[test]
    fn only_the_sections_that_differ_are_compared() {
        let before = quote();
        let mut after = before.clone();
        after.status = Some(crate::quoting::domain::Status::Finalized);
        after.referral_count += 1;
        assert!(changes(&before, &after).is_empty());

        after.contact = Some(ContactDetails::parse("b@x.com", "+919876543210").unwrap());
        assert_eq!(lines(&before, &after), ["Email: a@x.com → b@x.com"]);
        for field in Field::ANSWERS {
            let same = matches!(field, Field::Email | Field::Phone | Field::PreferredContact);
            assert_eq!(before.same_source_of(&after, field), !same, "{field:?}");
        }
        assert!(before.same_source_of(&after, Field::Children));
    }

    #[test]
    fn a_first_answer_shows_its_value_alone() {
        let before = Quote::default();
        let after = quote();

        let found = lines(&before, &after);

        assert_eq!(found[0], "Applicant name: Meera Iyer");
        assert!(found.contains(&"Country: India".to_owned()), "{found:?}");
        assert!(
            found.contains(&"Child added: Kiran".to_owned()),
            "{found:?}"
        );
        assert!(lines(&after, &after).is_empty());
    }
}
