//! `quoteline rebuild`: on a generated history of 50,000 events, rebuilding every
//! projection (or one) gives the live tables row for row, also with appends running
//! through it; one rebuild at a time; the app serves the swapped-in tables.

use chrono::Utc;
use indicatif::ProgressBar;
use quoteline::AppState;
use quoteline::demo::{self, Generate, Size};
use quoteline::eventstore::checkpoints::last_position;
use quoteline::eventstore::{GlobalPosition, Projector};
use quoteline::rebuild::{RebuildError, RebuildLock, rebuild};
use quoteline::state::quote_projector;

use crate::projections::{random_history, tables};
use crate::support::{TestDb, run_command};

storage_tests!(a_rebuild_of_a_generated_history_equals_the_live_tables);

async fn checkpoints(app: &AppState) -> Vec<Option<GlobalPosition>> {
    let mut pooled = app.db.acquire().await.unwrap();
    let mut found = Vec::new();
    for name in ["quote_summary", "approval_queue", "audit_timeline"] {
        found.push(
            quoteline::eventstore::checkpoints::checkpoint(pooled.as_conn(), name)
                .await
                .unwrap(),
        );
    }
    found
}

/// The rebuilt tables against the live ones: every projection, one projection, with
/// appends running, and a second rebuild refused while one runs; the pages served
/// afterwards read the swapped-in tables.
async fn a_rebuild_of_a_generated_history_equals_the_live_tables(test_db: &TestDb) {
    let app = AppState::open(test_db.db.clone()).await.unwrap();
    let options = Generate {
        size: Size::Events(50_000),
        seed: 3,
        now: Utc::now(),
    };
    let generated = demo::generate(&app.store, options, &ProgressBar::hidden())
        .await
        .unwrap();
    assert!(generated.events >= 50_000);
    let live = tables(&app.db).await;

    // Every projection, nothing else writing.
    let mut seen = Vec::new();
    let rebuilt = rebuild(&app.db, None, |done, total| seen.push((done, total)))
        .await
        .unwrap();
    assert_eq!(
        rebuilt.projections,
        ["quote_summary", "approval_queue", "audit_timeline"]
    );
    assert_eq!(rebuilt.events, generated.events);
    assert_eq!(seen.first(), Some(&(0, generated.events)));
    assert_eq!(seen.last(), Some(&(generated.events, generated.events)));
    assert_eq!(tables(&app.db).await, live, "every projection rebuilt");
    let end = last_position(&app.db).await.unwrap();
    assert_eq!(checkpoints(&app).await, vec![end; 3]);

    // One projection, twice over (the second swaps the first's tables out).
    for _ in 0..2 {
        let one = rebuild(&app.db, Some("approval_queue"), |_, _| {})
            .await
            .unwrap();
        assert_eq!(one.projections, ["approval_queue"]);
        assert_eq!(tables(&app.db).await, live, "the queue rebuilt");
    }
    let unknown = rebuild(&app.db, Some("quote_sumary"), |_, _| {}).await;
    assert!(
        matches!(&unknown, Err(RebuildError::Unknown { name, .. }) if name == "quote_sumary"),
        "{unknown:?}"
    );

    // Appends through the whole rebuild: the swapped-in tables hold every event, the
    // ones written during the swap's wait included.
    let writer = {
        let app = app.clone();
        tokio::spawn(async move { random_history(&app, 21, 40, 15).await })
    };
    rebuild(&app.db, None, |_, _| {}).await.unwrap();
    writer.await.unwrap();
    let after = tables(&app.db).await;
    assert_ne!(after, live, "the appends are in");
    let projector = quote_projector();
    for alone in projector.each() {
        projector
            .reset(&app.db, &alone.projections()[0])
            .await
            .unwrap();
    }
    projector.catch_up(&app.db).await.unwrap();
    assert_eq!(after, tables(&app.db).await, "as a replay of the whole log");

    // One at a time, across processes: the lock is refused while held, by the
    // library and by the command.
    let lock = RebuildLock::take(&app.db).await.unwrap();
    let second = rebuild(&app.db, None, |_, _| {}).await;
    assert!(
        matches!(second, Err(RebuildError::Busy { .. })),
        "{second:?}"
    );
    let output = run_command(test_db, &["rebuild", "--quiet"]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("another rebuild is running"), "{stderr}");
    lock.release().await;

    let output = run_command(test_db, &["rebuild", "--projection", "audit_timeline"]).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.starts_with("Rebuilt audit_timeline from "),
        "{stdout}"
    );
    assert_eq!(tables(&app.db).await, after);
}
