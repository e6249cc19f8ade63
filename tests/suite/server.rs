//! The server as users run it: the `quoteline` binary as a process of its own, on a
//! free port. What a client may hold (the header read timeout, the connection cap)
//! and what the listening address turns on (Secure cookies and HSTS); and, in
//! process, what the server tells each request about its client.
//!
//! These do not touch storage beyond opening it, so they run on SQLite alone.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::routing::get;
use quoteline::server::{self, Limits};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdout, Command};

/// Long enough that a working server never comes near it: a failing test ends with
/// a message instead of hanging. No assertion is about how long anything took.
const HANG_GUARD: Duration = Duration::from_secs(60);

/// `quoteline serve` on a free port over a fresh SQLite database; stopped on drop.
struct Server {
    address: SocketAddr,
    _process: Child,
    /// Kept open: the server writes nothing more to it, but must not find it closed.
    _stdout: BufReader<ChildStdout>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// The release binary when `QUOTELINE_BIN` names it (scripts/test), else the one
    /// Cargo built for this test run.
    async fn start(bind: &str, settings: &[(&str, &str)]) -> Server {
        let binary = std::env::var("QUOTELINE_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_quoteline").to_owned());
        let dir = tempfile::tempdir().unwrap();
        let database = format!("sqlite://{}", dir.path().join("server.db").display());
        let mut process = Command::new(&binary)
            .arg("serve")
            .env_remove("QUOTELINE_SECURE_COOKIES")
            .env_remove("QUOTELINE_HEADER_TIMEOUT")
            .env_remove("QUOTELINE_MAX_CONNECTIONS")
            .env("DATABASE_URL", database)
            .env("BIND", bind)
            .envs(settings.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {binary}: {e}"));
        let mut stdout = BufReader::new(process.stdout.take().unwrap());
        let announced = tokio::time::timeout(HANG_GUARD, async {
            let mut line = String::new();
            loop {
                line.clear();
                if stdout.read_line(&mut line).await.unwrap() == 0 {
                    panic!("quoteline stopped before serving");
                }
                if let Some(address) = line.trim().strip_prefix("quoteline is serving on http://") {
                    return address.parse::<SocketAddr>().unwrap();
                }
            }
        })
        .await
        .expect("quoteline says where it serves");
        // Bound to every interface: reach it on this machine's loopback address.
        let address = SocketAddr::from(([127, 0, 0, 1], announced.port()));
        Server {
            address,
            _process: process,
            _stdout: stdout,
            _dir: dir,
        }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.address).await.unwrap()
    }

    async fn get(&self, path: &str) -> reqwest::Response {
        reqwest::get(format!("http://{}{path}", self.address))
            .await
            .unwrap()
    }
}

/// Everything the server sends until it closes the connection.
async fn read_until_closed(mut connection: TcpStream) -> Vec<u8> {
    let mut received = Vec::new();
    tokio::time::timeout(HANG_GUARD, connection.read_to_end(&mut received))
        .await
        .expect("the server closes the connection")
        .unwrap();
    received
}

/// The status line of a response to a request with `Connection: close`.
async fn status_line(connection: TcpStream) -> String {
    let response = String::from_utf8(read_until_closed(connection).await).unwrap();
    response.lines().next().unwrap_or_default().to_owned()
}

const PART_OF_A_REQUEST: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: quoteline\r\n";
const A_WHOLE_REQUEST: &[u8] =
    b"GET /healthz HTTP/1.1\r\nHost: quoteline\r\nConnection: close\r\n\r\n";

#[tokio::test]
async fn a_client_that_sends_part_of_its_headers_is_disconnected_at_the_header_timeout() {
    let server = Server::start("127.0.0.1:0", &[("QUOTELINE_HEADER_TIMEOUT", "1s")]).await;
    let mut slow = server.connect().await;

    slow.write_all(PART_OF_A_REQUEST).await.unwrap();

    assert_eq!(
        read_until_closed(slow).await,
        b"",
        "closed without an answer"
    );
    let mut prompt = server.connect().await;
    prompt.write_all(A_WHOLE_REQUEST).await.unwrap();
    assert_eq!(status_line(prompt).await, "HTTP/1.1 200 OK");
}

/// With both connections taken, a third is served only after one of them closes.
/// The two are closed by the server's header timeout, so the order of events says
/// it all: the waiting client's answer cannot come before the first close.
#[tokio::test]
async fn with_every_connection_in_use_a_further_one_waits_until_one_closes() {
    let server = Server::start(
        "127.0.0.1:0",
        &[
            ("QUOTELINE_MAX_CONNECTIONS", "2"),
            ("QUOTELINE_HEADER_TIMEOUT", "1s"),
        ],
    )
    .await;
    let mut slow = server.connect().await;
    slow.write_all(PART_OF_A_REQUEST).await.unwrap();
    let mut idle = server.connect().await;
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: quoteline\r\n\r\n")
        .await
        .unwrap();
    let mut answer = [0; 15];
    idle.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"HTTP/1.1 200 OK", "served, and kept alive");

    let mut waiting = server.connect().await;
    waiting.write_all(A_WHOLE_REQUEST).await.unwrap();

    let first = tokio::select! {
        biased;
        _ = read_until_closed(slow) => "a connection in use closed",
        _ = read_until_closed(idle) => "a connection in use closed",
        _ = waiting.readable() => "the waiting connection was answered",
    };
    assert_eq!(first, "a connection in use closed");
    assert_eq!(status_line(waiting).await, "HTTP/1.1 200 OK");
}

/// Sign-in limits go by the client's address; the server hands it to every request.
#[tokio::test]
async fn each_request_carries_the_address_of_its_client() {
    async fn peer(ConnectInfo(peer): ConnectInfo<SocketAddr>) -> String {
        peer.to_string()
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let router = Router::new().route("/peer", get(peer));
    tokio::spawn(server::serve(
        listener,
        router,
        Limits::default(),
        std::future::pending(),
    ));
    let mut client = TcpStream::connect(address).await.unwrap();
    let client_address = client.local_addr().unwrap().to_string();

    client
        .write_all(b"GET /peer HTTP/1.1\r\nHost: quoteline\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();

    let response = String::from_utf8(read_until_closed(client).await).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(response.ends_with(&client_address), "{response}");
}

fn hsts(response: &reqwest::Response) -> Option<&str> {
    response
        .headers()
        .get("strict-transport-security")
        .map(|v| v.to_str().unwrap())
}

#[tokio::test]
async fn served_on_loopback_the_app_speaks_plain_http_unless_told_it_is_behind_https() {
    let plain = Server::start("127.0.0.1:0", &[]).await;
    let told = Server::start("127.0.0.1:0", &[("QUOTELINE_SECURE_COOKIES", "true")]).await;

    assert_eq!(hsts(&plain.get("/healthz").await), None);
    assert_eq!(hsts(&told.get("/healthz").await), Some("max-age=31536000"));
}

#[tokio::test]
async fn served_on_every_interface_the_app_is_https_only_unless_told_otherwise() {
    let secure = Server::start("0.0.0.0:0", &[]).await;
    let told = Server::start("0.0.0.0:0", &[("QUOTELINE_SECURE_COOKIES", "false")]).await;

    assert_eq!(
        hsts(&secure.get("/healthz").await),
        Some("max-age=31536000")
    );
    assert_eq!(hsts(&told.get("/healthz").await), None);
}
