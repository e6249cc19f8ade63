//! Where streams stand as appends commit, in this process and in any other on the
//! same database: what a cache of folded streams needs to answer from memory
//! without reading the stream first.
//!
//! - **PostgreSQL** tells every listener. A trigger on `events` (migration 0014)
//!   sends each statement's streams with their new versions on the channel
//!   [`CHANNEL`]`:<oid>` of the `events` table (so that installations, or tests, in
//!   schemas of one database hear only their own); PostgreSQL delivers a
//!   notification when its transaction commits,
//!   never for one rolled back, in commit order. A statement that moves more streams
//!   than a notification holds sends `*` instead: anything may have moved.
//! - **SQLite** has no such channel, so the feed reads the events after the last
//!   position it has seen every [`POLL`]. Positions are assigned under SQLite's one
//!   write lock (and `AUTOINCREMENT` never reuses one), so they commit in order and
//!   a read after the last one seen misses nothing.
//!
//! The feed is *live* while it follows the log: on PostgreSQL for
//! [`POSTGRES_TRUST`] after it last heard anything on its channel, on SQLite for
//! [`SQLITE_TRUST`] after the start of its last poll that caught up. Every feed on
//! PostgreSQL sends an empty notification on its channel every [`BEAT`], so a
//! listening connection that hears nothing for that long is not following the log
//! (a connection whose server went away without closing it, as after a failover,
//! waits for ever): the feed listens again on a new one.
//!
//! A follower may trust what it holds only while the feed is live and only what it
//! read before the feed's [`HeadsFeed::epoch`] last moved, and after the feed last
//! said [`Heads::Unknown`] ([`HeadsFeed::last_unknown`]), which it says when it may
//! have missed something.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use sqlx::ConnectOptions;
use sqlx::SqlitePool;
use sqlx::postgres::{PgConnection, PgListener, PgPool, PgPoolOptions};
use tokio::sync::watch;
use uuid::Uuid;

use crate::db::{Backend, Db};

/// The PostgreSQL channel the trigger notifies, followed by `:` and the oid of the
/// `events` table.
pub const CHANNEL: &str = "quoteline_heads";
/// How often each feed on PostgreSQL sends its heartbeat: an empty notification on
/// its channel, which every feed listening there hears (the trigger never sends an
/// empty one).
pub const BEAT: Duration = Duration::from_secs(1);
/// How long after it last heard anything on its channel, a heartbeat included, the
/// feed on PostgreSQL stays live; hearing nothing for that long, it gives up its
/// connection and listens on a new one.
pub const POSTGRES_TRUST: Duration = Duration::from_secs(3);
/// How often the feed reads the log on SQLite.
pub const POLL: Duration = Duration::from_millis(50);
/// How long after the start of its last poll that caught up the feed stays live on
/// SQLite: a poll held up (the pool busy, the disk slow) ends trust soon after.
pub const SQLITE_TRUST: Duration = Duration::from_millis(200);
/// Events a poll reads at most; a full page is read on at once, and the feed is not
/// live again until a poll comes back short.
const POLL_PAGE: i64 = 1_000;
/// How long the feed on PostgreSQL waits for a connection to listen on.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the feed waits before it tries again after its database failed it.
const RETRY: Duration = Duration::from_millis(500);

/// What the feed learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Heads {
    /// Each stream stands at least at its version.
    Moved(Vec<(Uuid, i64)>),
    /// Appends may have been missed (the feed lost its connection or its read failed,
    /// or a statement moved more streams than a notification holds): trust nothing
    /// read before.
    Unknown,
}

/// What the feed tells as it learns, with the epoch the telling moved the feed to.
/// `follow` is awaited before the feed reads on, and before it counts itself live
/// again after [`Heads::Unknown`]. Tellings come one at a time, in commit order.
pub trait Follower: Send + Sync + 'static {
    fn follow(&self, heads: Heads, epoch: u64) -> impl Future<Output = ()> + Send;
}

/// A handle on a running feed: how live it is, and how many times it has told
/// something.
#[derive(Clone)]
pub struct HeadsFeed {
    shared: Arc<Shared>,
}

struct Shared {
    /// Bumped before every [`Heads`] is told.
    epoch: AtomicU64,
    /// The epoch [`Heads::Unknown`] was last told at.
    last_unknown: AtomicU64,
    /// Bumped after every [`Heads`] is told and every poll: what a caller waiting
    /// for the feed to catch up watches.
    rounds: watch::Sender<u64>,
    /// Until when (milliseconds since `started`) the feed is live.
    live_until: AtomicU64,
    started: Instant,
}

impl HeadsFeed {
    /// Starts following `db` for `follower`, in a task of its own; call from within
    /// the tokio runtime. The feed is not live until it has begun listening (or
    /// polled once).
    pub fn spawn(db: Db, follower: impl Follower) -> HeadsFeed {
        let feed = HeadsFeed {
            shared: Arc::new(Shared {
                epoch: AtomicU64::new(0),
                last_unknown: AtomicU64::new(0),
                rounds: watch::Sender::new(0),
                live_until: AtomicU64::new(0),
                started: Instant::now(),
            }),
        };
        let running = feed.clone();
        tokio::spawn(async move {
            match db {
                Backend::Sqlite(pool) => running.poll(pool, follower).await,
                Backend::Postgres(pool) => {
                    tokio::spawn(beat(pool.clone()));
                    running.listen(pool, follower).await
                }
            }
        });
        feed
    }

    /// How many times the feed has told something (or is about to): a follower
    /// trusts what it read only if this did not move meanwhile.
    pub fn epoch(&self) -> u64 {
        self.shared.epoch.load(Ordering::SeqCst)
    }

    /// The epoch the feed last said [`Heads::Unknown`] at: what was read before it
    /// (at a lower epoch) is not to be trusted, whatever a cache still holds.
    pub fn last_unknown(&self) -> u64 {
        self.shared.last_unknown.load(Ordering::SeqCst)
    }

    /// Moves the epoch for an append this process has just committed, before its
    /// caller answers: what was drawn from the log before it is not kept as current
    /// here, without waiting for the feed to tell of it.
    pub fn appended_here(&self) {
        self.shared.epoch.fetch_add(1, Ordering::SeqCst);
    }

    /// A receiver that sees a change after each thing the feed tells and each poll:
    /// to wait for the feed instead of for a while.
    pub fn rounds(&self) -> watch::Receiver<u64> {
        self.shared.rounds.subscribe()
    }

    /// Whether the feed follows the log now.
    pub fn is_live(&self) -> bool {
        self.millis() < self.shared.live_until.load(Ordering::SeqCst)
    }

    fn millis(&self) -> u64 {
        u64::try_from(self.shared.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn live_for(&self, until: u64) {
        self.shared.live_until.store(until, Ordering::SeqCst);
        self.shared.rounds.send_modify(|round| *round += 1);
    }

    /// Tells `heads`; the caller ends liveness first when the feed lost track of
    /// the log (a `*` notification does not: the feed is still listening).
    async fn tell(&self, follower: &impl Follower, heads: Heads) {
        let epoch = self.shared.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        if heads == Heads::Unknown {
            self.shared.last_unknown.fetch_max(epoch, Ordering::SeqCst);
        }
        follower.follow(heads, epoch).await;
        self.shared.rounds.send_modify(|round| *round += 1);
    }

    /// Live for [`POSTGRES_TRUST`] from now: the feed has just heard from its channel.
    fn heard(&self) {
        let trust = u64::try_from(POSTGRES_TRUST.as_millis()).unwrap_or(u64::MAX);
        self.live_for(self.millis().saturating_add(trust));
    }

    /// Listens on a connection of its own until `pool` closes.
    ///
    /// The connection comes from a pool of one made for it, not from `pool`: sqlx's
    /// listener, dropped, sends `UNLISTEN *` and waits for the answer before it gives
    /// its connection back, and on a connection that fell silent that answer never
    /// comes. The wait then holds a connection of that pool of one, which is dropped,
    /// and not one of the process's (whose `close` would wait for it).
    async fn listen(self, pool: PgPool, follower: impl Follower) {
        loop {
            if pool.is_closed() {
                return;
            }
            let own = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(CONNECT_TIMEOUT)
                .connect_lazy_with((*pool.connect_options()).clone());
            let mut listener = match PgListener::connect_with(&own).await {
                Ok(listener) => listener,
                Err(error) => {
                    tracing::warn!(%error, "the heads feed could not connect; trying again");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            // A lost connection is reported at once (`Ok(None)`), not after sqlx has
            // reconnected on its own while the feed still counted itself live.
            listener.eager_reconnect(false);
            // The table this connection's search path finds as `events`.
            let table: Result<i64, _> =
                sqlx::query_scalar("SELECT 'events'::regclass::oid::bigint")
                    .fetch_one(&mut listener)
                    .await;
            let channel = match table {
                Ok(table) => format!("{CHANNEL}:{table}"),
                Err(error) => {
                    tracing::warn!(%error, "the heads feed found no events table; trying again");
                    tokio::time::sleep(RETRY).await;
                    continue;
                }
            };
            if let Err(error) = listener.listen(&channel).await {
                tracing::warn!(%error, "the heads feed could not listen; trying again");
                tokio::time::sleep(RETRY).await;
                continue;
            }
            // Whatever committed before LISTEN was never told: what was read before
            // now cannot be trusted.
            self.tell(&follower, Heads::Unknown).await;
            self.heard();
            loop {
                let heard = tokio::select! {
                    () = pool.close_event() => return,
                    heard = tokio::time::timeout(POSTGRES_TRUST, listener.try_recv()) => heard,
                };
                let Ok(heard) = heard else {
                    tracing::warn!(
                        "the heads feed heard nothing on its channel for {POSTGRES_TRUST:?}, \
                         not even a heartbeat; listening again on a new connection"
                    );
                    self.live_for(0);
                    self.tell(&follower, Heads::Unknown).await;
                    break;
                };
                match heard {
                    Ok(Some(notification)) => {
                        if !notification.payload().is_empty() {
                            self.tell(&follower, parse(notification.payload())).await;
                        }
                        self.heard();
                    }
                    Ok(None) => {
                        tracing::warn!("the heads feed lost its connection; listening again");
                        self.live_for(0);
                        self.tell(&follower, Heads::Unknown).await;
                        break;
                    }
                    Err(error) => {
                        tracing::warn!(%error, "the heads feed failed; listening again");
                        self.live_for(0);
                        self.tell(&follower, Heads::Unknown).await;
                        tokio::time::sleep(RETRY).await;
                        break;
                    }
                }
            }
        }
    }

    async fn poll(self, pool: SqlitePool, follower: impl Follower) {
        let mut last = loop {
            match sqlx::query_scalar::<_, i64>(
                "SELECT coalesce((SELECT seq FROM sqlite_sequence WHERE name = 'events'), 0)",
            )
            .fetch_one(&pool)
            .await
            {
                Ok(last) => break last,
                Err(error) => {
                    tracing::warn!(%error, "the heads feed could not read the log; trying again");
                    tokio::time::sleep(RETRY).await;
                }
            }
        };
        let mut ticks = tokio::time::interval(POLL);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            loop {
                let began = self.millis();
                let rows: Result<Vec<(i64, Uuid, i64)>, _> = sqlx::query_as(
                    "SELECT position, stream_id, version FROM events \
                     WHERE position > $1 ORDER BY position LIMIT $2",
                )
                .bind(last)
                .bind(POLL_PAGE)
                .fetch_all(&pool)
                .await;
                let rows = match rows {
                    Ok(rows) => rows,
                    Err(sqlx::Error::PoolClosed) => return,
                    Err(error) => {
                        tracing::warn!(%error, "the heads feed could not read the log");
                        self.live_for(0);
                        self.tell(&follower, Heads::Unknown).await;
                        break;
                    }
                };
                let full = rows.len() as i64 == POLL_PAGE;
                if let Some(&(position, _, _)) = rows.last() {
                    last = position;
                    let moved = rows.into_iter().map(|(_, id, version)| (id, version));
                    self.tell(&follower, Heads::Moved(moved.collect())).await;
                }
                if !full {
                    let trust = u64::try_from(SQLITE_TRUST.as_millis()).unwrap_or(u64::MAX);
                    self.live_for(began.saturating_add(trust));
                    break;
                }
            }
        }
    }
}

/// Sends the feed's heartbeat on the channel of the `events` table its connection's
/// search path finds (the one the feed listens on), every [`BEAT`] until `pool`
/// closes, on a connection of its own opened with `pool`'s options: a heartbeat
/// never waits for the pool, and one that gets no answer within a [`BEAT`] (a
/// connection fallen silent) drops its connection, and the next one opens another.
async fn beat(pool: PgPool) {
    let mut own: Option<PgConnection> = None;
    let mut ticks = tokio::time::interval(BEAT);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            () = pool.close_event() => return,
        }
        let sent = tokio::time::timeout(BEAT, async {
            let connection = match own.as_mut() {
                Some(connection) => connection,
                None => own.insert(pool.connect_options().connect().await?),
            };
            sqlx::query("SELECT pg_notify($1 || ':' || 'events'::regclass::oid::bigint, '')")
                .bind(CHANNEL)
                .execute(connection)
                .await
        })
        .await;
        match sent {
            Ok(Ok(_)) => {}
            Ok(Err(error)) => {
                tracing::debug!(%error, "the heads feed's heartbeat was not sent");
                own = None;
            }
            Err(_) => {
                tracing::debug!("the heads feed's heartbeat got no answer");
                own = None;
            }
        }
    }
}

/// A notification's payload: `*`, or `stream version` pairs separated by commas.
fn parse(payload: &str) -> Heads {
    let pairs = payload.split(',').map(|pair| {
        let (id, version) = pair.split_once(' ')?;
        Some((Uuid::parse_str(id).ok()?, version.parse().ok()?))
    });
    match pairs.collect::<Option<Vec<_>>>() {
        Some(moved) if payload != "*" => Heads::Moved(moved),
        _ => Heads::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_reads_as_the_streams_it_names_or_as_unknown() {
        let a = Uuid::now_v7();
        let b = Uuid::now_v7();
        assert_eq!(
            parse(&format!("{a} 3,{b} 12")),
            Heads::Moved(vec![(a, 3), (b, 12)])
        );
        assert_eq!(parse("*"), Heads::Unknown);
        assert_eq!(parse(""), Heads::Unknown);
        assert_eq!(parse(&format!("{a} x")), Heads::Unknown);
        assert_eq!(parse(&format!("{a}")), Heads::Unknown);
    }
}
