//! How long a signed-in session lasts, and how its cookie is set for where the app
//! is served.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use quoteline::AppState;
use quoteline::identity::sessions::{Clock, SessionSettings};
use quoteline::kernel::Role;

use crate::support::{TestApp, TestDb, assert_is_redirect_to};

storage_tests!(
    a_session_ends_its_lifetime_after_sign_in_however_recently_it_was_used,
    the_session_cookie_is_secure_with_the_host_prefix_unless_served_on_loopback,
    responses_carry_hsts_only_when_the_app_is_served_over_https,
);

const HOUR: i64 = 60 * 60;

/// The app with these session settings; `clock_ahead` moves its clock forward.
async fn app_with(test_db: &TestDb, settings: SessionSettings) -> TestApp {
    let state = AppState::open(test_db.db.clone())
        .await
        .unwrap()
        .with_session_settings(settings);
    TestApp::spawn_state(state).await
}

async fn a_session_ends_its_lifetime_after_sign_in_however_recently_it_was_used(test_db: &TestDb) {
    let ahead = Arc::new(AtomicI64::new(0));
    let clock = {
        let ahead = ahead.clone();
        Clock::from_fn(move || chrono::Utc::now().timestamp() + ahead.load(Ordering::SeqCst))
    };
    let settings = SessionSettings {
        secure: false,
        lifetime: Duration::from_secs(12 * HOUR as u64),
        clock,
    };
    let app = app_with(test_db, settings).await;
    app.sign_in_as("asha", &[Role::Agent]).await;
    for hours in 1..12 {
        ahead.store(hours * HOUR, Ordering::SeqCst);
        let response = app.get("/quotes").await;
        assert_eq!(response.status().as_u16(), 200, "{hours} hours on");
    }

    ahead.store(12 * HOUR + 1, Ordering::SeqCst);
    let response = app.get("/quotes").await;

    assert_is_redirect_to(&response, "/login");
    // Ended for good: not merely refused at that hour.
    ahead.store(0, Ordering::SeqCst);
    assert_is_redirect_to(&app.get("/quotes").await, "/login");
}

async fn the_session_cookie_is_secure_with_the_host_prefix_unless_served_on_loopback(
    test_db: &TestDb,
) {
    let address = |a: &str| a.parse::<SocketAddr>().unwrap();
    for (bind, secure) in [
        ("127.0.0.1:3000", false),
        ("[::1]:3000", false),
        ("0.0.0.0:3000", true),
        ("192.0.2.7:443", true),
        ("[::]:3000", true),
    ] {
        assert_eq!(
            SessionSettings::for_address(address(bind)).secure,
            secure,
            "{bind}"
        );
    }
    let loopback = app_with(
        test_db,
        SessionSettings::for_address(address("127.0.0.1:3000")),
    )
    .await;
    let public = app_with(
        test_db,
        SessionSettings::for_address(address("0.0.0.0:3000")),
    )
    .await;

    let plain = signed_in_cookie(&loopback, "asha").await;
    let secure = signed_in_cookie(&public, "bilal").await;

    assert!(plain.starts_with("quoteline_session="), "{plain}");
    assert!(!plain.contains("Secure"), "{plain}");
    assert!(secure.starts_with("__Host-quoteline_session="), "{secure}");
    assert!(secure.contains("; Secure"), "{secure}");
    for cookie in [&plain, &secure] {
        assert!(cookie.contains("; HttpOnly"), "{cookie}");
        assert!(cookie.contains("; SameSite=Lax"), "{cookie}");
        assert!(cookie.contains("; Path=/"), "{cookie}");
        assert!(!cookie.contains("Domain"), "{cookie}");
    }
    // The browser sends the prefixed cookie back, and it opens the session.
    assert_eq!(public.get("/quotes").await.status().as_u16(), 200);
}

/// Signs a new agent in; the Set-Cookie of the sign-in's response.
async fn signed_in_cookie(app: &TestApp, username: &str) -> String {
    let password = app.add_user(username, &[Role::Agent]).await;
    let response = app.sign_in(username, &password).await;
    assert_is_redirect_to(&response, "/quotes");
    response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned()
}

async fn responses_carry_hsts_only_when_the_app_is_served_over_https(test_db: &TestDb) {
    let plain = app_with(test_db, SessionSettings::default()).await;
    let secure = app_with(
        test_db,
        SessionSettings {
            secure: true,
            ..SessionSettings::default()
        },
    )
    .await;
    let hsts = |response: &reqwest::Response| {
        response
            .headers()
            .get("strict-transport-security")
            .map(|v| v.to_str().unwrap().to_owned())
    };

    for path in ["/healthz", "/login", "/no/such/page"] {
        assert_eq!(hsts(&plain.get(path).await), None, "{path}");
        assert_eq!(
            hsts(&secure.get(path).await).as_deref(),
            Some("max-age=31536000"),
            "{path}"
        );
    }
}
