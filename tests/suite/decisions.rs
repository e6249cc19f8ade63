//! Underwriters' decisions over HTTP, on both backends.

use quoteline::kernel::{Actor, Role};
use quoteline::quoting::domain::Action;
use quoteline::quoting::summary;
use quoteline::underwriting::queue;
use uuid::Uuid;

use crate::support::{
    TestApp, TestDb, assert_is_redirect_to, field, html_page, quote_through_service,
};

storage_tests!(
    an_approved_quote_leaves_the_queue_and_its_agent_sees_approved,
    a_rejection_needs_a_reason_and_the_agent_sees_it,
    a_referred_quote_goes_back_to_its_agent_and_returns_with_its_count_raised,
    nobody_decides_a_quote_they_created,
    two_underwriters_deciding_at_once_land_one_decision,
);

/// A quote submitted by `agent` through the service.
async fn submitted_by(app: &TestApp, agent: &Actor) -> Uuid {
    quote_through_service(app, agent, [(agent.clone(), Action::Finalize)]).await
}

/// Opens a decision's confirm page and posts it with `text` (reason or note).
async fn decide(app: &TestApp, id: Uuid, decision: &str, text: &str) -> reqwest::Response {
    let path = format!("/quotes/{id}/{decision}");
    let page = html_page(app.get(&path).await, 200).await;
    app.post_form(
        &path,
        &[
            ("version", &field(&page, "version")),
            ("idempotency_key", &field(&page, "idempotency_key")),
            ("text", text),
        ],
    )
    .await
}

async fn event_types(app: &TestApp, id: Uuid) -> Vec<String> {
    app.state
        .store
        .read_stream(id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect()
}

async fn an_approved_quote_leaves_the_queue_and_its_agent_sees_approved(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let agent = app.new_browser();
    agent.sign_in_as("asha", &[Role::Agent]).await;
    app.sign_in_as("uma", &[Role::Underwriter]).await;
    let id = submitted_by(&app, &Actor::new("asha", [Role::Agent])).await;
    assert!(
        queue::find(&app.state.db, id).await.unwrap().is_some(),
        "waiting before the decision"
    );

    let view = html_page(app.get(&format!("/quotes/{id}")).await, 200).await;
    assert!(
        view.contains(&format!("/quotes/{id}/approve")) && view.contains("Pune"),
        "{view}"
    );
    let response = decide(&app, id, "approve", "").await;

    assert_is_redirect_to(&response, &format!("/quotes/{id}/decided"));
    let decided = html_page(app.get(&format!("/quotes/{id}/decided")).await, 200).await;
    assert!(decided.contains("Quote approved"), "{decided}");
    assert!(
        queue::find(&app.state.db, id).await.unwrap().is_none(),
        "it left the queue"
    );
    let events = app.state.store.read_stream(id, 0).await.unwrap();
    assert_eq!(
        (
            events.last().unwrap().event_type.as_str(),
            events.last().unwrap().actor.as_str()
        ),
        ("QuoteApproved", "uma")
    );
    let list = html_page(agent.get("/quotes").await, 200).await;
    assert!(list.contains("Approved"), "{list}");
}

async fn a_rejection_needs_a_reason_and_the_agent_sees_it(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let agent = app.new_browser();
    agent.sign_in_as("asha", &[Role::Agent]).await;
    app.sign_in_as("uma", &[Role::Underwriter]).await;
    let id = submitted_by(&app, &Actor::new("asha", [Role::Agent])).await;

    let empty = html_page(decide(&app, id, "reject", "   ").await, 422).await;
    assert!(
        empty.contains("Enter the reason for rejecting the quote"),
        "{empty}"
    );
    assert_eq!(
        event_types(&app, id).await.len(),
        6,
        "no reason, nothing written"
    );

    let response = decide(&app, id, "reject", "Outside the regions we cover, sadly").await;
    assert_is_redirect_to(&response, &format!("/quotes/{id}/decided"));
    assert_eq!(event_types(&app, id).await.last().unwrap(), "QuoteRejected");
    assert!(queue::find(&app.state.db, id).await.unwrap().is_none());
    let tasks = html_page(agent.get(&format!("/quotes/{id}")).await, 200).await;
    assert!(
        tasks.contains("Rejected") && tasks.contains("Outside the regions we cover, sadly"),
        "{tasks}"
    );
}

async fn a_referred_quote_goes_back_to_its_agent_and_returns_with_its_count_raised(
    test_db: &TestDb,
) {
    let app = TestApp::spawn(test_db).await;
    let agent = app.new_browser();
    agent.sign_in_as("asha", &[Role::Agent]).await;
    app.sign_in_as("uma", &[Role::Underwriter]).await;
    let id = submitted_by(&app, &Actor::new("asha", [Role::Agent])).await;

    let empty = html_page(decide(&app, id, "refer", "").await, 422).await;
    assert!(empty.contains("Enter a note"), "{empty}");
    let response = decide(&app, id, "refer", "Please confirm the number of dependents").await;
    assert_is_redirect_to(&response, &format!("/quotes/{id}/decided"));
    assert!(
        queue::find(&app.state.db, id).await.unwrap().is_none(),
        "referred quotes leave the queue"
    );

    let tasks = html_page(agent.get(&format!("/quotes/{id}")).await, 200).await;
    assert!(
        tasks.contains("Please confirm the number of dependents"),
        "{tasks}"
    );
    // The agent changes the family details and submits again.
    let path = format!("/quotes/{id}/family");
    let form = html_page(agent.get(&path).await, 200).await;
    let saved = agent
        .post_form(
            &path,
            &[
                ("version", &field(&form, "version")),
                ("idempotency_key", &field(&form, "idempotency_key")),
                ("dependents", "2"),
                ("children", "Asha"),
                ("action", "save"),
            ],
        )
        .await;
    assert_is_redirect_to(&saved, &format!("/quotes/{id}/review"));
    let review = html_page(agent.get(&format!("/quotes/{id}/review")).await, 200).await;
    let submitted = agent
        .post_form(
            &format!("/quotes/{id}/finalize"),
            &[
                ("version", &field(&review, "version")),
                ("idempotency_key", &field(&review, "idempotency_key")),
            ],
        )
        .await;
    assert_is_redirect_to(&submitted, &format!("/quotes/{id}"));

    let row = queue::find(&app.state.db, id)
        .await
        .unwrap()
        .expect("back in the queue");
    assert_eq!((row.referral_count, row.dependents), (1, Some(2)));
    let summary = summary::find(&app.state.db, id).await.unwrap().unwrap();
    assert_eq!(summary.referral_count, 1);
}

async fn nobody_decides_a_quote_they_created(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    app.sign_in_as("dual", &[Role::Agent, Role::Underwriter])
        .await;
    let id = submitted_by(&app, &Actor::new("dual", [Role::Agent, Role::Underwriter])).await;

    let view = html_page(app.get(&format!("/quotes/{id}")).await, 200).await;
    assert!(
        !view.contains(&format!("/quotes/{id}/approve")),
        "no decisions offered on your own quote"
    );
    for decision in ["approve", "reject", "refer"] {
        let page = html_page(app.get(&format!("/quotes/{id}/{decision}")).await, 403).await;
        assert!(page.contains("you created"), "{page}");
        let posted = app
            .post_form(
                &format!("/quotes/{id}/{decision}"),
                &[
                    ("version", "6"),
                    ("idempotency_key", decision),
                    ("text", "x"),
                ],
            )
            .await;
        html_page(posted, 403).await;
    }
    assert_eq!(event_types(&app, id).await.len(), 6, "nothing written");
}

async fn two_underwriters_deciding_at_once_land_one_decision(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let other = app.new_browser();
    app.sign_in_as("uma", &[Role::Underwriter]).await;
    other.sign_in_as("victor", &[Role::Underwriter]).await;
    let id = submitted_by(&app, &Actor::new("asha", [Role::Agent])).await;
    let approve_page = html_page(app.get(&format!("/quotes/{id}/approve")).await, 200).await;
    let reject_page = html_page(other.get(&format!("/quotes/{id}/reject")).await, 200).await;

    let approve_fields = [
        ("version", field(&approve_page, "version")),
        ("idempotency_key", field(&approve_page, "idempotency_key")),
    ];
    let reject_fields = [
        ("version", field(&reject_page, "version")),
        ("idempotency_key", field(&reject_page, "idempotency_key")),
        ("text", "Too risky".to_owned()),
    ];
    let approve_fields: Vec<(&str, &str)> = approve_fields
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    let reject_fields: Vec<(&str, &str)> = reject_fields
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    let (approve_path, reject_path) = (
        format!("/quotes/{id}/approve"),
        format!("/quotes/{id}/reject"),
    );
    let (approved, rejected) = tokio::join!(
        app.post_form(&approve_path, &approve_fields),
        other.post_form(&reject_path, &reject_fields),
    );

    let statuses = [approved.status().as_u16(), rejected.status().as_u16()];
    assert!(
        statuses.contains(&303) && statuses.contains(&409),
        "one wins, one is told: {statuses:?}"
    );
    let loser = if approved.status().as_u16() == 409 {
        approved
    } else {
        rejected
    };
    let page = html_page(loser, 409).await;
    assert!(
        page.contains("already been decided")
            && (page.contains("by uma") || page.contains("by victor")),
        "{page}"
    );
    let types = event_types(&app, id).await;
    assert_eq!(types.len(), 7, "exactly one decision landed: {types:?}");
    assert!(["QuoteApproved", "QuoteRejected"].contains(&types[6].as_str()));
}
