//! The NATS publisher against the real NATS server (127.0.0.1:4222, or
//! `QUOTELINE_TEST_NATS`) and both backends: every event arrives on its quote's
//! subject once and in stream order, also when the publisher stopped between
//! publishing and its checkpoint; with NATS down writes go on, and everything
//! arrives once it is back; one process publishes at a time.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, Context};
use quoteline::AppState;
use quoteline::eventstore::checkpoints::{checkpoint, last_position};
use quoteline::eventstore::{GlobalPosition, RecordedEvent};
use quoteline::lock::{Lock, LockError, LockKind};
use quoteline::publisher::{self, PublisherSettings};
use uuid::Uuid;

use crate::projections::random_history;
use std::os::unix::process::ExitStatusExt;
use std::sync::Arc;

use tokio::task::JoinSet;

use crate::agent_pages::start_quote;
use crate::crash::{
    KillSwitch, Server, add_agent, check_the_store, event_log, post_sections, sign_in,
};
use crate::support::{TestDb, run_command_ok, run_command_refused, whole_log};

storage_tests!(
    every_event_arrives_once_in_stream_order_also_after_a_stop_before_the_checkpoint,
    with_nats_down_writes_go_on_and_everything_arrives_once_it_is_back,
    a_replay_goes_to_subjects_of_its_own_in_commit_order_archived_events_included,
    three_instances_write_together_one_publishes_and_another_takes_over,
);

/// The NATS server the tests use, or `None` (with a note) when it cannot be reached
/// and `QUOTELINE_REQUIRE_NATS` is not set.
async fn nats_url(test: &str) -> Option<String> {
    let url =
        std::env::var("QUOTELINE_TEST_NATS").unwrap_or_else(|_| "nats://127.0.0.1:4222".into());
    match async_nats::connect(url.as_str()).await {
        Ok(client) => {
            drop(client);
            Some(url)
        }
        Err(error) if std::env::var("QUOTELINE_REQUIRE_NATS").is_err() => {
            eprintln!("SKIPPED {test}: NATS at {url} cannot be reached ({error})");
            None
        }
        Err(error) => panic!("NATS at {url} cannot be reached: {error}"),
    }
}

/// Settings of a stream and subjects of this test's own.
fn own_settings(url: &str) -> PublisherSettings {
    let name = Uuid::now_v7().simple().to_string();
    let mut settings = PublisherSettings::new(url);
    settings.stream = format!("QLTEST_{name}");
    settings.prefix = format!("qltest.{name}");
    settings.page = 7;
    settings
}

/// Every message in the stream: (subject, event id, stream version), in stream order.
async fn received(context: &Context, settings: &PublisherSettings) -> Vec<(String, String, i64)> {
    let mut stream = context.get_stream(&settings.stream).await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    let mut found = Vec::new();
    for sequence in 1..=last {
        let message = stream.get_raw_message(sequence).await.unwrap();
        let header = |name: &str| message.headers.get(name).unwrap().as_str().to_owned();
        found.push((
            message.subject.to_string(),
            header("Nats-Msg-Id"),
            header("Quoteline-Stream-Version").parse().unwrap(),
        ));
    }
    found
}

/// What must have arrived: each event once, each quote's in stream order.
fn assert_delivered(
    log: &[RecordedEvent],
    settings: &PublisherSettings,
    got: &[(String, String, i64)],
) {
    assert_eq!(got.len(), log.len(), "each event once, no repeat");
    let mut expected: Vec<&str> = Vec::new();
    let ids: Vec<String> = log.iter().map(|e| e.event_id.to_string()).collect();
    expected.extend(ids.iter().map(String::as_str));
    let mut arrived: Vec<&str> = got.iter().map(|(_, id, _)| id.as_str()).collect();
    expected.sort();
    arrived.sort();
    assert_eq!(arrived, expected, "every event");
    let mut versions: HashMap<&str, Vec<i64>> = HashMap::new();
    for (subject, _, version) in got {
        versions.entry(subject).or_default().push(*version);
    }
    for event in log {
        let subject = format!("{}.{}", settings.prefix, event.stream_id);
        let seen = &versions[subject.as_str()];
        assert_eq!(
            *seen,
            (1..=seen.len() as i64).collect::<Vec<_>>(),
            "{subject} in stream order"
        );
    }
}

/// Waits until the publisher's checkpoint reaches the end of the log (it runs in a
/// task of its own; there is nothing to await but its progress).
async fn caught_up(app: &AppState, settings: &PublisherSettings) {
    let end = last_position(&app.db).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let mut pooled = app.db.acquire().await.unwrap();
        let at = checkpoint(pooled.as_conn(), &settings.checkpoint_name())
            .await
            .unwrap();
        if at == end {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the publisher is at {at:?}, the log ends at {end:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn every_event_arrives_once_in_stream_order_also_after_a_stop_before_the_checkpoint(
    test_db: &TestDb,
) {
    let Some(url) = nats_url("publisher").await else {
        return;
    };
    let app = AppState::open(test_db.db.clone()).await.unwrap();
    random_history(&app, 61, 8, 5).await;
    let settings = own_settings(&url);
    let context = publisher::connect(&settings).await.unwrap();

    // A publisher that stopped after publishing its first two pages and before their
    // checkpoints: they go out again.
    let first = app.store.read_all(GlobalPosition::START, 14).await.unwrap();
    publisher::publish(&context, &settings.prefix, &first)
        .await
        .unwrap();
    while publisher::publish_page(&app.db, &context, &settings)
        .await
        .unwrap()
        > 0
    {}
    assert_delivered(
        &whole_log(&app.store, 500).await,
        &settings,
        &received(&context, &settings).await,
    );

    // Running, while quotes are written.
    let running = tokio::spawn(publisher::run(app.db.clone(), settings.clone()));
    random_history(&app, 62, 6, 4).await;
    caught_up(&app, &settings).await;
    running.abort();
    let log = whole_log(&app.store, 500).await;
    assert_delivered(&log, &settings, &received(&context, &settings).await);

    // The message: the event as recorded, with its headers.
    let stream = context.get_stream(&settings.stream).await.unwrap();
    let message = stream.get_raw_message(1).await.unwrap();
    let event: RecordedEvent = serde_json::from_slice(&message.payload).unwrap();
    assert_eq!(event, log[0]);
    assert_eq!(
        message
            .headers
            .get("Quoteline-Event-Type")
            .unwrap()
            .as_str(),
        log[0].event_type
    );
    assert_eq!(
        message.headers.get("Quoteline-Position").unwrap().as_str(),
        log[0].position().to_string()
    );
    context.delete_stream(&settings.stream).await.unwrap();
}

/// A NATS server of the test's own, on a free port, that it can stop and start.
struct OwnNats {
    port: u16,
    store: tempfile::TempDir,
    process: Option<std::process::Child>,
}

impl OwnNats {
    fn start() -> Option<OwnNats> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut nats = OwnNats {
            port,
            store: tempfile::tempdir().unwrap(),
            process: None,
        };
        nats.resume().then_some(nats)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Starts the server (false when there is no `nats-server` to start).
    fn resume(&mut self) -> bool {
        let started = std::process::Command::new("nats-server")
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store.path())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        match started {
            Ok(child) => {
                self.process = Some(child);
                true
            }
            Err(error) => {
                eprintln!("SKIPPED: nats-server cannot be started ({error})");
                false
            }
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.process.take() {
            child.kill().unwrap();
            child.wait().unwrap();
        }
    }
}

impl Drop for OwnNats {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn with_nats_down_writes_go_on_and_everything_arrives_once_it_is_back(test_db: &TestDb) {
    if nats_url("publisher").await.is_none() {
        return;
    }
    let Some(mut nats) = OwnNats::start() else {
        return;
    };
    let app = AppState::open(test_db.db.clone()).await.unwrap();
    let settings = own_settings(&nats.url());
    let running = tokio::spawn(publisher::run(app.db.clone(), settings.clone()));
    random_history(&app, 71, 5, 3).await;
    caught_up(&app, &settings).await;

    // One publisher at a time: while this one runs, the lock is refused.
    assert!(matches!(
        Lock::take(&app.db, LockKind::Publisher, "test").await,
        Err(LockError::Busy { .. })
    ));

    // Down: the writes succeed, the publisher falls behind.
    nats.stop();
    random_history(&app, 72, 6, 4).await;
    let mut pooled = app.db.acquire().await.unwrap();
    let behind = checkpoint(pooled.as_conn(), &settings.checkpoint_name())
        .await
        .unwrap();
    drop(pooled);
    assert!(
        behind < last_position(&app.db).await.unwrap(),
        "the lag grew"
    );

    // Back: everything arrives, once, in order.
    assert!(nats.resume());
    caught_up(&app, &settings).await;
    running.abort();
    let context = jetstream::new(async_nats::connect(nats.url()).await.unwrap());
    assert_delivered(
        &whole_log(&app.store, 500).await,
        &settings,
        &received(&context, &settings).await,
    );
}

async fn a_replay_goes_to_subjects_of_its_own_in_commit_order_archived_events_included(
    test_db: &TestDb,
) {
    let Some(url) = nats_url("publisher").await else {
        return;
    };
    let quiet = ["--no-serve", "--quiet"];
    run_command_ok(
        test_db,
        &[&["demo", "--events", "10000", "--seed", "5"], &quiet[..]].concat(),
    )
    .await;
    let archive = tempfile::tempdir().unwrap();
    let archived = run_command_ok(
        test_db,
        &[
            "archive",
            "--older-than",
            "0",
            "--to",
            archive.path().to_str().unwrap(),
            "--quiet",
        ],
    )
    .await;
    assert!(!archived.starts_with("Archived 0 events"), "{archived}");
    let app = AppState::open(test_db.db.clone()).await.unwrap();
    let log = whole_log(&app.store, 500).await;
    assert!(log.len() >= 10_000);

    // The live subjects, watched by a stream of their own: nothing may arrive there.
    let mut live = own_settings(&url);
    let prefix = format!("{}.replay", live.prefix);
    live.prefix = format!("{}.events", live.prefix);
    let context = publisher::connect(&live).await.unwrap();
    let stdout = run_command_ok(
        test_db,
        &[
            "replay",
            "--to",
            &prefix,
            "--nats-url",
            &url,
            "--nats-subject",
            &live.prefix,
            "--quiet",
        ],
    )
    .await;
    assert!(
        stdout.starts_with(&format!("Republished {} events to {prefix}", log.len())),
        "{stdout}"
    );
    let replay_stream = prefix.replace('.', "_").to_uppercase();
    let mut stream = context.get_stream(&replay_stream).await.unwrap();
    let last = stream.info().await.unwrap().state.last_sequence;
    assert_eq!(last, log.len() as u64);
    for (sequence, event) in (1..=last).zip(&log) {
        let message = stream.get_raw_message(sequence).await.unwrap();
        assert_eq!(
            message.subject.as_str(),
            format!("{prefix}.{}", event.stream_id),
            "in commit order"
        );
        assert_eq!(
            message.headers.get("Quoteline-Position").unwrap().as_str(),
            event.position().to_string()
        );
    }
    let mut live_stream = context.get_stream(&live.stream).await.unwrap();
    assert_eq!(
        live_stream.info().await.unwrap().state.messages,
        0,
        "nothing on the live subjects"
    );

    // Onto the live subjects, or under them: refused.
    let onto_live = format!("{}.again", live.prefix);
    let refused = run_command_refused(
        test_db,
        &[
            "replay",
            "--to",
            &onto_live,
            "--nats-url",
            &url,
            "--nats-subject",
            &live.prefix,
            "--quiet",
        ],
    )
    .await;
    assert!(refused.contains("subjects of its own"), "{refused}");
    context.delete_stream(&replay_stream).await.unwrap();
    context.delete_stream(&live.stream).await.unwrap();
}

/// Whether the server at `address` says, on /metrics, that it is the publisher.
async fn publishes(address: &str) -> Option<bool> {
    let text = reqwest::get(format!("{address}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    Some(
        text.lines()
            .any(|line| line == "quoteline_publisher_leader 1"),
    )
}

/// The one of these servers that publishes, once exactly one does.
async fn the_publisher(servers: &[&Server]) -> usize {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut leaders = Vec::new();
        for (n, server) in servers.iter().enumerate() {
            if publishes(&server.address).await == Some(true) {
                leaders.push(n);
            }
        }
        if let [one] = leaders[..] {
            return one;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "publishers: {leaders:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn three_instances_write_together_one_publishes_and_another_takes_over(test_db: &TestDb) {
    let Some(url) = nats_url("publisher").await else {
        return;
    };
    let settings = own_settings(&url);
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("servers.log");
    let state = AppState::open(test_db.db.clone()).await.unwrap();
    let password = add_agent(test_db, "asha").await;
    let env = [
        ("NATS_URL", url.as_str()),
        ("QUOTELINE_NATS_STREAM", settings.stream.as_str()),
        ("QUOTELINE_NATS_SUBJECT", settings.prefix.as_str()),
    ];
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(Server::start_with(test_db, &log, &env).await);
    }
    let leader = the_publisher(&servers.iter().collect::<Vec<_>>()).await;

    let first = servers[0].browser(&state);
    sign_in(&first, "asha", &password).await;
    let mut quotes = Vec::new();
    for n in 0..4 {
        quotes.push(start_quote(&first, &format!("Applicant {n}")).await);
    }
    // Writes through all three at once; the publisher is killed on the way. Every
    // browser signs in first: a sign-in still going when the kill comes would fail.
    let kill = Arc::new(KillSwitch::new(servers[leader].pid(), 25));
    let mut browsers = Vec::new();
    for server in &servers {
        let browser = server.browser(&state);
        sign_in(&browser, "asha", &password).await;
        browsers.push(browser);
    }
    let mut clients = JoinSet::new();
    for (n, browser) in browsers.into_iter().enumerate() {
        let label = format!("instance{n}");
        clients.spawn(post_sections(
            browser,
            quotes.clone(),
            n,
            label,
            kill.clone(),
            30,
        ));
    }
    let mut posts = Vec::new();
    while let Some(client) = clients.join_next().await {
        posts.extend(client.unwrap());
    }
    assert!(kill.fired());
    let mut killed = servers.remove(leader);
    assert_eq!(
        killed.process.wait().await.unwrap().signal(),
        Some(libc::SIGKILL)
    );

    // Another takes over and publishes the rest: each event once, in stream order.
    the_publisher(&servers.iter().collect::<Vec<_>>()).await;
    caught_up(&state, &settings).await;
    let context = publisher::connect(&settings).await.unwrap();
    let log_of_events = event_log(&state).await;
    assert_delivered(
        &log_of_events,
        &settings,
        &received(&context, &settings).await,
    );
    // Every acknowledged write is there, and every page's projection a fold.
    check_the_store(&state, test_db, &posts).await;
    for mut server in servers {
        server.process.kill().await.unwrap();
    }
    context.delete_stream(&settings.stream).await.unwrap();
}
