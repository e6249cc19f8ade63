//! The parts of a quote a person fills in, named once: the labels every page, the
//! timeline and the exports use, and the rules' complaints about each part.
//!
//! How a field is named in an HTML form is the web layer's business (see
//! `quoting::forms`); the domain only says which part a message is about.

use std::fmt;

/// One answer of a quote, or (for children) one entry of a list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    ApplicantName,
    Country,
    Region,
    City,
    PostalCode,
    Email,
    Phone,
    PreferredContact,
    Dependents,
    SpouseName,
    /// The list of children as a whole (too many of them).
    Children,
    /// The child at this index of the list as the person entered it, blanks counted.
    Child(usize),
}

impl Field {
    /// Every single-valued answer, in the order the pages ask for them. Children
    /// are a list, compared and shown entry by entry.
    pub const ANSWERS: [Field; 10] = [
        Field::ApplicantName,
        Field::Country,
        Field::Region,
        Field::City,
        Field::PostalCode,
        Field::Email,
        Field::Phone,
        Field::PreferredContact,
        Field::Dependents,
        Field::SpouseName,
    ];

    /// The field in the words of the pages ("Postal code"). A child's label is the
    /// one the timeline records for a child added or removed.
    pub fn label(self) -> &'static str {
        match self {
            Field::ApplicantName => "Applicant name",
            Field::Country => "Country",
            Field::Region => "State",
            Field::City => "City",
            Field::PostalCode => "Postal code",
            Field::Email => "Email",
            Field::Phone => "Phone number",
            Field::PreferredContact => "Preferred contact",
            Field::Dependents => "Number of dependents",
            Field::SpouseName => "Spouse name",
            Field::Children => "Children",
            Field::Child(_) => "Child",
        }
    }
}

/// One rule an answer broke: which part, and a sentence for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub field: Field,
    pub message: String,
}

/// Every rule broken in one submitted section, in form order, so a page can show an
/// error summary and each message beside its input in a single round trip.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InvalidFields(pub Vec<Invalid>);

impl InvalidFields {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The first message about `field`.
    pub fn message_for(&self, field: Field) -> Option<&str> {
        self.0
            .iter()
            .find(|invalid| invalid.field == field)
            .map(|invalid| invalid.message.as_str())
    }

    pub fn push(&mut self, field: Field, message: impl Into<String>) {
        self.0.push(Invalid {
            field,
            message: message.into(),
        });
    }

    pub(super) fn record<T>(&mut self, field: Field, result: &Result<T, String>) {
        if let Err(message) = result {
            self.push(field, message.clone());
        }
    }
}

impl fmt::Display for InvalidFields {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let messages: Vec<&str> = self.0.iter().map(|e| e.message.as_str()).collect();
        f.write_str(&messages.join("; "))
    }
}

impl std::error::Error for InvalidFields {}
