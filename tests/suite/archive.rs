//! `quoteline archive`: finished quotes' events moved into segments stay readable
//! everywhere (pages, timelines, `as_of`, the audit log and exports byte for byte,
//! the log in commit order, rebuild, verify); a broken segment is reported by
//! `verify` and by each page that needs it; a crash between writing a segment and
//! recording it loses nothing and the next run cleans up.

use chrono::{Duration, Utc};
use quoteline::AppState;
use quoteline::archive::{Archived, archive, hot_size};
use quoteline::eventstore::archive::{self as store_archive, ArchiveLocation};
use quoteline::eventstore::{EventStore, Problem, RecordedEvent};
use quoteline::kernel::Role;
use quoteline::lock::MaintenanceLock;
use quoteline::quoting::summary::finished_before;
use quoteline::rebuild::rebuild;
use quoteline::replay::{Selection, replay};
use uuid::Uuid;

use crate::projections::{random_history, tables};
use crate::support::{TestApp, TestDb, run_command_ok, run_command_refused, whole_log};

storage_tests!(
    archived_quotes_read_the_same_everywhere,
    a_broken_segment_is_reported_by_verify_and_by_the_pages_that_need_it,
    a_crash_between_writing_a_segment_and_recording_it_loses_nothing,
    the_archive_command_moves_finished_quotes_and_waits_its_turn,
);

async fn streams(store: &EventStore, quotes: &[Uuid]) -> Vec<Vec<RecordedEvent>> {
    let mut all = Vec::new();
    for id in quotes {
        all.push(store.read_stream(*id, 0).await.unwrap());
    }
    all
}

/// A history with finished and unfinished quotes, and which are finished.
async fn history(app: &AppState, seed: u64) -> (Vec<Uuid>, Vec<Uuid>) {
    let quotes = random_history(app, seed, 24, 7).await;
    let finished: Vec<Uuid> = finished_before(&app.db, Utc::now() + Duration::days(1))
        .await
        .unwrap()
        .into_iter()
        .map(|(id, _)| id)
        .collect();
    assert!(
        !finished.is_empty() && finished.len() < quotes.len(),
        "some quotes finished, some not: {} of {}",
        finished.len(),
        quotes.len()
    );
    (quotes, finished)
}

async fn archive_all(app: &AppState, location: &ArchiveLocation) -> Archived {
    archive(
        &app.db,
        location,
        Utc::now() + Duration::days(1),
        40,
        |_, _| {},
    )
    .await
    .unwrap()
}

/// What an agent and an auditor see of every quote, and the audit log and exports.
async fn pages(
    agent: &TestApp,
    auditor: &TestApp,
    quotes: &[Uuid],
    store: &EventStore,
) -> Vec<String> {
    let mut seen = Vec::new();
    for id in quotes {
        let version = store.read_stream(*id, 0).await.unwrap().len();
        let mut paths = vec![
            (agent, format!("/quotes/{id}")),
            (auditor, format!("/quotes/{id}/timeline")),
        ];
        for as_of in [1, version / 2 + 1, version] {
            paths.push((auditor, format!("/quotes/{id}/timeline?as_of={as_of}")));
        }
        for (who, path) in paths {
            let response = who.get(&path).await;
            let status = response.status().as_u16();
            seen.push(format!(
                "{path} {status}\n{}",
                response.text().await.unwrap()
            ));
        }
    }
    for path in ["/audit", "/audit/export.csv", "/audit/export.jsonl"] {
        let response = auditor.get(path).await;
        seen.push(format!(
            "{path} {}\n{}",
            response.status(),
            response.text().await.unwrap()
        ));
    }
    seen
}

/// The app again over the same database with nothing cached (another process), the
/// browsers' sessions kept.
async fn fresh(test_db: &TestDb, browsers: &[&TestApp]) -> Vec<TestApp> {
    let state = AppState::open(test_db.db.clone()).await.unwrap();
    let app = TestApp::spawn_state(state).await;
    browsers
        .iter()
        .map(|b| TestApp {
            address: app.address.clone(),
            client: b.client.clone(),
            state: app.state.clone(),
        })
        .collect()
}

fn folder() -> (tempfile::TempDir, ArchiveLocation) {
    let dir = tempfile::tempdir().unwrap();
    let location = ArchiveLocation::open(dir.path().to_str().unwrap()).unwrap();
    (dir, location)
}

async fn archived_quotes_read_the_same_everywhere(test_db: &TestDb) {
    let app = AppState::open(test_db.db.clone()).await.unwrap();
    let (quotes, finished) = history(&app, 41).await;
    let agent = TestApp::spawn_state(app.clone()).await;
    agent.sign_in_as("asha", &[Role::Agent]).await;
    let auditor = agent.new_browser();
    auditor.sign_in_as("ada", &[Role::Auditor]).await;

    let log = whole_log(&app.store, 7).await;
    let by_stream = streams(&app.store, &quotes).await;
    let live = tables(&app.db).await;
    let before = pages(&agent, &auditor, &quotes, &app.store).await;
    let hot_before = hot_size(&app.db).await.unwrap();

    // The local folder on SQLite, the in-memory store on PostgreSQL: both stores
    // the object_store crate gives, one backend each.
    let (_dir, location) = if test_db.is_postgres() {
        (
            None,
            ArchiveLocation::open(&format!("memory:///{}", Uuid::now_v7())).unwrap(),
        )
    } else {
        let (dir, location) = folder();
        (Some(dir), location)
    };
    let archived = archive_all(&app, &location).await;
    let finished_events: usize = by_stream
        .iter()
        .zip(&quotes)
        .filter(|(_, id)| finished.contains(id))
        .map(|(events, _)| events.len())
        .sum();
    assert_eq!(archived.quotes, finished.len() as u64);
    assert_eq!(archived.events, finished_events as u64);
    assert!(
        archived.segments > 1,
        "segments of about 40 events: {archived:?}"
    );
    assert_eq!(archived.before, hot_before);
    assert_eq!(
        archived.after.rows,
        hot_before.rows - finished_events as i64
    );
    let hot = hot_size(&app.db).await.unwrap();
    assert_eq!(hot, archived.after);

    // Read by another process, nothing cached: the same streams, log and pages.
    let browsers = fresh(test_db, &[&agent, &auditor]).await;
    let (agent, auditor) = (&browsers[0], &browsers[1]);
    let store = &agent.state.store;
    assert_eq!(streams(store, &quotes).await, by_stream);
    assert_eq!(whole_log(store, 7).await, log);
    assert_eq!(pages(agent, auditor, &quotes, store).await, before);
    let report = store.verify().await.unwrap();
    assert!(report.is_intact(), "{:?}", report.mismatches);
    assert_eq!(report.segments_checked, archived.segments);
    assert_eq!(report.events_checked, log.len() as u64);

    // Rebuilt from archive and hot rows: the tables as they were.
    let rebuilt = rebuild(&app.db, None, |_, _| {}).await.unwrap();
    assert_eq!(rebuilt.events, log.len() as u64);
    assert_eq!(tables(&app.db).await, live);

    // Replayed into another database: every event, archived ones included.
    let target = test_db.another("archive_replay").await;
    let replayed = replay(&app.db, &target.db, Selection::default(), |_, _| {})
        .await
        .unwrap();
    assert_eq!(replayed.events, log.len() as u64);
    let copy = AppState::open(target.db.clone()).await.unwrap();
    // In position order: the copy's transactions are its own.
    let positions = |log: &[RecordedEvent]| -> Vec<(i64, String)> {
        let mut found: Vec<_> = log.iter().map(|e| (e.position(), e.hash.clone())).collect();
        found.sort();
        found
    };
    assert_eq!(positions(&whole_log(&copy.store, 7).await), positions(&log));
    assert!(copy.store.verify().await.unwrap().is_intact());

    // Nothing more to move.
    let again = archive_all(&app, &location).await;
    assert_eq!((again.events, again.segments), (0, 0));
}

async fn a_broken_segment_is_reported_by_verify_and_by_the_pages_that_need_it(test_db: &TestDb) {
    let app = AppState::open(test_db.db.clone()).await.unwrap();
    let (_, finished) = history(&app, 43).await;
    let (dir, location) = folder();
    archive_all(&app, &location).await;
    let segments = store_archive::segments(&app.db).await.unwrap();
    let archived = store_archive::archived_streams(&app.db).await.unwrap();
    let broken = &segments[0];
    let affected: Vec<Uuid> = archived
        .iter()
        .filter(|(_, in_segments)| in_segments.iter().any(|(s, _)| *s == broken.segment_id))
        .map(|(id, _)| *id)
        .collect();
    assert!(!affected.is_empty());
    let file = dir.path().join(&broken.path);

    for (damage, expected) in [
        ("altered", "is not what was archived"),
        ("missing", "is missing"),
    ] {
        if damage == "altered" {
            let mut bytes = std::fs::read(&file).unwrap();
            let middle = bytes.len() / 2;
            bytes[middle] ^= 0x55;
            std::fs::write(&file, bytes).unwrap();
        } else {
            std::fs::remove_file(&file).unwrap();
        }
        let report = app.store.verify().await.unwrap();
        let mut reported: Vec<Uuid> = report
            .mismatches
            .iter()
            .map(|m| {
                let Problem::ArchiveUnreadable { reason } = &m.problem else {
                    panic!("only the broken segment is reported: {m:?}");
                };
                assert!(reason.contains(&broken.segment_id.to_string()), "{reason}");
                assert!(reason.contains(expected), "{damage}: {reason}");
                m.stream_id
            })
            .collect();
        reported.sort();
        let mut expected_streams = affected.clone();
        expected_streams.sort();
        assert_eq!(
            reported, expected_streams,
            "{damage}: every quote in it, no other"
        );

        // A page that needs the segment, in a process that has not read it before.
        let app2 = TestApp::spawn(test_db).await;
        app2.sign_in_as(&format!("ada-{damage}"), &[Role::Auditor])
            .await;
        let id = affected[0];
        let response = app2.get(&format!("/quotes/{id}/timeline?as_of=1")).await;
        assert_eq!(response.status().as_u16(), 503, "{damage}");
        let body = response.text().await.unwrap();
        assert!(body.contains("archived history cannot be read"), "{body}");
        assert!(body.contains(&broken.segment_id.to_string()), "{body}");
        // The quotes in other segments, and the timeline's rows, still read.
        let other = finished.iter().find(|id| !affected.contains(id));
        if let Some(other) = other {
            let fine = app2.get(&format!("/quotes/{other}/timeline?as_of=1")).await;
            assert_eq!(fine.status().as_u16(), 200);
        }
        let timeline = app2.get(&format!("/quotes/{id}/timeline")).await;
        assert_eq!(timeline.status().as_u16(), 200);
    }
}

async fn a_crash_between_writing_a_segment_and_recording_it_loses_nothing(test_db: &TestDb) {
    let app = AppState::open(test_db.db.clone()).await.unwrap();
    let (quotes, finished) = history(&app, 47).await;
    let log = whole_log(&app.store, 7).await;
    let by_stream = streams(&app.store, &quotes).await;
    let location = ArchiveLocation::open(&format!("memory:///{}", Uuid::now_v7())).unwrap();

    // The run stops after the segment is written and checked, before its manifest.
    let events = store_archive::hot_events(&app.db, &finished).await.unwrap();
    let written = store_archive::write_segment(&location, events)
        .await
        .unwrap();
    let fresh = AppState::open(test_db.db.clone()).await.unwrap();
    assert_eq!(whole_log(&fresh.store, 7).await, log, "every event once");
    assert_eq!(streams(&fresh.store, &quotes).await, by_stream);
    assert!(fresh.store.verify().await.unwrap().is_intact());
    assert_eq!(hot_size(&app.db).await.unwrap().rows, log.len() as i64);

    // The next run removes the orphan and archives.
    let archived = archive_all(&app, &location).await;
    assert_eq!(archived.orphans_removed, 1);
    assert_eq!(archived.quotes, finished.len() as u64);
    let recorded = store_archive::segments(&app.db).await.unwrap();
    assert_eq!(recorded.len() as u64, archived.segments);
    assert!(recorded.iter().all(|s| s.segment_id != written.segment_id));
    assert_eq!(
        store_archive::remove_orphans(&app.db, &location)
            .await
            .unwrap(),
        0
    );
    let fresh = AppState::open(test_db.db.clone()).await.unwrap();
    assert_eq!(whole_log(&fresh.store, 7).await, log);
    assert!(fresh.store.verify().await.unwrap().is_intact());
}

async fn the_archive_command_moves_finished_quotes_and_waits_its_turn(test_db: &TestDb) {
    let app = AppState::open(test_db.db.clone()).await.unwrap();
    let (_, finished) = history(&app, 53).await;
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().to_str().unwrap();

    // Nothing is a year old.
    let stdout = run_command_ok(
        test_db,
        &["archive", "--older-than", "365", "--to", to, "--quiet"],
    )
    .await;
    assert!(
        stdout.starts_with("Archived 0 events of 0 quotes"),
        "{stdout}"
    );

    // While a rebuild (or another archive run) holds the lock.
    let lock = MaintenanceLock::take(&app.db, "rebuild").await.unwrap();
    let refused = run_command_refused(
        test_db,
        &["archive", "--older-than", "0", "--to", to, "--quiet"],
    )
    .await;
    assert!(
        refused.contains("another rebuild or archive run"),
        "{refused}"
    );
    lock.release().await;

    let stdout = run_command_ok(
        test_db,
        &["archive", "--older-than", "0", "--to", to, "--quiet"],
    )
    .await;
    assert!(
        stdout.contains(&format!("of {} quotes into 1 segments", finished.len())),
        "{stdout}"
    );
    assert!(stdout.contains("The events table:"), "{stdout}");
    let files = std::fs::read_dir(dir.path().join("segments"))
        .unwrap()
        .count();
    assert_eq!(files, 1);
}
