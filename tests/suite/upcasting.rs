//! Events that evolve, on both backends. A quote stored at schema version 1 (fixture
//! rows with the hashes the build of that version wrote, before contact details had
//! a preferred way of contact) is read through the upcaster on every path: loads,
//! projections, pages, rebuild, archive, exports and verification; its stored bytes
//! and hashes stay exactly as they were.

use quoteline::AppState;
use quoteline::audit::proof;
use quoteline::audit::timeline;
use quoteline::db::Db;
use quoteline::eventstore::copy::{copy_in, follow_positions};
use quoteline::eventstore::{ArchiveLocation, RecordedEvent};
use quoteline::kernel::Role;
use quoteline::quoting::domain::{ContactDetails, PreferredContact, Status};
use quoteline::quoting::summary;
use serde_json::Value;
use uuid::Uuid;

use crate::support::{TestApp, TestDb, html_page};

storage_tests!(version_one_rows_load_project_export_archive_and_verify_unchanged);

const FIXTURE: &str = include_str!("../fixtures/schema-v1-quote.json");

/// The fixture's rows written as they are, hashes and positions included.
async fn store_fixture(db: &Db) -> Vec<RecordedEvent> {
    let events: Vec<RecordedEvent> = serde_json::from_str(FIXTURE).unwrap();
    assert!(events.iter().all(|e| e.schema_version == 1));
    db.migrate().await.unwrap();
    let mut pooled = db.acquire().await.unwrap();
    let mut tx = pooled.as_conn().begin_write().await.unwrap();
    copy_in(tx.as_conn(), &events).await.unwrap();
    follow_positions(tx.as_conn()).await.unwrap();
    tx.commit().await.unwrap();
    events
}

/// The events as stored, but for the commit each was written in (PostgreSQL's
/// transaction ids are the copy's own).
fn as_stored(mut events: Vec<RecordedEvent>) -> Vec<RecordedEvent> {
    for event in &mut events {
        event.global.commit = 0;
    }
    events
}

/// Each timeline entry's change lines, oldest first.
async fn timeline_lines(db: &Db, id: Uuid) -> Vec<(i64, Vec<String>)> {
    let mut entries = timeline::for_quote(db, id, None, 100).await.unwrap();
    entries.reverse();
    entries
        .into_iter()
        .map(|e| (e.version, e.change_lines()))
        .collect()
}

async fn version_one_rows_load_project_export_archive_and_verify_unchanged(test_db: &TestDb) {
    let fixture = store_fixture(&test_db.db).await;
    let id = fixture[0].stream_id;
    // Opening the app catches every projection up from the log: each row read
    // through the upcaster.
    let app = TestApp::spawn(test_db).await;
    let state = &app.state;

    // The stored rows are what the fixture holds, byte for byte, and their chain holds.
    let fixture = as_stored(fixture);
    assert_eq!(
        as_stored(state.store.read_stream(id, 0).await.unwrap()),
        fixture
    );
    let report = state.store.verify().await.unwrap();
    assert!(report.is_intact(), "{:?}", report.mismatches);
    assert_eq!(report.events_checked, 8);

    // Loaded: the contact details read as preferring email.
    let quote = state.quotes.load(id, None).await.unwrap().unwrap();
    assert_eq!(
        quote.contact,
        Some(ContactDetails::parse("meera.iyer@example.com", "+919876543210").unwrap())
    );
    assert_eq!(
        quote.contact.unwrap().preferred_contact(),
        PreferredContact::Email
    );
    assert_eq!((quote.status, quote.version), (Some(Status::Approved), 8));

    // Projected.
    let row = summary::find(&state.db, id).await.unwrap().unwrap();
    assert_eq!(
        (row.status(), row.version, row.contact_done),
        (Status::Approved, 8, true)
    );
    let lines = timeline_lines(&state.db, id).await;
    assert_eq!(
        lines[3],
        (
            4,
            vec![
                "Email: meera@example.com".to_owned(),
                "Phone number: +919876543210".to_owned(),
                "Preferred contact: Email".to_owned(),
            ]
        )
    );
    assert_eq!(
        lines[5],
        (
            6,
            vec!["Email: meera@example.com → meera.iyer@example.com".to_owned()]
        )
    );

    // Shown.
    app.sign_in_as("audrey", &[Role::Auditor]).await;
    let as_of = html_page(
        app.get(&format!("/quotes/{id}/timeline?as_of=4")).await,
        200,
    )
    .await;
    assert!(
        as_of.contains("<dt>Preferred contact</dt><dd>Email</dd>"),
        "{as_of}"
    );
    let compare = html_page(
        app.get(&format!("/quotes/{id}/compare?from=3&to=6")).await,
        200,
    )
    .await;
    assert!(compare.contains("meera.iyer@example.com"), "{compare}");

    // Exported: the log with its changes, and the proof with the stored payloads at
    // their stored version, which is what the hashes cover.
    let export = app
        .get("/audit/export.jsonl?reference=Q-V1FIXT")
        .await
        .text()
        .await
        .unwrap();
    let exported: Vec<Value> = export
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(exported.len(), 8, "{export}");
    assert!(export.contains("Preferred contact"), "{export}");
    let file = app
        .get(&format!("/quotes/{id}/proof.json"))
        .await
        .text()
        .await
        .unwrap();
    let document: Value = serde_json::from_str(&file).unwrap();
    let stored: Vec<(&Value, &Value)> = document["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (&e["schema_version"], &e["payload"]))
        .collect();
    let expected: Vec<(Value, &Value)> = fixture
        .iter()
        .map(|e| (Value::from(1), &e.payload))
        .collect();
    assert_eq!(
        stored,
        expected.iter().map(|(v, p)| (v, *p)).collect::<Vec<_>>()
    );
    assert_eq!(proof::check(&file, None).unwrap().chain, Ok(()));

    // Rebuilt from the log: the same rows.
    let summary_before = summary::find(&state.db, id).await.unwrap().unwrap();
    quoteline::rebuild::rebuild(&state.db, None, |_, _| {})
        .await
        .unwrap();
    assert_eq!(timeline_lines(&state.db, id).await, lines);
    let summary_after = summary::find(&state.db, id).await.unwrap().unwrap();
    assert_eq!(format!("{summary_after:?}"), format!("{summary_before:?}"));

    // Archived (it was approved long ago), read back from its segment by a process
    // that has nothing cached, and verified with the segment.
    let location = ArchiveLocation::open(&format!("memory:///v1-{}", Uuid::now_v7())).unwrap();
    let archived =
        quoteline::archive::archive(&state.db, &location, chrono::Utc::now(), 1_000, |_, _| {})
            .await
            .unwrap();
    assert_eq!(archived.events, 8);
    let fresh = AppState::open(test_db.db.clone()).await.unwrap();
    assert_eq!(
        as_stored(fresh.store.read_stream(id, 0).await.unwrap()),
        fixture
    );
    // A reader that knew the quote up to event 5 gets the rest from the segment.
    let rest: Vec<i64> = fresh
        .store
        .read_stream(id, 5)
        .await
        .unwrap()
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(rest, [6, 7, 8]);
    assert!(fresh.store.read_stream(id, 8).await.unwrap().is_empty());
    let (before, steps) = fresh.quotes.history_between(id, 3, 6).await.unwrap();
    let compared = quoteline::audit::compare::compare(&before, &steps);
    assert_eq!(compared.differences().count(), 6, "{compared:?}");
    let reloaded = fresh.quotes.load(id, None).await.unwrap().unwrap();
    assert_eq!(
        reloaded.contact.unwrap().preferred_contact(),
        PreferredContact::Email
    );
    let report = fresh.store.verify().await.unwrap();
    assert!(report.is_intact(), "{:?}", report.mismatches);
    assert_eq!(report.segments_checked, 1);
}
