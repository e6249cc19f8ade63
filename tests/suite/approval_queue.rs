//! The approval queue: its projection kept in the append's transaction, its page
//! (filters, sorts, keyset paging), and the indexes every page reads, on both
//! backends.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeDelta, TimeZone, Utc};
use quoteline::AppState;
use quoteline::db::{Backend, Db};
use quoteline::eventstore::{AppendRequest, ExpectedVersion, Metadata, Projector, RecordedEvent};
use quoteline::kernel::Envelope;
use quoteline::kernel::{Actor, Role};
use quoteline::quoting::CommandError;
use quoteline::quoting::domain::{
    Action, Command, ContactDetails, FamilyDetails, GeographicDetails, NonEmptyText, PersonName,
    QuoteEvent, Status, fold,
};
use quoteline::quoting::projection::QuoteProjector;
use quoteline::underwriting::queue::{
    self, ApprovalQueueProjection, Cursor, QueueFilter, QueueRow, QueueSort,
};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::support::{PgPlan, TestApp, TestDb, csrf_token_in, html_page};

storage_tests!(
    a_quote_joins_the_queue_when_submitted_and_leaves_it_with_each_decision,
    filters_sorts_and_keyset_pages_return_exactly_the_expected_quotes,
    every_first_page_reads_its_index_without_sorting,
    the_queue_always_equals_a_fresh_fold_of_the_events,
    an_underwriter_sees_the_queue_page_and_no_one_else_does,
    bad_filter_values_get_a_400_page,
    a_drawn_queue_page_is_sent_again_until_a_quote_moves,
);

// ----- Helpers ---------------------------------------------------------------------

fn at(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
}

fn envelope(at: DateTime<Utc>) -> Envelope {
    Envelope {
        at,
        request_id: None,
        idempotency_key: None,
    }
}

fn agent(name: &str) -> Actor {
    Actor::new(name, [Role::Agent])
}

fn underwriter(name: &str) -> Actor {
    Actor::new(name, [Role::Underwriter])
}

fn text(s: &str) -> NonEmptyText {
    NonEmptyText::parse(s).unwrap()
}

/// Places with postal codes that their country's format accepts.
const PLACES: &[(&str, &str, &str, &str, &str)] = &[
    ("IN", "India", "Maharashtra", "Pune", "411001"),
    (
        "US",
        "United States",
        "California",
        "San Francisco",
        "94105",
    ),
    ("FR", "France", "Île-de-France", "Paris", "75011"),
    ("ES", "Spain", "Madrid", "Madrid", "28013"),
    ("JP", "Japan", "Tokyo", "Shibuya", "150-0002"),
];

fn geographic(place: usize) -> GeographicDetails {
    let (code, _, region, city, postal) = PLACES[place];
    GeographicDetails::parse(code, region, city, postal).unwrap()
}

fn contact() -> ContactDetails {
    ContactDetails::parse("applicant@example.com", "+44 7700 900123").unwrap()
}

fn family(dependents: u32) -> FamilyDetails {
    FamilyDetails::parse(&dependents.to_string(), "", &[]).unwrap()
}

/// Runs `action` on the quote as it stands now, at time `at`.
async fn act(
    app: &AppState,
    id: Uuid,
    actor: &Actor,
    action: Action,
    at: DateTime<Utc>,
) -> Result<(), CommandError> {
    let version = app
        .quotes
        .load(id, None)
        .await?
        .map_or(0, |q| q.version as i64);
    app.quotes
        .execute(
            id,
            version,
            Command::new(actor.clone(), action),
            &envelope(at),
        )
        .await
        .map(drop)
}

/// A quote started and given every section by `agent` just before `submitted`,
/// then submitted at `submitted`.
async fn submitted_quote(
    app: &AppState,
    by: &Actor,
    applicant: &str,
    place: usize,
    dependents: u32,
    submitted: DateTime<Utc>,
) -> Uuid {
    let id = Uuid::now_v7();
    let before = submitted - TimeDelta::minutes(10);
    app.quotes
        .start(
            id,
            by.clone(),
            PersonName::parse(applicant).unwrap(),
            &envelope(before),
        )
        .await
        .unwrap();
    for action in [
        Action::ProvideGeographic(geographic(place)),
        Action::ProvideContact(contact()),
        Action::ProvideFamily(family(dependents)),
    ] {
        act(app, id, by, action, before).await.unwrap();
    }
    act(app, id, by, Action::Finalize, submitted).await.unwrap();
    id
}

/// Every row of the table, waiting or not, in quote id order.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
struct TableRow {
    quote_id: Uuid,
    reference: String,
    applicant_name: String,
    agent: String,
    country: Option<String>,
    region: Option<String>,
    dependents: Option<i32>,
    submitted_at: Option<DateTime<Utc>>,
    first_submitted_at: Option<DateTime<Utc>>,
    earliest_submission_at: Option<DateTime<Utc>>,
    referral_count: i32,
}

impl TableRow {
    fn waiting(&self) -> bool {
        self.submitted_at.is_some()
    }
}

async fn table_rows(db: &Db) -> Vec<TableRow> {
    let sql = "SELECT quote_id, reference, applicant_name, agent, country, region, dependents, \
               submitted_at, first_submitted_at, earliest_submission_at, referral_count \
               FROM approval_queue ORDER BY quote_id";
    quoteline::on_backend!(db, pool => sqlx::query_as(sql).fetch_all(pool).await.unwrap())
}

/// The waiting quotes, oldest first, as the page's own query reads them. The page
/// comes as one JSON value; each of its rows holds what the table holds, as a plain
/// read of the row gives it.
async fn waiting_ids(db: &Db) -> Vec<Uuid> {
    let rows = queue::page(db, &QueueFilter::default(), QueueSort::Oldest, None, 1000)
        .await
        .unwrap();
    for row in &rows {
        let plain = queue::find(db, row.quote_id).await.unwrap();
        assert_eq!(plain.as_ref(), Some(row));
    }
    rows.into_iter().map(|row| row.quote_id).collect()
}

// ----- The projection --------------------------------------------------------------

async fn a_quote_joins_the_queue_when_submitted_and_leaves_it_with_each_decision(test_db: &TestDb) {
    let app = AppState::open(test_db.db.clone()).await.unwrap();
    let db = &test_db.db;
    let (asha, bilal, uma) = (agent("asha"), agent("bilal"), underwriter("uma"));

    // A quote being written has a row, but is not waiting.
    let draft = Uuid::now_v7();
    app.quotes
        .start(
            draft,
            asha.clone(),
            PersonName::parse("Meera Iyer").unwrap(),
            &envelope(at(2025, 3, 1, 8, 0)),
        )
        .await
        .unwrap();
    act(
        &app,
        draft,
        &asha,
        Action::ProvideGeographic(geographic(0)),
        at(2025, 3, 1, 8, 1),
    )
    .await
    .unwrap();
    assert_eq!(queue::find(db, draft).await.unwrap(), None);
    let rows = table_rows(db).await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        (
            rows[0].waiting(),
            rows[0].country.as_deref(),
            rows[0].region.as_deref(),
            rows[0].dependents
        ),
        (false, Some("IN"), Some("Maharashtra"), None)
    );

    // Submitting puts it in the queue, with every column the page shows.
    for action in [
        Action::ProvideContact(contact()),
        Action::ProvideFamily(family(2)),
    ] {
        act(&app, draft, &asha, action, at(2025, 3, 1, 8, 2))
            .await
            .unwrap();
    }
    let t1 = at(2025, 3, 1, 9, 0);
    act(&app, draft, &asha, Action::Finalize, t1).await.unwrap();
    let first = draft;
    let reference = app
        .quotes
        .load(first, None)
        .await
        .unwrap()
        .unwrap()
        .reference;
    let row = queue::find(db, first)
        .await
        .unwrap()
        .expect("a submitted quote waits");
    assert_eq!(
        row,
        QueueRow {
            quote_id: first,
            reference,
            applicant_name: "Meera Iyer".into(),
            agent: "asha".into(),
            country: Some("IN".into()),
            region: Some("Maharashtra".into()),
            dependents: Some(2),
            submitted_at: t1,
            first_submitted_at: t1,
            referral_count: 0,
        }
    );

    let second = submitted_quote(&app, &bilal, "John O'Neill", 1, 0, at(2025, 3, 1, 10, 0)).await;
    let third = submitted_quote(&app, &asha, "Chloé Martin", 2, 1, at(2025, 3, 1, 11, 0)).await;
    let fourth = submitted_quote(&app, &bilal, "Tomás García", 3, 3, at(2025, 3, 1, 12, 0)).await;
    assert_eq!(waiting_ids(db).await, [first, second, third, fourth]);
    // The next quote for someone is the oldest that is not their own.
    assert_eq!(
        queue::next_for(db, "uma")
            .await
            .unwrap()
            .map(|r| r.quote_id),
        Some(first)
    );
    assert_eq!(
        queue::next_for(db, "asha")
            .await
            .unwrap()
            .map(|r| r.quote_id),
        Some(second)
    );
    assert_eq!(
        queue::next_for(db, "bilal")
            .await
            .unwrap()
            .map(|r| r.quote_id),
        Some(first)
    );

    // Approve, reject and withdraw each take the quote out, row and all.
    act(&app, first, &uma, Action::Approve, at(2025, 3, 2, 9, 0))
        .await
        .unwrap();
    assert_eq!(queue::find(db, first).await.unwrap(), None);
    assert_eq!(waiting_ids(db).await, [second, third, fourth]);
    act(
        &app,
        second,
        &uma,
        Action::Reject {
            reason: text("Income not verified"),
        },
        at(2025, 3, 2, 9, 5),
    )
    .await
    .unwrap();
    assert_eq!(waiting_ids(db).await, [third, fourth]);
    act(&app, third, &asha, Action::Withdraw, at(2025, 3, 2, 9, 10))
        .await
        .unwrap();
    assert_eq!(waiting_ids(db).await, [fourth]);
    assert_eq!(
        table_rows(db)
            .await
            .iter()
            .map(|r| r.quote_id)
            .collect::<Vec<_>>(),
        [fourth],
        "final quotes leave the table"
    );
    assert_eq!(queue::next_for(db, "bilal").await.unwrap(), None);

    // Referring back takes it out of the queue; submitting again brings it back,
    // with its first submission kept and the referral counted.
    act(
        &app,
        fourth,
        &uma,
        Action::ReferBack {
            note: text("Check the postal code"),
        },
        at(2025, 3, 2, 10, 0),
    )
    .await
    .unwrap();
    assert_eq!(queue::find(db, fourth).await.unwrap(), None);
    assert_eq!(waiting_ids(db).await, Vec::<Uuid>::new());
    let rows = table_rows(db).await;
    assert_eq!(
        (
            rows[0].waiting(),
            rows[0].earliest_submission_at,
            rows[0].referral_count
        ),
        (false, Some(at(2025, 3, 1, 12, 0)), 1)
    );

    act(
        &app,
        fourth,
        &bilal,
        Action::ProvideFamily(family(4)),
        at(2025, 3, 3, 8, 0),
    )
    .await
    .unwrap();
    let resubmitted = at(2025, 3, 3, 9, 0);
    act(&app, fourth, &bilal, Action::Finalize, resubmitted)
        .await
        .unwrap();
    let row = queue::find(db, fourth)
        .await
        .unwrap()
        .expect("waiting again");
    assert_eq!(
        (
            row.submitted_at,
            row.first_submitted_at,
            row.referral_count,
            row.dependents
        ),
        (resubmitted, at(2025, 3, 1, 12, 0), 1, Some(4))
    );
    assert_eq!(
        (
            row.applicant_name.as_str(),
            row.agent.as_str(),
            row.country.as_deref(),
            row.region.as_deref()
        ),
        ("Tomás García", "bilal", Some("ES"), Some("Madrid"))
    );
    assert_eq!(waiting_ids(db).await, [fourth]);
}

/// Replays every stored event of `quotes` through the projection into an emptied
/// table, in position order and in chunks that cut across quotes, as a rebuild
/// would. (Read stream by stream: a read-all on PostgreSQL waits for every
/// transaction open in the cluster, other tests' included.)
async fn rebuild_from_the_log(app: &AppState, quotes: &[Uuid]) {
    let mut events = Vec::new();
    for id in quotes {
        events.extend(app.store.read_stream(*id, 0).await.unwrap());
    }
    events.sort_by_key(RecordedEvent::position);
    let mut pooled = app.db.acquire().await.unwrap();
    let mut conn = pooled.as_conn();
    conn.execute_plain("DELETE FROM approval_queue")
        .await
        .unwrap();
    conn.execute_plain("UPDATE approval_queue_total SET waiting = 0")
        .await
        .unwrap();
    let projector = QuoteProjector::new(vec![Arc::new(ApprovalQueueProjection::default())]);
    for chunk in events.chunks(97) {
        projector.apply(conn.reborrow(), chunk).await.unwrap();
    }
}

async fn the_queue_always_equals_a_fresh_fold_of_the_events(test_db: &TestDb) {
    let app = AppState::open(test_db.db.clone()).await.unwrap();
    let mut rng = StdRng::seed_from_u64(20_250_301);
    let agents = [agent("asha"), agent("bilal"), agent("chen")];
    let underwriters = [underwriter("uma"), underwriter("victor")];
    let mut quotes: Vec<Uuid> = Vec::new();
    let mut clock = at(2025, 3, 1, 8, 0);

    for step in 0..600 {
        clock += TimeDelta::seconds(rng.random_range(1..600));
        if quotes.len() < 50 && (quotes.is_empty() || rng.random_bool(0.15)) {
            let id = Uuid::now_v7();
            let by = &agents[rng.random_range(0..agents.len())];
            let name = PersonName::parse(format!("Applicant {step}")).unwrap();
            app.quotes
                .start(id, by.clone(), name, &envelope(clock))
                .await
                .unwrap();
            quotes.push(id);
            continue;
        }
        let id = quotes[rng.random_range(0..quotes.len())];
        let quote = app.quotes.load(id, None).await.unwrap().unwrap();
        let owner = agents.iter().find(|a| a.username == quote.agent).unwrap();
        let by_underwriter = &underwriters[rng.random_range(0..2)];
        let section = |rng: &mut StdRng| match rng.random_range(0..3) {
            0 => Action::ProvideGeographic(geographic(rng.random_range(0..PLACES.len()))),
            1 => Action::ProvideContact(contact()),
            _ => Action::ProvideFamily(family(rng.random_range(0..6))),
        };
        let decision = |rng: &mut StdRng| match rng.random_range(0..100) {
            0..30 => Action::Approve,
            30..50 => Action::Reject { reason: text("No") },
            _ => Action::ReferBack {
                note: text("Check it"),
            },
        };
        // Mostly what the quote's people would do next; now and then anything at
        // all, by anyone, which its rules mostly refuse (and nothing is written).
        let (actor, action) = match (rng.random_range(0..100), quote.status.unwrap()) {
            (0..10, _) | (_, Status::Approved | Status::Rejected | Status::Withdrawn) => {
                let anyone = [&agents[0], &agents[1], owner, by_underwriter];
                let actor = anyone[rng.random_range(0..anyone.len())];
                let action = match rng.random_range(0..4) {
                    0 => section(&mut rng),
                    1 => Action::Finalize,
                    2 => decision(&mut rng),
                    _ => Action::Withdraw,
                };
                (actor, action)
            }
            (_, Status::Initiated | Status::Saved) => match rng.random_range(0..100) {
                _ if !quote.sections_complete() && rng.random_bool(0.7) => {
                    (owner, section(&mut rng))
                }
                0..60 => (owner, Action::Finalize),
                60..92 => (owner, section(&mut rng)),
                _ => (owner, Action::Withdraw),
            },
            // Underwriters take their time, so quotes wait a while; the agent
            // meanwhile tries to change a locked section, which is refused.
            (_, Status::Finalized) => match rng.random_range(0..100) {
                0..40 => (by_underwriter, decision(&mut rng)),
                40..45 => (owner, Action::Withdraw),
                _ => (owner, section(&mut rng)),
            },
        };
        match act(&app, id, actor, action, clock).await {
            Ok(()) | Err(CommandError::Rejected(_)) => {}
            Err(other) => panic!("step {step}: {other}"),
        }
    }

    // What a fresh fold of each quote's events says the table holds.
    let mut expected = Vec::new();
    let mut seen = BTreeMap::<&str, usize>::new();
    for &id in &quotes {
        let recorded = app.store.read_stream(id, 0).await.unwrap();
        let events: Vec<QuoteEvent> = recorded
            .iter()
            .map(|r| QuoteEvent::decode(r).unwrap())
            .collect();
        for event in &events {
            *seen.entry(event.event_type()).or_default() += 1;
        }
        let submissions: Vec<DateTime<Utc>> = recorded
            .iter()
            .zip(&events)
            .filter(|(_, e)| matches!(e, QuoteEvent::QuoteFinalized { .. }))
            .map(|(r, _)| r.recorded_at)
            .collect();
        let quote = fold(&events);
        let status = quote.status.unwrap();
        if status.is_final() {
            continue;
        }
        let waiting = status == Status::Finalized;
        expected.push(TableRow {
            quote_id: id,
            reference: quote.reference.clone(),
            applicant_name: quote.applicant_name.as_ref().unwrap().to_string(),
            agent: quote.agent.clone(),
            country: quote
                .geographic
                .as_ref()
                .map(|g| g.country().as_str().to_owned()),
            region: quote
                .geographic
                .as_ref()
                .map(|g| g.region().as_str().to_owned()),
            dependents: quote.family.as_ref().map(|f| f.dependents() as i32),
            submitted_at: submissions.last().copied().filter(|_| waiting),
            first_submitted_at: submissions.first().copied().filter(|_| waiting),
            earliest_submission_at: submissions.first().copied(),
            referral_count: quote.referral_count as i32,
        });
    }
    expected.sort_by_key(|row| row.quote_id);

    // The run went through every part of a quote's life, resubmissions included.
    for event_type in [
        "QuoteFinalized",
        "QuoteApproved",
        "QuoteRejected",
        "QuoteReferredBack",
        "QuoteWithdrawn",
    ] {
        assert!(
            seen.get(event_type).copied().unwrap_or(0) >= 2,
            "{event_type}: {seen:?}"
        );
    }
    assert!(
        seen["QuoteFinalized"]
            > seen["QuoteApproved"] + seen["QuoteRejected"] + seen["QuoteReferredBack"]
    );
    assert!(
        expected.iter().any(|r| r.waiting() && r.referral_count > 0),
        "a resubmitted quote waits"
    );
    assert!(
        expected
            .iter()
            .any(|r| !r.waiting() && r.referral_count > 0),
        "a referred quote is back with its agent"
    );

    assert_eq!(table_rows(&app.db).await, expected, "the live table");
    let waiting = expected.iter().filter(|r| r.waiting()).count() as i64;
    let unfiltered = QueueFilter::default();
    assert_eq!(
        queue::count(&app.db, &unfiltered).await.unwrap(),
        waiting,
        "the kept total"
    );
    rebuild_from_the_log(&app, &quotes).await;
    assert_eq!(
        queue::count(&app.db, &unfiltered).await.unwrap(),
        waiting,
        "the total after a replay"
    );
    assert_eq!(
        table_rows(&app.db).await,
        expected,
        "the table rebuilt from the log"
    );
}

// ----- 1,000 queued quotes ---------------------------------------------------------

const AGENTS: &[&str] = &["asha", "bilal", "chen", "dara"];

/// What the test knows about each quote it queued.
#[derive(Debug, Clone)]
struct Queued {
    id: Uuid,
    agent: &'static str,
    country: &'static str,
    submitted_at: DateTime<Utc>,
    first_submitted_at: DateTime<Utc>,
}

fn micros(day: u32, h: u32, mi: u32, s: u32, us: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, 3, day, h, mi, s).unwrap() + TimeDelta::microseconds(us.into())
}

/// Quotes taken straight to the store, a whole history an append (the store and
/// both projections run as for any command), many appends at once.
async fn append_history(
    app: &AppState,
    id: Uuid,
    steps: Vec<(&str, DateTime<Utc>, Vec<QuoteEvent>)>,
) {
    let mut version = 0;
    for (actor, at, events) in steps {
        let count = events.len() as i64;
        app.store
            .append(AppendRequest {
                stream_id: id,
                expected: ExpectedVersion::from(version),
                events: events.iter().map(QuoteEvent::encode).collect(),
                metadata: Metadata::new(actor, at),
            })
            .await
            .unwrap();
        version += count;
    }
}

fn history_to_submission(
    reference: String,
    agent: &str,
    place: usize,
    dependents: u32,
) -> Vec<QuoteEvent> {
    vec![
        QuoteEvent::QuoteStarted {
            reference,
            applicant_name: PersonName::parse("Queued Applicant").unwrap(),
            agent: agent.to_owned(),
        },
        QuoteEvent::GeographicDetailsProvided(geographic(place)),
        QuoteEvent::QuoteSaved {
            from: Status::Initiated,
            to: Status::Saved,
        },
        QuoteEvent::ContactDetailsProvided(contact()),
        QuoteEvent::FamilyDetailsProvided(family(dependents)),
        QuoteEvent::QuoteFinalized {
            from: Status::Saved,
            to: Status::Finalized,
        },
    ]
}

fn finalized() -> QuoteEvent {
    QuoteEvent::QuoteFinalized {
        from: Status::Saved,
        to: Status::Finalized,
    }
}

fn referred() -> QuoteEvent {
    QuoteEvent::QuoteReferredBack {
        note: text("Check it"),
        from: Status::Finalized,
        to: Status::Saved,
    }
}

/// 1,000 waiting quotes over about six days from 1 March 2025 18:00 UTC, times in
/// pairs (so the quote id breaks ties, across page boundaries too), a third of them
/// referred back once and resubmitted; four sit on the edges of 3 and 4 March. And
/// 100 quotes that are not waiting, which no page may show.
async fn queue_a_thousand(app: &AppState, seed: u64) -> Vec<Queued> {
    let mut rng = StdRng::seed_from_u64(seed);
    let base = micros(1, 18, 0, 0, 0);
    let mut slots: Vec<i64> = (0..1000).collect();
    slots.shuffle(&mut rng);
    let edges = [
        micros(2, 23, 59, 59, 999_999),
        micros(3, 0, 0, 0, 0),
        micros(4, 23, 59, 59, 999_999),
        micros(5, 0, 0, 0, 0),
    ];
    let mut queued = Vec::new();
    let mut work = JoinSet::new();
    for (i, slot) in slots.into_iter().enumerate() {
        let id = Uuid::new_v4();
        let agent = AGENTS[rng.random_range(0..AGENTS.len())];
        let place = rng.random_range(0..PLACES.len());
        let submitted_at = match slot {
            0..4 => edges[slot as usize],
            _ => base + TimeDelta::minutes(17 * (slot / 2)),
        };
        let first_submitted_at = if rng.random_bool(0.33) {
            submitted_at - TimeDelta::minutes(120 + rng.random_range(0..5760))
        } else {
            submitted_at
        };
        let mut steps = vec![(
            agent,
            first_submitted_at,
            history_to_submission(format!("Q-W{i:05}"), agent, place, rng.random_range(0..5)),
        )];
        if first_submitted_at != submitted_at {
            steps.push((
                "uma",
                first_submitted_at + TimeDelta::minutes(60),
                vec![referred()],
            ));
            steps.push((agent, submitted_at, vec![finalized()]));
        }
        queued.push(Queued {
            id,
            agent,
            country: PLACES[place].0,
            submitted_at,
            first_submitted_at,
        });
        let app = app.clone();
        work.spawn(async move { append_history(&app, id, steps).await });
    }
    for i in 0..100 {
        let id = Uuid::new_v4();
        let agent = AGENTS[i % AGENTS.len()];
        let when = base + TimeDelta::minutes(7 * i as i64);
        let mut history = history_to_submission(format!("Q-N{i:05}"), agent, i % PLACES.len(), 1);
        let steps = match i % 5 {
            0 => {
                history.truncate(5);
                vec![(agent, when, history)]
            }
            1 => vec![
                (agent, when, history),
                ("uma", when + TimeDelta::hours(1), vec![referred()]),
            ],
            2 => {
                let approved = QuoteEvent::QuoteApproved {
                    from: Status::Finalized,
                    to: Status::Approved,
                };
                vec![
                    (agent, when, history),
                    ("uma", when + TimeDelta::hours(1), vec![approved]),
                ]
            }
            3 => {
                let rejected = QuoteEvent::QuoteRejected {
                    reason: text("No"),
                    from: Status::Finalized,
                    to: Status::Rejected,
                };
                vec![
                    (agent, when, history),
                    ("uma", when + TimeDelta::hours(1), vec![rejected]),
                ]
            }
            _ => {
                let withdrawn = QuoteEvent::QuoteWithdrawn {
                    from: Status::Finalized,
                    to: Status::Withdrawn,
                };
                vec![
                    (agent, when, history),
                    (agent, when + TimeDelta::hours(1), vec![withdrawn]),
                ]
            }
        };
        let app = app.clone();
        work.spawn(async move { append_history(&app, id, steps).await });
    }
    while let Some(done) = work.join_next().await {
        done.unwrap();
    }
    queued
}

fn expected_order(all: &[Queued], filter: &QueueFilter, sort: QueueSort) -> Vec<Uuid> {
    let mut rows: Vec<&Queued> = all
        .iter()
        .filter(|q| filter.country.as_deref().is_none_or(|c| c == q.country))
        .filter(|q| filter.agent.as_deref().is_none_or(|a| a == q.agent))
        .filter(|q| filter.from.is_none_or(|d| q.submitted_at.date_naive() >= d))
        .filter(|q| filter.to.is_none_or(|d| q.submitted_at.date_naive() <= d))
        .collect();
    match sort {
        QueueSort::Oldest => rows.sort_by_key(|q| (q.submitted_at, q.id)),
        QueueSort::Newest => rows.sort_by_key(|q| std::cmp::Reverse((q.submitted_at, q.id))),
        QueueSort::LongestWaiting => rows.sort_by_key(|q| (q.first_submitted_at, q.id)),
    }
    rows.into_iter().map(|q| q.id).collect()
}

fn day(d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(2025, 3, d).unwrap()
}

/// The filters every check runs: none, each alone, and together.
fn filters() -> Vec<(&'static str, QueueFilter)> {
    let dates = QueueFilter {
        from: Some(day(3)),
        to: Some(day(4)),
        ..Default::default()
    };
    vec![
        ("none", QueueFilter::default()),
        (
            "country",
            QueueFilter {
                country: Some("FR".into()),
                ..Default::default()
            },
        ),
        (
            "agent",
            QueueFilter {
                agent: Some("chen".into()),
                ..Default::default()
            },
        ),
        ("dates", dates.clone()),
        (
            "from",
            QueueFilter {
                from: Some(day(6)),
                ..Default::default()
            },
        ),
        (
            "to",
            QueueFilter {
                to: Some(day(2)),
                ..Default::default()
            },
        ),
        (
            "country and agent",
            QueueFilter {
                country: Some("IN".into()),
                agent: Some("asha".into()),
                ..Default::default()
            },
        ),
        (
            "all",
            QueueFilter {
                country: Some("US".into()),
                agent: Some("dara".into()),
                ..dates
            },
        ),
    ]
}

fn query_string(filter: &QueueFilter, sort: QueueSort) -> String {
    let mut pairs = Vec::new();
    if let Some(c) = &filter.country {
        pairs.push(format!("country={}", c.to_lowercase()));
    }
    if let Some(a) = &filter.agent {
        pairs.push(format!("agent={a}"));
    }
    if let Some(d) = filter.from {
        pairs.push(format!("from={d}"));
    }
    if let Some(d) = filter.to {
        pairs.push(format!("to={d}"));
    }
    pairs.push(format!("sort={}", sort.as_str()));
    format!("/underwriting/queue?{}", pairs.join("&"))
}

/// The quote ids a queue page lists, in order.
fn listed_ids(page: &str) -> Vec<Uuid> {
    let Some(start) = page.find("<tbody>") else {
        return Vec::new();
    };
    let body = &page[start..page.find("</tbody>").unwrap()];
    body.split(r#"<a href="/quotes/"#)
        .skip(1)
        .map(|rest| rest[..36].parse().unwrap())
        .collect()
}

fn link(page: &str, rel: &str) -> Option<String> {
    let end = page.find(&format!(r#"" rel="{rel}""#))?;
    let start = page[..end].rfind(r#"href=""#)? + r#"href=""#.len();
    // As a browser reads the attribute: askama writes `&` as `&#38;`.
    Some(page[start..end].replace("&#38;", "&").replace("&amp;", "&"))
}

fn total_shown(page: &str) -> i64 {
    let start = page.find(r#"<p role="status""#).unwrap();
    let status = &page[start..];
    match status.find("<strong>") {
        Some(s) if s < status.find("</p>").unwrap() => {
            let digits = &status[s + 8..];
            digits[..digits.find('<').unwrap()].parse().unwrap()
        }
        _ => 0,
    }
}

async fn filters_sorts_and_keyset_pages_return_exactly_the_expected_quotes(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let queued = queue_a_thousand(&app.state, 7).await;
    app.sign_in_as("uma", &[Role::Underwriter]).await;

    let mut requests = 0;
    for (name, filter) in filters() {
        for sort in QueueSort::ALL {
            let expected = expected_order(&queued, &filter, sort);
            assert!(
                !expected.is_empty(),
                "{name}: the filter finds something to page through"
            );
            let mut listed = Vec::new();
            let mut next = Some(query_string(&filter, sort));
            let mut pages = 0;
            while let Some(path) = next.take() {
                let page = html_page(app.get(&path).await, 200).await;
                requests += 1;
                pages += 1;
                assert_eq!(
                    total_shown(&page),
                    expected.len() as i64,
                    "{name}, {sort:?}: the total"
                );
                let ids = listed_ids(&page);
                assert!(ids.len() <= 50, "{name}, {sort:?}: at most 50 a page");
                listed.extend(ids);
                next = link(&page, "next");
                assert_eq!(
                    link(&page, "first").is_some(),
                    pages > 1,
                    "{name}, {sort:?}: First page link on {path}"
                );
                if next.is_some() {
                    assert!(!path.contains("offset"), "keyset, not offset");
                }
            }
            assert_eq!(
                pages,
                expected.len().div_ceil(50).max(1),
                "{name}, {sort:?}: pages"
            );
            assert_eq!(listed, expected, "{name}, {sort:?}: rows across pages");
        }
    }
    assert!(requests > 60, "{requests}");

    // The date range is whole days, both ends included: the edges tell.
    let dates = &filters()[3].1;
    let in_range = expected_order(&queued, dates, QueueSort::Oldest);
    let at_edge = |t: DateTime<Utc>| queued.iter().find(|q| q.submitted_at == t).unwrap().id;
    assert!(in_range.contains(&at_edge(micros(3, 0, 0, 0, 0))));
    assert!(in_range.contains(&at_edge(micros(4, 23, 59, 59, 999_999))));
    assert!(!in_range.contains(&at_edge(micros(2, 23, 59, 59, 999_999))));
    assert!(!in_range.contains(&at_edge(micros(5, 0, 0, 0, 0))));

    // The same through the functions the decision pages use.
    let oldest = queued
        .iter()
        .min_by_key(|q| (q.submitted_at, q.id))
        .unwrap();
    assert_eq!(
        queue::next_for(&app.state.db, "nobody")
            .await
            .unwrap()
            .unwrap()
            .quote_id,
        oldest.id
    );
    let not_theirs = queued
        .iter()
        .filter(|q| q.agent != oldest.agent)
        .min_by_key(|q| (q.submitted_at, q.id))
        .unwrap();
    let next = queue::next_for(&app.state.db, oldest.agent)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next.quote_id, not_theirs.id);
    assert_eq!(next.agent, not_theirs.agent);
}

// ----- Query plans -----------------------------------------------------------------

/// The index each sort of each single filter must read, in the page's order (no
/// sort step). Dates with the waiting sort may read either time index.
fn expected_index(filter: &str, sort: QueueSort) -> Option<&'static str> {
    let waiting = sort == QueueSort::LongestWaiting;
    Some(match (filter, waiting) {
        ("none", false) | ("dates", false) | ("from", false) | ("to", false) => {
            "approval_queue_by_submitted"
        }
        ("none", true) => "approval_queue_by_first_submitted",
        ("country", false) => "approval_queue_by_country",
        ("country", true) => "approval_queue_by_country_first_submitted",
        ("agent", false) => "approval_queue_by_agent",
        ("agent", true) => "approval_queue_by_agent_first_submitted",
        _ => return None,
    })
}

/// Every node of a PostgreSQL JSON plan, depth first.
/// Rows for quotes that agents are still writing, put straight into the table: a
/// busy store has far more of those than quotes waiting, and a planner judges a
/// table of a thousand rows small enough to read whole. They are in no index the
/// pages read, since every one is partial on `submitted_at IS NOT NULL`.
async fn add_drafts(db: &Db, count: i64) {
    let (id, numbers) = match db {
        Backend::Sqlite(_) => (
            "randomblob(16)",
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < $1) \
             SELECT i FROM n",
        ),
        Backend::Postgres(_) => ("gen_random_uuid()", "SELECT generate_series(1, $1) AS i"),
    };
    let sql = format!(
        "INSERT INTO approval_queue (quote_id, reference, applicant_name, agent, country, region) \
         SELECT {id}, 'D-' || i, 'Draft applicant', \
         CASE i % 4 WHEN 0 THEN 'asha' WHEN 1 THEN 'bilal' WHEN 2 THEN 'chen' ELSE 'dara' END, \
         CASE i % 5 WHEN 0 THEN 'IN' WHEN 1 THEN 'US' WHEN 2 THEN 'FR' WHEN 3 THEN 'ES' ELSE 'JP' END, \
         'Somewhere' FROM ({numbers}) AS n"
    );
    quoteline::on_backend!(db, pool => sqlx::query(&sql).bind(count).execute(pool).await.map(drop))
        .unwrap();
}

async fn every_first_page_reads_its_index_without_sorting(test_db: &TestDb) {
    let app = AppState::open(test_db.db.clone()).await.unwrap();
    let queued = queue_a_thousand(&app, 11).await;
    let db = &app.db;
    add_drafts(db, 30_000).await;
    if let Backend::Postgres(pool) = db {
        sqlx::query("ANALYZE approval_queue")
            .execute(pool)
            .await
            .unwrap();
    }
    let middle = &queued[500];

    for (name, filter) in filters() {
        for sort in QueueSort::ALL {
            let cursor = Cursor {
                at: middle.submitted_at,
                quote_id: middle.id,
            };
            for after in [None, Some(&cursor)] {
                let query = queue::page_query(&filter, sort, after, 51);
                let plan = query.explain(db).await.unwrap();
                let case = format!(
                    "{name}, {sort:?}, after {:?}: {}\n{plan}",
                    after.is_some(),
                    query.sql
                );
                let index = expected_index(name, sort);
                match db {
                    Backend::Sqlite(_) => {
                        for line in plan.lines().filter(|l| l.contains("approval_queue")) {
                            assert!(
                                line.contains("USING INDEX")
                                    || line.contains("USING COVERING INDEX"),
                                "{case}"
                            );
                        }
                        assert!(plan.contains("approval_queue_by_"), "{case}");
                        if let Some(index) = index {
                            assert!(plan.split_whitespace().any(|word| word == index), "{case}");
                            assert!(!plan.contains("TEMP B-TREE"), "{case}");
                        }
                    }
                    Backend::Postgres(_) => {
                        let plan = PgPlan::parse(&plan);
                        let types = plan.node_types();
                        assert!(!types.contains(&"Seq Scan"), "{case}");
                        assert!(
                            plan.index_names()
                                .iter()
                                .any(|i| i.starts_with("approval_queue_by_")),
                            "{case}"
                        );
                        // Past the first page few rows are left, and the planner may
                        // rightly sort those few it finds by an index.
                        if let Some(index) = index.filter(|_| after.is_none()) {
                            assert!(
                                !types.contains(&"Sort") && !types.contains(&"Incremental Sort"),
                                "{case}"
                            );
                            assert!(
                                plan.nodes.iter().any(|n| matches!(
                                    n["Node Type"].as_str(),
                                    Some("Index Scan" | "Index Only Scan")
                                ) && n["Index Name"] == index),
                                "{case}"
                            );
                        }
                    }
                }
            }
        }
    }
}

// ----- The page --------------------------------------------------------------------

async fn an_underwriter_sees_the_queue_page_and_no_one_else_does(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let (asha, bilal) = (agent("asha"), agent("bilal"));
    let first = submitted_quote(
        &app.state,
        &asha,
        "Meera Iyer",
        0,
        2,
        Utc::now() - TimeDelta::days(3) - TimeDelta::hours(2),
    )
    .await;
    let second = submitted_quote(
        &app.state,
        &bilal,
        "John O'Neill",
        1,
        0,
        Utc::now() - TimeDelta::hours(5),
    )
    .await;
    let reference = |id| {
        let app = app.state.clone();
        async move { app.quotes.load(id, None).await.unwrap().unwrap().reference }
    };
    let (first_ref, second_ref) = (reference(first).await, reference(second).await);

    // Signed out: to the sign-in page. An agent: refused.
    let response = app.get("/underwriting/queue").await;
    assert_eq!(response.status().as_u16(), 303);
    assert_eq!(response.headers()["location"], "/login");
    let agent_browser = app.new_browser();
    agent_browser.sign_in_as("asha", &[Role::Agent]).await;
    let refused = html_page(agent_browser.get("/underwriting/queue").await, 403).await;
    assert!(
        refused.contains("This page is for underwriters."),
        "{refused}"
    );
    assert!(!refused.contains(&first_ref));

    app.sign_in_as("uma", &[Role::Underwriter]).await;
    let page = html_page(app.get("/underwriting/queue").await, 200).await;
    assert_eq!(page.matches("<h1>").count(), 1);
    assert!(page.contains("<h1>Approval queue</h1>"));
    assert!(
        page.contains("<strong>2</strong> quotes are waiting for a decision."),
        "{page}"
    );
    assert_eq!(listed_ids(&page), [first, second], "oldest first");
    for shown in [
        first_ref.as_str(),
        "Meera Iyer",
        "asha",
        "India",
        "Maharashtra",
        "3 days",
        second_ref.as_str(),
        "John O&#39;Neill",
        "bilal",
        "United States",
        "California",
        "5 hours",
        "Never",
        "<caption>Quotes waiting for a decision, oldest submission first</caption>",
    ] {
        assert!(page.contains(shown), "the page shows {shown}: {page}");
    }
    assert!(page.contains(&format!(r#"<a href="/quotes/{first}">{first_ref}</a>"#)));
    // A GET form with a label for every field, and no script anywhere.
    assert!(page.contains(r#"<form method="get" action="/underwriting/queue""#));
    for (id, label) in [
        ("country", "Country"),
        ("agent", "Agent"),
        ("from", "Submitted from"),
        ("to", "Submitted to"),
        ("sort", "Sort by"),
    ] {
        assert!(
            page.contains(&format!(r#"<label for="{id}">{label}</label>"#)),
            "label {label}"
        );
        assert!(
            page.contains(&format!(r#"id="{id}" name="{id}""#)),
            "field {id}"
        );
    }
    assert!(page.contains(r#"<option value="IN">India</option>"#));
    assert!(page.contains(r#"type="date" id="from""#));
    assert!(!page.contains("<script"));
    assert!(link(&page, "next").is_none() && link(&page, "first").is_none());

    // The form's filters, as the browser sends them, and what they keep selected.
    let page = html_page(
        app.get("/underwriting/queue?country=US&agent=&from=&to=&sort=newest")
            .await,
        200,
    )
    .await;
    assert_eq!(listed_ids(&page), [second]);
    assert!(
        page.contains("<strong>1</strong> quote waiting for a decision matches these filters."),
        "{page}"
    );
    assert!(page.contains(r#"<option value="US" selected>United States</option>"#));
    assert!(page.contains(r#"<option value="newest" selected>"#));
    assert!(page.contains(r#"<a href="/underwriting/queue">Clear filters</a>"#));
    let page = html_page(
        app.get("/underwriting/queue?agent=asha&sort=waiting").await,
        200,
    )
    .await;
    assert_eq!(listed_ids(&page), [first]);
    assert!(page.contains(r#"name="agent" value="asha""#));
    let page = html_page(app.get("/underwriting/queue?agent=nobody").await, 200).await;
    assert_eq!(listed_ids(&page), Vec::<Uuid>::new());
    assert!(
        page.contains("No quotes waiting for a decision match these filters."),
        "{page}"
    );

    // A decision takes the quote off the page at once.
    act(
        &app.state,
        first,
        &underwriter("victor"),
        Action::Approve,
        Utc::now(),
    )
    .await
    .unwrap();
    let page = html_page(app.get("/underwriting/queue").await, 200).await;
    assert_eq!(listed_ids(&page), [second]);
    assert!(
        page.contains("<strong>1</strong> quote is waiting for a decision."),
        "{page}"
    );
}

async fn bad_filter_values_get_a_400_page(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    app.sign_in_as("uma", &[Role::Underwriter]).await;
    let long_agent = "a".repeat(101);
    for query in [
        "country=XX",
        "country=%3Cscript%3E",
        "from=2025-02-30",
        "to=yesterday",
        "from=03%2F01%2F2025",
        "to=262142-12-31",
        "from=2025-03-05&to=2025-03-04",
        "sort=cheapest",
        "next=garbage",
        "next=123_not-a-uuid",
        "next=99999999999999999999_0195a000-0000-7000-8000-000000000000",
        &format!("agent={long_agent}"),
        "country=IN&country=FR",
    ] {
        let response = app.get(&format!("/underwriting/queue?{query}")).await;
        let page = html_page(response, 400).await;
        assert!(
            page.contains("<h1>Something was wrong with that request</h1>"),
            "{query}: {page}"
        );
        assert!(!page.contains("<script>"), "{query}");
    }
    // Lower-case codes and spaces around values are fine.
    let page = html_page(
        app.get("/underwriting/queue?country=in&from=+2025-03-01+")
            .await,
        200,
    )
    .await;
    assert!(page.contains(r#"<option value="IN" selected>India</option>"#));
    assert!(page.contains(r#"value="2025-03-01""#));
}

/// The server (following the heads feed) sends a queue page drawn for a session
/// again without reading or rendering it, until a quote moves: at once when this
/// process moved it, once the feed tells when another process did. Each session and
/// each encoding gets a page of its own.
async fn a_drawn_queue_page_is_sent_again_until_a_quote_moves(test_db: &TestDb) {
    let settings = quoteline::state::Settings {
        follow_heads: true,
        ..Default::default()
    };
    let state = AppState::open_configured(test_db.db.clone(), settings)
        .await
        .unwrap();
    let app = TestApp::spawn_state(state).await;
    let other = AppState::open(test_db.db.clone()).await.unwrap();
    let asha = agent("asha");
    let now = Utc::now();
    let first = submitted_quote(&app.state, &asha, "Meera Iyer", 0, 2, now).await;
    app.sign_in_as("uma", &[Role::Underwriter]).await;
    let feed = app.state.quotes.heads().unwrap().clone();
    let mut rounds = feed.rounds();
    let live = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !feed.is_live() {
            rounds.changed().await.unwrap();
        }
    });
    assert!(live.await.is_ok(), "the feed goes live");

    // A page for this session in each encoding: in zstd for a client that prefers
    // it, with `Vary`.
    let zstd_page = || async {
        let response = app
            .client
            .get(app.url("/underwriting/queue"))
            .header("accept-encoding", "zstd")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(response.headers()["content-encoding"], "zstd");
        assert_eq!(response.headers()["vary"], "accept-encoding");
        let body = response.bytes().await.unwrap();
        String::from_utf8(zstd::decode_all(&body[..]).unwrap()).unwrap()
    };
    // Sent again as drawn while nothing moves: a name changed in the table behind
    // the server's back (no event, so nothing moved) is not on the page sent again,
    // in either encoding. The feed may still be telling of the appends just made,
    // which draws the pages again (and shows the change): then it is tried again.
    let rename = |name: &'static str| async move {
        quoteline::on_backend!(&test_db.db, pool => {
            sqlx::query("UPDATE approval_queue SET applicant_name = $1 WHERE quote_id = $2")
                .bind(name)
                .bind(first)
                .execute(pool)
                .await
                .unwrap();
        });
    };
    let mut kept = None;
    for _ in 0..200 {
        rename("Meera Iyer").await;
        let drawn = html_page(app.get("/underwriting/queue").await, 200).await;
        let drawn_in_zstd = zstd_page().await;
        rename("Behind Its Back").await;
        let again = html_page(app.get("/underwriting/queue").await, 200).await;
        let again_in_zstd = zstd_page().await;
        for page in [&drawn, &drawn_in_zstd, &again, &again_in_zstd] {
            assert_eq!(listed_ids(page), [first]);
        }
        if again == drawn && again_in_zstd == drawn_in_zstd {
            assert!(drawn.contains("Meera Iyer"));
            kept = Some(drawn);
            break;
        }
        assert!(again.contains("Behind Its Back") || again_in_zstd.contains("Behind Its Back"));
    }
    let drawn = kept.expect("a drawn page is sent again while nothing moves");
    rename("Meera Iyer").await;

    // Another underwriter's session: drawn for it, with its own form token.
    let victor = app.new_browser();
    victor.sign_in_as("victor", &[Role::Underwriter]).await;
    let theirs = html_page(victor.get("/underwriting/queue").await, 200).await;
    assert_eq!(listed_ids(&theirs), [first]);
    assert_ne!(csrf_token_in(&theirs), csrf_token_in(&drawn));

    // A quote this process moves: drawn again at once.
    let second = submitted_quote(&app.state, &asha, "John O'Neill", 1, 0, now).await;
    let page = html_page(app.get("/underwriting/queue").await, 200).await;
    assert_eq!(listed_ids(&page), [first, second]);

    // One another process moves: drawn again once the feed has told of it.
    let third = submitted_quote(&other, &asha, "Ana Lima", 2, 1, now).await;
    let mut rounds = feed.rounds();
    let seen = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        loop {
            let page = html_page(app.get("/underwriting/queue").await, 200).await;
            if listed_ids(&page).contains(&third) {
                return page;
            }
            rounds.changed().await.unwrap();
        }
    });
    let page = seen
        .await
        .expect("the page shows the other process's quote");
    let mut listed = listed_ids(&page);
    listed.sort();
    let mut expected = vec![first, second, third];
    expected.sort();
    assert_eq!(listed, expected);
}
