//! Identity over HTTP: signing in and out, the attempt throttle, sessions, CSRF and
//! the role guards; and adding users.

use axum::Router;
use axum::routing::get;
use chrono::{TimeDelta, Utc};
use std::time::Duration;

use quoteline::identity::csrf::SIGN_IN_COOKIE;
use quoteline::identity::sessions::SessionCache;
use quoteline::identity::{
    self, AddUserError, AddressLimit, Agent, CurrentUser, SignInLimits, UnderwriterOrAuditor,
    UserCache,
};
use quoteline::kernel::Role;
use quoteline::on_backend;
use quoteline::state::{AppState, Caches};

use crate::support::{
    TestApp, TestDb, assert_is_redirect_to, csrf_token_in, html_page, post_sign_in, session_cookie,
    sign_in_through,
};

storage_tests!(
    signing_in_renews_the_session_and_sends_an_agent_to_their_quotes,
    each_role_starts_at_its_own_page,
    an_admin_starts_at_the_people_page,
    an_unknown_user_and_a_wrong_password_get_the_same_answer,
    a_username_no_account_can_have_is_refused_like_an_unknown_one,
    an_empty_sign_in_form_asks_for_both_fields,
    five_wrong_passwords_hold_back_that_name_from_that_address_even_with_the_right_one,
    the_right_password_works_again_once_the_lock_time_has_passed,
    a_successful_sign_in_starts_the_count_of_failures_again,
    the_owner_signs_in_from_another_address_while_a_guesser_is_held_back,
    an_unknown_name_is_counted_and_held_back_exactly_like_a_known_one,
    one_address_trying_many_names_is_slowed_while_other_addresses_are_not,
    visiting_the_sign_in_page_writes_no_session,
    a_forged_or_expired_sign_in_token_is_refused,
    a_signed_out_visitor_is_sent_to_sign_in,
    the_session_cookie_is_http_only_and_same_site_lax,
    signing_out_ends_the_session_in_the_store,
    signing_out_in_another_process_ends_the_session_here_within_the_cache_time,
    a_post_without_a_csrf_token_is_refused_with_a_page_and_changes_nothing,
    a_post_with_a_wrong_csrf_token_is_refused,
    a_post_from_another_site_is_refused_even_with_the_right_token,
    the_sign_in_form_needs_its_token_too,
    a_guarded_page_sends_the_signed_out_to_sign_in_whatever_the_method,
    a_guarded_page_refuses_a_person_without_its_role,
    a_guarded_page_lets_in_a_person_with_any_of_its_roles,
    adding_a_user_twice_is_refused_as_a_duplicate,
    a_password_is_stored_only_as_an_argon2id_hash,
    a_short_or_empty_password_is_refused,
    a_role_changed_in_this_process_is_seen_by_the_next_request,
    a_role_changed_by_another_process_is_seen_within_the_time_to_live,
    the_user_cache_holds_at_most_its_capacity,
);

async fn signing_in_renews_the_session_and_sends_an_agent_to_their_quotes(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let password = app.add_user("asha", &[Role::Agent]).await;
    let page = app.get("/login").await;
    assert_eq!(session_cookie(&page), None, "a visitor has no session");
    let token = csrf_token_in(&html_page(page, 200).await).unwrap();

    let response = post_sign_in(
        app.client.post(app.url("/login")),
        &token,
        "asha",
        &password,
    )
    .await;

    assert_is_redirect_to(&response, "/quotes");
    session_cookie(&response).expect("sign-in sets the session cookie");
    assert_is_redirect_to(&app.get("/").await, "/quotes");
}

async fn each_role_starts_at_its_own_page(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let people: [(&str, &[Role], &str); 4] = [
        ("uma", &[Role::Underwriter], "/underwriting/queue"),
        ("ada", &[Role::Auditor], "/audit"),
        (
            "both",
            &[Role::Auditor, Role::Underwriter],
            "/underwriting/queue",
        ),
        ("all", &[Role::Admin, Role::Auditor, Role::Agent], "/quotes"),
    ];

    for (username, roles, home) in people {
        let password = app.add_user(username, roles).await;
        let response = app.sign_in(username, &password).await;

        assert_is_redirect_to(&response, home);
        assert_is_redirect_to(&app.get("/").await, home);
        assert_is_redirect_to(&app.post_form("/logout", &[]).await, "/login");
    }
}

async fn an_admin_starts_at_the_people_page(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let password = app.add_user("root", &[Role::Admin]).await;

    assert_is_redirect_to(&app.sign_in("root", &password).await, "/people");
    assert_is_redirect_to(&app.get("/").await, "/people");
    let body = html_page(app.get("/people").await, 200).await;

    assert!(body.contains("<h1>People</h1>"), "{body}");
    assert!(
        body.contains("Signed in as <strong>root</strong>"),
        "{body}"
    );
}

async fn an_unknown_user_and_a_wrong_password_get_the_same_answer(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    app.add_user("asha", &[Role::Agent]).await;

    let unknown = html_page(app.sign_in("nobody", "whatever-password").await, 401).await;
    let wrong = html_page(app.sign_in("asha", "not-her-password").await, 401).await;

    for body in [&unknown, &wrong] {
        assert!(body.contains("<h1>Sign in</h1>"), "{body}");
        assert!(
            body.contains("Enter a correct username and password"),
            "{body}"
        );
        assert!(
            !body.contains("password\" value"),
            "a password is never echoed"
        );
    }
    assert!(unknown.contains(r#"value="nobody""#), "{unknown}");
    assert!(wrong.contains(r#"value="asha""#), "{wrong}");
    assert_is_redirect_to(&app.get("/").await, "/login");
}

/// PostgreSQL cannot hold a NUL in text, so a lookup of such a name failed (a 500);
/// the random forms test found it.
async fn a_username_no_account_can_have_is_refused_like_an_unknown_one(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    app.add_user("asha", &[Role::Agent]).await;

    for username in ["as\0ha", "asha\u{7f}", "a sha", &"a".repeat(65)] {
        let body = html_page(app.sign_in(username, "whatever-password").await, 401).await;
        assert!(
            body.contains("Enter a correct username and password"),
            "{username:?}: {body}"
        );
    }
}

async fn an_empty_sign_in_form_asks_for_both_fields(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;

    let body = html_page(app.sign_in("", "").await, 422).await;

    assert!(body.contains("Enter your username"), "{body}");
    assert!(body.contains("Enter your password"), "{body}");
}

async fn five_wrong_passwords_hold_back_that_name_from_that_address_even_with_the_right_one(
    test_db: &TestDb,
) {
    let app = TestApp::spawn(test_db).await;
    let password = app.add_user("asha", &[Role::Agent]).await;
    for attempt in 1..=5 {
        let response = app.sign_in("asha", "a-wrong-guess").await;
        assert_eq!(response.status().as_u16(), 401, "attempt {attempt}");
    }

    let response = app.sign_in("asha", &password).await;

    // The lock began at the fifth attempt, a moment ago: at most 30 seconds.
    let retry_after: i64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=30).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    let body = html_page(response, 429).await;
    assert!(body.contains("Too many attempts to sign in"), "{body}");
    assert!(
        body.contains(&format!("Try again in {retry_after} seconds")),
        "{body}"
    );
    assert_is_redirect_to(&app.get("/").await, "/login");
}

async fn the_right_password_works_again_once_the_lock_time_has_passed(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let password = app.add_user("asha", &[Role::Agent]).await;
    for _ in 1..=5 {
        app.sign_in("asha", "a-wrong-guess").await;
    }
    assert_eq!(app.sign_in("asha", &password).await.status().as_u16(), 429);

    set_locked_until(&app, "asha", Utc::now() - TimeDelta::seconds(1)).await;
    let response = app.sign_in("asha", &password).await;

    assert_is_redirect_to(&response, "/quotes");
    assert_eq!(attempts_counted(&app, "asha").await, 0);
}

async fn a_successful_sign_in_starts_the_count_of_failures_again(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let password = app.add_user("asha", &[Role::Agent]).await;
    for _ in 1..=4 {
        app.sign_in("asha", "a-wrong-guess").await;
    }
    assert_is_redirect_to(&app.sign_in("asha", &password).await, "/quotes");
    app.post_form("/logout", &[]).await;

    for attempt in 1..=4 {
        let response = app.sign_in("asha", "a-wrong-guess").await;
        assert_eq!(response.status().as_u16(), 401, "attempt {attempt}");
    }

    assert_is_redirect_to(&app.sign_in("asha", &password).await, "/quotes");
}

async fn a_signed_out_visitor_is_sent_to_sign_in(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;

    assert_is_redirect_to(&app.get("/").await, "/login");
    let body = html_page(app.get("/login").await, 200).await;
    assert!(body.contains("<h1>Sign in</h1>"), "{body}");
    assert!(
        body.contains(r#"<label for="username">Username</label>"#),
        "{body}"
    );
    assert!(
        body.contains(r#"<label for="password">Password</label>"#),
        "{body}"
    );
}

async fn the_session_cookie_is_http_only_and_same_site_lax(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let password = app.add_user("asha", &[Role::Agent]).await;

    let response = app.sign_in("asha", &password).await;

    let set_cookie = set_cookie_named(&response, "quoteline_session").expect("a session");
    assert!(set_cookie.contains("HttpOnly"), "{set_cookie}");
    assert!(set_cookie.contains("SameSite=Lax"), "{set_cookie}");
    assert!(set_cookie.contains("Max-Age=1800"), "{set_cookie}");
    assert!(!set_cookie.contains("Secure"), "{set_cookie}");
}

async fn signing_out_ends_the_session_in_the_store(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let password = app.add_user("asha", &[Role::Agent]).await;
    let signed_in = app.sign_in("asha", &password).await;
    let session = session_cookie(&signed_in).unwrap();

    let response = app.post_form("/logout", &[]).await;

    assert_is_redirect_to(&response, "/login");
    assert_is_redirect_to(&app.get("/").await, "/login");
    // The old cookie, replayed from elsewhere, opens nothing either.
    let replayed = TestApp::browser()
        .get(app.url("/"))
        .header("cookie", format!("quoteline_session={session}"))
        .send()
        .await
        .unwrap();
    assert_is_redirect_to(&replayed, "/login");
}

async fn signing_out_in_another_process_ends_the_session_here_within_the_cache_time(
    test_db: &TestDb,
) {
    let time_to_live = Duration::from_millis(500);
    let caches = Caches {
        sessions: SessionCache {
            capacity: 100,
            time_to_live,
        },
        ..Caches::default()
    };
    let open = || quoteline::AppState::open_with(test_db.db.clone(), caches);
    let a = TestApp::spawn_state(open().await.unwrap()).await;
    let b = TestApp::spawn_state(open().await.unwrap()).await;
    let password = a.add_user("asha", &[Role::Agent]).await;
    let session = session_cookie(&a.sign_in("asha", &password).await).unwrap();
    let with_cookie = |app: &TestApp| {
        TestApp::browser()
            .get(app.url("/"))
            .header("cookie", format!("quoteline_session={session}"))
            .send()
    };
    // B reads the session (and keeps it).
    assert_is_redirect_to(&with_cookie(&b).await.unwrap(), "/quotes");

    assert_is_redirect_to(&a.post_form("/logout", &[]).await, "/login");
    tokio::time::sleep(time_to_live + Duration::from_millis(200)).await;

    assert_is_redirect_to(&with_cookie(&b).await.unwrap(), "/login");
    assert_is_redirect_to(&with_cookie(&a).await.unwrap(), "/login");
}

async fn a_post_without_a_csrf_token_is_refused_with_a_page_and_changes_nothing(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    app.sign_in_as("asha", &[Role::Agent]).await;

    let response = app
        .client
        .post(app.url("/logout"))
        .form(&[("confirm", "yes")])
        .send()
        .await
        .unwrap();

    let body = html_page(response, 403).await;
    assert!(body.contains("This form has expired"), "{body}");
    assert_is_redirect_to(&app.get("/").await, "/quotes");
    // Not a form at all: refused the same way.
    let bare = app.client.post(app.url("/logout")).send().await.unwrap();
    html_page(bare, 403).await;
    assert_is_redirect_to(&app.get("/").await, "/quotes");
}

async fn a_post_with_a_wrong_csrf_token_is_refused(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    app.sign_in_as("asha", &[Role::Agent]).await;
    let token = app.csrf_token("/login").await;
    let wrong = "0".repeat(token.len());

    let response = app
        .client
        .post(app.url("/logout"))
        .form(&[("csrf_token", wrong.as_str())])
        .send()
        .await
        .unwrap();

    let body = html_page(response, 403).await;
    assert!(body.contains("This form has expired"), "{body}");
    assert_is_redirect_to(&app.get("/").await, "/quotes");
}

async fn a_post_from_another_site_is_refused_even_with_the_right_token(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    app.sign_in_as("asha", &[Role::Agent]).await;
    let token = app.csrf_token("/login").await;

    let response = app
        .client
        .post(app.url("/logout"))
        .header("origin", "https://evil.example")
        .header("sec-fetch-site", "cross-site")
        .form(&[("csrf_token", token.as_str())])
        .send()
        .await
        .unwrap();

    let body = html_page(response, 403).await;
    assert!(body.contains("You cannot do that"), "{body}");
    assert_is_redirect_to(&app.get("/").await, "/quotes");
}

async fn the_sign_in_form_needs_its_token_too(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let password = app.add_user("asha", &[Role::Agent]).await;
    app.get("/login").await;

    let response = app
        .client
        .post(app.url("/login"))
        .form(&[("username", "asha"), ("password", password.as_str())])
        .send()
        .await
        .unwrap();

    html_page(response, 403).await;
    assert_is_redirect_to(&app.get("/").await, "/login");
}

/// The app's own routes plus two guarded test pages, under the real middleware.
async fn app_with_guarded_pages(test_db: &TestDb) -> TestApp {
    async fn agents_only(Agent(user): Agent) -> String {
        format!("hello agent {}", user.username)
    }
    async fn timeline(UnderwriterOrAuditor(user): UnderwriterOrAuditor) -> String {
        format!("hello {}", user.username)
    }
    async fn whoami(user: CurrentUser) -> String {
        user.actor().username
    }
    TestApp::spawn_with(test_db, |state| {
        let sessions = state.sessions.clone();
        let routes = identity::router()
            .route("/agents-only", get(agents_only).post(agents_only))
            .route("/timeline", get(timeline))
            .route("/whoami", get(whoami))
            .with_state(state);
        quoteline::app::middleware(Router::new().merge(routes), &sessions)
    })
    .await
}

async fn a_guarded_page_sends_the_signed_out_to_sign_in_whatever_the_method(test_db: &TestDb) {
    let app = app_with_guarded_pages(test_db).await;

    assert_is_redirect_to(&app.get("/agents-only").await, "/login");
    assert_is_redirect_to(&app.get("/whoami").await, "/login");
    assert_is_redirect_to(&app.post_form("/agents-only", &[]).await, "/login");
}

async fn a_guarded_page_refuses_a_person_without_its_role(test_db: &TestDb) {
    let app = app_with_guarded_pages(test_db).await;
    app.sign_in_as("ada", &[Role::Auditor]).await;

    let body = html_page(app.get("/agents-only").await, 403).await;

    assert!(body.contains("This page is for agents."), "{body}");
}

async fn a_guarded_page_lets_in_a_person_with_any_of_its_roles(test_db: &TestDb) {
    let app = app_with_guarded_pages(test_db).await;
    app.sign_in_as("ada", &[Role::Auditor]).await;

    let response = app.get("/timeline").await;

    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(response.text().await.unwrap(), "hello ada");
    assert_eq!(app.get("/whoami").await.text().await.unwrap(), "ada");
}

async fn adding_a_user_twice_is_refused_as_a_duplicate(test_db: &TestDb) {
    let state = AppState::open(test_db.db.clone()).await.unwrap();
    let db = &state.store;
    identity::add_user(db, "asha", "first-password", &[Role::Agent])
        .await
        .unwrap();

    let again = identity::add_user(db, "asha", "second-password", &[Role::Auditor]).await;

    match again {
        Err(error @ AddUserError::Duplicate(_)) => {
            assert_eq!(error.to_string(), "a user named asha already exists");
        }
        other => panic!("expected a duplicate, got {other:?}"),
    }
}

async fn a_password_is_stored_only_as_an_argon2id_hash(test_db: &TestDb) {
    let state = AppState::open(test_db.db.clone()).await.unwrap();
    let db = &test_db.db;
    let user = identity::add_user(
        &state.store,
        "asha",
        "correct horse battery",
        &[Role::Agent],
    )
    .await
    .unwrap();

    let stored: String = on_backend!(db, pool => {
        sqlx::query_scalar("SELECT password_hash FROM credentials WHERE user_id = $1")
            .bind(user.id)
            .fetch_one(pool)
            .await
    })
    .unwrap();

    assert!(stored.starts_with("$argon2id$v=19$"), "{stored}");
    assert!(!stored.contains("correct horse battery"));
    assert_eq!(user.roles, [Role::Agent]);
    let found = identity::find_user(db, user.id).await.unwrap().unwrap();
    assert_eq!(found, user);
}

async fn a_short_or_empty_password_is_refused(test_db: &TestDb) {
    let state = AppState::open(test_db.db.clone()).await.unwrap();
    let db = &state.store;

    let short = identity::add_user(db, "asha", "seven77", &[Role::Agent]).await;
    let empty = identity::add_user(db, "asha", "", &[Role::Agent]).await;

    assert!(
        matches!(short, Err(AddUserError::PasswordTooShort)),
        "{short:?}"
    );
    assert!(
        matches!(empty, Err(AddUserError::EmptyPassword)),
        "{empty:?}"
    );
    identity::add_user(db, "asha", "eight888", &[Role::Agent])
        .await
        .unwrap();
}

async fn a_role_changed_in_this_process_is_seen_by_the_next_request(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    app.sign_in_as("asha", &[Role::Agent]).await;
    assert_is_redirect_to(&app.get("/").await, "/quotes");

    let asha = identity::projection::person_named(&app.state.db, "asha")
        .await
        .unwrap()
        .unwrap();
    identity::people::set_roles(
        &app.state.store,
        &identity::ChangedBy::tool("test"),
        asha.id,
        asha.version,
        &[Role::Underwriter],
    )
    .await
    .unwrap();

    assert_is_redirect_to(&app.get("/").await, "/underwriting/queue");
    html_page(app.get("/quotes").await, 403).await;
}

async fn a_role_changed_by_another_process_is_seen_within_the_time_to_live(test_db: &TestDb) {
    let time_to_live = Duration::from_millis(400);
    let cache = UserCache::new(100, time_to_live);
    let state = AppState::open(test_db.db.clone()).await.unwrap();
    let db = &test_db.db;
    let user = identity::add_user(
        &state.store,
        "asha",
        "correct horse battery",
        &[Role::Agent],
    )
    .await
    .unwrap();
    assert_eq!(
        cache.find(db, user.id).await.unwrap().unwrap().roles,
        [Role::Agent]
    );

    // Another process's change: straight to the table, past this cache.
    on_backend!(db, pool => {
        sqlx::query("UPDATE users SET roles = 'underwriter' WHERE id = $1")
            .bind(user.id)
            .execute(pool)
            .await
            .map(drop)
    })
    .unwrap();
    let meanwhile = cache.find(db, user.id).await.unwrap().unwrap();
    tokio::time::sleep(time_to_live + Duration::from_millis(100)).await;
    let later = cache.find(db, user.id).await.unwrap().unwrap();

    // The bound, not a wish: the old roles for at most the time to live.
    assert_eq!(meanwhile.roles, [Role::Agent]);
    assert_eq!(later.roles, [Role::Underwriter]);
    cache.forget(user.id).await;
    assert_eq!(cache.entry_count().await, 0);
}

async fn the_user_cache_holds_at_most_its_capacity(test_db: &TestDb) {
    let state = AppState::open(test_db.db.clone()).await.unwrap();
    let db = &test_db.db;
    let cache = UserCache::new(4, Duration::from_secs(60));
    for n in 0..12 {
        let user = identity::add_user(
            &state.store,
            &format!("user{n}"),
            "long enough",
            &[Role::Agent],
        )
        .await
        .unwrap();
        assert_eq!(cache.find(db, user.id).await.unwrap(), Some(user));
    }

    assert!(cache.entry_count().await <= 4);
    assert_eq!(cache.find(db, uuid::Uuid::now_v7()).await.unwrap(), None);
}

/// The whole `Set-Cookie` header a response sends for this cookie, if it sends one.
fn set_cookie_named(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|value| value.to_str().unwrap().to_owned())
        .find(|value| value.starts_with(&format!("{name}=")))
}

/// The app, taking each request's client address from `X-Forwarded-For`, with this
/// per-address limit.
async fn app_behind_a_proxy(test_db: &TestDb, limit: AddressLimit) -> TestApp {
    let state = quoteline::AppState::open(test_db.db.clone())
        .await
        .unwrap()
        .with_sign_in_limits(SignInLimits::new(limit, true));
    TestApp::spawn_state(state).await
}

/// A limit no test here reaches.
fn generous() -> AddressLimit {
    AddressLimit {
        burst: 1_000,
        every: Duration::from_secs(1),
    }
}

/// Signs this client in as a browser at `address` does: the page, then the form.
async fn sign_in_from(
    app: &TestApp,
    address: &str,
    username: &str,
    password: &str,
) -> reqwest::Response {
    sign_in_through(&app.client, &app.address, Some(address), username, password).await
}

async fn the_owner_signs_in_from_another_address_while_a_guesser_is_held_back(test_db: &TestDb) {
    let app = app_behind_a_proxy(test_db, generous()).await;
    let password = app.add_user("asha", &[Role::Agent]).await;
    let guesser = "192.0.2.66";
    for attempt in 1..=5 {
        let response = sign_in_from(&app, guesser, "asha", "a-wrong-guess").await;
        assert_eq!(response.status().as_u16(), 401, "attempt {attempt}");
    }
    let held_back = sign_in_from(&app, guesser, "asha", &password).await;
    assert_eq!(held_back.status().as_u16(), 429);

    let owner = app.new_browser();
    let response = sign_in_from(&owner, "198.51.100.5", "asha", &password).await;

    assert_is_redirect_to(&response, "/quotes");
    assert_is_redirect_to(&owner.get("/").await, "/quotes");
    // The guesser is still held back after the owner's success.
    let again = sign_in_from(&app, guesser, "asha", &password).await;
    assert_eq!(again.status().as_u16(), 429);
}

async fn an_unknown_name_is_counted_and_held_back_exactly_like_a_known_one(test_db: &TestDb) {
    let app = app_behind_a_proxy(test_db, generous()).await;
    app.add_user("asha", &[Role::Agent]).await;

    let mut answers = Vec::new();
    for name in ["asha", "nobody"] {
        let mut seen = Vec::new();
        for _ in 1..=6 {
            let response = sign_in_from(&app, "192.0.2.7", name, "a-wrong-guess").await;
            let status = response.status().as_u16();
            let retry_after = response.headers().contains_key("retry-after");
            let body = response.text().await.unwrap();
            // What may differ: the name typed, the form's token, the time named.
            let token = csrf_token_in(&body).unwrap_or_default();
            let page = body
                .replace(&format!(r#"value="{name}""#), "")
                .replace(&token, "")
                .split("Try again in")
                .next()
                .unwrap()
                .to_owned();
            seen.push((status, retry_after, page));
        }
        answers.push(seen);
    }

    let statuses: Vec<u16> = answers[1].iter().map(|(status, ..)| *status).collect();
    assert_eq!(statuses, [401, 401, 401, 401, 401, 429]);
    assert_eq!(answers[0], answers[1]);
    assert!(answers[1][5].1, "the sixth answer says when to try again");
}

async fn one_address_trying_many_names_is_slowed_while_other_addresses_are_not(test_db: &TestDb) {
    let limit = AddressLimit {
        burst: 3,
        every: Duration::from_secs(600),
    };
    let app = app_behind_a_proxy(test_db, limit).await;
    let password = app.add_user("asha", &[Role::Agent]).await;
    let sprayer = "192.0.2.99";
    for name in ["ann", "bob", "cy"] {
        let response = sign_in_from(&app, sprayer, name, "a-wrong-guess").await;
        assert_eq!(response.status().as_u16(), 401, "{name}");
    }

    let slowed = sign_in_from(&app, sprayer, "asha", &password).await;

    let retry_after: u64 = slowed.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (590..=600).contains(&retry_after),
        "Retry-After: {retry_after}"
    );
    let body = html_page(slowed, 429).await;
    assert!(body.contains("Too many attempts to sign in"), "{body}");
    assert_is_redirect_to(&app.get("/").await, "/login");
    let elsewhere = app.new_browser();
    assert_is_redirect_to(
        &sign_in_from(&elsewhere, "198.51.100.5", "asha", &password).await,
        "/quotes",
    );
}

async fn visiting_the_sign_in_page_writes_no_session(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let password = app.add_user("asha", &[Role::Agent]).await;

    for _ in 0..25 {
        let visitor = app.new_browser();
        let page = visitor.get("/login").await;
        assert_eq!(session_cookie(&page), None);
        html_page(page, 200).await;
    }
    let refused = app.new_browser().sign_in("asha", "a-wrong-guess").await;
    html_page(refused, 401).await;

    assert_eq!(session_rows(&app).await, 0);
    assert_is_redirect_to(&app.sign_in("asha", &password).await, "/quotes");
    assert_eq!(session_rows(&app).await, 1);
}

async fn a_forged_or_expired_sign_in_token_is_refused(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let password = app.add_user("asha", &[Role::Agent]).await;
    let page = app.get("/login").await;
    let browser = page
        .cookies()
        .find(|cookie| cookie.name() == SIGN_IN_COOKIE)
        .map(|cookie| cookie.value().to_owned())
        .expect("the sign-in page gives the browser its cookie");
    let token = csrf_token_in(&html_page(page, 200).await).unwrap();
    let someone_elses = app.new_browser().csrf_token("/login").await;
    let tampered = format!("{}0", &token[..token.len() - 1]);
    let tampered = if tampered == token {
        format!("{}1", &token[..token.len() - 1])
    } else {
        tampered
    };
    let signer = app.state.sessions.form_signer();
    let expired = signer.token(&browser, Utc::now().timestamp() - 1);
    let far_future = token.replacen(token.split('.').next().unwrap(), "99999999999", 1);

    for (what, bad) in [
        ("another browser's token", someone_elses.as_str()),
        ("a tampered signature", tampered.as_str()),
        ("an expired token", expired.as_str()),
        ("a later expiry", far_future.as_str()),
        ("no token", ""),
    ] {
        let response =
            post_sign_in(app.client.post(app.url("/login")), bad, "asha", &password).await;
        let body = html_page(response, 403).await;
        assert!(body.contains("This form has expired"), "{what}: {body}");
    }
    assert_eq!(session_rows(&app).await, 0);
    let valid = post_sign_in(
        app.client.post(app.url("/login")),
        &token,
        "asha",
        &password,
    )
    .await;
    assert_is_redirect_to(&valid, "/quotes");
}

async fn session_rows(app: &TestApp) -> i64 {
    on_backend!(&app.state.db, pool => {
        sqlx::query_scalar("SELECT COUNT(*) FROM sessions").fetch_one(pool).await
    })
    .unwrap()
}

async fn set_locked_until(app: &TestApp, username: &str, until: chrono::DateTime<Utc>) {
    on_backend!(&app.state.db, pool => {
        sqlx::query("UPDATE sign_in_attempts SET locked_until = $1 WHERE username = $2")
            .bind(until)
            .bind(username)
            .execute(pool)
            .await
            .map(drop)
    })
    .unwrap();
}

/// The attempts at `username` counted from any address.
async fn attempts_counted(app: &TestApp, username: &str) -> i64 {
    on_backend!(&app.state.db, pool => {
        sqlx::query_scalar(
            "SELECT COALESCE(SUM(failed_attempts), 0) FROM sign_in_attempts WHERE username = $1",
        )
        .bind(username)
        .fetch_one(pool)
        .await
    })
    .unwrap()
}
