//! Every event out to NATS JetStream, in commit order and once.
//!
//! The SQL store stays the source of truth; the publisher is a reader that is always
//! behind. It reads the events after its checkpoint (the gap-safe read, archived
//! events included), publishes each to `<prefix>.<quote id>` with the event id as
//! `Nats-Msg-Id`, awaits JetStream's acknowledgements for the whole page, and only
//! then moves its checkpoint. Killed between the two, it publishes the page again on
//! restart, and JetStream's deduplication window drops the repeats, so each event is
//! stored once, in stream order (one publisher at a time, in commit order).
//!
//! One publisher at a time across processes ([`LockKind::Publisher`]); the others
//! wait for the lock and take over within seconds when its holder dies. NATS being
//! down stops nothing but the publisher, which retries and catches up.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, Context};

use crate::db::Db;
use crate::eventstore::checkpoints::{advance, checkpoint, last_position, read_all_in};
use crate::eventstore::{GlobalPosition, ReadError, RecordedEvent};
use crate::lock::{Lock, LockKind};

/// Where and how events are published.
#[derive(Debug, Clone)]
pub struct PublisherSettings {
    /// The NATS server, `nats://127.0.0.1:4222`.
    pub url: String,
    /// The JetStream stream (created, or updated to these settings).
    pub stream: String,
    /// Events go to `<prefix>.<quote id>`.
    pub prefix: String,
    /// Messages older than this are dropped by the server (zero: kept).
    pub max_age: Duration,
    /// The stream's size limit in bytes (-1: none).
    pub max_bytes: i64,
    /// How long JetStream remembers a message id: must outlast a publisher's restart.
    pub duplicate_window: Duration,
    /// Events a page: published together, then the checkpoint.
    pub page: i64,
}

impl PublisherSettings {
    pub fn new(url: impl Into<String>) -> Self {
        PublisherSettings {
            url: url.into(),
            stream: "QUOTELINE".into(),
            prefix: "quoteline.events".into(),
            max_age: Duration::ZERO,
            max_bytes: -1,
            duplicate_window: Duration::from_secs(600),
            page: 1_000,
        }
    }

    /// The publisher's row in `projection_checkpoints`.
    pub fn checkpoint_name(&self) -> String {
        format!("nats:{}", self.prefix)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("NATS: {0}")]
    Nats(String),
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    /// A replay onto the live subjects, or over them.
    #[error(
        "a replay goes to subjects of its own: {prefix:?} overlaps the live subjects {live:?}.*"
    )]
    OntoLive { prefix: String, live: String },
}

fn nats(error: impl std::fmt::Display) -> PublishError {
    PublishError::Nats(error.to_string())
}

/// Connects to NATS and creates the stream, or updates it to the settings.
pub async fn connect(settings: &PublisherSettings) -> Result<Context, PublishError> {
    let client = async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(5))
        .connect(settings.url.as_str())
        .await
        .map_err(nats)?;
    let context = jetstream::new(client);
    context
        .create_or_update_stream(jetstream::stream::Config {
            name: settings.stream.clone(),
            subjects: vec![format!("{}.>", settings.prefix)],
            max_age: settings.max_age,
            max_bytes: settings.max_bytes,
            duplicate_window: settings.duplicate_window,
            ..Default::default()
        })
        .await
        .map_err(nats)?;
    Ok(context)
}

/// The default subjects of a replay.
pub const REPLAY_PREFIX: &str = "quoteline.replay";

/// Which events a replay republishes: all, from a global position on, recorded since
/// a moment, of one quote, or a mix.
#[derive(Debug, Clone, Default)]
pub struct ReplaySelection {
    pub from: Option<i64>,
    pub since: Option<chrono::DateTime<chrono::Utc>>,
    pub quote: Option<uuid::Uuid>,
}

impl ReplaySelection {
    fn keeps(&self, event: &RecordedEvent) -> bool {
        self.from.is_none_or(|from| event.position() >= from)
            && self.since.is_none_or(|since| event.recorded_at >= since)
            && self.quote.is_none_or(|quote| event.stream_id == quote)
    }
}

/// What a replay sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Republished {
    pub events: u64,
    pub stream: String,
    pub took: Duration,
}

/// Republishes history (hot and archived), in commit order, to `prefix.<quote id>`
/// on a stream of its own (the prefix upper-cased, `QUOTELINE_REPLAY`), never onto
/// the live subjects of `live`. `progress` hears the events read and how many the
/// log holds.
pub async fn replay_to(
    db: &Db,
    live: &PublisherSettings,
    prefix: &str,
    selection: &ReplaySelection,
    mut progress: impl FnMut(u64, u64),
) -> Result<Republished, PublishError> {
    let started = std::time::Instant::now();
    let overlaps = |a: &str, b: &str| a == b || a.starts_with(&format!("{b}."));
    if overlaps(prefix, &live.prefix) || overlaps(&live.prefix, prefix) {
        return Err(PublishError::OntoLive {
            prefix: prefix.to_owned(),
            live: live.prefix.clone(),
        });
    }
    let mut settings = live.clone();
    settings.prefix = prefix.to_owned();
    settings.stream = prefix.replace(['.', '*', '>'], "_").to_uppercase();
    let context = connect(&settings).await?;
    let run = uuid::Uuid::now_v7().to_string();
    let total = crate::eventstore::event_count(db).await?;
    progress(0, total);
    let mut read = 0;
    let mut sent = 0;
    let mut pooled = db.acquire().await?;
    if let Some(quote) = selection.quote {
        let events: Vec<RecordedEvent> =
            crate::eventstore::read_stream_in(pooled.as_conn(), quote, 0)
                .await?
                .into_iter()
                .filter(|e| selection.keeps(e))
                .collect();
        publish_as(&context, prefix, Some(&run), &events).await?;
        sent += events.len() as u64;
        progress(total, total);
    } else {
        // Up to the end of the log as it stands now; an empty page before it means a
        // transaction still running that the gap-safe read waits for.
        let end = last_position(db).await?.unwrap_or(GlobalPosition::START);
        let mut after = GlobalPosition::START;
        while after < end {
            let page = read_all_in(pooled.as_conn(), after, settings.page.max(1_000)).await?;
            let Some(last) = page.last() else {
                tokio::time::sleep(IDLE).await;
                continue;
            };
            after = last.global;
            read += page.len() as u64;
            let kept: Vec<RecordedEvent> =
                page.into_iter().filter(|e| selection.keeps(e)).collect();
            publish_as(&context, prefix, Some(&run), &kept).await?;
            sent += kept.len() as u64;
            progress(read, total.max(read));
        }
    }
    Ok(Republished {
        events: sent,
        stream: settings.stream,
        took: started.elapsed(),
    })
}

/// The message headers of an event: its id (JetStream's deduplication key), type,
/// schema version, stream version and global position.
pub fn headers(event: &RecordedEvent, run: Option<&str>) -> HeaderMap {
    let mut headers = HeaderMap::new();
    let id = match run {
        // A replay's messages are its own: another replay of the same events is not
        // a repeat, a retry within one is.
        Some(run) => format!("{run}:{}", event.event_id),
        None => event.event_id.to_string(),
    };
    headers.insert("Nats-Msg-Id", id.as_str());
    headers.insert("Quoteline-Event-Type", event.event_type.as_str());
    headers.insert(
        "Quoteline-Schema-Version",
        event.schema_version.to_string().as_str(),
    );
    headers.insert(
        "Quoteline-Stream-Version",
        event.version.to_string().as_str(),
    );
    headers.insert("Quoteline-Position", event.position().to_string().as_str());
    headers
}

/// Publishes `events` under `prefix`, all in flight at once, and waits for every
/// acknowledgement. A repeat (an id JetStream has seen) is acknowledged as one.
pub async fn publish(
    context: &Context,
    prefix: &str,
    events: &[RecordedEvent],
) -> Result<(), PublishError> {
    publish_as(context, prefix, None, events).await
}

async fn publish_as(
    context: &Context,
    prefix: &str,
    run: Option<&str>,
    events: &[RecordedEvent],
) -> Result<(), PublishError> {
    let mut acks = Vec::with_capacity(events.len());
    for event in events {
        let payload = serde_json::to_vec(event).map_err(nats)?;
        let subject = format!("{prefix}.{}", event.stream_id);
        acks.push(
            context
                .publish_with_headers(subject, headers(event, run), payload.into())
                .await
                .map_err(nats)?,
        );
    }
    for ack in acks {
        ack.await.map_err(nats)?;
    }
    Ok(())
}

/// One page: the events after the checkpoint published and acknowledged, then the
/// checkpoint moved past them. Returns how many there were (0: none waiting).
pub async fn publish_page(
    db: &Db,
    context: &Context,
    settings: &PublisherSettings,
) -> Result<u64, PublishError> {
    let name = settings.checkpoint_name();
    let mut pooled = db.acquire().await?;
    let from = checkpoint(pooled.as_conn(), &name)
        .await?
        .unwrap_or(GlobalPosition::START);
    let events = read_all_in(pooled.as_conn(), from, settings.page).await?;
    let end = last_position(db).await?;
    record_lag(from, end, events.first());
    let Some(last) = events.last() else {
        return Ok(0);
    };
    publish(context, &settings.prefix, &events).await?;
    advance(pooled.as_conn(), std::slice::from_ref(&name), last.global).await?;
    metrics::counter!("quoteline_published_total").increment(events.len() as u64);
    Ok(events.len() as u64)
}

/// The publisher's lag in the metrics: events between its checkpoint and the end of
/// the log (by position, so about: PostgreSQL's positions can have gaps), and the age
/// of the oldest event not yet published.
fn record_lag(from: GlobalPosition, end: Option<GlobalPosition>, next: Option<&RecordedEvent>) {
    let events = end.map_or(0, |end| (end.position - from.position).max(0));
    let seconds = next.map_or(0.0, |e| {
        (chrono::Utc::now() - e.recorded_at)
            .num_milliseconds()
            .max(0) as f64
            / 1000.0
    });
    metrics::gauge!("quoteline_publisher_lag_events").set(events as f64);
    metrics::gauge!("quoteline_publisher_lag_seconds").set(seconds);
}

/// The lag while nothing is published (NATS down): read from the database.
async fn lag_while_stopped(db: &Db, settings: &PublisherSettings) -> Result<(), PublishError> {
    let mut pooled = db.acquire().await?;
    let from = checkpoint(pooled.as_conn(), &settings.checkpoint_name())
        .await?
        .unwrap_or(GlobalPosition::START);
    let next = read_all_in(pooled.as_conn(), from, 1).await?;
    record_lag(from, last_position(db).await?, next.first());
    Ok(())
}

/// How long the publisher waits when nothing is new, and at most between retries.
const IDLE: Duration = Duration::from_millis(50);
const MOST_BACKOFF: Duration = Duration::from_secs(5);

/// Runs the publisher for as long as the process: waits to be the one publisher,
/// then publishes page after page; on any failure (NATS down, the lock lost) starts
/// over after a pause.
pub async fn run(db: Db, settings: PublisherSettings) {
    let mut backoff = Duration::from_millis(100);
    loop {
        match lead(&db, &settings).await {
            Ok(()) => backoff = Duration::from_millis(100),
            Err(error) => {
                metrics::counter!("quoteline_publish_errors_total").increment(1);
                tracing::warn!(%error, "the NATS publisher stopped; it starts again shortly");
                backoff = (backoff * 2).min(MOST_BACKOFF);
                if let Err(error) = lag_while_stopped(&db, &settings).await {
                    tracing::warn!(%error, "the publisher's lag could not be read");
                }
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

/// Takes the publisher lock (waiting while another process holds it), connects and
/// publishes until something fails or the lock is lost.
async fn lead(db: &Db, settings: &PublisherSettings) -> Result<(), PublishError> {
    let mut lock = loop {
        match Lock::take(db, LockKind::Publisher, "publishing").await {
            Ok(lock) => break lock,
            Err(crate::lock::LockError::Busy { .. }) => tokio::time::sleep(IDLE * 10).await,
            Err(crate::lock::LockError::Database(error)) => return Err(error.into()),
        }
    };
    tracing::info!(url = %settings.url, stream = %settings.stream, "this process publishes to NATS");
    metrics::gauge!("quoteline_publisher_leader").set(1.0);
    let outcome = publish_while_held(db, settings, &mut lock).await;
    metrics::gauge!("quoteline_publisher_leader").set(0.0);
    lock.release().await;
    outcome
}

async fn publish_while_held(
    db: &Db,
    settings: &PublisherSettings,
    lock: &mut Lock,
) -> Result<(), PublishError> {
    let context = connect(settings).await?;
    let mut checked = std::time::Instant::now();
    loop {
        if checked.elapsed() > Duration::from_secs(1) {
            if !lock.is_held().await {
                tracing::warn!("the publisher lock was lost; another process may publish");
                return Ok(());
            }
            checked = std::time::Instant::now();
        }
        // A page that was not full took all there was: wait for more to gather,
        // rather than poll the database again at once for the next few events
        // (under a full write load that cost PostgreSQL more than the writes did).
        if publish_page(db, &context, settings).await? < settings.page.max(1) as u64 {
            tokio::time::sleep(IDLE).await;
        }
    }
}
