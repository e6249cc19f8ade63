//! The value objects a quote is made of, and the three sections built from them.
//!
//! Parse, don't validate: every type here is built by a `parse` function that either
//! returns a value that is valid by construction or a message written for the person
//! who typed the input. Deserialisation is deliberately *not* validating: a stored
//! event is a fact, and tightening a rule later must never make old events unreadable.

use std::fmt;

use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

use super::countries::{self, COUNTRIES};
use super::fields::{Field, InvalidFields};

/// Implements the accessors every string newtype shares.
macro_rules! string_newtype {
    ($name:ident) => {
        impl $name {
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.0
            }
        }
    };
}

/// Unicode's format characters (general category Cf), such as U+200B ZERO WIDTH
/// SPACE or U+202E RIGHT-TO-LEFT OVERRIDE: invisible, and some turn the text after
/// them around, so what an underwriter or auditor reads would not be what is stored.
fn is_invisible(c: char) -> bool {
    c.general_category() == GeneralCategory::Format
}

/// The refusal of text with [`is_invisible`] characters, for the field `label`.
fn invisible_message(label: &str) -> String {
    format!(
        "{label} must not contain invisible characters or ones that change the direction of text"
    )
}

/// Text in Unicode's normal form C, so one name is stored one way however it was
/// typed ("é" as one character, not as "e" and a combining accent).
fn nfc(input: &str) -> String {
    input.nfc().collect()
}

/// Trims `input` and checks it is a single line of 1..=`max_chars` characters of
/// visible text, in normal form C. `label` starts the sentence for the other
/// problems ("City must be …").
fn single_line(
    input: &str,
    max_chars: usize,
    label: &str,
    missing: &str,
) -> Result<String, String> {
    let text = nfc(input);
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(missing.to_owned());
    }
    if trimmed.chars().count() > max_chars {
        return Err(format!("{label} must be {max_chars} characters or fewer"));
    }
    if trimmed.chars().any(char::is_control) {
        return Err(format!(
            "{label} must not contain tabs, line breaks or other control characters"
        ));
    }
    if trimmed.chars().any(is_invisible) {
        return Err(invisible_message(label));
    }
    Ok(trimmed.to_owned())
}

/// An ISO 3166-1 alpha-2 country code, stored upper-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct CountryCode(String);

string_newtype!(CountryCode);

impl CountryCode {
    pub fn parse(input: impl AsRef<str>) -> Result<Self, String> {
        let code = input.as_ref().trim().to_ascii_uppercase();
        if code.is_empty() {
            return Err("Select a country".to_owned());
        }
        if COUNTRIES.iter().any(|(known, _)| *known == code) {
            Ok(Self(code))
        } else {
            Err("Select a country from the list".to_owned())
        }
    }

    /// The English short name. A code read from an old event that has since left the
    /// list has no name here, so the code itself is shown rather than nothing.
    pub fn name(&self) -> &str {
        countries::country_name(&self.0).unwrap_or(&self.0)
    }
}

/// A state, province or region.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Region(String);

string_newtype!(Region);

impl Region {
    pub fn parse(input: impl AsRef<str>) -> Result<Self, String> {
        single_line(
            input.as_ref(),
            100,
            "State or region",
            "Enter a state or region",
        )
        .map(Self)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct City(String);

string_newtype!(City);

impl City {
    pub fn parse(input: impl AsRef<str>) -> Result<Self, String> {
        single_line(input.as_ref(), 100, "City", "Enter a city").map(Self)
    }
}

/// A postal code in its country's usual written form (for example `SW1A 1AA`,
/// `94105-1234`, `100-0001`), so equal codes compare equal however they were typed.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PostalCode(String);

string_newtype!(PostalCode);

impl PostalCode {
    /// Checks `input` against the format of `country` where we know it, and against a
    /// loose catch-all everywhere else.
    pub fn parse(country: &CountryCode, input: impl AsRef<str>) -> Result<Self, String> {
        Self::parse_with(PostalFormat::for_country(country.as_str()), input.as_ref())
    }

    fn parse_with(format: PostalFormat, input: &str) -> Result<Self, String> {
        let input = input.trim();
        if input.is_empty() {
            return Err("Enter a postal code".to_owned());
        }
        format
            .normalise(input)
            .map(Self)
            .ok_or_else(|| format.message())
    }
}

/// Postal code formats we check exactly. Countries not listed get `Other`, which only
/// keeps out what no postal code anywhere contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PostalFormat {
    UnitedStates,
    India,
    UnitedKingdom,
    Canada,
    FiveDigits { example: &'static str },
    Netherlands,
    Australia,
    Japan,
    Brazil,
    Other,
}

impl PostalFormat {
    fn for_country(code: &str) -> Self {
        match code {
            "US" => Self::UnitedStates,
            "IN" => Self::India,
            "GB" => Self::UnitedKingdom,
            "CA" => Self::Canada,
            "DE" => Self::FiveDigits { example: "10115" },
            "FR" => Self::FiveDigits { example: "75001" },
            "ES" => Self::FiveDigits { example: "28013" },
            "IT" => Self::FiveDigits { example: "00184" },
            "NL" => Self::Netherlands,
            "AU" => Self::Australia,
            "JP" => Self::Japan,
            "BR" => Self::Brazil,
            _ => Self::Other,
        }
    }

    fn message(self) -> String {
        match self {
            Self::UnitedStates => {
                "Enter a ZIP code of 5 or 9 digits, like 94105 or 94105-1234".to_owned()
            }
            Self::India => "Enter a 6-digit postal code, like 400001".to_owned(),
            Self::UnitedKingdom => "Enter a UK postcode, like SW1A 1AA".to_owned(),
            Self::Canada => "Enter a postal code in the format A1A 1A1, like K1A 0B1".to_owned(),
            Self::FiveDigits { example } => format!("Enter a 5-digit postal code, like {example}"),
            Self::Netherlands => {
                "Enter a postal code of 4 digits and 2 letters, like 1012 AB".to_owned()
            }
            Self::Australia => "Enter a 4-digit postcode, like 2000".to_owned(),
            Self::Japan => "Enter a 7-digit postal code, like 100-0001".to_owned(),
            Self::Brazil => "Enter an 8-digit postal code, like 01310-100".to_owned(),
            Self::Other => {
                "Enter a postal code of up to 12 letters, numbers, spaces or hyphens".to_owned()
            }
        }
    }

    /// The code in its canonical written form, or `None` if it does not fit.
    fn normalise(self, input: &str) -> Option<String> {
        match self {
            Self::UnitedStates => {
                if is_digits(input, 5) {
                    Some(input.to_owned())
                } else {
                    split_digits(input, 5, 4, &['-', ' '])
                        .map(|(zip, plus4)| format!("{zip}-{plus4}"))
                }
            }
            Self::India => split_digits(input, 3, 3, &[' '])
                .map(|(head, tail)| format!("{head}{tail}"))
                .filter(|pin| !pin.starts_with('0')),
            Self::UnitedKingdom => uk_postcode(input),
            Self::Canada => {
                let compact = compact_upper(input);
                (shape(&compact) == "A9A9A9")
                    .then(|| format!("{} {}", &compact[..3], &compact[3..]))
            }
            Self::FiveDigits { .. } => is_digits(input, 5).then(|| input.to_owned()),
            Self::Netherlands => {
                let compact = compact_upper(input);
                (shape(&compact) == "9999AA" && !compact.starts_with('0'))
                    .then(|| format!("{} {}", &compact[..4], &compact[4..]))
            }
            Self::Australia => is_digits(input, 4).then(|| input.to_owned()),
            Self::Japan => split_digits(input, 3, 4, &['-', ' ']).map(|(a, b)| format!("{a}-{b}")),
            Self::Brazil => split_digits(input, 5, 3, &['-', ' ']).map(|(a, b)| format!("{a}-{b}")),
            Self::Other => {
                let fits = input.chars().count() <= 12
                    && input
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-');
                fits.then(|| input.to_ascii_uppercase())
            }
        }
    }
}

fn is_digits(s: &str, len: usize) -> bool {
    s.len() == len && s.bytes().all(|b| b.is_ascii_digit())
}

/// Accepts `head` digits and `tail` digits, written together or with one separator.
fn split_digits<'a>(
    s: &'a str,
    head: usize,
    tail: usize,
    separators: &[char],
) -> Option<(&'a str, &'a str)> {
    if is_digits(s, head + tail) {
        return Some(s.split_at(head));
    }
    let (first, rest) = s.split_at_checked(head)?;
    let mut rest_chars = rest.chars();
    let separator = rest_chars.next()?;
    let second = rest_chars.as_str();
    (is_digits(first, head) && separators.contains(&separator) && is_digits(second, tail))
        .then_some((first, second))
}

fn compact_upper(s: &str) -> String {
    s.chars()
        .filter(|c| !c.is_whitespace())
        .map(|c| c.to_ascii_uppercase())
        .collect()
}

/// `A` for each ASCII letter, `9` for each digit, `?` for anything else.
fn shape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            c if c.is_ascii_alphabetic() => 'A',
            c if c.is_ascii_digit() => '9',
            _ => '?',
        })
        .collect()
}

/// A UK postcode: an outward code (area and district) and an inward code (digit and
/// two letters), written with exactly one space between them.
fn uk_postcode(input: &str) -> Option<String> {
    const OUTWARD_SHAPES: [&str; 6] = ["A9", "A99", "AA9", "AA99", "A9A", "AA9A"];
    let compact = compact_upper(input);
    if compact == "GIR0AA" {
        // Girobank's historic postcode, the one code outside the usual pattern.
        return Some("GIR 0AA".to_owned());
    }
    let split = compact.len().checked_sub(3)?;
    let (outward, inward) = compact.split_at_checked(split)?;
    (OUTWARD_SHAPES.contains(&shape(outward).as_str()) && shape(inward) == "9AA")
        .then(|| format!("{outward} {inward}"))
}

/// An email address; the domain is stored lower-case because it is case-insensitive,
/// the local part as typed because strictly it is not.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Email(String);

string_newtype!(Email);

impl Email {
    pub fn parse(input: impl AsRef<str>) -> Result<Self, String> {
        const FORMAT: &str = "Enter an email address in the correct format, like name@example.com";
        let input = input.as_ref().trim();
        if input.is_empty() {
            return Err("Enter an email address".to_owned());
        }
        if input.chars().count() > 254 {
            return Err("Email address must be 254 characters or fewer".to_owned());
        }
        if input
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || is_invisible(c))
        {
            return Err(FORMAT.to_owned());
        }
        let Some((local, domain)) = input.split_once('@') else {
            return Err(FORMAT.to_owned());
        };
        let domain_ok = domain.contains('.')
            && !domain.contains('@')
            && domain.split('.').all(|label| !label.is_empty());
        if local.is_empty() || !domain_ok {
            return Err(FORMAT.to_owned());
        }
        Ok(Self(format!("{local}@{}", domain.to_lowercase())))
    }
}

/// A phone number in E.164 form: `+`, then the country code and number, 8 to 15 digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PhoneNumber(String);

string_newtype!(PhoneNumber);

impl PhoneNumber {
    pub fn parse(input: impl AsRef<str>) -> Result<Self, String> {
        const FORMAT: &str = "Enter a phone number in the correct format, like +91 98765 43210";
        const NEEDS_COUNTRY_CODE: &str =
            "Enter a phone number with its country code, like +91 98765 43210";
        let input = input.as_ref().trim();
        if input.is_empty() {
            return Err("Enter a phone number".to_owned());
        }
        let (has_plus, rest) = match input.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, input),
        };
        let punctuation_only = rest
            .chars()
            .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '.' | '(' | ')'));
        if !punctuation_only {
            return Err(FORMAT.to_owned());
        }
        let digits: String = rest.chars().filter(char::is_ascii_digit).collect();
        let international = if has_plus {
            digits.as_str()
        } else if let Some(after_prefix) = digits.strip_prefix("00") {
            // 00 is the international call prefix used in most of the world.
            after_prefix
        } else {
            return Err(NEEDS_COUNTRY_CODE.to_owned());
        };
        if international.starts_with('0') {
            // No country code starts with 0, so this is a national number after a `+`.
            return Err(NEEDS_COUNTRY_CODE.to_owned());
        }
        if !(8..=15).contains(&international.len()) {
            return Err(FORMAT.to_owned());
        }
        Ok(Self(format!("+{international}")))
    }
}

/// A person's name as they write it: applicant, spouse or child.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PersonName(String);

string_newtype!(PersonName);

impl PersonName {
    pub fn parse(input: impl AsRef<str>) -> Result<Self, String> {
        Self::parse_as(input, "Name", "Enter a name")
    }

    /// Like [`PersonName::parse`], with messages naming the field, for example
    /// `parse_as(input, "Spouse name", "Enter the spouse's name")`.
    pub fn parse_as(input: impl AsRef<str>, label: &str, missing: &str) -> Result<Self, String> {
        single_line(input.as_ref(), 100, label, missing).map(Self)
    }
}

/// Free text a person must give, such as a reason for rejecting a quote or a note
/// when referring it back. Line breaks are kept (it comes from a `<textarea>`), in the
/// `\n` form whatever the browser sent; like every free text here it is kept in normal
/// form C and may hold no invisible characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NonEmptyText(String);

string_newtype!(NonEmptyText);

impl NonEmptyText {
    pub const MAX_CHARS: usize = 2000;

    pub fn parse(input: impl AsRef<str>) -> Result<Self, String> {
        Self::parse_as(input, "Text", "Enter some text")
    }

    /// Like [`NonEmptyText::parse`], with messages naming the field, for example
    /// `parse_as(input, "Reason", "Enter a reason for rejecting this quote")`.
    pub fn parse_as(input: impl AsRef<str>, label: &str, missing: &str) -> Result<Self, String> {
        let text = nfc(input.as_ref())
            .replace("\r\n", "\n")
            .replace('\r', "\n");
        let text = text.trim();
        if text.is_empty() {
            return Err(missing.to_owned());
        }
        if text.chars().count() > Self::MAX_CHARS {
            return Err(format!(
                "{label} must be {} characters or fewer",
                Self::MAX_CHARS
            ));
        }
        if text
            .chars()
            .any(|c| c.is_control() && c != '\n' && c != '\t')
        {
            return Err(format!("{label} must not contain control characters"));
        }
        if text.chars().any(is_invisible) {
            return Err(invisible_message(label));
        }
        Ok(Self(text.to_owned()))
    }
}

/// Where the applicant lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GeographicDetails {
    country: CountryCode,
    region: Region,
    city: City,
    postal_code: PostalCode,
}

impl GeographicDetails {
    /// Builds the section from the form's raw fields, reporting every invalid field.
    pub fn parse(
        country: &str,
        region: &str,
        city: &str,
        postal_code: &str,
    ) -> Result<Self, InvalidFields> {
        let country = CountryCode::parse(country);
        let postal_code = match &country {
            Ok(country) => PostalCode::parse(country, postal_code),
            // Still check what we can, so the page lists every problem at once.
            Err(_) => PostalCode::parse_with(PostalFormat::Other, postal_code),
        };
        let region = Region::parse(region);
        let city = City::parse(city);
        match (country, region, city, postal_code) {
            (Ok(country), Ok(region), Ok(city), Ok(postal_code)) => Ok(Self {
                country,
                region,
                city,
                postal_code,
            }),
            (country, region, city, postal_code) => {
                let mut errors = InvalidFields::default();
                errors.record(Field::Country, &country);
                errors.record(Field::Region, &region);
                errors.record(Field::City, &city);
                errors.record(Field::PostalCode, &postal_code);
                Err(errors)
            }
        }
    }

    pub fn country(&self) -> &CountryCode {
        &self.country
    }

    pub fn region(&self) -> &Region {
        &self.region
    }

    pub fn city(&self) -> &City {
        &self.city
    }

    pub fn postal_code(&self) -> &PostalCode {
        &self.postal_code
    }
}

/// How the applicant prefers to be contacted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PreferredContact {
    #[default]
    Email,
    Phone,
}

impl PreferredContact {
    pub const ALL: [PreferredContact; 2] = [PreferredContact::Email, PreferredContact::Phone];

    pub fn parse(input: &str) -> Result<Self, String> {
        PreferredContact::ALL
            .into_iter()
            .find(|choice| choice.as_str() == input.trim())
            .ok_or_else(|| "Choose how the applicant prefers to be contacted".to_owned())
    }

    /// As stored and as a form sends it.
    pub fn as_str(self) -> &'static str {
        match self {
            PreferredContact::Email => "email",
            PreferredContact::Phone => "phone",
        }
    }

    /// In the words of the pages.
    pub fn label(self) -> &'static str {
        match self {
            PreferredContact::Email => "Email",
            PreferredContact::Phone => "Phone",
        }
    }
}

/// How to reach the applicant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContactDetails {
    email: Email,
    phone: PhoneNumber,
    preferred_contact: PreferredContact,
}

impl ContactDetails {
    /// The details of an applicant who prefers email.
    pub fn parse(email: &str, phone: &str) -> Result<Self, InvalidFields> {
        Self::parse_with(email, phone, PreferredContact::Email.as_str())
    }

    /// Builds the section from the form's raw fields, reporting every invalid field.
    pub fn parse_with(
        email: &str,
        phone: &str,
        preferred_contact: &str,
    ) -> Result<Self, InvalidFields> {
        match (
            Email::parse(email),
            PhoneNumber::parse(phone),
            PreferredContact::parse(preferred_contact),
        ) {
            (Ok(email), Ok(phone), Ok(preferred_contact)) => Ok(Self {
                email,
                phone,
                preferred_contact,
            }),
            (email, phone, preferred_contact) => {
                let mut errors = InvalidFields::default();
                errors.record(Field::Email, &email);
                errors.record(Field::Phone, &phone);
                errors.record(Field::PreferredContact, &preferred_contact);
                Err(errors)
            }
        }
    }

    pub fn email(&self) -> &Email {
        &self.email
    }

    pub fn phone(&self) -> &PhoneNumber {
        &self.phone
    }

    pub fn preferred_contact(&self) -> PreferredContact {
        self.preferred_contact
    }
}

/// Who depends on the applicant. Every child listed is a dependent, so `dependents`
/// is never fewer than `children.len()`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FamilyDetails {
    dependents: u32,
    spouse_name: Option<PersonName>,
    children: Vec<PersonName>,
}

impl FamilyDetails {
    pub const MAX_DEPENDENTS: u32 = 20;
    pub const MAX_CHILDREN: usize = 20;

    /// Builds the section from the form's raw fields. An empty spouse name means there
    /// is no spouse, and blank child entries are ignored, because the page always
    /// offers one empty "Child name" input to add another.
    pub fn parse(
        dependents: &str,
        spouse_name: &str,
        children: &[String],
    ) -> Result<Self, InvalidFields> {
        let mut errors = InvalidFields::default();

        let dependents = parse_dependents(dependents);
        errors.record(Field::Dependents, &dependents);

        let spouse_name = if spouse_name.trim().is_empty() {
            None
        } else {
            let parsed =
                PersonName::parse_as(spouse_name, "Spouse name", "Enter the spouse's name");
            errors.record(Field::SpouseName, &parsed);
            parsed.ok()
        };

        let listed: Vec<(usize, &String)> = children
            .iter()
            .enumerate()
            .filter(|(_, name)| !name.trim().is_empty())
            .collect();
        let mut child_names = Vec::with_capacity(listed.len());
        for (index, raw) in &listed {
            match PersonName::parse_as(raw, "Child name", "Enter the child's name") {
                Ok(name) => child_names.push(name),
                Err(message) => errors.push(Field::Child(*index), message),
            }
        }

        if listed.len() > Self::MAX_CHILDREN {
            errors.push(
                Field::Children,
                format!("You can list up to {} children", Self::MAX_CHILDREN),
            );
        } else if let Ok(count) = dependents
            && (count as usize) < listed.len()
        {
            let children = match listed.len() {
                1 => "the 1 child".to_owned(),
                n => format!("the {n} children"),
            };
            errors.push(
                Field::Dependents,
                format!("Number of dependents cannot be fewer than {children} listed"),
            );
        }

        match dependents {
            Ok(dependents) if errors.is_empty() => Ok(Self {
                dependents,
                spouse_name,
                children: child_names,
            }),
            _ => Err(errors),
        }
    }

    pub fn dependents(&self) -> u32 {
        self.dependents
    }

    pub fn spouse_name(&self) -> Option<&PersonName> {
        self.spouse_name.as_ref()
    }

    pub fn children(&self) -> &[PersonName] {
        &self.children
    }
}

fn parse_dependents(input: &str) -> Result<u32, String> {
    let input = input.trim();
    if input.is_empty() {
        return Err("Enter the number of dependents".to_owned());
    }
    if !input.bytes().all(|b| b.is_ascii_digit()) {
        return Err("Enter the number of dependents as a whole number, like 2".to_owned());
    }
    input
        .parse::<u32>()
        .ok()
        .filter(|count| *count <= FamilyDetails::MAX_DEPENDENTS)
        .ok_or_else(|| {
            format!(
                "Number of dependents must be {} or fewer",
                FamilyDetails::MAX_DEPENDENTS
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quoting::domain::fields::Invalid;

    fn country(code: &str) -> CountryCode {
        CountryCode::parse(code).unwrap()
    }

    fn postal(code: &str, input: &str) -> Result<String, String> {
        PostalCode::parse(&country(code), input).map(String::from)
    }

    fn children(names: &[&str]) -> Vec<String> {
        names.iter().map(|name| name.to_string()).collect()
    }

    #[test]
    fn a_country_code_is_accepted_in_any_case_and_stored_upper_case() {
        let code = CountryCode::parse(" in ").unwrap();
        assert_eq!(code.as_str(), "IN");
        assert_eq!(code.name(), "India");
        assert_eq!(CountryCode::parse("gb").unwrap().name(), "United Kingdom");
    }

    #[test]
    fn a_country_code_must_be_on_the_iso_list() {
        assert_eq!(CountryCode::parse("").unwrap_err(), "Select a country");
        for unknown in ["XX", "UK", "USA", "I", "1N", "ÄB"] {
            assert_eq!(
                CountryCode::parse(unknown).unwrap_err(),
                "Select a country from the list",
                "{unknown}"
            );
        }
    }

    #[test]
    fn a_stored_country_code_that_left_the_list_still_reads_and_shows_its_code() {
        let code: CountryCode = serde_json::from_str("\"AN\"").unwrap();
        assert_eq!(code.name(), "AN");
    }

    #[test]
    fn region_and_city_are_trimmed_single_lines_of_at_most_100_characters() {
        assert_eq!(
            Region::parse("  Maharashtra ").unwrap().as_str(),
            "Maharashtra"
        );
        assert_eq!(City::parse("São Paulo").unwrap().as_str(), "São Paulo");
        assert_eq!(
            City::parse("é".repeat(100))
                .unwrap()
                .as_str()
                .chars()
                .count(),
            100
        );

        assert_eq!(Region::parse("   ").unwrap_err(), "Enter a state or region");
        assert_eq!(City::parse("").unwrap_err(), "Enter a city");
        assert_eq!(
            City::parse("x".repeat(101)).unwrap_err(),
            "City must be 100 characters or fewer"
        );
        assert_eq!(
            Region::parse("North\nEast").unwrap_err(),
            "State or region must not contain tabs, line breaks or other control characters"
        );
    }

    #[test]
    fn us_zip_codes_have_5_or_9_digits() {
        assert_eq!(postal("US", "94105"), Ok("94105".into()));
        assert_eq!(postal("US", "94105-1234"), Ok("94105-1234".into()));
        assert_eq!(postal("US", "94105 1234"), Ok("94105-1234".into()));
        assert_eq!(postal("US", "941051234"), Ok("94105-1234".into()));
        let message = "Enter a ZIP code of 5 or 9 digits, like 94105 or 94105-1234";
        for bad in [
            "9410",
            "941055",
            "94105-123",
            "ABCDE",
            "94105--1234",
            "94105-12345",
        ] {
            assert_eq!(postal("US", bad), Err(message.into()), "{bad}");
        }
    }

    #[test]
    fn indian_pin_codes_have_6_digits_not_starting_with_0() {
        assert_eq!(postal("IN", "400001"), Ok("400001".into()));
        assert_eq!(postal("IN", "400 001"), Ok("400001".into()));
        for bad in ["040001", "40001", "4000011", "40000A"] {
            assert_eq!(
                postal("IN", bad),
                Err("Enter a 6-digit postal code, like 400001".into()),
                "{bad}"
            );
        }
    }

    #[test]
    fn uk_postcodes_are_upper_cased_with_one_space_before_the_inward_code() {
        assert_eq!(postal("GB", "sw1a1aa"), Ok("SW1A 1AA".into()));
        assert_eq!(postal("GB", "M1 1AE"), Ok("M1 1AE".into()));
        assert_eq!(postal("GB", "b33  8th"), Ok("B33 8TH".into()));
        assert_eq!(postal("GB", "cr2 6xh"), Ok("CR2 6XH".into()));
        assert_eq!(postal("GB", "DN551PT"), Ok("DN55 1PT".into()));
        assert_eq!(postal("GB", "W1A 0AX"), Ok("W1A 0AX".into()));
        assert_eq!(postal("GB", "gir 0aa"), Ok("GIR 0AA".into()));
        for bad in [
            "SW1A",
            "1AA",
            "SW1A 1A",
            "SWA1 1AA",
            "SW1A 11A",
            "SW1AA 1AA",
            "SW1A-1AA",
        ] {
            assert_eq!(
                postal("GB", bad),
                Err("Enter a UK postcode, like SW1A 1AA".into()),
                "{bad}"
            );
        }
    }

    #[test]
    fn canadian_postal_codes_are_normalised_to_a1a_1a1() {
        assert_eq!(postal("CA", "k1a0b1"), Ok("K1A 0B1".into()));
        assert_eq!(postal("CA", "K1A 0B1"), Ok("K1A 0B1".into()));
        for bad in ["K1A 0B", "11A 0B1", "K1A0B1X"] {
            assert_eq!(
                postal("CA", bad),
                Err("Enter a postal code in the format A1A 1A1, like K1A 0B1".into()),
                "{bad}"
            );
        }
    }

    #[test]
    fn german_french_spanish_and_italian_postal_codes_have_5_digits() {
        assert_eq!(postal("DE", "10115"), Ok("10115".into()));
        assert_eq!(postal("FR", "75001"), Ok("75001".into()));
        assert_eq!(postal("ES", "28013"), Ok("28013".into()));
        assert_eq!(postal("IT", "00184"), Ok("00184".into()));
        assert_eq!(
            postal("DE", "1011"),
            Err("Enter a 5-digit postal code, like 10115".into())
        );
        assert_eq!(
            postal("FR", "75 001"),
            Err("Enter a 5-digit postal code, like 75001".into())
        );
        assert_eq!(
            postal("ES", "2801A"),
            Err("Enter a 5-digit postal code, like 28013".into())
        );
        assert_eq!(
            postal("IT", "001840"),
            Err("Enter a 5-digit postal code, like 00184".into())
        );
    }

    #[test]
    fn dutch_postal_codes_are_4_digits_and_2_letters() {
        assert_eq!(postal("NL", "1012ab"), Ok("1012 AB".into()));
        assert_eq!(postal("NL", "1012 AB"), Ok("1012 AB".into()));
        for bad in ["0123 AB", "1012", "1012 A1", "AB 1012"] {
            assert_eq!(
                postal("NL", bad),
                Err("Enter a postal code of 4 digits and 2 letters, like 1012 AB".into()),
                "{bad}"
            );
        }
    }

    #[test]
    fn australian_japanese_and_brazilian_postal_codes_follow_their_formats() {
        assert_eq!(postal("AU", "2000"), Ok("2000".into()));
        assert_eq!(
            postal("AU", "200"),
            Err("Enter a 4-digit postcode, like 2000".into())
        );
        assert_eq!(postal("JP", "100-0001"), Ok("100-0001".into()));
        assert_eq!(postal("JP", "1000001"), Ok("100-0001".into()));
        assert_eq!(
            postal("JP", "10-00001"),
            Err("Enter a 7-digit postal code, like 100-0001".into())
        );
        assert_eq!(postal("BR", "01310-100"), Ok("01310-100".into()));
        assert_eq!(postal("BR", "01310100"), Ok("01310-100".into()));
        assert_eq!(
            postal("BR", "0131-0100"),
            Err("Enter an 8-digit postal code, like 01310-100".into())
        );
    }

    #[test]
    fn other_countries_accept_up_to_12_letters_digits_spaces_and_hyphens() {
        assert_eq!(postal("IE", "d02 x285"), Ok("D02 X285".into()));
        assert_eq!(postal("SG", "018956"), Ok("018956".into()));
        assert_eq!(postal("PL", "00-950"), Ok("00-950".into()));
        let message = "Enter a postal code of up to 12 letters, numbers, spaces or hyphens";
        assert_eq!(postal("IE", "ABCDEFGHIJKLM"), Err(message.into()));
        assert_eq!(postal("IE", "D02/X285"), Err(message.into()));
        assert_eq!(postal("IE", "  "), Err("Enter a postal code".into()));
    }

    #[test]
    fn an_email_keeps_its_local_part_and_lower_cases_its_domain() {
        assert_eq!(
            Email::parse(" Jane.Doe@Example.COM ").unwrap().as_str(),
            "Jane.Doe@example.com"
        );
        assert_eq!(
            Email::parse("a+tag@mail.example.co.in").unwrap().as_str(),
            "a+tag@mail.example.co.in"
        );
    }

    #[test]
    fn an_email_needs_one_at_a_local_part_and_a_dotted_domain() {
        assert_eq!(Email::parse("").unwrap_err(), "Enter an email address");
        let message = "Enter an email address in the correct format, like name@example.com";
        for bad in [
            "name",
            "@example.com",
            "name@",
            "name@example",
            "name@@example.com",
            "a@b@example.com",
            "name@example..com",
            "name@.example.com",
            "name@example.com.",
            "na me@example.com",
        ] {
            assert_eq!(Email::parse(bad).unwrap_err(), message, "{bad}");
        }
        let too_long = format!("{}@example.com", "a".repeat(243));
        assert_eq!(too_long.len(), 255);
        assert_eq!(
            Email::parse(too_long).unwrap_err(),
            "Email address must be 254 characters or fewer"
        );
    }

    #[test]
    fn a_phone_number_is_normalised_to_e164() {
        assert_eq!(
            PhoneNumber::parse("+91 98765-43210").unwrap().as_str(),
            "+919876543210"
        );
        assert_eq!(
            PhoneNumber::parse("0091 98765 43210").unwrap().as_str(),
            "+919876543210"
        );
        assert_eq!(
            PhoneNumber::parse("+1 (415) 555.0100").unwrap().as_str(),
            "+14155550100"
        );
        assert_eq!(
            PhoneNumber::parse("+44 20 7946 0958").unwrap().as_str(),
            "+442079460958"
        );
        assert_eq!(
            PhoneNumber::parse("+12345678").unwrap().as_str(),
            "+12345678"
        );
        assert_eq!(
            PhoneNumber::parse("+123456789012345").unwrap().as_str(),
            "+123456789012345"
        );
    }

    #[test]
    fn a_phone_number_must_carry_its_country_code() {
        let message = "Enter a phone number with its country code, like +91 98765 43210";
        assert_eq!(PhoneNumber::parse("98765 43210").unwrap_err(), message);
        assert_eq!(PhoneNumber::parse("020 7946 0958").unwrap_err(), message);
        assert_eq!(PhoneNumber::parse("+0 20 7946 0958").unwrap_err(), message);
    }

    #[test]
    fn a_phone_number_has_8_to_15_digits_and_only_phone_punctuation() {
        assert_eq!(
            PhoneNumber::parse("  ").unwrap_err(),
            "Enter a phone number"
        );
        let message = "Enter a phone number in the correct format, like +91 98765 43210";
        for bad in [
            "+1234567",
            "+1234567890123456",
            "+91 98765 4321O",
            "+91+9876543210",
            "tel:+919876543210",
        ] {
            assert_eq!(PhoneNumber::parse(bad).unwrap_err(), message, "{bad}");
        }
    }

    #[test]
    fn a_person_name_is_a_trimmed_line_of_at_most_100_characters() {
        assert_eq!(
            PersonName::parse("  Asha Rao ").unwrap().as_str(),
            "Asha Rao"
        );
        assert_eq!(PersonName::parse("").unwrap_err(), "Enter a name");
        assert_eq!(
            PersonName::parse("a".repeat(101)).unwrap_err(),
            "Name must be 100 characters or fewer"
        );
        assert_eq!(
            PersonName::parse("Asha\tRao").unwrap_err(),
            "Name must not contain tabs, line breaks or other control characters"
        );
    }

    #[test]
    fn non_empty_text_keeps_line_breaks_as_newlines() {
        let text =
            NonEmptyText::parse("  Income not verified.\r\nPlease attach payslips.\r\n").unwrap();
        assert_eq!(
            text.as_str(),
            "Income not verified.\nPlease attach payslips."
        );
        assert_eq!(
            NonEmptyText::parse("x".repeat(2000))
                .unwrap()
                .as_str()
                .len(),
            2000
        );
        assert_eq!(NonEmptyText::parse(" \n ").unwrap_err(), "Enter some text");
        assert_eq!(
            NonEmptyText::parse("x".repeat(2001)).unwrap_err(),
            "Text must be 2000 characters or fewer"
        );
        assert_eq!(
            NonEmptyText::parse_as("", "Reason", "Enter a reason for rejecting this quote")
                .unwrap_err(),
            "Enter a reason for rejecting this quote"
        );
        assert_eq!(
            NonEmptyText::parse("bell\u{7}").unwrap_err(),
            "Text must not contain control characters"
        );
    }

    /// Unicode's format characters (Cf): invisible, some of them turning the text
    /// after them around, so a name could read differently from what was stored.
    const INVISIBLE: [char; 5] = ['\u{202E}', '\u{200B}', '\u{2066}', '\u{FEFF}', '\u{AD}'];

    #[test]
    fn free_text_refuses_invisible_and_direction_changing_characters() {
        for c in INVISIBLE {
            let input = format!("Asha{c} Rao");
            let message = invisible_message;
            assert_eq!(PersonName::parse(&input), Err(message("Name")), "{c:?}");
            assert_eq!(
                PersonName::parse_as(&input, "Spouse name", "Enter the spouse's name"),
                Err(message("Spouse name")),
                "{c:?}"
            );
            assert_eq!(City::parse(&input), Err(message("City")), "{c:?}");
            assert_eq!(
                Region::parse(&input),
                Err(message("State or region")),
                "{c:?}"
            );
            assert_eq!(NonEmptyText::parse(&input), Err(message("Text")), "{c:?}");
            assert_eq!(
                NonEmptyText::parse_as(&input, "Reason", "Enter a reason"),
                Err(message("Reason")),
                "{c:?}"
            );
            assert_eq!(
                Email::parse(format!("asha{c}@example.com")).unwrap_err(),
                "Enter an email address in the correct format, like name@example.com",
                "{c:?}"
            );
        }
        // Alone, an invisible character is not an empty answer: it is refused as
        // what it is.
        assert_eq!(
            City::parse("\u{200B}"),
            Err("City must not contain invisible characters or ones that change the direction of text".into())
        );
    }

    #[test]
    fn sections_report_an_invisible_character_against_its_field() {
        let errors =
            GeographicDetails::parse("IN", "Maharashtra", "Pune\u{202E}", "411001").unwrap_err();
        assert_eq!(errors.0.len(), 1);
        assert!(errors.message_for(Field::City).is_some(), "{errors:?}");

        let errors = FamilyDetails::parse("2", "\u{200B}", &children(&["Ravi", "Mee\u{202E}ra"]))
            .unwrap_err();
        assert_eq!(
            errors.0.iter().map(|e| e.field).collect::<Vec<_>>(),
            [Field::SpouseName, Field::Child(1)]
        );
    }

    #[test]
    fn free_text_is_stored_in_unicode_normal_form_c() {
        // "é" typed as e and a combining acute accent is stored as the one character.
        let decomposed = "Jose\u{301} Nun\u{303}ez";
        let composed = "Jos\u{E9} Nu\u{F1}ez";
        assert_eq!(PersonName::parse(decomposed).unwrap().as_str(), composed);
        assert_eq!(City::parse(decomposed).unwrap().as_str(), composed);
        assert_eq!(Region::parse(decomposed).unwrap().as_str(), composed);
        assert_eq!(NonEmptyText::parse(decomposed).unwrap().as_str(), composed);
        assert_eq!(
            PersonName::parse(decomposed),
            PersonName::parse(composed),
            "one name, however it was typed"
        );
        // The limit counts characters as stored.
        let long = "e\u{301}".repeat(100);
        assert_eq!(
            PersonName::parse(&long).unwrap().as_str().chars().count(),
            100
        );
    }

    #[test]
    fn stored_text_with_invisible_characters_still_reads() {
        // Rules tightened after an event was written never make it unreadable, and
        // reading does not rewrite it.
        let stored = "\"Asha\u{202E} Rao\"";
        let name: PersonName = serde_json::from_str(stored).unwrap();
        assert_eq!(name.as_str(), "Asha\u{202E} Rao");
        let text: NonEmptyText = serde_json::from_str("\"Jose\u{301}\"").unwrap();
        assert_eq!(text.as_str(), "Jose\u{301}");
        let city: City = serde_json::from_str("\"\u{200B}\"").unwrap();
        assert_eq!(city.as_str(), "\u{200B}");
    }

    #[test]
    fn value_objects_serialise_as_plain_strings() {
        let email = Email::parse("name@example.com").unwrap();
        assert_eq!(
            serde_json::to_string(&email).unwrap(),
            "\"name@example.com\""
        );
        let back: Email = serde_json::from_str("\"name@example.com\"").unwrap();
        assert_eq!(back, email);
    }

    #[test]
    fn stored_values_are_read_back_without_revalidation() {
        // An event written under looser rules must still load.
        let phone: PhoneNumber = serde_json::from_str("\"12345\"").unwrap();
        assert_eq!(phone.as_str(), "12345");
    }

    #[test]
    fn geographic_details_are_built_from_valid_fields() {
        let details = GeographicDetails::parse("in", "Maharashtra", "Mumbai", "400 001").unwrap();
        assert_eq!(details.country().as_str(), "IN");
        assert_eq!(details.region().as_str(), "Maharashtra");
        assert_eq!(details.city().as_str(), "Mumbai");
        assert_eq!(details.postal_code().as_str(), "400001");
    }

    #[test]
    fn geographic_details_report_every_invalid_field_in_form_order() {
        let errors = GeographicDetails::parse("", " ", "", "").unwrap_err();
        assert_eq!(
            errors,
            InvalidFields(vec![
                Invalid {
                    field: Field::Country,
                    message: "Select a country".into()
                },
                Invalid {
                    field: Field::Region,
                    message: "Enter a state or region".into()
                },
                Invalid {
                    field: Field::City,
                    message: "Enter a city".into()
                },
                Invalid {
                    field: Field::PostalCode,
                    message: "Enter a postal code".into()
                },
            ])
        );
    }

    #[test]
    fn geographic_details_check_the_postal_code_against_the_chosen_country() {
        let errors =
            GeographicDetails::parse("US", "California", "San Francisco", "400001").unwrap_err();
        assert_eq!(errors.0.len(), 1);
        assert_eq!(
            errors.message_for(Field::PostalCode),
            Some("Enter a ZIP code of 5 or 9 digits, like 94105 or 94105-1234")
        );
        assert_eq!(errors.message_for(Field::Country), None);
    }

    #[test]
    fn contact_details_report_both_fields() {
        let details = ContactDetails::parse("Asha@Example.com", "+91 98765 43210").unwrap();
        assert_eq!(details.email().as_str(), "Asha@example.com");
        assert_eq!(details.phone().as_str(), "+919876543210");

        let errors = ContactDetails::parse("asha", "98765 43210").unwrap_err();
        assert_eq!(
            errors.message_for(Field::Email),
            Some("Enter an email address in the correct format, like name@example.com")
        );
        assert_eq!(
            errors.message_for(Field::Phone),
            Some("Enter a phone number with its country code, like +91 98765 43210")
        );
    }

    #[test]
    fn contact_details_say_how_the_applicant_prefers_to_be_contacted() {
        let default = ContactDetails::parse("a@example.com", "+91 98765 43210").unwrap();
        assert_eq!(default.preferred_contact(), PreferredContact::Email);
        let phone = ContactDetails::parse_with("a@example.com", "+91 98765 43210", " phone ");
        assert_eq!(phone.unwrap().preferred_contact(), PreferredContact::Phone);

        let errors = ContactDetails::parse_with("asha", "+91 98765 43210", "fax").unwrap_err();
        assert_eq!(errors.0.len(), 2, "{errors}");
        assert_eq!(
            errors.message_for(Field::PreferredContact),
            Some("Choose how the applicant prefers to be contacted")
        );
        assert!(ContactDetails::parse_with("a@example.com", "+91 98765 43210", "").is_err());
    }

    #[test]
    fn family_details_ignore_blank_child_entries_and_an_empty_spouse_name() {
        let details =
            FamilyDetails::parse(" 2 ", "  ", &children(&["Ravi", " ", "", "Meera "])).unwrap();
        assert_eq!(details.dependents(), 2);
        assert_eq!(details.spouse_name(), None);
        let names: Vec<&str> = details.children().iter().map(PersonName::as_str).collect();
        assert_eq!(names, ["Ravi", "Meera"]);

        let details = FamilyDetails::parse("1", "Asha Rao", &[]).unwrap();
        assert_eq!(
            details.spouse_name().map(PersonName::as_str),
            Some("Asha Rao")
        );
        assert!(details.children().is_empty());
    }

    #[test]
    fn dependents_must_be_a_whole_number_up_to_20() {
        let message_for = |input: &str| {
            FamilyDetails::parse(input, "", &[])
                .unwrap_err()
                .message_for(Field::Dependents)
                .map(str::to_owned)
        };
        assert_eq!(
            message_for(""),
            Some("Enter the number of dependents".into())
        );
        let whole_number = Some("Enter the number of dependents as a whole number, like 2".into());
        assert_eq!(message_for("two"), whole_number);
        assert_eq!(message_for("-1"), whole_number);
        assert_eq!(message_for("1.5"), whole_number);
        assert_eq!(
            message_for("21"),
            Some("Number of dependents must be 20 or fewer".into())
        );
        assert_eq!(
            message_for("99999999999"),
            Some("Number of dependents must be 20 or fewer".into())
        );
        assert!(FamilyDetails::parse("20", "", &[]).is_ok());
        assert!(FamilyDetails::parse("0", "", &[]).is_ok());
    }

    #[test]
    fn dependents_cannot_be_fewer_than_the_children_listed() {
        let errors = FamilyDetails::parse("2", "", &children(&["A", "B", "C"])).unwrap_err();
        assert_eq!(
            errors,
            InvalidFields(vec![Invalid {
                field: Field::Dependents,
                message: "Number of dependents cannot be fewer than the 3 children listed".into(),
            }])
        );
        let errors = FamilyDetails::parse("0", "", &children(&["A"])).unwrap_err();
        assert_eq!(
            errors.message_for(Field::Dependents),
            Some("Number of dependents cannot be fewer than the 1 child listed")
        );
    }

    #[test]
    fn each_invalid_child_is_reported_against_its_own_entry() {
        let long = "x".repeat(101);
        let errors =
            FamilyDetails::parse("3", "Asha\nRao", &children(&["Ravi", "", &long])).unwrap_err();
        assert_eq!(
            errors,
            InvalidFields(vec![
                Invalid {
                    field: Field::SpouseName,
                    message:
                        "Spouse name must not contain tabs, line breaks or other control characters"
                            .into(),
                },
                Invalid {
                    field: Field::Child(2),
                    message: "Child name must be 100 characters or fewer".into(),
                },
            ])
        );
    }

    #[test]
    fn at_most_20_children_can_be_listed() {
        let many: Vec<String> = (1..=21).map(|n| format!("Child {n}")).collect();
        let errors = FamilyDetails::parse("20", "", &many).unwrap_err();
        assert_eq!(
            errors,
            InvalidFields(vec![Invalid {
                field: Field::Children,
                message: "You can list up to 20 children".into(),
            }])
        );
        assert!(FamilyDetails::parse("20", "", &many[..20]).is_ok());
    }

    #[test]
    fn sections_round_trip_through_json() {
        let geographic = GeographicDetails::parse("GB", "England", "London", "sw1a1aa").unwrap();
        let json = serde_json::to_value(&geographic).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"country": "GB", "region": "England", "city": "London", "postal_code": "SW1A 1AA"})
        );
        assert_eq!(
            serde_json::from_value::<GeographicDetails>(json).unwrap(),
            geographic
        );

        let family = FamilyDetails::parse("2", "Asha", &children(&["Ravi"])).unwrap();
        let json = serde_json::to_value(&family).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"dependents": 2, "spouse_name": "Asha", "children": ["Ravi"]})
        );
        assert_eq!(
            serde_json::from_value::<FamilyDetails>(json).unwrap(),
            family
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// Parsing what a parse produced gives the same value back: normal forms
        /// are stable, so a stored value re-entered on a form is not changed again.
        fn assert_stable<T: AsRef<str> + PartialEq + fmt::Debug>(
            parse: impl Fn(&str) -> Result<T, String>,
            input: &str,
        ) -> Result<(), TestCaseError> {
            if let Ok(value) = parse(input) {
                prop_assert_eq!(parse(value.as_ref()), Ok(value));
            }
            Ok(())
        }

        fn postal_like() -> impl Strategy<Value = String> {
            prop_oneof![
                "[0-9A-Za-z -]{0,14}",
                "[A-Za-z]{1,2}[0-9][0-9A-Za-z]? ?[0-9][A-Za-z]{2}",
                "[0-9]{3,5}[ -]?[0-9]{3,4}",
                any::<String>(),
            ]
        }

        proptest! {
            #[test]
            fn any_input_gets_a_value_or_a_message_and_normal_forms_are_stable(
                text in any::<String>(),
                postal in postal_like(),
                phone in "[+0]?[0-9 ().-]{0,20}",
            ) {
                for code in ["US", "IN", "GB", "CA", "DE", "NL", "AU", "JP", "BR", "IE"] {
                    let country = CountryCode::parse(code).unwrap();
                    assert_stable(|s| PostalCode::parse(&country, s), &postal)?;
                    assert_stable(|s| PostalCode::parse(&country, s), &text)?;
                }
                assert_stable(|s| PhoneNumber::parse(s), &phone)?;
                assert_stable(|s| PhoneNumber::parse(s), &text)?;
                assert_stable(|s| Email::parse(s), &text)?;
                assert_stable(|s| CountryCode::parse(s), &text)?;
                assert_stable(|s| Region::parse(s), &text)?;
                assert_stable(|s| City::parse(s), &text)?;
                assert_stable(|s| PersonName::parse(s), &text)?;
                assert_stable(|s| NonEmptyText::parse(s), &text)?;
                let _ = FamilyDetails::parse(&text, &text, std::slice::from_ref(&text));
                let _ = GeographicDetails::parse(&text, &text, &text, &postal);
            }
        }
    }
}
