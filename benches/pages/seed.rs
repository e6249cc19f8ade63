//! The data a run measures, built through `EventStore::append` with every
//! projection, as production builds it: the people who sign in, the queued quotes,
//! the decided ones and one 200-event quote per client for the timeline. Seeded
//! from fixed random seeds, so two runs of one size hold the same quotes.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::StreamExt;
use quoteline::db::Db;
use quoteline::eventstore::{AppendRequest, Appended, EventStore, ExpectedVersion, Metadata};
use quoteline::kernel::{Actor, Role};
use quoteline::on_backend;
use quoteline::quoting::domain::{
    Action, Command, ContactDetails, FamilyDetails, GeographicDetails, PersonName, Quote,
    QuoteEvent, decide, evolve,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use uuid::Uuid;

pub const PASSWORD: &str = "bench-password-not-secret";

/// Seeded quotes belong to this many agents; the benchmark's agent clients sign in
/// as the first C of them.
pub const AGENTS: usize = 200;

/// Events in each timeline quote (§9: the 200-event timeline).
pub const TIMELINE_EVENTS: i64 = 200;

/// Appends in flight at once while seeding: enough to fill the writer's batches.
const SEED_IN_FLIGHT: usize = 1024;

/// These agents, one underwriter and one auditor, all with [`PASSWORD`].
pub async fn add_people(store: EventStore, agents: Vec<String>) -> anyhow::Result<()> {
    let mut people: Vec<(String, Role)> = agents.into_iter().map(|a| (a, Role::Agent)).collect();
    people.push(("underwriter".into(), Role::Underwriter));
    people.push(("auditor".into(), Role::Auditor));
    let tasks: Vec<_> = people
        .into_iter()
        .map(|(name, role)| {
            let store = store.clone();
            tokio::spawn(async move {
                quoteline::identity::add_user(&store, &name, PASSWORD, &[role]).await
            })
        })
        .collect();
    for task in tasks {
        task.await??;
    }
    Ok(())
}

/// (region, city, postal code), valid for the country's postal format.
type Place = (&'static str, &'static str, &'static str);

/// Where a seeded applicant lives, per country (code, weight, places).
const PLACES: &[(&str, u32, &[Place])] = &[
    (
        "US",
        20,
        &[
            ("California", "San Francisco", "94105"),
            ("New York", "New York", "10001"),
            ("Texas", "Austin", "73301"),
        ],
    ),
    (
        "IN",
        15,
        &[
            ("Maharashtra", "Mumbai", "400001"),
            ("Karnataka", "Bengaluru", "560001"),
            ("Delhi", "New Delhi", "110001"),
        ],
    ),
    (
        "GB",
        10,
        &[
            ("England", "London", "SW1A 1AA"),
            ("Scotland", "Edinburgh", "EH1 1YZ"),
        ],
    ),
    (
        "DE",
        8,
        &[
            ("Berlin", "Berlin", "10115"),
            ("Bavaria", "Munich", "80331"),
        ],
    ),
    ("FR", 7, &[("Ile-de-France", "Paris", "75001")]),
    ("CA", 6, &[("Ontario", "Ottawa", "K1A 0B1")]),
    ("AU", 6, &[("New South Wales", "Sydney", "2000")]),
    ("BR", 5, &[("Sao Paulo", "Sao Paulo", "01310-100")]),
    ("JP", 5, &[("Tokyo", "Chiyoda", "100-0001")]),
    ("NL", 4, &[("North Holland", "Amsterdam", "1012 AB")]),
    ("ES", 4, &[("Madrid", "Madrid", "28013")]),
    ("IT", 4, &[("Lazio", "Rome", "00184")]),
    ("MX", 3, &[("Ciudad de Mexico", "Mexico City", "06000")]),
    ("NG", 3, &[("Lagos", "Ikeja", "100001")]),
];

const FIRST_NAMES: &[&str] = &[
    "Ada", "Asha", "Bola", "Carlos", "Chen", "Dmitri", "Elena", "Fatima", "Grace", "Hiro", "Ines",
    "Jonas", "Kavya", "Lena", "Mateo", "Noor", "Olu", "Priya", "Quinn", "Rahul", "Sofia", "Tomas",
    "Uma", "Vikram", "Wen", "Yara", "Zainab",
];
const LAST_NAMES: &[&str] = &[
    "Adeyemi", "Bauer", "Costa", "Dubois", "Esposito", "Fischer", "Garcia", "Haddad", "Ito",
    "Jensen", "Kapoor", "Lopez", "Mensah", "Nakamura", "Okafor", "Patel", "Rossi", "Schmidt",
    "Tanaka", "Silva", "Smith", "Varga", "Williams", "Yilmaz",
];

pub fn agent_name(index: usize) -> String {
    format!("agent-{:03}", index % AGENTS + 1)
}

/// A quote reference that no other seeded quote has: `n` scrambled by an odd
/// multiplier (a bijection on 30 bits), in the app's alphabet.
fn reference(n: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut x = (n as u64).wrapping_mul(0x2E5B_F271) & ((1 << 30) - 1);
    let mut code = [0u8; 6];
    for slot in code.iter_mut().rev() {
        *slot = ALPHABET[(x & 31) as usize];
        x >>= 5;
    }
    format!("Q-{}", String::from_utf8_lossy(&code))
}

/// A UUID v7 of the given moment, as the app would have made when the quote started.
fn id_at(at: DateTime<Utc>) -> Uuid {
    Uuid::new_v7(uuid::Timestamp::from_unix(
        uuid::NoContext,
        at.timestamp() as u64,
        at.timestamp_subsec_nanos(),
    ))
}

fn person(rng: &mut StdRng) -> String {
    format!(
        "{} {}",
        FIRST_NAMES[rng.random_range(0..FIRST_NAMES.len())],
        LAST_NAMES[rng.random_range(0..LAST_NAMES.len())]
    )
}

fn geographic(rng: &mut StdRng) -> GeographicDetails {
    let total: u32 = PLACES.iter().map(|p| p.1).sum();
    let mut pick = rng.random_range(0..total);
    let (country, places) = PLACES
        .iter()
        .find_map(|(country, weight, places)| {
            if pick < *weight {
                Some((*country, *places))
            } else {
                pick -= weight;
                None
            }
        })
        .expect("a weight is picked");
    let (region, city, postal) = places[rng.random_range(0..places.len())];
    GeographicDetails::parse(country, region, city, postal).expect("a valid seeded address")
}

fn contact(name: &str, n: usize) -> ContactDetails {
    let local = name.to_ascii_lowercase().replace(' ', ".");
    ContactDetails::parse(
        &format!("{local}.{n}@example.com"),
        &format!("+1 415 555 {:04}", n % 10_000),
    )
    .expect("valid seeded contact details")
}

fn family(rng: &mut StdRng) -> FamilyDetails {
    let children: Vec<String> = (0..rng.random_range(0..3usize))
        .map(|_| person(rng))
        .collect();
    let dependents = children.len() + rng.random_range(0..2usize);
    let spouse = if rng.random_bool(0.6) {
        person(rng)
    } else {
        String::new()
    };
    FamilyDetails::parse(&dependents.to_string(), &spouse, &children)
        .expect("valid seeded family details")
}

/// Runs `actions` through the aggregate's own `decide` and `evolve`, as the
/// service would, and returns the events they produce.
fn events_of(quote: &mut Quote, actor: &Actor, actions: Vec<Action>) -> Vec<QuoteEvent> {
    let mut events = Vec::new();
    for action in actions {
        let new = decide(quote, &Command::new(actor.clone(), action)).expect("a valid command");
        for event in &new {
            *quote = evolve(std::mem::take(quote), event);
        }
        events.extend(new);
    }
    events
}

fn request(
    stream_id: Uuid,
    expected: i64,
    events: &[QuoteEvent],
    actor: &str,
    at: DateTime<Utc>,
) -> AppendRequest {
    AppendRequest {
        stream_id,
        expected: ExpectedVersion::from(expected),
        events: events.iter().map(QuoteEvent::encode).collect(),
        // Every form carries an idempotency key, so every append checks one.
        metadata: Metadata::new(actor, at)
            .with_request_id("bench-seed")
            .with_idempotency_key(Uuid::new_v4().to_string()),
    }
}

/// How every seeded quote begins: started as the `n`th, then its address given.
fn started(n: usize, name: &str, rng: &mut StdRng) -> Vec<Action> {
    vec![
        Action::Start {
            reference: reference(n),
            applicant_name: PersonName::parse(name).expect("a valid name"),
        },
        Action::ProvideGeographic(geographic(rng)),
    ]
}

/// A quote started, given all three sections and submitted by its agent, in one
/// append: 6 events (the first section also saves the quote).
fn submitted_quote(
    n: usize,
    rng: &mut StdRng,
    at: DateTime<Utc>,
) -> (Uuid, usize, AppendRequest, Quote) {
    let agent = rng.random_range(0..AGENTS);
    let actor = Actor::new(agent_name(agent), [Role::Agent]);
    let name = person(rng);
    let mut quote = Quote::default();
    let mut actions = started(n, &name, rng);
    actions.extend([
        Action::ProvideContact(contact(&name, n)),
        Action::ProvideFamily(family(rng)),
        Action::Finalize,
    ]);
    let events = events_of(&mut quote, &actor, actions);
    let id = id_at(at);
    let request = request(id, 0, &events, &actor.username, at);
    (id, agent, request, quote)
}

fn random_time(
    rng: &mut StdRng,
    now: DateTime<Utc>,
    from_days: i64,
    to_days: i64,
) -> DateTime<Utc> {
    let micros = rng.random_range(from_days * 86_400_000_000..to_days * 86_400_000_000);
    now - TimeDelta::microseconds(micros)
}

fn ensure_written(appended: Appended, what: &str) -> anyhow::Result<()> {
    anyhow::ensure!(
        matches!(appended, Appended::Written(ref e) if !e.is_empty()),
        "seeding {what} wrote nothing"
    );
    Ok(())
}

pub struct Seeded {
    /// Up to 200 waiting quotes of each of the first C agents, for their task lists.
    pub by_agent: Vec<Vec<Uuid>>,
    /// One 200-event quote per client.
    pub timelines: Vec<Uuid>,
    pub queued: usize,
    decided: usize,
    pub events: i64,
    queue_took: Duration,
    decided_took: Duration,
    timeline_took: Duration,
}

impl Seeded {
    /// What was seeded and how fast, for the report.
    pub fn note(&self) -> String {
        format!(
            "{} waiting quotes × 6 events via EventStore::append in {:.1} s ({:.0} events/s); \
             {} decided quotes × 7 events in {:.1} s; {} timeline quotes × {TIMELINE_EVENTS} events \
             (one append each) in {:.1} s; events stored: {}",
            self.queued,
            self.queue_took.as_secs_f64(),
            (self.queued * 6) as f64 / self.queue_took.as_secs_f64(),
            self.decided,
            self.decided_took.as_secs_f64(),
            self.timelines.len(),
            self.timeline_took.as_secs_f64(),
            self.events,
        )
    }
}

async fn count_events(db: &Db) -> Result<i64, sqlx::Error> {
    on_backend!(db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM events").fetch_one(pool).await)
}

pub async fn seed(store: EventStore, args: Seeding) -> anyhow::Result<Seeded> {
    let now = Utc::now();
    let clients = args.clients;

    // 1. The queue: submitted quotes, last submission over the past 90 days.
    let began = Instant::now();
    let mut rng = StdRng::seed_from_u64(7);
    let mut by_agent: Vec<Vec<Uuid>> = vec![Vec::new(); clients.min(AGENTS)];
    let jobs = (0..args.queued).map(|n| {
        let at = random_time(&mut rng, now, 0, 90);
        let (id, agent, request, _) = submitted_quote(n, &mut rng, at);
        if let Some(mine) = by_agent.get_mut(agent)
            && mine.len() < 200
        {
            mine.push(id);
        }
        let store = store.clone();
        async move { store.append(request).await }
    });
    let mut appends = futures_util::stream::iter(jobs).buffer_unordered(SEED_IN_FLIGHT);
    while let Some(outcome) = appends.next().await {
        ensure_written(outcome?, "a submitted quote")?;
    }
    drop(appends);
    let queue_took = began.elapsed();

    // 2. Decided quotes (submitted, then approved or rejected by an underwriter,
    // 91 to 365 days ago) until the store holds `events` events.
    let began = Instant::now();
    let so_far = count_events(store.db()).await? as usize;
    let reserved = clients * TIMELINE_EVENTS as usize;
    let decided = args.events.saturating_sub(so_far + reserved).div_ceil(7);
    let underwriter = Actor::new("underwriter", [Role::Underwriter]);
    let jobs = (0..decided).map(|i| {
        let at = random_time(&mut rng, now, 91, 365);
        let (id, _, submit, mut quote) = submitted_quote(args.queued + i, &mut rng, at);
        let action = if rng.random_bool(0.7) {
            Action::Approve
        } else {
            Action::Reject {
                reason: quoteline::quoting::domain::NonEmptyText::parse(
                    "The applicant's details could not be verified.",
                )
                .expect("a reason"),
            }
        };
        let decision = events_of(&mut quote, &underwriter, vec![action]);
        let decided_at = at + TimeDelta::hours(rng.random_range(1..72));
        let decide = request(id, 6, &decision, &underwriter.username, decided_at);
        let store = store.clone();
        async move {
            ensure_written(store.append(submit).await?, "a decided quote")?;
            ensure_written(store.append(decide).await?, "a decision")
        }
    });
    let mut appends = futures_util::stream::iter(jobs).buffer_unordered(SEED_IN_FLIGHT);
    while let Some(outcome) = appends.next().await {
        outcome?;
    }
    drop(appends);
    let decided_took = began.elapsed();

    // 3. One 200-event quote per client: started, geographic details (and saved),
    // then contact details changed back and forth, one append (one form) each.
    let began = Instant::now();
    let timelines: Vec<Uuid> = (0..clients)
        .map(|_| id_at(now - TimeDelta::days(30)))
        .collect();
    let mut tasks = Vec::new();
    for (i, &id) in timelines.iter().enumerate() {
        let store = store.clone();
        let n = args.queued + decided + i;
        let mut rng = StdRng::seed_from_u64(1000 + i as u64);
        tasks.push(tokio::spawn(async move {
            let actor = Actor::new(agent_name(i), [Role::Agent]);
            let name = person(&mut rng);
            let mut at = now - TimeDelta::days(30);
            let mut quote = Quote::default();
            let first = events_of(&mut quote, &actor, started(n, &name, &mut rng));
            ensure_written(
                store
                    .append(request(id, 0, &first, &actor.username, at))
                    .await?,
                "a timeline quote",
            )?;
            let details = [contact(&name, 1), contact(&name, 2)];
            let mut version = quote.version as i64;
            while version < TIMELINE_EVENTS {
                at += TimeDelta::minutes(7);
                let change = details[version as usize % 2].clone();
                let events = events_of(&mut quote, &actor, vec![Action::ProvideContact(change)]);
                ensure_written(
                    store
                        .append(request(id, version, &events, &actor.username, at))
                        .await?,
                    "a contact change",
                )?;
                version = quote.version as i64;
            }
            anyhow::Ok(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    let timeline_took = began.elapsed();

    Ok(Seeded {
        by_agent,
        timelines,
        queued: args.queued,
        decided,
        events: count_events(store.db()).await?,
        queue_took,
        decided_took,
        timeline_took,
    })
}

#[derive(Clone, Copy)]
pub struct Seeding {
    pub queued: usize,
    pub events: usize,
    pub clients: usize,
}
