//! Server-side sessions in the application's database (tower-sessions), expiring after
//! 30 minutes without activity and, signed in, a fixed time after sign-in however
//! busy (12 hours by default); how their cookie is set; and the keys quoteline keeps
//! in them.
//!
//! Each process keeps the sessions it has seen lately in memory, in front of the
//! database (`CachingSessionStore`: a moka store before the sqlx store), so a
//! signed-in request does not read its session row. The database stays the truth
//! between processes sharing it:
//!
//! - A cached session is read from the database again at most
//!   [`SessionCache::time_to_live`] after it was put in the cache (saves do not
//!   extend that). So a session ended by sign-out in another process still opens
//!   pages here for at most that long (5 seconds by default); sign-out in this
//!   process ends it at once, in the cache as in the database.
//! - A save never writes back a session that the database no longer has (ended
//!   elsewhere, or expired and deleted): the sqlx store's save is an upsert, and
//!   without this check a renewal in another process could bring a signed-out
//!   session back for its full 30 minutes.
//! - Session data written in one process may be unseen in another for the same
//!   time. quoteline's keys are written at sign-in (a new session id, which no
//!   cache holds yet) and for renewal, where a stale copy costs at most an early
//!   renewal.
//!
//! A signed-out visitor has no session: the sign-in form is protected without one
//! (`signed_out::FormSigner`, whose key this opens and puts into every request).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::{Extension, Router};
use tower_sessions::cookie::SameSite;
use tower_sessions::cookie::time::{self, OffsetDateTime};
use tower_sessions::session::{Id, Record};
use tower_sessions::session_store::{self, ExpiredDeletion};
use tower_sessions::{CachingSessionStore, Expiry, Session, SessionManagerLayer, SessionStore};
use tower_sessions_moka_store::MokaStore;
use tower_sessions_sqlx_store::{PostgresStore, SqliteStore};

use super::signed_out::FormSigner;
use crate::db::{Backend, Db};
use crate::on_backend;

/// A session ends after this long without a request that renews it.
pub const INACTIVITY_LIMIT: time::Duration = time::Duration::minutes(30);
/// A signed-in session ends this long after sign-in unless configured otherwise.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// A signed-in request renews its session at most this often, so that reading pages
/// does not cost a session write each time.
pub const RENEW_AFTER_SECONDS: i64 = 60;
const TABLE: &str = "sessions";
const DELETE_EXPIRED_EVERY: Duration = Duration::from_secs(5 * 60);

/// Session keys.
pub const USER_ID: &str = "user_id";
/// The signed-in person's session epoch when the session was given to them: the
/// session is theirs while it is still their epoch.
pub const SESSION_EPOCH: &str = "session_epoch";
pub const CSRF_TOKEN: &str = "csrf_token";
pub const RENEWED_AT: &str = "renewed_at";
pub const SIGNED_IN_AT: &str = "signed_in_at";

/// The session cookie's name over plain HTTP.
pub const COOKIE: &str = "quoteline_session";
/// Its name over HTTPS. A browser keeps a `__Host-` cookie only when it is Secure,
/// for path `/` and for this host alone, so no page on plain HTTP or on a sibling
/// subdomain can set one that shadows it.
pub const SECURE_COOKIE: &str = "__Host-quoteline_session";

/// How many sessions a process keeps in memory, and for how long at most before it
/// reads one from the database again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionCache {
    pub capacity: u64,
    pub time_to_live: Duration,
}

impl Default for SessionCache {
    /// 10,000 sessions (a few hundred bytes each), 5 seconds: how long a sign-out in
    /// another process may take to be seen here.
    fn default() -> Self {
        SessionCache {
            capacity: 10_000,
            time_to_live: Duration::from_secs(5),
        }
    }
}

/// How a process keeps sessions: their cookie, and how long a signed-in one lasts.
#[derive(Clone, Debug)]
pub struct SessionSettings {
    /// The app is reached over HTTPS (itself or behind a proxy): the cookie is
    /// Secure and named [`SECURE_COOKIE`], and every response carries
    /// Strict-Transport-Security (`app::middleware`).
    pub secure: bool,
    /// A signed-in session ends this long after sign-in, however busy it is.
    pub lifetime: Duration,
    /// Where the age of a session is read.
    pub clock: Clock,
}

impl SessionSettings {
    /// The settings for a server listening on `address`: secure unless that is a
    /// loopback address, which browsers reach over plain `http://localhost`.
    pub fn for_address(address: SocketAddr) -> SessionSettings {
        SessionSettings {
            secure: !address.ip().is_loopback(),
            ..SessionSettings::default()
        }
    }

    pub fn cookie_name(&self) -> &'static str {
        if self.secure { SECURE_COOKIE } else { COOKIE }
    }
}

impl Default for SessionSettings {
    /// Those of the default address, 127.0.0.1: plain HTTP, 12 hours, the system
    /// clock.
    fn default() -> Self {
        SessionSettings {
            secure: false,
            lifetime: DEFAULT_LIFETIME,
            clock: Clock::system(),
        }
    }
}

/// The time in whole seconds since the Unix epoch: the system's, or a test's.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> i64 + Send + Sync>);

impl Clock {
    pub fn system() -> Clock {
        Clock::from_fn(|| chrono::Utc::now().timestamp())
    }

    pub fn from_fn(now: impl Fn() -> i64 + Send + Sync + 'static) -> Clock {
        Clock(Arc::new(now))
    }

    pub fn now(&self) -> i64 {
        (self.0)()
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// The session store for the database's backend, and how its cookie is set.
#[derive(Clone, Debug)]
pub struct Sessions {
    store: Backend<SqliteStore, PostgresStore>,
    cache: Recent,
    settings: SessionSettings,
    form_signer: FormSigner,
}

impl Sessions {
    /// Creates the session table when missing. On PostgreSQL it goes into the
    /// connection's current schema (the first on its search_path), beside our tables.
    /// With the default settings; see [`Sessions::with_settings`].
    pub async fn open(db: &Db) -> anyhow::Result<Sessions> {
        Self::open_with(db, SessionCache::default()).await
    }

    /// [`Sessions::open`] with a cache of this size and time to live.
    pub async fn open_with(db: &Db, cache: SessionCache) -> anyhow::Result<Sessions> {
        let store = match db {
            Backend::Sqlite(pool) => {
                let store = SqliteStore::new(pool.clone())
                    .with_table_name(TABLE)
                    .map_err(anyhow::Error::msg)?;
                store.migrate().await?;
                Backend::Sqlite(store)
            }
            Backend::Postgres(pool) => {
                let schema: String = sqlx::query_scalar("SELECT current_schema()")
                    .fetch_one(pool)
                    .await?;
                let store = PostgresStore::new(pool.clone())
                    .with_schema_name(&schema)
                    .and_then(|store| store.with_table_name(TABLE))
                    .map_err(anyhow::Error::msg)?;
                store.migrate().await?;
                Backend::Postgres(store)
            }
        };
        Ok(Sessions {
            store,
            cache: Recent::new(cache),
            settings: SessionSettings::default(),
            form_signer: FormSigner::open(db, SessionSettings::default().secure).await?,
        })
    }

    /// The same store with its cookie set and its sessions timed by `settings`.
    pub fn with_settings(self, settings: SessionSettings) -> Sessions {
        Sessions {
            form_signer: self.form_signer.with_secure_cookies(settings.secure),
            settings,
            ..self
        }
    }

    pub fn settings(&self) -> &SessionSettings {
        &self.settings
    }

    /// Whether this signed-in session began longer ago than the lifetime allows.
    pub async fn has_outlived(
        &self,
        session: &Session,
    ) -> Result<bool, tower_sessions::session::Error> {
        let signed_in_at: Option<i64> = session.get(SIGNED_IN_AT).await?;
        let lifetime = i64::try_from(self.settings.lifetime.as_secs()).unwrap_or(i64::MAX);
        Ok(signed_in_at.is_some_and(|at| self.settings.clock.now().saturating_sub(at) >= lifetime))
    }

    /// What signs and checks signed-out visitors' form tokens.
    pub fn form_signer(&self) -> &FormSigner {
        &self.form_signer
    }

    /// Deletes expired sessions every few minutes, for as long as the runtime lives.
    pub fn spawn_expired_deletion(&self) {
        on_backend!(&self.store, store => {
            let store = store.clone();
            tokio::spawn(async move {
                if let Err(error) = store.continuously_delete_expired(DELETE_EXPIRED_EVERY).await {
                    tracing::warn!(%error, "stopped deleting expired sessions");
                }
            });
        })
    }

    /// Wraps `router` in the session layer of this backend's store, behind the cache,
    /// and gives every request the form signer.
    pub fn layer(&self, router: Router) -> Router {
        let router = on_backend!(&self.store, store => {
            let cached = cached(self.cache.clone(), store.clone());
            router.layer(self.configure(SessionManagerLayer::new(cached)))
        });
        router.layer(Extension(self.form_signer.clone()))
    }

    fn configure<S: SessionStore + Clone>(
        &self,
        layer: SessionManagerLayer<S>,
    ) -> SessionManagerLayer<S> {
        layer
            .with_name(self.settings.cookie_name())
            .with_path("/")
            .with_http_only(true)
            .with_same_site(SameSite::Lax)
            .with_secure(self.settings.secure)
            .with_expiry(Expiry::OnInactivity(INACTIVITY_LIMIT))
    }
}

/// `store` behind a cache of recent sessions (see the module's notes).
fn cached<S: SessionStore>(cache: Recent, store: S) -> CachingSessionStore<Recent, Existing<S>> {
    CachingSessionStore::new(cache, Existing(store))
}

/// The moka store, keeping each session at most the cache's time to live from when
/// it was put in (by sign-in or a read from the database); a save keeps that
/// deadline. Each record is stored with its expiry date brought forward to the
/// deadline, which the moka store expires it by; a session loaded from the cache
/// takes its expiry from the session layer's configuration when saved, never from
/// the loaded record, so the shortened date goes nowhere else.
#[derive(Clone, Debug)]
struct Recent {
    moka: MokaStore,
    time_to_live: time::Duration,
}

impl Recent {
    fn new(cache: SessionCache) -> Recent {
        Recent {
            moka: MokaStore::new(Some(cache.capacity)),
            time_to_live: time::Duration::try_from(cache.time_to_live)
                .unwrap_or(time::Duration::ZERO),
        }
    }

    async fn keep(&self, record: &Record, deadline: OffsetDateTime) -> session_store::Result<()> {
        let mut kept = record.clone();
        kept.expiry_date = kept.expiry_date.min(deadline);
        self.moka.save(&kept).await
    }
}

#[async_trait]
impl SessionStore for Recent {
    /// The store behind has chosen the id (`CachingSessionStore` creates there
    /// first), so it is kept as it is.
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        self.keep(record, OffsetDateTime::now_utc() + self.time_to_live)
            .await
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        let deadline = match self.moka.load(&record.id).await? {
            Some(cached) => cached.expiry_date,
            None => OffsetDateTime::now_utc() + self.time_to_live,
        };
        self.keep(record, deadline).await
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        self.moka.load(id).await
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.moka.delete(id).await
    }
}

/// A store that saves only sessions it still has: a session ended in another
/// process (or expired and deleted) is not written back by a save from a process
/// that still had it cached. Costs one read by primary key per save; saves are rare
/// (sign-in creates, and renewal saves at most once a minute).
#[derive(Clone, Debug)]
struct Existing<S>(S);

#[async_trait]
impl<S: SessionStore> SessionStore for Existing<S> {
    async fn create(&self, record: &mut Record) -> session_store::Result<()> {
        self.0.create(record).await
    }

    async fn save(&self, record: &Record) -> session_store::Result<()> {
        if self.0.load(&record.id).await?.is_some() {
            self.0.save(record).await
        } else {
            tracing::info!("not saving a session that has ended");
            Ok(())
        }
    }

    async fn load(&self, id: &Id) -> session_store::Result<Option<Record>> {
        self.0.load(id).await
    }

    async fn delete(&self, id: &Id) -> session_store::Result<()> {
        self.0.delete(id).await
    }
}

/// The session of a request, put there by the session layer.
pub fn of(parts: &axum::http::request::Parts) -> anyhow::Result<Session> {
    parts
        .extensions
        .get::<Session>()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no session: the session layer is missing"))
}

/// Renews the session's expiry (by modifying it, which makes the layer save it) when
/// its last renewal is more than a minute old. The first renewal of a signed-in
/// session, at sign-in, starts its lifetime.
pub async fn renew(session: &Session, now: i64) -> Result<(), tower_sessions::session::Error> {
    if session.get::<i64>(SIGNED_IN_AT).await?.is_none() {
        session.insert(SIGNED_IN_AT, now).await?;
    }
    let renewed_at: Option<i64> = session.get(RENEWED_AT).await?;
    if renewed_at.is_none_or(|at| now - at >= RENEW_AFTER_SECONDS) {
        session.insert(RENEWED_AT, now).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tower_sessions::MemoryStore;

    use super::*;

    /// Two processes' caches over one database (a memory store here).
    fn two_processes(
        time_to_live: Duration,
    ) -> (
        MemoryStore,
        impl SessionStore + Clone,
        impl SessionStore + Clone,
    ) {
        let database = MemoryStore::default();
        let cache = SessionCache {
            capacity: 100,
            time_to_live,
        };
        let a = cached(Recent::new(cache), database.clone());
        let b = cached(Recent::new(cache), database.clone());
        (database, a, b)
    }

    fn signed_in_record() -> Record {
        Record {
            id: Id::default(),
            data: [(USER_ID.to_owned(), serde_json::json!("someone"))].into(),
            expiry_date: OffsetDateTime::now_utc() + INACTIVITY_LIMIT,
        }
    }

    #[tokio::test]
    async fn a_session_deleted_here_is_gone_from_the_cache_at_once() {
        let (database, a, _) = two_processes(Duration::from_secs(60));
        let mut record = signed_in_record();
        a.create(&mut record).await.unwrap();
        assert!(a.load(&record.id).await.unwrap().is_some());

        a.delete(&record.id).await.unwrap();

        assert_eq!(a.load(&record.id).await.unwrap(), None);
        assert_eq!(database.load(&record.id).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_session_ended_in_another_process_closes_here_within_the_time_to_live() {
        let time_to_live = Duration::from_millis(500);
        let (database, a, b) = two_processes(time_to_live);
        let mut record = signed_in_record();
        a.create(&mut record).await.unwrap();
        let seen_by_b = b.load(&record.id).await.unwrap().expect("b reads it");
        assert_eq!(seen_by_b.data, record.data);

        a.delete(&record.id).await.unwrap();
        // The documented limit: b's cache still has it for a moment...
        assert!(b.load(&record.id).await.unwrap().is_some());
        // ...but a save from b (a renewal) does not write it back to the database,
        tokio::time::sleep(time_to_live * 3 / 5).await;
        b.save(&seen_by_b).await.unwrap();
        assert_eq!(database.load(&record.id).await.unwrap(), None);
        // and the save did not extend its time in b's cache either.
        tokio::time::sleep(time_to_live * 3 / 5).await;
        assert_eq!(b.load(&record.id).await.unwrap(), None);
        assert_eq!(a.load(&record.id).await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_live_session_is_saved_and_read_back_through_the_cache() {
        let (database, a, b) = two_processes(Duration::from_secs(60));
        let mut record = signed_in_record();
        a.create(&mut record).await.unwrap();

        record
            .data
            .insert(RENEWED_AT.to_owned(), serde_json::json!(42));
        a.save(&record).await.unwrap();

        assert_eq!(
            database.load(&record.id).await.unwrap().unwrap().data,
            record.data
        );
        assert_eq!(a.load(&record.id).await.unwrap().unwrap().data, record.data);
        assert_eq!(b.load(&record.id).await.unwrap().unwrap().data, record.data);
    }
}
