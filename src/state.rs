//! What every request handler may need, opened once at start-up.

use std::sync::Arc;

use crate::audit::TimelineProjection;
use crate::audit::signing::InstallationKey;
use crate::db::Db;
use crate::eventstore::{EventStore, Projector, Rebuildable, SnapshotPolicy};
use crate::identity::sessions::{SessionCache, SessionSettings};
use crate::identity::{Sessions, SignInLimits, UsersProjection, attempts, people};
use crate::quoting::projection::QuoteProjector;
use crate::quoting::service::CACHED_QUOTE_BYTES;
use crate::quoting::{QuoteService, QuoteSummaryProjection};
use crate::underwriting::queue::{ApprovalQueueProjection, DrawnPages};

/// What every handler may need, shared: a clone is one reference count, however
/// many pools, caches and handles it holds. Requests clone it several times each
/// (every handler and every middleware with state): cloning each member instead
/// cost a seventh of a static file's instructions.
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The members of [`AppState`].
#[derive(Clone)]
pub struct Shared {
    pub db: Db,
    pub store: EventStore,
    pub quotes: QuoteService,
    pub sessions: Sessions,
    /// Per client address, how many failed sign-ins it may still make.
    pub sign_ins: SignInLimits,
    /// The bearer token that reads `/metrics` from elsewhere than this machine.
    pub metrics_token: Option<Arc<str>>,
    /// The installation's key, which signs exported proofs; none until
    /// `quoteline keys init` made one.
    pub signing_key: Option<Arc<InstallationKey>>,
    /// Approval queue pages as last drawn for each session.
    pub queue_pages: DrawnPages,
}

/// The sizes of a process's caches. The signed-in users' cache is the process's own
/// (`identity::UserCache::shared`), not the state's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Caches {
    pub sessions: SessionCache,
    /// The quote service's folded quotes, in estimated bytes.
    pub quote_bytes: u64,
}

impl Default for Caches {
    fn default() -> Self {
        Caches {
            sessions: SessionCache::default(),
            quote_bytes: CACHED_QUOTE_BYTES,
        }
    }
}

/// Every read model of quotes, kept inline with the appends: `quote_summary`, the
/// approval queue and the audit timeline.
pub fn quote_projector() -> QuoteProjector {
    QuoteProjector::new(vec![
        Arc::new(QuoteSummaryProjection::default()),
        Arc::new(ApprovalQueueProjection::default()),
        Arc::new(TimelineProjection::default()),
    ])
}

/// Every projection kept from the log that `quoteline rebuild` can replay: the
/// quotes' and the people's (`users`).
pub fn rebuildable() -> Vec<Arc<dyn Rebuildable>> {
    vec![
        Arc::new(quote_projector()),
        Arc::new(UsersProjection::default()),
    ]
}

/// How a process keeps state from the log: its caches, and when it takes snapshots.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Settings {
    pub caches: Caches,
    pub snapshots: SnapshotPolicy,
    /// Whether loads answer from the quote cache while the heads feed says it is
    /// current (`QuoteService::following_heads`); the server's setting. Off, every
    /// load reads the events after the cached version.
    pub follow_heads: bool,
}

impl AppState {
    /// Applies migrations and starts the event store with every projection that
    /// must be kept in the append's transaction.
    pub async fn open(db: Db) -> anyhow::Result<AppState> {
        Self::open_configured(db, Settings::default()).await
    }

    /// [`AppState::open`] with caches of these sizes.
    pub async fn open_with(db: Db, caches: Caches) -> anyhow::Result<AppState> {
        Self::open_configured(
            db,
            Settings {
                caches,
                ..Settings::default()
            },
        )
        .await
    }

    /// [`AppState::open`] with these settings.
    pub async fn open_configured(db: Db, settings: Settings) -> anyhow::Result<AppState> {
        let Settings {
            caches,
            snapshots,
            follow_heads,
        } = settings;
        db.migrate().await?;
        let projector = quote_projector();
        // Before the store's writer starts: a projection that is new or behind
        // catches up from its checkpoint, then stays current inline.
        projector.catch_up(&db).await?;
        let users = UsersProjection::default();
        users.catch_up(&db).await?;
        let projectors: Vec<Arc<dyn Projector>> = vec![Arc::new(projector), Arc::new(users)];
        let store = EventStore::new(db.clone(), projectors);
        // People added before they were events get their PersonAdded now.
        people::import_unrecorded(&store).await?;
        let quotes = QuoteService::configured(store.clone(), caches.quote_bytes, snapshots);
        let quotes = if follow_heads {
            quotes.following_heads()
        } else {
            quotes
        };
        let sessions = Sessions::open_with(&db, caches.sessions).await?;
        sessions.spawn_expired_deletion();
        attempts::spawn_pruning(db.clone());
        Ok(AppState(Arc::new(Shared {
            db,
            store,
            quotes,
            sessions,
            sign_ins: SignInLimits::from_env(),
            metrics_token: None,
            signing_key: None,
            queue_pages: DrawnPages::default(),
        })))
    }

    /// The same state with one member changed (its other holders keep theirs).
    fn changed(self, change: impl FnOnce(&mut Shared)) -> AppState {
        let mut shared = Arc::unwrap_or_clone(self.0);
        change(&mut shared);
        AppState(Arc::new(shared))
    }

    /// The same state with `/metrics` readable with this bearer token too.
    pub fn with_metrics_token(self, token: Option<String>) -> AppState {
        self.changed(|shared| {
            shared.metrics_token = token.filter(|t| !t.is_empty()).map(Arc::from);
        })
    }

    /// The same state signing proofs with this key.
    pub fn with_signing_key(self, key: Option<InstallationKey>) -> AppState {
        self.changed(|shared| shared.signing_key = key.map(Arc::new))
    }

    /// The same state with sessions kept by `settings` (their cookie, their lifetime).
    pub fn with_session_settings(self, settings: SessionSettings) -> AppState {
        self.changed(|shared| shared.sessions = shared.sessions.clone().with_settings(settings))
    }

    /// The same state limiting failed sign-ins by these limits.
    pub fn with_sign_in_limits(self, limits: SignInLimits) -> AppState {
        self.changed(|shared| shared.sign_ins = limits)
    }
}
