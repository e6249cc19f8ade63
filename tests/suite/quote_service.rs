//! The quote service over the real store: load, decide, append with the expected
//! version, and the quote_summary row kept in the same transaction.

use chrono::Utc;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use quoteline::AppState;
use quoteline::db::{Backend, Db};
use quoteline::eventstore::Appended;
use quoteline::eventstore::heads::{BEAT, POSTGRES_TRUST};
use quoteline::kernel::Envelope;
use quoteline::kernel::{Actor, Role};
use quoteline::quoting::domain::{
    Action, Command, ContactDetails, DomainError, FamilyDetails, GeographicDetails, NonEmptyText,
    PersonName, QuoteEvent, Status, decide,
};
use quoteline::quoting::{CommandError, summary};
use quoteline::state::{Caches, Settings};
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};
use std::str::FromStr;
use std::time::Instant;
use uuid::Uuid;

use crate::support::{DEFAULT_POSTGRES, StallingProxy, TestDb, fresh_fold};

storage_tests!(
    a_quote_taken_from_start_to_submitted_records_its_events_and_summary,
    a_command_decided_on_an_old_version_is_stale_and_writes_nothing,
    a_refused_command_writes_nothing,
    a_resubmitted_form_returns_its_first_outcome,
    a_command_through_one_process_is_seen_by_a_load_through_the_other,
    a_command_decided_on_a_stale_cached_quote_is_stale_and_writes_nothing,
    a_form_newer_than_the_cached_quote_is_decided_on_the_stored_state,
    the_quote_cache_holds_at_most_its_weight,
    any_interleaving_through_two_processes_writes_what_a_fresh_fold_decides,
    a_service_following_the_heads_answers_from_memory_until_told_another_process_moved_the_quote,
    a_quote_a_command_here_moved_is_answered_from_memory_once_the_feed_has_told_of_the_append,
);

fn agent() -> Actor {
    Actor::new("asha", [Role::Agent])
}

fn envelope(key: Option<&str>) -> Envelope {
    Envelope {
        at: Utc::now(),
        request_id: Some("test".into()),
        idempotency_key: key.map(str::to_owned),
    }
}

async fn started(app: &AppState) -> Uuid {
    let id = Uuid::now_v7();
    app.quotes
        .start(
            id,
            agent(),
            PersonName::parse("Meera Iyer").unwrap(),
            &envelope(None),
        )
        .await
        .unwrap();
    id
}

fn geographic() -> Action {
    Action::ProvideGeographic(
        GeographicDetails::parse("IN", "Maharashtra", "Pune", "411001").unwrap(),
    )
}

async fn a_quote_taken_from_start_to_submitted_records_its_events_and_summary(test_db: &TestDb) {
    let app = AppState::open(test_db.db.clone()).await.unwrap();
    let id = started(&app).await;
    let steps = [
        geographic(),
        Action::ProvideContact(
            ContactDetails::parse("meera@example.com", "+91 98765 43210").unwrap(),
        ),
        Action::ProvideFamily(FamilyDetails::parse("2", "Ravi", &["Asha".into()]).unwrap()),
        Action::Finalize,
    ];
    let mut version = 1;
    for action in steps {
        let appended = app
            .quotes
            .execute(id, version, Command::new(agent(), action), &envelope(None))
            .await
            .unwrap();
        version = appended.last_version().unwrap();
    }

    let types: Vec<String> = app
        .store
        .read_stream(id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        types,
        [
            "QuoteStarted",
            "GeographicDetailsProvided",
            "QuoteSaved",
            "ContactDetailsProvided",
            "FamilyDetailsProvided",
            "QuoteFinalized"
        ]
    );
    let row = summary::find(&test_db.db, id).await.unwrap().unwrap();
    assert_eq!(row.status(), Status::Finalized);
    assert_eq!(
        (row.version, row.applicant_name.as_str(), row.agent.as_str()),
        (6, "Meera Iyer", "asha")
    );
    assert!(row.sections_complete());
    assert_eq!(
        (
            row.country.as_deref(),
            row.region.as_deref(),
            row.dependents
        ),
        (Some("IN"), Some("Maharashtra"), Some(2))
    );
    assert!(row.submitted_at.is_some());
    assert!(row.reference.starts_with("Q-"));
    let loaded = app.quotes.load(id, None).await.unwrap().unwrap();
    assert_eq!(
        (loaded.status, loaded.version),
        (Some(Status::Finalized), 6)
    );
}

async fn a_command_decided_on_an_old_version_is_stale_and_writes_nothing(test_db: &TestDb) {
    let app = AppState::open(test_db.db.clone()).await.unwrap();
    let id = started(&app).await;
    app.quotes
        .execute(id, 1, Command::new(agent(), geographic()), &envelope(None))
        .await
        .unwrap();

    let stale = app
        .quotes
        .execute(id, 1, Command::new(agent(), geographic()), &envelope(None))
        .await;
    let future = app
        .quotes
        .execute(id, 9, Command::new(agent(), geographic()), &envelope(None))
        .await;

    assert!(
        matches!(
            stale,
            Err(CommandError::Stale {
                expected: 1,
                actual: 3
            })
        ),
        "{stale:?}"
    );
    assert!(
        matches!(future, Err(CommandError::Stale { expected: 9, .. })),
        "{future:?}"
    );
    assert_eq!(app.store.read_stream(id, 0).await.unwrap().len(), 3);
    assert_eq!(
        summary::find(&test_db.db, id)
            .await
            .unwrap()
            .unwrap()
            .version,
        3
    );
}

async fn a_refused_command_writes_nothing(test_db: &TestDb) {
    let app = AppState::open(test_db.db.clone()).await.unwrap();
    let id = started(&app).await;

    let early = app
        .quotes
        .execute(
            id,
            1,
            Command::new(agent(), Action::Finalize),
            &envelope(None),
        )
        .await;
    let stranger = Actor::new("bilal", [Role::Agent]);
    let not_theirs = app
        .quotes
        .execute(id, 1, Command::new(stranger, geographic()), &envelope(None))
        .await;

    assert!(
        matches!(
            early,
            Err(CommandError::Rejected(
                DomainError::SectionsIncomplete { .. }
            ))
        ),
        "{early:?}"
    );
    assert!(
        matches!(
            not_theirs,
            Err(CommandError::Rejected(DomainError::NotTheQuotesAgent))
        ),
        "{not_theirs:?}"
    );
    assert_eq!(app.store.read_stream(id, 0).await.unwrap().len(), 1);
    let row = summary::find(&test_db.db, id).await.unwrap().unwrap();
    assert_eq!((row.status(), row.version), (Status::Initiated, 1));
}

async fn a_resubmitted_form_returns_its_first_outcome(test_db: &TestDb) {
    let app = AppState::open(test_db.db.clone()).await.unwrap();
    let id = started(&app).await;
    let form = envelope(Some("form-1"));
    let submit = || {
        app.quotes
            .execute(id, 1, Command::new(agent(), geographic()), &form)
    };

    let first = submit().await.unwrap();
    let second = submit().await.unwrap();

    let Appended::Written(events) = first else {
        panic!("the first post writes")
    };
    assert_eq!(second, Appended::AlreadyWritten(events));
    assert_eq!(app.store.read_stream(id, 0).await.unwrap().len(), 3);
}

fn contact() -> Action {
    Action::ProvideContact(ContactDetails::parse("meera@example.com", "+91 98765 43210").unwrap())
}

/// The quote folded straight from the store, past every cache, up to `up_to`.
/// Two processes over one database: each its own store writer, quote service and
/// caches.
async fn two_processes(test_db: &TestDb) -> (AppState, AppState) {
    let a = AppState::open(test_db.db.clone()).await.unwrap();
    let b = AppState::open(test_db.db.clone()).await.unwrap();
    (a, b)
}

async fn a_command_through_one_process_is_seen_by_a_load_through_the_other(test_db: &TestDb) {
    let (a, b) = two_processes(test_db).await;
    let id = started(&a).await;
    assert_eq!(b.quotes.load(id, None).await.unwrap().unwrap().version, 1);

    a.quotes
        .execute(id, 1, Command::new(agent(), geographic()), &envelope(None))
        .await
        .unwrap();

    let latest = b.quotes.load(id, None).await.unwrap().unwrap();
    assert_eq!((latest.version, latest.status), (3, Some(Status::Saved)));
    assert!(latest.geographic.is_some());
    assert_eq!(latest, fresh_fold(&a.store, id, None).await);
    // Earlier versions still fold as they stood, with a later quote cached.
    let first = b.quotes.load(id, Some(1)).await.unwrap().unwrap();
    assert_eq!(first, fresh_fold(&a.store, id, Some(1)).await);
    assert_eq!(
        (first.version, first.status, first.geographic),
        (1, Some(Status::Initiated), None)
    );
    assert_eq!(b.quotes.load(id, Some(3)).await.unwrap().unwrap(), latest);
    assert_eq!(b.quotes.load(Uuid::now_v7(), None).await.unwrap(), None);
}

async fn a_command_decided_on_a_stale_cached_quote_is_stale_and_writes_nothing(test_db: &TestDb) {
    let (a, b) = two_processes(test_db).await;
    let id = started(&a).await;
    // B draws a page from version 1 and caches it; A moves the quote on.
    let drawn = b.quotes.load(id, None).await.unwrap().unwrap();
    a.quotes
        .execute(id, 1, Command::new(agent(), geographic()), &envelope(None))
        .await
        .unwrap();

    // B's form, decided on B's cached quote without a read.
    let stale = b
        .quotes
        .execute_on(
            id,
            &drawn,
            1,
            Command::new(agent(), contact()),
            &envelope(None),
        )
        .await;
    let stale_again = b
        .quotes
        .execute(id, 1, Command::new(agent(), contact()), &envelope(None))
        .await;

    for outcome in [stale.map(|(appended, _)| appended), stale_again] {
        assert!(
            matches!(
                outcome,
                Err(CommandError::Stale {
                    expected: 1,
                    actual: 3
                })
            ),
            "{outcome:?}"
        );
    }
    let types: Vec<String> = a
        .store
        .read_stream(id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(
        types,
        ["QuoteStarted", "GeographicDetailsProvided", "QuoteSaved"]
    );
    // The page drawn again from B is up to date, and its form goes through.
    let latest = b.quotes.load(id, None).await.unwrap().unwrap();
    assert_eq!(latest.version, 3);
    let (_, after) = b
        .quotes
        .execute_on(
            id,
            &latest,
            3,
            Command::new(agent(), contact()),
            &envelope(None),
        )
        .await
        .unwrap();
    assert_eq!(after.version, 4);
    assert_eq!(after, fresh_fold(&a.store, id, None).await);
    assert_eq!(a.quotes.load(id, None).await.unwrap().unwrap(), after);
}

async fn a_form_newer_than_the_cached_quote_is_decided_on_the_stored_state(test_db: &TestDb) {
    let (a, b) = two_processes(test_db).await;
    let id = started(&a).await;
    b.quotes.load(id, None).await.unwrap().unwrap();
    a.quotes
        .execute(id, 1, Command::new(agent(), geographic()), &envelope(None))
        .await
        .unwrap();

    // A page drawn by A at version 3, posted to B, whose cache is at version 1.
    let appended = b
        .quotes
        .execute(id, 3, Command::new(agent(), contact()), &envelope(None))
        .await
        .unwrap();

    assert_eq!(appended.last_version(), Some(4));
    let latest = fresh_fold(&a.store, id, None).await;
    assert!(latest.geographic.is_some() && latest.contact.is_some());
    assert_eq!(b.quotes.load(id, None).await.unwrap().unwrap(), latest);
    assert_eq!(a.quotes.load(id, None).await.unwrap().unwrap(), latest);
}

async fn the_quote_cache_holds_at_most_its_weight(test_db: &TestDb) {
    let max_bytes = 8 * 1024;
    let caches = Caches {
        quote_bytes: max_bytes,
        ..Caches::default()
    };
    let app = AppState::open_with(test_db.db.clone(), caches)
        .await
        .unwrap();
    let mut ids = Vec::new();
    for _ in 0..40 {
        let id = started(&app).await;
        app.quotes
            .execute(id, 1, Command::new(agent(), geographic()), &envelope(None))
            .await
            .unwrap();
        ids.push(id);
    }

    let (entries, bytes) = app.quotes.cached().await;
    assert!(bytes <= max_bytes, "{bytes} bytes cached");
    assert!((1..40).contains(&entries), "{entries} quotes cached");
    // Those no longer cached load from the store just the same.
    for id in ids {
        let quote = app.quotes.load(id, None).await.unwrap().unwrap();
        assert_eq!(quote, fresh_fold(&app.store, id, None).await);
    }
}

/// One step: which process takes the command, whether its page is drawn afresh
/// (else the form is the one it drew last, perhaps stale), and the command.
type Step = (bool, bool, usize);

fn commands() -> Vec<Command> {
    let uma = Actor::new("uma", [Role::Underwriter]);
    let note = || NonEmptyText::parse("Check the postcode").unwrap();
    vec![
        Command::new(agent(), geographic()),
        Command::new(agent(), contact()),
        Command::new(
            agent(),
            Action::ProvideFamily(FamilyDetails::parse("2", "Ravi", &["Asha".into()]).unwrap()),
        ),
        Command::new(agent(), Action::Finalize),
        Command::new(uma.clone(), Action::ReferBack { note: note() }),
        Command::new(uma.clone(), Action::Approve),
        Command::new(uma, Action::Reject { reason: note() }),
        Command::new(agent(), Action::Withdraw),
    ]
}

fn any_steps() -> impl Strategy<Value = Vec<Step>> {
    let step = (
        any::<bool>(),
        prop::bool::weighted(0.6),
        prop_oneof![
            3 => 0..4usize, // the agent's sections and submission, most often
            1 => 4..8usize,
        ],
    );
    prop::collection::vec(step, 1..24)
}

/// Commands through two processes, interleaved, some on pages drawn long ago: every
/// write is what `decide` makes of the quote at the form's version, every refusal
/// is what it or the stream's version says, and both processes end on the quote a
/// fresh fold gives.
async fn any_interleaving_through_two_processes_writes_what_a_fresh_fold_decides(test_db: &TestDb) {
    let (a, b) = two_processes(test_db).await;
    let commands = commands();
    let mut runner = TestRunner::deterministic();
    for case in 0..16 {
        let steps = any_steps().new_tree(&mut runner).unwrap().current();
        let id = started(if case % 2 == 0 { &a } else { &b }).await;
        let mut drawn = [1_i64, 1_i64];
        for (step, &(through_b, redraw, command)) in steps.iter().enumerate() {
            let process = if through_b { &b } else { &a };
            let here = usize::from(through_b);
            let command = commands[command].clone();
            let before = fresh_fold(&a.store, id, None).await;
            let outcome = if redraw {
                let latest = process.quotes.load(id, None).await.unwrap().unwrap();
                assert_eq!(
                    latest, before,
                    "case {case} step {step}: a load is never stale"
                );
                drawn[here] = latest.version as i64;
                process
                    .quotes
                    .execute_on(id, &latest, drawn[here], command.clone(), &envelope(None))
                    .await
                    .map(|(appended, _)| appended)
            } else {
                process
                    .quotes
                    .execute(id, drawn[here], command.clone(), &envelope(None))
                    .await
            };

            let at_form = fresh_fold(&a.store, id, Some(drawn[here])).await;
            let after = fresh_fold(&a.store, id, None).await;
            let context = format!("case {case} step {step}: {outcome:?}");
            match outcome {
                Ok(appended) => {
                    assert_eq!(drawn[here], before.version as i64, "{context}");
                    let written: Vec<QuoteEvent> = appended
                        .events()
                        .iter()
                        .map(|e| QuoteEvent::decode(e).unwrap())
                        .collect();
                    assert_eq!(written, decide(&at_form, &command).unwrap(), "{context}");
                    assert_eq!(after.version, before.version + written.len() as u64);
                    drawn[here] = after.version as i64;
                }
                Err(CommandError::Stale { expected, actual }) => {
                    assert_eq!(expected, drawn[here], "{context}");
                    assert_eq!(actual, before.version as i64, "{context}");
                    assert_ne!(expected, actual, "{context}");
                    assert_eq!(after, before, "{context}");
                }
                Err(CommandError::Rejected(_)) => {
                    assert!(decide(&at_form, &command).is_err(), "{context}");
                    assert_eq!(after, before, "{context}");
                }
                Err(other) => panic!("{context}: {other}"),
            }
        }
        let fresh = fresh_fold(&a.store, id, None).await;
        assert_eq!(a.quotes.load(id, None).await.unwrap().unwrap(), fresh);
        assert_eq!(b.quotes.load(id, None).await.unwrap().unwrap(), fresh);
    }
}

/// The app as the server opens it: its quote service follows the heads feed.
async fn following_heads(db: Db) -> AppState {
    let settings = Settings {
        follow_heads: true,
        ..Settings::default()
    };
    AppState::open_configured(db, settings).await.unwrap()
}

/// Waits, by the feed's rounds and for at most ten seconds, until `done` says so.
async fn until_the_feed<F: Future<Output = bool>>(
    app: &AppState,
    what: &str,
    mut done: impl FnMut() -> F,
) {
    let feed = app
        .quotes
        .heads()
        .expect("the service follows the heads feed");
    let mut rounds = feed.rounds();
    let waited = tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while !done().await {
            rounds.changed().await.expect("the feed runs");
        }
    })
    .await;
    assert!(waited.is_ok(), "the feed never got to: {what}");
}

/// A (the server's setting) follows the heads feed, B does not: A answers loads of
/// a quote it has read from memory, without reading the store, until the feed tells
/// it that B moved the quote on; a command A decides on a quote B has moved is
/// refused by the store, as without the feed.
async fn a_service_following_the_heads_answers_from_memory_until_told_another_process_moved_the_quote(
    test_db: &TestDb,
) {
    let a = following_heads(test_db.db.clone()).await;
    let b = AppState::open(test_db.db.clone()).await.unwrap();
    let id = started(&b).await;
    until_the_feed(&a, "trust the quote as read", || async {
        assert_eq!(a.quotes.load(id, None).await.unwrap().unwrap().version, 1);
        a.quotes.would_answer_from_memory(id).await
    })
    .await;

    // From memory: A answers without reading the stream.
    let reads = a.quotes.stream_reads();
    let remembered = a.quotes.load(id, None).await.unwrap().unwrap();
    assert_eq!(remembered.version, 1);
    assert_eq!(a.quotes.stream_reads(), reads, "nothing read");

    // B moves the quote on. Until told, A may still answer version 1; once told,
    // it reads.
    b.quotes
        .execute(id, 1, Command::new(agent(), geographic()), &envelope(None))
        .await
        .unwrap();
    until_the_feed(&a, "distrust the quote B moved", || async {
        !a.quotes.would_answer_from_memory(id).await
    })
    .await;
    let latest = a.quotes.load(id, None).await.unwrap().unwrap();
    assert_eq!((latest.version, latest.status), (3, Some(Status::Saved)));
    assert_eq!(latest, b.quotes.load(id, None).await.unwrap().unwrap());

    // A command decided on version 3 while B moves the quote to 4: the store
    // refuses it and writes nothing, trusted cache or not.
    until_the_feed(&a, "trust the quote again", || async {
        a.quotes.load(id, None).await.unwrap();
        a.quotes.would_answer_from_memory(id).await
    })
    .await;
    b.quotes
        .execute(id, 3, Command::new(agent(), contact()), &envelope(None))
        .await
        .unwrap();
    let outcome = a
        .quotes
        .execute(id, 3, Command::new(agent(), contact()), &envelope(None))
        .await;
    assert!(
        matches!(
            outcome,
            Err(CommandError::Stale {
                expected: 3,
                actual: 4
            })
        ),
        "{outcome:?}"
    );
    let versions: Vec<i64> = a
        .store
        .read_stream(id, 0)
        .await
        .unwrap()
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(versions, [1, 2, 3, 4]);
}

/// A command's own append moves the feed's epoch, so the quote it leaves is not
/// trusted as it is kept; once the feed tells of that append (the very version
/// kept), it is, and a load reads nothing. Before, every quote a command had moved
/// was read again on its next load.
async fn a_quote_a_command_here_moved_is_answered_from_memory_once_the_feed_has_told_of_the_append(
    test_db: &TestDb,
) {
    let a = following_heads(test_db.db.clone()).await;
    let id = started(&a).await;
    let (_, after) = a
        .quotes
        .execute_on(
            id,
            &a.quotes.load(id, None).await.unwrap().unwrap(),
            1,
            Command::new(agent(), geographic()),
            &envelope(None),
        )
        .await
        .unwrap();
    assert_eq!(after.version, 3);

    // Waiting only for the feed: no load in between, which would read the quote
    // and could be trusted on its own account.
    until_the_feed(&a, "trust the quote the command left", || async {
        a.quotes.would_answer_from_memory(id).await
    })
    .await;
    let reads = a.quotes.stream_reads();
    let remembered = a.quotes.load(id, None).await.unwrap().unwrap();
    assert_eq!(a.quotes.stream_reads(), reads, "nothing read");
    assert_eq!(remembered, after);
    assert_eq!(remembered, fresh_fold(&a.store, id, None).await);
}

/// A PostgreSQL database of a test's own, for a test that cuts or stalls the
/// connections to it; `drop_it` drops it (with any connection left).
struct OwnPostgres {
    admin: PgConnection,
    name: String,
    options: PgConnectOptions,
}

impl OwnPostgres {
    /// `None` (the test skipped) where PostgreSQL cannot be reached.
    async fn create(test: &str) -> Option<OwnPostgres> {
        let probe = TestDb::postgres(test).await?;
        probe.cleanup().await;
        let url =
            std::env::var("QUOTELINE_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_POSTGRES.into());
        let name = format!("ql_feed_{}", Uuid::now_v7().simple());
        let mut admin = PgConnection::connect(&url).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .await
            .unwrap();
        let options = PgConnectOptions::from_str(&url).unwrap().database(&name);
        Some(OwnPostgres {
            admin,
            name,
            options,
        })
    }

    /// Two processes on the database, their connections named `a` and `b`
    /// (`application_name`): A follows the heads feed and opens its connections with
    /// `a_options`, B does not follow it. B starts a quote, and A reads it and
    /// trusts it.
    async fn two_processes(&self, a_options: PgConnectOptions) -> TwoProcesses {
        let a_db = Db::connect_postgres(a_options.application_name("a"))
            .await
            .unwrap();
        let b_db = Db::connect_postgres(self.options.clone().application_name("b"))
            .await
            .unwrap();
        let a = following_heads(a_db.clone()).await;
        let b = AppState::open(b_db.clone()).await.unwrap();
        let id = started(&b).await;
        until_the_feed(&a, "trust the quote as read", || async {
            a.quotes.load(id, None).await.unwrap();
            a.quotes.would_answer_from_memory(id).await
        })
        .await;
        TwoProcesses {
            a_db,
            b_db,
            a,
            b,
            id,
        }
    }

    /// Closes both processes' databases and drops the database.
    async fn drop_it(mut self, processes: TwoProcesses) {
        let TwoProcesses { a_db, b_db, .. } = processes;
        a_db.close().await;
        b_db.close().await;
        sqlx::query(&format!("DROP DATABASE {} WITH (FORCE)", self.name))
            .execute(&mut self.admin)
            .await
            .unwrap();
    }
}

struct TwoProcesses {
    a_db: Db,
    b_db: Db,
    a: AppState,
    b: AppState,
    id: Uuid,
}

/// On PostgreSQL the feed listens on a connection of its own. When that connection
/// is cut, notifications sent meanwhile are lost: the service drops every quote it
/// trusted, and trusts none again until the feed listens again and the quote is read.
/// Every connection of A's is cut and the database takes no new one while B moves
/// the quote on, so A's feed cannot listen again in time to hear of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_service_whose_feed_lost_its_connection_reads_every_quote_again() {
    let Some(mut own) = OwnPostgres::create(
        "on_postgres_a_service_whose_feed_lost_its_connection_reads_every_quote_again",
    )
    .await
    else {
        return;
    };
    let processes = own.two_processes(own.options.clone()).await;
    let TwoProcesses { a, b, id, .. } = &processes;
    let id = *id;

    let name = own.name.clone();
    let connections = |allowed: bool| format!("ALTER DATABASE {name} ALLOW_CONNECTIONS {allowed}");
    sqlx::query(&connections(false))
        .execute(&mut own.admin)
        .await
        .unwrap();
    let cut: Vec<String> = sqlx::query_scalar(
        "WITH a AS MATERIALIZED (SELECT pid, query FROM pg_stat_activity \
                                 WHERE datname = $1 AND application_name = 'a') \
         SELECT query FROM a WHERE pg_terminate_backend(pid)",
    )
    .bind(&own.name)
    .fetch_all(&mut own.admin)
    .await
    .unwrap();
    assert!(
        cut.iter().any(|query| query.starts_with("LISTEN")),
        "the feed's listening connection is among A's: {cut:?}"
    );
    until_the_feed(a, "drop what it trusted", || async {
        !a.quotes.would_answer_from_memory(id).await
    })
    .await;
    b.quotes
        .execute(id, 1, Command::new(agent(), geographic()), &envelope(None))
        .await
        .unwrap();
    sqlx::query(&connections(true))
        .execute(&mut own.admin)
        .await
        .unwrap();
    a_listens_again_and_trusts_the_quote_at(a, id, 3).await;

    own.drop_it(processes).await;
}

/// On PostgreSQL a listening connection whose server went away without closing it
/// (a failover, a cable pulled) would wait for ever, and the feed would count
/// itself live while another process moved the quote on. Every feed sends an
/// empty notification on its channel every `BEAT`: with nothing appended those
/// keep it live, and once its connection falls silent it stops trusting within
/// `POSTGRES_TRUST` and listens again on a new one. A's connections run through a
/// proxy that stalls the listening one (it forwards nothing more either way, and
/// closes nothing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_feed_whose_connection_falls_silent_stops_trusting_and_listens_again() {
    let Some(mut own) = OwnPostgres::create(
        "on_postgres_a_feed_whose_connection_falls_silent_stops_trusting_and_listens_again",
    )
    .await
    else {
        return;
    };
    let proxy =
        StallingProxy::start(own.options.get_host().to_owned(), own.options.get_port()).await;
    let through_proxy = own.options.clone().host("127.0.0.1").port(proxy.port);
    let processes = own.two_processes(through_proxy).await;
    let TwoProcesses { a, b, id, .. } = &processes;
    let id = *id;

    // Nothing appended for longer than the feed trusts what it last heard: the
    // heartbeats keep it live, and it never says it may have missed something.
    let feed = a.quotes.heads().unwrap().clone();
    let unknown = feed.last_unknown();
    let since = Instant::now();
    until_the_feed(a, "hear heartbeats for longer than it trusts", || async {
        since.elapsed() > POSTGRES_TRUST + BEAT
    })
    .await;
    assert_eq!(feed.last_unknown(), unknown, "the feed started over");
    assert!(feed.is_live());
    assert!(a.quotes.would_answer_from_memory(id).await);

    // The listening connection falls silent, and B moves the quote on.
    let port: i32 = sqlx::query_scalar(
        "SELECT client_port FROM pg_stat_activity \
         WHERE datname = $1 AND application_name = 'a' AND query LIKE 'LISTEN%'",
    )
    .bind(&own.name)
    .fetch_one(&mut own.admin)
    .await
    .unwrap();
    proxy.stall(u16::try_from(port).unwrap());
    b.quotes
        .execute(id, 1, Command::new(agent(), geographic()), &envelope(None))
        .await
        .unwrap();
    // Not live once it has heard nothing for `POSTGRES_TRUST`, and then it says so.
    until_the_feed(a, "drop what it trusted", || async {
        !a.quotes.would_answer_from_memory(id).await
    })
    .await;
    until_the_feed(a, "say it may have missed something", || {
        let feed = feed.clone();
        async move { feed.last_unknown() > unknown }
    })
    .await;
    a_listens_again_and_trusts_the_quote_at(a, id, 3).await;

    // The silent connection holds none of A's pool (sqlx's listener, dropped, waits
    // on it for the answer to an `UNLISTEN` that never comes): every connection the
    // pool has is idle again, and the pool can close.
    let Backend::Postgres(pool) = &processes.a_db else {
        unreachable!("A is on PostgreSQL")
    };
    until_the_feed(a, "have every pooled connection back", || async {
        pool.num_idle() == pool.size() as usize
    })
    .await;
    own.drop_it(processes).await;
}

/// A's feed listens again; A reads the quote at `version` and trusts it again.
async fn a_listens_again_and_trusts_the_quote_at(a: &AppState, id: Uuid, version: u64) {
    let feed = a.quotes.heads().unwrap().clone();
    until_the_feed(a, "listen again", || {
        let feed = feed.clone();
        async move { feed.is_live() }
    })
    .await;
    let latest = a.quotes.load(id, None).await.unwrap().unwrap();
    assert_eq!(latest.version, version);
    until_the_feed(a, "trust the quote again", || async {
        a.quotes.load(id, None).await.unwrap();
        a.quotes.would_answer_from_memory(id).await
    })
    .await;
}
