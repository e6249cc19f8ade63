//! A proof that travels, on both backends: an auditor downloads a quote's history
//! signed with the installation's key; the binary checks it with no database and
//! names what was done to a tampered copy; the key is made once and shown on
//! /audit/verify. (Each kind of tampering is a unit test of `audit::proof`.)

use quoteline::AppState;
use quoteline::audit::proof::{self, Signer};
use quoteline::audit::signing::InstallationKey;
use quoteline::eventstore::ArchiveLocation;
use quoteline::kernel::{Actor, Role};
use quoteline::quoting::domain::{Action, ContactDetails};
use serde_json::Value;
use uuid::Uuid;

use crate::support::{
    TestApp, TestDb, act_now, html_page, quote_through_service, quoteline_binary,
};

storage_tests!(
    an_auditor_downloads_a_signed_proof_the_binary_verifies_with_no_database,
    an_archived_quote_exports_the_same_proof_and_without_a_key_it_is_unsigned,
);

/// `quoteline ARGS…` with a database that cannot be reached: what it prints and its
/// exit status.
async fn without_a_database(args: &[&str]) -> (Option<i32>, String) {
    let output = tokio::process::Command::new(quoteline_binary())
        .args(args)
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:9/nowhere")
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    (output.status.code(), format!("{stdout}{stderr}"))
}

async fn quote_with_history(app: &TestApp) -> Uuid {
    let asha = Actor::new("asha", [Role::Agent]);
    let id = quote_through_service(app, &asha, []).await;
    for email in ["b@example.com", "c@example.com"] {
        let action = Action::ProvideContact(ContactDetails::parse(email, "+919876543210").unwrap());
        act_now(&app.state, id, &asha, action).await.unwrap();
    }
    id
}

async fn download(app: &TestApp, id: Uuid) -> String {
    let response = app.get(&format!("/quotes/{id}/proof.json")).await;
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        disposition.starts_with("attachment; filename=\"quote-Q-"),
        "{disposition}"
    );
    response.text().await.unwrap()
}

async fn an_auditor_downloads_a_signed_proof_the_binary_verifies_with_no_database(
    test_db: &TestDb,
) {
    let folder = tempfile::tempdir().unwrap();
    let key_file = folder.path().join("installation.key");
    let key_path = key_file.to_str().unwrap();

    // The key: made once, its public half printed, never replaced.
    let (status, made) = without_a_database(&["keys", "init", "--key-file", key_path]).await;
    assert_eq!(status, Some(0), "{made}");
    let key = InstallationKey::load(&key_file).unwrap().unwrap();
    assert!(made.contains(&key.public_hex()), "{made}");
    let (status, again) = without_a_database(&["keys", "init", "--key-file", key_path]).await;
    assert_eq!(status, Some(1), "{again}");
    assert!(again.contains("already holds a key"), "{again}");
    let (status, shown) = without_a_database(&["keys", "show", "--key-file", key_path]).await;
    assert_eq!((status, shown.trim()), (Some(0), key.public_hex().as_str()));

    let state = AppState::open(test_db.db.clone())
        .await
        .unwrap()
        .with_signing_key(Some(key));
    let app = TestApp::spawn_state(state).await;
    let id = quote_with_history(&app).await;
    let events = app.state.store.read_stream(id, 0).await.unwrap();
    app.sign_in_as("audrey", &[Role::Auditor]).await;
    let public = app.state.signing_key.as_ref().unwrap().public_hex();

    let timeline = html_page(app.get(&format!("/quotes/{id}/timeline")).await, 200).await;
    assert!(
        timeline.contains(&format!(r#"href="/quotes/{id}/proof.json""#)),
        "{timeline}"
    );
    let verify_page = html_page(app.get("/audit/verify").await, 200).await;
    assert!(verify_page.contains(&public), "{verify_page}");

    let file = download(&app, id).await;
    let document: Value = serde_json::from_str(&file).unwrap();
    assert_eq!(document["head"]["version"], events.len() as i64);
    assert_eq!(document["exported_by"], "audrey");
    let listed: Vec<&str> = document["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["hash"].as_str().unwrap())
        .collect();
    let stored: Vec<&str> = events.iter().map(|e| e.hash.as_str()).collect();
    assert_eq!(
        listed, stored,
        "every stored event, in order, with its hash"
    );
    let checked = proof::check(&file, Some(&public)).unwrap();
    assert!(checked.is_proven(), "{checked:?}");

    let path = folder.path().join("quote.json");
    std::fs::write(&path, &file).unwrap();
    let path = path.to_str().unwrap();
    let (status, said) = without_a_database(&["verify", "--file", path, "--key", &public]).await;
    assert_eq!(status, Some(0), "{said}");
    assert!(
        said.contains(&format!("{} events, the head at event {0}", events.len())),
        "{said}"
    );
    assert!(
        said.contains(&format!("Signed by the installation key {public}")),
        "{said}"
    );
    assert!(said.contains("Verified."), "{said}");

    // Without the installation's key to hold it to, a signature shows nothing.
    let (status, said) = without_a_database(&["verify", "--file", path]).await;
    assert_eq!(status, Some(1), "{said}");
    assert!(said.contains("The hash chain is intact"), "{said}");
    assert!(
        said.contains(&format!(
            "NOT CHECKED: the signature holds for the key the file names, {public}"
        )),
        "{said}"
    );
    let (status, said) = without_a_database(&["verify", "--file", path, "--key", "abc"]).await;
    assert_eq!(status, Some(1), "{said}");
    assert!(said.contains("--key must be a public key"), "{said}");

    // The contact details of event 7 changed in the file.
    let mut altered = document.clone();
    altered["events"][6]["payload"]["email"] = Value::from("mallory@example.com");
    std::fs::write(folder.path().join("altered.json"), altered.to_string()).unwrap();
    let altered_path = folder.path().join("altered.json");
    let (status, said) =
        without_a_database(&["verify", "--file", altered_path.to_str().unwrap()]).await;
    assert_eq!(status, Some(1), "{said}");
    assert!(
        said.contains("BROKEN: event 7 (ContactDetailsProvided) was altered: its content does not match its hash."),
        "{said}"
    );
    assert!(said.contains("SIGNATURE INVALID"), "{said}");
    assert!(said.contains("NOT VERIFIED."), "{said}");

    // Signed, but by another installation than the one expected.
    let other = InstallationKey::from_seed([3; 32]).public_hex();
    let (status, said) = without_a_database(&["verify", "--file", path, "--key", &other]).await;
    assert_eq!(status, Some(1), "{said}");
    assert!(said.contains("SIGNED BY ANOTHER KEY"), "{said}");

    // Not a proof at all.
    let (status, said) = without_a_database(&["verify", "--file", key_path]).await;
    assert_eq!(status, Some(1), "{said}");
    assert!(said.contains("this is not JSON"), "{said}");

    // Only auditors download proofs.
    let underwriter = app.new_browser();
    underwriter.sign_in_as("uma", &[Role::Underwriter]).await;
    let refused = underwriter.get(&format!("/quotes/{id}/proof.json")).await;
    assert_eq!(refused.status().as_u16(), 403);
    let timeline = html_page(
        underwriter.get(&format!("/quotes/{id}/timeline")).await,
        200,
    )
    .await;
    assert!(!timeline.contains("proof.json"), "{timeline}");
    let unknown = app
        .get(&format!("/quotes/{}/proof.json", Uuid::now_v7()))
        .await;
    assert_eq!(unknown.status().as_u16(), 404);

    // A history altered in the database is not vouched for.
    quoteline::on_backend!(&test_db.db, pool => {
        sqlx::query("UPDATE events SET actor = 'mallory' WHERE stream_id = $1 AND version = 2")
            .bind(id)
            .execute(pool)
            .await
            .unwrap();
    });
    let body = html_page(app.get(&format!("/quotes/{id}/proof.json")).await, 409).await;
    assert!(body.contains("does not verify"), "{body}");
    assert!(body.contains("Its event 2 does not match"), "{body}");
}

async fn an_archived_quote_exports_the_same_proof_and_without_a_key_it_is_unsigned(
    test_db: &TestDb,
) {
    let app = TestApp::spawn(test_db).await;
    let asha = Actor::new("asha", [Role::Agent]);
    let uma = Actor::new("uma", [Role::Underwriter]);
    let id = quote_through_service(
        &app,
        &asha,
        [(asha.clone(), Action::Finalize), (uma, Action::Approve)],
    )
    .await;
    app.sign_in_as("audrey", &[Role::Auditor]).await;

    let before = download(&app, id).await;
    let checked = proof::check(&before, None).unwrap();
    assert_eq!(checked.chain, Ok(()));
    assert_eq!(checked.signer, Signer::Unsigned);
    assert!(!checked.is_proven());
    let page = html_page(app.get("/audit/verify").await, 200).await;
    assert!(page.contains("This installation has no key yet"), "{page}");

    let location = ArchiveLocation::open(&format!("memory:///proof-{}", Uuid::now_v7())).unwrap();
    let cutoff = chrono::Utc::now() + chrono::Duration::days(1);
    let archived = quoteline::archive::archive(&app.state.db, &location, cutoff, 1_000, |_, _| {})
        .await
        .unwrap();
    assert!(archived.events > 0, "{archived:?}");
    let after = download(&app, id).await;
    let events = |file: &str| serde_json::from_str::<Value>(file).unwrap()["events"].clone();
    assert_eq!(
        events(&after),
        events(&before),
        "the archived history is the same history"
    );
    assert_eq!(proof::check(&after, None).unwrap().chain, Ok(()));
}
