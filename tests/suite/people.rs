//! People, on both backends: an admin adds, changes the roles of, deactivates,
//! reactivates and resets the password of people through pages with confirm steps;
//! every change is an event on the person's stream and `users` is their fold; the
//! quote timeline shows the roles a decider held when they decided.

use std::collections::BTreeMap;

use quoteline::eventstore::checkpoints;
use quoteline::identity::person::{Person, PersonEvent, is_person_event};
use quoteline::identity::{self, ChangedBy, PeopleError, UsersProjection, people, projection};
use quoteline::kernel::{Actor, Role};
use quoteline::on_backend;
use quoteline::quoting::domain::Action;
use quoteline::state::AppState;
use uuid::Uuid;

use crate::crash::event_log;
use crate::support::{
    TestApp, TestDb, assert_is_redirect_to, field, html_page, quote_through_service,
};

storage_tests!(
    an_admin_adds_a_person_who_must_choose_their_own_password,
    roles_change_behind_a_confirm_step_and_a_stale_form_is_refused,
    deactivation_ends_every_session_at_once_and_reactivation_lets_them_back,
    a_reset_gives_a_one_time_password_and_ends_every_session,
    no_change_leaves_the_installation_without_an_active_admin,
    the_users_table_is_the_fold_of_the_person_events,
    people_from_before_events_get_their_person_added_at_start_up,
    the_command_line_adds_a_person_through_the_same_events,
    the_quote_timeline_shows_the_roles_a_decider_held_when_deciding,
    verify_covers_the_person_streams,
);

async fn person(app: &TestApp, username: &str) -> Person {
    projection::person_named(&app.state.db, username)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("{username} exists"))
}

async fn event_count(app: &TestApp) -> i64 {
    on_backend!(&app.state.db, pool => {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM events").fetch_one(pool).await
    })
    .unwrap()
}

/// The one-time password on a page that shows one.
fn one_time_password(page: &str) -> String {
    let marker = r#"<code id="one-time-password">"#;
    let start = page.find(marker).expect("a one-time password") + marker.len();
    let end = page[start..].find('<').unwrap();
    page[start..start + end].to_owned()
}

async fn an_admin_adds_a_person_who_must_choose_their_own_password(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    app.sign_in_as("root", &[Role::Admin]).await;
    let form = html_page(app.get("/people/new").await, 200).await;
    let key = field(&form, "idempotency_key");
    let before = event_count(&app).await;

    // Bad input: the form again, with what is wrong beside each input.
    let bad = html_page(
        app.post_form(
            "/people/new",
            &[
                ("username", "nina smith"),
                ("version", "0"),
                ("idempotency_key", &key),
            ],
        )
        .await,
        422,
    )
    .await;
    assert!(bad.contains("Use 1 to 64 letters"), "{bad}");
    assert!(bad.contains("Choose at least one role"), "{bad}");
    let bad_role = html_page(
        app.post_form(
            "/people/new",
            &[("username", "nina"), ("roles", "pilot"), ("version", "0")],
        )
        .await,
        422,
    )
    .await;
    assert!(
        bad_role.contains("Choose roles from the list"),
        "{bad_role}"
    );

    // The confirm step writes nothing.
    let fields = [
        ("username", "nina"),
        ("roles", "auditor"),
        ("roles", "agent"),
        ("version", "0"),
        ("idempotency_key", key.as_str()),
    ];
    let confirm = html_page(app.post_form("/people/new", &fields).await, 200).await;
    assert!(
        confirm.contains("Add nina as agent and auditor?"),
        "{confirm}"
    );
    assert!(
        confirm.contains(r#"name="confirmed" value="yes""#),
        "{confirm}"
    );
    assert_eq!(event_count(&app).await, before);

    let mut confirmed = fields.to_vec();
    confirmed.push(("confirmed", "yes"));
    let added = app.post_form("/people/new", &confirmed).await;
    assert_eq!(
        added.headers().get("cache-control").unwrap(),
        "no-store",
        "a password shown once is never cached"
    );
    let added = html_page(added, 200).await;
    let password = one_time_password(&added);
    assert!(added.contains("nina was added"), "{added}");

    // One event, in the person's stream, with no password in it.
    let nina = person(&app, "nina").await;
    assert_eq!(nina.roles, [Role::Agent, Role::Auditor]);
    let stream = app.state.store.read_stream(nina.id, 0).await.unwrap();
    assert_eq!(stream.len(), 1);
    assert_eq!(stream[0].event_type, "PersonAdded");
    assert_eq!(stream[0].actor, "root");
    assert!(!stream[0].payload.to_string().contains(&password));
    assert_eq!(event_count(&app).await, before + 1);

    // The same name again: refused on the form.
    let again = html_page(app.post_form("/people/new", &confirmed).await, 422).await;
    assert!(again.contains("nina is taken"), "{again}");

    // Nina signs in with it and must choose her own before anything else.
    let nina_browser = app.new_browser();
    assert_is_redirect_to(
        &nina_browser.sign_in("nina", &password).await,
        "/account/password",
    );
    assert_is_redirect_to(&nina_browser.get("/quotes").await, "/account/password");
    assert_is_redirect_to(&nina_browser.get("/audit").await, "/account/password");
    let page = html_page(nina_browser.get("/account/password").await, 200).await;
    assert!(
        page.contains("You signed in with a one-time password"),
        "{page}"
    );
    let new = "quiet lantern orchard 88";
    let changed = nina_browser
        .post_form(
            "/account/password",
            &[
                ("current_password", &password),
                ("new_password", new),
                ("confirm_password", new),
            ],
        )
        .await;
    assert_is_redirect_to(&changed, "/account/password/changed");
    html_page(nina_browser.get("/quotes").await, 200).await;
    let events: Vec<String> = app
        .state
        .store
        .read_stream(nina.id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(events, ["PersonAdded", "PasswordChanged"]);

    // The list shows her, with a last sign-in; nobody but an admin sees it.
    let list = html_page(app.get("/people").await, 200).await;
    let row = &list[list.find(">nina</a>").unwrap()..];
    let row = &row[..row.find("</tr>").unwrap()];
    assert!(
        row.contains("agent and auditor") && row.contains("Active"),
        "{row}"
    );
    assert!(!row.contains("Never"), "{row}");
    // Nina, an auditor too, reads the list but is offered no change.
    let read = html_page(nina_browser.get("/people").await, 200).await;
    assert!(
        read.contains(">nina</a>") && !read.contains("Add a person"),
        "{read}"
    );
    html_page(nina_browser.get("/people/new").await, 403).await;
}

async fn roles_change_behind_a_confirm_step_and_a_stale_form_is_refused(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    app.sign_in_as("root", &[Role::Admin]).await;
    let uma_browser = app.new_browser();
    uma_browser.sign_in_as("uma", &[Role::Underwriter]).await;
    html_page(uma_browser.get("/audit").await, 403).await;
    let uma = person(&app, "uma").await;
    let path = format!("/people/{}/roles", uma.id);

    let form = html_page(app.get(&path).await, 200).await;
    let version = field(&form, "version");
    let key = field(&form, "idempotency_key");
    assert!(form.contains(r#"value="underwriter" checked"#), "{form}");

    let none = html_page(
        app.post_form(&path, &[("version", &version), ("idempotency_key", &key)])
            .await,
        422,
    )
    .await;
    assert!(none.contains("Choose at least one role"), "{none}");
    let same = html_page(
        app.post_form(&path, &[("roles", "underwriter"), ("version", &version)])
            .await,
        422,
    )
    .await;
    assert!(
        same.contains("uma already holds exactly these roles"),
        "{same}"
    );

    let fields = [
        ("roles", "underwriter"),
        ("roles", "auditor"),
        ("version", version.as_str()),
        ("idempotency_key", key.as_str()),
    ];
    let confirm = html_page(app.post_form(&path, &fields).await, 200).await;
    assert!(confirm.contains("Role granted: auditor"), "{confirm}");
    assert_eq!(person(&app, "uma").await.roles, [Role::Underwriter]);

    let mut confirmed = fields.to_vec();
    confirmed.push(("confirmed", "yes"));
    assert_is_redirect_to(
        &app.post_form(&path, &confirmed).await,
        &format!("/people/{}", uma.id),
    );
    assert_eq!(
        person(&app, "uma").await.roles,
        [Role::Underwriter, Role::Auditor]
    );
    // Her open session has the new role at its next request.
    html_page(uma_browser.get("/audit").await, 200).await;
    // The same form sent again is the same change, not a second one.
    assert_is_redirect_to(
        &app.post_form(&path, &confirmed).await,
        &format!("/people/{}", uma.id),
    );
    assert_eq!(person(&app, "uma").await.version, 2);

    // A form drawn before that change is stale.
    let stale = html_page(
        app.post_form(
            &path,
            &[
                ("roles", "agent"),
                ("version", &version),
                ("idempotency_key", &Uuid::new_v4().to_string()),
                ("confirmed", "yes"),
            ],
        )
        .await,
        409,
    )
    .await;
    assert!(
        stale.contains("changed since you opened the page"),
        "{stale}"
    );

    // An admin cannot take away their own admin role; nobody else may try at all.
    let root = person(&app, "root").await;
    let own = format!("/people/{}/roles", root.id);
    let refused = html_page(
        app.post_form(
            &own,
            &[("roles", "auditor"), ("version", &root.version.to_string())],
        )
        .await,
        422,
    )
    .await;
    assert!(
        refused.contains("cannot take away your own admin role"),
        "{refused}"
    );
    let by_service = people::set_roles(
        &app.state.store,
        &ChangedBy {
            id: Some(root.id),
            ..ChangedBy::tool("root")
        },
        root.id,
        root.version,
        &[Role::Auditor],
    )
    .await;
    assert!(
        matches!(&by_service, Err(PeopleError::Refused(why)) if why.contains("own admin role")),
        "{by_service:?}"
    );
    html_page(
        uma_browser
            .post_form(
                &path,
                &[("roles", "admin"), ("version", "2"), ("confirmed", "yes")],
            )
            .await,
        403,
    )
    .await;
    assert_eq!(person(&app, "uma").await.version, 2);
    assert_eq!(person(&app, "root").await.roles, [Role::Admin]);
}

async fn deactivation_ends_every_session_at_once_and_reactivation_lets_them_back(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    app.sign_in_as("root", &[Role::Admin]).await;
    let asha_browser = app.new_browser();
    let password = asha_browser.add_user("asha", &[Role::Agent]).await;
    asha_browser.sign_in("asha", &password).await;
    html_page(asha_browser.get("/quotes").await, 200).await;
    let asha = person(&app, "asha").await;

    let confirm = html_page(
        app.get(&format!("/people/{}/deactivate", asha.id)).await,
        200,
    )
    .await;
    assert!(confirm.contains("Deactivate asha?"), "{confirm}");
    let done = app
        .post_form(
            &format!("/people/{}/deactivate", asha.id),
            &[
                ("version", &field(&confirm, "version")),
                ("idempotency_key", &field(&confirm, "idempotency_key")),
            ],
        )
        .await;
    assert_is_redirect_to(&done, &format!("/people/{}", asha.id));
    assert!(!person(&app, "asha").await.active);

    // Her open session is over at its very next request; she cannot sign in again.
    assert_is_redirect_to(&asha_browser.get("/quotes").await, "/login");
    assert_eq!(
        app.new_browser()
            .sign_in("asha", &password)
            .await
            .status()
            .as_u16(),
        401
    );
    // Twice is refused; so is deactivating oneself.
    html_page(
        app.get(&format!("/people/{}/deactivate", asha.id)).await,
        409,
    )
    .await;
    let root = person(&app, "root").await;
    let own = html_page(
        app.get(&format!("/people/{}/deactivate", root.id)).await,
        409,
    )
    .await;
    assert!(own.contains("You cannot deactivate yourself"), "{own}");

    let confirm = html_page(
        app.get(&format!("/people/{}/reactivate", asha.id)).await,
        200,
    )
    .await;
    assert_is_redirect_to(
        &app.post_form(
            &format!("/people/{}/reactivate", asha.id),
            &[
                ("version", &field(&confirm, "version")),
                ("idempotency_key", &field(&confirm, "idempotency_key")),
            ],
        )
        .await,
        &format!("/people/{}", asha.id),
    );
    let again = app.new_browser();
    assert_is_redirect_to(&again.sign_in("asha", &password).await, "/quotes");

    let record = html_page(app.get(&format!("/people/{}", asha.id)).await, 200).await;
    for line in [
        "asha added as agent",
        "Deactivated: cannot sign in",
        "Reactivated: can sign in again",
    ] {
        assert!(record.contains(line), "{line}: {record}");
    }
}

async fn a_reset_gives_a_one_time_password_and_ends_every_session(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    app.sign_in_as("root", &[Role::Admin]).await;
    let asha_browser = app.new_browser();
    let old = asha_browser.add_user("asha", &[Role::Agent]).await;
    asha_browser.sign_in("asha", &old).await;
    let asha = person(&app, "asha").await;
    let path = format!("/people/{}/reset", asha.id);

    let confirm = html_page(app.get(&path).await, 200).await;
    assert!(confirm.contains("Reset asha&#39;s password?"), "{confirm}");
    let fields = [
        ("version", field(&confirm, "version")),
        ("idempotency_key", field(&confirm, "idempotency_key")),
    ];
    let fields: Vec<(&str, &str)> = fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let reset = app.post_form(&path, &fields).await;
    assert_eq!(reset.headers().get("cache-control").unwrap(), "no-store");
    let new = one_time_password(&html_page(reset, 200).await);

    assert_is_redirect_to(&asha_browser.get("/quotes").await, "/login");
    let other = app.new_browser();
    assert_eq!(other.sign_in("asha", &old).await.status().as_u16(), 401);
    assert_is_redirect_to(&other.sign_in("asha", &new).await, "/account/password");

    // The form sent twice resets once: the first password stands.
    let twice = html_page(app.post_form(&path, &fields).await, 409).await;
    assert!(twice.contains("reset already"), "{twice}");
    let third = app.new_browser();
    assert_is_redirect_to(&third.sign_in("asha", &new).await, "/account/password");
    let kinds: Vec<String> = app
        .state
        .store
        .read_stream(asha.id, 0)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.event_type)
        .collect();
    assert_eq!(kinds, ["PersonAdded", "PasswordReset"]);
}

async fn no_change_leaves_the_installation_without_an_active_admin(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let store = &app.state.store;
    app.add_user("root", &[Role::Admin]).await;
    app.add_user("ann", &[Role::Admin, Role::Auditor]).await;
    let (root, ann) = (person(&app, "root").await, person(&app, "ann").await);
    let by = |who: &Person| ChangedBy {
        id: Some(who.id),
        ..ChangedBy::tool(&who.username)
    };

    // Two admins deactivating each other at once: one wins, the other is refused.
    let (by_root, by_ann) = (by(&root), by(&ann));
    let (first, second) = tokio::join!(
        people::deactivate(store, &by_root, ann.id, ann.version),
        people::deactivate(store, &by_ann, root.id, root.version),
    );
    let outcomes = [first.is_ok(), second.is_ok()];
    assert_eq!(
        outcomes.iter().filter(|ok| **ok).count(),
        1,
        "{first:?} {second:?}"
    );
    let refused = if first.is_ok() { second } else { first };
    assert!(
        matches!(&refused, Err(PeopleError::Refused(why)) if why.contains("no active admin")),
        "{refused:?}"
    );

    // Whoever is left is the last: neither their role nor they can be taken away.
    let last = if outcomes[0] { root } else { ann };
    let last = person(&app, &last.username).await;
    let tool = ChangedBy::tool("command line");
    let revoked = people::set_roles(store, &tool, last.id, last.version, &[Role::Auditor]).await;
    assert!(
        matches!(&revoked, Err(PeopleError::Refused(why)) if why.contains("no active admin")),
        "{revoked:?}"
    );
    let gone = people::deactivate(store, &tool, last.id, last.version).await;
    assert!(matches!(gone, Err(PeopleError::Refused(_))), "{gone:?}");
    assert!(person(&app, &last.username).await.is_admin());
}

/// `users` as stored, and the fold of every person event in the log, by id.
async fn users_and_fold(state: &AppState) -> (BTreeMap<Uuid, Person>, BTreeMap<Uuid, Person>) {
    let stored = people::directory(&state.db)
        .await
        .unwrap()
        .into_iter()
        .map(|(p, _)| (p.id, p))
        .collect();
    let mut folded: BTreeMap<Uuid, Person> = BTreeMap::new();
    // Each stream read whole (the gap-safe read of the whole log may stop short on
    // PostgreSQL while another test's transaction is open in the cluster).
    for recorded in event_log(state).await {
        if !is_person_event(&recorded) {
            continue;
        }
        let event = PersonEvent::decode(&recorded).unwrap();
        let before = folded.remove(&recorded.stream_id);
        let after = Person::evolve(before, &recorded, &event).unwrap();
        folded.insert(after.id, after);
    }
    (stored, folded)
}

async fn the_users_table_is_the_fold_of_the_person_events(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let store = &app.state.store;
    let tool = ChangedBy::tool("test");
    app.add_user("root", &[Role::Admin]).await;
    for (name, roles) in [
        ("asha", &[Role::Agent][..]),
        ("uma", &[Role::Underwriter]),
        ("ada", &[Role::Auditor, Role::Agent]),
    ] {
        app.add_user(name, roles).await;
    }
    // A quote between the people's events: the projection leaves it alone.
    let asha = Actor::new("asha", [Role::Agent]);
    quote_through_service(&app, &asha, []).await;
    let uma = person(&app, "uma").await;
    let uma = people::set_roles(
        store,
        &tool,
        uma.id,
        uma.version,
        &[Role::Auditor, Role::Admin],
    )
    .await
    .unwrap();
    let asha = person(&app, "asha").await;
    let asha = people::deactivate(store, &tool, asha.id, asha.version)
        .await
        .unwrap();
    people::reactivate(store, &tool, asha.id, asha.version)
        .await
        .unwrap();
    let ada = person(&app, "ada").await;
    people::deactivate(store, &tool, ada.id, ada.version)
        .await
        .unwrap();
    people::reset_password(store, &tool, uma.id, uma.version, "not-a-hash".into(), true)
        .await
        .unwrap();

    let (stored, folded) = users_and_fold(&app.state).await;
    assert_eq!(stored.len(), 4);
    assert_eq!(stored, folded);
    assert_eq!(
        stored[&uma.id].roles,
        [Role::Auditor, Role::Admin],
        "{stored:?}"
    );
    assert!(!stored[&ada.id].active);

    // Emptied and caught up again from the first event: the same rows.
    let mut pooled = app.state.db.acquire().await.unwrap();
    pooled
        .as_conn()
        .execute_plain("DELETE FROM users")
        .await
        .unwrap();
    checkpoints::forget(pooled.as_conn(), "users")
        .await
        .unwrap();
    drop(pooled);
    assert!(
        UsersProjection::default()
            .catch_up(&app.state.db)
            .await
            .unwrap()
            > 0
    );
    let (again, _) = users_and_fold(&app.state).await;
    assert_eq!(again, stored);
    // Rebuilt beside the live table and swapped in: the same rows, and its unique
    // username still refuses a second person of a name.
    let rebuilt = quoteline::rebuild::rebuild(&app.state.db, Some("users"), |_, _| {})
        .await
        .unwrap();
    assert_eq!(rebuilt.projections, ["users"]);
    assert_eq!(users_and_fold(&app.state).await.0, stored);
    let twice = identity::add_user(store, "asha", "long enough pw", &[Role::Agent]).await;
    assert!(
        matches!(twice, Err(identity::AddUserError::Duplicate(_))),
        "{twice:?}"
    );
    // Applying the log again changes nothing.
    let mut pooled = app.state.db.acquire().await.unwrap();
    let mut tx = pooled.as_conn().begin_write().await.unwrap();
    let log = event_log(&app.state).await;
    quoteline::eventstore::Projector::apply(&UsersProjection::default(), tx.as_conn(), &log)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    drop(pooled);
    assert_eq!(users_and_fold(&app.state).await.0, stored);
}

async fn people_from_before_events_get_their_person_added_at_start_up(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let password = app.add_user("root", &[Role::Admin]).await;
    // A person as an older version left them: a row in users, none in the log.
    let old = Uuid::now_v7();
    let created = chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05.123456Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    on_backend!(&app.state.db, pool => {
        sqlx::query(
            "INSERT INTO users (id, username, roles, created_at, active, version) \
             VALUES ($1, 'olga', 'underwriter,auditor', $2, TRUE, 0)",
        )
        .bind(old)
        .bind(created)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO credentials (user_id, password_hash, session_epoch, \
             must_change_password) SELECT $1, password_hash, 0, FALSE FROM credentials \
             LIMIT 1",
        )
        .bind(old)
        .execute(pool)
        .await
        .unwrap();
    });

    let reopened = AppState::open(app.state.db.clone()).await.unwrap();
    let stream = reopened.store.read_stream(old, 0).await.unwrap();
    assert_eq!(stream.len(), 1);
    assert_eq!(stream[0].actor, "import");
    assert_eq!(stream[0].recorded_at, created);
    assert_eq!(
        PersonEvent::decode(&stream[0]).unwrap(),
        PersonEvent::PersonAdded {
            username: "olga".into(),
            roles: vec![Role::Underwriter, Role::Auditor],
        }
    );
    let (stored, folded) = users_and_fold(&reopened).await;
    assert_eq!(stored, folded);
    assert_eq!(stored[&old].version, 1);
    // Opening again imports nothing twice; olga signs in with the password she had.
    AppState::open(app.state.db.clone()).await.unwrap();
    assert_eq!(reopened.store.read_stream(old, 0).await.unwrap().len(), 1);
    let olga = app.new_browser();
    assert_is_redirect_to(
        &olga.sign_in("olga", &password).await,
        "/underwriting/queue",
    );
}

async fn the_command_line_adds_a_person_through_the_same_events(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let password = crate::crash::add_agent(test_db, "carl").await;

    let carl = person(&app, "carl").await;
    let stream = app.state.store.read_stream(carl.id, 0).await.unwrap();
    assert_eq!(stream.len(), 1);
    assert_eq!(stream[0].actor, "command line");
    assert_eq!(
        PersonEvent::decode(&stream[0]).unwrap(),
        PersonEvent::PersonAdded {
            username: "carl".into(),
            roles: vec![Role::Agent],
        }
    );
    let (stored, folded) = users_and_fold(&app.state).await;
    assert_eq!(stored, folded);
    // Not a one-time password: carl goes straight to his quotes.
    assert_is_redirect_to(&app.sign_in("carl", &password).await, "/quotes");
}

async fn the_quote_timeline_shows_the_roles_a_decider_held_when_deciding(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    app.sign_in_as("ada", &[Role::Auditor]).await;
    app.add_user("asha", &[Role::Agent]).await;
    app.add_user("uma", &[Role::Underwriter]).await;
    let agent = Actor::new("asha", [Role::Agent]);
    let underwriter = Actor::new("uma", [Role::Underwriter]);
    let id = quote_through_service(
        &app,
        &agent,
        [
            (agent.clone(), Action::Finalize),
            (underwriter, Action::Approve),
        ],
    )
    .await;
    // Later uma moves to audit.
    let uma = person(&app, "uma").await;
    people::set_roles(
        &app.state.store,
        &ChangedBy::tool("test"),
        uma.id,
        uma.version,
        &[Role::Auditor],
    )
    .await
    .unwrap();

    let timeline = html_page(app.get(&format!("/quotes/{id}/timeline")).await, 200).await;
    assert!(
        timeline.contains("uma held then: <strong>underwriter</strong>"),
        "{timeline}"
    );
    assert_eq!(
        timeline.matches("held then:").count(),
        1,
        "only the decision"
    );
    let marker = format!(r#"<a href="/people/{}?at="#, uma.id);
    let start = timeline.find(&marker).expect("a link to uma's record") + r#"<a href=""#.len();
    let link = &timeline[start..start + timeline[start..].find('"').unwrap()];

    let record = html_page(app.get(link).await, 200).await;
    assert!(
        record.contains(r#"<strong id="roles-then">underwriter</strong>"#),
        "{record}"
    );
    assert!(
        record.contains(r#"<dd id="roles-now">auditor</dd>"#),
        "{record}"
    );
    assert!(record.contains("Role taken away: underwriter"), "{record}");
    // An auditor reads people's records but changes none of them.
    assert!(!record.contains("/reset"), "{record}");
    html_page(app.get(&format!("/people/{}/roles", uma.id)).await, 403).await;
    html_page(
        app.get(&format!("/people/{}?at=yesterday", uma.id)).await,
        400,
    )
    .await;
    html_page(app.get("/people/not-an-id").await, 404).await;
    html_page(app.get(&format!("/people/{}", Uuid::now_v7())).await, 404).await;
}

async fn verify_covers_the_person_streams(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    app.add_user("root", &[Role::Admin]).await;
    let asha = identity::add_user(&app.state.store, "asha", "long enough pw", &[Role::Agent])
        .await
        .unwrap();
    assert!(app.state.store.verify().await.unwrap().is_intact());

    // The record altered behind the store's back: asha made an admin.
    let sql = if test_db.is_postgres() {
        r#"UPDATE events SET payload = '{"username": "asha", "roles": ["admin"]}'::jsonb WHERE stream_id = $1 AND version = 1"#
    } else {
        r#"UPDATE events SET payload = '{"username": "asha", "roles": ["admin"]}' WHERE stream_id = $1 AND version = 1"#
    };
    on_backend!(&app.state.db, pool => {
        sqlx::query(sql).bind(asha.id).execute(pool).await.map(drop)
    })
    .unwrap();

    let report = app.state.store.verify().await.unwrap();
    assert!(!report.is_intact());
    assert!(
        report
            .mismatches
            .iter()
            .any(|m| m.stream_id == asha.id && m.version == 1),
        "{report:?}"
    );
}
