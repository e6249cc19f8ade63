//! The web frame: health, error pages and the middleware stack.

use quoteline::kernel::Role;
use reqwest::Method;
use uuid::Uuid;

use crate::support::{TestApp, TestDb, html_page};

storage_tests!(
    the_health_check_answers_when_the_database_does,
    an_unknown_address_gets_a_not_found_page,
    a_body_over_the_limit_is_refused_with_a_page_before_it_is_read,
    only_bodies_over_a_kilobyte_are_compressed,
    static_files_come_compressed_as_asked,
    no_response_but_a_static_file_may_be_stored_by_a_cache,
    a_method_a_route_does_not_have_gets_405_and_allow_before_any_token_check,
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
    app.sign_in_as("uma", &[Role::Underwriter]).await;
    let get = |path: &str, accept: &str| {
        app.client
            .get(app.url(path))
            .header("accept-encoding", accept)
            .send()
    };
    let encoding = |response: &reqwest::Response| {
        response
            .headers()
            .get("content-encoding")
            .map(|v| v.to_str().unwrap().to_owned())
    };

    let small = get("/healthz", "gzip, br, zstd").await.unwrap();
    assert_eq!(small.status().as_u16(), 200);
    assert_eq!(encoding(&small), None, "2 bytes go as they are");

    // The queue page, with its list of countries, is over a kilobyte: zstd for a
    // client that prefers it (compressed here, whole), brotli for one that does not.
    let plain = get("/underwriting/queue", "identity").await.unwrap();
    assert_eq!(encoding(&plain), None);
    let page = plain.text().await.unwrap();
    assert!(page.contains("<h1>Approval queue</h1>"), "{page}");
    for (accept, expected) in [
        ("gzip, deflate, br, zstd", "zstd"),
        ("zstd;q=0.5, br;q=0.5", "zstd"),
        ("zstd, identity;q=0", "zstd"),
        ("zstd;Q=0, gzip", "gzip"),
        ("gzip, br", "br"),
        ("br, zstd;q=0.9", "br"),
        ("gzip", "gzip"),
    ] {
        let large = get("/underwriting/queue", accept).await.unwrap();
        assert_eq!(large.status().as_u16(), 200, "{accept}");
        assert_eq!(encoding(&large).as_deref(), Some(expected), "{accept}");
        assert_eq!(large.headers()["vary"], "accept-encoding", "{accept}");
        let body = large.bytes().await.unwrap();
        assert!(
            body.len() < page.len() / 2,
            "{accept}: {} bytes",
            body.len()
        );
        if expected == "zstd" {
            // The page differs only in its form's fresh token, if at all.
            let decoded = String::from_utf8(zstd::decode_all(&body[..]).unwrap()).unwrap();
            assert!(decoded.contains("<h1>Approval queue</h1>"), "{decoded}");
            assert!(
                decoded.trim_end().ends_with("</html>"),
                "{accept}: the whole page"
            );
        }
    }
}

/// The static files are compressed once, not per response: the stylesheet comes in
/// the encoding asked for, and decodes to the file.
async fn static_files_come_compressed_as_asked(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    for (accept, encoding) in [
        ("gzip, deflate, br, zstd", Some("br")),
        ("gzip", Some("gzip")),
        ("identity", None),
    ] {
        let response = app
            .client
            .get(app.url("/static/style.css"))
            .header("accept-encoding", accept)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(
            response
                .headers()
                .get("content-encoding")
                .map(|v| v.to_str().unwrap()),
            encoding,
            "{accept}"
        );
        assert_eq!(response.headers()["vary"], "accept-encoding", "{accept}");
    }
}

/// Pages show personal data: no browser or proxy may keep a copy. Static files may.
async fn no_response_but_a_static_file_may_be_stored_by_a_cache(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let cache_control = |response: &reqwest::Response| {
        response
            .headers()
            .get("cache-control")
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let signed_out = app.get("/quotes").await;
    assert_eq!(signed_out.status().as_u16(), 303);
    let mut responses = vec![
        ("/login".to_owned(), app.get("/login").await),
        ("/healthz".to_owned(), app.get("/healthz").await),
        ("/no/such/page".to_owned(), app.get("/no/such/page").await),
        ("/quotes signed out".to_owned(), signed_out),
    ];
    app.sign_in_as("asha", &[Role::Agent]).await;
    for path in ["/quotes", "/quotes/new", "/static/nowhere.css"] {
        responses.push((path.to_owned(), app.get(path).await));
    }
    let password = app.add_user("bina", &[Role::Agent]).await;
    let signed_in = app.new_browser().sign_in("bina", &password).await;
    assert_eq!(signed_in.status().as_u16(), 303);
    responses.push(("POST /login".to_owned(), signed_in));

    for (what, response) in &responses {
        assert_eq!(
            cache_control(response).as_deref(),
            Some("no-store"),
            "{what}: {}",
            response.status()
        );
    }
    for path in ["/static/style.css", "/static/favicon.svg"] {
        let response = app.get(path).await;
        assert_eq!(response.status().as_u16(), 200);
        assert_eq!(
            cache_control(&response).as_deref(),
            Some("public, max-age=3600"),
            "{path}"
        );
    }
}

/// Routing answers before the form's token is checked: a method the route does not
/// have is 405 with the methods it does have, not a 403 about an expired form. A
/// method it has still needs the token.
async fn a_method_a_route_does_not_have_gets_405_and_allow_before_any_token_check(
    test_db: &TestDb,
) {
    let app = TestApp::spawn(test_db).await;
    app.sign_in_as("asha", &[Role::Agent]).await;
    let signed_out = app.new_browser();
    let id = Uuid::now_v7();
    let cases = [
        (Method::DELETE, format!("/quotes/{id}"), "GET,HEAD"),
        (
            Method::PUT,
            format!("/quotes/{id}/geographic"),
            "GET,HEAD,POST",
        ),
        (
            Method::PATCH,
            format!("/quotes/{id}/contact"),
            "GET,HEAD,POST",
        ),
        (Method::POST, format!("/quotes/{id}/review"), "GET,HEAD"),
        (Method::DELETE, "/login".to_owned(), "GET,HEAD,POST"),
        (Method::PUT, "/audit/verify".to_owned(), "GET,HEAD,POST"),
        (Method::POST, "/healthz".to_owned(), "GET,HEAD"),
        (Method::GET, "/logout".to_owned(), "POST"),
    ];

    for browser in [&app, &signed_out] {
        for (method, path, allowed) in &cases {
            let response = browser
                .client
                .request(method.clone(), browser.url(path))
                .header("content-type", "application/x-www-form-urlencoded")
                .body("city=Pune")
                .send()
                .await
                .unwrap();
            let allow = response
                .headers()
                .get("allow")
                .map(|v| v.to_str().unwrap().to_owned());
            let mut allow: Vec<String> = allow
                .unwrap_or_else(|| panic!("{method} {path}: no Allow header"))
                .split(',')
                .map(|m| m.trim().to_owned())
                .collect();
            allow.sort();
            let body = html_page(response, 405).await;
            assert_eq!(allow.join(","), *allowed, "{method} {path}");
            assert!(body.contains("<h1>"), "{method} {path}: {body}");
        }
    }

    for path in [format!("/quotes/{id}/geographic"), "/logout".to_owned()] {
        let response = app
            .client
            .post(app.url(&path))
            .form(&[("city", "Pune")])
            .send()
            .await
            .unwrap();
        let body = html_page(response, 403).await;
        assert!(body.contains("This form has expired"), "{path}: {body}");
    }
}
