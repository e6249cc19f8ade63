//! Audit over HTTP, on both backends: the timeline and time travel, the log and its
//! streamed exports, hash-chain verification (library, page and command), and that
//! auditors change nothing.

use axum::body::Body;
use axum::http::Request;
use chrono::{DateTime, Days, Utc};
use futures_util::StreamExt;
use quoteline::AppState;
use quoteline::audit::log::{self, Cursor, LogFilter};
use quoteline::audit::{TimelineEntry, timeline};
use quoteline::db::Db;
use quoteline::eventstore::{AppendRequest, ExpectedVersion, Metadata, Problem};
use quoteline::kernel::{Actor, Role};
use quoteline::on_backend;
use quoteline::quoting::answers_of;
use quoteline::quoting::domain::{
    Action, ContactDetails, FamilyDetails, GeographicDetails, NonEmptyText, PersonName, Quote,
    QuoteEvent, Status, evolve,
};
use quoteline::quoting::summary;
use tower::ServiceExt;
use uuid::Uuid;

use crate::support::{
    PgPlan, TestApp, TestDb, act_now, assert_is_redirect_to, envelope, html_page,
    run_verify_command, session_cookie,
};

storage_tests!(
    the_timeline_lists_each_event_newest_first_with_its_actor_status_change_and_field_changes,
    as_of_shows_the_quote_exactly_as_its_first_n_events_fold,
    exports_contain_exactly_the_filtered_events_and_survive_commas_quotes_and_line_breaks,
    a_large_export_is_written_a_page_at_a_time_while_it_is_still_being_read,
    a_reason_that_looks_like_a_formula_is_exported_to_csv_as_text,
    tampering_is_reported_by_the_library_the_page_and_the_command,
    no_post_route_accepts_an_auditor_and_an_auditor_writes_nothing,
    auditors_filter_and_page_the_log_and_others_are_refused,
    a_long_timeline_is_read_fifty_events_a_page,
    the_log_by_reference_reads_the_quotes_own_entries_without_sorting,
);

// ----- Arrange -----------------------------------------------------------------------

fn agent(name: &str) -> Actor {
    Actor::new(name, [Role::Agent])
}

fn uma() -> Actor {
    Actor::new("uma", [Role::Underwriter])
}

async fn start(app: &AppState, by: &Actor, applicant: &str) -> Uuid {
    let id = Uuid::now_v7();
    let name = PersonName::parse(applicant).unwrap();
    app.quotes
        .start(id, by.clone(), name, &envelope())
        .await
        .unwrap();
    id
}

/// Runs `action` on the quote as it is now.
async fn act(app: &AppState, id: Uuid, by: &Actor, action: Action) {
    act_now(app, id, by, action).await.unwrap();
}

fn geographic(city: &str, postal_code: &str) -> Action {
    Action::ProvideGeographic(
        GeographicDetails::parse("IN", "Maharashtra", city, postal_code).unwrap(),
    )
}

fn contact(email: &str) -> Action {
    Action::ProvideContact(ContactDetails::parse(email, "+91 98765 43210").unwrap())
}

fn family(dependents: &str, children: &[&str]) -> Action {
    let children: Vec<String> = children.iter().map(|c| c.to_string()).collect();
    Action::ProvideFamily(FamilyDetails::parse(dependents, "Ravi", &children).unwrap())
}

fn text(s: &str) -> NonEmptyText {
    NonEmptyText::parse(s).unwrap()
}

/// A quote by `by`, answered and submitted: six events.
async fn submitted(app: &AppState, by: &Actor, applicant: &str) -> Uuid {
    let id = start(app, by, applicant).await;
    act(app, id, by, geographic("Pune", "411001")).await;
    act(app, id, by, contact("a@example.com")).await;
    act(app, id, by, family("1", &[])).await;
    act(app, id, by, Action::Finalize).await;
    id
}

async fn reference_of(app: &AppState, id: Uuid) -> String {
    summary::find(&app.db, id).await.unwrap().unwrap().reference
}

async fn count(db: &Db, table: &str) -> i64 {
    let sql = format!("SELECT COUNT(*) FROM {table}");
    on_backend!(db, pool => sqlx::query_scalar(&sql).fetch_one(pool).await.unwrap())
}

/// A quote of `events` events appended straight to the store in one append: its
/// start, then the city changed again and again.
async fn long_quote(app: &AppState, reference: &str, events: usize) -> Uuid {
    let id = Uuid::now_v7();
    let mut history = vec![QuoteEvent::QuoteStarted {
        reference: reference.into(),
        applicant_name: PersonName::parse("Long History").unwrap(),
        agent: "asha".into(),
    }];
    for n in 1..events {
        history.push(QuoteEvent::GeographicDetailsProvided(
            GeographicDetails::parse("IN", "Maharashtra", &format!("City {n}"), "411001").unwrap(),
        ));
    }
    app.store
        .append(AppendRequest {
            stream_id: id,
            expected: ExpectedVersion::NoStream,
            events: history.iter().map(QuoteEvent::encode).collect(),
            metadata: Metadata::new("asha", Utc::now()),
        })
        .await
        .unwrap();
    id
}

// ----- Reading pages -----------------------------------------------------------------

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let to = text[from..].find(end)?;
    Some(&text[from..from + to])
}

/// One entry of a timeline page.
#[derive(Debug)]
struct Shown {
    version: i64,
    title: String,
    who: String,
    at: DateTime<Utc>,
    html: String,
}

fn timeline_entries(body: &str) -> Vec<Shown> {
    body.split(r#"<li class="timeline__entry""#)
        .skip(1)
        .map(|html| Shown {
            version: between(html, r#"data-version=""#, r#"""#)
                .unwrap()
                .parse()
                .unwrap(),
            title: between(html, r#"<h2 class="timeline__title">"#, " <span")
                .unwrap()
                .to_owned(),
            who: between(html, r#"by <span class="timeline__actor">"#, ")")
                .unwrap()
                .replace("</span> (", " ("),
            at: between(html, r#"<time datetime=""#, r#"""#)
                .unwrap()
                .parse()
                .unwrap(),
            html: html.to_owned(),
        })
        .collect()
}

/// The positions of the rows of a log page, in page order.
fn log_positions(body: &str) -> Vec<i64> {
    body.split(r#"<tr data-position=""#)
        .skip(1)
        .map(|row| row[..row.find('"').unwrap()].parse().unwrap())
        .collect()
}

/// The href of the link whose text is `label`, unescaped.
fn link(body: &str, label: &str) -> Option<String> {
    let end = body.find(&format!(">{label}</a>"))?;
    let start = body[..end].rfind("href=\"")? + "href=\"".len();
    let href = &body[start..end];
    Some(href[..href.find('"')?].replace("&amp;", "&"))
}

fn status_tag(status: Status) -> String {
    format!(
        r#"<strong class="tag tag--{}">{}</strong>"#,
        status.as_str().to_lowercase(),
        status.label()
    )
}

/// The (label, value) rows of the answers on an as-of page.
fn shown_answers(body: &str) -> Vec<(String, String)> {
    let answers = &body[body.find(r#"class="as-of-answers""#).unwrap()..];
    answers
        .split("<dt>")
        .skip(1)
        .map(|row| {
            (
                row[..row.find("</dt>").unwrap()].to_owned(),
                between(row, "<dd>", "</dd>").unwrap().to_owned(),
            )
        })
        .collect()
}

fn expected_answers(quote: &Quote) -> Vec<(String, String)> {
    answers_of(quote)
        .into_iter()
        .flat_map(|section| section.rows)
        .map(|row| (row.label.to_owned(), row.value))
        .collect()
}

// ----- The timeline ------------------------------------------------------------------

async fn the_timeline_lists_each_event_newest_first_with_its_actor_status_change_and_field_changes(
    test_db: &TestDb,
) {
    let app = TestApp::spawn(test_db).await;
    let asha = agent("asha");
    let state = &app.state;
    let id = start(state, &asha, "Meera Iyer").await;
    act(state, id, &asha, geographic("Pune", "411001")).await;
    act(state, id, &asha, contact("a@example.com")).await;
    act(state, id, &asha, family("1", &[])).await;
    act(state, id, &asha, Action::Finalize).await;
    let note = "Please add the children";
    act(state, id, &uma(), Action::ReferBack { note: text(note) }).await;
    act(state, id, &asha, geographic("Mumbai", "400001")).await;
    act(state, id, &asha, family("2", &["Asha"])).await;
    act(state, id, &asha, contact("b@example.com")).await;
    act(state, id, &asha, Action::Finalize).await;
    act(state, id, &uma(), Action::Approve).await;
    app.sign_in_as("audrey", &[Role::Auditor]).await;

    let body = html_page(app.get(&format!("/quotes/{id}/timeline")).await, 200).await;

    let shown = timeline_entries(&body);
    let versions: Vec<i64> = shown.iter().map(|e| e.version).collect();
    assert_eq!(versions, (1..=12).rev().collect::<Vec<_>>(), "newest first");
    let titles: Vec<&str> = shown.iter().map(|e| e.title.as_str()).collect();
    assert_eq!(
        titles,
        [
            "Quote approved",
            "Quote submitted for approval",
            "Contact details provided",
            "Family details provided",
            "Geographic details provided",
            "Quote referred back to the agent",
            "Quote submitted for approval",
            "Family details provided",
            "Contact details provided",
            "Quote saved",
            "Geographic details provided",
            "Quote started",
        ]
    );
    for entry in &shown {
        let expected = match entry.version {
            7 | 12 => "uma (underwriter",
            _ => "asha (agent",
        };
        assert_eq!(entry.who, expected, "actor of event {}", entry.version);
    }
    assert!(
        shown.windows(2).all(|pair| pair[0].at >= pair[1].at),
        "times run newest first: {shown:?}"
    );
    let html_of = |version: i64| &shown[(12 - version) as usize].html;
    let has = |version: i64, line: &str| {
        assert!(
            html_of(version).contains(line),
            "event {version} shows {line}: {}",
            html_of(version)
        )
    };
    has(1, "Status: Initiated");
    has(1, "<li>Applicant name: Meera Iyer</li>");
    has(2, "<li>City: Pune</li>");
    has(3, "Status: Initiated → Saved");
    has(6, "Status: Saved → Submitted");
    has(7, "Status: Submitted → Saved");
    has(7, &format!("Note: “{note}”"));
    has(8, "<li>City: Pune → Mumbai</li>");
    has(8, "<li>Postal code: 411001 → 400001</li>");
    has(9, "<li>Child added: Asha</li>");
    has(9, "<li>Number of dependents: 1 → 2</li>");
    has(10, "<li>Email: a@example.com → b@example.com</li>");
    has(12, "Status: Submitted → Approved");
    assert!(
        !html_of(2).contains("Status:"),
        "a section leaves the status as it was"
    );
    assert!(
        !html_of(10).contains("City:"),
        "only the fields that changed are listed"
    );

    let underwriter = app.new_browser();
    underwriter.sign_in_as("ulla", &[Role::Underwriter]).await;
    let seen = html_page(
        underwriter.get(&format!("/quotes/{id}/timeline")).await,
        200,
    )
    .await;
    assert_eq!(timeline_entries(&seen).len(), 12);
    let agent_browser = app.new_browser();
    agent_browser.sign_in_as("asha", &[Role::Agent]).await;
    html_page(
        agent_browser.get(&format!("/quotes/{id}/timeline")).await,
        403,
    )
    .await;
    html_page(
        app.get(&format!("/quotes/{}/timeline", Uuid::now_v7()))
            .await,
        404,
    )
    .await;

    // The page reads its entries as one JSON value; each holds every column as a
    // plain read of the rows gives it.
    let sql = format!(
        "{}WHERE stream_id = $1 ORDER BY version DESC",
        timeline::SELECT_ENTRY
    );
    let plain: Vec<TimelineEntry> = on_backend!(&state.db, pool => sqlx::query_as(&sql).bind(id).fetch_all(pool).await.unwrap());
    assert_eq!(plain.len(), 12);
    assert_eq!(
        timeline::for_quote(&state.db, id, None, 100).await.unwrap(),
        plain
    );
    assert_eq!(
        timeline::for_quote(&state.db, id, Some(5), 2)
            .await
            .unwrap(),
        plain[8..10],
        "versions 4 and 3"
    );
    assert_eq!(
        timeline::for_quote(&state.db, Uuid::now_v7(), None, 100)
            .await
            .unwrap(),
        []
    );
}

async fn as_of_shows_the_quote_exactly_as_its_first_n_events_fold(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let (state, asha) = (&app.state, agent("asha"));
    let id = submitted(state, &asha, "Meera Iyer").await; // 6 events
    let rounds: [(&str, &str, Action); 3] = [
        ("Mumbai", "b@example.com", family("2", &["Asha"])),
        ("Nagpur", "c@example.com", family("3", &["Asha", "Kiran"])),
        ("Thane", "d@example.com", family("3", &["Kiran"])),
    ];
    for (round, (city, email, family_action)) in rounds.into_iter().enumerate() {
        let note = format!("Round {round}: please check");
        act(state, id, &uma(), Action::ReferBack { note: text(&note) }).await;
        act(state, id, &asha, geographic(city, "400001")).await;
        if round < 2 {
            act(state, id, &asha, contact(email)).await;
            act(state, id, &asha, family_action).await;
        }
        act(state, id, &asha, Action::Finalize).await;
    }
    act(state, id, &uma(), Action::Approve).await;
    let events = state.store.read_stream(id, 0).await.unwrap();
    assert_eq!(events.len(), 20);
    app.sign_in_as("audrey", &[Role::Auditor]).await;

    let mut expected = Quote::default();
    for (n, recorded) in (1i64..).zip(&events) {
        expected = evolve(expected, &QuoteEvent::decode(recorded).unwrap());

        let body = html_page(
            app.get(&format!("/quotes/{id}/timeline?as_of={n}")).await,
            200,
        )
        .await;

        let status = expected.status.unwrap();
        let status_line = between(&body, r#"id="as-of-status">"#, "</p>").unwrap();
        assert!(
            status_line.contains(&status_tag(status)),
            "after event {n} the quote is {status:?}: {status_line}"
        );
        assert_eq!(
            shown_answers(&body),
            expected_answers(&expected),
            "answers after event {n}"
        );
        if expected.referral_count > 0 {
            assert!(
                status_line.contains(&format!("referred back {} time", expected.referral_count))
            );
        }
        assert!(body.contains(&format!("after event {n} of 20")), "{body}");
        let previous = link(&body, &format!("Previous event ({})", n - 1));
        let next = link(&body, &format!("Next event ({})", n + 1));
        assert_eq!(
            previous,
            (n > 1).then(|| format!("/quotes/{id}/timeline?as_of={}", n - 1))
        );
        assert_eq!(
            next,
            (n < 20).then(|| format!("/quotes/{id}/timeline?as_of={}", n + 1))
        );
    }

    for beyond in ["21", "0", "-3"] {
        let body = html_page(
            app.get(&format!("/quotes/{id}/timeline?as_of={beyond}"))
                .await,
            404,
        )
        .await;
        assert!(body.contains("There is no such event"), "{body}");
    }
    html_page(
        app.get(&format!("/quotes/{id}/timeline?as_of=ten")).await,
        400,
    )
    .await;
    html_page(
        app.get(&format!("/quotes/{}/timeline?as_of=1", Uuid::now_v7()))
            .await,
        404,
    )
    .await;
}

// ----- Exports -----------------------------------------------------------------------

/// CSV parsed with a real parser: one map of column to value per record.
fn parse_csv(body: &str) -> Vec<std::collections::HashMap<String, String>> {
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let headers = reader.headers().unwrap().clone();
    reader
        .records()
        .map(|record| {
            let record = record.unwrap();
            headers
                .iter()
                .zip(record.iter())
                .map(|(h, v)| (h.to_owned(), v.to_owned()))
                .collect()
        })
        .collect()
}

fn parse_json_lines(body: &str) -> Vec<serde_json::Value> {
    body.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

async fn download(app: &TestApp, path: &str) -> (String, String, String) {
    let response = app.get(path).await;
    assert_eq!(response.status().as_u16(), 200, "{path}");
    let header = |name: &str| response.headers()[name].to_str().unwrap().to_owned();
    let (content_type, disposition) = (header("content-type"), header("content-disposition"));
    (content_type, disposition, response.text().await.unwrap())
}

async fn csv_rows(app: &TestApp, query: &str) -> Vec<std::collections::HashMap<String, String>> {
    let (content_type, disposition, body) =
        download(app, &format!("/audit/export.csv?{query}")).await;
    assert_eq!(content_type, "text/csv; charset=utf-8");
    assert!(
        disposition.starts_with(r#"attachment; filename="quoteline-audit-"#)
            && disposition.ends_with(r#".csv""#),
        "{disposition}"
    );
    parse_csv(&body)
}

async fn json_rows(app: &TestApp, query: &str) -> Vec<serde_json::Value> {
    let (content_type, disposition, body) =
        download(app, &format!("/audit/export.jsonl?{query}")).await;
    assert!(
        content_type.starts_with("application/jsonl"),
        "{content_type}"
    );
    assert!(disposition.ends_with(r#".jsonl""#), "{disposition}");
    parse_json_lines(&body)
}

async fn exports_contain_exactly_the_filtered_events_and_survive_commas_quotes_and_line_breaks(
    test_db: &TestDb,
) {
    let app = TestApp::spawn(test_db).await;
    let state = &app.state;
    let applicant = r#"O'Brien, "Jim""#;
    let reason = "Income not verified,\nsee the \"notes\" file";
    let obrien = submitted(state, &agent("asha"), applicant).await;
    act(
        state,
        obrien,
        &uma(),
        Action::Reject {
            reason: text(reason),
        },
    )
    .await;
    let other = submitted(state, &agent("bina"), "Meera Iyer").await;
    act(state, other, &uma(), Action::Approve).await;
    let reference = reference_of(state, obrien).await;
    app.sign_in_as("audrey", &[Role::Auditor]).await;

    let filter = format!("reference={reference}");
    let rows = csv_rows(&app, &filter).await;
    let lines = json_rows(&app, &filter).await;

    let mut stored = state.store.read_stream(obrien, 0).await.unwrap();
    stored.reverse();
    let expected: Vec<(String, String, String)> = stored
        .iter()
        .map(|e| {
            (
                e.event_id.to_string(),
                e.event_type.clone(),
                e.actor.clone(),
            )
        })
        .collect();
    let from_csv: Vec<(String, String, String)> = rows
        .iter()
        .map(|r| {
            (
                r["event_id"].clone(),
                r["event_type"].clone(),
                r["actor"].clone(),
            )
        })
        .collect();
    let from_json: Vec<(String, String, String)> = lines
        .iter()
        .map(|l| {
            let field = |name: &str| l[name].as_str().unwrap().to_owned();
            (field("event_id"), field("event_type"), field("actor"))
        })
        .collect();
    assert_eq!(
        from_csv, expected,
        "exactly the quote's events, newest first"
    );
    assert_eq!(from_json, expected);
    assert!(rows.iter().all(|r| r["reference"] == reference));

    let started = rows.last().unwrap();
    assert_eq!(started["event_type"], "QuoteStarted");
    assert!(
        started["changes"]
            .lines()
            .any(|l| l == format!("Applicant name: {applicant}")),
        "{started:?}"
    );
    assert_eq!(
        (rows[0]["detail"].as_str(), rows[0]["actor_role"].as_str()),
        (reason, "underwriter")
    );
    assert_eq!(
        (
            rows[0]["status_before"].as_str(),
            rows[0]["status_after"].as_str()
        ),
        ("Finalized", "Rejected")
    );
    assert_eq!(lines[0]["detail"], reason);
    let first_change = &lines.last().unwrap()["changes"][0];
    assert_eq!(first_change["field"], "Applicant name");
    assert_eq!(first_change["after"], applicant);
    assert!(first_change["before"].is_null());

    let types_by = |rows: &[std::collections::HashMap<String, String>]| {
        rows.iter()
            .map(|r| r["event_type"].clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(
        types_by(&csv_rows(&app, "actor=uma").await),
        ["QuoteApproved", "QuoteRejected"]
    );
    let finalized = csv_rows(&app, "event_type=QuoteFinalized").await;
    assert_eq!(finalized.len(), 2);
    assert_eq!(
        json_rows(&app, &format!("{filter}&event_type=QuoteRejected"))
            .await
            .len(),
        1
    );
    let today = Utc::now().date_naive();
    let (yesterday, tomorrow) = (
        today.checked_sub_days(Days::new(1)).unwrap(),
        today.checked_add_days(Days::new(1)).unwrap(),
    );
    let total = count(&state.db, "audit_timeline").await as usize;
    assert_eq!(total, 14);
    assert_eq!(csv_rows(&app, "").await.len(), total);
    assert_eq!(
        csv_rows(&app, &format!("from={yesterday}&to={tomorrow}"))
            .await
            .len(),
        total
    );
    assert!(csv_rows(&app, &format!("from={tomorrow}")).await.is_empty());
    assert!(json_rows(&app, &format!("to={yesterday}")).await.is_empty());
    html_page(app.get("/audit/export.csv?from=yesterday").await, 400).await;

    let agent_browser = app.new_browser();
    agent_browser.sign_in_as("asha", &[Role::Agent]).await;
    html_page(agent_browser.get("/audit/export.csv").await, 403).await;
    html_page(agent_browser.get("/audit/export.jsonl").await, 403).await;
}

/// A spreadsheet runs a CSV cell that starts with `=` as a formula; the CSV export
/// starts such a cell with a quote (OWASP), and JSON Lines keeps the text as it is.
async fn a_reason_that_looks_like_a_formula_is_exported_to_csv_as_text(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let state = &app.state;
    let formula = "=cmd|' /C calc'!A0";
    let id = submitted(state, &agent("asha"), "Meera Iyer").await;
    act(
        state,
        id,
        &uma(),
        Action::Reject {
            reason: text(formula),
        },
    )
    .await;
    app.sign_in_as("audrey", &[Role::Auditor]).await;

    let rows = csv_rows(&app, "event_type=QuoteRejected").await;
    let lines = json_rows(&app, "event_type=QuoteRejected").await;

    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["detail"], format!("'{formula}"));
    assert_eq!(lines[0]["detail"], formula);
}

/// An auditor's session cookie, for requests sent to the router in process.
async fn auditor_cookie(app: &TestApp) -> String {
    let password = app.add_user("audrey", &[Role::Auditor]).await;
    let response = app.sign_in("audrey", &password).await;
    format!("quoteline_session={}", session_cookie(&response).unwrap())
}

/// The export's body, read a chunk at a time by the test itself: nothing polls the
/// stream but the test, so the server can be seen between chunks.
async fn export_body(app: &TestApp, cookie: &str, path: &str) -> axum::body::BodyDataStream {
    let request = Request::get(path)
        .header("cookie", cookie)
        .body(Body::empty())
        .unwrap();
    let response = quoteline::router(app.state.clone())
        .oneshot(request)
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    response.into_body().into_data_stream()
}

async fn a_large_export_is_written_a_page_at_a_time_while_it_is_still_being_read(test_db: &TestDb) {
    const PAGE: usize = quoteline::audit::export::PAGE_ROWS as usize;
    let app = TestApp::spawn(test_db).await;
    long_quote(&app.state, "Q-BIG001", 2_600).await;
    long_quote(&app.state, "Q-BIG002", 2_400).await;
    let cookie = auditor_cookie(&app).await;

    // Whole: every row, in chunks of at most one page each.
    let mut chunks = export_body(&app, &cookie, "/audit/export.csv").await;
    let (mut csv_text, mut sizes) = (String::new(), Vec::new());
    while let Some(chunk) = chunks.next().await {
        let chunk = String::from_utf8(chunk.unwrap().to_vec()).unwrap();
        // Each chunk ends at a record's end, so it parses on its own.
        let records = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(chunk.as_bytes())
            .records()
            .count();
        sizes.push(records);
        csv_text.push_str(&chunk);
    }
    let rows = parse_csv(&csv_text);
    assert_eq!(rows.len(), 5_000);
    assert_eq!(
        sizes,
        [PAGE + 1, PAGE, PAGE, PAGE, PAGE],
        "the header, then a page a chunk"
    );
    let positions: Vec<i64> = rows
        .iter()
        .map(|r| r["position"].parse().unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|p| p[0] > p[1]),
        "newest first, none twice"
    );

    let mut lines = export_body(&app, &cookie, "/audit/export.jsonl?reference=Q-BIG002").await;
    let mut json_lines = 0;
    while let Some(chunk) = lines.next().await {
        let chunk = chunk.unwrap();
        assert!(chunk.split(|b| *b == b'\n').count() - 1 <= PAGE);
        json_lines += parse_json_lines(std::str::from_utf8(&chunk).unwrap()).len();
    }
    assert_eq!(json_lines, 2_400);

    // Lazy: after the first chunk, every older row goes. An export that read ahead
    // of its client (or collected everything first) still sends them.
    let mut chunks = export_body(&app, &cookie, "/audit/export.csv").await;
    let first = String::from_utf8(chunks.next().await.unwrap().unwrap().to_vec()).unwrap();
    let first_rows = parse_csv(&first);
    assert_eq!(first_rows.len(), PAGE, "the first chunk is the first page");
    let oldest_sent: i64 = first_rows.last().unwrap()["position"].parse().unwrap();
    on_backend!(&app.state.db, pool => {
        sqlx::query("DELETE FROM audit_timeline WHERE position < $1")
            .bind(oldest_sent)
            .execute(pool)
            .await
            .unwrap();
    });
    let mut rest = String::new();
    while let Some(chunk) = chunks.next().await {
        rest.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    assert_eq!(rest, "", "the second page was read only when asked for");
}

// ----- Verification ------------------------------------------------------------------

async fn tamper(test_db: &TestDb, sql: &str, stream: Uuid) {
    on_backend!(&test_db.db, pool => {
        sqlx::query(sql).bind(stream).execute(pool).await.unwrap();
    });
}

async fn tampering_is_reported_by_the_library_the_page_and_the_command(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let asha = agent("asha");
    let mut quotes = Vec::new();
    for n in 0..5 {
        quotes.push(submitted(&app.state, &asha, &format!("Applicant {n}")).await);
    }
    let [changed, gap, truncated, swapped, untouched] = quotes[..] else {
        unreachable!()
    };
    let (code, output) = run_verify_command(test_db).await;
    assert_eq!(code, Some(0), "{output}");
    assert!(
        output.contains("Checked 5 streams, 30 events and 0 archive segments."),
        "{output}"
    );
    assert!(output.contains("Every hash chain is intact."), "{output}");

    let payload = r#"{"email": "x@evil.example", "phone": "+14155550100"}"#;
    let change = match test_db.is_postgres() {
        true => format!(
            "UPDATE events SET payload = '{payload}'::jsonb WHERE stream_id = $1 AND version = 4"
        ),
        false => {
            format!("UPDATE events SET payload = '{payload}' WHERE stream_id = $1 AND version = 4")
        }
    };
    tamper(test_db, &change, changed).await;
    tamper(
        test_db,
        "DELETE FROM events WHERE stream_id = $1 AND version = 2",
        gap,
    )
    .await;
    tamper(
        test_db,
        "DELETE FROM events WHERE stream_id = $1 AND version = 6",
        truncated,
    )
    .await;
    for sql in [
        "UPDATE events SET version = 1000 WHERE stream_id = $1 AND version = 3",
        "UPDATE events SET version = 3 WHERE stream_id = $1 AND version = 4",
        "UPDATE events SET version = 4 WHERE stream_id = $1 AND version = 1000",
    ] {
        tamper(test_db, sql, swapped).await;
    }
    let expected = [
        (changed, 4, Problem::ContentChanged),
        (gap, 2, Problem::Missing { from: 2, to: 2 }),
        (truncated, 6, Problem::Missing { from: 6, to: 6 }),
        (swapped, 3, Problem::BrokenLink),
        (swapped, 3, Problem::ContentChanged),
        (swapped, 4, Problem::ContentChanged),
    ];

    // The library.
    let report = app.state.store.verify().await.unwrap();
    let found: Vec<(Uuid, i64, Problem)> = report
        .mismatches
        .iter()
        .map(|m| (m.stream_id, m.version, m.problem.clone()))
        .collect();
    for mismatch in &expected {
        assert!(found.contains(mismatch), "{mismatch:?} in {found:?}");
    }
    assert!(
        found.iter().all(|(stream, _, _)| *stream != untouched),
        "{found:?}"
    );

    // The command.
    let (code, output) = run_verify_command(test_db).await;
    assert_eq!(code, Some(1), "{output}");
    for (stream, version, problem) in &expected {
        let reference = reference_of(&app.state, *stream).await;
        let line =
            format!("MISMATCH stream {stream} version {version}: {problem} (quote {reference})");
        assert!(output.contains(&line), "{line} in {output}");
    }
    assert!(!output.contains(&untouched.to_string()), "{output}");
    assert!(
        output.contains(&format!("{} mismatches found.", found.len())),
        "{output}"
    );

    // The page: the command's run is shown, then a check run from the page.
    app.sign_in_as("audrey", &[Role::Auditor]).await;
    let page = html_page(app.get("/audit/verify").await, 200).await;
    assert!(
        page.contains("quoteline verify"),
        "the command's run is recorded: {page}"
    );
    let response = app.post_form("/audit/verify", &[]).await;
    assert_is_redirect_to(&response, "/audit/verify");
    let page = html_page(app.get("/audit/verify").await, 200).await;
    assert!(
        page.contains(&format!("{} mismatches found.", found.len())),
        "{page}"
    );
    assert!(page.contains("<dd>audrey</dd>"), "{page}");
    // The quotes' 28 events and each person's PersonAdded.
    let checked = count(&app.state.db, "events").await;
    assert_eq!(checked, 28 + count(&app.state.db, "users").await);
    assert!(
        page.contains(&format!("<dt>Events checked</dt><dd>{checked}</dd>")),
        "{page}"
    );
    for (stream, version, problem) in &expected {
        let row = between(
            &page,
            &format!(r#"<tr data-stream="{stream}" data-version="{version}">"#),
            "</tr>",
        )
        .unwrap_or_else(|| panic!("no row for {stream} {version}: {page}"));
        let reference = reference_of(&app.state, *stream).await;
        assert!(row.contains(&reference), "{row}");
        let wrong = problem.to_string().replace('\'', "&#39;");
        assert!(page.contains(&wrong), "{wrong} in {page}");
    }
}

// ----- Read-only auditors, and who sees what -------------------------------------------

async fn no_post_route_accepts_an_auditor_and_an_auditor_writes_nothing(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let id = submitted(&app.state, &agent("asha"), "Meera Iyer").await;
    app.sign_in_as("audrey", &[Role::Auditor]).await;
    let (events, rows) = (
        count(&app.state.db, "events").await,
        count(&app.state.db, "audit_timeline").await,
    );
    let new_id = Uuid::now_v7().to_string();
    let meta = [("version", "6"), ("idempotency_key", "auditor-try")];
    let posts: Vec<(String, Vec<(&str, &str)>)> = vec![
        (
            "/quotes".into(),
            vec![
                ("quote_id", new_id.as_str()),
                ("idempotency_key", "auditor-start"),
                ("applicant_name", "Someone"),
            ],
        ),
        (
            format!("/quotes/{id}/geographic"),
            vec![
                ("country", "IN"),
                ("region", "Goa"),
                ("city", "Panaji"),
                ("postal_code", "403001"),
            ],
        ),
        (
            format!("/quotes/{id}/contact"),
            vec![("email", "x@example.com"), ("phone", "+14155550100")],
        ),
        (
            format!("/quotes/{id}/family"),
            vec![("dependents", "0"), ("action", "save")],
        ),
        (format!("/quotes/{id}/finalize"), vec![]),
        (format!("/quotes/{id}/withdraw"), vec![]),
        (format!("/quotes/{id}/approve"), vec![]),
        (format!("/quotes/{id}/reject"), vec![("text", "No")]),
        (format!("/quotes/{id}/refer"), vec![("text", "Check")]),
    ];

    for (path, fields) in posts {
        let mut fields = fields;
        fields.extend(meta);
        let response = app.post_form(&path, &fields).await;
        html_page(response, 403).await;
    }
    // The one POST an auditor may make runs a check; it writes no event either.
    let response = app.post_form("/audit/verify", &[]).await;
    assert_is_redirect_to(&response, "/audit/verify");

    assert_eq!(
        count(&app.state.db, "events").await,
        events,
        "no event written"
    );
    assert_eq!(count(&app.state.db, "audit_timeline").await, rows);
    let quote = app.state.quotes.load(id, None).await.unwrap().unwrap();
    assert_eq!((quote.version, quote.status), (6, Some(Status::Finalized)));

    for (who, roles) in [("asha", [Role::Agent]), ("uma", [Role::Underwriter])] {
        let other = app.new_browser();
        other.sign_in_as(who, &roles).await;
        html_page(other.post_form("/audit/verify", &[]).await, 403).await;
    }
    assert_eq!(count(&app.state.db, "verification_runs").await, 1);
}

async fn auditors_filter_and_page_the_log_and_others_are_refused(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let state = &app.state;
    let first = submitted(state, &agent("asha"), "Meera Iyer").await; // 6 events
    let second = start(state, &agent("bina"), "Kiran Rao").await;
    act(state, second, &agent("bina"), geographic("Pune", "411001")).await; // 3 events
    long_quote(state, "Q-LONG01", 60).await;
    let second_reference = reference_of(state, second).await;
    app.sign_in_as("audrey", &[Role::Auditor]).await;

    // Paging: 69 events, 50 a page, no OFFSET: older, then newer again.
    let newest = html_page(app.get("/audit").await, 200).await;
    let page_one = log_positions(&newest);
    assert_eq!(page_one.len(), 50);
    assert!(link(&newest, "Newer events").is_none());
    let older = link(&newest, "Older events").expect("a link to older events");
    assert_eq!(older, format!("?before={}", page_one.last().unwrap()));
    let body = html_page(app.get(&format!("/audit{older}")).await, 200).await;
    let page_two = log_positions(&body);
    assert_eq!(page_two.len(), 19);
    assert!(link(&body, "Older events").is_none());
    let all: Vec<i64> = page_one.iter().chain(&page_two).copied().collect();
    assert!(
        all.windows(2).all(|p| p[0] > p[1]),
        "newest first, none twice: {all:?}"
    );
    // Every quote event; people's events have their own pages.
    assert_eq!(all.len() as i64, count(&state.db, "audit_timeline").await);
    let newer = link(&body, "Newer events").expect("a link back");
    let back = html_page(app.get(&format!("/audit{newer}")).await, 200).await;
    assert_eq!(log_positions(&back), page_one);

    // Filters.
    let body = html_page(
        app.get(&format!(
            "/audit?reference={}",
            second_reference.to_lowercase()
        ))
        .await,
        200,
    )
    .await;
    assert_eq!(log_positions(&body).len(), 3);
    assert_eq!(body.matches(&format!(">{second_reference}</a>")).count(), 3);
    assert!(
        body.contains(&format!(
            r#"href="/audit/export.csv?reference={second_reference}""#
        )),
        "the exports keep the filter: {body}"
    );
    let by_bina = html_page(app.get("/audit?actor=bina").await, 200).await;
    assert_eq!(log_positions(&by_bina).len(), 3);
    let submitted_only = html_page(app.get("/audit?event_type=QuoteFinalized").await, 200).await;
    assert_eq!(log_positions(&submitted_only).len(), 1);
    assert!(submitted_only.contains(r#"<option value="QuoteFinalized" selected>"#));
    let tomorrow = Utc::now()
        .date_naive()
        .checked_add_days(Days::new(1))
        .unwrap();
    let none = html_page(app.get(&format!("/audit?from={tomorrow}")).await, 200).await;
    assert!(log_positions(&none).is_empty() && none.contains("No events match."));
    let bad = html_page(
        app.get("/audit?from=31%2F12%2F2025&event_type=Nope").await,
        400,
    )
    .await;
    assert!(
        bad.contains("From date must be a date like 2025-03-31"),
        "{bad}"
    );
    assert!(bad.contains("Select an event type from the list"), "{bad}");

    // Who may see what.
    let agent_browser = app.new_browser();
    agent_browser.sign_in_as("asha", &[Role::Agent]).await;
    for path in [
        "/audit".to_owned(),
        "/audit/verify".to_owned(),
        format!("/quotes/{first}/timeline"),
        format!("/quotes/{first}/timeline?as_of=1"),
    ] {
        html_page(agent_browser.get(&path).await, 403).await;
    }
    let underwriter = app.new_browser();
    underwriter.sign_in_as("uma", &[Role::Underwriter]).await;
    html_page(underwriter.get("/audit").await, 403).await;
    html_page(
        underwriter.get(&format!("/quotes/{first}/timeline")).await,
        200,
    )
    .await;
    html_page(
        underwriter
            .get(&format!("/quotes/{first}/timeline?as_of=1"))
            .await,
        200,
    )
    .await;
}

async fn a_long_timeline_is_read_fifty_events_a_page(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let id = long_quote(&app.state, "Q-LONG02", 120).await;
    app.sign_in_as("audrey", &[Role::Auditor]).await;
    let timeline = format!("/quotes/{id}/timeline");

    let newest = html_page(app.get(&timeline).await, 200).await;
    let versions =
        |body: &str| -> Vec<i64> { timeline_entries(body).iter().map(|e| e.version).collect() };
    assert_eq!(versions(&newest), (71..=120).rev().collect::<Vec<_>>());
    assert!(!newest.contains(">Newest events<"), "already the newest");
    let older = format!("{timeline}?before=71");
    assert!(
        newest.contains(&format!(r#"href="{older}""#)),
        "links to older events"
    );

    let middle = html_page(app.get(&older).await, 200).await;
    assert_eq!(versions(&middle), (21..=70).rev().collect::<Vec<_>>());
    assert!(middle.contains(">Newest events<"));

    let oldest = html_page(app.get(&format!("{timeline}?before=21")).await, 200).await;
    assert_eq!(versions(&oldest), (1..=20).rev().collect::<Vec<_>>());
    assert!(
        !oldest.contains("Older events"),
        "nothing older than the first event"
    );
}

/// Timeline rows for `quotes` quotes of `events` events each, with their state rows,
/// put straight into the tables: the planner judges a table of a few hundred rows
/// small enough to read whole, whatever the indexes.
async fn add_timeline_rows(db: &Db, quotes: i64, events: i64) {
    let (id, event_id, at, numbers) = match db {
        Db::Sqlite(_) => (
            "unhex(printf('%032x', q))",
            "randomblob(16)",
            "'2026-01-01T00:00:00Z'",
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < $1) \
             SELECT i FROM n",
        ),
        Db::Postgres(_) => (
            "lpad(to_hex(q), 32, '0')::uuid",
            "gen_random_uuid()",
            "'2026-01-01T00:00:00Z'::timestamptz",
            "SELECT generate_series(0, $1 - 1) AS i",
        ),
    };
    let rows = format!(
        "INSERT INTO audit_timeline (position, stream_id, version, event_id, event_type, \
         reference, actor, actor_role, recorded_at, title, changes) \
         SELECT 1000000 + i, {id}, i / $2 + 1, {event_id}, 'ContactDetailsProvided', 'R-' || q, \
         CASE q % 4 WHEN 0 THEN 'asha' WHEN 1 THEN 'bilal' WHEN 2 THEN 'chen' ELSE 'dara' END, \
         'agent', {at}, 'Contact details provided', '[]' \
         FROM (SELECT i, i % $2 AS q FROM ({numbers}) AS n) AS e"
    );
    let states = format!(
        "INSERT INTO audit_quote_state (quote_id, reference, version, schema_version, state) \
         SELECT {id}, 'R-' || q, $2, 1, '{{}}' FROM (SELECT i AS q FROM ({numbers}) AS n) AS e"
    );
    on_backend!(db, pool => {
        sqlx::query(&rows).bind(quotes * events).bind(quotes).execute(pool).await.unwrap();
        sqlx::query(&states).bind(quotes).bind(events).execute(pool).await.unwrap();
    });
    if let Db::Postgres(pool) = db {
        sqlx::query("ANALYZE audit_timeline, audit_quote_state")
            .execute(pool)
            .await
            .unwrap();
    }
}

async fn the_log_by_reference_reads_the_quotes_own_entries_without_sorting(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let db = &app.state.db;
    add_timeline_rows(db, 2_000, 20).await;
    let reference = |r: &str| Some(r.to_owned());
    let filters = [
        LogFilter {
            reference: reference("R-7"),
            ..LogFilter::default()
        },
        LogFilter {
            reference: reference("R-7"),
            actor: Some("dara".into()),
            ..LogFilter::default()
        },
        LogFilter {
            reference: reference("R-7"),
            event_type: Some("ContactDetailsProvided"),
            from: chrono::NaiveDate::from_ymd_opt(2025, 12, 1),
            ..LogFilter::default()
        },
    ];
    // R-7's 20 entries are at positions 1,000,007, 1,002,007, ... 1,038,007.
    for filter in &filters {
        for cursor in [
            Cursor::Newest,
            Cursor::Before(1_020_007),
            Cursor::After(1_020_007),
        ] {
            let plan = log::explain(db, filter, cursor, 51).await.unwrap();
            let case = format!("{filter:?}, {cursor:?}:\n{plan}");
            match db {
                Db::Sqlite(_) => {
                    assert!(!plan.contains("TEMP B-TREE"), "{case}");
                    assert!(plan.contains("audit_timeline_by_stream"), "{case}");
                    assert!(plan.contains("audit_quote_state_by_reference"), "{case}");
                }
                Db::Postgres(_) => {
                    let plan = PgPlan::parse(&plan);
                    assert!(!plan.node_types().contains(&"Seq Scan"), "{case}");
                    assert_eq!(
                        plan.index_names(),
                        ["audit_quote_state_by_reference", "audit_timeline_by_stream"],
                        "{case}"
                    );
                    // PostgreSQL may sort what it read through the quote's index:
                    // that one quote's entries, 20 here, never an actor's or a
                    // type's.
                }
            }
        }
    }
    // And what the pages read: R-7's entries only, newest first, paged by position.
    let newest = log::page(db, &filters[0], Cursor::Newest, 8).await.unwrap();
    let positions: Vec<i64> = newest.entries.iter().map(|e| e.position).collect();
    let expected: Vec<i64> = (12..20).rev().map(|v| 1_000_007 + 2_000 * v).collect();
    assert_eq!(positions, expected);
    let older = newest.older.expect("older entries");
    let next = log::page(db, &filters[0], Cursor::Before(older), 50)
        .await
        .unwrap();
    let positions: Vec<i64> = next.entries.iter().map(|e| e.position).collect();
    let expected: Vec<i64> = (0..12).rev().map(|v| 1_000_007 + 2_000 * v).collect();
    assert_eq!(positions, expected);
    assert_eq!(next.older, None);
    let back = log::page(db, &filters[0], Cursor::After(next.newer.unwrap()), 8)
        .await
        .unwrap();
    assert_eq!(back.entries.len(), 8);
    assert_eq!(back.entries[0].position, newest.entries[0].position);
}
