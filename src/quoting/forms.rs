//! The three section forms: how each reads a quote's answers into its inputs, parses
//! what was sent into the section's value objects, names its inputs, and draws its
//! page. The handlers in `pages` are written once for all three.

use askama::Template;
use askama_web::WebTemplate;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Deserializer};
use uuid::Uuid;

use super::domain::{
    Action, COUNTRIES, ContactDetails, FamilyDetails, Field, GeographicDetails, InvalidFields,
    PersonName, PreferredContact, Quote,
};
use crate::web::{AppError, FieldErrors, Layout};

/// How the web names a domain field, callable from templates as
/// `Field::City.input_name()` beside `Field::City.label()`.
pub trait InputName {
    /// The HTML `name` (and `id`) of the input for the field. Children share the
    /// name `children`; each child's input has the id `children-{index}`, which is
    /// where its error is shown and where the error summary links.
    fn input_name(self) -> String;
}

impl InputName for Field {
    fn input_name(self) -> String {
        match self {
            Field::ApplicantName => "applicant_name".into(),
            Field::Country => "country".into(),
            Field::Region => "region".into(),
            Field::City => "city".into(),
            Field::PostalCode => "postal_code".into(),
            Field::Email => "email".into(),
            Field::Phone => "phone".into(),
            Field::PreferredContact => "preferred_contact".into(),
            Field::Dependents => "dependents".into(),
            Field::SpouseName => "spouse_name".into(),
            Field::Children => "children".into(),
            Field::Child(index) => format!("children-{index}"),
        }
    }
}

/// The domain's complaints, keyed by the inputs they are about.
pub fn field_errors(invalid: InvalidFields) -> FieldErrors {
    let mut errors = FieldErrors::default();
    for problem in invalid.0 {
        errors.push(problem.field.input_name(), problem.message);
    }
    errors
}

/// What a section page needs besides its own answers.
pub struct FormContext {
    pub layout: Layout,
    pub quote_id: Uuid,
    pub reference: String,
    pub version: i64,
    pub idempotency_key: String,
    pub errors: FieldErrors,
    pub notice: Option<&'static str>,
}

/// A section's page holds the [`FormContext`] and reads through to it, so its
/// template names `layout`, `quote_id`, `errors`… as fields of its own.
macro_rules! reads_through_to_context {
    ($($page:ident),+) => {
        $(impl std::ops::Deref for $page {
            type Target = FormContext;

            fn deref(&self) -> &FormContext {
                &self.context
            }
        })+
    };
}

reads_through_to_context!(ApplicantPage, GeographicPage, ContactPage, FamilyPage);

/// One section's form: how it reads its answers, and how its page is drawn.
pub trait SectionForm: for<'de> Deserialize<'de> + Send + 'static {
    /// The section's page under `/quotes/{id}/`.
    const SLUG: &'static str;

    fn from_quote(quote: &Quote) -> Self;
    fn parse(&self) -> Result<Action, InvalidFields>;
    fn render(self, context: FormContext) -> Response;

    /// A button that changes the form without saving it ("Add another child"):
    /// `Ok(true)` when `button` was one, and the form is to be drawn again.
    fn edit(&mut self, button: &str) -> Result<bool, AppError> {
        let _ = button;
        Ok(false)
    }
}

/// The applicant's name, corrected after the quote was started.
#[derive(Debug, Default, Deserialize)]
pub struct ApplicantForm {
    #[serde(default)]
    applicant_name: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "quoting/applicant.html")]
struct ApplicantPage {
    context: FormContext,
    form: ApplicantForm,
}

impl SectionForm for ApplicantForm {
    const SLUG: &'static str = "applicant";

    fn from_quote(quote: &Quote) -> Self {
        ApplicantForm {
            applicant_name: quote.applicant(),
        }
    }

    fn parse(&self) -> Result<Action, InvalidFields> {
        PersonName::parse_as(
            &self.applicant_name,
            Field::ApplicantName.label(),
            "Enter the applicant's name",
        )
        .map(Action::CorrectApplicantName)
        .map_err(|message| {
            let mut invalid = InvalidFields::default();
            invalid.push(Field::ApplicantName, message);
            invalid
        })
    }

    fn render(self, c: FormContext) -> Response {
        ApplicantPage {
            context: c,
            form: self,
        }
        .into_response()
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct GeographicForm {
    #[serde(default)]
    country: String,
    #[serde(default)]
    region: String,
    #[serde(default)]
    city: String,
    #[serde(default)]
    postal_code: String,
}

#[derive(Template, WebTemplate)]
#[template(path = "quoting/geographic.html")]
struct GeographicPage {
    context: FormContext,
    form: GeographicForm,
    countries: &'static [(&'static str, &'static str)],
}

impl SectionForm for GeographicForm {
    const SLUG: &'static str = "geographic";

    fn from_quote(quote: &Quote) -> Self {
        quote
            .geographic
            .as_ref()
            .map_or_else(Self::default, |g| GeographicForm {
                country: g.country().as_str().to_owned(),
                region: g.region().as_str().to_owned(),
                city: g.city().as_str().to_owned(),
                postal_code: g.postal_code().as_str().to_owned(),
            })
    }

    fn parse(&self) -> Result<Action, InvalidFields> {
        GeographicDetails::parse(&self.country, &self.region, &self.city, &self.postal_code)
            .map(Action::ProvideGeographic)
    }

    fn render(self, c: FormContext) -> Response {
        GeographicPage {
            context: c,
            form: self,
            countries: COUNTRIES,
        }
        .into_response()
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct ContactForm {
    #[serde(default)]
    email: String,
    #[serde(default)]
    phone: String,
    /// Absent from a page drawn before the question was asked: read as email, as
    /// contact details recorded before it are.
    preferred_contact: Option<String>,
}

#[derive(Template, WebTemplate)]
#[template(path = "quoting/contact.html")]
struct ContactPage {
    context: FormContext,
    form: ContactForm,
    choices: [PreferredContact; 2],
}

impl SectionForm for ContactForm {
    const SLUG: &'static str = "contact";

    fn from_quote(quote: &Quote) -> Self {
        quote.contact.as_ref().map_or_else(
            || ContactForm {
                preferred_contact: Some(PreferredContact::default().as_str().to_owned()),
                ..Self::default()
            },
            |c| ContactForm {
                email: c.email().as_str().to_owned(),
                phone: c.phone().as_str().to_owned(),
                preferred_contact: Some(c.preferred_contact().as_str().to_owned()),
            },
        )
    }

    fn parse(&self) -> Result<Action, InvalidFields> {
        let preferred = self
            .preferred_contact
            .as_deref()
            .unwrap_or(PreferredContact::default().as_str());
        ContactDetails::parse_with(&self.email, &self.phone, preferred).map(Action::ProvideContact)
    }

    fn render(self, c: FormContext) -> Response {
        ContactPage {
            context: c,
            form: self,
            choices: PreferredContact::ALL,
        }
        .into_response()
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct FamilyForm {
    #[serde(default)]
    dependents: String,
    #[serde(default)]
    spouse_name: String,
    #[serde(default, deserialize_with = "one_or_many")]
    children: Vec<String>,
}

/// A repeated input sent once arrives as one value, not a list of one, when the
/// form is read through a flattened struct.
fn one_or_many<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(value) => vec![value],
        OneOrMany::Many(values) => values,
    })
}

#[derive(Template, WebTemplate)]
#[template(path = "quoting/family.html")]
struct FamilyPage {
    context: FormContext,
    form: FamilyForm,
}

impl FamilyPage {
    /// The id of the n-th child's input.
    fn child_field(&self, index: &usize) -> String {
        Field::Child(*index).input_name()
    }
}

impl SectionForm for FamilyForm {
    const SLUG: &'static str = "family";

    fn from_quote(quote: &Quote) -> Self {
        quote.family.as_ref().map_or_else(
            || FamilyForm {
                children: vec![String::new()],
                ..Self::default()
            },
            |f| FamilyForm {
                dependents: f.dependents().to_string(),
                spouse_name: f
                    .spouse_name()
                    .map(|s| s.as_str().to_owned())
                    .unwrap_or_default(),
                children: quote.children(),
            },
        )
    }

    fn parse(&self) -> Result<Action, InvalidFields> {
        FamilyDetails::parse(&self.dependents, &self.spouse_name, &self.children)
            .map(Action::ProvideFamily)
    }

    fn render(mut self, c: FormContext) -> Response {
        if self.children.is_empty() {
            self.children.push(String::new());
        }
        FamilyPage {
            context: c,
            form: self,
        }
        .into_response()
    }

    /// "Add another child" and "Remove" redraw the page with one child more or
    /// fewer, writing nothing.
    fn edit(&mut self, button: &str) -> Result<bool, AppError> {
        if button == "add-child" {
            self.children.push(String::new());
            return Ok(true);
        }
        let Some(index) = button.strip_prefix("remove-") else {
            return Ok(false);
        };
        let index: usize = index
            .parse()
            .map_err(|_| AppError::bad_request("That button is not one this page has."))?;
        if index < self.children.len() {
            self.children.remove(index);
        }
        Ok(true)
    }
}
