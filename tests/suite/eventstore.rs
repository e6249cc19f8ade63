//! The event store's conformance suite: each body runs on SQLite and PostgreSQL.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::Utc;
use futures_util::future::BoxFuture;
use quoteline::db::{Conn, Db};
use quoteline::eventstore::{
    AppendError, AppendRequest, Appended, EventStore, ExpectedVersion, GlobalPosition, Metadata,
    NewEvent, Problem, ProjectionError, Projector, RecordedEvent,
};
use quoteline::on_backend;
use serde_json::json;
use sqlx::postgres::PgConnectOptions;
use std::str::FromStr;
use tokio::sync::Notify;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::support::TestDb;

storage_tests!(
    two_writers_at_the_same_version_one_wins_and_the_other_conflicts,
    concurrent_writers_never_make_a_reader_skip_or_repeat_an_event,
    a_repeated_idempotency_key_appends_nothing_and_returns_the_first_result,
    concurrent_retries_of_one_idempotency_key_append_once,
    a_rejected_append_writes_nothing,
    an_append_after_the_database_closed_fails,
    chain_verification_passes_an_untouched_store,
    chain_verification_finds_a_modified_payload,
    chain_verification_finds_a_deleted_event,
    chain_verification_finds_a_deleted_last_event,
    chain_verification_finds_a_swapped_pair,
    group_commit_lands_every_append_that_does_not_conflict,
    a_failing_projection_rolls_back_its_own_append_only,
    reading_a_stream_returns_its_events_in_order_from_a_version,
    the_log_read_a_page_at_a_time_holds_every_event_as_written,
);

fn event(n: i64) -> NewEvent {
    NewEvent {
        event_type: "Counted".into(),
        schema_version: 1,
        payload: json!({ "n": n, "note": "a \"quoted\", comma'd\nline" }),
    }
}

fn request(
    stream_id: Uuid,
    expected: impl Into<ExpectedVersion>,
    events: Vec<NewEvent>,
) -> AppendRequest {
    AppendRequest {
        stream_id,
        expected: expected.into(),
        events,
        metadata: Metadata::new("tester", Utc::now()).with_request_id("req-1"),
    }
}

fn store(test_db: &TestDb) -> EventStore {
    EventStore::new(test_db.db.clone(), vec![])
}

async fn versions(store: &EventStore, stream_id: Uuid) -> Vec<i64> {
    store
        .read_stream(stream_id, 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.version)
        .collect()
}

/// Counted straight from the table: on PostgreSQL `read_all` may hold back recent
/// events while any transaction in the cluster (another test's) is still open.
async fn count_events(db: &Db) -> i64 {
    on_backend!(db, pool => {
        sqlx::query_scalar("SELECT COUNT(*) FROM events").fetch_one(pool).await.unwrap()
    })
}

async fn two_writers_at_the_same_version_one_wins_and_the_other_conflicts(test_db: &TestDb) {
    // Two stores are two writers with their own transactions, as two app instances.
    let (first, second) = (store(test_db), store(test_db));
    for _ in 0..20 {
        let stream = Uuid::now_v7();
        first
            .append(request(stream, 0, vec![event(1)]))
            .await
            .unwrap();

        let (a, b) = tokio::join!(
            first.append(request(stream, 1, vec![event(2)])),
            second.append(request(stream, 1, vec![event(2), event(3)])),
        );

        let outcomes = [a, b];
        let wins = outcomes.iter().filter(|o| o.is_ok()).count();
        assert_eq!(wins, 1, "exactly one writer wins: {outcomes:?}");
        let conflict = outcomes.iter().find_map(|o| o.as_ref().err()).unwrap();
        assert!(
            matches!(conflict, AppendError::Conflict { stream_id, expected: ExpectedVersion::Exact(1), actual } if *stream_id == stream && *actual > 1),
            "the loser gets a conflict: {conflict:?}"
        );
        let stored = versions(&first, stream).await;
        let expected: Vec<i64> = (1..=stored.len() as i64).collect();
        assert_eq!(stored, expected, "no hole in the stream");
        let head = first.stream_head(stream).await.unwrap().unwrap();
        assert_eq!(head.version, *stored.last().unwrap());
    }
}

async fn concurrent_writers_never_make_a_reader_skip_or_repeat_an_event(test_db: &TestDb) {
    const WRITERS: usize = 8;
    const APPENDS: usize = 500;
    let stores = [store(test_db), store(test_db)];
    let committed = Arc::new(AtomicUsize::new(0));
    let progress = Arc::new(Notify::new());

    let mut writers = JoinSet::new();
    for w in 0..WRITERS {
        let store = stores[w % 2].clone();
        let (committed, progress) = (committed.clone(), progress.clone());
        writers.spawn(async move {
            let stream = Uuid::now_v7();
            let mut ids = Vec::with_capacity(APPENDS);
            for n in 0..APPENDS as i64 {
                let appended = store
                    .append(request(stream, n, vec![event(n)]))
                    .await
                    .unwrap();
                ids.push(appended.events()[0].event_id);
                committed.fetch_add(1, Ordering::SeqCst);
                progress.notify_waiters();
            }
            ids
        });
    }

    // PostgreSQL: transactions that take their positions early and commit late, after
    // hundreds of later positions have committed.
    let mut held = JoinSet::new();
    if test_db.is_postgres() {
        for h in 1..=3usize {
            let (store, db) = (stores[0].clone(), test_db.db.clone());
            let (committed, progress) = (committed.clone(), progress.clone());
            held.spawn(async move {
                let mut pooled = db.acquire().await.unwrap();
                let mut tx = pooled.as_conn().begin_write().await.unwrap();
                let appended = store
                    .append_within(tx.as_conn(), &request(Uuid::now_v7(), 0, vec![event(-1)]))
                    .await
                    .unwrap();
                loop {
                    let notified = progress.notified();
                    if committed.load(Ordering::SeqCst) >= h * 1000 {
                        break;
                    }
                    notified.await;
                }
                tx.commit().await.unwrap();
                appended.into_events()
            });
        }
    }
    let expected_total = WRITERS * APPENDS + held.len();

    let reader_store = stores[1].clone();
    let reader = tokio::spawn(async move {
        let mut seen: Vec<RecordedEvent> = Vec::with_capacity(expected_total);
        let mut after = GlobalPosition::START;
        while seen.len() < expected_total {
            let page = reader_store.read_all(after, 100).await.unwrap();
            match page.last() {
                Some(last) => after = last.global,
                None => tokio::task::yield_now().await,
            }
            seen.extend(page);
        }
        // Nothing more may turn up once everything was seen.
        assert!(reader_store.read_all(after, 100).await.unwrap().is_empty());
        seen
    });

    let mut written: HashSet<Uuid> = HashSet::new();
    while let Some(ids) = writers.join_next().await {
        written.extend(ids.unwrap());
    }
    let mut held_events = Vec::new();
    while let Some(events) = held.join_next().await {
        held_events.extend(events.unwrap());
    }
    written.extend(held_events.iter().map(|e| e.event_id));
    // A reader that skipped an event would wait for it for ever: fail instead.
    let seen = tokio::time::timeout(std::time::Duration::from_secs(60), reader)
        .await
        .expect("the reader saw every event within a minute of the last commit")
        .unwrap();

    let seen_ids: Vec<Uuid> = seen.iter().map(|e| e.event_id).collect();
    let unique: HashSet<Uuid> = seen_ids.iter().copied().collect();
    assert_eq!(unique.len(), seen_ids.len(), "no event was read twice");
    assert_eq!(unique, written, "every event was read");
    for pair in seen.windows(2) {
        assert!(
            pair[0].global < pair[1].global,
            "read order only moves forward: {:?} then {:?}",
            pair[0].global,
            pair[1].global
        );
    }
    // The held transactions really did commit out of position order: each took its
    // position before at least a thousand events that committed ahead of it.
    for held_event in &held_events {
        let later = seen
            .iter()
            .filter(|e| e.position() > held_event.position())
            .count();
        assert!(later >= 1000, "only {later} positions after the held event");
    }
}

async fn a_repeated_idempotency_key_appends_nothing_and_returns_the_first_result(test_db: &TestDb) {
    let store = store(test_db);
    let stream = Uuid::now_v7();
    let mut first_request = request(stream, 0, vec![event(1), event(2)]);
    first_request.metadata = first_request.metadata.with_idempotency_key("form-7");

    let first = store.append(first_request.clone()).await.unwrap();
    // The retry was decided on the state after the first append, as a browser resubmit is.
    let mut retry = request(stream, 2, vec![event(3)]);
    retry.metadata = retry.metadata.with_idempotency_key("form-7");
    let again = store.append(retry).await.unwrap();

    let Appended::Written(first_events) = first else {
        panic!("first append writes")
    };
    assert_eq!(again, Appended::AlreadyWritten(first_events.clone()));
    assert_eq!(versions(&store, stream).await, vec![1, 2]);
    assert_eq!(store.read_stream(stream, 0).await.unwrap(), first_events);

    // The same key on another stream is another command.
    let other = Uuid::now_v7();
    let mut elsewhere = request(other, 0, vec![event(1)]);
    elsewhere.metadata = elsewhere.metadata.with_idempotency_key("form-7");
    assert!(matches!(
        store.append(elsewhere).await.unwrap(),
        Appended::Written(_)
    ));
}

async fn concurrent_retries_of_one_idempotency_key_append_once(test_db: &TestDb) {
    let stores = [store(test_db), store(test_db)];
    let stream = Uuid::now_v7();
    stores[0]
        .append(request(stream, 0, vec![event(0)]))
        .await
        .unwrap();
    let mut tasks = JoinSet::new();
    for i in 0..20 {
        let store = stores[i % 2].clone();
        tasks.spawn(async move {
            let mut req = request(stream, 1, vec![event(1)]);
            req.metadata = req.metadata.with_idempotency_key("double-click");
            store.append(req).await
        });
    }
    let mut written = 0;
    let mut results = Vec::new();
    while let Some(outcome) = tasks.join_next().await {
        let outcome = outcome
            .unwrap()
            .expect("every retry gets the first outcome");
        written += matches!(outcome, Appended::Written(_)) as usize;
        results.push(outcome.into_events());
    }
    assert_eq!(written, 1);
    assert!(
        results.windows(2).all(|w| w[0] == w[1]),
        "all see the same events"
    );
    assert_eq!(versions(&stores[0], stream).await, vec![1, 2]);
}

/// A store with one stream of one event, and that stream.
async fn store_with_one_event(test_db: &TestDb) -> (EventStore, Uuid) {
    let store = store(test_db);
    let stream = Uuid::now_v7();
    store
        .append(request(stream, 0, vec![event(1)]))
        .await
        .unwrap();
    (store, stream)
}

async fn a_rejected_append_writes_nothing(test_db: &TestDb) {
    let (store, stream) = store_with_one_event(test_db).await;

    let stale = store
        .append(request(stream, 0, vec![event(2), event(3)]))
        .await;
    let ahead = store.append(request(stream, 5, vec![event(2)])).await;
    let empty = store.append(request(stream, 1, vec![])).await;

    assert!(
        matches!(stale, Err(AppendError::Conflict { actual: 1, .. })),
        "{stale:?}"
    );
    assert!(
        matches!(ahead, Err(AppendError::Conflict { actual: 1, .. })),
        "{ahead:?}"
    );
    assert!(matches!(empty, Err(AppendError::NoEvents)), "{empty:?}");
    assert_eq!(versions(&store, stream).await, vec![1]);
    assert_eq!(count_events(&test_db.db).await, 1);
}

/// Once the database is closed, an append fails, on SQLite too, where the writer
/// keeps a connection of its own outside the pool.
async fn an_append_after_the_database_closed_fails(test_db: &TestDb) {
    let (store, stream) = store_with_one_event(test_db).await;
    test_db.db.close().await;

    let after = store.append(request(stream, 1, vec![event(2)])).await;
    assert!(matches!(after, Err(AppendError::Database(_))), "{after:?}");
}

/// Three streams of five events; returns the store and the stream to tamper with.
async fn store_with_history(test_db: &TestDb) -> (EventStore, Uuid) {
    let store = store(test_db);
    let mut streams = Vec::new();
    for _ in 0..3 {
        let stream = Uuid::now_v7();
        for n in 0..5 {
            store
                .append(request(stream, n, vec![event(n)]))
                .await
                .unwrap();
        }
        streams.push(stream);
    }
    (store, streams[1])
}

async fn tamper(db: &Db, sql: &str, stream: Uuid) {
    on_backend!(db, pool => {
        sqlx::query(sql).bind(stream).execute(pool).await.unwrap();
    });
}

fn problems_of(report: &quoteline::eventstore::VerifyReport) -> Vec<(Uuid, i64, Problem)> {
    report
        .mismatches
        .iter()
        .map(|m| (m.stream_id, m.version, m.problem.clone()))
        .collect()
}

async fn chain_verification_passes_an_untouched_store(test_db: &TestDb) {
    let (store, _) = store_with_history(test_db).await;
    let report = store.verify().await.unwrap();
    assert!(report.is_intact(), "{report:?}");
    assert_eq!((report.streams_checked, report.events_checked), (3, 15));
}

async fn chain_verification_finds_a_modified_payload(test_db: &TestDb) {
    let (store, stream) = store_with_history(test_db).await;
    let sql = match test_db.is_postgres() {
        true => {
            r#"UPDATE events SET payload = '{"n": 99}'::jsonb WHERE stream_id = $1 AND version = 3"#
        }
        false => r#"UPDATE events SET payload = '{"n": 99}' WHERE stream_id = $1 AND version = 3"#,
    };
    tamper(&test_db.db, sql, stream).await;

    let report = store.verify().await.unwrap();
    assert_eq!(
        problems_of(&report),
        vec![(stream, 3, Problem::ContentChanged)]
    );
}

async fn chain_verification_finds_a_deleted_event(test_db: &TestDb) {
    let (store, stream) = store_with_history(test_db).await;
    tamper(
        &test_db.db,
        "DELETE FROM events WHERE stream_id = $1 AND version = 2",
        stream,
    )
    .await;

    let report = store.verify().await.unwrap();
    assert_eq!(
        problems_of(&report),
        vec![(stream, 2, Problem::Missing { from: 2, to: 2 })]
    );
}

async fn chain_verification_finds_a_deleted_last_event(test_db: &TestDb) {
    let (store, stream) = store_with_history(test_db).await;
    tamper(
        &test_db.db,
        "DELETE FROM events WHERE stream_id = $1 AND version = 5",
        stream,
    )
    .await;

    let report = store.verify().await.unwrap();
    assert_eq!(
        problems_of(&report),
        vec![(stream, 5, Problem::Missing { from: 5, to: 5 })]
    );
}

async fn chain_verification_finds_a_swapped_pair(test_db: &TestDb) {
    let (store, stream) = store_with_history(test_db).await;
    for sql in [
        "UPDATE events SET version = 1000 WHERE stream_id = $1 AND version = 2",
        "UPDATE events SET version = 2 WHERE stream_id = $1 AND version = 3",
        "UPDATE events SET version = 3 WHERE stream_id = $1 AND version = 1000",
    ] {
        tamper(&test_db.db, sql, stream).await;
    }

    let report = store.verify().await.unwrap();
    let found = problems_of(&report);
    assert!(found.iter().all(|(s, _, _)| *s == stream), "{found:?}");
    assert!(
        found.contains(&(stream, 2, Problem::BrokenLink)),
        "{found:?}"
    );
    assert!(
        found.contains(&(stream, 2, Problem::ContentChanged)),
        "{found:?}"
    );
    assert!(
        found.contains(&(stream, 3, Problem::ContentChanged)),
        "{found:?}"
    );
}

async fn group_commit_lands_every_append_that_does_not_conflict(test_db: &TestDb) {
    let store = store(test_db);
    let contested = Uuid::now_v7();
    store
        .append(request(contested, 0, vec![event(0)]))
        .await
        .unwrap();

    let mut tasks = JoinSet::new();
    for i in 0..64 {
        let store = store.clone();
        tasks.spawn(async move {
            // One in four appends races for the same version of one stream.
            let req = match i % 4 {
                0 => request(contested, 1, vec![event(i)]),
                _ => request(Uuid::now_v7(), 0, vec![event(i), event(i + 1)]),
            };
            (i % 4 == 0, store.append(req).await)
        });
    }
    let (mut landed, mut conflicts, mut contested_wins) = (0, 0, 0);
    let mut written = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined.unwrap() {
            (is_contested, Ok(Appended::Written(events))) => {
                landed += 1;
                contested_wins += is_contested as usize;
                assert_eq!(events.len(), if is_contested { 1 } else { 2 });
                written.extend(events);
            }
            (true, Err(AppendError::Conflict { actual: 2, .. })) => conflicts += 1,
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!((landed, conflicts, contested_wins), (49, 15, 1));
    assert_eq!(count_events(&test_db.db).await, 1 + 48 * 2 + 1);
    assert!(store.verify().await.unwrap().is_intact());

    // Each caller heard of its events as they were stored, positions included
    // (appends answered from one batch's statements).
    for event in &written {
        let stored = store.read_stream(event.stream_id, 0).await.unwrap();
        assert!(
            stored.contains(event),
            "{event:?} is not stored as {stored:?}"
        );
    }
}

/// A projection that refuses events whose payload says so, and counts the rest in a
/// table of its own, inside the append's transaction.
struct CountingProjection;

impl Projector for CountingProjection {
    fn projections(&self) -> Vec<String> {
        vec!["counting".into()]
    }

    fn apply<'a>(
        &'a self,
        mut conn: Conn<'a>,
        events: &'a [RecordedEvent],
    ) -> BoxFuture<'a, Result<(), ProjectionError>> {
        Box::pin(async move {
            for event in events {
                if event.payload["refuse"] == json!(true) {
                    let refused = sqlx::Error::Protocol("refused by the projection".into());
                    return Err(ProjectionError::Database(refused));
                }
                on_backend!(conn.reborrow(), c => {
                    sqlx::query("INSERT INTO projected (event_id) VALUES ($1)").bind(event.event_id).execute(&mut *c).await?;
                });
            }
            Ok(())
        })
    }
}

async fn a_failing_projection_rolls_back_its_own_append_only(test_db: &TestDb) {
    on_backend!(&test_db.db, pool => {
        sqlx::query("CREATE TABLE projected (event_id UUID PRIMARY KEY)").execute(pool).await.unwrap();
    });
    let store = EventStore::new(test_db.db.clone(), vec![Arc::new(CountingProjection)]);
    let refused = NewEvent {
        payload: json!({"refuse": true}),
        ..event(0)
    };

    let mut tasks = JoinSet::new();
    for i in 0..10 {
        let store = store.clone();
        let events = if i == 5 {
            vec![event(i), refused.clone()]
        } else {
            vec![event(i)]
        };
        tasks.spawn(async move { store.append(request(Uuid::now_v7(), 0, events)).await });
    }
    let mut outcomes = Vec::new();
    while let Some(outcome) = tasks.join_next().await {
        outcomes.push(outcome.unwrap());
    }

    assert_eq!(
        outcomes.iter().filter(|o| o.is_ok()).count(),
        9,
        "{outcomes:?}"
    );
    assert_eq!(count_events(&test_db.db).await, 9);
    let projected: i64 = on_backend!(&test_db.db, pool => {
        sqlx::query_scalar("SELECT COUNT(*) FROM projected").fetch_one(pool).await.unwrap()
    });
    assert_eq!(
        projected, 9,
        "the projection commits and rolls back with the events"
    );
}

async fn reading_a_stream_returns_its_events_in_order_from_a_version(test_db: &TestDb) {
    let store = store(test_db);
    let stream = Uuid::now_v7();
    let written = store
        .append(request(stream, 0, (1..=4).map(event).collect()))
        .await
        .unwrap()
        .into_events();

    let from_two = store.read_stream(stream, 2).await.unwrap();

    assert_eq!(from_two, written[2..]);
    assert_eq!(from_two[0].prev_hash, written[1].hash);
    assert!(
        store
            .read_stream(Uuid::now_v7(), 0)
            .await
            .unwrap()
            .is_empty()
    );
}

/// The log's pages (on SQLite one JSON row each) hold each event exactly as the append
/// returned it and as a stream's read (rows) gives it back: payloads of every JSON
/// shape, names in any script, with and without a request id.
async fn the_log_read_a_page_at_a_time_holds_every_event_as_written(test_db: &TestDb) {
    let store = store(test_db);
    let payloads = [
        json!({ "name": "Zoë Ñandú 李 \u{1F600}", "note": "tab\tquote\" back\\slash" }),
        json!({ "n": -9_007_199_254_740_993_i64, "x": 0.1, "big": 1e300, "none": null }),
        json!({ "nested": { "list": [1, "two", [3], { "four": false }] }, "empty": {} }),
        json!([]),
    ];
    let mut written = Vec::new();
    for (index, payload) in payloads.into_iter().enumerate() {
        let mut request = request(
            Uuid::now_v7(),
            0,
            vec![
                NewEvent {
                    event_type: "Shaped".into(),
                    schema_version: 2,
                    payload,
                },
                event(index as i64),
            ],
        );
        if index % 2 == 0 {
            request.metadata.request_id = None;
        }
        written.extend(store.append(request).await.unwrap().into_events());
    }

    // On PostgreSQL the gap-safe read holds events back while any transaction of the
    // cluster (another test's) that began before they committed is open.
    let mut paged = Vec::new();
    let mut after = GlobalPosition::START;
    while paged.len() < written.len() {
        let page = store.read_all(after, 3).await.unwrap();
        match page.last() {
            Some(last) => after = last.global,
            None => tokio::task::yield_now().await,
        }
        paged.extend(page);
    }
    assert!(store.read_all(after, 3).await.unwrap().is_empty());
    let mut by_stream = Vec::new();
    // Each append above wrote two events to a stream of its own.
    for first in written.iter().step_by(2) {
        by_stream.extend(store.read_stream(first.stream_id, 0).await.unwrap());
    }

    assert_eq!(paged, written);
    assert_eq!(by_stream, written);
}

/// On PostgreSQL the writer keeps a connection of its own between batches. When the
/// server cuts it (a restart, an administrator), the next append still lands: the
/// batch fails as it begins, before anything is written, and is written again on a
/// new connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_an_append_lands_after_the_server_cut_the_writers_connection() {
    const TEST: &str = "on_postgres_an_append_lands_after_the_server_cut_the_writers_connection";
    let Some(test_db) = TestDb::postgres(TEST).await else {
        return;
    };
    let name = format!("w{}", Uuid::now_v7().simple());
    let options = PgConnectOptions::from_str(&test_db.url())
        .unwrap()
        .application_name(&name);
    let db = Db::connect_postgres(options).await.unwrap();
    let store = EventStore::new(db.clone(), vec![]);
    let stream = Uuid::now_v7();
    store
        .append(request(stream, 0, vec![event(1)]))
        .await
        .unwrap();

    let Db::Postgres(pool) = &test_db.db else {
        unreachable!("a PostgreSQL test database")
    };
    let cut: Vec<String> = sqlx::query_scalar(
        "WITH w AS MATERIALIZED (SELECT pid, query FROM pg_stat_activity \
                                 WHERE application_name = $1) \
         SELECT query FROM w WHERE pg_terminate_backend(pid)",
    )
    .bind(&name)
    .fetch_all(pool)
    .await
    .unwrap();
    assert!(
        cut.iter().any(|query| query == "COMMIT"),
        "the writer's connection, whose last statement was its batch's COMMIT, is among those cut: {cut:?}"
    );

    let appended = store
        .append(request(stream, 1, vec![event(2)]))
        .await
        .unwrap();
    assert_eq!(appended.last_version(), Some(2));
    assert_eq!(versions(&store, stream).await, vec![1, 2]);
    db.close().await;
    test_db.cleanup().await;
}
