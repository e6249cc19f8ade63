//! The quoting domain: the Quote aggregate and the value objects its sections are made
//! of. Pure code: no I/O, no clock, no async, so every rule can be tested directly.

pub mod aggregate;
pub mod countries;
pub mod events;
pub mod fields;
pub mod sections;
pub mod status;
pub mod upcast;

pub use aggregate::{Action, ActionKind, Command, DomainError, Quote, decide, evolve, fold};
pub use countries::COUNTRIES;
pub use events::{EventKind, QuoteEvent};
pub use fields::{Field, Invalid, InvalidFields};
pub use sections::{
    City, ContactDetails, CountryCode, Email, FamilyDetails, GeographicDetails, NonEmptyText,
    PersonName, PhoneNumber, PostalCode, PreferredContact, Region,
};
pub use status::{Status, UnknownStatus};
