//! The quote service over the real store: load, decide, append with the expected
//! version, and the quote_summary row kept in the same transaction.

use chrono::Utc;
use quoteline::AppState;
use quoteline::eventstore::Appended;
use quoteline::kernel::Envelope;
use quoteline::kernel::{Actor, Role};
use quoteline::quoting::domain::{
    Action, Command, ContactDetails, DomainError, FamilyDetails, GeographicDetails, PersonName,
    Status,
};
use quoteline::quoting::{CommandError, summary};
use uuid::Uuid;

use crate::support::TestDb;

storage_tests!(
    a_quote_taken_from_start_to_submitted_records_its_events_and_summary,
    a_command_decided_on_an_old_version_is_stale_and_writes_nothing,
    a_refused_command_writes_nothing,
    a_resubmitted_form_returns_its_first_outcome,
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
