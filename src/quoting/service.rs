//! The quote service: load a quote (fold its events), decide, and append with the
//! expected version. The only way quoting's commands reach the event store.
//!
//! # The quote cache
//!
//! Each service keeps quotes as folded at some version, after each load and each
//! command: a hint, never the answer on its own. Events are never changed, so a
//! quote folded at version `n` *is* the quote at version `n` for ever; what a cached
//! quote may be is behind, when another process (or another service over the same
//! database) has appended since. So:
//!
//! - A load of the latest state reads the events after the cached version (one
//!   indexed read, usually empty) and folds them on: never stale, whichever process
//!   wrote them. A service that follows the heads feed ([`QuoteService::following_heads`],
//!   the server's) answers from memory instead when the cached quote is *trusted*:
//!   read to the stream's end while the feed was live and told nothing meanwhile, or
//!   at the very version the feed last told of its stream (before or after it was
//!   kept: a command's own append is told too, and its quote is then trusted); not
//!   moved past since (the feed marks it untrusted when its stream moves); and read,
//!   or told, after the feed last said it may have missed something. A change made
//!   by another process then shows once the feed has told it: at once on PostgreSQL
//!   (a notification at commit), within [`POLL`](crate::eventstore::heads::POLL) on SQLite.
//! - A load at version `v` (a form's version, `?as_of=`) takes the cached quote as
//!   it is when `v` is its version, reads only the events between when `v` is later,
//!   and folds from the first event when `v` is earlier.
//! - A command is decided on the quote at the form's version, as ever (docs/
//!   ARCHITECTURE.md §3); when that is the cached version, nothing is read. The
//!   append's expected-version check decides whether the stream is still there. A
//!   conflict is answered as stale with no retry: the retry would decide on the same
//!   quote (the one at the form's version, which the cache gives exactly) and meet
//!   the same conflict, and a resubmitted form is found by its idempotency key
//!   before the store checks versions. The cached entry stays: it is not wrong, only
//!   behind, and the next load brings it up to date.
//! - An entry is only ever replaced by a later version, so a slow caller cannot put
//!   an older quote over a newer one.
//!
//! # Snapshots
//!
//! A quote that is not cached (another process wrote it, the cache let it go, the
//! process started since) loads from its newest snapshot at or below the version
//! wanted and folds only the events after it (`eventstore::snapshots`). After each
//! command and each load that folded events, the quote is offered to the service's
//! [`Snapshotter`], which keeps it when the [`SnapshotPolicy`] says so, in a task of
//! its own after the commit. A snapshot of another `Quote::SCHEMA_VERSION` is
//! ignored, and the quote as folded from its events replaces it.
//!
//! The cache is bounded by weight: each quote weighs its JSON size plus a fixed
//! overhead, and a service holds at most [`CACHED_QUOTE_BYTES`] of them (tens of
//! thousands of typical quotes), least recently and least often used going first.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use moka::ops::compute::Op;
use rand::Rng;
use uuid::Uuid;

use super::domain::{Action, Command, DomainError, PersonName, Quote, QuoteEvent, decide, evolve};
use crate::db::Unique;
use crate::eventstore::{
    AppendError, AppendRequest, Appended, EventStore, ExpectedVersion, Follower, Heads, HeadsFeed,
    Metadata, ReadError, RecordedEvent, SnapshotPolicy, Snapshots, Snapshotter,
};
use crate::kernel::{Actor, Envelope};

/// Why a command did not lead to events.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// A rule of the quote said no; the message is for the person.
    #[error(transparent)]
    Rejected(#[from] DomainError),
    /// The quote moved on since the page was rendered at `expected`.
    #[error("the quote is at version {actual}, the form was for version {expected}")]
    Stale { expected: i64, actual: i64 },
    #[error("the quote's events could not be read: {0}")]
    Corrupt(#[from] serde_json::Error),
    /// The store failed (or refused for a reason no rule of the quote explains).
    #[error(transparent)]
    Store(#[from] AppendError),
    /// The quote's history (archived, say) could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
}

impl From<sqlx::Error> for CommandError {
    fn from(error: sqlx::Error) -> Self {
        CommandError::Store(error.into())
    }
}

/// The event metadata of a command sent by `actor` in `envelope`.
fn metadata(envelope: &Envelope, actor: &str) -> Metadata {
    let mut metadata = Metadata::new(actor, envelope.at);
    metadata.request_id = envelope.request_id.clone();
    metadata.idempotency_key = envelope.idempotency_key.clone();
    metadata
}

/// How many fresh references a start tries before giving up.
const REFERENCE_ATTEMPTS: usize = 8;

/// How much a service's quote cache holds by default, in (estimated) bytes.
pub const CACHED_QUOTE_BYTES: u64 = 32 * 1024 * 1024;
/// What a cached quote weighs beyond its JSON size: the key, the `Arc`, the cache's
/// own bookkeeping, and strings' headers.
const ENTRY_OVERHEAD: u64 = 256;
/// How many streams the service remembers the feed's last word on, and for how
/// long: only a command that is kept after the feed told of its own append needs
/// it, a few milliseconds later. Forgetting only costs a read.
const TOLD_STREAMS: u64 = 10_000;
const TOLD_FOR: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct QuoteService {
    store: EventStore,
    /// Quotes by id, each as folded at its `version` (see the module's notes).
    cache: Cache,
    snapshots: Snapshots,
    snapshotter: Snapshotter<Quote>,
    /// What tells the service that a stream moved; without it every load reads.
    heads: Option<HeadsFeed>,
    /// What the feed last told of each stream lately.
    told: ToldHeads,
    /// How many times the service has read a stream.
    reads: Arc<AtomicU64>,
}

type Cache = moka::future::Cache<Uuid, Cached>;
type ToldHeads = moka::future::Cache<Uuid, Told>;

/// The feed's last word on a stream: it stood at `version` as of `epoch`.
#[derive(Clone, Copy)]
struct Told {
    version: i64,
    epoch: u64,
}

#[derive(Clone)]
struct Cached {
    quote: Arc<Quote>,
    /// Whether the quote was the stream's head when read, the heads feed live and
    /// silent from before that read until it was kept; the feed clears it when the
    /// stream moves.
    trusted: bool,
    /// The feed's epoch from before that read: trusted only while it is at or after
    /// the feed's last `Unknown` (the follower's `invalidate_all` may miss an entry
    /// written as it runs).
    read_at: u64,
}

impl Cached {
    /// Whether the quote may be answered without reading its stream.
    fn current(&self, heads: Option<&HeadsFeed>) -> bool {
        self.trusted
            && heads.is_some_and(|feed| feed.is_live() && self.read_at >= feed.last_unknown())
    }
}

/// The heads feed's follower: a stream that moved past its cached quote is read
/// again before it is shown; a quote cached at the very version the feed tells is
/// trusted (tellings come in commit order, so a later append to its stream is told
/// after, and distrusts it again); after a gap in what the feed knows, every quote
/// is read again.
struct FollowHeads {
    cache: Cache,
    told: ToldHeads,
}

impl Follower for FollowHeads {
    async fn follow(&self, heads: Heads, epoch: u64) {
        let moved = match heads {
            Heads::Moved(moved) => moved,
            Heads::Unknown => {
                self.cache.invalidate_all();
                self.told.invalidate_all();
                return;
            }
        };
        for (quote_id, version) in moved {
            // What was told first, the entry second: a `keep` between the two finds
            // the stream moved (see there).
            self.told.insert(quote_id, Told { version, epoch }).await;
            self.cache
                .entry(quote_id)
                .and_compute_with(|cached| async move {
                    let Some(cached) = cached else {
                        return Op::Nop;
                    };
                    let at = cached.value().quote.version as i64;
                    match cached.value().trusted {
                        true if at < version => Op::Put(Cached {
                            trusted: false,
                            ..cached.into_value()
                        }),
                        false if at == version => Op::Put(Cached {
                            trusted: true,
                            read_at: epoch,
                            ..cached.into_value()
                        }),
                        _ => Op::Nop,
                    }
                })
                .await;
        }
    }
}

impl QuoteService {
    /// A service with the default cache size and snapshot policy; call from within
    /// the tokio runtime (it starts the snapshot task).
    pub fn new(store: EventStore) -> Self {
        Self::configured(store, CACHED_QUOTE_BYTES, SnapshotPolicy::default())
    }

    /// A service whose quote cache holds at most `max_bytes` (estimated).
    pub fn with_cache_bytes(store: EventStore, max_bytes: u64) -> Self {
        Self::configured(store, max_bytes, SnapshotPolicy::default())
    }

    /// A service whose quote cache holds at most `max_bytes` (estimated) and which
    /// takes snapshots by `policy`.
    pub fn configured(store: EventStore, max_bytes: u64, policy: SnapshotPolicy) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(max_bytes)
            .weigher(|_id: &Uuid, cached: &Cached| {
                u32::try_from(weight(&cached.quote)).unwrap_or(u32::MAX)
            })
            .build();
        let snapshots = Snapshots::new(store.db().clone());
        let snapshotter = Snapshotter::spawn(snapshots.clone(), policy, Quote::SCHEMA_VERSION);
        QuoteService {
            store,
            cache,
            snapshots,
            snapshotter,
            heads: None,
            told: moka::future::Cache::builder()
                .max_capacity(TOLD_STREAMS)
                .time_to_live(TOLD_FOR)
                .build(),
            reads: Arc::default(),
        }
    }

    /// The same service, answering loads of the latest state from its cache while
    /// the heads feed it starts here says the cached quote is current (see the
    /// module's notes). Call from within the tokio runtime.
    pub fn following_heads(self) -> Self {
        let follower = FollowHeads {
            cache: self.cache.clone(),
            told: self.told.clone(),
        };
        let feed = HeadsFeed::spawn(self.store.db().clone(), follower);
        QuoteService {
            heads: Some(feed),
            ..self
        }
    }

    /// How many times the service has read a stream's events (a load that folded
    /// on from its cache or a snapshot, a comparison of versions).
    pub fn stream_reads(&self) -> u64 {
        self.reads.load(Ordering::Relaxed)
    }

    /// The heads feed the service follows, if it follows one.
    pub fn heads(&self) -> Option<&HeadsFeed> {
        self.heads.as_ref()
    }

    /// Whether a load of the latest state would be answered from memory now, the
    /// quote being cached and trusted.
    pub async fn would_answer_from_memory(&self, quote_id: Uuid) -> bool {
        self.cache
            .get(&quote_id)
            .await
            .is_some_and(|cached| cached.current(self.heads.as_ref()))
    }

    /// The feed's epoch before a read whose result may be trusted.
    fn epoch(&self) -> Option<u64> {
        self.heads.as_ref().map(HeadsFeed::epoch)
    }

    /// Returns once every snapshot offered so far has been written or passed over.
    pub async fn flush_snapshots(&self) {
        self.snapshotter.flush().await;
    }

    /// How many quotes are cached, and their estimated bytes, once the cache's
    /// pending evictions are done.
    pub async fn cached(&self) -> (u64, u64) {
        self.cache.run_pending_tasks().await;
        (self.cache.entry_count(), self.cache.weighted_size())
    }

    /// The quote as its events fold, or `None` if it was never started. With
    /// `up_to`, the quote as it stood after that version.
    #[tracing::instrument(skip(self))]
    pub async fn load(
        &self,
        quote_id: Uuid,
        up_to: Option<i64>,
    ) -> Result<Option<Quote>, CommandError> {
        let epoch = self.epoch();
        let cached = self.cache.get(&quote_id).await;
        let current = cached
            .as_ref()
            .is_some_and(|c| c.current(self.heads.as_ref()));
        let quote = match (cached.map(|c| (c.quote, current)), up_to) {
            // Before its first event a quote is nothing: nothing to read.
            (_, Some(version)) if version <= 0 => Quote::default(),
            // The quote at a version never changes.
            (Some((cached, _)), Some(version)) if version == cached.version as i64 => {
                Quote::clone(&cached)
            }
            // The stream's head, as far as the heads feed knows.
            (Some((cached, true)), None) => Quote::clone(&cached),
            (Some((cached, _)), up_to) if up_to.is_none_or(|v| v > cached.version as i64) => {
                self.fold_on(quote_id, Quote::clone(&cached), up_to, epoch)
                    .await?
            }
            _ => {
                let (start, outdated) = self.start_from_snapshot(quote_id, up_to).await?;
                let quote = self.fold_on(quote_id, start, up_to, epoch).await?;
                if outdated && quote.is_started() {
                    self.snapshotter.replace(
                        quote_id,
                        quote.version as i64,
                        Arc::new(quote.clone()),
                    );
                }
                quote
            }
        };
        Ok(quote.is_started().then_some(quote))
    }

    /// The quote as it stood after version `from`, and the events after it up to
    /// version `to`, each beside its stored form: what a comparison of two versions
    /// walks through. Archived events are read like any others.
    pub async fn history_between(
        &self,
        quote_id: Uuid,
        from: i64,
        to: i64,
    ) -> Result<(Quote, Vec<(RecordedEvent, QuoteEvent)>), CommandError> {
        let start = self.load(quote_id, Some(from)).await?.unwrap_or_default();
        let mut steps = Vec::new();
        self.reads.fetch_add(1, Ordering::Relaxed);
        for recorded in self
            .store
            .read_stream(quote_id, start.version as i64)
            .await?
        {
            if recorded.version > to {
                break;
            }
            let event = QuoteEvent::decode(&recorded)?;
            steps.push((recorded, event));
        }
        Ok((start, steps))
    }

    /// The quote of the newest snapshot at or below `up_to`, or the quote before its
    /// first event; and whether a snapshot was passed over for being of another
    /// shape (so that one of the current shape replaces it).
    async fn start_from_snapshot(
        &self,
        quote_id: Uuid,
        up_to: Option<i64>,
    ) -> Result<(Quote, bool), CommandError> {
        let Some(snapshot) = self.snapshots.newest(quote_id, up_to).await? else {
            return Ok((Quote::default(), false));
        };
        Ok(match snapshot.state_as::<Quote>(Quote::SCHEMA_VERSION) {
            Some(quote) if quote.version as i64 == snapshot.version => (quote, false),
            _ => (Quote::default(), true),
        })
    }

    /// `quote` with the stream's events after its version folded on, up to `up_to`;
    /// kept in the cache when that takes it further than it was.
    /// Folds the stream's events after `quote` (up to `up_to`) onto it. `epoch` is
    /// the heads feed's from before anything was read.
    async fn fold_on(
        &self,
        quote_id: Uuid,
        mut quote: Quote,
        up_to: Option<i64>,
        epoch: Option<u64>,
    ) -> Result<Quote, CommandError> {
        let from = quote.version;
        self.reads.fetch_add(1, Ordering::Relaxed);
        let events = self.store.read_stream(quote_id, from as i64).await?;
        let mut at_head = true;
        for recorded in &events {
            if up_to.is_some_and(|v| recorded.version > v) {
                at_head = false;
                break;
            }
            quote = evolve(quote, &QuoteEvent::decode(recorded)?);
        }
        let confirmed = epoch.filter(|_| at_head);
        if quote.version > from {
            self.offer_snapshot(quote_id, &quote);
        }
        if quote.version > from || confirmed.is_some() {
            self.keep(quote_id, &quote, confirmed).await;
        }
        Ok(quote)
    }

    fn offer_snapshot(&self, quote_id: Uuid, quote: &Quote) {
        if quote.is_started() {
            self.snapshotter
                .offer(quote_id, quote.version as i64, Arc::new(quote.clone()));
        }
    }

    /// Caches `quote` unless the cache holds a later version already, or the same
    /// one as trusted as this would be. It is trusted when it was the stream's head
    /// as the feed stood at `confirmed` and the feed is still there, live; or when
    /// the feed's last word on its stream, after its last `Unknown`, was this very
    /// version.
    async fn keep(&self, quote_id: Uuid, quote: &Quote, confirmed: Option<u64>) {
        if !quote.is_started() {
            return;
        }
        let version = quote.version;
        let quote = Arc::new(quote.clone());
        let heads = self.heads.clone();
        let told = self.told.clone();
        self.cache
            .entry(quote_id)
            .and_compute_with(|cached| async move {
                // Decided here, where the feed's follower cannot come between the
                // check and the entry (moka computes one key at a time). The
                // follower notes what it was told before it comes to the entry, so
                // a stream told moved on since is not taken at this version.
                let (trusted, read_at) = match (heads, confirmed) {
                    (Some(feed), Some(epoch)) if feed.epoch() == epoch && feed.is_live() => {
                        (true, epoch)
                    }
                    (Some(feed), _) => match told.get(&quote_id).await {
                        Some(told)
                            if told.version == version as i64
                                && told.epoch >= feed.last_unknown() =>
                        {
                            (true, told.epoch)
                        }
                        _ => (false, confirmed.unwrap_or_default()),
                    },
                    (None, _) => (false, confirmed.unwrap_or_default()),
                };
                match cached {
                    Some(cached) if cached.value().quote.version > version => Op::Nop,
                    Some(cached)
                        if cached.value().quote.version == version
                            && (!trusted
                                || (cached.value().trusted
                                    && cached.value().read_at >= read_at)) =>
                    {
                        Op::Nop
                    }
                    _ => Op::Put(Cached {
                        quote,
                        trusted,
                        read_at,
                    }),
                }
            })
            .await;
    }

    /// Starts a quote under a fresh reference (tried again on the rare clash with a
    /// reference already taken).
    #[tracing::instrument(skip_all, fields(quote_id = %quote_id))]
    pub async fn start(
        &self,
        quote_id: Uuid,
        command_actor: Actor,
        applicant_name: PersonName,
        envelope: &Envelope,
    ) -> Result<Appended, CommandError> {
        for _ in 0..REFERENCE_ATTEMPTS {
            let command = Command::new(
                command_actor.clone(),
                Action::Start {
                    reference: new_reference(),
                    applicant_name: applicant_name.clone(),
                },
            );
            match self.execute(quote_id, 0, command, envelope).await {
                Err(CommandError::Store(AppendError::UniqueViolation(Unique::QuoteReference))) => {
                    continue;
                }
                outcome => return outcome,
            }
        }
        Err(CommandError::Store(AppendError::UniqueViolation(
            Unique::QuoteReference,
        )))
    }

    /// Decides `command` on the quote as it stood at `expected_version` (the state the
    /// person saw) and appends on condition that it is still the latest. Deciding on
    /// the seen state lets a resubmitted form find its first outcome by its
    /// idempotency key instead of being judged against the state it produced.
    #[tracing::instrument(skip_all, fields(quote_id = %quote_id, expected_version))]
    pub async fn execute(
        &self,
        quote_id: Uuid,
        expected_version: i64,
        command: Command,
        envelope: &Envelope,
    ) -> Result<Appended, CommandError> {
        let seen = self
            .load(quote_id, Some(expected_version))
            .await?
            .unwrap_or_default();
        self.decide_and_append(quote_id, seen, expected_version, command, envelope)
            .await
            .map(|(appended, _)| appended)
    }

    /// `execute` for a caller that has just loaded the quote (`latest`): when the
    /// form was rendered from that very version, nothing is read again. Also returns
    /// the quote as the appended events leave it.
    #[tracing::instrument(skip_all, fields(quote_id = %quote_id, expected_version))]
    pub async fn execute_on(
        &self,
        quote_id: Uuid,
        latest: &Quote,
        expected_version: i64,
        command: Command,
        envelope: &Envelope,
    ) -> Result<(Appended, Quote), CommandError> {
        let seen = if latest.version as i64 == expected_version {
            latest.clone()
        } else {
            self.load(quote_id, Some(expected_version))
                .await?
                .unwrap_or_default()
        };
        self.decide_and_append(quote_id, seen, expected_version, command, envelope)
            .await
    }

    async fn decide_and_append(
        &self,
        quote_id: Uuid,
        seen: Quote,
        expected_version: i64,
        command: Command,
        envelope: &Envelope,
    ) -> Result<(Appended, Quote), CommandError> {
        if seen.version as i64 != expected_version {
            // The form claims a version the quote never had.
            return Err(CommandError::Stale {
                expected: expected_version,
                actual: seen.version as i64,
            });
        }
        let events = decide(&seen, &command)?;
        let request = AppendRequest {
            stream_id: quote_id,
            expected: ExpectedVersion::from(expected_version),
            events: events.iter().map(QuoteEvent::encode).collect(),
            metadata: metadata(envelope, &command.actor.username),
        };
        // Before the append: the feed telling anything after this (this very append
        // included) leaves the quote kept below untrusted until it is read again.
        let epoch = self.epoch();
        let appended = match self.store.append(request).await {
            Ok(appended) => {
                if let Some(feed) = &self.heads {
                    feed.appended_here();
                }
                appended
            }
            Err(AppendError::Conflict { actual, .. }) => {
                return Err(CommandError::Stale {
                    expected: expected_version,
                    actual,
                });
            }
            Err(error) => return Err(CommandError::Store(error)),
        };
        // What was stored, not what was decided now: a repeated key returns the
        // first outcome, whose events may differ.
        let follows_seen = appended
            .events()
            .iter()
            .zip(expected_version + 1..)
            .all(|(recorded, version)| recorded.version == version);
        let after = if follows_seen {
            let mut after = seen;
            for recorded in appended.events() {
                after = evolve(after, &QuoteEvent::decode(recorded)?);
            }
            self.offer_snapshot(quote_id, &after);
            self.keep(quote_id, &after, epoch).await;
            after
        } else {
            // A key first used with a form of another version: its events do not
            // follow the quote decided on, so fold what the store has instead.
            let last = appended.last_version().unwrap_or(expected_version);
            self.fold_on(quote_id, Quote::default(), Some(last), None)
                .await?
        };
        Ok((appended, after))
    }
}

/// A quote's estimated size in memory: its JSON size (counted, not collected) and the
/// entry's overhead.
fn weight(quote: &Quote) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0 += bytes.len() as u64;
            Ok(bytes.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    // Serialising a quote cannot fail (no maps with non-string keys); a failure
    // would only make the estimate smaller.
    let _ = serde_json::to_writer(&mut count, quote);
    count.0 + ENTRY_OVERHEAD
}

/// `Q-` and six characters of Crockford's base 32 (no I, L, O, U): short enough to
/// read over the phone, unambiguous when typed.
pub fn new_reference() -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let mut rng = rand::rng();
    let code: String = (0..6)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect();
    format!("Q-{code}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_are_q_and_six_unambiguous_characters() {
        for _ in 0..1000 {
            let reference = new_reference();
            assert_eq!(reference.len(), 8);
            assert!(reference.starts_with("Q-"));
            assert!(
                reference[2..]
                    .chars()
                    .all(|c| c.is_ascii_digit() || (c.is_ascii_uppercase() && !"ILOU".contains(c)))
            );
        }
    }
}
