//! `quoteline replay --into`: the history copied into another database of its own,
//! whole or up to a cut or of one quote; the copy's chains verify, its projections
//! equal a fold of what it holds, and the live database is only read.

use quoteline::AppState;
use quoteline::eventstore::checkpoints::last_position;
use quoteline::eventstore::{EventStore, RecordedEvent};
use quoteline::kernel::Role;
use quoteline::quoting::summary;
use quoteline::replay::{ReplayError, Selection, Until, replay};
use uuid::Uuid;

use crate::projections::{random_history, tables};
use crate::support::{TestApp, TestDb, fresh_fold, html_page, run_command_ok, run_command_refused};

storage_tests!(
    a_replay_copies_the_history_as_recorded_and_builds_the_same_tables,
    a_replay_up_to_a_position_shows_each_quote_as_it_stood_there,
    a_replay_of_one_quote_copies_it_alone,
    a_replay_into_a_database_that_holds_events_is_refused,
);

/// Every event of these quotes, in position order.
async fn events_of(store: &EventStore, quotes: &[Uuid]) -> Vec<RecordedEvent> {
    let mut log = Vec::new();
    for id in quotes {
        log.extend(store.read_stream(*id, 0).await.unwrap());
    }
    log.sort_by_key(RecordedEvent::position);
    log
}

/// What a copy must keep of an event: everything but the writing transaction.
fn as_recorded(events: &[RecordedEvent]) -> Vec<RecordedEvent> {
    events
        .iter()
        .map(|e| {
            let mut e = e.clone();
            e.global.commit = 0;
            e
        })
        .collect()
}

async fn a_replay_copies_the_history_as_recorded_and_builds_the_same_tables(test_db: &TestDb) {
    let app = AppState::open(test_db.db.clone()).await.unwrap();
    let quotes = random_history(&app, 31, 25, 10).await;
    let live = tables(&app.db).await;
    let target = test_db.another("replay_target").await;

    let mut heard = Vec::new();
    let replayed = replay(&app.db, &target.db, Selection::default(), |done, total| {
        heard.push((done, total))
    })
    .await
    .unwrap();

    let original = events_of(&app.store, &quotes).await;
    assert_eq!(replayed.events, original.len() as u64);
    assert_eq!(replayed.streams, quotes.len() as u64);
    assert_eq!(heard.last(), Some(&(replayed.events, replayed.events)));
    let copy = AppState::open(target.db.clone()).await.unwrap();
    assert_eq!(
        as_recorded(&events_of(&copy.store, &quotes).await),
        as_recorded(&original),
        "the same events, positions and hashes"
    );
    assert!(copy.store.verify().await.unwrap().is_intact());
    assert_eq!(tables(&target.db).await, live, "the same tables");
    assert_eq!(
        last_position(&target.db).await.unwrap().map(|p| p.position),
        original.last().map(RecordedEvent::position)
    );
    assert_eq!(tables(&app.db).await, live, "the original is only read");

    // The command, into a database it creates.
    let another = test_db.another("replay_command").await;
    let stdout = run_command_ok(test_db, &["replay", "--into", &another.url(), "--quiet"]).await;
    assert!(
        stdout.starts_with(&format!("Replayed {} events of 25 quotes", original.len())),
        "{stdout}"
    );
    assert_eq!(tables(&another.db).await, live);
    another.cleanup().await;
    target.cleanup().await;
}

async fn a_replay_up_to_a_position_shows_each_quote_as_it_stood_there(test_db: &TestDb) {
    let app = AppState::open(test_db.db.clone()).await.unwrap();
    let quotes = random_history(&app, 32, 20, 10).await;
    let original = events_of(&app.store, &quotes).await;
    let cut = original[original.len() / 2].position();
    let target = test_db.another("replay_until").await;

    let selection = Selection {
        until: Some(Until::Position(cut)),
        quote: None,
    };
    let replayed = replay(&app.db, &target.db, selection, |_, _| {})
        .await
        .unwrap();

    let copy = AppState::open(target.db.clone()).await.unwrap();
    let kept: Vec<&RecordedEvent> = original.iter().filter(|e| e.position() <= cut).collect();
    assert_eq!(replayed.events, kept.len() as u64);
    assert!(copy.store.verify().await.unwrap().is_intact());
    for id in &quotes {
        let stood = original
            .iter()
            .filter(|e| e.stream_id == *id && e.position() <= cut)
            .map(|e| e.version)
            .max();
        let copied = fresh_fold(&copy.store, *id, None).await;
        let at_cut = fresh_fold(&app.store, *id, Some(stood.unwrap_or(0))).await;
        assert_eq!(copied, at_cut, "{id}");
        let row = summary::find(&target.db, *id).await.unwrap();
        match stood {
            None => assert!(row.is_none(), "{id} started after the cut"),
            Some(version) => {
                let row = row.unwrap();
                assert_eq!(row.version, version);
                assert_eq!(row.status, copied.status.unwrap().as_str());
            }
        }
    }

    // A page of the copy, as an auditor signed in there sees it.
    let (id, stood) = quotes
        .iter()
        .find_map(|id| {
            let versions = original.iter().filter(|e| e.stream_id == *id);
            let before = versions.clone().filter(|e| e.position() <= cut).count();
            (before > 1 && before < versions.count()).then_some((*id, before as i64))
        })
        .expect("a quote the cut goes through");
    let served = TestApp::spawn(&target).await;
    served.sign_in_as("ada", &[Role::Auditor]).await;
    let page = html_page(served.get(&format!("/quotes/{id}/timeline")).await, 200).await;
    let status = fresh_fold(&app.store, id, Some(stood))
        .await
        .status
        .unwrap();
    assert!(page.contains(status.label()), "{status:?} on {page}");
    target.cleanup().await;
}

async fn a_replay_of_one_quote_copies_it_alone(test_db: &TestDb) {
    let app = AppState::open(test_db.db.clone()).await.unwrap();
    let quotes = random_history(&app, 33, 6, 8).await;
    let target = test_db.another("replay_quote").await;
    let chosen = quotes[2];

    let selection = Selection {
        until: None,
        quote: Some(chosen),
    };
    let replayed = replay(&app.db, &target.db, selection, |_, _| {})
        .await
        .unwrap();

    let copy = AppState::open(target.db.clone()).await.unwrap();
    let original = app.store.read_stream(chosen, 0).await.unwrap();
    assert_eq!(
        (replayed.events, replayed.streams),
        (original.len() as u64, 1)
    );
    assert_eq!(
        as_recorded(&copy.store.read_stream(chosen, 0).await.unwrap()),
        as_recorded(&original)
    );
    assert_eq!(summary::count(&target.db).await.unwrap(), 1);
    assert!(copy.store.verify().await.unwrap().is_intact());
    target.cleanup().await;
}

async fn a_replay_into_a_database_that_holds_events_is_refused(test_db: &TestDb) {
    let app = AppState::open(test_db.db.clone()).await.unwrap();
    random_history(&app, 34, 3, 2).await;
    let target = test_db.another("replay_refused").await;
    let other = AppState::open(target.db.clone()).await.unwrap();
    random_history(&other, 35, 1, 1).await;
    let before = tables(&target.db).await;

    let refused = replay(&app.db, &target.db, Selection::default(), |_, _| {}).await;
    assert!(
        matches!(refused, Err(ReplayError::NotEmpty(n)) if n > 0),
        "{refused:?}"
    );
    assert_eq!(tables(&target.db).await, before, "nothing written");

    let stderr =
        run_command_refused(test_db, &["replay", "--into", &target.url(), "--quiet"]).await;
    assert!(stderr.contains("replay into an empty one"), "{stderr}");
    target.cleanup().await;
}
