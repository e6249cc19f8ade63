//! Loading a quote against its stream's length, with and without a snapshot
//! (docs/ARCHITECTURE.md §9: a 10,000-event quote loads from a snapshot in ≤ 1 ms).
//!
//! `cargo bench --bench snapshots -- [--backend sqlite|postgres|both]
//! [--lengths 10,100,1000,10000,100000] [--svg docs/snapshot-load.svg]`
//!
//! For each length N a quote is started and given N − 1 contact-detail events (one
//! event each), appended 500 at a time. Each load is `QuoteService::load(id, None)` by
//! a service with nothing cached (a process that has just started, or a quote the
//! cache let go): without a snapshot it folds all N events; with one it reads a
//! snapshot as far short of the end as the default policy allows (every 50 events:
//! at most 49 after its newest snapshot) and folds the rest. The median of repeated loads is printed, and
//! with `--svg` the curves are drawn.

mod common;

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use chrono::Utc;
use clap::Parser;
use common::{BenchSchema, CommonArgs, millis};
use quoteline::db::Db;
use quoteline::eventstore::{
    AppendRequest, EventStore, ExpectedVersion, Metadata, SnapshotPolicy, Snapshots,
};
use quoteline::kernel::{Actor, Role};
use quoteline::quoting::QuoteService;
use quoteline::quoting::domain::{
    Action, Command, ContactDetails, PersonName, Quote, QuoteEvent, decide, evolve,
};
use sqlx::sqlite::SqliteConnectOptions;
use uuid::Uuid;

#[derive(Parser, Debug)]
#[command(
    name = "snapshots",
    bin_name = "cargo bench --bench snapshots --",
    after_help = common::postgres_help(),
    args_override_self = true
)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
    /// Stream lengths to load, in events.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "10,100,1000,10000,100000"
    )]
    lengths: Vec<u64>,
    /// Also draw the curves into this SVG file.
    #[arg(long, value_name = "FILE")]
    svg: Option<std::path::PathBuf>,
}

/// One length's medians.
#[derive(Debug, Clone, Copy)]
struct Point {
    length: u64,
    full_fold: Duration,
    from_snapshot: Duration,
}

/// The quote's events: started, then a contact-details event after another.
fn history(length: u64) -> Vec<QuoteEvent> {
    let agent = Actor::new("asha", [Role::Agent]);
    let mut quote = Quote::default();
    let mut events = Vec::new();
    let start = Action::Start {
        reference: "Q-BENCH1".into(),
        applicant_name: PersonName::parse("Meera Iyer").unwrap(),
    };
    let mut n = 0u64;
    while (events.len() as u64) < length {
        let action = if quote.is_started() {
            n += 1;
            let email = format!("meera.{n}@example.com");
            Action::ProvideContact(ContactDetails::parse(&email, "+919876543210").unwrap())
        } else {
            start.clone()
        };
        for event in decide(&quote, &Command::new(agent.clone(), action)).unwrap() {
            quote = evolve(quote, &event);
            events.push(event);
        }
    }
    events.truncate(length as usize);
    events
}

async fn write(store: &EventStore, id: Uuid, events: &[QuoteEvent]) -> anyhow::Result<()> {
    let mut version = 0i64;
    for chunk in events.chunks(500) {
        store
            .append(AppendRequest {
                stream_id: id,
                expected: ExpectedVersion::from(version),
                events: chunk.iter().map(QuoteEvent::encode).collect(),
                metadata: Metadata::new("asha", Utc::now()),
            })
            .await?;
        version += chunk.len() as i64;
    }
    Ok(())
}

/// The median time of `runs` loads, each by a service with nothing cached.
async fn median_load(store: &EventStore, id: Uuid, runs: usize) -> anyhow::Result<Duration> {
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let cold = QuoteService::configured(store.clone(), 1 << 20, SnapshotPolicy::NEVER);
        let began = Instant::now();
        let quote = cold.load(id, None).await?;
        times.push(began.elapsed());
        anyhow::ensure!(quote.is_some(), "the quote loads");
    }
    times.sort();
    Ok(times[times.len() / 2])
}

async fn measure(db: Db, lengths: &[u64]) -> anyhow::Result<Vec<Point>> {
    db.migrate().await?;
    let store = EventStore::new(db.clone(), vec![]);
    let snapshots = Snapshots::new(db.clone());
    let mut points = Vec::new();
    for &length in lengths {
        let id = Uuid::now_v7();
        let events = history(length);
        write(&store, id, &events).await?;
        let runs = if length >= 100_000 { 5 } else { 25 };
        let full_fold = median_load(&store, id, runs).await?;

        let every = SnapshotPolicy::default().every.map_or(length, |n| n.get());
        let at = length.saturating_sub(every - 1);
        if at > 0 {
            let quote = events[..at as usize].iter().fold(Quote::default(), evolve);
            snapshots
                .save(id, at as i64, Quote::SCHEMA_VERSION, &quote, Utc::now())
                .await?;
        }
        let from_snapshot = median_load(&store, id, 25).await?;
        println!(
            "{length:>7} events: full fold {:>9} ms, from the snapshot at {at:>6} {:>7} ms",
            millis(full_fold),
            millis(from_snapshot)
        );
        points.push(Point {
            length,
            full_fold,
            from_snapshot,
        });
    }
    Ok(points)
}

/// The two curves of each backend on log-log axes.
fn svg(curves: &[(&str, Vec<Point>)]) -> String {
    let (width, height, left, bottom, top, right) = (720.0, 420.0, 70.0, 50.0, 30.0, 190.0);
    let lengths: Vec<f64> = curves
        .iter()
        .flat_map(|(_, points)| points.iter().map(|p| p.length as f64))
        .collect();
    let times: Vec<f64> = curves
        .iter()
        .flat_map(|(_, points)| points.iter())
        .flat_map(|p| [p.full_fold, p.from_snapshot])
        .map(|t| t.as_secs_f64() * 1e3)
        .collect();
    let (x_lo, x_hi) = (
        lengths
            .iter()
            .cloned()
            .fold(f64::MAX, f64::min)
            .log10()
            .floor(),
        lengths.iter().cloned().fold(0.0, f64::max).log10().ceil(),
    );
    let (y_lo, y_hi) = (
        times
            .iter()
            .cloned()
            .fold(f64::MAX, f64::min)
            .log10()
            .floor(),
        times.iter().cloned().fold(0.0, f64::max).log10().ceil(),
    );
    let plot_w = width - left - right;
    let plot_h = height - top - bottom;
    let x = |length: f64| left + (length.log10() - x_lo) / (x_hi - x_lo).max(1.0) * plot_w;
    let y = |ms: f64| top + plot_h - (ms.log10() - y_lo) / (y_hi - y_lo).max(1.0) * plot_h;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        out,
        r#"<title>Loading a quote: time against stream length, with and without a snapshot</title>"#
    );
    let _ = writeln!(
        out,
        r#"<rect width="{width}" height="{height}" fill="white"/>"#
    );
    for decade in (x_lo as i32)..=(x_hi as i32) {
        let px = x(10f64.powi(decade));
        let _ = writeln!(
            out,
            r##"<line x1="{px:.1}" y1="{top}" x2="{px:.1}" y2="{:.1}" stroke="#ddd"/><text x="{px:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            top + plot_h,
            top + plot_h + 18.0,
            10u64.pow(decade as u32)
        );
    }
    for decade in (y_lo as i32)..=(y_hi as i32) {
        let py = y(10f64.powi(decade));
        let label = format!("{}", 10f64.powi(decade));
        let _ = writeln!(
            out,
            r##"<line x1="{left}" y1="{py:.1}" x2="{:.1}" y2="{py:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{label} ms</text>"##,
            left + plot_w,
            left - 6.0,
            py + 4.0
        );
    }
    let _ = writeln!(
        out,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">events in the quote's stream</text>"#,
        left + plot_w / 2.0,
        height - 10.0
    );
    let colours = ["#1d70b8", "#d4351c"];
    let mut legend_y = top + 10.0;
    for ((backend, points), colour) in curves.iter().zip(colours) {
        for (label, dash, time) in [
            (
                "full fold",
                "6 4",
                (|p: &Point| p.full_fold) as fn(&Point) -> Duration,
            ),
            ("from a snapshot", "", |p: &Point| p.from_snapshot),
        ] {
            let path: Vec<String> = points
                .iter()
                .map(|p| {
                    format!(
                        "{:.1},{:.1}",
                        x(p.length as f64),
                        y(time(p).as_secs_f64() * 1e3)
                    )
                })
                .collect();
            let _ = writeln!(
                out,
                r#"<polyline points="{}" fill="none" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/>"#,
                path.join(" ")
            );
            let _ = writeln!(
                out,
                r#"<line x1="{:.1}" y1="{legend_y:.1}" x2="{:.1}" y2="{legend_y:.1}" stroke="{colour}" stroke-width="2" stroke-dasharray="{dash}"/><text x="{:.1}" y="{:.1}">{backend}, {label}</text>"#,
                width - right + 15.0,
                width - right + 45.0,
                width - right + 50.0,
                legend_y + 4.0
            );
            legend_y += 20.0;
        }
    }
    out.push_str("</svg>\n");
    out
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut curves = Vec::new();
    if args.common.backend.sqlite() {
        let folder = tempfile::tempdir()?;
        let path = folder.path().join("snapshots.db");
        let db = Db::connect_sqlite(SqliteConnectOptions::new().filename(&path)).await?;
        common::describe_sqlite(&db, &path).await?;
        curves.push(("SQLite", measure(db, &args.lengths).await?));
    }
    if args.common.backend.postgres() {
        let lengths = args.lengths.clone();
        let measured = BenchSchema::run("bench_snapshots", |options| async move {
            let db = Db::connect_postgres(options).await?;
            let points = measure(db.clone(), &lengths).await;
            db.close().await;
            points
        })
        .await?;
        if let Some(points) = measured {
            curves.push(("PostgreSQL", points));
        }
    }
    if let Some(file) = &args.svg {
        std::fs::write(file, svg(&curves))?;
        println!("drew {}", file.display());
    }
    Ok(())
}
