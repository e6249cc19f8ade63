//! Checkpoints and catch-up: every append moves each projection's checkpoint with its
//! rows; a projection that is new or behind (its checkpoint reset, its tables
//! emptied) catches up from the log to the very rows the inline projection wrote;
//! an event at or before a checkpoint is never applied again.

use quoteline::AppState;
use quoteline::eventstore::checkpoints::{self, CATCH_UP_PAGE, apply_new, last_position};
use quoteline::eventstore::{
    AppendRequest, ExpectedVersion, Metadata, NewEvent, Projector, RecordedEvent, catch_up,
};
use quoteline::state::quote_projector;
use uuid::Uuid;

use crate::projections::{random_history, tables};
use crate::support::TestDb;

storage_tests!(
    every_append_moves_each_projections_checkpoint,
    a_projection_whose_checkpoint_is_reset_catches_up_to_the_same_rows,
    applying_a_batch_twice_changes_nothing,
    a_projection_behind_catches_up_when_the_app_opens,
    events_of_streams_that_are_not_quotes_pass_the_quote_projections_by,
);

const NAMES: [&str; 3] = ["quote_summary", "approval_queue", "audit_timeline"];

/// Every event of these quotes, in commit order.
async fn log_of(app: &AppState, quotes: &[Uuid]) -> Vec<RecordedEvent> {
    let mut log = Vec::new();
    for id in quotes {
        log.extend(app.store.read_stream(*id, 0).await.unwrap());
    }
    log.sort_by_key(|e| e.global);
    log
}

async fn checkpoint_of(
    app: &AppState,
    name: &str,
) -> Option<quoteline::eventstore::GlobalPosition> {
    let mut pooled = app.db.acquire().await.unwrap();
    checkpoints::checkpoint(pooled.as_conn(), name)
        .await
        .unwrap()
}

async fn every_append_moves_each_projections_checkpoint(test_db: &TestDb) {
    let app = AppState::open(test_db.db.clone()).await.unwrap();
    for name in NAMES {
        assert_eq!(
            checkpoint_of(&app, name).await,
            None,
            "{name} before any event"
        );
    }
    let quotes = random_history(&app, 11, 12, 6).await;
    let last = log_of(&app, &quotes).await.last().unwrap().global;
    assert_eq!(last_position(&app.db).await.unwrap(), Some(last));
    for name in NAMES {
        assert_eq!(checkpoint_of(&app, name).await, Some(last), "{name}");
    }
}

async fn a_projection_whose_checkpoint_is_reset_catches_up_to_the_same_rows(test_db: &TestDb) {
    let app = AppState::open(test_db.db.clone()).await.unwrap();
    random_history(&app, 12, 30, 10).await;
    let live = tables(&app.db).await;
    let end = last_position(&app.db).await.unwrap();
    let projector = quote_projector();
    for alone in projector.each() {
        let name = alone.projections()[0].clone();
        let name = name.as_str();
        assert!(projector.reset(&app.db, name).await.unwrap());
        assert_eq!(checkpoint_of(&app, name).await, None);
        assert_ne!(tables(&app.db).await, live, "{name} emptied");

        let mut pages = Vec::new();
        let applied = catch_up(&app.db, &alone, 100, |done| pages.push(done))
            .await
            .unwrap();
        assert!(applied > 200, "{name}: {applied} events");
        assert_eq!(pages.last(), Some(&applied));
        assert!(
            pages.len() as u64 >= applied / 100,
            "pages of 100: {pages:?}"
        );
        assert_eq!(tables(&app.db).await, live, "{name} caught up");
        assert_eq!(checkpoint_of(&app, name).await, end, "{name}");
        assert_eq!(
            catch_up(&app.db, &alone, CATCH_UP_PAGE, |_| {})
                .await
                .unwrap(),
            0,
            "{name}: nothing more"
        );
    }
    assert!(
        !projector
            .reset(&app.db, "no_such_projection")
            .await
            .unwrap()
    );
}

async fn applying_a_batch_twice_changes_nothing(test_db: &TestDb) {
    let app = AppState::open(test_db.db.clone()).await.unwrap();
    let quotes = random_history(&app, 13, 20, 8).await;
    let live = tables(&app.db).await;
    let log = log_of(&app, &quotes).await;
    let projector = quote_projector();

    // Already applied inline: nothing is applied again.
    assert_eq!(apply_new(&app.db, &projector, &log).await.unwrap(), 0);
    assert_eq!(tables(&app.db).await, live);

    for name in NAMES {
        projector.reset(&app.db, name).await.unwrap();
    }
    let (first, _) = log.split_at(log.len() / 2);
    let first_half = first.len() as u64;
    assert_eq!(
        apply_new(&app.db, &projector, first).await.unwrap(),
        first_half
    );
    let half = tables(&app.db).await;
    assert_eq!(apply_new(&app.db, &projector, first).await.unwrap(), 0);
    assert_eq!(tables(&app.db).await, half, "the same batch again");
    // The whole log: only the second half is new.
    let rest = log.len() as u64 - first_half;
    assert_eq!(apply_new(&app.db, &projector, &log).await.unwrap(), rest);
    assert_eq!(tables(&app.db).await, live);
}

async fn a_projection_behind_catches_up_when_the_app_opens(test_db: &TestDb) {
    let app = AppState::open(test_db.db.clone()).await.unwrap();
    random_history(&app, 14, 20, 8).await;
    let live = tables(&app.db).await;
    // As if the approval queue were a projection added since these events.
    quote_projector()
        .reset(&app.db, "approval_queue")
        .await
        .unwrap();
    assert_ne!(tables(&app.db).await, live);

    let reopened = AppState::open(test_db.db.clone()).await.unwrap();
    assert_eq!(tables(&reopened.db).await, live);
    assert_eq!(
        checkpoint_of(&reopened, "approval_queue").await,
        last_position(&reopened.db).await.unwrap()
    );
}

/// The store holds other streams than quotes (people's, and whatever a context added
/// later, an invoice say): appending their events runs the quote projections, which
/// leave them be, inline and catching up.
async fn events_of_streams_that_are_not_quotes_pass_the_quote_projections_by(test_db: &TestDb) {
    let app = AppState::open(test_db.db.clone()).await.unwrap();
    let quotes = random_history(&app, 5, 3, 4).await;
    let live = tables(&app.db).await;
    let person = Uuid::now_v7();
    let appended = app
        .store
        .append(AppendRequest {
            stream_id: person,
            expected: ExpectedVersion::NoStream,
            events: vec![NewEvent {
                event_type: "InvoiceIssued".into(),
                schema_version: 1,
                payload: serde_json::json!({"number": "INV-1", "amount": "120.00"}),
            }],
            metadata: Metadata::new("root", chrono::Utc::now()),
        })
        .await
        .unwrap();
    assert_eq!(appended.last_version(), Some(1));
    assert_eq!(tables(&app.db).await, live, "no quote row changed");
    random_history(&app, 6, 2, 3).await;
    let with_more = tables(&app.db).await;

    let projector = quote_projector();
    for alone in projector.each() {
        let name = alone.projections()[0].clone();
        assert!(projector.reset(&app.db, &name).await.unwrap());
        catch_up(&app.db, &alone, 7, |_| {}).await.unwrap();
        assert_eq!(
            tables(&app.db).await,
            with_more,
            "{name} caught up past the person"
        );
        assert_eq!(
            checkpoint_of(&app, &name).await,
            last_position(&app.db).await.unwrap(),
            "{name}"
        );
    }
    let report = app.store.verify().await.unwrap();
    assert!(report.is_intact(), "{:?}", report.mismatches);
    assert_eq!(report.streams_checked as usize, quotes.len() + 2 + 1);
}
