//! Fresh databases for tests, and the macro that runs one test body on both backends.
//!
//! PostgreSQL tests use the server at `QUOTELINE_TEST_POSTGRES` (default
//! `postgres://postgres@127.0.0.1:5432/test`), each in a schema of its own. When the
//! server cannot be reached the tests are reported as skipped, with the reason, on
//! the terminal, and counted in a note at the very end of the run; with
//! `QUOTELINE_REQUIRE_POSTGRES=1` (as `.ci/run` sets) they fail.

use std::collections::HashMap;
use std::io::Write;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once, OnceLock};

use quoteline::db::{Backend, Db};
use quoteline::eventstore::EventStore;
use quoteline::kernel::{Actor, Envelope, Role};
use quoteline::quoting::domain::{
    Action, Command, ContactDetails, FamilyDetails, GeographicDetails, PersonName, Quote,
    QuoteEvent, evolve,
};
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Connection, PgConnection};
use tokio::sync::watch;
use uuid::Uuid;

pub const DEFAULT_POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Why the PostgreSQL server cannot be reached, as the first test that tried found:
/// the tests after it do not try again, so a run without a server does not wait for
/// a connection attempt in each of them.
static UNREACHABLE: OnceLock<String> = OnceLock::new();

/// PostgreSQL tests that returned without running, told again when the test process
/// exits, after the harness's summary, where the run's reader looks.
static SKIPPED: AtomicUsize = AtomicUsize::new(0);
static NOTE_AT_EXIT: Once = Once::new();

/// Fails the test if PostgreSQL is required; else reports it as skipped.
fn skip_postgres_test(test_name: &str, reason: &str) {
    if std::env::var("QUOTELINE_REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
        panic!("{test_name}: {reason} (QUOTELINE_REQUIRE_POSTGRES=1)");
    }
    // Straight to the terminal: the test harness captures println!.
    let _ = writeln!(std::io::stderr(), "SKIPPED postgres::{test_name}: {reason}");
    SKIPPED.fetch_add(1, Ordering::SeqCst);
    NOTE_AT_EXIT.call_once(|| {
        // SAFETY: registers a plain function, which neither panics nor unwinds.
        unsafe { libc::atexit(note_skipped_tests) };
    });
}

extern "C" fn note_skipped_tests() {
    let skipped = SKIPPED.load(Ordering::SeqCst);
    let reason = UNREACHABLE.get().map_or("", String::as_str);
    let (tests, they) = if skipped == 1 {
        ("test", "it")
    } else {
        ("tests", "they")
    };
    let _ = writeln!(
        std::io::stderr(),
        "NOTE: {skipped} PostgreSQL {tests} did not run ({reason}); {they} passed without running. \
         Set QUOTELINE_REQUIRE_POSTGRES=1 to make that a failure."
    );
}

/// A database that exists for one test.
pub struct TestDb {
    pub db: Db,
    postgres_schema: Option<(String, String)>,
    _sqlite_dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().expect("a temporary folder");
        let options = SqliteConnectOptions::new().filename(dir.path().join("test.db"));
        let db = Db::connect_sqlite(options).await.expect("open SQLite");
        db.migrate().await.expect("migrate SQLite");
        TestDb {
            db,
            postgres_schema: None,
            _sqlite_dir: Some(dir),
        }
    }

    /// A fresh schema on the test server, or `None` (reported as a skip) when the
    /// server cannot be reached and PostgreSQL is not required.
    pub async fn postgres(test_name: &str) -> Option<TestDb> {
        let url =
            std::env::var("QUOTELINE_TEST_POSTGRES").unwrap_or_else(|_| DEFAULT_POSTGRES.into());
        if let Some(reason) = UNREACHABLE.get() {
            skip_postgres_test(test_name, reason);
            return None;
        }
        let mut admin = match PgConnection::connect(&url).await {
            Ok(conn) => conn,
            Err(error) => {
                let reason = UNREACHABLE
                    .get_or_init(|| format!("PostgreSQL at {url} cannot be reached: {error}"));
                skip_postgres_test(test_name, reason);
                return None;
            }
        };
        let schema = format!("t_{}", uuid::Uuid::now_v7().simple());
        sqlx::query(&format!("CREATE SCHEMA {schema}"))
            .execute(&mut admin)
            .await
            .expect("create a test schema");
        admin.close().await.ok();
        let options = PgConnectOptions::from_str(&url)
            .expect("a PostgreSQL URL")
            .options([("search_path", schema.as_str())]);
        let db = Db::connect_postgres(options)
            .await
            .expect("connect to PostgreSQL");
        db.migrate().await.expect("migrate PostgreSQL");
        Some(TestDb {
            db,
            postgres_schema: Some((url, schema)),
            _sqlite_dir: None,
        })
    }

    /// Another fresh database of the same backend.
    pub async fn another(&self, test_name: &str) -> TestDb {
        if self.is_postgres() {
            TestDb::postgres(test_name)
                .await
                .expect("the server that gave this database gives another")
        } else {
            TestDb::sqlite().await
        }
    }

    pub fn is_postgres(&self) -> bool {
        matches!(self.db, Backend::Postgres(_))
    }

    /// A `DATABASE_URL` that opens this very database, for running the `quoteline`
    /// binary against it (on PostgreSQL, with the test's schema as search path).
    pub fn url(&self) -> String {
        match (&self.postgres_schema, &self._sqlite_dir) {
            (Some((url, schema)), _) => {
                let joiner = if url.contains('?') { '&' } else { '?' };
                format!("{url}{joiner}options%5Bsearch_path%5D={schema}")
            }
            (None, Some(dir)) => format!("sqlite://{}", dir.path().join("test.db").display()),
            (None, None) => unreachable!("a test database is SQLite or PostgreSQL"),
        }
    }

    /// Drops the test's schema (PostgreSQL); the SQLite folder goes with `self`.
    pub async fn cleanup(self) {
        self.db.close().await;
        if let Some((url, schema)) = &self.postgres_schema
            && let Ok(mut admin) = PgConnection::connect(url).await
        {
            let _ = sqlx::query(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(&mut admin)
                .await;
        }
    }
}

/// Declares each named `async fn(&TestDb)` as two tests, `sqlite::name` and
/// `postgres::name`: one body, both backends.
macro_rules! storage_tests {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let test_db = $crate::support::TestDb::sqlite().await;
                    super::$name(&test_db).await;
                    test_db.cleanup().await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(test_db) = $crate::support::TestDb::postgres(stringify!($name)).await else {
                        return;
                    };
                    super::$name(&test_db).await;
                    test_db.cleanup().await;
                }
            )+
        }
    };
}

/// The app served on a free port over a test database, and a browser-like client
/// that keeps cookies and does not follow redirects.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub state: quoteline::AppState,
}

impl TestApp {
    pub async fn spawn(test_db: &TestDb) -> TestApp {
        Self::spawn_with(test_db, quoteline::router).await
    }

    /// The app with a router of the test's making (for routes that exist only in a
    /// test, under the real middleware stack).
    pub async fn spawn_with(
        test_db: &TestDb,
        make_router: impl FnOnce(quoteline::AppState) -> axum::Router,
    ) -> TestApp {
        let state = quoteline::AppState::open(test_db.db.clone())
            .await
            .expect("open the app");
        Self::serve(state, make_router).await
    }

    /// The app over a state of the test's making (caches of other sizes, say); with
    /// two of these over one database, two processes.
    pub async fn spawn_state(state: quoteline::AppState) -> TestApp {
        Self::serve(state, quoteline::router).await
    }

    async fn serve(
        state: quoteline::AppState,
        make_router: impl FnOnce(quoteline::AppState) -> axum::Router,
    ) -> TestApp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        // With each connection's peer address, as `quoteline serve` does.
        let service = make_router(state.clone())
            .into_make_service_with_connect_info::<std::net::SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, service).await.unwrap() });
        TestApp {
            address,
            client: Self::browser(),
            state,
        }
    }

    /// A new client with an empty cookie jar: another person at another browser.
    pub fn browser() -> reqwest::Client {
        reqwest::Client::builder()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
    }

    /// The same app seen from another browser (an empty cookie jar).
    pub fn new_browser(&self) -> TestApp {
        TestApp {
            address: self.address.clone(),
            client: Self::browser(),
            state: self.state.clone(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.unwrap()
    }

    /// Adds a person with these roles; returns their password.
    pub async fn add_user(&self, username: &str, roles: &[Role]) -> String {
        let password = format!("pw-{username}-{}", uuid::Uuid::now_v7().simple());
        quoteline::identity::add_user(&self.state.store, username, &password, roles)
            .await
            .expect("add a user");
        password
    }

    /// Signs this client in the way a browser does: the sign-in page for its token,
    /// then the form. Returns the form's response.
    pub async fn sign_in(&self, username: &str, password: &str) -> reqwest::Response {
        sign_in_through(&self.client, &self.address, None, username, password).await
    }

    /// Adds a person with these roles and signs this client in as them.
    pub async fn sign_in_as(&self, username: &str, roles: &[Role]) {
        let password = self.add_user(username, roles).await;
        let response = self.sign_in(username, &password).await;
        assert_eq!(response.status().as_u16(), 303, "signing in as {username}");
    }

    /// The CSRF token in the forms of the page at `path` (for this client's session).
    pub async fn csrf_token(&self, path: &str) -> String {
        let body = html_page(self.get(path).await, 200).await;
        csrf_token_in(&body).unwrap_or_else(|| panic!("no csrf_token on {path}: {body}"))
    }

    /// POSTs a form with the session's CSRF token added, as a page's form would.
    pub async fn post_form(&self, path: &str, fields: &[(&str, &str)]) -> reqwest::Response {
        let token = self.csrf_token("/login").await;
        let mut form = fields.to_vec();
        form.push(("csrf_token", token.as_str()));
        self.client
            .post(self.url(path))
            .form(&form)
            .send()
            .await
            .unwrap()
    }
}

/// A quote `agent` started and answered every section of, through the quote service,
/// then taken on by each `(actor, action)` in turn; returns its id.
pub async fn quote_through_service(
    app: &TestApp,
    agent: &Actor,
    then: impl IntoIterator<Item = (Actor, Action)>,
) -> Uuid {
    let id = Uuid::now_v7();
    let envelope = Envelope {
        at: chrono::Utc::now(),
        request_id: None,
        idempotency_key: None,
    };
    let name = PersonName::parse("Meera Iyer").unwrap();
    app.state
        .quotes
        .start(id, agent.clone(), name, &envelope)
        .await
        .unwrap();
    let answers = [
        Action::ProvideGeographic(
            GeographicDetails::parse("IN", "Maharashtra", "Pune", "411001").unwrap(),
        ),
        Action::ProvideContact(
            ContactDetails::parse("meera@example.com", "+919876543210").unwrap(),
        ),
        Action::ProvideFamily(FamilyDetails::parse("1", "", &["Asha".into()]).unwrap()),
    ];
    let steps = answers
        .into_iter()
        .map(|action| (agent.clone(), action))
        .chain(then);
    let mut version = 1;
    for (actor, action) in steps {
        let appended = app
            .state
            .quotes
            .execute(id, version, Command::new(actor, action), &envelope)
            .await
            .unwrap();
        version = appended.last_version().unwrap();
    }
    id
}

/// The envelope of a command sent now, with no request id or idempotency key.
pub fn envelope() -> Envelope {
    Envelope {
        at: chrono::Utc::now(),
        request_id: None,
        idempotency_key: None,
    }
}

/// The quote's version as the quote service has it now.
pub async fn current_version(state: &quoteline::AppState, id: Uuid) -> i64 {
    state.quotes.load(id, None).await.unwrap().unwrap().version as i64
}

/// Runs `action` by `by` on the quote as it is now.
pub async fn act_now(
    state: &quoteline::AppState,
    id: Uuid,
    by: &Actor,
    action: Action,
) -> Result<quoteline::eventstore::Appended, quoteline::quoting::CommandError> {
    let version = current_version(state, id).await;
    state
        .quotes
        .execute(id, version, Command::new(by.clone(), action), &envelope())
        .await
}

/// The quote as a fold of every stored event up to `up_to` (all without it), read
/// afresh: the truth every cache, snapshot and projection is held to.
pub async fn fresh_fold(store: &EventStore, id: Uuid, up_to: Option<i64>) -> Quote {
    store
        .read_stream(id, 0)
        .await
        .unwrap()
        .iter()
        .take_while(|e| up_to.is_none_or(|v| e.version <= v))
        .map(|e| QuoteEvent::decode(e).unwrap())
        .fold(Quote::default(), |quote, event| evolve(quote, &event))
}

/// Signs `client` in to the app at `base` the way a browser does: the sign-in page for
/// its token, then the form; both from `address` when given (as `X-Forwarded-For`,
/// for an app that trusts it). Returns the form's response.
pub async fn sign_in_through(
    client: &reqwest::Client,
    base: &str,
    address: Option<&str>,
    username: &str,
    password: &str,
) -> reqwest::Response {
    let from = |request: reqwest::RequestBuilder| match address {
        Some(address) => request.header("x-forwarded-for", address),
        None => request,
    };
    let page = from(client.get(format!("{base}/login")))
        .send()
        .await
        .unwrap();
    let token = csrf_token_in(&html_page(page, 200).await).expect("a token on /login");
    post_sign_in(
        from(client.post(format!("{base}/login"))),
        &token,
        username,
        password,
    )
    .await
}

/// Sends a sign-in form with this token.
pub async fn post_sign_in(
    request: reqwest::RequestBuilder,
    token: &str,
    username: &str,
    password: &str,
) -> reqwest::Response {
    request
        .form(&[
            ("csrf_token", token),
            ("username", username),
            ("password", password),
        ])
        .send()
        .await
        .unwrap()
}

/// The value of the first `csrf_token` hidden field in a page.
pub fn csrf_token_in(body: &str) -> Option<String> {
    input_value(body, "csrf_token")
}

/// The value of the first input named `name` in a page (as the page escapes it).
pub fn input_value(body: &str, name: &str) -> Option<String> {
    let marker = format!(r#"name="{name}" value=""#);
    let start = body.find(&marker)? + marker.len();
    let end = body[start..].find('"')?;
    Some(body[start..start + end].to_owned())
}

/// The value of the hidden or text field `name` in a page, which must have one.
pub fn field(body: &str, name: &str) -> String {
    input_value(body, name).unwrap_or_else(|| panic!("no field {name} in {body}"))
}

/// The `quoteline` binary the outside-in tests run: `QUOTELINE_BIN` when set
/// (`scripts/test` sets it to the release build), else this build's own.
pub fn quoteline_binary() -> std::path::PathBuf {
    std::env::var_os("QUOTELINE_BIN")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_quoteline").into())
}

/// `quoteline ARGS…` run to its end against the test's database.
pub async fn run_command(test_db: &TestDb, args: &[&str]) -> std::process::Output {
    tokio::process::Command::new(quoteline_binary())
        .args(args)
        .env("DATABASE_URL", test_db.url())
        .env("RUST_LOG", "warn")
        .output()
        .await
        .unwrap()
}

/// `quoteline ARGS…` that must succeed: its standard output (both outputs shown if
/// it fails).
pub async fn run_command_ok(test_db: &TestDb, args: &[&str]) -> String {
    let output = run_command(test_db, args).await;
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "quoteline {args:?}: {stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// `quoteline ARGS…` that must refuse (exit status 1): its standard error.
pub async fn run_command_refused(test_db: &TestDb, args: &[&str]) -> String {
    let output = run_command(test_db, args).await;
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert_eq!(
        output.status.code(),
        Some(1),
        "quoteline {args:?}: {stderr}"
    );
    stderr
}

/// `quoteline verify` against the test's database: its exit status and output.
pub async fn run_verify_command(test_db: &TestDb) -> (Option<i32>, String) {
    let output = run_command(test_db, &["verify"]).await;
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        !stdout.is_empty(),
        "verify printed nothing; stderr: {stderr}"
    );
    (output.status.code(), stdout)
}

/// The session id a response sets in its cookie, if it sets one.
pub fn session_cookie(response: &reqwest::Response) -> Option<String> {
    response
        .cookies()
        .find(|cookie| cookie.name() == "quoteline_session")
        .map(|cookie| cookie.value().to_owned())
}

pub fn assert_is_redirect_to(response: &reqwest::Response, location: &str) {
    assert_eq!(
        response.status().as_u16(),
        303,
        "expected a 303 to {location}"
    );
    assert_eq!(response.headers()["location"], location);
}

/// Asserts an HTML page with this status; returns its body.
pub async fn html_page(response: reqwest::Response, status: u16) -> String {
    assert_eq!(
        response.status().as_u16(),
        status,
        "status of {}",
        response.url()
    );
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        content_type.starts_with("text/html"),
        "content type {content_type}"
    );
    response.text().await.unwrap()
}

/// Every event in the log as it stands when called, through the gap-safe read,
/// `page` events a read (small pages cross the merge of hot rows and archive
/// segments many times). On PostgreSQL the gap-safe read holds back what committed
/// after any transaction still open in the cluster, another test's included: an
/// empty page before the end waits for that transaction, as a catch-up does.
pub async fn whole_log(store: &EventStore, page: i64) -> Vec<quoteline::eventstore::RecordedEvent> {
    let end = quoteline::eventstore::checkpoints::last_position(store.db())
        .await
        .unwrap();
    let mut log = Vec::new();
    let mut after = quoteline::eventstore::GlobalPosition::START;
    let mut pause = std::time::Duration::from_millis(1);
    while end.is_some_and(|end| after < end) {
        let events = store.read_all(after, page).await.unwrap();
        match events.last() {
            Some(last) => {
                after = last.global;
                log.extend(events);
            }
            None => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(std::time::Duration::from_millis(100));
            }
        }
    }
    log
}

/// A PostgreSQL `EXPLAIN (FORMAT JSON)` plan: its nodes, depth first.
pub struct PgPlan {
    pub nodes: Vec<serde_json::Value>,
}

impl PgPlan {
    pub fn parse(plan: &str) -> Self {
        fn walk(node: &serde_json::Value, out: &mut Vec<serde_json::Value>) {
            out.push(node.clone());
            for child in node["Plans"].as_array().into_iter().flatten() {
                walk(child, out);
            }
        }
        let json: serde_json::Value = serde_json::from_str(plan).unwrap();
        let mut nodes = Vec::new();
        walk(&json[0]["Plan"], &mut nodes);
        PgPlan { nodes }
    }

    /// Each node's type ("Seq Scan", "Sort", …), in plan order.
    pub fn node_types(&self) -> Vec<&str> {
        self.nodes
            .iter()
            .filter_map(|n| n["Node Type"].as_str())
            .collect()
    }

    /// The indexes the plan reads, in plan order.
    pub fn index_names(&self) -> Vec<&str> {
        self.nodes
            .iter()
            .filter_map(|n| n["Index Name"].as_str())
            .collect()
    }
}

/// A TCP proxy whose connections a test can stall one at a time: a stalled
/// connection forwards nothing more either way and closes nothing, as one whose
/// server went away without a word (a failover, a cable pulled). Its tasks end with
/// the test's runtime.
pub struct StallingProxy {
    pub port: u16,
    /// Each connection's stall switch, by the local port of the proxy's own
    /// connection to the server (PostgreSQL's `client_port` for it).
    connections: Arc<Mutex<HashMap<u16, watch::Sender<bool>>>>,
}

impl StallingProxy {
    /// Listens on a free port of 127.0.0.1 and forwards each connection to
    /// `host:port`.
    pub async fn start(host: String, port: u16) -> StallingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let connections: Arc<Mutex<HashMap<u16, watch::Sender<bool>>>> = Arc::default();
        let known = Arc::clone(&connections);
        let proxy = StallingProxy {
            port: listener.local_addr().unwrap().port(),
            connections,
        };
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect((host.as_str(), port)).await else {
                    continue;
                };
                let (stall, stalled) = watch::channel(false);
                let local = server.local_addr().unwrap().port();
                known.lock().unwrap().insert(local, stall);
                let (from_client, to_client) = client.into_split();
                let (from_server, to_server) = server.into_split();
                tokio::spawn(forward(from_client, to_server, stalled.clone()));
                tokio::spawn(forward(from_server, to_client, stalled));
            }
        });
        proxy
    }

    /// Stalls the connection the proxy opened to the server from `local_port`.
    pub fn stall(&self, local_port: u16) {
        let connections = self.connections.lock().unwrap();
        let stall = connections
            .get(&local_port)
            .unwrap_or_else(|| panic!("no connection through the proxy from port {local_port}"));
        stall.send_replace(true);
    }
}

/// Copies `from` to `to` until either end closes; once stalled, holds both open and
/// copies nothing more.
async fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut stalled: watch::Receiver<bool>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = tokio::select! {
            read = from.read(&mut buffer) => read,
            _ = stalled.wait_for(|stalled| *stalled) => break,
        };
        let Ok(n @ 1..) = read else {
            return;
        };
        if *stalled.borrow() || to.write_all(&buffer[..n]).await.is_err() {
            break;
        }
    }
    if *stalled.borrow() {
        std::future::pending::<()>().await;
    }
}
