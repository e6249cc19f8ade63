//! What a quote shows: its answers as labelled values, section by section. Quoting's
//! public read API for every page that displays a quote (check your answers, the
//! underwriter's view, the quote as it stood after an event) and for the timeline's
//! field-by-field changes, so each field is named and formatted once.

use super::domain::{Field, Quote};

/// One answer as a page shows it.
pub struct AnswerRow {
    pub field: Field,
    pub label: &'static str,
    pub value: String,
}

/// One section's answers. `slug` is the section's page.
pub struct AnswerSection {
    pub slug: &'static str,
    pub title: &'static str,
    pub rows: Vec<AnswerRow>,
}

impl Quote {
    /// The value of one single-valued answer as pages show it, or `None` when it
    /// has not been given (or, for a spouse, when there is none).
    pub fn answer(&self, field: Field) -> Option<String> {
        let geographic = self.geographic.as_ref();
        let contact = self.contact.as_ref();
        let family = self.family.as_ref();
        match field {
            Field::ApplicantName => self.applicant_name.as_ref().map(|n| n.to_string()),
            Field::Country => geographic.map(|g| g.country().name().to_owned()),
            Field::Region => geographic.map(|g| g.region().to_string()),
            Field::City => geographic.map(|g| g.city().to_string()),
            Field::PostalCode => geographic.map(|g| g.postal_code().to_string()),
            Field::Email => contact.map(|c| c.email().to_string()),
            Field::Phone => contact.map(|c| c.phone().to_string()),
            Field::PreferredContact => contact.map(|c| c.preferred_contact().label().to_owned()),
            Field::Dependents => family.map(|f| f.dependents().to_string()),
            Field::SpouseName => family.and_then(|f| f.spouse_name()).map(|s| s.to_string()),
            Field::Children => family.map(|_| self.children().join("\n")),
            Field::Child(index) => self.children().get(index).cloned(),
        }
    }

    /// Whether the part of the quote that `field`'s answer is read from is the same in
    /// `other`: then the two answers are equal, and comparing them formats nothing.
    pub fn same_source_of(&self, other: &Quote, field: Field) -> bool {
        match field {
            Field::ApplicantName => self.applicant_name == other.applicant_name,
            Field::Country | Field::Region | Field::City | Field::PostalCode => {
                self.geographic == other.geographic
            }
            Field::Email | Field::Phone | Field::PreferredContact => self.contact == other.contact,
            Field::Dependents | Field::SpouseName | Field::Children | Field::Child(_) => {
                self.family == other.family
            }
        }
    }

    /// The children's names, in the order listed.
    pub fn children(&self) -> Vec<String> {
        self.family
            .as_ref()
            .map(|f| f.children().iter().map(|c| c.to_string()).collect())
            .unwrap_or_default()
    }

    /// The applicant's name, or nothing for a quote not started.
    pub fn applicant(&self) -> String {
        self.answer(Field::ApplicantName).unwrap_or_default()
    }
}

/// The sections' titles, in the order the pages show them.
pub const SECTION_TITLES: [&str; 4] = [
    APPLICANT_TITLE,
    GEOGRAPHIC_TITLE,
    CONTACT_TITLE,
    FAMILY_TITLE,
];

const APPLICANT_TITLE: &str = "Applicant";
const GEOGRAPHIC_TITLE: &str = "Geographic details";
const CONTACT_TITLE: &str = "Contact details";
const FAMILY_TITLE: &str = "Family details";

/// The title of the section a field is asked and shown in.
pub fn section_title(field: Field) -> &'static str {
    match field {
        Field::ApplicantName => APPLICANT_TITLE,
        Field::Country | Field::Region | Field::City | Field::PostalCode => GEOGRAPHIC_TITLE,
        Field::Email | Field::Phone | Field::PreferredContact => CONTACT_TITLE,
        Field::Dependents | Field::SpouseName | Field::Children | Field::Child(_) => FAMILY_TITLE,
    }
}

/// The quote's answers, the applicant first and then each section given so far.
pub fn answers_of(quote: &Quote) -> Vec<AnswerSection> {
    let rows = |fields: &[Field], absent: &str| -> Vec<AnswerRow> {
        fields
            .iter()
            .map(|&field| AnswerRow {
                field,
                label: field.label(),
                value: quote
                    .answer(field)
                    .filter(|v| !v.is_empty())
                    .unwrap_or_else(|| absent.to_owned()),
            })
            .collect()
    };
    let mut sections = vec![AnswerSection {
        slug: "applicant",
        title: APPLICANT_TITLE,
        rows: rows(&[Field::ApplicantName], "Not given"),
    }];
    if quote.geographic.is_some() {
        sections.push(AnswerSection {
            slug: "geographic",
            title: GEOGRAPHIC_TITLE,
            rows: rows(
                &[
                    Field::Country,
                    Field::Region,
                    Field::City,
                    Field::PostalCode,
                ],
                "Not given",
            ),
        });
    }
    if quote.contact.is_some() {
        sections.push(AnswerSection {
            slug: "contact",
            title: CONTACT_TITLE,
            rows: rows(
                &[Field::Email, Field::Phone, Field::PreferredContact],
                "Not given",
            ),
        });
    }
    if quote.family.is_some() {
        sections.push(AnswerSection {
            slug: "family",
            title: FAMILY_TITLE,
            rows: rows(
                &[Field::Dependents, Field::SpouseName, Field::Children],
                "None",
            ),
        });
    }
    sections
}
