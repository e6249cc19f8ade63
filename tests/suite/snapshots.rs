//! Snapshots: whatever the policy, a load gives the quote a full fold of its events
//! gives; a load starts from the newest snapshot at or below the version it wants;
//! a snapshot of another schema version is ignored and replaced.

use std::num::NonZeroU64;
use std::time::Duration;

use chrono::Utc;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use quoteline::AppState;
use quoteline::eventstore::{SnapshotPolicy, Snapshots, Snapshotter, Taken};
use quoteline::kernel::{Actor, Role};
use quoteline::quoting::domain::{
    Action, Command, ContactDetails, FamilyDetails, GeographicDetails, NonEmptyText, PersonName,
    Quote,
};
use quoteline::quoting::service::CACHED_QUOTE_BYTES;
use quoteline::quoting::{CommandError, QuoteService};
use uuid::Uuid;

use crate::support::{TestDb, envelope, fresh_fold};

storage_tests!(
    loading_with_any_snapshot_policy_equals_the_full_fold,
    a_load_starts_from_the_newest_snapshot_at_or_below_the_version_wanted,
    a_snapshot_of_another_schema_version_is_ignored_and_replaced,
    offers_made_together_are_written_together,
);

fn agent() -> Actor {
    Actor::new("asha", [Role::Agent])
}

fn underwriter() -> Actor {
    Actor::new("uma", [Role::Underwriter])
}

/// The commands a random history is made of: the agent's sections (each one
/// event), submissions and refer-backs most often, so that quotes stay open long;
/// a decision or a withdrawal, which ends one, now and then.
fn commands() -> Vec<Command> {
    let note = || NonEmptyText::parse("Check the postcode").unwrap();
    vec![
        Command::new(
            agent(),
            Action::ProvideGeographic(
                GeographicDetails::parse("IN", "Maharashtra", "Pune", "411001").unwrap(),
            ),
        ),
        Command::new(
            agent(),
            Action::ProvideGeographic(
                GeographicDetails::parse("GB", "England", "London", "SW1A 1AA").unwrap(),
            ),
        ),
        Command::new(
            agent(),
            Action::ProvideContact(
                ContactDetails::parse("meera@example.com", "+919876543210").unwrap(),
            ),
        ),
        Command::new(
            agent(),
            Action::ProvideFamily(FamilyDetails::parse("2", "Ravi", &["Asha".into()]).unwrap()),
        ),
        Command::new(agent(), Action::Finalize),
        Command::new(underwriter(), Action::ReferBack { note: note() }),
        Command::new(underwriter(), Action::Approve),
        Command::new(underwriter(), Action::Reject { reason: note() }),
        Command::new(agent(), Action::Withdraw),
    ]
}

fn any_history() -> impl Strategy<Value = Vec<usize>> {
    let command = prop_oneof![
        40 => 0..4usize,
        12 => 4..6usize,
        1 => 6..9usize,
    ];
    prop::collection::vec(command, 1..260)
}

/// A quote started and taken through `history` (commands a rule refuses are passed
/// over) until it ends or holds 200 events; returns its id and the version after
/// each command that appended, in order.
async fn quote_with_history(quotes: &QuoteService, history: &[usize]) -> (Uuid, Vec<i64>) {
    let id = Uuid::now_v7();
    let name = PersonName::parse("Meera Iyer").unwrap();
    let started = quotes.start(id, agent(), name, &envelope()).await.unwrap();
    let mut versions = vec![started.last_version().unwrap()];
    let commands = commands();
    for &command in history {
        let version = *versions.last().unwrap();
        if version >= 200 {
            break;
        }
        match quotes
            .execute(id, version, commands[command].clone(), &envelope())
            .await
        {
            Ok(appended) => versions.push(appended.last_version().unwrap()),
            Err(CommandError::Rejected(_)) => {}
            Err(other) => panic!("command {command} at version {version}: {other}"),
        }
    }
    (id, versions)
}

/// The versions `policy` snapshots when offered these, in order, on a stream with
/// no snapshot yet that started just now.
fn expected_snapshots(policy: SnapshotPolicy, offered: &[i64]) -> Vec<i64> {
    let now = Utc::now();
    let mut newest = quoteline::eventstore::Mark {
        version: 0,
        at: now,
    };
    let mut taken = Vec::new();
    for &version in offered {
        if policy.is_due(version, newest, now) {
            taken.push(version);
            newest.version = version;
        }
    }
    taken
}

async fn snapshot_versions(test_db: &TestDb, id: Uuid) -> Vec<(i64, i32)> {
    quoteline::on_backend!(&test_db.db, pool => {
        sqlx::query_as(
            "SELECT version, schema_version FROM snapshots WHERE stream_id = $1 ORDER BY version",
        )
        .bind(id)
        .fetch_all(pool)
        .await
        .unwrap()
    })
}

/// A service as a process that has just started: nothing cached, taking no
/// snapshots of its own.
fn cold_service(app: &AppState) -> QuoteService {
    QuoteService::configured(app.store.clone(), CACHED_QUOTE_BYTES, SnapshotPolicy::NEVER)
}

/// Random histories of up to 200 events, each under another policy (every N, older
/// than T, both, never): the snapshots are the ones the policy asks for, and a load
/// at every version, by a process with nothing cached, equals the full fold.
async fn loading_with_any_snapshot_policy_equals_the_full_fold(test_db: &TestDb) {
    let policies = [
        SnapshotPolicy {
            every: NonZeroU64::new(1),
            older_than: None,
        },
        SnapshotPolicy {
            every: NonZeroU64::new(7),
            older_than: None,
        },
        SnapshotPolicy {
            every: NonZeroU64::new(50),
            older_than: None,
        },
        SnapshotPolicy {
            every: None,
            older_than: Some(Duration::ZERO),
        },
        SnapshotPolicy {
            every: NonZeroU64::new(13),
            older_than: Some(Duration::from_secs(3600)),
        },
        SnapshotPolicy::NEVER,
    ];
    let app = AppState::open(test_db.db.clone()).await.unwrap();
    let mut runner = TestRunner::deterministic();
    let mut longest = 0;
    for (case, policy) in policies.into_iter().enumerate() {
        let history = any_history().new_tree(&mut runner).unwrap().current();
        let writer = QuoteService::configured(app.store.clone(), CACHED_QUOTE_BYTES, policy);
        let (id, versions) = quote_with_history(&writer, &history).await;
        writer.flush_snapshots().await;
        let last = *versions.last().unwrap();
        longest = longest.max(last);

        let current = Quote::SCHEMA_VERSION;
        let expected: Vec<(i64, i32)> = expected_snapshots(policy, &versions)
            .into_iter()
            .map(|version| (version, current))
            .collect();
        assert_eq!(
            snapshot_versions(test_db, id).await,
            expected,
            "case {case}: {policy:?}, versions {versions:?}"
        );

        for version in 0..=last {
            let loaded = cold_service(&app).load(id, Some(version)).await.unwrap();
            let folded = fresh_fold(&app.store, id, Some(version)).await;
            assert_eq!(
                loaded.unwrap_or_default(),
                folded,
                "case {case}: {policy:?}, as of {version}"
            );
        }
        let latest = cold_service(&app).load(id, None).await.unwrap().unwrap();
        assert_eq!(latest, fresh_fold(&app.store, id, None).await);
        assert_eq!(latest.version as i64, last);
    }
    assert!(longest >= 50, "the longest history had {longest} events");
}

/// The quote at `version` with a mark no event could have made: a load that returns
/// it (or a quote folded on from it) started from the snapshot.
async fn marked(app: &AppState, id: Uuid, version: i64) -> Quote {
    let mut quote = fresh_fold(&app.store, id, Some(version)).await;
    quote.referral_count = 900 + version as u32;
    quote
}

async fn a_load_starts_from_the_newest_snapshot_at_or_below_the_version_wanted(test_db: &TestDb) {
    let app = AppState::open(test_db.db.clone()).await.unwrap();
    let (id, versions) = quote_with_history(&cold_service(&app), &[0, 2, 3, 1, 2, 0, 3, 1]).await;
    let last = *versions.last().unwrap();
    assert!(last >= 8, "versions {versions:?}");
    let snapshots = Snapshots::new(test_db.db.clone());
    for version in [3, 6] {
        let state = marked(&app, id, version).await;
        snapshots
            .save(id, version, Quote::SCHEMA_VERSION, &state, Utc::now())
            .await
            .unwrap();
    }

    for version in 0..=last {
        let loaded = cold_service(&app)
            .load(id, Some(version))
            .await
            .unwrap()
            .unwrap_or_default();
        let mut expected = fresh_fold(&app.store, id, Some(version)).await;
        match version {
            0..3 => {}
            3..6 => expected.referral_count = 903,
            _ => expected.referral_count = 906,
        }
        assert_eq!(loaded, expected, "as of {version}");
    }
    let latest = cold_service(&app).load(id, None).await.unwrap().unwrap();
    assert_eq!((latest.version as i64, latest.referral_count), (last, 906));
}

async fn a_snapshot_of_another_schema_version_is_ignored_and_replaced(test_db: &TestDb) {
    let app = AppState::open(test_db.db.clone()).await.unwrap();
    let (id, versions) = quote_with_history(&cold_service(&app), &[0, 2, 3, 1, 2]).await;
    let last = *versions.last().unwrap();
    let snapshots = Snapshots::new(test_db.db.clone());
    let other_shape = Quote::SCHEMA_VERSION + 1;
    snapshots
        .save(id, 2, other_shape, &marked(&app, id, 2).await, Utc::now())
        .await
        .unwrap();
    snapshots
        .save(id, 4, other_shape, &marked(&app, id, 4).await, Utc::now())
        .await
        .unwrap();

    // A load that meets one of another shape folds from the first event, and the
    // quote as folded replaces the stream's snapshots of other shapes.
    let service = cold_service(&app);
    let latest = service.load(id, None).await.unwrap().unwrap();
    assert_eq!(latest, fresh_fold(&app.store, id, None).await);
    service.flush_snapshots().await;
    assert_eq!(
        snapshot_versions(test_db, id).await,
        vec![(last, Quote::SCHEMA_VERSION)]
    );
    let kept = snapshots.newest(id, None).await.unwrap().unwrap();
    assert_eq!(kept.state_as::<Quote>(Quote::SCHEMA_VERSION), Some(latest));

    // A snapshot of the current version that does not read as a quote is passed
    // over the same way.
    snapshots
        .save(
            id,
            3,
            Quote::SCHEMA_VERSION,
            &serde_json::json!({"not": "a quote"}),
            Utc::now(),
        )
        .await
        .unwrap();
    let service = cold_service(&app);
    let at_three = service.load(id, Some(3)).await.unwrap().unwrap();
    assert_eq!(at_three, fresh_fold(&app.store, id, Some(3)).await);
    service.flush_snapshots().await;
    let replaced = snapshots.newest(id, Some(3)).await.unwrap().unwrap();
    assert_eq!(replaced.version, 3);
    assert_eq!(
        replaced.state_as::<Quote>(Quote::SCHEMA_VERSION),
        Some(at_three)
    );
}

/// The snapshot task writes what it is offered at once in one commit: more offers
/// than one INSERT holds (but no more than may wait for it), and a replacement that
/// takes the stream's snapshots of another shape with it. One stream and version
/// given twice to one write (which one statement may not upsert twice on
/// PostgreSQL) is kept once, with the last state.
async fn offers_made_together_are_written_together(test_db: &TestDb) {
    let snapshots = Snapshots::new(test_db.db.clone());
    let other_shape = 7;
    let replaced = Uuid::now_v7();
    snapshots
        .save(
            replaced,
            1,
            other_shape,
            &serde_json::json!({"old": true}),
            Utc::now(),
        )
        .await
        .unwrap();

    let snapshotter = Snapshotter::spawn(snapshots.clone(), SnapshotPolicy::default(), 1);
    let streams: Vec<Uuid> = (0..1_000).map(|_| Uuid::now_v7()).collect();
    for (n, &stream_id) in streams.iter().enumerate() {
        snapshotter.replace(
            stream_id,
            3,
            std::sync::Arc::new(serde_json::json!({"n": n})),
        );
    }
    snapshotter.replace(
        replaced,
        2,
        std::sync::Arc::new(serde_json::json!({"new": true})),
    );
    snapshotter.flush().await;

    for (n, &stream_id) in streams.iter().enumerate() {
        let kept = snapshots.newest(stream_id, None).await.unwrap().unwrap();
        assert_eq!((kept.version, kept.schema_version), (3, 1));
        assert_eq!(kept.state, serde_json::json!({"n": n}));
    }
    assert_eq!(snapshot_versions(test_db, replaced).await, vec![(2, 1)]);

    let twice = streams[0];
    let (first, last) = (
        serde_json::json!({"first": 1}),
        serde_json::json!({"last": 2}),
    );
    let taken = |state| Taken {
        stream_id: twice,
        version: 5,
        state,
        replace: false,
    };
    snapshots
        .save_all(&[taken(&first), taken(&last)], 1, Utc::now())
        .await
        .unwrap();
    let kept = snapshots.newest(twice, None).await.unwrap().unwrap();
    assert_eq!((kept.version, kept.state), (5, last));
}
