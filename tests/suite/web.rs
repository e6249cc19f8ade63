//! The web frame: health, error pages and the middleware stack.

use crate::support::{TestApp, TestDb, html_page};

storage_tests!(
    the_health_check_answers_when_the_database_does,
    an_unknown_address_gets_a_not_found_page,
    a_body_over_the_limit_is_refused_with_a_page_before_it_is_read,
    only_bodies_over_a_kilobyte_are_compressed,
);

async fn the_health_check_answers_when_the_database_does(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;

    let response = app.get("/healthz").await;

    assert_eq!(response.status().as_u16(), 200);
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(response.text().await.unwrap(), "ok");
}

async fn an_unknown_address_gets_a_not_found_page(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;

    let body = html_page(app.get("/no/such/page").await, 404).await;

    assert!(body.contains("<h1>Page not found</h1>"), "{body}");
}

async fn a_body_over_the_limit_is_refused_with_a_page_before_it_is_read(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;

    let response = app
        .client
        .post(app.url("/"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(vec![b'a'; 200 * 1024])
        .send()
        .await
        .unwrap();

    let body = html_page(response, 413).await;
    assert!(body.contains("too much to send"), "{body}");
}

async fn only_bodies_over_a_kilobyte_are_compressed(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let get = |path: &str| {
        app.client
            .get(app.url(path))
            .header("accept-encoding", "gzip, br, zstd")
            .send()
    };

    let small = get("/healthz").await.unwrap();
    let large = get("/static/style.css").await.unwrap();

    assert_eq!(small.status().as_u16(), 200);
    assert!(
        small.headers().get("content-encoding").is_none(),
        "2 bytes go as they are"
    );
    assert_eq!(large.status().as_u16(), 200);
    assert!(
        large.headers().get("content-encoding").is_some(),
        "a stylesheet of {} bytes is compressed",
        include_str!("../../static/style.css").len()
    );
}
