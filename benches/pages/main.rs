//! The page benchmarks (docs/ARCHITECTURE.md §9): the app served in-process on 127.0.0.1:0 with
//! its real router and middleware (sessions, CSRF, compression), under a closed-loop
//! load of C concurrent signed-in browsers, each with a session of its own.
//!
//! `cargo bench --bench pages -- [--backend sqlite|postgres|both] [--requests N]
//! [--concurrency C] [--queued N] [--events N] [--warmup N] [--seconds S]
//! [--deep-page N] [--encoding VALUE]` (`--help` says what each means)
//!
//! Per backend, on a fresh database (a SQLite file in a temporary folder; a fresh
//! PostgreSQL schema, dropped at the end):
//!
//! 1. Seeds `--queued` quotes waiting for a decision through `EventStore::append`
//!    with every projection (what production does): per quote one append of the 6
//!    events `decide` gives for start, the three sections and submit, with times
//!    spread over the last 90 days; then decided quotes (7 events each) until the
//!    store holds `--events` events; then one 200-event quote per client for the
//!    timeline. Many appends are in flight at once, so group commit batches them.
//! 2. Times the reads behind each page called directly, one at a time, and prints
//!    the plan of the queue's count.
//! 3. Measures the approval queue (first page, `?country=IN`, `?sort=waiting`, and a
//!    deep page reached by following "Next page" links; each first with one client
//!    alone for its latency, then with C), the task list and the 200-event timeline,
//!    then the section POST end to end: each path `--requests` requests or `--seconds`
//!    seconds, whichever ends first, after a warm-up.
//!
//! The server (its tokio runtime, named `app-server`, 2 workers) and the load
//! generator (`load-client`, 2 workers) run in one process on separate runtimes, so
//! the CPU time of each is read apart from /proc and printed beside the figures.
//! Results go to standard output as tables; BENCHMARKS.md keeps them.
//!
//! This file owns the arguments and the order of a run; `seed` builds the data,
//! `reads` times the reads behind the pages, `load` drives the browsers and
//! `report` holds the figures to the budgets and prints them.

#[path = "../common/mod.rs"]
mod common;
mod load;
mod reads;
mod report;
mod seed;

use common::{CommonArgs, WholeRun, load_average, number, positive};

use std::future::Future;
use std::time::{Duration, Instant};

use clap::Parser;
use quoteline::db::{Backend, Db};
use reqwest::header::HeaderValue;
use sqlx::sqlite::SqliteConnectOptions;
use tokio::runtime::Handle;

use load::{
    ALONE, Load, POSTS_PER_QUOTE, Pages, Visitor, WARMUP_LIMIT, drive, next_link, page,
    sign_in_all, start_quotes,
};
use report::{
    Budget, LATENCY_BUDGET, POST_BUDGET, READ_BUDGET, Report, Run, file_sizes, print_run,
};
use seed::{AGENTS, Seeding, agent_name};

/// What every client sends as Accept-Encoding unless told otherwise: Chrome's.
const BROWSER_ENCODING: &str = "gzip, deflate, br, zstd";

/// The page benchmarks (docs/ARCHITECTURE.md §9): the queue, the task list, the timeline and
/// the section POST over HTTP, under C concurrent signed-in browsers.
#[derive(Parser, Debug)]
#[command(
    name = "pages",
    bin_name = "cargo bench --bench pages --",
    after_help = common::postgres_help(),
    args_override_self = true
)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Timed requests per path, stopped early after --seconds.
    #[arg(long, value_name = "N", default_value = "10000", value_parser = positive)]
    requests: usize,
    /// Concurrent clients, each a browser with a session of its own.
    #[arg(long, value_name = "C", default_value = "16", value_parser = positive)]
    concurrency: usize,
    /// Quotes waiting for a decision.
    #[arg(long, value_name = "N", default_value = "100000", value_parser = positive)]
    queued: usize,
    /// Seed decided quotes until the store holds at least this many events (0: only
    /// the queued quotes' 6 events each and the timeline quotes).
    #[arg(long, value_name = "N", default_value = "0", value_parser = number)]
    events: usize,
    /// Untimed requests before each path, for at most 1 s [default: requests/10, at
    /// least 100]
    #[arg(long, value_name = "N", value_parser = number)]
    warmup: Option<usize>,
    /// The longest each path's timed requests run, in seconds.
    #[arg(long, value_name = "S", default_value = "3", value_parser = seconds)]
    seconds: f64,
    /// The queue page (1-based) to measure by following Next page links [default: the
    /// middle page]
    #[arg(long, value_name = "N", value_parser = number)]
    deep_page: Option<usize>,
    /// The Accept-Encoding the clients send, as a browser does; "identity" for none.
    #[arg(long, value_name = "VALUE", default_value = BROWSER_ENCODING)]
    encoding: String,
}

fn seconds(text: &str) -> Result<f64, String> {
    text.trim()
        .parse()
        .ok()
        .filter(|s: &f64| *s > 0.0)
        .ok_or_else(|| "takes a positive number".into())
}

impl Args {
    fn warmup(&self) -> usize {
        self.warmup.unwrap_or((self.requests / 10).max(100))
    }

    fn load(&self) -> Load {
        Load {
            warmup: self.warmup(),
            requests: self.requests,
            limit: Duration::from_secs_f64(self.seconds),
        }
    }

    /// The header value, or none for "identity" (no compression asked for).
    fn accept_encoding(&self) -> Option<HeaderValue> {
        match self.encoding.trim() {
            "" | "identity" | "none" => None,
            value => HeaderValue::from_str(value).ok(),
        }
    }
}

async fn on_server<T: Send + 'static>(
    server: &Handle,
    work: impl Future<Output = anyhow::Result<T>> + Send + 'static,
) -> anyhow::Result<T> {
    server.spawn(work).await?
}

/// The paths measured so far on one backend, each printed as it ends so that a
/// long run shows how far it has got.
struct Runs {
    backend: &'static str,
    runs: Vec<Run>,
}

impl Runs {
    async fn drive<V: Visitor>(
        &mut self,
        path: &str,
        visitors: Vec<V>,
        load: Load,
        expected: u16,
        budget: Budget,
    ) -> anyhow::Result<Vec<V>> {
        let (run, visitors) = drive(path, visitors, load, expected, budget).await?;
        print_run(self.backend, &run);
        self.runs.push(run);
        Ok(visitors)
    }
}

/// Everything on one backend; `sqlite_file` to report its size (and its WAL's).
async fn measure(
    db: Db,
    server: Handle,
    args: &Args,
    sqlite_file: Option<&std::path::Path>,
) -> anyhow::Result<Report> {
    let backend = db.backend_name();
    let clients = args.concurrency;
    let warmup = args.warmup();
    let load = args.load();
    let encoding = args.accept_encoding();

    // The app, as `quoteline serve` runs it, on the server's runtime.
    let (state, address, serving) = on_server(&server, async move {
        let state = quoteline::AppState::open(db).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let address = format!("http://{}", listener.local_addr()?);
        let router = quoteline::router(state.clone());
        let serving = tokio::spawn(async move { axum::serve(listener, router).await });
        Ok((state, address, serving))
    })
    .await?;
    let db = state.db.clone();
    println!("{backend}: serving on {address}");

    // People: one agent per client, one underwriter and one auditor.
    let agents: Vec<String> = (0..clients.min(AGENTS)).map(agent_name).collect();
    let began = Instant::now();
    on_server(
        &server,
        seed::add_people(state.store.clone(), agents.clone()),
    )
    .await?;
    println!(
        "{backend}: added {} users in {:.1} s",
        agents.len() + 2,
        began.elapsed().as_secs_f64()
    );

    // The data.
    let seeding = Seeding {
        queued: args.queued,
        events: args.events,
        clients,
    };
    let load_before = load_average();
    let store = state.store.clone();
    let seeded = on_server(&server, seed::seed(store, seeding)).await?;
    println!(
        "{backend}: seeded {} (load average {load_before} → {})",
        seeded.note(),
        load_average()
    );
    if let Some(file) = sqlite_file {
        println!("{backend}: after seeding, {}", file_sizes(file));
    }
    if let Backend::Postgres(pool) = db.clone() {
        // Autovacuum may not have reached the new rows yet: give the planner its
        // statistics and the tables their visibility maps, as a settled server has.
        let began = Instant::now();
        on_server(&server, async move {
            sqlx::query("VACUUM ANALYZE").execute(&pool).await?;
            Ok(())
        })
        .await?;
        println!(
            "{backend}: VACUUM ANALYZE in {:.1} s",
            began.elapsed().as_secs_f64()
        );
    }

    let (timings, plan) = {
        let state = state.clone();
        let quote = seeded.by_agent[0][0];
        let timeline_quote = seeded.timelines[0];
        on_server(&server, reads::diagnose(state, quote, timeline_quote)).await?
    };
    report::print_reads(backend, &timings, &plan);

    let mut runs = Runs {
        backend,
        runs: Vec::new(),
    };
    let base = address.clone();

    // 1. The approval queue, as C underwriters' browsers.
    let underwriters = sign_in_all(&base, &["underwriter".into()], clients).await?;
    let first = page(&underwriters[0], &format!("{base}/underwriting/queue")).await?;
    let total = format!("<strong>{}</strong>", seeded.queued);
    anyhow::ensure!(
        first.contains(&total),
        "the queue page does not show {} waiting quotes",
        seeded.queued
    );
    let pages = seeded.queued.div_ceil(50);
    let deep = args
        .deep_page
        .unwrap_or(pages / 2 + 1)
        .clamp(2, pages.max(2));
    let began = Instant::now();
    let mut deep_url = format!("{base}/underwriting/queue");
    let mut body = first;
    for _ in 1..deep {
        match next_link(&body) {
            Some(href) => deep_url = format!("{base}{href}"),
            None => break,
        }
        body = page(&underwriters[0], &deep_url).await?;
    }
    println!(
        "{backend}: reached queue page {deep} by {} Next page links in {:.1} s: {}",
        deep - 1,
        began.elapsed().as_secs_f64(),
        deep_url.trim_start_matches(&base)
    );
    let queue_paths = [
        (
            "GET /underwriting/queue (first page)",
            format!("{base}/underwriting/queue"),
        ),
        (
            "GET /underwriting/queue?country=IN",
            format!("{base}/underwriting/queue?country=IN"),
        ),
        (
            "GET /underwriting/queue?sort=waiting",
            format!("{base}/underwriting/queue?sort=waiting"),
        ),
        ("GET /underwriting/queue?next=… (deep)", deep_url),
    ];
    let mut underwriters = underwriters;
    for (path, url) in queue_paths {
        // One underwriter alone first: the latency a person sees when the server
        // has nothing else to do.
        let alone = Pages::new(underwriters[0].clone(), vec![url.clone()], &encoding);
        runs.drive(
            &format!("{path}, 1 client"),
            vec![alone],
            ALONE,
            200,
            LATENCY_BUDGET,
        )
        .await?;

        let visitors: Vec<Pages> = underwriters
            .into_iter()
            .map(|client| Pages::new(client, vec![url.clone()], &encoding))
            .collect();
        let visitors = runs.drive(path, visitors, load, 200, READ_BUDGET).await?;
        underwriters = visitors.into_iter().map(|v| v.client).collect();
    }
    drop(underwriters);

    // 2. The task list, as each quote's agent.
    let agent_clients = sign_in_all(&base, &agents, clients).await?;
    let visitors: Vec<Pages> = agent_clients
        .iter()
        .enumerate()
        .map(|(i, client)| {
            // Its own submitted quotes, and its timeline quote (never an empty list).
            let urls = seeded.by_agent[i % seeded.by_agent.len()]
                .iter()
                .chain(seeded.timelines.get(i))
                .map(|id| format!("{base}/quotes/{id}"))
                .collect();
            Pages::new(client.clone(), urls, &encoding)
        })
        .collect();
    page(&visitors[0].client, &visitors[0].urls[0]).await?;
    runs.drive(
        "GET /quotes/{id} (task list)",
        visitors,
        load,
        200,
        READ_BUDGET,
    )
    .await?;

    // 3. The 200-event timeline, as auditors.
    let auditors = sign_in_all(&base, &["auditor".into()], clients).await?;
    let visitors: Vec<Pages> = auditors
        .into_iter()
        .enumerate()
        .map(|(i, client)| {
            let quote = seeded.timelines[i % seeded.timelines.len()];
            Pages::new(
                client,
                vec![format!("{base}/quotes/{quote}/timeline")],
                &encoding,
            )
        })
        .collect();
    let timeline = page(&visitors[0].client, &visitors[0].urls[0]).await?;
    anyhow::ensure!(
        timeline.matches("Contact details provided").count() >= 190,
        "the timeline page does not list the quote's events"
    );
    runs.drive(
        "GET /quotes/{id}/timeline (200 events)",
        visitors,
        load,
        200,
        READ_BUDGET,
    )
    .await?;

    // 4. The section POST, as agents on quotes they started.
    let per_client = (args.requests + warmup).div_ceil(clients);
    let quotes_each = per_client.div_ceil(POSTS_PER_QUOTE).max(1);
    let began = Instant::now();
    let tasks: Vec<_> = agent_clients
        .into_iter()
        .map(|client| {
            tokio::spawn(start_quotes(
                client,
                base.clone(),
                quotes_each,
                encoding.clone(),
            ))
        })
        .collect();
    let mut visitors = Vec::with_capacity(clients);
    for task in tasks {
        visitors.push(task.await??);
    }
    println!(
        "{backend}: {clients} agents started {} quotes through the pages in {:.1} s",
        clients * quotes_each,
        began.elapsed().as_secs_f64()
    );
    runs.drive(
        "POST /quotes/{id}/geographic (303)",
        visitors,
        load,
        303,
        POST_BUDGET,
    )
    .await?;

    serving.abort();
    let _ = serving.await;
    drop(state);
    on_server(&server, async move {
        db.close().await;
        Ok(())
    })
    .await?;
    Ok(Report {
        backend,
        seeded,
        timings,
        runs: runs.runs,
    })
}

async fn bench_sqlite(args: &Args, server: Handle) -> anyhow::Result<Report> {
    let folder = tempfile::tempdir()?;
    let path = folder.path().join("bench.db");
    let options = SqliteConnectOptions::new().filename(&path);
    let db = on_server(
        &server,
        async move { Ok(Db::connect_sqlite(options).await?) },
    )
    .await?;
    common::describe_sqlite(&db, &path).await?;
    let report = measure(db, server, args, Some(&path)).await;
    println!("sqlite: at the end, {}", file_sizes(&path));
    report
}

/// Ok(None) with the reason printed when the server cannot be reached.
async fn bench_postgres(args: &Args, server: Handle) -> anyhow::Result<Option<Report>> {
    common::BenchSchema::run("bench_pages", |options| async move {
        let db = on_server(
            &server,
            async move { Ok(Db::connect_postgres(options).await?) },
        )
        .await?;
        measure(db, server, args, None).await
    })
    .await
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // The server's runtime, as `quoteline serve` would have on this machine, and the
    // load generator's, apart so that each one's CPU time can be read.
    let server_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("app-server")
        .enable_all()
        .build()?;
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("load-client")
        .enable_all()
        .build()?;
    let server = server_runtime.handle().clone();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    client_runtime.block_on(async move {
        println!(
            "pages benchmark: {} timed requests per path (or {} s, whichever ends first) after {} \
             warm-up (at most {} s), {} concurrent clients, {} queued quotes, Accept-Encoding: {}, \
             {cores} cores",
            args.requests,
            args.seconds,
            args.warmup(),
            WARMUP_LIMIT.as_secs(),
            args.concurrency,
            args.queued,
            args.accept_encoding().map_or("(none)".to_owned(), |v| v
                .to_str()
                .unwrap_or("?")
                .to_owned()),
        );
        let whole_run = WholeRun::start();
        let mut reports = Vec::new();
        if args.common.backend.sqlite() {
            reports.push(bench_sqlite(&args, server.clone()).await?);
        }
        if args.common.backend.postgres()
            && let Some(report) = bench_postgres(&args, server.clone()).await?
        {
            reports.push(report);
        }
        for report in &reports {
            report::print_tables(report, cores);
        }
        whole_run.finish();
        anyhow::Ok(())
    })?;
    drop(server_runtime);
    Ok(())
}
