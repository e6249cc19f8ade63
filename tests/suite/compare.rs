//! Two versions of a quote compared, over HTTP on both backends: each answer that
//! differs, grouped by section, with who changed it in between; the status changes
//! between; the pickers on the timeline; and bad choices refused with a clear page.
//! A property test holds the page to the difference of the two folds.

use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use quoteline::AppState;
use quoteline::audit::changes::changes;
use quoteline::kernel::{Actor, Role};
use quoteline::quoting::CommandError;
use quoteline::quoting::domain::{
    Action, ContactDetails, FamilyDetails, GeographicDetails, NonEmptyText, PersonName,
};
use uuid::Uuid;

use crate::support::{TestApp, TestDb, act_now, envelope, fresh_fold, html_page};

storage_tests!(
    two_versions_show_each_difference_by_section_with_who_changed_it,
    bad_choices_of_versions_get_a_clear_page,
    the_page_shows_exactly_the_difference_of_the_two_folds,
);

fn asha() -> Actor {
    Actor::new("asha", [Role::Agent])
}

fn uma() -> Actor {
    Actor::new("uma", [Role::Underwriter])
}

fn text(s: &str) -> NonEmptyText {
    NonEmptyText::parse(s).unwrap()
}

fn geographic(city: &str, postal_code: &str) -> Action {
    Action::ProvideGeographic(
        GeographicDetails::parse("IN", "Maharashtra", city, postal_code).unwrap(),
    )
}

fn contact(email: &str, phone: &str) -> Action {
    Action::ProvideContact(ContactDetails::parse(email, phone).unwrap())
}

fn family(dependents: &str, spouse: &str, children: &[&str]) -> Action {
    let children: Vec<String> = children.iter().map(|c| c.to_string()).collect();
    Action::ProvideFamily(FamilyDetails::parse(dependents, spouse, &children).unwrap())
}

async fn start(app: &AppState) -> Uuid {
    let id = Uuid::now_v7();
    let name = PersonName::parse("Meera Iyer").unwrap();
    app.quotes
        .start(id, asha(), name, &envelope())
        .await
        .unwrap();
    id
}

/// Runs `action` on the quote as it is now; whether a rule allowed it.
async fn act(app: &AppState, id: Uuid, by: &Actor, action: Action) -> bool {
    match act_now(app, id, by, action).await {
        Ok(_) => true,
        Err(CommandError::Rejected(_)) => false,
        Err(other) => panic!("{other}"),
    }
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let to = text[from..].find(end)?;
    Some(&text[from..from + to])
}

/// One row of the differences: the answer, its value at each version (`None` where
/// the page says it was not given) and the events listed as changing it.
#[derive(Debug, PartialEq)]
struct Row {
    section: String,
    field: String,
    before: Option<String>,
    after: Option<String>,
    by: Vec<String>,
}

fn value(cell: &str) -> Option<String> {
    (!cell.contains("compare__none")).then(|| cell.replace("&#39;", "'").replace("&amp;", "&"))
}

fn rows(body: &str) -> Vec<Row> {
    let mut found = Vec::new();
    for section in body.split("<h3>").skip(1) {
        let title = &section[..section.find("</h3>").unwrap()];
        for row in section.split(r#"<tr class="compare__difference">"#).skip(1) {
            let row = &row[..row.find("</tr>").unwrap()];
            found.push(Row {
                section: title.to_owned(),
                field: between(row, r#"<th scope="row">"#, "</th>")
                    .unwrap()
                    .to_owned(),
                before: value(between(row, r#"<td class="compare__before">"#, "</td>").unwrap()),
                after: value(between(row, r#"<td class="compare__after">"#, "</td>").unwrap()),
                by: row
                    .split("<li>")
                    .skip(1)
                    .map(|step| {
                        let link = between(step, ">", "</a>").unwrap();
                        let actor = between(step, " by ", ",").unwrap();
                        format!("{link} by {actor}")
                    })
                    .collect(),
            });
        }
    }
    found
}

/// The status changes the page lists, as "Event N: Title (Before → After) by actor".
fn status_changes(body: &str) -> Vec<String> {
    body.split(r#"<li class="compare__status">"#)
        .skip(1)
        .map(|item| {
            let item = &item[..item.find("<time").unwrap()];
            let link_end = item.find("</a>").unwrap();
            let event = &item[item[..link_end].rfind('>').unwrap() + 1..link_end];
            let rest = item[link_end + 4..]
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            format!("{event}{}", rest.trim_end_matches(','))
        })
        .collect()
}

async fn two_versions_show_each_difference_by_section_with_who_changed_it(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let state = &app.state;
    let id = start(state).await; // 1
    act(state, id, &asha(), geographic("Pune", "411001")).await; // 2, and saved: 3
    act(
        state,
        id,
        &asha(),
        contact("a@example.com", "+919876543210"),
    )
    .await; // 4
    act(state, id, &asha(), family("1", "", &[])).await; // 5
    act(state, id, &asha(), Action::Finalize).await; // 6
    act(
        state,
        id,
        &uma(),
        Action::ReferBack {
            note: text("Which city?"),
        },
    )
    .await; // 7
    act(state, id, &asha(), geographic("Mumbai", "411001")).await; // 8
    act(state, id, &asha(), family("2", "Ravi", &["Kiran"])).await; // 9
    act(state, id, &asha(), geographic("Mumbai", "400001")).await; // 10
    act(state, id, &asha(), Action::Finalize).await; // 11
    app.sign_in_as("audrey", &[Role::Auditor]).await;

    let body = html_page(
        app.get(&format!("/quotes/{id}/compare?from=6&to=11")).await,
        200,
    )
    .await;

    assert!(
        body.contains("after event 6 compared with after event 11"),
        "{body}"
    );
    assert!(body.contains("5 events between them, of 11"), "{body}");
    let row = |section: &str, field: &str, before: Option<&str>, after: &str, by: &[&str]| Row {
        section: section.into(),
        field: field.into(),
        before: before.map(str::to_owned),
        after: Some(after.into()),
        by: by.iter().map(|s| s.to_string()).collect(),
    };
    assert_eq!(
        rows(&body),
        [
            row(
                "Geographic details",
                "City",
                Some("Pune"),
                "Mumbai",
                &["Event 8 by asha"]
            ),
            row(
                "Geographic details",
                "Postal code",
                Some("411001"),
                "400001",
                &["Event 10 by asha"]
            ),
            row(
                "Family details",
                "Number of dependents",
                Some("1"),
                "2",
                &["Event 9 by asha"]
            ),
            row(
                "Family details",
                "Spouse name",
                None,
                "Ravi",
                &["Event 9 by asha"]
            ),
            row(
                "Family details",
                "Child",
                None,
                "Kiran",
                &["Event 9 by asha"]
            ),
        ]
    );
    assert_eq!(
        status_changes(&body),
        [
            "Event 7: Quote referred back to the agent (Submitted → Saved) by uma",
            "Event 11: Quote submitted for approval (Saved → Submitted) by asha",
        ]
    );
    assert!(body.contains("“Which city?”"), "{body}");

    // The two may be given in either order; the page is the same.
    let reversed = html_page(
        app.get(&format!("/quotes/{id}/compare?from=11&to=6")).await,
        200,
    )
    .await;
    assert_eq!(reversed, body);

    // Nothing differs between two events that changed no answer.
    let body = html_page(
        app.get(&format!("/quotes/{id}/compare?from=10&to=11"))
            .await,
        200,
    )
    .await;
    assert!(rows(&body).is_empty());
    assert!(body.contains(r#"id="no-differences""#), "{body}");

    // The timeline offers the choice, newest two chosen.
    let timeline = html_page(app.get(&format!("/quotes/{id}/timeline")).await, 200).await;
    assert!(
        timeline.contains(&format!(r#"action="/quotes/{id}/compare""#)),
        "{timeline}"
    );
    assert!(
        timeline.contains(r#"name="to" id="to-11" value="11" checked"#),
        "{timeline}"
    );
    assert!(
        timeline.contains(r#"name="from" id="from-10" value="10" checked"#),
        "{timeline}"
    );
    assert!(
        timeline.contains(r#"name="from" id="from-1" value="1">"#),
        "{timeline}"
    );

    // Underwriters read it as they read the timeline.
    let underwriter = app.new_browser();
    underwriter.sign_in_as("victor", &[Role::Underwriter]).await;
    html_page(
        underwriter
            .get(&format!("/quotes/{id}/compare?from=1&to=11"))
            .await,
        200,
    )
    .await;
}

async fn bad_choices_of_versions_get_a_clear_page(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let id = start(&app.state).await;
    act(&app.state, id, &asha(), geographic("Pune", "411001")).await;
    act(
        &app.state,
        id,
        &asha(),
        contact("a@example.com", "+919876543210"),
    )
    .await; // 4 events
    app.sign_in_as("audrey", &[Role::Auditor]).await;

    for (query, status, says) in [
        ("from=1", 400, "Choose two events to compare"),
        ("to=2", 400, "Choose two events to compare"),
        ("", 400, "Choose two events to compare"),
        ("from=2&to=2", 400, "Choose two different events"),
        ("from=one&to=2", 400, "must be a whole number"),
        ("from=1&to=2.5", 400, "must be a whole number"),
        ("from=1&to=5", 404, "This quote has events 1 to 4"),
        ("from=0&to=3", 404, "This quote has events 1 to 4"),
        ("from=-2&to=3", 404, "This quote has events 1 to 4"),
        (
            "from=1&to=99999999999999999999",
            400,
            "must be a whole number",
        ),
    ] {
        let response = app.get(&format!("/quotes/{id}/compare?{query}")).await;
        let body = html_page(response, status).await;
        assert!(body.contains(says), "{query}: {body}");
    }
    let unknown = Uuid::now_v7();
    html_page(
        app.get(&format!("/quotes/{unknown}/compare?from=1&to=2"))
            .await,
        404,
    )
    .await;
    html_page(
        app.get("/quotes/not-a-quote/compare?from=1&to=2").await,
        404,
    )
    .await;

    let agent = app.new_browser();
    agent.sign_in_as("asha", &[Role::Agent]).await;
    html_page(
        agent
            .get(&format!("/quotes/{id}/compare?from=1&to=2"))
            .await,
        403,
    )
    .await;
}

/// What the agent and the underwriter may do to a quote, every kind of event among
/// them: the name corrected, sections that set, change and take away answers;
/// submitting, referring back; and now and then an end (approved, rejected,
/// withdrawn).
fn actions() -> Vec<(Actor, Action)> {
    let name = |n: &str| Action::CorrectApplicantName(PersonName::parse(n).unwrap());
    vec![
        (asha(), name("Meera Iyer-Rao")),
        (asha(), geographic("Pune", "411001")),
        (asha(), geographic("Mumbai", "400001")),
        (asha(), contact("meera@example.com", "+919876543210")),
        (asha(), contact("m.iyer@example.com", "+919876543210")),
        (
            asha(),
            Action::ProvideContact(
                ContactDetails::parse_with("m.iyer@example.com", "+919876543211", "phone").unwrap(),
            ),
        ),
        (asha(), family("2", "Ravi", &["Asha"])),
        (asha(), family("3", "", &["Kiran", "Asha"])),
        (asha(), family("0", "", &[])),
        (asha(), Action::Finalize),
        (
            uma(),
            Action::ReferBack {
                note: text("Please check"),
            },
        ),
        (uma(), Action::Approve),
        (
            uma(),
            Action::Reject {
                reason: text("Not insurable"),
            },
        ),
        (asha(), Action::Withdraw),
    ]
}

fn any_history() -> impl Strategy<Value = Vec<usize>> {
    let action = prop_oneof![30 => 0..9usize, 10 => 9..11usize, 1 => 11..14usize];
    prop::collection::vec(action, 4..40)
}

async fn the_page_shows_exactly_the_difference_of_the_two_folds(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    app.sign_in_as("audrey", &[Role::Auditor]).await;
    let mut runner = TestRunner::deterministic();
    let actions = actions();
    for _ in 0..6 {
        let history = any_history().new_tree(&mut runner).unwrap().current();
        let id = start(&app.state).await;
        for &n in &history {
            let (actor, action) = actions[n].clone();
            act(&app.state, id, &actor, action).await;
        }
        let events = app.state.store.read_stream(id, 0).await.unwrap();
        let last = events.len() as i64;
        let pairs = (0..10)
            .map(|_| {
                (1..=last, 1..=last)
                    .new_tree(&mut runner)
                    .unwrap()
                    .current()
            })
            .filter(|(a, b)| a != b);
        for (a, b) in pairs {
            let body = html_page(
                app.get(&format!("/quotes/{id}/compare?from={a}&to={b}"))
                    .await,
                200,
            )
            .await;
            let (from, to) = (a.min(b), a.max(b));
            let before = fresh_fold(&app.state.store, id, Some(from)).await;
            let after = fresh_fold(&app.state.store, id, Some(to)).await;

            let shown: Vec<(String, Option<String>, Option<String>)> = rows(&body)
                .into_iter()
                .map(|row| {
                    assert!(!row.by.is_empty(), "{row:?} names who changed it");
                    (row.field, row.before, row.after)
                })
                .collect();
            let expected: Vec<(String, Option<String>, Option<String>)> = changes(&before, &after)
                .into_iter()
                .map(|c| (c.field, c.before, c.after))
                .collect();
            assert_eq!(shown, expected, "events {from} and {to} of {last}");

            let status_events = events[from as usize..to as usize]
                .iter()
                .filter(|e| {
                    let event = quoteline::quoting::domain::QuoteEvent::decode(e).unwrap();
                    event
                        .status_change()
                        .is_some_and(|(was, now)| was != Some(now))
                })
                .count();
            assert_eq!(
                status_changes(&body).len(),
                status_events,
                "events {from} and {to}"
            );
        }
    }
}
