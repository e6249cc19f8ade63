//! The page benchmarks (DESIGN.md §8): the app served in-process on 127.0.0.1:0 with
//! its real router and middleware (sessions, CSRF, compression), under a closed-loop
//! load of C concurrent signed-in browsers, each with a session of its own.
//!
//! `cargo bench --bench pages -- [--backend sqlite|postgres|both] [--requests N]
//! [--concurrency C] [--queued N] [--events N] [--warmup N] [--seconds S]
//! [--deep-page N] [--encoding VALUE]`
//!
//! Per backend, on a fresh database (a SQLite file in a temporary folder; a fresh
//! PostgreSQL schema, dropped at the end):
//!
//! 1. Seeds `--queued` quotes waiting for a decision through `EventStore::append`
//!    with every projection (what production does): per quote one append of the 6
//!    events `decide` gives for start, the three sections and submit, with times
//!    spread over the last 90 days; then decided quotes (7 events each) until the
//!    store holds `--events` events; then one 200-event quote per client for the
//!    timeline. Many appends are in flight at once, so group commit batches them.
//! 2. Times the reads behind each page called directly, one at a time, and prints
//!    the plan of the queue's count.
//! 3. Measures the approval queue (first page, `?country=IN`, `?sort=waiting`, and a
//!    deep page reached by following "Next page" links; each first with one client
//!    alone for its latency, then with C), the task list and the 200-event timeline,
//!    then the section POST end to end: each path `--requests` requests or `--seconds`
//!    seconds, whichever ends first, after a warm-up.
//!
//! The server (its tokio runtime, named `app-server`, 2 workers) and the load
//! generator (`load-client`, 2 workers) run in one process on separate runtimes, so
//! the CPU time of each is read apart from /proc and printed beside the figures.
//! Results go to standard output as tables; BENCHMARKS.md keeps them.

mod common;

use common::{load_average, millis, number, share};

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use futures_util::StreamExt;
use quoteline::db::{Backend, Db};
use quoteline::eventstore::{AppendRequest, Appended, EventStore, ExpectedVersion, Metadata};
use quoteline::kernel::{Actor, Role};
use quoteline::on_backend;
use quoteline::quoting::domain::{
    Action, Command, ContactDetails, FamilyDetails, GeographicDetails, PersonName, Quote,
    QuoteEvent, decide, evolve,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use reqwest::header::{ACCEPT_ENCODING, CONTENT_ENCODING, HeaderValue};
use sqlx::sqlite::SqliteConnectOptions;
use tokio::runtime::Handle;
use tokio::sync::Barrier;
use uuid::Uuid;

const USAGE: &str = "usage: cargo bench --bench pages -- [--backend sqlite|postgres|both] \
     [--requests N] [--concurrency C] [--queued N] [--events N] [--warmup N] \
     [--seconds S] [--deep-page N] [--encoding VALUE]\n\
     --requests: timed requests per path (default 10000), stopped early after --seconds \
     (default 3); --warmup: untimed requests before each path (default requests/10, \
     at most 1 s)\n\
     --queued: quotes waiting for a decision (default 100000); --events: seed decided \
     quotes until the store holds at least this many events (default 0: only the \
     queued quotes' 6 events each and the timeline quotes)\n\
     --deep-page: the queue page (1-based) to measure by following Next page links \
     (default the middle page); --encoding: the Accept-Encoding the clients send \
     (default \"gzip, deflate, br, zstd\", as a browser does; \"identity\" for none)\n\
     PostgreSQL: QUOTELINE_BENCH_POSTGRES (default postgres://postgres@127.0.0.1:5432/test)";

/// What every client sends as Accept-Encoding unless told otherwise: Chrome's.
const BROWSER_ENCODING: &str = "gzip, deflate, br, zstd";

const PASSWORD: &str = "bench-password-not-secret";

/// Seeded quotes belong to this many agents; the benchmark's agent clients sign in
/// as the first C of them.
const AGENTS: usize = 200;

/// Events in each timeline quote (§8: the 200-event timeline).
const TIMELINE_EVENTS: i64 = 200;

/// Section POSTs per quote before a client moves on to its next quote, so that no
/// stream grows far beyond what a real quote has.
const POSTS_PER_QUOTE: usize = 20;

/// Appends in flight at once while seeding: enough to fill the writer's batches.
const SEED_IN_FLIGHT: usize = 1024;

/// §8 budgets.
const READ_BUDGET: Budget = Budget {
    rps: 20_000.0,
    p99_ms: 10.0,
};
/// A page with one client: only its latency is held to the read budget.
const LATENCY_BUDGET: Budget = Budget {
    rps: 0.0,
    p99_ms: 10.0,
};

/// The load of one client alone on a page.
const ALONE: Load = Load {
    warmup: 50,
    requests: 1_000,
    limit: Duration::from_secs(1),
};

const POST_BUDGET: Budget = Budget {
    rps: 5_000.0,
    p99_ms: 50.0,
};

#[derive(Clone, Copy)]
struct Budget {
    rps: f64,
    p99_ms: f64,
}

struct Args {
    backend: String,
    requests: usize,
    concurrency: usize,
    queued: usize,
    events: usize,
    warmup: Option<usize>,
    seconds: f64,
    deep_page: Option<usize>,
    encoding: String,
}

impl Args {
    fn parse() -> Result<Args, String> {
        let mut args = Args {
            backend: "both".into(),
            requests: 10_000,
            concurrency: 16,
            queued: 100_000,
            events: 0,
            warmup: None,
            seconds: 3.0,
            deep_page: None,
            encoding: BROWSER_ENCODING.into(),
        };
        let mut given = std::env::args().skip(1);
        while let Some(arg) = given.next() {
            let (name, inline) = match arg.split_once('=') {
                Some((name, value)) => (name.to_owned(), Some(value.to_owned())),
                None => (arg.clone(), None),
            };
            let mut value = || {
                inline
                    .clone()
                    .or_else(|| given.next())
                    .ok_or(format!("{name} needs a value"))
            };
            match name.as_str() {
                // cargo bench passes --bench to every bench binary.
                "--bench" => {}
                "--backend" => args.backend = value()?,
                "--requests" => args.requests = number(&value()?)?,
                "--concurrency" => args.concurrency = number(&value()?)?,
                "--queued" => args.queued = number(&value()?)?,
                "--events" => args.events = number(&value()?)?,
                "--warmup" => args.warmup = Some(number(&value()?)?),
                "--deep-page" => args.deep_page = Some(number(&value()?)?),
                "--seconds" => {
                    args.seconds = value()?
                        .trim()
                        .parse()
                        .ok()
                        .filter(|s: &f64| *s > 0.0)
                        .ok_or("--seconds takes a positive number")?
                }
                "--encoding" => args.encoding = value()?,
                "-h" | "--help" => {
                    println!("{USAGE}");
                    std::process::exit(0);
                }
                other => return Err(format!("unknown argument {other}")),
            }
        }
        if !matches!(args.backend.as_str(), "sqlite" | "postgres" | "both") {
            return Err(format!(
                "--backend is sqlite, postgres or both, not {}",
                args.backend
            ));
        }
        if args.requests == 0 || args.concurrency == 0 || args.queued == 0 {
            return Err("--requests, --concurrency and --queued must be at least 1".into());
        }
        Ok(args)
    }

    fn warmup(&self) -> usize {
        self.warmup.unwrap_or((self.requests / 10).max(100))
    }

    fn load(&self) -> Load {
        Load {
            warmup: self.warmup(),
            requests: self.requests,
            limit: Duration::from_secs_f64(self.seconds),
        }
    }

    /// The header value, or none for "identity" (no compression asked for).
    fn accept_encoding(&self) -> Option<HeaderValue> {
        match self.encoding.trim() {
            "" | "identity" | "none" => None,
            value => HeaderValue::from_str(value).ok(),
        }
    }
}

// ----- CPU time by thread group, from /proc ---------------------------------------

/// CPU time in clock ticks (1/100 s on Linux) of this process's thread groups and
/// of the machine's PostgreSQL processes.
#[derive(Clone, Copy, Default, Debug)]
struct Cpu {
    /// The whole process, exited threads included.
    process: u64,
    /// The server's tokio runtime (workers and blocking threads).
    app: u64,
    /// sqlx's SQLite worker threads (one per connection): the statements themselves.
    sqlite: u64,
    /// The load generator's runtime.
    client: u64,
    /// Every `postgres` process on the machine (other sessions included).
    postgres: u64,
    /// The whole machine's busy time (every CPU, from /proc/stat): what is left
    /// after this process and PostgreSQL is other work on the machine.
    machine: u64,
}

const TICKS_PER_SECOND: f64 = 100.0;

impl Cpu {
    fn now() -> Cpu {
        let mut cpu = Cpu {
            process: read_ticks("/proc/self/stat").unwrap_or(0),
            machine: machine_busy().unwrap_or(0),
            ..Cpu::default()
        };
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for task in tasks.flatten() {
                let path = task.path();
                let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
                let ticks = read_ticks(&path.join("stat").to_string_lossy()).unwrap_or(0);
                if name.starts_with("app-server") {
                    cpu.app += ticks;
                } else if name.starts_with("sqlx-sqlite") {
                    cpu.sqlite += ticks;
                } else if name.starts_with("load-client") {
                    cpu.client += ticks;
                }
            }
        }
        if let Ok(processes) = std::fs::read_dir("/proc") {
            for process in processes.flatten() {
                let path = process.path();
                let is_pid = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
                if is_pid
                    && std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c == "postgres\n")
                {
                    cpu.postgres += read_ticks(&path.join("stat").to_string_lossy()).unwrap_or(0);
                }
            }
        }
        cpu
    }

    fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            process: self.process.saturating_sub(earlier.process),
            app: self.app.saturating_sub(earlier.app),
            sqlite: self.sqlite.saturating_sub(earlier.sqlite),
            client: self.client.saturating_sub(earlier.client),
            postgres: self.postgres.saturating_sub(earlier.postgres),
            machine: self.machine.saturating_sub(earlier.machine),
        }
    }

    /// Microseconds of CPU per request.
    fn per(ticks: u64, requests: usize) -> f64 {
        ticks as f64 / TICKS_PER_SECOND * 1e6 / requests.max(1) as f64
    }
}

/// Busy ticks of all CPUs together: user, nice, system, irq, softirq and steal.
fn machine_busy() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    Some(
        [0, 1, 2, 5, 6, 7]
            .iter()
            .filter_map(|&i| fields.get(i))
            .sum(),
    )
}

/// utime + stime of a /proc stat file.
fn read_ticks(path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}

// ----- Seeding through the event store ---------------------------------------------

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

fn agent_name(index: usize) -> String {
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
    let events = events_of(
        &mut quote,
        &actor,
        vec![
            Action::Start {
                reference: reference(n),
                applicant_name: PersonName::parse(&name).expect("a valid name"),
            },
            Action::ProvideGeographic(geographic(rng)),
            Action::ProvideContact(contact(&name, n)),
            Action::ProvideFamily(family(rng)),
            Action::Finalize,
        ],
    );
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

struct Seeded {
    /// Up to 200 waiting quotes of each of the first C agents, for their task lists.
    by_agent: Vec<Vec<Uuid>>,
    /// One 200-event quote per client.
    timelines: Vec<Uuid>,
    queued: usize,
    decided: usize,
    events: i64,
    queue_took: Duration,
    decided_took: Duration,
    timeline_took: Duration,
}

async fn count_events(db: &Db) -> Result<i64, sqlx::Error> {
    on_backend!(db, pool => sqlx::query_scalar("SELECT COUNT(*) FROM events").fetch_one(pool).await)
}

async fn seed(store: EventStore, args: Seeding) -> anyhow::Result<Seeded> {
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
            let first = events_of(
                &mut quote,
                &actor,
                vec![
                    Action::Start {
                        reference: reference(n),
                        applicant_name: PersonName::parse(&name).expect("a valid name"),
                    },
                    Action::ProvideGeographic(geographic(&mut rng)),
                ],
            );
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
struct Seeding {
    queued: usize,
    events: usize,
    clients: usize,
}

// ----- Where a page's time goes ------------------------------------------------------

/// The median time of `runs` calls, one at a time.
async fn median_of<F, Fut, T, E>(runs: usize, mut call: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let began = Instant::now();
        call().await?;
        times.push(began.elapsed());
    }
    times.sort_unstable();
    Ok(times[runs / 2])
}

/// The reads behind each page, called directly (no HTTP, no session, no template),
/// one at a time, and the plan of the queue's count.
async fn diagnose(
    state: quoteline::AppState,
    quote: Uuid,
    timeline_quote: Uuid,
) -> anyhow::Result<(Vec<(&'static str, Duration)>, String)> {
    use quoteline::underwriting::queue::{self, QueueFilter, QueueSort};
    const RUNS: usize = 100;
    let db = &state.db;
    let all = QueueFilter::default();
    let india = QueueFilter {
        country: Some("IN".into()),
        ..QueueFilter::default()
    };
    let mut timings = Vec::new();
    timings.push((
        "queue::page (51 rows, oldest first)",
        median_of(RUNS, || queue::page(db, &all, QueueSort::Oldest, None, 51)).await?,
    ));
    timings.push((
        "queue::count (all waiting)",
        median_of(RUNS, || queue::count(db, &all)).await?,
    ));
    timings.push((
        "queue::page (51 rows, country=IN)",
        median_of(RUNS, || {
            queue::page(db, &india, QueueSort::Oldest, None, 51)
        })
        .await?,
    ));
    timings.push((
        "queue::count (country=IN)",
        median_of(RUNS, || queue::count(db, &india)).await?,
    ));
    timings.push((
        "queue::page (51 rows, sort=waiting)",
        median_of(RUNS, || {
            queue::page(db, &all, QueueSort::LongestWaiting, None, 51)
        })
        .await?,
    ));
    timings.push((
        "summary::find (task list)",
        median_of(RUNS, || quoteline::quoting::summary::find(db, quote)).await?,
    ));
    timings.push((
        "timeline::header (200-event quote)",
        median_of(RUNS, || {
            quoteline::audit::timeline::header(db, timeline_quote)
        })
        .await?,
    ));
    timings.push((
        "timeline::for_quote (201 of 200 rows)",
        median_of(RUNS, || {
            quoteline::audit::timeline::for_quote(db, timeline_quote, None, 201)
        })
        .await?,
    ));
    timings.push((
        "QuoteService::load (6-event quote)",
        median_of(RUNS, || state.quotes.load(quote, None)).await?,
    ));
    timings.push((
        "QuoteService::load (200-event quote)",
        median_of(RUNS, || state.quotes.load(timeline_quote, None)).await?,
    ));
    let count_sql = queue::count_query(&all).sql;
    let plan = match db {
        Backend::Sqlite(pool) => {
            let rows: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(&format!("EXPLAIN QUERY PLAN {count_sql}"))
                    .fetch_all(pool)
                    .await?;
            rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("\n")
        }
        Backend::Postgres(pool) => {
            let rows: Vec<(String,)> =
                sqlx::query_as(&format!("EXPLAIN (ANALYZE, BUFFERS) {count_sql}"))
                    .fetch_all(pool)
                    .await?;
            rows.into_iter().map(|r| r.0).collect::<Vec<_>>().join("\n")
        }
    };
    Ok((timings, format!("{count_sql}\n{plan}")))
}

// ----- The load -----------------------------------------------------------------

/// One response as the load generator saw it.
struct Outcome {
    status: u16,
    bytes: usize,
    encoding: Option<String>,
}

/// One simulated browser on one path: each call is one request, sent when the
/// previous one's response has been read whole (a closed loop).
trait Visitor: Send + 'static {
    fn visit(&mut self) -> impl Future<Output = anyhow::Result<Outcome>> + Send;
}

/// GETs of a list of pages in turn.
struct Pages {
    client: reqwest::Client,
    urls: Vec<String>,
    next: usize,
    encoding: Option<HeaderValue>,
}

impl Visitor for Pages {
    async fn visit(&mut self) -> anyhow::Result<Outcome> {
        let url = &self.urls[self.next % self.urls.len()];
        self.next += 1;
        let mut request = self.client.get(url);
        if let Some(encoding) = &self.encoding {
            request = request.header(ACCEPT_ENCODING, encoding.clone());
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let encoding = response
            .headers()
            .get(CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response.bytes().await?.len();
        Ok(Outcome {
            status,
            bytes,
            encoding,
        })
    }
}

/// A quote a client started, with the version the client believes it is at.
struct OwnQuote {
    id: Uuid,
    version: i64,
}

/// POSTs of the geographic section to the client's own quotes in turn, each with
/// the version the client tracks and a fresh idempotency key.
struct SectionPosts {
    client: reqwest::Client,
    base: String,
    csrf_token: String,
    quotes: Vec<OwnQuote>,
    next: usize,
    sent: usize,
    encoding: Option<HeaderValue>,
}

/// Two valid addresses, alternated so that every POST changes the answers.
const ADDRESSES: [[&str; 4]; 2] = [
    ["IN", "Karnataka", "Bengaluru", "560001"],
    ["US", "California", "San Francisco", "94105"],
];

impl Visitor for SectionPosts {
    async fn visit(&mut self) -> anyhow::Result<Outcome> {
        let index = (self.sent / POSTS_PER_QUOTE) % self.quotes.len();
        self.sent += 1;
        let quote = &mut self.quotes[index];
        let [country, region, city, postal_code] = ADDRESSES[self.next % 2];
        self.next += 1;
        let version = quote.version.to_string();
        let key = Uuid::new_v4().to_string();
        let mut request = self
            .client
            .post(format!("{}/quotes/{}/geographic", self.base, quote.id))
            .form(&[
                ("csrf_token", self.csrf_token.as_str()),
                ("version", &version),
                ("idempotency_key", &key),
                ("country", country),
                ("region", region),
                ("city", city),
                ("postal_code", postal_code),
            ]);
        if let Some(encoding) = &self.encoding {
            request = request.header(ACCEPT_ENCODING, encoding.clone());
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?.len();
        if status == 303 {
            // The first section of an Initiated quote also saves it: 2 events.
            quote.version += if quote.version == 1 { 2 } else { 1 };
        } else {
            // Learn the version again, as a person would by reloading the form.
            quote.version = form_version(&self.client, &self.base, quote.id).await?;
        }
        Ok(Outcome {
            status,
            bytes,
            encoding: None,
        })
    }
}

/// The figures of one path.
struct Run {
    path: String,
    elapsed: Duration,
    latencies: Vec<Duration>,
    /// The status this path answers when all is well (200, or 303 for a POST).
    expected: u16,
    ok: usize,
    statuses: BTreeMap<u16, usize>,
    bytes: usize,
    encodings: BTreeMap<String, usize>,
    cpu: Cpu,
    budget: Budget,
}

impl Run {
    fn requests(&self) -> usize {
        self.latencies.len()
    }

    /// Successful responses per second.
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    /// Nearest-rank percentile.
    fn percentile(&self, p: f64) -> Duration {
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1]
    }

    fn meets(&self) -> (bool, bool) {
        (
            self.rate() >= self.budget.rps,
            self.percentile(99.0).as_secs_f64() * 1e3 <= self.budget.p99_ms,
        )
    }

    /// Responses of any other status than the expected one, by status.
    fn not_ok(&self) -> String {
        let other: Vec<String> = self
            .statuses
            .iter()
            .filter(|(status, _)| **status != self.expected)
            .map(|(status, n)| format!("{n}×{status}"))
            .collect();
        if other.is_empty() {
            "0".into()
        } else {
            other.join(" ")
        }
    }
}

/// Runs `warmup` untimed and then `total` timed requests, shared evenly over the
/// visitors, each visitor a task of its own sending one request at a time.
async fn drive<V: Visitor>(
    path: &str,
    visitors: Vec<V>,
    load: Load,
    expected: u16,
    budget: Budget,
) -> anyhow::Result<(Run, Vec<V>)> {
    let count = visitors.len();
    let total = load.requests;
    let start_line = Arc::new(Barrier::new(count + 1));
    let mut tasks = Vec::with_capacity(count);
    for (i, mut visitor) in visitors.into_iter().enumerate() {
        let start_line = start_line.clone();
        let warm = share(load.warmup, count, i);
        let timed = share(total, count, i);
        tasks.push(tokio::spawn(async move {
            let warming = Instant::now();
            for _ in 0..warm {
                if warming.elapsed() >= WARMUP_LIMIT {
                    break;
                }
                visitor.visit().await?;
            }
            start_line.wait().await;
            let timing = Instant::now();
            let mut seen = Vec::with_capacity(timed);
            for _ in 0..timed {
                if timing.elapsed() >= load.limit {
                    break;
                }
                let began = Instant::now();
                let outcome = visitor.visit().await?;
                seen.push((began.elapsed(), outcome));
            }
            anyhow::Ok((visitor, seen))
        }));
    }
    start_line.wait().await;
    let cpu_before = Cpu::now();
    let began = Instant::now();
    let mut run = Run {
        path: path.to_owned(),
        elapsed: Duration::ZERO,
        latencies: Vec::with_capacity(total),
        expected,
        ok: 0,
        statuses: BTreeMap::new(),
        bytes: 0,
        encodings: BTreeMap::new(),
        cpu: Cpu::default(),
        budget,
    };
    let mut visitors = Vec::with_capacity(count);
    for task in tasks {
        let (visitor, seen) = task.await??;
        visitors.push(visitor);
        for (latency, outcome) in seen {
            run.latencies.push(latency);
            run.ok += usize::from(outcome.status == expected);
            *run.statuses.entry(outcome.status).or_default() += 1;
            run.bytes += outcome.bytes;
            *run.encodings
                .entry(outcome.encoding.unwrap_or_else(|| "identity".into()))
                .or_default() += 1;
        }
    }
    run.elapsed = began.elapsed();
    run.cpu = Cpu::now().since(cpu_before);
    run.latencies.sort_unstable();
    Ok((run, visitors))
}

/// How many requests a path gets, and for how long at most.
#[derive(Clone, Copy)]
struct Load {
    warmup: usize,
    requests: usize,
    limit: Duration,
}

/// The longest a path's warm-up runs, whatever its number of requests.
const WARMUP_LIMIT: Duration = Duration::from_secs(1);

// ----- Browsers -------------------------------------------------------------------

/// A browser: its own cookie jar (so its own session), no redirects followed.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a reqwest client")
}

/// The value of the first hidden field `name` in a page.
fn field(body: &str, name: &str) -> Option<String> {
    let marker = format!(r#"name="{name}" value=""#);
    let start = body.find(&marker)? + marker.len();
    let end = body[start..].find('"')?;
    Some(body[start..start + end].to_owned())
}

fn unescape(href: &str) -> String {
    href.replace("&amp;", "&")
        .replace("&#38;", "&")
        .replace("&#x26;", "&")
}

/// The queue page's "Next page" link.
fn next_link(body: &str) -> Option<String> {
    let before = &body[..body.find(r#"rel="next""#)?];
    let start = before.rfind(r#"href=""#)? + r#"href=""#.len();
    let end = before[start..].find('"')?;
    Some(unescape(&before[start..start + end]))
}

async fn page(client: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let response = client.get(url).send().await?;
    let status = response.status();
    let body = response.text().await?;
    anyhow::ensure!(status == 200, "GET {url} answered {status}");
    Ok(body)
}

async fn sign_in(base: &str, username: &str) -> anyhow::Result<reqwest::Client> {
    let client = browser();
    let login = page(&client, &format!("{base}/login")).await?;
    let token = field(&login, "csrf_token").ok_or_else(|| anyhow::anyhow!("no token"))?;
    let response = client
        .post(format!("{base}/login"))
        .form(&[
            ("csrf_token", token.as_str()),
            ("username", username),
            ("password", PASSWORD),
        ])
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == 303,
        "signing in as {username} answered {}",
        response.status()
    );
    Ok(client)
}

/// Signs `count` browsers in as these users (in turn), one after another: the app
/// counts concurrent sign-ins to one account as attempts in a row and throttles them.
async fn sign_in_all(
    base: &str,
    users: &[String],
    count: usize,
) -> anyhow::Result<Vec<reqwest::Client>> {
    let mut clients = Vec::with_capacity(count);
    for i in 0..count {
        clients.push(sign_in(base, &users[i % users.len()]).await?);
    }
    Ok(clients)
}

/// The version the geographic form of this quote carries.
async fn form_version(client: &reqwest::Client, base: &str, id: Uuid) -> anyhow::Result<i64> {
    let body = page(client, &format!("{base}/quotes/{id}/geographic")).await?;
    field(&body, "version")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no version on the geographic form of {id}"))
}

/// Starts `count` quotes as this agent through the pages (untimed), and reads each
/// one's geographic form once for its version.
async fn start_quotes(
    client: reqwest::Client,
    base: String,
    count: usize,
    encoding: Option<HeaderValue>,
) -> anyhow::Result<SectionPosts> {
    let new = page(&client, &format!("{base}/quotes/new")).await?;
    let csrf_token = field(&new, "csrf_token").ok_or_else(|| anyhow::anyhow!("no token"))?;
    let mut quotes = Vec::with_capacity(count);
    for i in 0..count {
        let id = Uuid::now_v7();
        let key = Uuid::new_v4().to_string();
        let id_text = id.to_string();
        let response = client
            .post(format!("{base}/quotes"))
            .form(&[
                ("csrf_token", csrf_token.as_str()),
                ("quote_id", &id_text),
                ("idempotency_key", &key),
                ("applicant_name", &format!("Bench Applicant {i}")),
            ])
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == 303,
            "starting a quote answered {}",
            response.status()
        );
        let version = form_version(&client, &base, id).await?;
        quotes.push(OwnQuote { id, version });
    }
    Ok(SectionPosts {
        client,
        base,
        csrf_token,
        quotes,
        next: 0,
        sent: 0,
        encoding,
    })
}

// ----- One backend ----------------------------------------------------------------

struct Report {
    backend: &'static str,
    seeded: Seeded,
    timings: Vec<(&'static str, Duration)>,
    seed_note: String,
    runs: Vec<Run>,
}

async fn on_server<T: Send + 'static>(
    server: &Handle,
    work: impl Future<Output = anyhow::Result<T>> + Send + 'static,
) -> anyhow::Result<T> {
    server.spawn(work).await?
}

/// Everything on one backend; `sqlite_file` to report its size (and its WAL's).
async fn measure(
    db: Db,
    server: Handle,
    args: &Args,
    sqlite_file: Option<&std::path::Path>,
) -> anyhow::Result<Report> {
    let backend = db.backend_name();
    let clients = args.concurrency;
    let warmup = args.warmup();
    let load = args.load();
    let encoding = args.accept_encoding();

    // The app, as `quoteline serve` runs it, on the server's runtime.
    let (state, address, serving) = on_server(&server, async move {
        let state = quoteline::AppState::open(db).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = format!("http://{}", listener.local_addr()?);
        let router = quoteline::router(state.clone());
        let serving = tokio::spawn(async move { axum::serve(listener, router).await });
        Ok((state, address, serving))
    })
    .await?;
    let db = state.db.clone();
    println!("{backend}: serving on {address}");

    // People: one agent per client, one underwriter and one auditor.
    let agents: Vec<String> = (0..clients.min(AGENTS)).map(agent_name).collect();
    let began = Instant::now();
    {
        let db = db.clone();
        let agents = agents.clone();
        on_server(&server, async move {
            let mut people: Vec<(String, Role)> =
                agents.into_iter().map(|a| (a, Role::Agent)).collect();
            people.push(("underwriter".into(), Role::Underwriter));
            people.push(("auditor".into(), Role::Auditor));
            let tasks: Vec<_> = people
                .into_iter()
                .map(|(name, role)| {
                    let db = db.clone();
                    tokio::spawn(async move {
                        quoteline::identity::add_user(&db, &name, PASSWORD, &[role]).await
                    })
                })
                .collect();
            for task in tasks {
                task.await??;
            }
            Ok(())
        })
        .await?;
    }
    println!(
        "{backend}: added {} users in {:.1} s",
        agents.len() + 2,
        began.elapsed().as_secs_f64()
    );

    // The data.
    let seeding = Seeding {
        queued: args.queued,
        events: args.events,
        clients,
    };
    let load_before = load_average();
    let store = state.store.clone();
    let seeded = on_server(&server, seed(store, seeding)).await?;
    let seed_note = format!(
        "{} waiting quotes × 6 events via EventStore::append in {:.1} s ({:.0} events/s); \
         {} decided quotes × 7 events in {:.1} s; {} timeline quotes × {TIMELINE_EVENTS} events \
         (one append each) in {:.1} s; events stored: {}",
        seeded.queued,
        seeded.queue_took.as_secs_f64(),
        (seeded.queued * 6) as f64 / seeded.queue_took.as_secs_f64(),
        seeded.decided,
        seeded.decided_took.as_secs_f64(),
        seeded.timelines.len(),
        seeded.timeline_took.as_secs_f64(),
        seeded.events,
    );
    println!(
        "{backend}: seeded {seed_note} (load average {load_before} → {})",
        load_average()
    );
    if let Some(file) = sqlite_file {
        println!("{backend}: after seeding, {}", file_sizes(file));
    }
    if let Backend::Postgres(pool) = db.clone() {
        // Autovacuum may not have reached the new rows yet: give the planner its
        // statistics and the tables their visibility maps, as a settled server has.
        let began = Instant::now();
        on_server(&server, async move {
            sqlx::query("VACUUM ANALYZE").execute(&pool).await?;
            Ok(())
        })
        .await?;
        println!(
            "{backend}: VACUUM ANALYZE in {:.1} s",
            began.elapsed().as_secs_f64()
        );
    }

    let (timings, plan) = {
        let state = state.clone();
        let quote = seeded.by_agent[0][0];
        let timeline_quote = seeded.timelines[0];
        on_server(&server, diagnose(state, quote, timeline_quote)).await?
    };
    println!(
        "{backend}: the reads behind the pages, called directly one at a time (median of 100):"
    );
    for (what, took) in &timings {
        println!(
            "{backend}:   {what:<40} {:>8.3} ms",
            took.as_secs_f64() * 1e3
        );
    }
    println!("{backend}: the queue's count and its plan:");
    for line in plan.lines() {
        println!("{backend}:   {line}");
    }

    let mut runs = Vec::new();
    let base = address.clone();

    // 1. The approval queue, as C underwriters' browsers.
    let underwriters = sign_in_all(&base, &["underwriter".into()], clients).await?;
    let first = page(&underwriters[0], &format!("{base}/underwriting/queue")).await?;
    let total = format!("<strong>{}</strong>", seeded.queued);
    anyhow::ensure!(
        first.contains(&total),
        "the queue page does not show {} waiting quotes",
        seeded.queued
    );
    let pages = seeded.queued.div_ceil(50);
    let deep = args
        .deep_page
        .unwrap_or(pages / 2 + 1)
        .clamp(2, pages.max(2));
    let began = Instant::now();
    let mut deep_url = format!("{base}/underwriting/queue");
    let mut body = first;
    for _ in 1..deep {
        match next_link(&body) {
            Some(href) => deep_url = format!("{base}{href}"),
            None => break,
        }
        body = page(&underwriters[0], &deep_url).await?;
    }
    println!(
        "{backend}: reached queue page {deep} by {} Next page links in {:.1} s: {}",
        deep - 1,
        began.elapsed().as_secs_f64(),
        deep_url.trim_start_matches(&base)
    );
    let queue_paths = [
        (
            "GET /underwriting/queue (first page)",
            format!("{base}/underwriting/queue"),
        ),
        (
            "GET /underwriting/queue?country=IN",
            format!("{base}/underwriting/queue?country=IN"),
        ),
        (
            "GET /underwriting/queue?sort=waiting",
            format!("{base}/underwriting/queue?sort=waiting"),
        ),
        ("GET /underwriting/queue?next=… (deep)", deep_url),
    ];
    let mut underwriters = underwriters;
    for (path, url) in queue_paths {
        // One underwriter alone first: the latency a person sees when the server
        // has nothing else to do.
        let alone = Pages {
            client: underwriters[0].clone(),
            urls: vec![url.clone()],
            next: 0,
            encoding: encoding.clone(),
        };
        let (run, _) = drive(
            &format!("{path}, 1 client"),
            vec![alone],
            ALONE,
            200,
            LATENCY_BUDGET,
        )
        .await?;
        print_run(backend, &run);
        runs.push(run);
        let visitors: Vec<Pages> = underwriters
            .into_iter()
            .map(|client| Pages {
                client,
                urls: vec![url.clone()],
                next: 0,
                encoding: encoding.clone(),
            })
            .collect();
        let (run, visitors) = drive(path, visitors, load, 200, READ_BUDGET).await?;
        underwriters = visitors.into_iter().map(|v| v.client).collect();
        print_run(backend, &run);
        runs.push(run);
    }
    drop(underwriters);

    // 2. The task list, as each quote's agent.
    let agent_clients = sign_in_all(&base, &agents, clients).await?;
    let visitors: Vec<Pages> = agent_clients
        .iter()
        .enumerate()
        .map(|(i, client)| Pages {
            client: client.clone(),
            // Its own submitted quotes, and its timeline quote (never an empty list).
            urls: seeded.by_agent[i % seeded.by_agent.len()]
                .iter()
                .chain(seeded.timelines.get(i))
                .map(|id| format!("{base}/quotes/{id}"))
                .collect(),
            next: 0,
            encoding: encoding.clone(),
        })
        .collect();
    page(&visitors[0].client, &visitors[0].urls[0]).await?;
    let (run, _) = drive(
        "GET /quotes/{id} (task list)",
        visitors,
        load,
        200,
        READ_BUDGET,
    )
    .await?;
    print_run(backend, &run);
    runs.push(run);

    // 3. The 200-event timeline, as auditors.
    let auditors = sign_in_all(&base, &["auditor".into()], clients).await?;
    let visitors: Vec<Pages> = auditors
        .into_iter()
        .enumerate()
        .map(|(i, client)| Pages {
            client,
            urls: vec![format!(
                "{base}/quotes/{}/timeline",
                seeded.timelines[i % seeded.timelines.len()]
            )],
            next: 0,
            encoding: encoding.clone(),
        })
        .collect();
    let timeline = page(&visitors[0].client, &visitors[0].urls[0]).await?;
    anyhow::ensure!(
        timeline.matches("Contact details provided").count() >= 190,
        "the timeline page does not list the quote's events"
    );
    let (run, _) = drive(
        "GET /quotes/{id}/timeline (200 events)",
        visitors,
        load,
        200,
        READ_BUDGET,
    )
    .await?;
    print_run(backend, &run);
    runs.push(run);

    // 4. The section POST, as agents on quotes they started.
    let per_client = (args.requests + warmup).div_ceil(clients);
    let quotes_each = per_client.div_ceil(POSTS_PER_QUOTE).max(1);
    let began = Instant::now();
    let tasks: Vec<_> = agent_clients
        .into_iter()
        .map(|client| {
            tokio::spawn(start_quotes(
                client,
                base.clone(),
                quotes_each,
                encoding.clone(),
            ))
        })
        .collect();
    let mut visitors = Vec::with_capacity(clients);
    for task in tasks {
        visitors.push(task.await??);
    }
    println!(
        "{backend}: {clients} agents started {} quotes through the pages in {:.1} s",
        clients * quotes_each,
        began.elapsed().as_secs_f64()
    );
    let (run, _) = drive(
        "POST /quotes/{id}/geographic (303)",
        visitors,
        load,
        303,
        POST_BUDGET,
    )
    .await?;
    print_run(backend, &run);
    runs.push(run);

    serving.abort();
    let _ = serving.await;
    drop(state);
    on_server(&server, async move {
        db.close().await;
        Ok(())
    })
    .await?;
    Ok(Report {
        backend,
        seeded,
        timings,
        seed_note,
        runs,
    })
}

/// The SQLite file's size and its write-ahead log's.
fn file_sizes(path: &std::path::Path) -> String {
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len()) as f64 / 1e6;
    let wal = path.with_extension("db-wal");
    format!(
        "database file {:.0} MB, WAL {:.0} MB",
        size(path),
        size(&wal)
    )
}

async fn bench_sqlite(args: &Args, server: Handle) -> anyhow::Result<Report> {
    let folder = tempfile::tempdir()?;
    let path = folder.path().join("bench.db");
    let options = SqliteConnectOptions::new().filename(&path);
    let db = on_server(
        &server,
        async move { Ok(Db::connect_sqlite(options).await?) },
    )
    .await?;
    let Backend::Sqlite(pool) = &db else {
        unreachable!()
    };
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(pool)
        .await?;
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(pool)
        .await?;
    let version: String = sqlx::query_scalar("SELECT sqlite_version()")
        .fetch_one(pool)
        .await?;
    println!(
        "sqlite {version}: {} (journal_mode={mode}, synchronous={})",
        path.display(),
        match sync {
            2 => "FULL".to_owned(),
            3 => "EXTRA".to_owned(),
            other => other.to_string(),
        }
    );
    let report = measure(db, server, args, Some(&path)).await;
    println!("sqlite: at the end, {}", file_sizes(&path));
    report
}

/// Ok(None) with the reason printed when the server cannot be reached.
async fn bench_postgres(args: &Args, server: Handle) -> anyhow::Result<Option<Report>> {
    let Some(bench_schema) = common::BenchSchema::create("bench_pages").await? else {
        return Ok(None);
    };
    let options = bench_schema.options.clone();
    let report = async {
        let db = on_server(
            &server,
            async move { Ok(Db::connect_postgres(options).await?) },
        )
        .await?;
        measure(db, server, args, None).await
    }
    .await;
    bench_schema.drop().await?;
    report.map(Some)
}

// ----- Output ---------------------------------------------------------------------

fn print_run(backend: &str, run: &Run) {
    println!(
        "{backend}: {} — {} requests, {:.0}/s, p50 {} ms, p99 {} ms, not OK {}",
        run.path,
        run.requests(),
        run.rate(),
        millis(run.percentile(50.0)),
        millis(run.percentile(99.0)),
        run.not_ok()
    );
}

fn print_tables(report: &Report, cores: usize) {
    let backend = report.backend;
    println!();
    println!(
        "{backend}: {} quotes waiting, {} events stored. {}",
        report.seeded.queued, report.seeded.events, report.seed_note
    );
    println!(
        "| {:<8} | {:<48} | {:>8} | {:>8} | {:>7} | {:>7} | {:>7} | {:>7} | {:>6} | {:<24} | {:<14} |",
        "backend",
        "path",
        "requests",
        "ok/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "not ok",
        "budget",
        "met"
    );
    println!(
        "| {:-<8} | {:-<48} | {:->8} | {:->8} | {:->7} | {:->7} | {:->7} | {:->7} | {:->6} | {:-<24} | {:-<14} |",
        "", "", "", "", "", "", "", "", "", "", ""
    );
    for run in &report.runs {
        let (rate_met, p99_met) = run.meets();
        let verdict = match (rate_met, p99_met) {
            (true, true) => "met",
            (false, true) => "NOT MET (rate)",
            (true, false) => "NOT MET (p99)",
            (false, false) => "NOT MET (both)",
        };
        println!(
            "| {:<8} | {:<48} | {:>8} | {:>8.0} | {:>7} | {:>7} | {:>7} | {:>7} | {:>6} | {:<24} | {:<14} |",
            backend,
            run.path,
            run.requests(),
            run.rate(),
            millis(run.percentile(50.0)),
            millis(run.percentile(95.0)),
            millis(run.percentile(99.0)),
            millis(*run.latencies.last().unwrap_or(&Duration::ZERO)),
            run.not_ok(),
            if run.budget.rps > 0.0 {
                format!(
                    ">= {:.0}/s, p99 <= {:.0} ms",
                    run.budget.rps, run.budget.p99_ms
                )
            } else {
                format!("p99 <= {:.0} ms (1 client)", run.budget.p99_ms)
            },
            verdict,
        );
    }
    println!();
    println!(
        "CPU per request in µs ({cores} cores, all shared by server, database and load generator):"
    );
    println!(
        "| {:<8} | {:<48} | {:>7} | {:>7} | {:>8} | {:>7} | {:>7} | {:>9} | {:>10} | {:>14} | {:>6} | {:>6} |",
        "backend",
        "path",
        "app",
        "sqlite",
        "postgres",
        "client",
        "other",
        "resp. B",
        "encoding",
        "app+db ceiling",
        "busy",
        "rest"
    );
    println!(
        "| {:-<8} | {:-<48} | {:->7} | {:->7} | {:->8} | {:->7} | {:->7} | {:->9} | {:->10} | {:->14} | {:->6} | {:->6} |",
        "", "", "", "", "", "", "", "", "", "", "", ""
    );
    for run in &report.runs {
        let n = run.requests();
        let cpu = run.cpu;
        let share_of_cores = |ticks: u64| {
            ticks as f64 / TICKS_PER_SECOND / run.elapsed.as_secs_f64() / cores.max(1) as f64
                * 100.0
        };
        let other = cpu
            .process
            .saturating_sub(cpu.app + cpu.sqlite + cpu.client);
        let server = Cpu::per(cpu.app + cpu.sqlite + cpu.postgres, n);
        let encoding = run
            .encodings
            .iter()
            .max_by_key(|(_, n)| **n)
            .map_or("-".to_owned(), |(e, _)| e.clone());
        println!(
            "| {:<8} | {:<48} | {:>7.0} | {:>7.0} | {:>8.0} | {:>7.0} | {:>7.0} | {:>9.0} | {:>10} | {:>12.0}/s | {:>5.0}% | {:>5.0}% |",
            backend,
            run.path,
            Cpu::per(cpu.app, n),
            Cpu::per(cpu.sqlite, n),
            Cpu::per(cpu.postgres, n),
            Cpu::per(cpu.client, n),
            Cpu::per(other, n),
            run.bytes as f64 / n.max(1) as f64,
            encoding,
            cores as f64 * 1e6 / server.max(1.0),
            share_of_cores(cpu.machine),
            share_of_cores(cpu.machine.saturating_sub(cpu.process + cpu.postgres)),
        );
    }
    println!(
        "(app: the server's runtime threads; sqlite: sqlx's SQLite worker threads; postgres: \
         every postgres process on the machine; client: the load generator; \"app+db ceiling\": \
         {cores} cores divided by app+sqlite+postgres CPU per request, the rate if nothing else ran; \
         busy: the machine's CPU use during the path, as a share of all {cores} cores; rest: the \
         part of it that was neither this process nor PostgreSQL: other work on the machine, \
         and kernel threads such as the disk's)"
    );
    let timings: Vec<String> = report
        .timings
        .iter()
        .map(|(what, took)| format!("{what} {:.3} ms", took.as_secs_f64() * 1e3))
        .collect();
    println!(
        "{backend}: reads called directly, one at a time (median): {}",
        timings.join("; ")
    );
}

fn main() -> anyhow::Result<()> {
    let args = match Args::parse() {
        Ok(args) => args,
        Err(message) => {
            eprintln!("{message}\n{USAGE}");
            std::process::exit(2);
        }
    };
    // The server's runtime, as `quoteline serve` would have on this machine, and the
    // load generator's, apart so that each one's CPU time can be read.
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("app-server")
        .enable_all()
        .build()?;
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("load-client")
        .enable_all()
        .build()?;
    let server = server_runtime.handle().clone();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    client_runtime.block_on(async move {
        println!(
            "pages benchmark: {} timed requests per path (or {} s, whichever ends first) after {} \
             warm-up (at most {} s), {} concurrent clients, {} queued quotes, Accept-Encoding: {}, \
             {cores} cores",
            args.requests,
            args.seconds,
            args.warmup(),
            WARMUP_LIMIT.as_secs(),
            args.concurrency,
            args.queued,
            args.accept_encoding().map_or("(none)".to_owned(), |v| v
                .to_str()
                .unwrap_or("?")
                .to_owned()),
        );
        let load_before = load_average();
        let began = Instant::now();
        let mut reports = Vec::new();
        if matches!(args.backend.as_str(), "sqlite" | "both") {
            reports.push(bench_sqlite(&args, server.clone()).await?);
        }
        if matches!(args.backend.as_str(), "postgres" | "both")
            && let Some(report) = bench_postgres(&args, server.clone()).await?
        {
            reports.push(report);
        }
        for report in &reports {
            print_tables(report, cores);
        }
        println!(
            "\nwhole run: {:.1} s; load average before {}, after {}",
            began.elapsed().as_secs_f64(),
            load_before,
            load_average()
        );
        anyhow::Ok(())
    })?;
    drop(server_runtime);
    Ok(())
}
