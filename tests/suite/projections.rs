//! The projections give the same tables whatever the batches they are handed: the
//! group-commit writer gives each projection a whole batch of many quotes' events,
//! a rebuild gives it pages that cut across quotes, and the fallback path gives it
//! one append at a time, and a rebuild's fill keeps each quote's rows in memory over
//! the pages of the whole log. A seeded random history of concurrent commands is
//! replayed one event at a time, in random chunks and through the fill in random
//! pages, and every table must come out equal.

use std::sync::Arc;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use quoteline::AppState;
use quoteline::audit::TimelineProjection;
use quoteline::db::{Conn, Db};
use quoteline::eventstore::{Projector, Rebuildable, RecordedEvent};
use quoteline::kernel::{Actor, Envelope, Role};
use quoteline::on_backend;
use quoteline::quoting::QuoteSummaryProjection;
use quoteline::quoting::domain::{
    Action, ContactDetails, FamilyDetails, GeographicDetails, NonEmptyText, PersonName, Status,
};
use quoteline::quoting::projection::QuoteProjector;
use quoteline::underwriting::queue::ApprovalQueueProjection;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::types::Json;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::support::TestDb;

storage_tests!(projections_give_the_same_tables_one_event_at_a_time_and_in_any_batches);

fn envelope(at: DateTime<Utc>) -> Envelope {
    Envelope {
        at,
        request_id: None,
        idempotency_key: None,
    }
}

/// One step of one quote's life, chosen at random among what its people would do.
fn next_action(rng: &mut StdRng, status: Status, complete: bool) -> (bool, Action) {
    let text = |s: &str| NonEmptyText::parse(s).unwrap();
    let places = [
        ("IN", "Maharashtra", "Pune", "411001"),
        ("US", "California", "San Francisco", "94105"),
        ("FR", "Île-de-France", "Paris", "75011"),
    ];
    let section = |rng: &mut StdRng| match rng.random_range(0..3) {
        0 => {
            let (c, r, city, p) = places[rng.random_range(0..places.len())];
            Action::ProvideGeographic(GeographicDetails::parse(c, r, city, p).unwrap())
        }
        1 => {
            let email = format!("a{}@example.com", rng.random_range(0..5));
            Action::ProvideContact(ContactDetails::parse(&email, "+44 7700 900123").unwrap())
        }
        _ => {
            let children: Vec<String> = (0..rng.random_range(0..3))
                .map(|n| format!("Child {n}"))
                .collect();
            let spouse = ["", "Sam Lee"][rng.random_range(0..2)];
            Action::ProvideFamily(FamilyDetails::parse("3", spouse, &children).unwrap())
        }
    };
    // (by the underwriter?, action)
    match status {
        Status::Initiated | Status::Saved if !complete || rng.random_bool(0.3) => {
            (false, section(rng))
        }
        Status::Initiated | Status::Saved => match rng.random_range(0..10) {
            0 => (false, Action::Withdraw),
            _ => (false, Action::Finalize),
        },
        _ => match rng.random_range(0..10) {
            0..3 => (true, Action::Approve),
            3..5 => (
                true,
                Action::Reject {
                    reason: text("Too risky"),
                },
            ),
            5 => (false, Action::Withdraw),
            _ => (
                true,
                Action::ReferBack {
                    note: text("Check the postal code"),
                },
            ),
        },
    }
}

/// Rounds of commands sent at once (so the writer batches them), each quote taking
/// one step a round.
pub async fn random_history(app: &AppState, seed: u64, quotes: usize, rounds: usize) -> Vec<Uuid> {
    let mut rng = StdRng::seed_from_u64(seed);
    let agent = Actor::new("asha", [Role::Agent]);
    let underwriter = Actor::new("uma", [Role::Underwriter]);
    let mut clock = Utc.with_ymd_and_hms(2026, 3, 1, 8, 0, 0).unwrap();
    let ids: Vec<Uuid> = (0..quotes).map(|_| Uuid::now_v7()).collect();
    for (n, id) in ids.iter().enumerate() {
        let name = PersonName::parse(format!("Applicant {n}")).unwrap();
        app.quotes
            .start(*id, agent.clone(), name, &envelope(clock))
            .await
            .unwrap();
    }
    for _ in 0..rounds {
        clock += TimeDelta::minutes(rng.random_range(1..90));
        let mut commands = JoinSet::new();
        for id in &ids {
            let quote = app.quotes.load(*id, None).await.unwrap().unwrap();
            let status = quote.status.unwrap();
            if status.is_final() {
                continue;
            }
            let (decides, action) = next_action(&mut rng, status, quote.sections_complete());
            let actor = if decides { &underwriter } else { &agent };
            let command = quoteline::quoting::domain::Command::new(actor.clone(), action);
            let (app, id, version) = (app.clone(), *id, quote.version as i64);
            commands.spawn(async move {
                app.quotes
                    .execute(id, version, command, &envelope(clock))
                    .await
            });
        }
        while let Some(done) = commands.join_next().await {
            done.unwrap().unwrap();
        }
    }
    ids
}

/// Every row of every table the quote projections keep, as text to compare.
pub async fn tables(db: &Db) -> Vec<String> {
    type MaybeTime = Option<DateTime<Utc>>;
    type SummaryHead = (Uuid, String, String, String, String, bool, bool, bool);
    type QueueRow = (
        Uuid,
        String,
        Option<String>,
        Option<i32>,
        MaybeTime,
        MaybeTime,
        MaybeTime,
        i32,
    );
    type SummaryMore = (
        Option<String>,
        Option<String>,
        Option<i32>,
        i32,
        Option<String>,
    );
    type SummaryEnd = (Option<String>, i64, i64, DateTime<Utc>, DateTime<Utc>);
    on_backend!(db, pool => {
        let summary: Vec<SummaryHead> = sqlx::query_as(
            "SELECT quote_id, reference, applicant_name, agent, status, geographic_done, \
             contact_done, family_done FROM quote_summary ORDER BY quote_id",
        ).fetch_all(pool).await.unwrap();
        let summary_more: Vec<SummaryMore> = sqlx::query_as(
            "SELECT country, region, dependents, referral_count, last_referral_note \
             FROM quote_summary ORDER BY quote_id",
        ).fetch_all(pool).await.unwrap();
        let summary_end: Vec<SummaryEnd> = sqlx::query_as(
            "SELECT rejection_reason, version, last_position, created_at, updated_at \
             FROM quote_summary ORDER BY quote_id",
        ).fetch_all(pool).await.unwrap();
        let submitted: Vec<(MaybeTime,)> =
            sqlx::query_as("SELECT submitted_at FROM quote_summary ORDER BY quote_id")
                .fetch_all(pool).await.unwrap();
        let queue: Vec<QueueRow> = sqlx::query_as(
            "SELECT quote_id, reference, country, dependents, submitted_at, first_submitted_at, \
             earliest_submission_at, referral_count FROM approval_queue ORDER BY quote_id",
        ).fetch_all(pool).await.unwrap();
        let total: i64 = sqlx::query_scalar("SELECT waiting FROM approval_queue_total")
            .fetch_one(pool).await.unwrap();
        let timeline: Vec<quoteline::audit::TimelineEntry> = sqlx::query_as(&format!(
            "{} ORDER BY position", quoteline::audit::timeline::SELECT_ENTRY
        )).fetch_all(pool).await.unwrap();
        let users: Vec<(Uuid, String, String, DateTime<Utc>, bool, i64)> = sqlx::query_as(
            "SELECT id, username, roles, created_at, active, version FROM users ORDER BY id",
        ).fetch_all(pool).await.unwrap();
        let states: Vec<(Uuid, String, i64, i32, Json<serde_json::Value>)> = sqlx::query_as(
            "SELECT quote_id, reference, version, schema_version, state FROM audit_quote_state \
             ORDER BY quote_id",
        ).fetch_all(pool).await.unwrap();
        vec![
            format!("{summary:?}"),
            format!("{summary_more:?}"),
            format!("{summary_end:?}"),
            format!("{submitted:?}"),
            format!("{queue:?}"),
            format!("waiting {total}"),
            format!("{timeline:?}"),
            format!("{states:?}"),
            format!("{users:?}"),
        ]
    })
}

fn quote_projections() -> QuoteProjector {
    QuoteProjector::new(vec![
        Arc::new(QuoteSummaryProjection::default()),
        Arc::new(ApprovalQueueProjection::default()),
        Arc::new(TimelineProjection::default()),
    ])
}

/// Leaves the quote projections' tables as before the first event.
async fn empty(mut conn: Conn<'_>) {
    for table in [
        "quote_summary",
        "approval_queue",
        "audit_timeline",
        "audit_quote_state",
    ] {
        conn.execute_plain(&format!("DELETE FROM {table}"))
            .await
            .unwrap();
    }
    conn.execute_plain("UPDATE approval_queue_total SET waiting = 0")
        .await
        .unwrap();
}

/// `log` cut into pieces of `chunk()` events each.
fn pieces(mut log: &[RecordedEvent], mut chunk: impl FnMut() -> usize) -> Vec<&[RecordedEvent]> {
    let mut pieces = Vec::new();
    while !log.is_empty() {
        let (piece, rest) = log.split_at(chunk().clamp(1, log.len()));
        pieces.push(piece);
        log = rest;
    }
    pieces
}

/// Empties the projections' tables and applies the whole log again, handing the
/// projector `chunk(n)` events at a time.
pub async fn replay(app: &AppState, log: &[RecordedEvent], chunk: impl FnMut() -> usize) {
    let projector = quote_projections();
    let mut pooled = app.db.acquire().await.unwrap();
    let mut conn = pooled.as_conn();
    empty(conn.reborrow()).await;
    for batch in pieces(log, chunk) {
        projector.apply(conn.reborrow(), batch).await.unwrap();
    }
}

/// Empties the projections' tables and fills them as a rebuild does, from the whole
/// log in pages of `chunk(n)` events.
async fn refill(app: &AppState, log: &[RecordedEvent], chunk: impl FnMut() -> usize) {
    let mut fill = quote_projections().fill();
    let mut pooled = app.db.acquire().await.unwrap();
    let mut conn = pooled.as_conn();
    empty(conn.reborrow()).await;
    for page in pieces(log, chunk) {
        fill.page(conn.reborrow(), page).await.unwrap();
    }
    while fill.flush(conn.reborrow(), 7).await.unwrap() {}
}

async fn projections_give_the_same_tables_one_event_at_a_time_and_in_any_batches(test_db: &TestDb) {
    let app = AppState::open(test_db.db.clone()).await.unwrap();
    let quotes = random_history(&app, 20_261_129, 40, 12).await;
    let live = tables(&test_db.db).await;
    // The log read stream by stream, in position order: a read-all on PostgreSQL
    // waits for every transaction open in the cluster, other tests' included.
    let mut log = Vec::new();
    for id in quotes {
        log.extend(app.store.read_stream(id, 0).await.unwrap());
    }
    log.sort_by_key(RecordedEvent::position);
    assert!(log.len() > 300, "a history worth replaying: {}", log.len());

    replay(&app, &log, || 1).await;
    let one_at_a_time = tables(&test_db.db).await;
    assert_eq!(
        one_at_a_time, live,
        "one event at a time equals the live tables"
    );

    replay(&app, &log, || usize::MAX).await;
    assert_eq!(
        tables(&test_db.db).await,
        one_at_a_time,
        "the whole log as one batch"
    );

    let mut rng = StdRng::seed_from_u64(7);
    for _ in 0..3 {
        replay(&app, &log, || rng.random_range(1..200)).await;
        assert_eq!(tables(&test_db.db).await, one_at_a_time, "random batches");
    }

    // A rebuild's fill: each quote's rows kept in memory across pages.
    for _ in 0..3 {
        refill(&app, &log, || rng.random_range(1..200)).await;
        assert_eq!(
            tables(&test_db.db).await,
            one_at_a_time,
            "filled in random pages"
        );
    }
    refill(&app, &log, || usize::MAX).await;
    assert_eq!(
        tables(&test_db.db).await,
        one_at_a_time,
        "filled in one page"
    );
}
