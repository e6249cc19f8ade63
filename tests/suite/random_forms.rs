//! Any body, to any POST route, from anyone: a page with a fitting status, never a
//! 500 (the middleware turns a panic into one), and a refused request appends no
//! event. Bodies are random bytes, or urlencoded fields under real and random names
//! with random values; most carry the session's CSRF token, so they get past the
//! token check to the handlers, some a wrong one or none. Requests go to the router
//! in process.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use chrono::Utc;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use quoteline::AppState;
use quoteline::identity::csrf::SIGN_IN_COOKIE;
use quoteline::kernel::{Actor, Envelope, Role};
use quoteline::on_backend;
use quoteline::quoting::domain::{
    Action, Command, ContactDetails, FamilyDetails, GeographicDetails, PersonName, Status,
};
use tokio::sync::Mutex;
use tower::ServiceExt;
use uuid::Uuid;

use crate::support::{TestApp, TestDb, session_cookie};

storage_tests!(
    random_forms_to_every_post_route_from_anyone_get_no_500_and_a_refusal_writes_nothing
);

/// Cases per backend: each is one request, and now and then a quote made for it.
const CASES: u32 = 400;

const FORM: &str = "application/x-www-form-urlencoded";

/// The hidden fields of every command form.
const VERSION: &str = "version";
const KEY: &str = "idempotency_key";

/// Every POST route the app has (`src/app.rs` and each context's `router()`), whom it
/// is for, and the fields of its form.
type Route = (&'static str, Who, &'static [&'static str]);
const POST_ROUTES: [Route; 13] = [
    ("/login", Who::SignedOut, &["username", "password"]),
    ("/logout", Who::SignedOut, &[]),
    ("/quotes", Who::Owner, &["quote_id", KEY, "applicant_name"]),
    (
        "/quotes/{id}/applicant",
        Who::Owner,
        &[VERSION, KEY, "applicant_name"],
    ),
    (
        "/quotes/{id}/geographic",
        Who::Owner,
        &[VERSION, KEY, "country", "region", "city", "postal_code"],
    ),
    (
        "/quotes/{id}/contact",
        Who::Owner,
        &[VERSION, KEY, "email", "phone", "preferred_contact"],
    ),
    (
        "/quotes/{id}/family",
        Who::Owner,
        &[
            VERSION,
            KEY,
            "dependents",
            "spouse_name",
            "children",
            "children",
            "action",
        ],
    ),
    ("/quotes/{id}/finalize", Who::Owner, &[VERSION, KEY]),
    ("/quotes/{id}/withdraw", Who::Owner, &[VERSION, KEY]),
    ("/quotes/{id}/approve", Who::Underwriter, &[VERSION, KEY]),
    (
        "/quotes/{id}/reject",
        Who::Underwriter,
        &[VERSION, KEY, "text"],
    ),
    (
        "/quotes/{id}/refer",
        Who::Underwriter,
        &[VERSION, KEY, "text"],
    ),
    ("/audit/verify", Who::Auditor, &[]),
];

/// The names the app's forms use.
const FIELD_NAMES: [&str; 19] = [
    "csrf_token",
    "version",
    "idempotency_key",
    "quote_id",
    "applicant_name",
    "country",
    "region",
    "city",
    "postal_code",
    "email",
    "phone",
    "preferred_contact",
    "dependents",
    "spouse_name",
    "children",
    "action",
    "text",
    "username",
    "password",
];

/// Values that get a field past its first check, so that the next one is reached.
const LIKELY_VALUES: [&str; 19] = [
    "",
    "0",
    "1",
    "3",
    "-1",
    "99999999999999999999",
    "IN",
    "Maharashtra",
    "411001",
    "a@example.com",
    "+91 98765 43210",
    "email",
    "phone",
    "Meera Iyer",
    "save",
    "add-child",
    "remove-0",
    "remove-99999999999999999999",
    "9223372036854775807",
];

/// Text that trips parsers and databases: NUL and other control characters,
/// invisible and direction-changing ones, the form encoding's own characters.
const TROUBLE: [&str; 15] = [
    "\0",
    "\u{1}",
    "\u{1b}",
    "\u{7f}",
    "\r\n",
    "\t",
    "\u{feff}",
    "\u{202e}",
    "\u{fffd}",
    "\u{10ffff}",
    "%",
    "%00",
    "&=",
    "+",
    " ",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Who {
    SignedOut,
    /// The agent whose quotes the routes name.
    Owner,
    OtherAgent,
    Underwriter,
    Auditor,
    Admin,
}

impl Who {
    const EVERYONE: [Who; 6] = [
        Who::SignedOut,
        Who::Owner,
        Who::OtherAgent,
        Who::Underwriter,
        Who::Auditor,
        Who::Admin,
    ];

    fn person(self) -> Option<(&'static str, Role)> {
        match self {
            Who::SignedOut => None,
            Who::Owner => Some(("asha", Role::Agent)),
            Who::OtherAgent => Some(("bilal", Role::Agent)),
            Who::Underwriter => Some(("uma", Role::Underwriter)),
            Who::Auditor => Some(("ada", Role::Auditor)),
            Who::Admin => Some(("root", Role::Admin)),
        }
    }
}

/// The quote a `/quotes/{id}/…` route names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Target {
    Started,
    /// Saved, every section given: ready to submit.
    Answered,
    Submitted,
    Approved,
    /// A quote id that no quote has.
    Missing,
    NotAnId,
}

impl Target {
    const ALL: [Target; 6] = [
        Target::Started,
        Target::Answered,
        Target::Submitted,
        Target::Approved,
        Target::Missing,
        Target::NotAnId,
    ];

    fn status(self) -> Option<Status> {
        match self {
            Target::Started => Some(Status::Initiated),
            Target::Answered => Some(Status::Saved),
            Target::Submitted => Some(Status::Finalized),
            Target::Approved => Some(Status::Approved),
            Target::Missing | Target::NotAnId => None,
        }
    }
}

#[derive(Debug, Clone)]
enum Value {
    Text(String),
    /// The target quote's version now.
    Version,
    /// A new quote id.
    NewId,
    /// The session's CSRF token.
    Token,
}

#[derive(Debug, Clone)]
enum Fields {
    Bytes(Vec<u8>),
    Urlencoded(Vec<(String, Value)>),
}

#[derive(Debug, Clone, Copy)]
enum Token {
    Valid,
    Wrong,
    Missing,
}

#[derive(Debug, Clone)]
struct Case {
    who: Who,
    route: &'static str,
    target: Target,
    token: Token,
    content_type: Option<&'static str>,
    fields: Fields,
}

fn text() -> impl Strategy<Value = String> {
    // Runs of printable text with hazards between them.
    let hazardous = proptest::collection::vec(
        prop_oneof![
            "\\PC{1,6}",
            proptest::sample::select(&TROUBLE[..]).prop_map(str::to_owned),
        ],
        1..8,
    )
    .prop_map(|parts| parts.concat());
    prop_oneof![
        3 => proptest::sample::select(&LIKELY_VALUES[..]).prop_map(str::to_owned),
        5 => hazardous,
        1 => "[0-9]{1,4}",
        1 => "\\PC{0,40}",
        1 => any::<String>(),
        1 => "[a-z ]{90,2100}",
    ]
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        6 => text().prop_map(Value::Text),
        1 => Just(Value::Version),
        1 => Just(Value::NewId),
        1 => Just(Value::Token),
    ]
}

/// A value for the field `name`: mostly the right one for the version and the quote
/// id, so that a handler goes on to the rest of the form.
fn value_for(name: &'static str) -> BoxedStrategy<Value> {
    match name {
        VERSION => prop_oneof![3 => Just(Value::Version), 1 => value()].boxed(),
        "quote_id" => prop_oneof![3 => Just(Value::NewId), 1 => value()].boxed(),
        _ => value().boxed(),
    }
}

fn name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(&FIELD_NAMES[..]).prop_map(str::to_owned),
        1 => "\\PC{0,12}",
        1 => any::<String>(),
    ]
}

/// Random bytes, or a form: most of the route's own fields with random values, and a
/// few more under any name.
fn fields(form: &'static [&'static str]) -> impl Strategy<Value = Fields> {
    let own: Vec<_> = form
        .iter()
        .map(|name| {
            proptest::option::weighted(0.85, value_for(name))
                .prop_map(move |value| value.map(|v| (name.to_string(), v)))
        })
        .collect();
    let urlencoded =
        (own, proptest::collection::vec((name(), value()), 0..4)).prop_map(|(own, more)| {
            Fields::Urlencoded(own.into_iter().flatten().chain(more).collect())
        });
    prop_oneof![
        1 => proptest::collection::vec(any::<u8>(), 0..300).prop_map(Fields::Bytes),
        4 => urlencoded,
    ]
}

/// A route, half the time the person it is for (whose requests reach the handler's
/// own checks) else anyone, and a body for it.
fn route_who_and_fields() -> impl Strategy<Value = (&'static str, Who, Fields)> {
    proptest::sample::select(&POST_ROUTES[..]).prop_flat_map(|(route, meant_for, form)| {
        let who = prop_oneof![
            Just(meant_for),
            proptest::sample::select(&Who::EVERYONE[..]),
        ];
        (Just(route), who, fields(form))
    })
}

fn case() -> impl Strategy<Value = Case> {
    (
        route_who_and_fields(),
        proptest::sample::select(&Target::ALL[..]),
        prop_oneof![8 => Just(Token::Valid), 1 => Just(Token::Wrong), 1 => Just(Token::Missing)],
        prop_oneof![
            18 => Just(Some(FORM)),
            1 => Just(None),
            1 => proptest::sample::select(&["text/plain", "multipart/form-data", "application/json"][..]).prop_map(Some),
        ],
    )
        .prop_map(|((route, who, fields), target, token, content_type)| Case {
            who,
            route,
            target,
            token,
            content_type,
            fields,
        })
}

/// A session: its cookie and its CSRF token.
#[derive(Clone)]
struct Session {
    /// The `Cookie` header: the session's, or a signed-out browser's sign-in cookie.
    cookie: String,
    token: String,
}

/// The app, its people's sessions and a quote in each state, made again when a case
/// has moved it on.
struct World {
    app: TestApp,
    passwords: HashMap<Who, String>,
    sessions: Mutex<HashMap<Who, Session>>,
    quotes: Mutex<HashMap<Target, Uuid>>,
}

impl World {
    async fn new(test_db: &TestDb) -> World {
        let app = TestApp::spawn(test_db).await;
        let mut passwords = HashMap::new();
        for who in Who::EVERYONE {
            if let Some((name, role)) = who.person() {
                passwords.insert(who, app.add_user(name, &[role]).await);
            }
        }
        World {
            app,
            passwords,
            sessions: Mutex::new(HashMap::new()),
            quotes: Mutex::new(HashMap::new()),
        }
    }

    /// `who`'s session, signed in afresh after a case signed it out.
    async fn session(&self, who: Who) -> Session {
        let mut sessions = self.sessions.lock().await;
        if let Some(session) = sessions.get(&who) {
            return session.clone();
        }
        let browser = self.app.new_browser();
        let response = match who.person() {
            None => browser.get("/login").await,
            Some((name, _)) => browser.sign_in(name, &self.passwords[&who]).await,
        };
        assert!(response.status().is_success() || response.status().is_redirection());
        // Signed out, the browser has no session: its sign-in form's token is bound to
        // a cookie of its own.
        let cookie = match who.person() {
            None => response
                .cookies()
                .find(|cookie| cookie.name() == SIGN_IN_COOKIE)
                .map(|cookie| format!("{SIGN_IN_COOKIE}={}", cookie.value())),
            Some(_) => session_cookie(&response).map(|value| format!("quoteline_session={value}")),
        };
        let session = Session {
            cookie: cookie.expect("a cookie for the sign-in form or the session"),
            token: browser.csrf_token("/login").await,
        };
        sessions.insert(who, session.clone());
        session
    }

    async fn forget(&self, who: Who) {
        self.sessions.lock().await.remove(&who);
    }

    /// The id a route's `{id}` stands for, and the quote's version now.
    async fn quote(&self, target: Target) -> (String, i64) {
        let Some(status) = target.status() else {
            let id = match target {
                Target::NotAnId => "not-a-quote".to_owned(),
                _ => Uuid::now_v7().to_string(),
            };
            return (id, 1);
        };
        let mut quotes = self.quotes.lock().await;
        if let Some(id) = quotes.get(&target) {
            let quote = self
                .app
                .state
                .quotes
                .load(*id, None)
                .await
                .unwrap()
                .unwrap();
            if quote.status == Some(status) {
                return (id.to_string(), quote.version as i64);
            }
        }
        let (id, version) = quote_in(&self.app.state, target).await;
        quotes.insert(target, id);
        (id.to_string(), version)
    }

    async fn events(&self) -> i64 {
        on_backend!(&self.app.state.db, pool => sqlx::query_scalar(
            "SELECT COUNT(*) FROM events"
        ).fetch_one(pool).await.unwrap())
    }

    /// POSTs `body` to the router, in process, in `session`.
    async fn post(
        &self,
        session: &Session,
        path: &str,
        content_type: Option<&str>,
        body: Vec<u8>,
    ) -> axum::response::Response {
        let mut request = Request::post(path).header(header::COOKIE, &session.cookie);
        if let Some(content_type) = content_type {
            request = request.header(header::CONTENT_TYPE, content_type);
        }
        let request = request.body(Body::from(body)).unwrap();
        quoteline::router(self.app.state.clone())
            .oneshot(request)
            .await
            .unwrap()
    }

    async fn run(&self, case: Case) -> Result<(), TestCaseError> {
        let session = self.session(case.who).await;
        let (id, version) = self.quote(case.target).await;
        let path = case.route.replace("{id}", &id);
        let mut body = match case.token {
            Token::Valid => format!("csrf_token={}&", session.token).into_bytes(),
            Token::Wrong => format!("csrf_token={}&", "ab".repeat(32)).into_bytes(),
            Token::Missing => Vec::new(),
        };
        match &case.fields {
            Fields::Bytes(bytes) => body.extend(bytes),
            Fields::Urlencoded(fields) => {
                let mut form = form_urlencoded::Serializer::new(String::new());
                for (name, value) in fields {
                    let value = match value {
                        Value::Text(text) => text.clone(),
                        Value::Version => version.to_string(),
                        Value::NewId => Uuid::now_v7().to_string(),
                        Value::Token => session.token.clone(),
                    };
                    form.append_pair(name, &value);
                }
                body.extend(form.finish().into_bytes());
            }
        }
        let before = self.events().await;
        let response = self.post(&session, &path, case.content_type, body).await;
        let status = response.status();
        let after = self.events().await;

        prop_assert!(!status.is_server_error(), "POST {path}: {status}");
        if case.route == "/logout" && status == StatusCode::SEE_OTHER {
            self.forget(case.who).await;
        }
        if !status.is_success() && !status.is_redirection() {
            prop_assert_eq!(
                after,
                before,
                "POST {} refused with {} wrote events",
                path,
                status
            );
            let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
            prop_assert!(
                content_type.is_some_and(|t| t.to_str().unwrap_or("").starts_with("text/html")),
                "POST {path}: {status} is a page"
            );
        }
        Ok(())
    }
}

/// A quote of the owner's, driven by the service to `target`'s state: (id, version).
async fn quote_in(state: &AppState, target: Target) -> (Uuid, i64) {
    let envelope = Envelope {
        at: Utc::now(),
        request_id: None,
        idempotency_key: None,
    };
    let agent = Actor::new("asha", [Role::Agent]);
    let underwriter = Actor::new("uma", [Role::Underwriter]);
    let id = Uuid::now_v7();
    let name = PersonName::parse("Meera Iyer").unwrap();
    state
        .quotes
        .start(id, agent.clone(), name, &envelope)
        .await
        .unwrap();
    let steps = [
        (
            &agent,
            Action::ProvideGeographic(
                GeographicDetails::parse("IN", "Maharashtra", "Pune", "411001").unwrap(),
            ),
        ),
        (
            &agent,
            Action::ProvideContact(
                ContactDetails::parse("meera@example.com", "+919876543210").unwrap(),
            ),
        ),
        (
            &agent,
            Action::ProvideFamily(FamilyDetails::parse("1", "", &["Ravi".into()]).unwrap()),
        ),
        (&agent, Action::Finalize),
        (&underwriter, Action::Approve),
    ];
    let taken = match target {
        Target::Answered => 3,
        Target::Submitted => 4,
        Target::Approved => 5,
        _ => 0,
    };
    let mut version = 1;
    for (actor, action) in steps.into_iter().take(taken) {
        let appended = state
            .quotes
            .execute(id, version, Command::new(actor.clone(), action), &envelope)
            .await
            .unwrap();
        version = appended.last_version().unwrap();
    }
    (id, version)
}

async fn random_forms_to_every_post_route_from_anyone_get_no_500_and_a_refusal_writes_nothing(
    test_db: &TestDb,
) {
    let world = World::new(test_db).await;
    // Each route is there: a form with the token but no fields is refused by the
    // handler (or passes, for /logout), never found missing. A missing route would be a
    // 404 page, which the property takes for a refusal.
    let (id, _) = world.quote(Target::Answered).await;
    let owner = world.session(Who::Owner).await;
    let routes = POST_ROUTES.iter().map(|(route, _, _)| *route);
    for route in routes.chain(["/quotes/{id}/nowhere"]) {
        let session = match route {
            "/logout" => world.session(Who::SignedOut).await,
            _ => owner.clone(),
        };
        let path = route.replace("{id}", &id);
        let body = format!("csrf_token={}", session.token).into_bytes();
        let response = world.post(&session, &path, Some(FORM), body).await;
        let found = !matches!(response.status().as_u16(), 404 | 405);
        assert_eq!(
            found,
            route != "/quotes/{id}/nowhere",
            "POST {path}: {}",
            response.status()
        );
    }
    world.forget(Who::SignedOut).await;

    let mut runner = TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    });
    let handle = tokio::runtime::Handle::current();
    let result = tokio::task::block_in_place(|| {
        runner.run(&case(), |case| handle.block_on(world.run(case)))
    });
    if let Err(failure) = result {
        panic!("{failure}");
    }
}
