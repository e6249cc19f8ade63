//! Who may do what, as one table: every route (docs/ARCHITECTURE.md §8) against every
//! kind of visitor, with a quote in a status where the route can do its work. A GET
//! is read; a POST carries a valid CSRF token and a well-formed form, so the answer
//! is about who sends it, nothing else. A refused POST writes nothing.

use quoteline::kernel::{Actor, Role};
use quoteline::on_backend;
use quoteline::quoting::domain::Action;
use reqwest::Method;
use uuid::Uuid;

use crate::support::{TestApp, TestDb, quote_through_service};

storage_tests!(every_route_answers_every_kind_of_visitor_as_the_table_says);

/// Someone visiting the app: a column of the table.
#[derive(Debug)]
struct Visitor {
    /// How the table's differences name them.
    name: &'static str,
    username: &'static str,
    roles: &'static [Role],
    /// Signed in from the start; the signed-out visitor signs in only in the
    /// `POST /login` row, as `visitor`.
    signed_in: bool,
    /// The agent whose quote their cells work on.
    quote_of: &'static str,
}

const fn visitor(
    name: &'static str,
    username: &'static str,
    roles: &'static [Role],
    signed_in: bool,
    quote_of: &'static str,
) -> Visitor {
    Visitor {
        name,
        username,
        roles,
        signed_in,
        quote_of,
    }
}

/// The table's columns, in order.
#[rustfmt::skip]
const VISITORS: [Visitor; 8] = [
    visitor("signed out", "visitor", &[Role::Agent], false, "asha"),
    visitor("owner agent", "asha", &[Role::Agent], true, "asha"),
    visitor("other agent", "bilal", &[Role::Agent], true, "asha"),
    visitor("underwriter", "uma", &[Role::Underwriter], true, "asha"),
    visitor("auditor", "ada", &[Role::Auditor], true, "asha"),
    visitor("admin", "root", &[Role::Admin], true, "asha"),
    visitor("agent+underwriter", "both", &[Role::Agent, Role::Underwriter], true, "asha"),
    visitor("owner agent+underwriter", "cara", &[Role::Agent, Role::Underwriter], true, "cara"),
];

impl Visitor {
    fn actor(&self) -> Actor {
        Actor::new(self.username, self.roles.iter().copied())
    }

    fn named(username: &str) -> &'static Visitor {
        VISITORS.iter().find(|v| v.username == username).unwrap()
    }
}

/// What a route answers. `{id}` in a location stands for the row's quote.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Answer {
    /// 200: the page.
    Page,
    /// 303 to this location: the work done (for a POST, written), or a redirect.
    To(&'static str),
    /// 303 to `/login`: signed out.
    SignIn,
    Forbidden,
    NotFound,
}

use Answer::*;

/// The status of the quote a row works on, which the visitor's `quote_of` started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Quote {
    /// No quote (for `POST /quotes`, a new quote's id).
    None,
    /// Every section answered, not submitted.
    Saved,
    /// Submitted, waiting for a decision.
    Finalized,
    /// Approved by an underwriter.
    Decided,
    /// Not a quote: `{id}` is the person `pat`, whom no visitor is.
    Person,
}

struct Row {
    method: Method,
    path: &'static str,
    quote: Quote,
    /// In the order of [`VISITORS`].
    answers: [Answer; 8],
}

fn row(method: Method, path: &'static str, quote: Quote, answers: [Answer; 8]) -> Row {
    Row {
        method,
        path,
        quote,
        answers,
    }
}

/// The table. Columns: signed out, owner agent, other agent, underwriter, auditor,
/// admin, agent+underwriter, owner agent+underwriter.
#[rustfmt::skip]
fn table() -> Vec<Row> {
    let (get, post) = (|| Method::GET, || Method::POST);
    const EVERYONE: [Answer; 8] = [Page; 8];
    const SIGNED_IN: [Answer; 8] = [SignIn, Page, Page, Page, Page, Page, Page, Page];
    const AGENTS: [Answer; 8] =
        [SignIn, Page,      Page,      Forbidden, Forbidden, Forbidden, Page,      Page];
    const OWN_QUOTE: [Answer; 8] =
        [SignIn, Page,      NotFound,  Forbidden, Forbidden, Forbidden, NotFound,  Page];
    const READERS: [Answer; 8] =
        [SignIn, Page,      NotFound,  Page,      Page,      Forbidden, Page,      Page];
    const UNDERWRITERS: [Answer; 8] =
        [SignIn, Forbidden, Forbidden, Page,      Forbidden, Forbidden, Page,      Page];
    /// A decision's page: nobody decides a quote they started.
    const DECISION: [Answer; 8] =
        [SignIn, Forbidden, Forbidden, Page,      Forbidden, Forbidden, Page,      Forbidden];
    const HISTORY: [Answer; 8] =
        [SignIn, Forbidden, Forbidden, Page,      Page,      Forbidden, Page,      Page];
    const AUDITORS: [Answer; 8] =
        [SignIn, Forbidden, Forbidden, Forbidden, Page,      Forbidden, Forbidden, Forbidden];
    const ADMINS: [Answer; 8] =
        [SignIn, Forbidden, Forbidden, Forbidden, Forbidden, Page,      Forbidden, Forbidden];
    const PEOPLE_READERS: [Answer; 8] =
        [SignIn, Forbidden, Forbidden, Forbidden, Page,      Page,      Forbidden, Forbidden];
    const ADMIN_POST: [Answer; 8] =
        [SignIn, Forbidden, Forbidden, Forbidden, Forbidden, To("/people/{id}"), Forbidden,
         Forbidden];
    const fn own_quote_post(done: &'static str) -> [Answer; 8] {
        [SignIn, To(done),  NotFound,  Forbidden, Forbidden, Forbidden, NotFound,  To(done)]
    }
    const DECIDE: [Answer; 8] =
        [SignIn, Forbidden, Forbidden, To("/quotes/{id}/decided"), Forbidden, Forbidden,
         To("/quotes/{id}/decided"), Forbidden];
    vec![
        row(get(), "/", Quote::None,
            [SignIn, To("/quotes"), To("/quotes"), To("/underwriting/queue"), To("/audit"),
             To("/people"), To("/quotes"), To("/quotes")]),
        row(get(), "/login", Quote::None, EVERYONE),
        row(get(), "/healthz", Quote::None, EVERYONE),
        row(get(), "/static/style.css", Quote::None, EVERYONE),
        row(get(), "/static/favicon.svg", Quote::None, EVERYONE),
        row(get(), "/quotes", Quote::None, AGENTS),
        row(get(), "/quotes/new", Quote::None, AGENTS),
        row(post(), "/quotes", Quote::None,
            [SignIn, To("/quotes/{id}"), To("/quotes/{id}"), Forbidden, Forbidden, Forbidden,
             To("/quotes/{id}"), To("/quotes/{id}")]),
        row(get(), "/quotes/{id}", Quote::Saved, READERS),
        row(get(), "/quotes/{id}", Quote::Finalized, READERS),
        row(get(), "/quotes/{id}/geographic", Quote::Saved, OWN_QUOTE),
        row(post(), "/quotes/{id}/geographic", Quote::Saved, own_quote_post("/quotes/{id}/review")),
        row(get(), "/quotes/{id}/applicant", Quote::Saved, OWN_QUOTE),
        row(post(), "/quotes/{id}/applicant", Quote::Saved, own_quote_post("/quotes/{id}/review")),
        row(get(), "/quotes/{id}/contact", Quote::Saved, OWN_QUOTE),
        row(post(), "/quotes/{id}/contact", Quote::Saved, own_quote_post("/quotes/{id}/review")),
        row(get(), "/quotes/{id}/family", Quote::Saved, OWN_QUOTE),
        row(post(), "/quotes/{id}/family", Quote::Saved, own_quote_post("/quotes/{id}/review")),
        row(get(), "/quotes/{id}/review", Quote::Saved, OWN_QUOTE),
        row(post(), "/quotes/{id}/finalize", Quote::Saved, own_quote_post("/quotes/{id}")),
        row(get(), "/quotes/{id}/withdraw", Quote::Saved, OWN_QUOTE),
        row(post(), "/quotes/{id}/withdraw", Quote::Saved, own_quote_post("/quotes/{id}")),
        row(get(), "/underwriting/queue", Quote::Finalized, UNDERWRITERS),
        row(get(), "/quotes/{id}/approve", Quote::Finalized, DECISION),
        row(post(), "/quotes/{id}/approve", Quote::Finalized, DECIDE),
        row(get(), "/quotes/{id}/reject", Quote::Finalized, DECISION),
        row(post(), "/quotes/{id}/reject", Quote::Finalized, DECIDE),
        row(get(), "/quotes/{id}/refer", Quote::Finalized, DECISION),
        row(post(), "/quotes/{id}/refer", Quote::Finalized, DECIDE),
        row(get(), "/quotes/{id}/decided", Quote::Decided, UNDERWRITERS),
        row(get(), "/quotes/{id}/timeline", Quote::Decided, HISTORY),
        row(get(), "/quotes/{id}/compare?from=1&to=2", Quote::Decided, HISTORY),
        row(get(), "/quotes/{id}/proof.json", Quote::Decided, AUDITORS),
        row(get(), "/account/password", Quote::None, SIGNED_IN),
        row(get(), "/people", Quote::None, PEOPLE_READERS),
        row(get(), "/people/new", Quote::None, ADMINS),
        row(get(), "/people/{id}", Quote::Person, PEOPLE_READERS),
        row(get(), "/people/{id}/roles", Quote::Person, ADMINS),
        row(get(), "/people/{id}/reset", Quote::Person, ADMINS),
        row(post(), "/people/{id}/roles", Quote::Person, ADMIN_POST),
        row(get(), "/people/{id}/deactivate", Quote::Person, ADMINS),
        row(post(), "/people/{id}/deactivate", Quote::Person, ADMIN_POST),
        row(get(), "/people/{id}/reactivate", Quote::Person, ADMINS),
        row(post(), "/people/{id}/reactivate", Quote::Person, ADMIN_POST),
        row(get(), "/audit", Quote::Decided, AUDITORS),
        row(get(), "/audit/export.csv", Quote::Decided, AUDITORS),
        row(get(), "/audit/export.jsonl", Quote::Decided, AUDITORS),
        row(get(), "/audit/verify", Quote::None, AUDITORS),
        row(post(), "/audit/verify", Quote::None,
            [SignIn, Forbidden, Forbidden, Forbidden, To("/audit/verify"), Forbidden, Forbidden,
             Forbidden]),
        // Last, as they change who the visitor is: signing out, then in again as
        // themselves (the signed-out visitor as `visitor`, an agent).
        row(post(), "/logout", Quote::None, [To("/login"); 8]),
        row(post(), "/login", Quote::None,
            [To("/quotes"), To("/quotes"), To("/quotes"), To("/underwriting/queue"), To("/audit"),
             To("/people"), To("/quotes"), To("/quotes")]),
    ]
}

async fn every_route_answers_every_kind_of_visitor_as_the_table_says(test_db: &TestDb) {
    let app = TestApp::spawn(test_db).await;
    let mut browsers = Vec::new();
    for visitor in &VISITORS {
        let browser = app.new_browser();
        let password = browser.add_user(visitor.username, visitor.roles).await;
        if visitor.signed_in {
            let signed_in = browser.sign_in(visitor.username, &password).await;
            assert_eq!(
                signed_in.status().as_u16(),
                303,
                "{} signs in",
                visitor.name
            );
        }
        browsers.push((browser, password));
    }
    app.add_user("pat", &[Role::Agent]).await;
    let pat = quoteline::identity::projection::person_named(&app.state.db, "pat")
        .await
        .unwrap()
        .unwrap()
        .id;
    let mut shared = Vec::new();
    for owner in ["asha", "cara"] {
        for status in [Quote::Saved, Quote::Finalized, Quote::Decided] {
            shared.push((owner, status, quote_in(&app, owner, status).await));
        }
    }

    let mut differences = Vec::new();
    for row in table() {
        for (column, (visitor, (browser, password))) in VISITORS.iter().zip(&browsers).enumerate() {
            let expected = row.answers[column];
            let owner = visitor.quote_of;
            let id = match (row.quote, row.method == Method::POST) {
                (Quote::None, _) => Uuid::now_v7(),
                (Quote::Person, _) => pat,
                // A POST may change its quote: each gets a quote of its own.
                (status, true) => quote_in(&app, owner, status).await,
                (status, false) => {
                    shared
                        .iter()
                        .find(|(o, s, _)| *o == owner && *s == status)
                        .unwrap()
                        .2
                }
            };
            let path = row.path.replace("{id}", &id.to_string());
            let before = Writes::count(&app, id).await;
            let response = if row.method == Method::POST {
                let fields = form_for(&row, &app, id, visitor, password).await;
                let fields: Vec<(&str, &str)> =
                    fields.iter().map(|(n, v)| (*n, v.as_str())).collect();
                browser.post_form(&path, &fields).await
            } else {
                browser.get(&path).await
            };
            let what = format!("{} {} as {}", row.method, row.path, visitor.name);
            if !answers(&response, id, expected) {
                differences.push(format!(
                    "{what} ({:?} quote): expected {expected:?}, got {} {}",
                    row.quote,
                    response.status(),
                    response
                        .headers()
                        .get("location")
                        .map_or("", |l| l.to_str().unwrap())
                ));
            }
            if row.method == Method::POST {
                let after = Writes::count(&app, id).await;
                let done = matches!(expected, To(_)) && !["/login", "/logout"].contains(&row.path);
                if done && after == before {
                    differences.push(format!("{what}: done, yet wrote nothing"));
                }
                if !done && after != before {
                    differences.push(format!("{what}: refused, yet wrote {before:?} → {after:?}"));
                }
            }
        }
    }
    assert!(
        differences.is_empty(),
        "{} of the table's cells differ:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

/// Whether `response` is the answer the table expects.
fn answers(response: &reqwest::Response, id: Uuid, expected: Answer) -> bool {
    let location = response
        .headers()
        .get("location")
        .map(|l| l.to_str().unwrap().replace(&id.to_string(), "{id}"));
    let status = response.status().as_u16();
    match expected {
        Page => status == 200,
        To(expected) => status == 303 && location.as_deref() == Some(expected),
        SignIn => status == 303 && location.as_deref() == Some("/login"),
        Forbidden => status == 403,
        NotFound => status == 404,
    }
}

/// What a refused POST must not change: the quote's stream, every other stream, and
/// the verification runs.
#[derive(Debug, PartialEq, Eq)]
struct Writes {
    quote_version: i64,
    events: i64,
    verification_runs: i64,
}

impl Writes {
    async fn count(app: &TestApp, id: Uuid) -> Writes {
        let count = |sql: &'static str| async move {
            on_backend!(&app.state.db, pool => {
                sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await
            })
            .unwrap()
        };
        let stream = app.state.store.read_stream(id, 0).await.unwrap();
        Writes {
            quote_version: stream.last().map_or(0, |event| event.version),
            events: count("SELECT COUNT(*) FROM events").await,
            verification_runs: count("SELECT COUNT(*) FROM verification_runs").await,
        }
    }
}

/// The fields of the form the row's page would draw: answers that are valid, the
/// quote's current version and a new key.
async fn form_for(
    row: &Row,
    app: &TestApp,
    id: Uuid,
    visitor: &Visitor,
    password: &str,
) -> Vec<(&'static str, String)> {
    let version = if row.quote == Quote::Person {
        app.state.store.read_stream(id, 0).await.unwrap().len() as i64
    } else {
        app.state
            .quotes
            .load(id, None)
            .await
            .unwrap()
            .map_or(0, |q| q.version as i64)
    };
    let meta = vec![
        ("version", version.to_string()),
        ("idempotency_key", Uuid::new_v4().to_string()),
    ];
    let answers: Vec<(&'static str, &str)> = match row.path {
        "/quotes" => {
            return vec![
                ("quote_id", id.to_string()),
                ("idempotency_key", Uuid::new_v4().to_string()),
                ("applicant_name", "Meera Iyer".into()),
            ];
        }
        "/login" => {
            return vec![
                ("username", visitor.username.to_owned()),
                ("password", password.to_owned()),
            ];
        }
        "/logout" | "/audit/verify" => return vec![],
        "/quotes/{id}/geographic" => vec![
            ("country", "IN"),
            ("region", "Maharashtra"),
            ("city", "Pune"),
            ("postal_code", "411001"),
        ],
        "/quotes/{id}/applicant" => vec![("applicant_name", "Meera Iyer")],
        "/quotes/{id}/contact" => vec![("email", "meera@example.com"), ("phone", "+919876543210")],
        "/quotes/{id}/family" => vec![
            ("dependents", "1"),
            ("children", "Asha"),
            ("action", "save"),
        ],
        "/quotes/{id}/reject" | "/quotes/{id}/refer" => vec![("text", "Check the postal code")],
        // Confirmed: the change itself, not its confirm step.
        "/people/{id}/roles" => vec![
            ("roles", "agent"),
            ("roles", "auditor"),
            ("confirmed", "yes"),
        ],
        _ => vec![],
    };
    meta.into_iter()
        .chain(answers.into_iter().map(|(n, v)| (n, v.to_owned())))
        .collect()
}

/// A quote `owner` started, brought to `status` through the quote service.
async fn quote_in(app: &TestApp, owner: &str, status: Quote) -> Uuid {
    let owner = Visitor::named(owner).actor();
    let then = match status {
        Quote::None | Quote::Saved | Quote::Person => vec![],
        Quote::Finalized => vec![(owner.clone(), Action::Finalize)],
        Quote::Decided => vec![
            (owner.clone(), Action::Finalize),
            (Visitor::named("uma").actor(), Action::Approve),
        ],
    };
    quote_through_service(app, &owner, then).await
}
