//! The figures of each path, the §9 budgets they are held to, and how they are
//! printed: a line per path as it ends, then the tables BENCHMARKS.md keeps.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::common::{millis, percentile};
use crate::load::{Cpu, TICKS_PER_SECOND};
use crate::seed::Seeded;

/// §9 budgets.
pub const READ_BUDGET: Budget = Budget {
    rps: 20_000.0,
    p99_ms: 10.0,
};
/// A page with one client: only its latency is held to the read budget.
pub const LATENCY_BUDGET: Budget = Budget {
    rps: 0.0,
    p99_ms: 10.0,
};

pub const POST_BUDGET: Budget = Budget {
    rps: 5_000.0,
    p99_ms: 50.0,
};

#[derive(Clone, Copy)]
pub struct Budget {
    rps: f64,
    p99_ms: f64,
}

/// The figures of one path.
pub struct Run {
    pub path: String,
    pub elapsed: Duration,
    pub latencies: Vec<Duration>,
    /// The status this path answers when all is well (200, or 303 for a POST).
    pub expected: u16,
    pub ok: usize,
    pub statuses: BTreeMap<u16, usize>,
    pub bytes: usize,
    pub encodings: BTreeMap<String, usize>,
    pub cpu: Cpu,
    pub budget: Budget,
}

impl Run {
    fn requests(&self) -> usize {
        self.latencies.len()
    }

    /// Successful responses per second.
    fn rate(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64()
    }

    fn percentile(&self, p: f64) -> Duration {
        percentile(&self.latencies, p)
    }

    fn meets(&self) -> (bool, bool) {
        (
            self.rate() >= self.budget.rps,
            self.percentile(99.0).as_secs_f64() * 1e3 <= self.budget.p99_ms,
        )
    }

    /// Responses of any other status than the expected one, by status.
    fn not_ok(&self) -> String {
        let other: Vec<String> = self
            .statuses
            .iter()
            .filter(|(status, _)| **status != self.expected)
            .map(|(status, n)| format!("{n}×{status}"))
            .collect();
        if other.is_empty() {
            "0".into()
        } else {
            other.join(" ")
        }
    }
}

/// Everything one backend's run found.
pub struct Report {
    pub backend: &'static str,
    pub seeded: Seeded,
    pub timings: Vec<(&'static str, Duration)>,
    pub runs: Vec<Run>,
}

/// The SQLite file's size and its write-ahead log's.
pub fn file_sizes(path: &std::path::Path) -> String {
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len()) as f64 / 1e6;
    let wal = path.with_extension("db-wal");
    format!(
        "database file {:.0} MB, WAL {:.0} MB",
        size(path),
        size(&wal)
    )
}

/// The reads behind the pages, as `reads::diagnose` timed them, and the queue
/// count's plan.
pub fn print_reads(backend: &str, timings: &[(&'static str, Duration)], plan: &str) {
    println!(
        "{backend}: the reads behind the pages, called directly one at a time (median of 100):"
    );
    for (what, took) in timings {
        println!(
            "{backend}:   {what:<40} {:>8.3} ms",
            took.as_secs_f64() * 1e3
        );
    }
    println!("{backend}: the queue's count and its plan:");
    for line in plan.lines() {
        println!("{backend}:   {line}");
    }
}

pub fn print_run(backend: &str, run: &Run) {
    println!(
        "{backend}: {} — {} requests, {:.0}/s, p50 {} ms, p99 {} ms, not OK {}",
        run.path,
        run.requests(),
        run.rate(),
        millis(run.percentile(50.0)),
        millis(run.percentile(99.0)),
        run.not_ok()
    );
}

pub fn print_tables(report: &Report, cores: usize) {
    let backend = report.backend;
    println!();
    println!(
        "{backend}: {} quotes waiting, {} events stored. {}",
        report.seeded.queued,
        report.seeded.events,
        report.seeded.note()
    );
    println!(
        "| {:<8} | {:<48} | {:>8} | {:>8} | {:>7} | {:>7} | {:>7} | {:>7} | {:>6} | {:<24} | {:<14} |",
        "backend",
        "path",
        "requests",
        "ok/s",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "max ms",
        "not ok",
        "budget",
        "met"
    );
    println!(
        "| {:-<8} | {:-<48} | {:->8} | {:->8} | {:->7} | {:->7} | {:->7} | {:->7} | {:->6} | {:-<24} | {:-<14} |",
        "", "", "", "", "", "", "", "", "", "", ""
    );
    for run in &report.runs {
        let (rate_met, p99_met) = run.meets();
        let verdict = match (rate_met, p99_met) {
            (true, true) => "met",
            (false, true) => "NOT MET (rate)",
            (true, false) => "NOT MET (p99)",
            (false, false) => "NOT MET (both)",
        };
        println!(
            "| {:<8} | {:<48} | {:>8} | {:>8.0} | {:>7} | {:>7} | {:>7} | {:>7} | {:>6} | {:<24} | {:<14} |",
            backend,
            run.path,
            run.requests(),
            run.rate(),
            millis(run.percentile(50.0)),
            millis(run.percentile(95.0)),
            millis(run.percentile(99.0)),
            millis(*run.latencies.last().unwrap_or(&Duration::ZERO)),
            run.not_ok(),
            if run.budget.rps > 0.0 {
                format!(
                    ">= {:.0}/s, p99 <= {:.0} ms",
                    run.budget.rps, run.budget.p99_ms
                )
            } else {
                format!("p99 <= {:.0} ms (1 client)", run.budget.p99_ms)
            },
            verdict,
        );
    }
    println!();
    println!(
        "CPU per request in µs ({cores} cores, all shared by server, database and load generator):"
    );
    println!(
        "| {:<8} | {:<48} | {:>7} | {:>7} | {:>8} | {:>7} | {:>7} | {:>9} | {:>10} | {:>14} | {:>6} | {:>6} |",
        "backend",
        "path",
        "app",
        "sqlite",
        "postgres",
        "client",
        "other",
        "resp. B",
        "encoding",
        "app+db ceiling",
        "busy",
        "rest"
    );
    println!(
        "| {:-<8} | {:-<48} | {:->7} | {:->7} | {:->8} | {:->7} | {:->7} | {:->9} | {:->10} | {:->14} | {:->6} | {:->6} |",
        "", "", "", "", "", "", "", "", "", "", "", ""
    );
    for run in &report.runs {
        let n = run.requests();
        let cpu = run.cpu;
        let share_of_cores = |ticks: u64| {
            ticks as f64 / TICKS_PER_SECOND / run.elapsed.as_secs_f64() / cores.max(1) as f64
                * 100.0
        };
        let other = cpu
            .process
            .saturating_sub(cpu.app + cpu.sqlite + cpu.client);
        let server = Cpu::per(cpu.app + cpu.sqlite + cpu.postgres, n);
        let encoding = run
            .encodings
            .iter()
            .max_by_key(|(_, n)| **n)
            .map_or("-".to_owned(), |(e, _)| e.clone());
        println!(
            "| {:<8} | {:<48} | {:>7.0} | {:>7.0} | {:>8.0} | {:>7.0} | {:>7.0} | {:>9.0} | {:>10} | {:>12.0}/s | {:>5.0}% | {:>5.0}% |",
            backend,
            run.path,
            Cpu::per(cpu.app, n),
            Cpu::per(cpu.sqlite, n),
            Cpu::per(cpu.postgres, n),
            Cpu::per(cpu.client, n),
            Cpu::per(other, n),
            run.bytes as f64 / n.max(1) as f64,
            encoding,
            cores as f64 * 1e6 / server.max(1.0),
            share_of_cores(cpu.machine),
            share_of_cores(cpu.machine.saturating_sub(cpu.process + cpu.postgres)),
        );
    }
    println!(
        "(app: the server's runtime threads; sqlite: sqlx's SQLite worker threads; postgres: \
         every postgres process on the machine; client: the load generator; \"app+db ceiling\": \
         {cores} cores divided by app+sqlite+postgres CPU per request, the rate if nothing else ran; \
         busy: the machine's CPU use during the path, as a share of all {cores} cores; rest: the \
         part of it that was neither this process nor PostgreSQL: other work on the machine, \
         and kernel threads such as the disk's)"
    );
    let timings: Vec<String> = report
        .timings
        .iter()
        .map(|(what, took)| format!("{what} {:.3} ms", took.as_secs_f64() * 1e3))
        .collect();
    println!(
        "{backend}: reads called directly, one at a time (median): {}",
        timings.join("; ")
    );
}
