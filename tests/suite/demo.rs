//! `quoteline demo --quotes N`: generated quotes written through the event store with
//! every inline projection, on both backends.

use std::collections::{BTreeMap, HashMap};

use chrono::Utc;
use indicatif::ProgressBar;
use quoteline::AppState;
use quoteline::demo::{self, Generate, Generated, QuotePlan, Size};
use quoteline::eventstore::{GlobalPosition, RecordedEvent};
use quoteline::on_backend;
use quoteline::quoting::domain::{Quote, QuoteEvent, Status, evolve};
use quoteline::quoting::summary;
use quoteline::underwriting::queue::{self, QueueFilter};
use uuid::Uuid;

use crate::support::{TestDb, run_command};

storage_tests!(
    generated_quotes_fold_to_valid_quotes_in_every_status,
    the_projections_agree_with_the_generated_quotes,
    the_projections_agree_with_quotes_generated_in_bulk,
    the_same_seed_gives_the_same_quotes_and_statuses,
    the_demo_command_generates_without_serving,
);

const QUOTES: usize = 400;

fn options(seed: u64, quotes: usize) -> Generate {
    Generate {
        size: Size::Quotes(quotes),
        seed,
        now: Utc::now(),
    }
}

async fn generate(test_db: &TestDb, options: Generate) -> (AppState, Generated) {
    let state = AppState::open(test_db.db.clone()).await.unwrap();
    let generated = demo::generate(&state.store, options, &ProgressBar::hidden())
        .await
        .expect("generate");
    (state, generated)
}

/// Every event in the store, by stream, in version order.
async fn streams(state: &AppState) -> HashMap<Uuid, Vec<RecordedEvent>> {
    let mut streams: HashMap<Uuid, Vec<RecordedEvent>> = HashMap::new();
    let mut after = GlobalPosition::START;
    loop {
        let page = state.store.read_all(after, 1_000).await.unwrap();
        let Some(last) = page.last() else { break };
        after = last.global;
        for event in page {
            streams.entry(event.stream_id).or_default().push(event);
        }
    }
    for events in streams.values_mut() {
        events.sort_by_key(|e| e.version);
    }
    streams
}

fn fold(events: &[RecordedEvent]) -> Quote {
    events.iter().fold(Quote::default(), |quote, recorded| {
        evolve(
            quote,
            &QuoteEvent::decode(recorded).expect("an event we wrote"),
        )
    })
}

fn planned(options: Generate) -> HashMap<Uuid, QuotePlan> {
    demo::plans(options).map(|plan| (plan.id, plan)).collect()
}

async fn generated_quotes_fold_to_valid_quotes_in_every_status(test_db: &TestDb) {
    let options = options(11, QUOTES);
    let (state, generated) = generate(test_db, options).await;
    let plans = planned(options);

    let streams = streams(&state).await;
    assert_eq!(streams.len(), QUOTES);
    assert_eq!(generated.quotes, QUOTES as u64);
    let events: usize = streams.values().map(Vec::len).sum();
    assert_eq!(generated.events, events as u64);

    let mut statuses: BTreeMap<&str, usize> = BTreeMap::new();
    let (mut referred_waiting, mut referred_with_agent) = (0, 0);
    for (id, events) in &streams {
        let versions: Vec<i64> = events.iter().map(|e| e.version).collect();
        let expected: Vec<i64> = (1..=events.len() as i64).collect();
        assert_eq!(versions, expected, "{id}: versions 1, 2, 3… with no gap");
        let quote = fold(events);
        assert_eq!(quote, plans[id].quote, "{id}: the store holds the plan");
        let status = quote.status.expect("every generated quote is started");
        assert!(["asha", "bilal"].contains(&quote.agent.as_str()));
        assert!(
            events
                .iter()
                .all(|e| ["asha", "bilal", "uma", "victor"].contains(&e.actor.as_str())),
            "{id}: demo people only"
        );
        if matches!(
            status,
            Status::Finalized | Status::Approved | Status::Rejected
        ) {
            assert!(
                quote.sections_complete(),
                "{id}: submitted with every answer"
            );
        }
        if quote.referral_count > 0 {
            match status {
                Status::Finalized => referred_waiting += 1,
                Status::Saved => referred_with_agent += 1,
                _ => {}
            }
        }
        *statuses.entry(status.as_str()).or_default() += 1;
        assert!(
            events
                .windows(2)
                .all(|w| w[0].recorded_at <= w[1].recorded_at),
            "{id}: times in order"
        );
    }
    for status in Status::ALL {
        assert!(
            statuses.get(status.as_str()).copied().unwrap_or(0) >= QUOTES / 50,
            "{status:?} is in the mix: {statuses:?}"
        );
        assert_eq!(
            generated.count(status),
            statuses.get(status.as_str()).copied().unwrap_or(0) as u64,
            "the tally of {status:?}"
        );
    }
    assert!(
        referred_waiting > 0,
        "some were referred back and resubmitted"
    );
    assert!(referred_with_agent > 0, "some are back with their agent");
    let edited = streams
        .values()
        .filter(|events| {
            let sections = events.iter().filter(|e| e.event_type.ends_with("Provided"));
            sections.count() > 3
        })
        .count();
    assert!(edited > QUOTES / 20, "some had answers changed: {edited}");

    let report = state.store.verify().await.unwrap();
    assert!(report.is_intact(), "{:?}", report.mismatches);
}

async fn the_projections_agree_with_the_generated_quotes(test_db: &TestDb) {
    let options = options(12, QUOTES);
    let (state, generated) = generate(test_db, options).await;
    projections_agree(&state, &generated, options).await;
}

/// Appends with no inline projection, then the projections rebuilt from the log:
/// the same rows as inline, and every checkpoint at the end.
async fn the_projections_agree_with_quotes_generated_in_bulk(test_db: &TestDb) {
    let options = options(13, QUOTES);
    let state = AppState::open(test_db.db.clone()).await.unwrap();
    let generated = demo::generate_in_bulk(&state.db, options, &ProgressBar::hidden())
        .await
        .expect("generate");
    projections_agree(&state, &generated, options).await;
    let end = quoteline::eventstore::checkpoints::last_position(&state.db)
        .await
        .unwrap();
    let mut pooled = state.db.acquire().await.unwrap();
    for name in ["quote_summary", "approval_queue", "audit_timeline"] {
        let at = quoteline::eventstore::checkpoints::checkpoint(pooled.as_conn(), name)
            .await
            .unwrap();
        assert_eq!(at, end, "{name}");
    }
}

async fn projections_agree(state: &AppState, generated: &Generated, options: Generate) {
    let plans = planned(options);
    let db = &state.db;

    let finalized = generated.count(Status::Finalized) as i64;
    assert!(finalized > 0);
    let kept_total = queue::count(db, &QueueFilter::default()).await.unwrap();
    assert_eq!(kept_total, finalized, "the queue's kept total");
    let waiting_rows: i64 = on_backend!(db, pool => sqlx::query_scalar(
        "SELECT COUNT(*) FROM approval_queue WHERE submitted_at IS NOT NULL"
    ).fetch_one(pool).await.unwrap());
    assert_eq!(waiting_rows, finalized, "the queue's rows");

    assert_eq!(summary::count(db).await.unwrap(), QUOTES as i64);
    for (id, plan) in &plans {
        let row = summary::find(db, *id)
            .await
            .unwrap()
            .expect("a summary row");
        assert_eq!(row.status(), plan.status(), "{id}");
        assert_eq!(row.version, plan.quote.version as i64, "{id}");
        assert_eq!(row.reference, plan.quote.reference, "{id}");
        assert_eq!(row.agent, plan.quote.agent, "{id}");
    }

    let timeline_rows: i64 = on_backend!(db, pool => sqlx::query_scalar(
        "SELECT COUNT(*) FROM audit_timeline"
    ).fetch_one(pool).await.unwrap());
    assert_eq!(
        timeline_rows, generated.events as i64,
        "a timeline row per event"
    );
}

/// (reference, status, version) of every quote the summary holds.
async fn summaries(db: &quoteline::db::Db) -> Vec<(String, String, i64)> {
    let mut rows: Vec<(String, String, i64)> = on_backend!(db, pool => sqlx::query_as(
        "SELECT reference, status, version FROM quote_summary"
    ).fetch_all(pool).await.unwrap());
    rows.sort();
    rows
}

async fn the_same_seed_gives_the_same_quotes_and_statuses(test_db: &TestDb) {
    let (state, _) = generate(test_db, options(3, 200)).await;
    let other = if test_db.is_postgres() {
        TestDb::postgres("the_same_seed_gives_the_same_quotes_and_statuses (second)")
            .await
            .expect("the server answered a moment ago")
    } else {
        TestDb::sqlite().await
    };
    let (again, _) = generate(&other, options(3, 200)).await;

    let first = summaries(&state.db).await;
    assert_eq!(first.len(), 200);
    assert_eq!(first, summaries(&again.db).await);
    let statuses: std::collections::HashSet<&str> =
        first.iter().map(|(_, status, _)| status.as_str()).collect();
    assert_eq!(statuses.len(), Status::ALL.len(), "{statuses:?}");
    other.cleanup().await;
}

async fn the_demo_command_generates_without_serving(test_db: &TestDb) {
    let run = || async {
        let args = ["demo", "--quotes", "60", "--seed", "2", "--no-serve"];
        let output = run_command(test_db, &args).await;
        let stdout = String::from_utf8(output.stdout).unwrap();
        assert!(
            output.status.success(),
            "{stdout}{}",
            String::from_utf8_lossy(&output.stderr)
        );
        stdout
    };
    let stdout = run().await;
    assert!(
        stdout.contains("Generated 60 quotes with seed 2"),
        "{stdout}"
    );
    assert!(
        stdout.contains("asha"),
        "the sign-ins are printed: {stdout}"
    );
    // Standard output is a pipe here: no progress bar in it.
    assert!(!stdout.contains("=>"), "{stdout}");
    assert_eq!(summary::count(&test_db.db).await.unwrap(), 60);
    let plans = planned(options(2, 60));
    let mut ids: Vec<(String, String)> = on_backend!(&test_db.db, pool => sqlx::query_as(
        "SELECT reference, status FROM quote_summary"
    ).fetch_all(pool).await.unwrap());
    ids.sort();
    let mut expected: Vec<(String, String)> = plans
        .values()
        .map(|p| (p.quote.reference.clone(), p.status().as_str().to_owned()))
        .collect();
    expected.sort();
    assert_eq!(ids, expected, "the command writes the plans of its seed");

    let stdout = run().await;
    assert!(stdout.contains("holds 60 quotes already"), "{stdout}");
    assert_eq!(summary::count(&test_db.db).await.unwrap(), 60);
}
