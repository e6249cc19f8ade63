//! The load: simulated browsers, each with a session of its own, sending one
//! request at a time (a closed loop) and timing each; how they sign in and start
//! the quotes they post to; and the CPU time each thread group spends meanwhile,
//! read from /proc, since server, database and load generator share the cores.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::header::{ACCEPT_ENCODING, CONTENT_ENCODING, HeaderValue};
use tokio::sync::Barrier;
use uuid::Uuid;

use crate::common::share;
use crate::report::{Budget, Run};
use crate::seed::PASSWORD;

/// Section POSTs per quote before a client moves on to its next quote, so that no
/// stream grows far beyond what a real quote has.
pub const POSTS_PER_QUOTE: usize = 20;

/// How many requests a path gets, and for how long at most.
#[derive(Clone, Copy)]
pub struct Load {
    pub warmup: usize,
    pub requests: usize,
    pub limit: Duration,
}

/// The load of one client alone on a page.
pub const ALONE: Load = Load {
    warmup: 50,
    requests: 1_000,
    limit: Duration::from_secs(1),
};

/// The longest a path's warm-up runs, whatever its number of requests.
pub const WARMUP_LIMIT: Duration = Duration::from_secs(1);

/// One response as the load generator saw it.
pub struct Outcome {
    status: u16,
    bytes: usize,
    encoding: Option<String>,
}

/// One simulated browser on one path: each call is one request, sent when the
/// previous one's response has been read whole (a closed loop).
pub trait Visitor: Send + 'static {
    fn visit(&mut self) -> impl Future<Output = anyhow::Result<Outcome>> + Send;
}

/// GETs of a list of pages in turn.
pub struct Pages {
    pub client: reqwest::Client,
    pub urls: Vec<String>,
    next: usize,
    encoding: Option<HeaderValue>,
}

impl Pages {
    pub fn new(
        client: reqwest::Client,
        urls: Vec<String>,
        encoding: &Option<HeaderValue>,
    ) -> Pages {
        Pages {
            client,
            urls,
            next: 0,
            encoding: encoding.clone(),
        }
    }
}

impl Visitor for Pages {
    async fn visit(&mut self) -> anyhow::Result<Outcome> {
        let url = &self.urls[self.next % self.urls.len()];
        self.next += 1;
        let mut request = self.client.get(url);
        if let Some(encoding) = &self.encoding {
            request = request.header(ACCEPT_ENCODING, encoding.clone());
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let encoding = response
            .headers()
            .get(CONTENT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = response.bytes().await?.len();
        Ok(Outcome {
            status,
            bytes,
            encoding,
        })
    }
}

/// A quote a client started, with the version the client believes it is at.
struct OwnQuote {
    id: Uuid,
    version: i64,
}

/// POSTs of the geographic section to the client's own quotes in turn, each with
/// the version the client tracks and a fresh idempotency key.
pub struct SectionPosts {
    client: reqwest::Client,
    base: String,
    csrf_token: String,
    quotes: Vec<OwnQuote>,
    next: usize,
    sent: usize,
    encoding: Option<HeaderValue>,
}

/// Two valid addresses, alternated so that every POST changes the answers.
const ADDRESSES: [[&str; 4]; 2] = [
    ["IN", "Karnataka", "Bengaluru", "560001"],
    ["US", "California", "San Francisco", "94105"],
];

impl Visitor for SectionPosts {
    async fn visit(&mut self) -> anyhow::Result<Outcome> {
        let index = (self.sent / POSTS_PER_QUOTE) % self.quotes.len();
        self.sent += 1;
        let quote = &mut self.quotes[index];
        let [country, region, city, postal_code] = ADDRESSES[self.next % 2];
        self.next += 1;
        let version = quote.version.to_string();
        let key = Uuid::new_v4().to_string();
        let mut request = self
            .client
            .post(format!("{}/quotes/{}/geographic", self.base, quote.id))
            .form(&[
                ("csrf_token", self.csrf_token.as_str()),
                ("version", &version),
                ("idempotency_key", &key),
                ("country", country),
                ("region", region),
                ("city", city),
                ("postal_code", postal_code),
            ]);
        if let Some(encoding) = &self.encoding {
            request = request.header(ACCEPT_ENCODING, encoding.clone());
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?.len();
        if status == 303 {
            // The first section of an Initiated quote also saves it: 2 events.
            quote.version += if quote.version == 1 { 2 } else { 1 };
        } else {
            // Learn the version again, as a person would by reloading the form.
            quote.version = form_version(&self.client, &self.base, quote.id).await?;
        }
        Ok(Outcome {
            status,
            bytes,
            encoding: None,
        })
    }
}

/// Runs `warmup` untimed and then `total` timed requests, shared evenly over the
/// visitors, each visitor a task of its own sending one request at a time.
pub async fn drive<V: Visitor>(
    path: &str,
    visitors: Vec<V>,
    load: Load,
    expected: u16,
    budget: Budget,
) -> anyhow::Result<(Run, Vec<V>)> {
    let count = visitors.len();
    let total = load.requests;
    let start_line = Arc::new(Barrier::new(count + 1));
    let mut tasks = Vec::with_capacity(count);
    for (i, mut visitor) in visitors.into_iter().enumerate() {
        let start_line = start_line.clone();
        let warm = share(load.warmup, count, i);
        let timed = share(total, count, i);
        tasks.push(tokio::spawn(async move {
            let warming = Instant::now();
            for _ in 0..warm {
                if warming.elapsed() >= WARMUP_LIMIT {
                    break;
                }
                visitor.visit().await?;
            }
            start_line.wait().await;
            let timing = Instant::now();
            let mut seen = Vec::with_capacity(timed);
            for _ in 0..timed {
                if timing.elapsed() >= load.limit {
                    break;
                }
                let began = Instant::now();
                let outcome = visitor.visit().await?;
                seen.push((began.elapsed(), outcome));
            }
            anyhow::Ok((visitor, seen))
        }));
    }
    start_line.wait().await;
    let cpu_before = Cpu::now();
    let began = Instant::now();
    let mut run = Run {
        path: path.to_owned(),
        elapsed: Duration::ZERO,
        latencies: Vec::with_capacity(total),
        expected,
        ok: 0,
        statuses: BTreeMap::new(),
        bytes: 0,
        encodings: BTreeMap::new(),
        cpu: Cpu::default(),
        budget,
    };
    let mut visitors = Vec::with_capacity(count);
    for task in tasks {
        let (visitor, seen) = task.await??;
        visitors.push(visitor);
        for (latency, outcome) in seen {
            run.latencies.push(latency);
            run.ok += usize::from(outcome.status == expected);
            *run.statuses.entry(outcome.status).or_default() += 1;
            run.bytes += outcome.bytes;
            *run.encodings
                .entry(outcome.encoding.unwrap_or_else(|| "identity".into()))
                .or_default() += 1;
        }
    }
    run.elapsed = began.elapsed();
    run.cpu = Cpu::now().since(cpu_before);
    run.latencies.sort_unstable();
    Ok((run, visitors))
}

// ----- Browsers -------------------------------------------------------------------

/// A browser: its own cookie jar (so its own session), no redirects followed.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a reqwest client")
}

/// The value of the first hidden field `name` in a page.
fn field(body: &str, name: &str) -> Option<String> {
    let marker = format!(r#"name="{name}" value=""#);
    let start = body.find(&marker)? + marker.len();
    let end = body[start..].find('"')?;
    Some(body[start..start + end].to_owned())
}

fn unescape(href: &str) -> String {
    href.replace("&amp;", "&")
        .replace("&#38;", "&")
        .replace("&#x26;", "&")
}

/// The queue page's "Next page" link.
pub fn next_link(body: &str) -> Option<String> {
    let before = &body[..body.find(r#"rel="next""#)?];
    let start = before.rfind(r#"href=""#)? + r#"href=""#.len();
    let end = before[start..].find('"')?;
    Some(unescape(&before[start..start + end]))
}

pub async fn page(client: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let response = client.get(url).send().await?;
    let status = response.status();
    let body = response.text().await?;
    anyhow::ensure!(status == 200, "GET {url} answered {status}");
    Ok(body)
}

async fn sign_in(base: &str, username: &str) -> anyhow::Result<reqwest::Client> {
    let client = browser();
    let login = page(&client, &format!("{base}/login")).await?;
    let token = field(&login, "csrf_token").ok_or_else(|| anyhow::anyhow!("no token"))?;
    let response = client
        .post(format!("{base}/login"))
        .form(&[
            ("csrf_token", token.as_str()),
            ("username", username),
            ("password", PASSWORD),
        ])
        .send()
        .await?;
    anyhow::ensure!(
        response.status() == 303,
        "signing in as {username} answered {}",
        response.status()
    );
    Ok(client)
}

/// Signs `count` browsers in as these users (in turn), one after another: the app
/// counts concurrent sign-ins to one account as attempts in a row and throttles them.
pub async fn sign_in_all(
    base: &str,
    users: &[String],
    count: usize,
) -> anyhow::Result<Vec<reqwest::Client>> {
    let mut clients = Vec::with_capacity(count);
    for i in 0..count {
        clients.push(sign_in(base, &users[i % users.len()]).await?);
    }
    Ok(clients)
}

/// The version the geographic form of this quote carries.
async fn form_version(client: &reqwest::Client, base: &str, id: Uuid) -> anyhow::Result<i64> {
    let body = page(client, &format!("{base}/quotes/{id}/geographic")).await?;
    field(&body, "version")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no version on the geographic form of {id}"))
}

/// Starts `count` quotes as this agent through the pages (untimed), and reads each
/// one's geographic form once for its version.
pub async fn start_quotes(
    client: reqwest::Client,
    base: String,
    count: usize,
    encoding: Option<HeaderValue>,
) -> anyhow::Result<SectionPosts> {
    let new = page(&client, &format!("{base}/quotes/new")).await?;
    let csrf_token = field(&new, "csrf_token").ok_or_else(|| anyhow::anyhow!("no token"))?;
    let mut quotes = Vec::with_capacity(count);
    for i in 0..count {
        let id = Uuid::now_v7();
        let key = Uuid::new_v4().to_string();
        let id_text = id.to_string();
        let response = client
            .post(format!("{base}/quotes"))
            .form(&[
                ("csrf_token", csrf_token.as_str()),
                ("quote_id", &id_text),
                ("idempotency_key", &key),
                ("applicant_name", &format!("Bench Applicant {i}")),
            ])
            .send()
            .await?;
        anyhow::ensure!(
            response.status() == 303,
            "starting a quote answered {}",
            response.status()
        );
        let version = form_version(&client, &base, id).await?;
        quotes.push(OwnQuote { id, version });
    }
    Ok(SectionPosts {
        client,
        base,
        csrf_token,
        quotes,
        next: 0,
        sent: 0,
        encoding,
    })
}

// ----- CPU time by thread group, from /proc ---------------------------------------

/// CPU time in clock ticks (1/100 s on Linux) of this process's thread groups and
/// of the machine's PostgreSQL processes.
#[derive(Clone, Copy, Default, Debug)]
pub struct Cpu {
    /// The whole process, exited threads included.
    pub process: u64,
    /// The server's tokio runtime (workers and blocking threads).
    pub app: u64,
    /// sqlx's SQLite worker threads (one per connection): the statements themselves.
    pub sqlite: u64,
    /// The load generator's runtime.
    pub client: u64,
    /// Every `postgres` process on the machine (other sessions included).
    pub postgres: u64,
    /// The whole machine's busy time (every CPU, from /proc/stat): what is left
    /// after this process and PostgreSQL is other work on the machine.
    pub machine: u64,
}

pub const TICKS_PER_SECOND: f64 = 100.0;

impl Cpu {
    fn now() -> Cpu {
        let mut cpu = Cpu {
            process: read_ticks("/proc/self/stat").unwrap_or(0),
            machine: machine_busy().unwrap_or(0),
            ..Cpu::default()
        };
        if let Ok(tasks) = std::fs::read_dir("/proc/self/task") {
            for task in tasks.flatten() {
                let path = task.path();
                let name = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
                let ticks = read_ticks(&path.join("stat").to_string_lossy()).unwrap_or(0);
                if name.starts_with("app-server") {
                    cpu.app += ticks;
                } else if name.starts_with("sqlx-sqlite") {
                    cpu.sqlite += ticks;
                } else if name.starts_with("load-client") {
                    cpu.client += ticks;
                }
            }
        }
        if let Ok(processes) = std::fs::read_dir("/proc") {
            for process in processes.flatten() {
                let path = process.path();
                let is_pid = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()));
                if is_pid
                    && std::fs::read_to_string(path.join("comm")).is_ok_and(|c| c == "postgres\n")
                {
                    cpu.postgres += read_ticks(&path.join("stat").to_string_lossy()).unwrap_or(0);
                }
            }
        }
        cpu
    }

    fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            process: self.process.saturating_sub(earlier.process),
            app: self.app.saturating_sub(earlier.app),
            sqlite: self.sqlite.saturating_sub(earlier.sqlite),
            client: self.client.saturating_sub(earlier.client),
            postgres: self.postgres.saturating_sub(earlier.postgres),
            machine: self.machine.saturating_sub(earlier.machine),
        }
    }

    /// Microseconds of CPU per request.
    pub fn per(ticks: u64, requests: usize) -> f64 {
        ticks as f64 / TICKS_PER_SECOND * 1e6 / requests.max(1) as f64
    }
}

/// Busy ticks of all CPUs together: user, nice, system, irq, softirq and steal.
fn machine_busy() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    Some(
        [0, 1, 2, 5, 6, 7]
            .iter()
            .filter_map(|&i| fields.get(i))
            .sum(),
    )
}

/// utime + stime of a /proc stat file.
fn read_ticks(path: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(path).ok()?;
    let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
    Some(fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?)
}
