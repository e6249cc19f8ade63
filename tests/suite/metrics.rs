//! `/metrics`: the Prometheus text, read from this machine, with requests by route
//! and status, appends and group-commit batches counted.

use quoteline::kernel::{Actor, Role};

use crate::support::{TestApp, TestDb, quote_through_service};

storage_tests!(the_metrics_count_requests_and_appends);

/// A counter's value in the text (summed over its label sets).
fn value(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| {
            line.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

async fn the_metrics_count_requests_and_appends(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    app.sign_in_as("asha", &[Role::Agent]).await;
    let before = app.get("/metrics").await.text().await.unwrap();

    quote_through_service(&app, &Actor::new("asha", [Role::Agent]), []).await;
    assert_eq!(app.get("/quotes").await.status().as_u16(), 200);

    let response = app.get("/metrics").await;
    assert_eq!(response.status().as_u16(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let after = response.text().await.unwrap();
    // Other tests in this process count too: at least ours.
    assert!(
        value(&after, "quoteline_appends_total") >= value(&before, "quoteline_appends_total") + 1.0
    );
    assert!(
        value(&after, "quoteline_events_appended_total")
            >= value(&before, "quoteline_events_appended_total") + 1.0
    );
    assert!(
        after.contains("quoteline_group_commit_batch_size_bucket{le=\"1\"}"),
        "{after}"
    );
    for step in ["begin", "reads", "events", "projections", "commit"] {
        assert!(
            after.contains(&format!(
                r#"quoteline_group_commit_step_seconds_bucket{{step="{step}",le="0.25"}}"#
            )),
            "{step}: {after}"
        );
    }
    assert!(
        after.contains("quoteline_append_conflicts_total"),
        "{after}"
    );
    assert!(
        after.contains(
            r#"quoteline_http_requests_total{method="GET",route="/quotes",status="200"}"#
        ),
        "{after}"
    );
    assert!(
        after.contains(r#"quoteline_http_request_duration_seconds_bucket{method="GET",route="/quotes",le="0.005"}"#),
        "{after}"
    );

    // Relayed by a proxy on this machine: not this machine's own request.
    let relayed = app
        .client
        .get(app.url("/metrics"))
        .header("X-Forwarded-For", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(relayed.status().as_u16(), 403);
}
