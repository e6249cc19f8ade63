//! Crash safety, from outside: the `quoteline` binary serves a database while several
//! clients post section forms; it is killed with SIGKILL once a different number of
//! posts has been acknowledged in each run, and started again on the same database.
//! Then every post answered 303 has its event, once; no post answered otherwise has
//! one; no event lacks its projection rows; the projections equal a fresh fold of the
//! events; and `quoteline verify` passes.

use std::collections::{HashMap, HashSet};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use quoteline::AppState;
use quoteline::eventstore::RecordedEvent;
use quoteline::on_backend;
use quoteline::quoting::domain::{ContactDetails, FamilyDetails, GeographicDetails, QuoteEvent};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::agent_pages::start_quote;
use crate::projections::{replay, tables};
use crate::support::{TestApp, TestDb, field, quoteline_binary, run_verify_command};

storage_tests!(acknowledged_posts_survive_a_kill_and_the_projections_equal_a_fresh_fold);

/// How many posts are acknowledged before each run's kill: a different moment each run.
const KILL_AFTER: [usize; 4] = [1, 23, 61, 137];
const AGENTS: [&str; 2] = ["asha", "bilal"];
const CLIENTS_PER_AGENT: usize = 2;
const QUOTES_PER_AGENT: usize = 3;
/// A client stops after this many posts whatever happens, so that a kill that never
/// comes fails the test instead of hanging it.
const MOST_POSTS: usize = 1_000;

/// `quoteline serve` on a free port of its choosing.
pub struct Server {
    pub process: Child,
    pub address: String,
    /// Held open: the server's standard output is a pipe, and a write to a pipe
    /// nobody reads would fail.
    _stdout: Lines<BufReader<ChildStdout>>,
}

impl Server {
    /// Starts the server and returns once it listens: it prints its address then.
    pub async fn start(test_db: &TestDb, log: &Path) -> Server {
        Self::start_with(test_db, log, &[]).await
    }

    /// [`Server::start`] with more settings in its environment.
    pub async fn start_with(test_db: &TestDb, log: &Path, env: &[(&str, &str)]) -> Server {
        let stderr = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let mut process = Command::new(quoteline_binary())
            .arg("serve")
            .env("DATABASE_URL", test_db.url())
            .env("BIND", "127.0.0.1:0")
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(process.stdout.take().unwrap()).lines();
        let address = loop {
            let Some(line) = stdout.next_line().await.unwrap() else {
                panic!("the server stopped before serving:\n{}", server_log(log));
            };
            if let Some(address) = line.strip_prefix("quoteline is serving on ") {
                break address.to_owned();
            }
        };
        Server {
            process,
            address,
            _stdout: stdout,
        }
    }

    /// A browser of its own on this server; `state` reads the same database.
    pub fn browser(&self, state: &AppState) -> TestApp {
        TestApp {
            address: self.address.clone(),
            client: TestApp::browser(),
            state: state.clone(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.process.id().expect("the server is running") as i32
    }
}

pub fn server_log(log: &Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// Kills the server with SIGKILL the moment the `after`-th post is acknowledged,
/// while the other clients' requests are on their way.
pub struct KillSwitch {
    pid: i32,
    after: usize,
    acknowledged: AtomicUsize,
}

impl KillSwitch {
    pub fn new(pid: i32, after: usize) -> KillSwitch {
        KillSwitch {
            pid,
            after,
            acknowledged: AtomicUsize::new(0),
        }
    }

    fn acknowledge(&self) {
        if self.acknowledged.fetch_add(1, Ordering::SeqCst) + 1 == self.after {
            // SAFETY: a plain system call. The pid is our child's, not yet waited for,
            // so it cannot have been given to another process.
            let sent = unsafe { libc::kill(self.pid, libc::SIGKILL) };
            assert_eq!(sent, 0, "SIGKILL sent");
        }
    }

    pub fn fired(&self) -> bool {
        self.acknowledged.load(Ordering::SeqCst) >= self.after
    }
}

/// One section post a client sent: its quote, the event its answers make, and the
/// status it was answered with (`None`: the server died before answering).
#[derive(Debug)]
pub struct Post {
    quote: Uuid,
    event: QuoteEvent,
    answer: Option<u16>,
}

/// The `n`-th answers of the client `label`: a section, its fields and the event they
/// make. Each post's values are its own, so its event is found by them.
fn answers(label: &str, n: usize) -> (&'static str, Vec<(&'static str, String)>, QuoteEvent) {
    match n % 3 {
        0 => {
            let city = format!("Pune {label} {n}");
            let event = QuoteEvent::GeographicDetailsProvided(
                GeographicDetails::parse("IN", "Maharashtra", &city, "411001").unwrap(),
            );
            let fields = vec![
                ("country", "IN".into()),
                ("region", "Maharashtra".into()),
                ("city", city),
                ("postal_code", "411001".into()),
            ];
            ("geographic", fields, event)
        }
        1 => {
            let email = format!("{label}.{n}@example.com");
            let event = QuoteEvent::ContactDetailsProvided(
                ContactDetails::parse(&email, "+91 98765 43210").unwrap(),
            );
            let fields = vec![("email", email), ("phone", "+91 98765 43210".into())];
            ("contact", fields, event)
        }
        _ => {
            let spouse = format!("Sam {label} {n}");
            let event = QuoteEvent::FamilyDetailsProvided(
                FamilyDetails::parse("2", &spouse, &["Ravi".into()]).unwrap(),
            );
            let fields = vec![
                ("dependents", "2".into()),
                ("spouse_name", spouse),
                ("children", "Ravi".into()),
                ("action", "save".into()),
            ];
            ("family", fields, event)
        }
    }
}

/// A client at work: open a section's form (for its version, key and token), post
/// it, and again, round the quotes, until the server dies.
pub async fn post_sections(
    browser: TestApp,
    quotes: Vec<Uuid>,
    first: usize,
    label: String,
    kill: Arc<KillSwitch>,
    most: usize,
) -> Vec<Post> {
    let mut posts = Vec::new();
    for n in 0..most {
        let quote = quotes[(first + n) % quotes.len()];
        let (slug, mut fields, event) = answers(&label, n);
        let path = format!("/quotes/{quote}/{slug}");
        let Ok(page) = browser.client.get(browser.url(&path)).send().await else {
            break;
        };
        assert_eq!(page.status().as_u16(), 200, "GET {path}");
        let Ok(page) = page.text().await else { break };
        for hidden in ["csrf_token", "version", "idempotency_key"] {
            fields.push((hidden, field(&page, hidden)));
        }
        posts.push(Post {
            quote,
            event,
            answer: None,
        });
        let Ok(response) = browser
            .client
            .post(browser.url(&path))
            .form(&fields)
            .send()
            .await
        else {
            break;
        };
        let status = response.status().as_u16();
        // 409: another client of the same agent changed the quote since the form.
        assert!(matches!(status, 303 | 409), "POST {path}: {status}");
        posts.last_mut().unwrap().answer = Some(status);
        if status == 303 {
            kill.acknowledge();
        }
    }
    posts
}

/// `quoteline user add NAME --role agent`, the password on standard input.
pub async fn add_agent(test_db: &TestDb, name: &str) -> String {
    let password = format!("pw-{name}-{}", Uuid::now_v7().simple());
    let mut command = Command::new(quoteline_binary())
        .args(["user", "add", name, "--role", "agent"])
        .env("DATABASE_URL", test_db.url())
        .env("RUST_LOG", "warn")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = command.stdin.take().unwrap();
    stdin
        .write_all(format!("{password}\n").as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let output = command.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "user add {name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    password
}

pub async fn sign_in(browser: &TestApp, name: &str, password: &str) {
    let response = browser.sign_in(name, password).await;
    assert_eq!(response.status().as_u16(), 303, "signing in as {name}");
}

/// Every event in the store, in position order. Read stream by stream: a read-all on
/// PostgreSQL waits for every transaction open in the cluster, other tests' too.
pub async fn event_log(state: &AppState) -> Vec<RecordedEvent> {
    let streams: Vec<Uuid> = on_backend!(&state.db, pool => sqlx::query_scalar(
        "SELECT stream_id FROM streams"
    ).fetch_all(pool).await.unwrap());
    let mut log = Vec::new();
    for id in streams {
        log.extend(state.store.read_stream(id, 0).await.unwrap());
    }
    log.sort_by_key(RecordedEvent::position);
    log
}

/// The checks after a restart, with the server idle.
pub async fn check_the_store(state: &AppState, test_db: &TestDb, posts: &[Post]) {
    // The quotes' events: the people's are not what the clients posted.
    let mut log = event_log(state).await;
    log.retain(quoteline::quoting::projection::is_quote_event);

    // Every acknowledged post's event is in its quote's stream, once; a refused post
    // wrote nothing; one the server died on is there at most once; and every section
    // event is one a client sent.
    let key = |quote: Uuid, event: &QuoteEvent| format!("{quote} {event:?}");
    let mut found: HashMap<String, usize> = HashMap::new();
    for recorded in &log {
        let event = QuoteEvent::decode(recorded).expect("an event we wrote");
        if matches!(
            event,
            QuoteEvent::GeographicDetailsProvided(_)
                | QuoteEvent::ContactDetailsProvided(_)
                | QuoteEvent::FamilyDetailsProvided(_)
        ) {
            *found.entry(key(recorded.stream_id, &event)).or_default() += 1;
        }
    }
    let mut sent = HashSet::new();
    for post in posts {
        let times = found
            .get(&key(post.quote, &post.event))
            .copied()
            .unwrap_or(0);
        match post.answer {
            Some(303) => assert_eq!(times, 1, "an acknowledged post's event: {post:?}"),
            Some(_) => assert_eq!(times, 0, "a refused post's event: {post:?}"),
            None => assert!(times <= 1, "an unanswered post's event: {post:?}"),
        }
        sent.insert(key(post.quote, &post.event));
    }
    for event in found.keys() {
        assert!(sent.contains(event), "an event nobody sent: {event}");
    }

    // No event lacks its projection rows: a timeline row per event, and each quote's
    // summary and audit state at its stream's last version.
    let timeline: Vec<i64> = on_backend!(&state.db, pool => sqlx::query_scalar(
        "SELECT position FROM audit_timeline ORDER BY position"
    ).fetch_all(pool).await.unwrap());
    let positions: Vec<i64> = log.iter().map(RecordedEvent::position).collect();
    assert_eq!(timeline, positions, "a timeline row for each event");
    let mut heads: HashMap<Uuid, i64> = HashMap::new();
    for event in &log {
        heads.insert(event.stream_id, event.version);
    }
    for table in ["quote_summary", "audit_quote_state"] {
        let sql = format!("SELECT quote_id, version FROM {table}");
        let rows: Vec<(Uuid, i64)> = on_backend!(&state.db, pool => sqlx::query_as(&sql)
            .fetch_all(pool).await.unwrap());
        let versions: HashMap<Uuid, i64> = rows.into_iter().collect();
        assert_eq!(versions, heads, "{table}: each quote at its last event");
    }

    // The projections equal a fresh fold of the events.
    let live = tables(&state.db).await;
    replay(state, &log, || usize::MAX).await;
    assert_eq!(
        tables(&state.db).await,
        live,
        "the projections, folded afresh"
    );

    let (code, output) = run_verify_command(test_db).await;
    assert_eq!(code, Some(0), "quoteline verify: {output}");
}

async fn acknowledged_posts_survive_a_kill_and_the_projections_equal_a_fresh_fold(
    test_db: &TestDb,
) {
    let logs = tempfile::tempdir().unwrap();
    let log = logs.path().join("server.log");
    let state = AppState::open(test_db.db.clone()).await.unwrap();
    let mut passwords = HashMap::new();
    for agent in AGENTS {
        passwords.insert(agent, add_agent(test_db, agent).await);
    }
    let mut server = Server::start(test_db, &log).await;
    let mut quotes: HashMap<&str, Vec<Uuid>> = HashMap::new();
    for agent in AGENTS {
        let browser = server.browser(&state);
        sign_in(&browser, agent, &passwords[agent]).await;
        for n in 0..QUOTES_PER_AGENT {
            let id = start_quote(&browser, &format!("Applicant {agent} {n}")).await;
            quotes.entry(agent).or_default().push(id);
        }
    }

    let mut posts = Vec::new();
    for (run, after) in KILL_AFTER.into_iter().enumerate() {
        let kill = Arc::new(KillSwitch::new(server.pid(), after));
        // Everyone signs in first: the kill may come with the first acknowledgement.
        let mut browsers = Vec::new();
        for agent in AGENTS {
            for client in 0..CLIENTS_PER_AGENT {
                let browser = server.browser(&state);
                sign_in(&browser, agent, &passwords[agent]).await;
                browsers.push((agent, client, browser));
            }
        }
        let mut clients = JoinSet::new();
        for (agent, client, browser) in browsers {
            let label = format!("{agent}{client}r{run}");
            let quotes = quotes[agent].clone();
            clients.spawn(post_sections(
                browser,
                quotes,
                client,
                label,
                kill.clone(),
                MOST_POSTS,
            ));
        }
        while let Some(client) = clients.join_next().await {
            posts.extend(client.unwrap());
        }
        assert!(kill.fired(), "run {run}: {after} posts acknowledged");
        let status = server.process.wait().await.unwrap();
        assert_eq!(
            status.signal(),
            Some(libc::SIGKILL),
            "run {run}: killed, not stopped of itself:\n{}",
            server_log(&log)
        );

        server = Server::start(test_db, &log).await;
        check_the_store(&state, test_db, &posts).await;
    }

    let acknowledged = posts.iter().filter(|p| p.answer == Some(303)).count();
    assert!(acknowledged >= KILL_AFTER.iter().sum(), "{acknowledged}");
    let after_all = server.browser(&state);
    sign_in(&after_all, AGENTS[0], &passwords[AGENTS[0]]).await;
    let page = after_all
        .get(&format!("/quotes/{}", quotes[AGENTS[0]][0]))
        .await;
    assert_eq!(page.status().as_u16(), 200, "the restarted server serves");
    server.process.kill().await.unwrap();
}
