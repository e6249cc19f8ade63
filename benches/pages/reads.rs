//! Where a page's time goes: the reads behind each page called directly, without
//! HTTP, session or template, so that a slow page can be told apart from a slow
//! query; and the plan of the queue's count, the read that grows with the queue.

use std::future::Future;
use std::time::{Duration, Instant};

use quoteline::db::Backend;
use uuid::Uuid;

/// The median time of `runs` calls, one at a time.
async fn median_of<F, Fut, T, E>(runs: usize, mut call: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: std::error::Error + Send + Sync + 'static,
{
    let mut times = Vec::with_capacity(runs);
    for _ in 0..runs {
        let began = Instant::now();
        call().await?;
        times.push(began.elapsed());
    }
    times.sort_unstable();
    Ok(times[runs / 2])
}

/// The reads behind each page, called directly (no HTTP, no session, no template),
/// one at a time, and the plan of the queue's count.
pub async fn diagnose(
    state: quoteline::AppState,
    quote: Uuid,
    timeline_quote: Uuid,
) -> anyhow::Result<(Vec<(&'static str, Duration)>, String)> {
    use quoteline::underwriting::queue::{self, QueueFilter, QueueSort};
    const RUNS: usize = 100;
    let db = &state.db;
    let all = QueueFilter::default();
    let india = QueueFilter {
        country: Some("IN".into()),
        ..QueueFilter::default()
    };
    let mut timings = Vec::new();
    timings.push((
        "queue::page (51 rows, oldest first)",
        median_of(RUNS, || queue::page(db, &all, QueueSort::Oldest, None, 51)).await?,
    ));
    timings.push((
        "queue::count (all waiting)",
        median_of(RUNS, || queue::count(db, &all)).await?,
    ));
    timings.push((
        "queue::page (51 rows, country=IN)",
        median_of(RUNS, || {
            queue::page(db, &india, QueueSort::Oldest, None, 51)
        })
        .await?,
    ));
    timings.push((
        "queue::count (country=IN)",
        median_of(RUNS, || queue::count(db, &india)).await?,
    ));
    timings.push((
        "queue::page (51 rows, sort=waiting)",
        median_of(RUNS, || {
            queue::page(db, &all, QueueSort::LongestWaiting, None, 51)
        })
        .await?,
    ));
    timings.push((
        "summary::find (task list)",
        median_of(RUNS, || quoteline::quoting::summary::find(db, quote)).await?,
    ));
    timings.push((
        "timeline::header (200-event quote)",
        median_of(RUNS, || {
            quoteline::audit::timeline::header(db, timeline_quote)
        })
        .await?,
    ));
    timings.push((
        "timeline::for_quote (201 of 200 rows)",
        median_of(RUNS, || {
            quoteline::audit::timeline::for_quote(db, timeline_quote, None, 201)
        })
        .await?,
    ));
    timings.push((
        "QuoteService::load (6-event quote)",
        median_of(RUNS, || state.quotes.load(quote, None)).await?,
    ));
    timings.push((
        "QuoteService::load (200-event quote)",
        median_of(RUNS, || state.quotes.load(timeline_quote, None)).await?,
    ));
    let count_sql = queue::count_query(&all).sql;
    let plan = match db {
        Backend::Sqlite(pool) => {
            let rows: Vec<(i64, i64, i64, String)> =
                sqlx::query_as(&format!("EXPLAIN QUERY PLAN {count_sql}"))
                    .fetch_all(pool)
                    .await?;
            rows.into_iter().map(|r| r.3).collect::<Vec<_>>().join("\n")
        }
        Backend::Postgres(pool) => {
            let rows: Vec<(String,)> =
                sqlx::query_as(&format!("EXPLAIN (ANALYZE, BUFFERS) {count_sql}"))
                    .fetch_all(pool)
                    .await?;
            rows.into_iter().map(|r| r.0).collect::<Vec<_>>().join("\n")
        }
    };
    Ok((timings, format!("{count_sql}\n{plan}")))
}
