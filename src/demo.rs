//! `quoteline demo`: demo people of every role and a dozen quotes in every status,
//! so a newcomer can sign in and try each page at once; or, with `--quotes N` or
//! `--events N`, N generated quotes (see [`generate`]) for trying the app at size and
//! for benchmarks.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::StreamExt;
use indicatif::ProgressBar;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

use crate::db::Db;
use crate::eventstore::{AppendRequest, Appended, EventStore, ExpectedVersion, Metadata};
use crate::identity;
use crate::kernel::{Actor, Envelope, Role};
use crate::quoting::CommandError;
use crate::quoting::domain::{
    Action, Command, ContactDetails, FamilyDetails, GeographicDetails, NonEmptyText, PersonName,
    Quote, QuoteEvent, Status, decide, evolve,
};
use crate::rebuild::rebuild_in_pages;
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
    let sign_ins = add_people(state).await?;
    if quote_count(state).await? == 0 {
        seed_quotes(state).await?;
    }
    Ok(sign_ins)
}

/// Adds the demo people, or gives them fresh passwords when they exist already
/// (passwords are shown only once).
pub async fn add_people(state: &AppState) -> anyhow::Result<Vec<DemoSignIn>> {
    let mut sign_ins = Vec::new();
    for (username, roles) in PEOPLE {
        let password = new_password();
        identity::add_or_reset_user(&state.store, username, &password, roles).await?;
        sign_ins.push(DemoSignIn {
            username,
            roles,
            password,
        });
    }
    Ok(sign_ins)
}

/// How many quotes the database holds: demo quotes are added only to an empty one.
pub async fn quote_count(state: &AppState) -> anyhow::Result<i64> {
    Ok(crate::quoting::summary::count(&state.db).await?)
}

fn new_password() -> String {
    identity::password::generate(12)
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

// ----- Generated quotes --------------------------------------------------------------
//
// Each quote's life is planned from its own random generator, seeded from the run's
// seed and the quote's number, so a plan depends on nothing else: the same seed gives
// the same quotes (references, answers, statuses and times relative to `now`; the ids,
// UUID v7 of the start, too when `now` is the same) however the appends interleave. Each command of a life is decided by the aggregate's own
// `decide` on the quote as the commands before it left it; the events of one sitting
// (one person's commands within half an hour) are appended together through
// `EventStore::append` with every inline projection, with the expected version, the
// actor, the time and an idempotency key, as the service appends a form. Each quote's
// appends go in order; many quotes are in flight at once, so the group-commit writer
// batches their appends.

/// The demo people who work the generated quotes.
const AGENTS: [&str; 2] = ["asha", "bilal"];
const UNDERWRITERS: [&str; 2] = ["uma", "victor"];

/// Quotes whose appends are in flight at once: enough to fill the writer's batches
/// (256 appends) several times over.
const IN_FLIGHT: usize = 1024;

/// How much to generate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// This many quotes.
    Quotes(usize),
    /// Quotes until the store holds at least this many events (the last quote may
    /// take it a few events past).
    Events(u64),
}

#[derive(Debug, Clone, Copy)]
pub struct Generate {
    pub size: Size,
    pub seed: u64,
    /// Every time is at or before this moment; quotes start up to 180 days before it.
    pub now: DateTime<Utc>,
}

/// How a generated quote's life goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Started, nothing answered.
    Started,
    /// This many sections answered (1 to 3), not submitted.
    Sections(u8),
    /// Submitted, waiting for a decision.
    Submitted,
    Approved,
    Rejected,
    /// Submitted, referred back, not yet submitted again.
    Referred,
    /// Referred back, changed and submitted again: waiting.
    Resubmitted,
    /// Referred back, changed, submitted again and then approved or rejected.
    ResubmittedDecided,
    /// Withdrawn by its agent: before any answer, while saved, or while submitted.
    Withdrawn,
}

/// The mix, in parts of 100.
const FATES: &[(Fate, u32)] = &[
    (Fate::Started, 6),
    (Fate::Sections(1), 5),
    (Fate::Sections(2), 5),
    (Fate::Sections(3), 6),
    (Fate::Submitted, 18),
    (Fate::Approved, 24),
    (Fate::Rejected, 9),
    (Fate::Referred, 6),
    (Fate::Resubmitted, 6),
    (Fate::ResubmittedDecided, 7),
    (Fate::Withdrawn, 8),
];

/// One generated quote: its appends in order, and the quote they leave.
#[derive(Debug, Clone)]
pub struct QuotePlan {
    pub id: Uuid,
    pub fate: Fate,
    pub appends: Vec<AppendRequest>,
    pub quote: Quote,
}

impl QuotePlan {
    pub fn events(&self) -> u64 {
        self.quote.version
    }

    pub fn status(&self) -> Status {
        self.quote.status.expect("a generated quote is started")
    }
}

/// Commands one person gives within this many minutes of the first go into one
/// append.
const SITTING_MINUTES: i64 = 30;

/// The section a command gives, by number: 0 geographic, 1 contact, 2 family.
const SECTIONS: usize = 3;

/// A UUID v7 of the time `at`, with these random bits.
fn v7_at(at: DateTime<Utc>, random: &[u8; 10]) -> Uuid {
    uuid::Builder::from_unix_timestamp_millis(at.timestamp_millis().max(0) as u64, random)
        .into_uuid()
}

/// The `n`th quote of the run with `seed`. Pure: the same arguments give the same
/// plan.
pub fn plan(seed: u64, n: usize, now: DateTime<Utc>) -> QuotePlan {
    let mut rng = StdRng::seed_from_u64(mix(seed, n as u64));
    let fate = pick_fate(&mut rng);
    let agent = Actor::new(AGENTS[rng.random_range(0..AGENTS.len())], [Role::Agent]);
    let underwriter = Actor::new(
        UNDERWRITERS[rng.random_range(0..UNDERWRITERS.len())],
        [Role::Underwriter],
    );
    let applicant = Household::new(&mut rng, n);
    let mut life = Life::default();
    let agent_step = |action| (agent.clone(), action);

    life.push(
        agent_step(Action::Start {
            reference: reference(seed, n),
            applicant_name: PersonName::parse(&applicant.name).expect("a valid generated name"),
        }),
        minutes(&mut rng, 0, 1),
    );
    let answered = match fate {
        Fate::Started => 0,
        Fate::Sections(k) => usize::from(k),
        Fate::Withdrawn => rng.random_range(0..=SECTIONS),
        _ => SECTIONS,
    };
    for section in 0..answered {
        let gap = minutes(&mut rng, 1, 15);
        life.push(agent_step(applicant.section(&mut rng, section, 0)), gap);
    }
    // Some agents come back and change answers, before submitting or instead of it.
    let mut version_of_answers = 1;
    if answered > 0 && rng.random_bool(0.3) {
        for _ in 0..rng.random_range(1..=4) {
            let gap = minutes(&mut rng, 5, 3 * 24 * 60);
            let section = rng.random_range(0..answered);
            life.push(
                agent_step(applicant.section(&mut rng, section, version_of_answers)),
                gap,
            );
            version_of_answers += 1;
        }
    }
    let submits = match fate {
        Fate::Withdrawn => answered == SECTIONS && rng.random_bool(0.5),
        Fate::Started | Fate::Sections(_) => false,
        _ => true,
    };
    if submits {
        life.push(agent_step(Action::Finalize), minutes(&mut rng, 2, 120));
    }
    let referrals = match fate {
        Fate::Referred | Fate::Resubmitted => 1,
        Fate::ResubmittedDecided => rng.random_range(1..=2),
        _ => 0,
    };
    for round in 0..referrals {
        let gap = minutes(&mut rng, 30, 4 * 24 * 60);
        life.push(
            (
                underwriter.clone(),
                Action::ReferBack {
                    note: text(REFERRAL_NOTES[rng.random_range(0..REFERRAL_NOTES.len())]),
                },
            ),
            gap,
        );
        let last_round = round + 1 == referrals;
        if fate == Fate::Referred && last_round {
            break;
        }
        for _ in 0..rng.random_range(1..=2) {
            let gap = minutes(&mut rng, 30, 2 * 24 * 60);
            let section = rng.random_range(0..SECTIONS);
            life.push(
                agent_step(applicant.section(&mut rng, section, version_of_answers)),
                gap,
            );
            version_of_answers += 1;
        }
        life.push(agent_step(Action::Finalize), minutes(&mut rng, 2, 60));
    }
    let approves = match fate {
        Fate::Approved => Some(true),
        Fate::Rejected => Some(false),
        Fate::ResubmittedDecided => Some(rng.random_bool(0.7)),
        _ => None,
    };
    if let Some(approves) = approves {
        let action = if approves {
            Action::Approve
        } else {
            Action::Reject {
                reason: text(REJECTION_REASONS[rng.random_range(0..REJECTION_REASONS.len())]),
            }
        };
        life.push(
            (underwriter.clone(), action),
            minutes(&mut rng, 30, 5 * 24 * 60),
        );
    }
    if fate == Fate::Withdrawn {
        life.push(
            agent_step(Action::Withdraw),
            minutes(&mut rng, 60, 10 * 24 * 60),
        );
    }

    // The life ends up to 180 days ago, and never after `now`.
    let span: TimeDelta = life.steps.iter().map(|(_, gap)| *gap).sum();
    let lookback = TimeDelta::seconds(rng.random_range(0..180 * 24 * 3600));
    let started_at = now - span - lookback;
    let mut random_bytes = [0u8; 10];
    rng.fill(&mut random_bytes);
    let id = v7_at(started_at, &random_bytes);

    // One append per sitting: the commands one person gives within half an hour of
    // the sitting's first, decided one after another and appended together at the
    // time of the last, as if the pages of one visit were saved at once. Fewer,
    // larger appends write faster, and the events are the same.
    let mut quote = Quote::default();
    let mut at = started_at;
    let mut appends: Vec<AppendRequest> = Vec::with_capacity(life.steps.len());
    let mut sitting_began = at;
    for ((actor, action), gap) in life.steps {
        at += gap;
        let events = decide(&quote, &Command::new(actor.clone(), action))
            .unwrap_or_else(|refusal| panic!("a generated {fate:?} quote was refused: {refusal}"));
        let expected = quote.version as i64;
        for event in &events {
            quote = evolve(quote, event);
        }
        let events = events.iter().map(QuoteEvent::encode);
        match appends.last_mut() {
            Some(sitting)
                if sitting.metadata.actor == actor.username
                    && at - sitting_began <= TimeDelta::minutes(SITTING_MINUTES) =>
            {
                sitting.events.extend(events);
                sitting.metadata.recorded_at = at;
            }
            _ => {
                sitting_began = at;
                // A form's key: a UUID v7 of the moment, as the pages mint them.
                let key = v7_at(at, &rng.random());
                appends.push(AppendRequest {
                    stream_id: id,
                    expected: ExpectedVersion::from(expected),
                    events: events.collect(),
                    metadata: Metadata::new(&actor.username, at)
                        .with_request_id("demo")
                        .with_idempotency_key(key.to_string()),
                });
            }
        }
    }
    QuotePlan {
        id,
        fate,
        appends,
        quote,
    }
}

/// The plans of a run, in order, as many as `size` asks for.
pub fn plans(options: Generate) -> impl Iterator<Item = QuotePlan> {
    let mut events = 0u64;
    (0..)
        .map(move |n| plan(options.seed, n, options.now))
        .enumerate()
        .take_while(move |(n, plan)| {
            let more = match options.size {
                Size::Quotes(quotes) => *n < quotes,
                Size::Events(target) => events < target,
            };
            events += plan.events();
            more
        })
        .map(|(_, plan)| plan)
}

/// What a run wrote.
#[derive(Debug, Clone, Default)]
pub struct Generated {
    pub quotes: u64,
    pub events: u64,
    pub appends: u64,
    /// Quotes in each status, in [`Status::ALL`]'s order.
    pub statuses: [u64; 6],
    /// Quotes referred back at least once.
    pub referred: u64,
    pub took: Duration,
}

impl Generated {
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.took.as_secs_f64().max(1e-9)
    }

    pub fn count(&self, status: Status) -> u64 {
        let index = Status::ALL.iter().position(|s| *s == status);
        index.map_or(0, |i| self.statuses[i])
    }

    fn add(&mut self, plan: &QuotePlan) {
        self.quotes += 1;
        self.events += plan.events();
        self.appends += plan.appends.len() as u64;
        if let Some(i) = Status::ALL.iter().position(|s| *s == plan.status()) {
            self.statuses[i] += 1;
        }
        self.referred += u64::from(plan.quote.referral_count > 0);
    }

    /// "12 Initiated, 30 Saved, …", for the command's closing line.
    pub fn mix(&self) -> String {
        Status::ALL
            .iter()
            .zip(self.statuses)
            .map(|(status, n)| format!("{n} {}", status.as_str()))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Writes the generated quotes through the event store (with every inline
/// projection), `IN_FLIGHT` quotes at a time, each quote's appends in order. Moves
/// `progress` on by quotes (`Size::Quotes`) or by events (`Size::Events`).
pub async fn generate(
    store: &EventStore,
    options: Generate,
    progress: &ProgressBar,
) -> anyhow::Result<Generated> {
    let began = Instant::now();
    let jobs = plans(options).map(|plan| {
        let store = store.clone();
        async move {
            for request in &plan.appends {
                match store.append(request.clone()).await? {
                    Appended::Written(_) => {}
                    Appended::AlreadyWritten(_) => anyhow::bail!(
                        "generated quote {} was written before: generate into an empty database",
                        plan.id
                    ),
                }
            }
            anyhow::Ok(plan)
        }
    });
    let mut running = futures_util::stream::iter(jobs).buffer_unordered(IN_FLIGHT);
    let mut generated = Generated::default();
    while let Some(done) = running.next().await {
        let plan = done?;
        generated.add(&plan);
        progress.inc(match options.size {
            Size::Quotes(_) => 1,
            Size::Events(_) => plan.events(),
        });
    }
    generated.took = began.elapsed();
    Ok(generated)
}

/// Events per page as the projections are rebuilt after [`generate_in_bulk`].
const BULK_PAGE: i64 = 10_000;

/// [`generate`] for a database that holds no quotes yet and that nothing else writes
/// to meanwhile (`quoteline demo --quotes/--events`): the same appends through the
/// event store, with no inline projection (a commit then writes the events and heads
/// alone), and the projections then rebuilt from the whole log (`rebuild`): filled
/// into shadow tables and swapped in, so that a run cut short leaves the live
/// tables as they were, to catch up at the next start. `progress` counts the
/// appends' events or quotes, then the events the projections applied.
pub async fn generate_in_bulk(
    db: &Db,
    options: Generate,
    progress: &ProgressBar,
) -> anyhow::Result<Generated> {
    let began = Instant::now();
    let store = EventStore::new(db.clone(), vec![]);
    let mut generated = generate(&store, options, progress).await?;
    progress.set_position(0);
    progress.set_length(generated.events);
    rebuild_in_pages(db, None, BULK_PAGE, |done, _| progress.set_position(done)).await?;
    generated.took = began.elapsed();
    Ok(generated)
}

/// A life as commands and the time between each and the one before.
#[derive(Default)]
struct Life {
    steps: Vec<((Actor, Action), TimeDelta)>,
}

impl Life {
    fn push(&mut self, step: (Actor, Action), gap: TimeDelta) {
        self.steps.push((step, gap));
    }
}

/// One generator per (seed, quote): splitmix64 of both, so that neighbouring seeds
/// and numbers give unrelated streams.
fn mix(seed: u64, n: u64) -> u64 {
    let mut z = seed
        .wrapping_mul(0x9E37_79B9_7F4A_7C15)
        .wrapping_add(n)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

fn pick_fate(rng: &mut StdRng) -> Fate {
    let total: u32 = FATES.iter().map(|(_, weight)| weight).sum();
    let mut pick = rng.random_range(0..total);
    for (fate, weight) in FATES {
        if pick < *weight {
            return *fate;
        }
        pick -= weight;
    }
    unreachable!("the pick is below the total of the weights")
}

fn minutes(rng: &mut StdRng, at_least: i64, at_most: i64) -> TimeDelta {
    TimeDelta::seconds(rng.random_range(at_least * 60..=at_most * 60))
}

fn text(s: &str) -> NonEmptyText {
    NonEmptyText::parse(s).expect("a non-empty text")
}

/// A reference no other quote of the run has: `n` scrambled by an odd multiplier and
/// a seed-dependent offset (a bijection on 30 bits), in the app's alphabet.
fn reference(seed: u64, n: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    const MASK: u64 = (1 << 30) - 1;
    let mut x = (n as u64)
        .wrapping_mul(0x2E5B_F271)
        .wrapping_add(mix(seed, u64::MAX))
        & MASK;
    let mut code = [0u8; 6];
    for slot in code.iter_mut().rev() {
        *slot = ALPHABET[(x & 31) as usize];
        x >>= 5;
    }
    format!("Q-{}", String::from_utf8_lossy(&code))
}

const REFERRAL_NOTES: &[&str] = &[
    "Please confirm the number of dependents with the applicant.",
    "The postal code does not match the city; please check the address.",
    "Please confirm the applicant's phone number.",
    "Add the spouse's name if the applicant is married.",
];

const REJECTION_REASONS: &[&str] = &[
    "The applicant lives outside the regions we cover this year.",
    "The applicant's details could not be verified.",
    "The number of dependents is above what this product covers.",
];

const FIRST_NAMES: &[&str] = &[
    "Ada", "Asha", "Bola", "Carlos", "Chen", "Chloé", "Dmitri", "Elena", "Fatima", "Grace", "Hiro",
    "Inès", "Jonas", "Kavya", "Lena", "Mateo", "Noor", "Olu", "Priya", "Quinn", "Rahul", "Sofía",
    "Tomás", "Wen", "Yara", "Zainab",
];
const LAST_NAMES: &[&str] = &[
    "Adeyemi", "Bauer", "Costa", "Dubois", "Esposito", "Fischer", "García", "Haddad", "Ito",
    "Jensen", "Kapoor", "López", "Mensah", "Nakamura", "O'Neill", "Okafor", "Patel", "Rossi",
    "Schmidt", "Tanaka", "Silva", "Smith", "Varga", "Williams", "Yilmaz",
];

/// (region, city, postal code), valid for the country's postal format.
type Place = (&'static str, &'static str, &'static str);

/// Where applicants live: country, weight, dialling code, places.
const PLACES: &[(&str, u32, &str, &[Place])] = &[
    (
        "US",
        20,
        "1",
        &[
            ("California", "San Francisco", "94105"),
            ("New York", "New York", "10001"),
            ("Texas", "Austin", "73301"),
        ],
    ),
    (
        "IN",
        15,
        "91",
        &[
            ("Maharashtra", "Pune", "411001"),
            ("Karnataka", "Bengaluru", "560001"),
            ("Delhi", "New Delhi", "110001"),
        ],
    ),
    (
        "GB",
        10,
        "44",
        &[
            ("England", "London", "SW1A 1AA"),
            ("Scotland", "Edinburgh", "EH1 1YZ"),
        ],
    ),
    (
        "DE",
        8,
        "49",
        &[
            ("Berlin", "Berlin", "10115"),
            ("Bayern", "München", "80331"),
        ],
    ),
    ("FR", 7, "33", &[("Île-de-France", "Paris", "75011")]),
    ("CA", 6, "1", &[("Ontario", "Ottawa", "K1A 0B1")]),
    ("AU", 6, "61", &[("New South Wales", "Sydney", "2000")]),
    ("BR", 5, "55", &[("São Paulo", "São Paulo", "01310-100")]),
    ("JP", 5, "81", &[("Tokyo", "Shibuya", "150-0002")]),
    ("NL", 4, "31", &[("Noord-Holland", "Amsterdam", "1012 AB")]),
    ("ES", 4, "34", &[("Madrid", "Madrid", "28013")]),
    ("IT", 4, "39", &[("Lazio", "Roma", "00184")]),
    (
        "MX",
        3,
        "52",
        &[("Ciudad de México", "Ciudad de México", "06000")],
    ),
    ("NG", 3, "234", &[("Lagos", "Ikeja", "100001")]),
];

/// Who a generated quote is for.
struct Household {
    name: String,
    number: usize,
    country: usize,
}

impl Household {
    fn new(rng: &mut StdRng, number: usize) -> Household {
        let total: u32 = PLACES.iter().map(|p| p.1).sum();
        let mut pick = rng.random_range(0..total);
        let country = PLACES
            .iter()
            .position(|(_, weight, _, _)| {
                let here = pick < *weight;
                pick = pick.saturating_sub(*weight);
                here
            })
            .expect("a weight is picked");
        Household {
            name: person(rng),
            number,
            country,
        }
    }

    /// A section's answers; `revision` above 0 makes them differ from the first
    /// answers (a new phone number, another place, another family).
    fn section(&self, rng: &mut StdRng, section: usize, revision: u32) -> Action {
        let (country, _, dial, places) = PLACES[self.country];
        match section {
            0 => {
                let (region, city, postal) = places[rng.random_range(0..places.len())];
                Action::ProvideGeographic(
                    GeographicDetails::parse(country, region, city, postal)
                        .expect("a valid generated address"),
                )
            }
            1 => {
                let local = self.name.to_lowercase().replace([' ', '\''], ".");
                let email = match revision {
                    0 => format!("{local}.{}@example.com", self.number),
                    r => format!("{local}.{}.{r}@example.org", self.number),
                };
                let phone = format!(
                    "+{dial} {:03} {:03} {:04}",
                    rng.random_range(200..1000),
                    rng.random_range(0..1000),
                    rng.random_range(0..10_000)
                );
                // One applicant in four would rather be phoned.
                let preferred = if self.number.is_multiple_of(4) {
                    "phone"
                } else {
                    "email"
                };
                Action::ProvideContact(
                    ContactDetails::parse_with(&email, &phone, preferred)
                        .expect("valid generated contact details"),
                )
            }
            _ => {
                let children: Vec<String> = (0..rng.random_range(0..=3usize))
                    .map(|_| person(rng))
                    .collect();
                let spouse = if rng.random_bool(0.6) {
                    person(rng)
                } else {
                    String::new()
                };
                let dependents =
                    children.len() + usize::from(!spouse.is_empty()) + rng.random_range(0..2);
                Action::ProvideFamily(
                    FamilyDetails::parse(&dependents.to_string(), &spouse, &children)
                        .expect("valid generated family details"),
                )
            }
        }
    }
}

fn person(rng: &mut StdRng) -> String {
    format!(
        "{} {}",
        FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())],
        LAST_NAMES[rng.random_range(0..LAST_NAMES.len())]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        "2026-11-26T12:00:00Z".parse().unwrap()
    }

    #[test]
    fn a_plan_depends_only_on_the_seed_and_the_number() {
        for n in 0..200 {
            let (a, b) = (plan(7, n, now()), plan(7, n, now()));
            assert_eq!((a.id, &a.appends, &a.quote), (b.id, &b.appends, &b.quote));
        }
        let differs = (0..50).any(|n| plan(7, n, now()).quote != plan(8, n, now()).quote);
        assert!(differs, "another seed gives other quotes");
    }

    #[test]
    fn references_do_not_repeat_within_a_run() {
        let references: std::collections::HashSet<String> =
            (0..100_000).map(|n| reference(3, n)).collect();
        assert_eq!(references.len(), 100_000);
    }

    #[test]
    fn lives_end_by_now_in_order_and_in_the_status_of_their_fate() {
        for n in 0..2_000 {
            let plan = plan(1, n, now());
            let times: Vec<_> = plan
                .appends
                .iter()
                .map(|a| a.metadata.recorded_at)
                .collect();
            assert!(times.is_sorted(), "{n}: times in order");
            assert!(times.iter().all(|t| *t <= now()), "{n}: none after now");
            let expected: &[Status] = match plan.fate {
                Fate::Started => &[Status::Initiated],
                Fate::Sections(_) | Fate::Referred => &[Status::Saved],
                Fate::Submitted | Fate::Resubmitted => &[Status::Finalized],
                Fate::Approved => &[Status::Approved],
                Fate::Rejected => &[Status::Rejected],
                Fate::ResubmittedDecided => &[Status::Approved, Status::Rejected],
                Fate::Withdrawn => &[Status::Withdrawn],
            };
            assert!(expected.contains(&plan.status()), "{n}: {:?}", plan.fate);
        }
    }

    #[test]
    fn a_size_in_events_stops_at_the_first_quote_that_reaches_it() {
        let options = |size| Generate {
            size,
            seed: 5,
            now: now(),
        };
        let planned: Vec<_> = plans(options(Size::Events(1_000))).collect();
        let events: u64 = planned.iter().map(QuotePlan::events).sum();
        let last = planned.last().unwrap().events();
        assert!(events >= 1_000 && events - last < 1_000, "{events}");
        assert_eq!(plans(options(Size::Quotes(17))).count(), 17);
    }
}
