//! Sign-in abuse against the server as users run it: the `quoteline` binary in a
//! process of its own (the release build when `QUOTELINE_BIN` names it), so its
//! memory and its log are its own. SQLite only: what is measured is the hashing.

use std::process::Stdio;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::{TestApp, sign_in_through};

/// The server's memory budget (docs/ARCHITECTURE.md §9).
const MEMORY_BUDGET_BYTES: u64 = 100 * 1024 * 1024;

/// `quoteline serve` on a free port over a new SQLite database, trusting
/// `X-Forwarded-For` so that one test can speak from many addresses.
struct Server {
    child: Child,
    base: String,
    log: Arc<Mutex<Vec<u8>>>,
    draining: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

impl Server {
    async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let binary = std::env::var("QUOTELINE_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_quoteline").into());
        let mut child = Command::new(binary)
            .args(["serve", "--bind", "127.0.0.1:0"])
            .env(
                "DATABASE_URL",
                format!("sqlite://{}", dir.path().join("q.db").display()),
            )
            .env("QUOTELINE_TRUST_FORWARDED_FOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("start the quoteline binary");
        // The log is drained all along, so a full pipe never holds the server up.
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        let draining = tokio::spawn(async move {
            let mut chunk = [0; 8192];
            while let Ok(n @ 1..) = stderr.read(&mut chunk).await {
                sink.lock().unwrap().extend_from_slice(&chunk[..n]);
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let base = loop {
            let line = stdout
                .next_line()
                .await
                .unwrap()
                .expect("the server says where it serves before anything else");
            if let Some(base) = line.strip_prefix("quoteline is serving on ") {
                break base.to_owned();
            }
        };
        Server {
            child,
            base,
            log,
            draining,
            _dir: dir,
        }
    }

    /// One sign-in as a new browser at `address` makes it: the page, then the form.
    async fn sign_in(&self, address: &str, username: &str, password: &str) -> u16 {
        let browser = TestApp::browser();
        sign_in_through(&browser, &self.base, Some(address), username, password)
            .await
            .status()
            .as_u16()
    }

    /// The most memory the process has held resident (VmHWM), in bytes.
    fn peak_memory(&self) -> u64 {
        let pid = self.child.id().expect("the server is running");
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let kib: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .expect("VmHWM in /proc/PID/status");
        kib * 1024
    }

    /// Stops the server; returns everything it logged.
    async fn stop(mut self) -> String {
        self.child.kill().await.unwrap();
        // The drain ends at the pipe's end, with all that was written before the kill.
        self.draining.await.unwrap();
        String::from_utf8_lossy(&self.log.lock().unwrap()).into_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_sign_ins_from_many_addresses_stays_within_the_memory_budget() {
    let server = Arc::new(Server::start().await);

    // 80 sign-ins with random names, 40 at a time, each from an address of its own,
    // so no per-address limit stops any of them before its password is hashed.
    let mut tasks = Vec::new();
    for worker in 0..40u32 {
        let server = Arc::clone(&server);
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for round in 0..2u32 {
                let n = worker * 2 + round;
                let address = format!("203.0.{}.{}", 113 + n / 250, 1 + n % 250);
                let username = format!("nobody-{}", uuid::Uuid::now_v7().simple());
                statuses.push(server.sign_in(&address, &username, "not-a-password").await);
            }
            statuses
        }));
    }
    let mut statuses = Vec::new();
    for task in tasks {
        statuses.extend(task.await.unwrap());
    }

    let peak = server.peak_memory();
    let server = Arc::into_inner(server).expect("every task is done");
    server.stop().await;
    assert!(
        statuses.iter().all(|s| [401, 503].contains(s)),
        "each sign-in refused, or the server busy: {statuses:?}"
    );
    assert!(
        statuses.contains(&401),
        "some passwords were checked: {statuses:?}"
    );
    assert!(
        peak < MEMORY_BUDGET_BYTES,
        "peak resident memory {} MiB",
        peak / 1024 / 1024
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_sign_in_is_logged_with_its_address_and_a_name_that_cannot_forge_a_line() {
    let server = Server::start().await;
    let forged = "mallory\nERROR quoteline: forged line";

    let status = server
        .sign_in("198.51.100.23", forged, "a-wrong-guess")
        .await;

    let log = server.stop().await;
    assert_eq!(status, 401);
    let failure = log
        .lines()
        .find(|line| line.contains("sign-in refused"))
        .unwrap_or_else(|| panic!("no failed sign-in in the log:\n{log}"));
    assert!(failure.contains("198.51.100.23"), "{failure}");
    assert!(
        failure.contains(r"mallory\nERROR quoteline: forged line"),
        "{failure}"
    );
    assert!(
        !log.lines()
            .any(|line| line.starts_with("ERROR quoteline: forged line")),
        "{log}"
    );
}
