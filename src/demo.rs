//! `quoteline demo`: demo people of every role and a dozen quotes in every status,
//! so a newcomer can sign in and try each page at once.

use chrono::Utc;
use rand::Rng;
use uuid::Uuid;

use crate::identity;
use crate::kernel::{Actor, Envelope, Role};
use crate::quoting::CommandError;
use crate::quoting::domain::{
    Action, Command, ContactDetails, FamilyDetails, GeographicDetails, NonEmptyText, PersonName,
};
use crate::state::AppState;

pub struct DemoSignIn {
    pub username: &'static str,
    pub roles: &'static [Role],
    pub password: String,
}

const PEOPLE: &[(&str, &[Role])] = &[
    ("asha", &[Role::Agent]),
    ("bilal", &[Role::Agent]),
    ("uma", &[Role::Underwriter]),
    ("victor", &[Role::Underwriter]),
    ("ada", &[Role::Auditor]),
    ("root", &[Role::Admin]),
];

/// Adds the demo people (or gives them fresh passwords when they exist already,
/// since passwords are shown only once) and, on a database with no quotes yet, the
/// demo quotes.
pub async fn seed(state: &AppState) -> anyhow::Result<Vec<DemoSignIn>> {
    let mut sign_ins = Vec::new();
    for (username, roles) in PEOPLE {
        let password = new_password();
        identity::add_or_reset_user(&state.db, username, &password, roles).await?;
        sign_ins.push(DemoSignIn {
            username,
            roles,
            password,
        });
    }
    let existing = crate::quoting::summary::count(&state.db).await?;
    if existing == 0 {
        seed_quotes(state).await?;
    }
    Ok(sign_ins)
}

fn new_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyz23456789";
    let mut rng = rand::rng();
    (0..12)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

struct Applicant {
    name: &'static str,
    country: &'static str,
    region: &'static str,
    city: &'static str,
    postal: &'static str,
    email: &'static str,
    phone: &'static str,
    spouse: &'static str,
    children: &'static [&'static str],
}

const APPLICANTS: &[Applicant] = &[
    Applicant {
        name: "Meera Iyer",
        country: "IN",
        region: "Maharashtra",
        city: "Pune",
        postal: "411001",
        email: "meera.iyer@example.com",
        phone: "+91 98765 43210",
        spouse: "Ravi Iyer",
        children: &["Asha", "Kiran"],
    },
    Applicant {
        name: "John O'Neill",
        country: "US",
        region: "California",
        city: "San Francisco",
        postal: "94105",
        email: "john.oneill@example.com",
        phone: "+1 415 555 0134",
        spouse: "",
        children: &[],
    },
    Applicant {
        name: "Chloé Martin",
        country: "FR",
        region: "Île-de-France",
        city: "Paris",
        postal: "75011",
        email: "chloe.martin@example.fr",
        phone: "+33 6 12 34 56 78",
        spouse: "Hugo Martin",
        children: &["Léa"],
    },
    Applicant {
        name: "Tomás García",
        country: "ES",
        region: "Madrid",
        city: "Madrid",
        postal: "28013",
        email: "tomas@example.es",
        phone: "+34 612 345 678",
        spouse: "Lucía García",
        children: &["Pablo", "Sofía", "Mateo"],
    },
    Applicant {
        name: "Aiko Tanaka",
        country: "JP",
        region: "Tokyo",
        city: "Shibuya",
        postal: "150-0002",
        email: "aiko.tanaka@example.jp",
        phone: "+81 90 1234 5678",
        spouse: "",
        children: &["Haruto"],
    },
    Applicant {
        name: "Oliver Smith",
        country: "GB",
        region: "England",
        city: "London",
        postal: "SW1A 1AA",
        email: "oliver.smith@example.co.uk",
        phone: "+44 7700 900123",
        spouse: "Amelia Smith",
        children: &[],
    },
];

/// Where each demo quote stops in its life.
#[derive(Clone, Copy)]
enum Stage {
    Initiated,
    Saved,
    Finalized,
    Approved,
    Rejected,
    Referred,
    Withdrawn,
}

const STAGES: &[Stage] = &[
    Stage::Initiated,
    Stage::Saved,
    Stage::Finalized,
    Stage::Finalized,
    Stage::Finalized,
    Stage::Approved,
    Stage::Approved,
    Stage::Rejected,
    Stage::Referred,
    Stage::Withdrawn,
    Stage::Saved,
    Stage::Finalized,
];

async fn seed_quotes(state: &AppState) -> anyhow::Result<()> {
    let agents = [
        Actor::new("asha", [Role::Agent]),
        Actor::new("bilal", [Role::Agent]),
    ];
    let underwriter = Actor::new("uma", [Role::Underwriter]);
    for (i, stage) in STAGES.iter().enumerate() {
        let agent = &agents[i % 2];
        let who = &APPLICANTS[i % APPLICANTS.len()];
        let id = Uuid::now_v7();
        let envelope = Envelope {
            at: Utc::now(),
            request_id: Some("demo".into()),
            idempotency_key: None,
        };
        state
            .quotes
            .start(
                id,
                agent.clone(),
                PersonName::parse(who.name).map_err(anyhow::Error::msg)?,
                &envelope,
            )
            .await
            .map_err(demo_error)?;
        let children: Vec<String> = who.children.iter().map(|c| c.to_string()).collect();
        let mut steps: Vec<(Actor, Action)> = Vec::new();
        let sections = [
            Action::ProvideGeographic(GeographicDetails::parse(
                who.country,
                who.region,
                who.city,
                who.postal,
            )?),
            Action::ProvideContact(ContactDetails::parse(who.email, who.phone)?),
            Action::ProvideFamily(FamilyDetails::parse(
                &(children.len() + usize::from(!who.spouse.is_empty())).to_string(),
                who.spouse,
                &children,
            )?),
        ];
        let answered = match stage {
            Stage::Initiated => 0,
            Stage::Saved => 1 + i % 2,
            _ => 3,
        };
        steps.extend(
            sections
                .into_iter()
                .take(answered)
                .map(|a| (agent.clone(), a)),
        );
        if !matches!(stage, Stage::Initiated | Stage::Saved) {
            steps.push((agent.clone(), Action::Finalize));
        }
        let text = |s: &str| NonEmptyText::parse(s).map_err(anyhow::Error::msg);
        match stage {
            Stage::Approved => steps.push((underwriter.clone(), Action::Approve)),
            Stage::Rejected => steps.push((
                underwriter.clone(),
                Action::Reject {
                    reason: text("The applicant lives outside the regions we cover this year.")?,
                },
            )),
            Stage::Referred => steps.push((
                underwriter.clone(),
                Action::ReferBack {
                    note: text("Please confirm the number of dependents with the applicant.")?,
                },
            )),
            Stage::Withdrawn => steps.push((agent.clone(), Action::Withdraw)),
            _ => {}
        }
        let mut version = 1;
        for (actor, action) in steps {
            let appended = state
                .quotes
                .execute(id, version, Command::new(actor, action), &envelope)
                .await
                .map_err(demo_error)?;
            version = appended.last_version().unwrap_or(version);
        }
    }
    Ok(())
}

fn demo_error(error: CommandError) -> anyhow::Error {
    anyhow::anyhow!("a demo quote could not be written: {error}")
}
