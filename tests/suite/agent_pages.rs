//! The agent's pages, black-box over HTTP, on both backends.

use quoteline::kernel::Role;
use quoteline::quoting::domain::Status;
use quoteline::quoting::summary;
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::support::{TestApp, TestDb, assert_is_redirect_to, current_version, field, html_page};

storage_tests!(
    an_agent_takes_a_quote_from_start_to_submitted,
    every_invalid_field_is_shown_with_its_message_and_the_input_kept,
    a_form_posted_twice_with_one_key_appends_once,
    twenty_concurrent_posts_of_one_key_append_once,
    a_post_carrying_an_old_version_is_refused_and_writes_nothing,
    posts_without_a_valid_token_or_from_another_origin_are_refused,
    signed_out_requests_go_to_the_sign_in_page,
    an_agent_cannot_read_or_change_another_agents_quote,
    underwriters_and_auditors_cannot_use_agent_forms,
    a_submitted_quotes_sections_are_read_only,
    children_are_added_and_removed_without_javascript,
    my_quotes_lists_an_agents_quotes_and_filters_by_status,
    an_agent_withdraws_a_quote_after_confirming,
    a_form_that_is_not_utf8_is_refused_and_writes_nothing,
    the_applicants_name_is_checked_before_submitting_and_a_correction_is_an_event_of_its_own,
    the_contact_page_asks_how_the_applicant_prefers_to_be_contacted,
);

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

/// Starts a quote through the pages; returns its id.
pub async fn start_quote(app: &TestApp, applicant: &str) -> Uuid {
    let form = html_page(app.get("/quotes/new").await, 200).await;
    let id = field(&form, "quote_id");
    let response = app
        .post_form(
            "/quotes",
            &[
                ("quote_id", &id),
                ("idempotency_key", &field(&form, "idempotency_key")),
                ("applicant_name", applicant),
            ],
        )
        .await;
    assert_is_redirect_to(&response, &format!("/quotes/{id}"));
    id.parse().unwrap()
}

/// The page of a section, and the version and key its form carries.
async fn open_form(app: &TestApp, path: &str) -> (String, String, String) {
    let body = html_page(app.get(path).await, 200).await;
    let (version, key) = (field(&body, "version"), field(&body, "idempotency_key"));
    (body, version, key)
}

const GEOGRAPHIC: &[(&str, &str)] = &[
    ("country", "IN"),
    ("region", "Maharashtra"),
    ("city", "Pune"),
    ("postal_code", "411001"),
];
const CONTACT: &[(&str, &str)] = &[("email", "meera@example.com"), ("phone", "+91 98765 43210")];
const FAMILY: &[(&str, &str)] = &[
    ("dependents", "3"),
    ("spouse_name", "Ravi"),
    ("children", "Asha"),
    ("children", "Kiran"),
    ("action", "save"),
];

/// Posts a section's answers with the form's own version and key.
async fn answer(
    app: &TestApp,
    id: Uuid,
    section: &str,
    answers: &[(&str, &str)],
) -> reqwest::Response {
    let path = format!("/quotes/{id}/{section}");
    let (_, version, key) = open_form(app, &path).await;
    let mut fields = answers.to_vec();
    fields.push(("version", &version));
    fields.push(("idempotency_key", &key));
    app.post_form(&path, &fields).await
}

async fn submitted_quote(app: &TestApp) -> Uuid {
    let id = start_quote(app, "Meera Iyer").await;
    answer(app, id, "geographic", GEOGRAPHIC).await;
    answer(app, id, "contact", CONTACT).await;
    answer(app, id, "family", FAMILY).await;
    let (_, version, key) = open_form(app, &format!("/quotes/{id}/review")).await;
    let response = app
        .post_form(
            &format!("/quotes/{id}/finalize"),
            &[("version", &version), ("idempotency_key", &key)],
        )
        .await;
    assert_is_redirect_to(&response, &format!("/quotes/{id}"));
    id
}

async fn an_agent_takes_a_quote_from_start_to_submitted(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    app.sign_in_as("asha", &[Role::Agent]).await;

    let id = start_quote(&app, "Meera Iyer").await;
    let tasks = html_page(app.get(&format!("/quotes/{id}")).await, 200).await;
    assert!(
        tasks.contains("Not started") && tasks.contains("Cannot start yet"),
        "{tasks}"
    );

    assert_is_redirect_to(
        &answer(&app, id, "geographic", GEOGRAPHIC).await,
        &format!("/quotes/{id}/contact"),
    );
    assert_is_redirect_to(
        &answer(&app, id, "contact", CONTACT).await,
        &format!("/quotes/{id}/family"),
    );
    assert_is_redirect_to(
        &answer(&app, id, "family", FAMILY).await,
        &format!("/quotes/{id}/review"),
    );

    let (review, version, key) = open_form(&app, &format!("/quotes/{id}/review")).await;
    for answer in [
        "India",
        "Maharashtra",
        "Pune",
        "411001",
        "meera@example.com",
        "+919876543210",
        "Ravi",
        "Asha",
        "Kiran",
    ] {
        assert!(review.contains(answer), "check your answers shows {answer}");
    }
    assert!(
        review.contains(&format!("/quotes/{id}/contact#email")),
        "each answer has a Change link"
    );
    let response = app
        .post_form(
            &format!("/quotes/{id}/finalize"),
            &[("version", &version), ("idempotency_key", &key)],
        )
        .await;
    assert_is_redirect_to(&response, &format!("/quotes/{id}"));

    assert_eq!(
        event_types(&app, id).await,
        [
            "QuoteStarted",
            "GeographicDetailsProvided",
            "QuoteSaved",
            "ContactDetailsProvided",
            "FamilyDetailsProvided",
            "QuoteFinalized"
        ]
    );
    let events = app.state.store.read_stream(id, 0).await.unwrap();
    assert!(events.iter().all(|e| e.actor == "asha"));
    assert_eq!(events[1].payload["postal_code"], "411001");
    let row = summary::find(&app.state.db, id).await.unwrap().unwrap();
    assert_eq!(
        (
            row.status(),
            row.version,
            row.agent.as_str(),
            row.applicant_name.as_str()
        ),
        (Status::Finalized, 6, "asha", "Meera Iyer")
    );
    assert!(
        row.geographic_done && row.contact_done && row.family_done && row.submitted_at.is_some()
    );
    assert_eq!(
        (row.country.as_deref(), row.dependents),
        (Some("IN"), Some(3))
    );
    let tasks = html_page(app.get(&format!("/quotes/{id}")).await, 200).await;
    assert!(tasks.contains("Submitted"), "{tasks}");
}

async fn every_invalid_field_is_shown_with_its_message_and_the_input_kept(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    app.sign_in_as("asha", &[Role::Agent]).await;
    let id = start_quote(&app, "Meera Iyer").await;
    // (section, answers, the field in error, what that field must still hold)
    type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str, &'a str);
    let cases: &[Case] = &[
        (
            "geographic",
            &[
                ("country", "XX"),
                ("region", "R"),
                ("city", "C"),
                ("postal_code", "1"),
            ],
            "country",
            "XX",
        ),
        (
            "geographic",
            &[
                ("country", "IN"),
                ("region", ""),
                ("city", "Pune"),
                ("postal_code", "411001"),
            ],
            "region",
            "",
        ),
        (
            "geographic",
            &[
                ("country", "IN"),
                ("region", "MH"),
                ("city", "  "),
                ("postal_code", "411001"),
            ],
            "city",
            "  ",
        ),
        (
            "geographic",
            &[
                ("country", "IN"),
                ("region", "MH"),
                ("city", "Pune"),
                ("postal_code", "41100"),
            ],
            "postal_code",
            "41100",
        ),
        (
            "geographic",
            &[
                ("country", "US"),
                ("region", "CA"),
                ("city", "SF"),
                ("postal_code", "ABCDE"),
            ],
            "postal_code",
            "ABCDE",
        ),
        (
            "contact",
            &[("email", "meera.example.com"), ("phone", "+91 98765 43210")],
            "email",
            "meera.example.com",
        ),
        (
            "contact",
            &[("email", "meera@example.com"), ("phone", "98765")],
            "phone",
            "98765",
        ),
        (
            "family",
            &[
                ("dependents", "two"),
                ("spouse_name", ""),
                ("action", "save"),
            ],
            "dependents",
            "two",
        ),
        (
            "family",
            &[
                ("dependents", "1"),
                ("children", "Asha"),
                ("children", "Kiran"),
                ("action", "save"),
            ],
            "dependents",
            "1",
        ),
    ];
    for (section, answers, bad_field, kept) in cases {
        let response = answer(&app, id, section, answers).await;
        let body = html_page(response, 422).await;
        assert!(
            body.contains("There is a problem"),
            "{section}/{bad_field}: error summary"
        );
        assert!(
            body.contains(&format!(r##"href="#{bad_field}""##)),
            "{section}/{bad_field}: summary links to the field"
        );
        assert!(
            body.contains(r#"class="field-error""#),
            "{section}/{bad_field}: message beside the field"
        );
        if *bad_field != "country" {
            assert_eq!(
                field(&body, bad_field),
                *kept,
                "{section}/{bad_field}: input kept"
            );
        }
    }
    let body = html_page(
        app.post_form(
            "/quotes",
            &[
                ("quote_id", &Uuid::now_v7().to_string()),
                ("applicant_name", " "),
            ],
        )
        .await,
        422,
    )
    .await;
    assert!(body.contains(r##"href="#applicant_name""##));
    assert_eq!(
        event_types(&app, id).await,
        ["QuoteStarted"],
        "nothing invalid was written"
    );
}

async fn a_form_posted_twice_with_one_key_appends_once(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    app.sign_in_as("asha", &[Role::Agent]).await;
    let id = start_quote(&app, "Meera Iyer").await;
    let path = format!("/quotes/{id}/contact");
    let (_, version, key) = open_form(&app, &path).await;
    let mut fields = CONTACT.to_vec();
    fields.extend([
        ("version", version.as_str()),
        ("idempotency_key", key.as_str()),
    ]);

    let first = app.post_form(&path, &fields).await;
    let second = app.post_form(&path, &fields).await;

    assert_is_redirect_to(&first, &format!("/quotes/{id}/geographic"));
    assert_is_redirect_to(&second, &format!("/quotes/{id}/geographic"));
    assert_eq!(
        event_types(&app, id).await,
        ["QuoteStarted", "ContactDetailsProvided", "QuoteSaved"]
    );
}

async fn twenty_concurrent_posts_of_one_key_append_once(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    app.sign_in_as("asha", &[Role::Agent]).await;
    let id = start_quote(&app, "Meera Iyer").await;
    let path = format!("/quotes/{id}/geographic");
    let (body, version, key) = open_form(&app, &path).await;
    let token = crate::support::csrf_token_in(&body).unwrap();
    let mut fields: Vec<(String, String)> = GEOGRAPHIC
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    fields.extend([
        ("version".into(), version),
        ("idempotency_key".into(), key),
        ("csrf_token".into(), token),
    ]);

    let mut posts = JoinSet::new();
    for _ in 0..20 {
        let (client, url, fields) = (app.client.clone(), app.url(&path), fields.clone());
        posts.spawn(async move {
            client
                .post(url)
                .form(&fields)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        });
    }
    while let Some(status) = posts.join_next().await {
        assert_eq!(status.unwrap(), 303, "every repeat gets the first outcome");
    }

    assert_eq!(
        event_types(&app, id).await,
        ["QuoteStarted", "GeographicDetailsProvided", "QuoteSaved"]
    );
}

async fn a_post_carrying_an_old_version_is_refused_and_writes_nothing(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    app.sign_in_as("asha", &[Role::Agent]).await;
    let id = start_quote(&app, "Meera Iyer").await;
    let path = format!("/quotes/{id}/contact");
    let (_, old_version, _) = open_form(&app, &path).await;
    answer(&app, id, "geographic", GEOGRAPHIC).await;

    let mut fields = vec![
        ("email", "changed@example.com"),
        ("phone", "+91 98765 43210"),
    ];
    fields.extend([
        ("version", old_version.as_str()),
        ("idempotency_key", "another-key"),
    ]);
    let body = html_page(app.post_form(&path, &fields).await, 409).await;

    assert!(
        body.contains("This quote changed while you were editing"),
        "{body}"
    );
    assert_eq!(
        field(&body, "email"),
        "changed@example.com",
        "the input is kept"
    );
    assert_eq!(
        event_types(&app, id).await,
        ["QuoteStarted", "GeographicDetailsProvided", "QuoteSaved"]
    );
}

async fn posts_without_a_valid_token_or_from_another_origin_are_refused(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    app.sign_in_as("asha", &[Role::Agent]).await;
    let id = start_quote(&app, "Meera Iyer").await;
    let path = format!("/quotes/{id}/geographic");
    let (body, version, key) = open_form(&app, &path).await;
    let token = crate::support::csrf_token_in(&body).unwrap();
    let mut fields: Vec<(&str, &str)> = GEOGRAPHIC.to_vec();
    fields.extend([
        ("version", version.as_str()),
        ("idempotency_key", key.as_str()),
    ]);

    let no_token = app
        .client
        .post(app.url(&path))
        .form(&fields)
        .send()
        .await
        .unwrap();
    let mut wrong = fields.clone();
    wrong.push(("csrf_token", "not-the-token"));
    let wrong_token = app
        .client
        .post(app.url(&path))
        .form(&wrong)
        .send()
        .await
        .unwrap();
    let mut right = fields.clone();
    right.push(("csrf_token", &token));
    let foreign = app
        .client
        .post(app.url(&path))
        .header("origin", "https://evil.example")
        .header("sec-fetch-site", "cross-site")
        .form(&right)
        .send()
        .await
        .unwrap();

    for response in [no_token, wrong_token, foreign] {
        html_page(response, 403).await;
    }
    assert_eq!(event_types(&app, id).await, ["QuoteStarted"]);
}

async fn signed_out_requests_go_to_the_sign_in_page(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    for path in [
        "/quotes",
        "/quotes/new",
        &format!("/quotes/{}", Uuid::now_v7()),
    ] {
        let response = app.get(path).await;
        assert_eq!(response.status().as_u16(), 303, "{path}");
        assert_eq!(response.headers()["location"], "/login", "{path}");
    }
}

async fn an_agent_cannot_read_or_change_another_agents_quote(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    app.sign_in_as("asha", &[Role::Agent]).await;
    let id = start_quote(&app, "Meera Iyer").await;
    let bilal = app.new_browser();
    bilal.sign_in_as("bilal", &[Role::Agent]).await;

    for path in ["", "/geographic", "/contact", "/family", "/review"] {
        html_page(bilal.get(&format!("/quotes/{id}{path}")).await, 404).await;
    }
    let mut fields = GEOGRAPHIC.to_vec();
    fields.extend([("version", "1"), ("idempotency_key", "k")]);
    html_page(
        bilal
            .post_form(&format!("/quotes/{id}/geographic"), &fields)
            .await,
        404,
    )
    .await;
    html_page(
        bilal
            .post_form(
                &format!("/quotes/{id}/withdraw"),
                &[("version", "1"), ("idempotency_key", "w")],
            )
            .await,
        404,
    )
    .await;
    let list = html_page(bilal.get("/quotes").await, 200).await;
    assert!(!list.contains("Meera Iyer"));
    assert_eq!(event_types(&app, id).await, ["QuoteStarted"]);
}

async fn underwriters_and_auditors_cannot_use_agent_forms(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    app.sign_in_as("asha", &[Role::Agent]).await;
    let id = start_quote(&app, "Meera Iyer").await;
    for (name, role) in [("uma", Role::Underwriter), ("ada", Role::Auditor)] {
        let staff = app.new_browser();
        staff.sign_in_as(name, &[role]).await;
        let mut fields = GEOGRAPHIC.to_vec();
        fields.extend([("version", "1"), ("idempotency_key", "k")]);
        let posts = [
            staff
                .post_form(&format!("/quotes/{id}/geographic"), &fields)
                .await,
            staff
                .post_form(&format!("/quotes/{id}/finalize"), &[("version", "1")])
                .await,
            staff
                .post_form(&format!("/quotes/{id}/withdraw"), &[("version", "1")])
                .await,
            staff
                .post_form(
                    "/quotes",
                    &[
                        ("quote_id", &Uuid::now_v7().to_string()),
                        ("applicant_name", "X"),
                    ],
                )
                .await,
        ];
        for response in posts {
            html_page(response, 403).await;
        }
        // They may read the task list, not change it.
        let tasks = html_page(staff.get(&format!("/quotes/{id}")).await, 200).await;
        assert!(!tasks.contains("Withdraw quote"));
    }
    assert_eq!(event_types(&app, id).await, ["QuoteStarted"]);
}

async fn a_submitted_quotes_sections_are_read_only(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    app.sign_in_as("asha", &[Role::Agent]).await;
    let id = submitted_quote(&app).await;

    html_page(app.get(&format!("/quotes/{id}/contact")).await, 409).await;
    let mut fields = CONTACT.to_vec();
    fields.extend([("version", "6"), ("idempotency_key", "late-edit")]);
    let body = html_page(
        app.post_form(&format!("/quotes/{id}/contact"), &fields)
            .await,
        409,
    )
    .await;

    assert!(body.contains("submitted"), "{body}");
    assert_eq!(event_types(&app, id).await.len(), 6, "nothing written");
}

async fn children_are_added_and_removed_without_javascript(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    app.sign_in_as("asha", &[Role::Agent]).await;
    let id = start_quote(&app, "Meera Iyer").await;
    let path = format!("/quotes/{id}/family");
    let (_, version, key) = open_form(&app, &path).await;
    let base = [
        ("version", version.as_str()),
        ("idempotency_key", key.as_str()),
        ("dependents", "2"),
    ];

    let mut add = base.to_vec();
    add.extend([("children", "Asha"), ("action", "add-child")]);
    let added = html_page(app.post_form(&path, &add).await, 200).await;
    assert_eq!(added.matches(r#"name="children""#).count(), 2);

    let mut remove = base.to_vec();
    remove.extend([
        ("children", "Asha"),
        ("children", "Kiran"),
        ("action", "remove-0"),
    ]);
    let removed = html_page(app.post_form(&path, &remove).await, 200).await;
    assert_eq!(removed.matches(r#"name="children""#).count(), 1);
    assert_eq!(field(&removed, "children"), "Kiran");
    assert_eq!(
        event_types(&app, id).await,
        ["QuoteStarted"],
        "adding and removing write nothing"
    );
}

async fn my_quotes_lists_an_agents_quotes_and_filters_by_status(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    app.sign_in_as("asha", &[Role::Agent]).await;
    submitted_quote(&app).await;
    start_quote(&app, "Tomás García").await;

    let all = html_page(app.get("/quotes").await, 200).await;
    let submitted = html_page(app.get("/quotes?status=Finalized").await, 200).await;
    let initiated = html_page(app.get("/quotes?status=Initiated").await, 200).await;

    assert!(all.contains("Meera Iyer") && all.contains("Tomás García"));
    assert!(submitted.contains("Meera Iyer") && !submitted.contains("Tomás García"));
    assert!(!initiated.contains("Meera Iyer") && initiated.contains("Tomás García"));
    html_page(app.get("/quotes?status=Nonsense").await, 400).await;
}

async fn an_agent_withdraws_a_quote_after_confirming(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    app.sign_in_as("asha", &[Role::Agent]).await;
    let id = submitted_quote(&app).await;
    let tasks = html_page(app.get(&format!("/quotes/{id}")).await, 200).await;
    assert!(
        tasks.contains(&format!(r#"href="/quotes/{id}/withdraw""#)),
        "{tasks}"
    );

    let (confirm, version, key) = open_form(&app, &format!("/quotes/{id}/withdraw")).await;
    assert!(confirm.contains("Withdraw this quote?"));
    let response = app
        .post_form(
            &format!("/quotes/{id}/withdraw"),
            &[("version", &version), ("idempotency_key", &key)],
        )
        .await;

    assert_is_redirect_to(&response, &format!("/quotes/{id}"));
    assert_eq!(
        event_types(&app, id).await.last().unwrap(),
        "QuoteWithdrawn"
    );
    let tasks = html_page(app.get(&format!("/quotes/{id}")).await, 200).await;
    assert!(
        tasks.contains("Withdrawn") && !tasks.contains("/withdraw"),
        "{tasks}"
    );
    html_page(app.get(&format!("/quotes/{id}/withdraw")).await, 409).await;
}

/// Text that is not UTF-8, percent-encoded or raw, in a value or a name, is refused
/// with a page: it is not decoded into replacement characters and saved.
async fn a_form_that_is_not_utf8_is_refused_and_writes_nothing(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    app.sign_in_as("asha", &[Role::Agent]).await;
    let id = start_quote(&app, "Meera Iyer").await;
    let path = format!("/quotes/{id}/geographic");
    let (page, version, key) = open_form(&app, &path).await;
    let token = crate::support::csrf_token_in(&page).unwrap();
    let post = |extra: &[u8], key: String| {
        let mut body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs([
                ("country", "IN"),
                ("region", "Maharashtra"),
                ("postal_code", "411001"),
                ("version", version.as_str()),
                ("idempotency_key", key.as_str()),
                ("csrf_token", token.as_str()),
            ])
            .finish()
            .into_bytes();
        body.extend_from_slice(extra);
        app.client
            .post(app.url(&path))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
    };

    for (n, extra) in [
        &b"&city=%C3%28"[..],
        b"&city=\xC3\x28",
        b"&city=Pune&%FF=1",
        b"&city=Pune&\xFF=1",
        b"&city=Pun%E9",
    ]
    .into_iter()
    .enumerate()
    {
        let response = post(extra, format!("{key}-{n}")).await.unwrap();
        let body = html_page(response, 400).await;
        assert!(
            body.contains("UTF-8"),
            "{}: {body}",
            String::from_utf8_lossy(extra)
        );
    }
    assert_eq!(event_types(&app, id).await, ["QuoteStarted"]);

    let saved = post(b"&city=Pun%C3%A9+East", key.clone()).await.unwrap();
    assert_is_redirect_to(&saved, &format!("/quotes/{id}/contact"));
    let quote = app.state.quotes.load(id, None).await.unwrap().unwrap();
    assert_eq!(quote.geographic.unwrap().city().as_str(), "Pun\u{e9} East");

    let started = app
        .client
        .post(app.url("/quotes"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!(
            "quote_id={}&idempotency_key=k&applicant_name=Meera%FF&csrf_token={token}",
            Uuid::now_v7()
        ))
        .send()
        .await
        .unwrap();
    html_page(started, 400).await;
    assert_eq!(
        summary::for_agent(&app.state.db, "asha", None, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

async fn the_applicants_name_is_checked_before_submitting_and_a_correction_is_an_event_of_its_own(
    test_db: &TestDb,
) {
    let app = TestApp::spawn(test_db).await;
    app.sign_in_as("asha", &[Role::Agent]).await;
    let id = start_quote(&app, "Meera Iyr").await;
    answer(&app, id, "geographic", GEOGRAPHIC).await;
    answer(&app, id, "contact", CONTACT).await;
    answer(&app, id, "family", FAMILY).await;

    // Check your answers shows the name first, with its Change link.
    let review = html_page(app.get(&format!("/quotes/{id}/review")).await, 200).await;
    let applicant = review
        .find("<h2>Applicant</h2>")
        .expect("the applicant's section");
    assert!(
        applicant < review.find("<h2>Geographic details</h2>").unwrap(),
        "{review}"
    );
    assert!(review.contains("Meera Iyr"), "{review}");
    assert!(
        review.contains(&format!("/quotes/{id}/applicant#applicant_name")),
        "{review}"
    );

    // The form shows the name as it is; a blank one is refused with the input kept.
    let path = format!("/quotes/{id}/applicant");
    let (form, version, key) = open_form(&app, &path).await;
    assert_eq!(field(&form, "applicant_name"), "Meera Iyr");
    let blank = app
        .post_form(
            &path,
            &[
                ("applicant_name", "  "),
                ("version", &version),
                ("idempotency_key", &key),
            ],
        )
        .await;
    let body = html_page(blank, 422).await;
    assert!(body.contains("Enter the applicant&#39;s name"), "{body}");
    assert_eq!(
        event_types(&app, id).await.len(),
        5,
        "a refused form writes nothing"
    );

    // An old version is refused, what was typed kept.
    let stale = app
        .post_form(
            &path,
            &[
                ("applicant_name", "Meera Iyer"),
                ("version", "2"),
                ("idempotency_key", "k2"),
            ],
        )
        .await;
    let body = html_page(stale, 409).await;
    assert_eq!(field(&body, "applicant_name"), "Meera Iyer");

    let saved = app
        .post_form(
            &path,
            &[
                ("applicant_name", "Meera Iyer"),
                ("version", &version),
                ("idempotency_key", &key),
            ],
        )
        .await;
    assert_is_redirect_to(&saved, &format!("/quotes/{id}/review"));
    assert_eq!(
        event_types(&app, id).await.last().map(String::as_str),
        Some("ApplicantNameCorrected")
    );
    let review = html_page(app.get(&format!("/quotes/{id}/review")).await, 200).await;
    assert!(
        review.contains("Meera Iyer") && !review.contains("Meera Iyr"),
        "{review}"
    );
    let row = summary::find(&app.state.db, id).await.unwrap().unwrap();
    assert_eq!(row.applicant_name, "Meera Iyer");
    assert_eq!(
        row.status(),
        Status::Saved,
        "a correction leaves the status as it was"
    );

    // Submitted, it waits in the queue under its corrected name, and the timeline
    // shows the correction with the name before and after.
    let (_, version, key) = open_form(&app, &format!("/quotes/{id}/review")).await;
    app.post_form(
        &format!("/quotes/{id}/finalize"),
        &[("version", &version), ("idempotency_key", &key)],
    )
    .await;
    let underwriter = app.new_browser();
    underwriter.sign_in_as("uma", &[Role::Underwriter]).await;
    let queue = html_page(underwriter.get("/underwriting/queue").await, 200).await;
    assert!(
        queue.contains("Meera Iyer") && !queue.contains("Meera Iyr"),
        "{queue}"
    );
    let timeline = html_page(
        underwriter.get(&format!("/quotes/{id}/timeline")).await,
        200,
    )
    .await;
    assert!(
        timeline.contains("Applicant&#39;s name corrected"),
        "{timeline}"
    );
    assert!(
        timeline.contains("Applicant name: Meera Iyr → Meera Iyer"),
        "{timeline}"
    );

    // Once submitted, the name is read-only like every answer.
    let refused = app.get(&path).await;
    assert_eq!(refused.status().as_u16(), 409);
    let version = current_version(&app.state, id).await.to_string();
    let late = app
        .post_form(
            &path,
            &[
                ("applicant_name", "Someone Else"),
                ("version", &version),
                ("idempotency_key", "k3"),
            ],
        )
        .await;
    assert_eq!(late.status().as_u16(), 409);
    assert_eq!(
        summary::find(&app.state.db, id)
            .await
            .unwrap()
            .unwrap()
            .applicant_name,
        "Meera Iyer"
    );
}

async fn the_contact_page_asks_how_the_applicant_prefers_to_be_contacted(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    app.sign_in_as("asha", &[Role::Agent]).await;
    let id = start_quote(&app, "Meera Iyer").await;
    answer(&app, id, "geographic", GEOGRAPHIC).await;
    let path = format!("/quotes/{id}/contact");

    // Email is chosen until the agent says otherwise.
    let (form, version, key) = open_form(&app, &path).await;
    assert!(
        form.contains(r#"id="preferred_contact" name="preferred_contact" value="email" checked"#),
        "{form}"
    );
    assert!(form.contains(r#"value="phone">"#), "{form}");

    // A choice that is not offered is refused beside the question.
    let mut fields = CONTACT.to_vec();
    fields.extend([
        ("preferred_contact", "fax"),
        ("version", &version),
        ("idempotency_key", &key),
    ]);
    let body = html_page(app.post_form(&path, &fields).await, 422).await;
    assert!(
        body.contains("Choose how the applicant prefers to be contacted"),
        "{body}"
    );
    assert!(body.contains(r##"href="#preferred_contact""##), "{body}");

    let mut fields = CONTACT.to_vec();
    fields.extend([
        ("preferred_contact", "phone"),
        ("version", &version),
        ("idempotency_key", &key),
    ]);
    let saved = app.post_form(&path, &fields).await;
    assert_is_redirect_to(&saved, &format!("/quotes/{id}/family"));
    let events = app.state.store.read_stream(id, 0).await.unwrap();
    let contact = events.last().unwrap();
    assert_eq!(
        (contact.event_type.as_str(), contact.schema_version),
        ("ContactDetailsProvided", 2)
    );
    assert_eq!(contact.payload["preferred_contact"], "phone");

    let (form, _, _) = open_form(&app, &path).await;
    assert!(
        form.contains(
            r#"id="preferred_contact-phone" name="preferred_contact" value="phone" checked"#
        ),
        "{form}"
    );
    answer(&app, id, "family", FAMILY).await;
    let review = html_page(app.get(&format!("/quotes/{id}/review")).await, 200).await;
    assert!(review.contains("<dt>Preferred contact</dt>"), "{review}");
    assert!(review.contains("<dd>Phone</dd>"), "{review}");
}
