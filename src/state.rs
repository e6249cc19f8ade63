//! What every request handler may need, opened once at start-up.

use std::sync::Arc;

use crate::audit::TimelineProjection;
use crate::db::Db;
use crate::eventstore::{EventStore, Projector};
use crate::identity::Sessions;
use crate::identity::sessions::{SessionCache, SessionSettings};
use crate::quoting::projection::QuoteProjector;
use crate::quoting::service::CACHED_QUOTE_BYTES;
use crate::quoting::{QuoteService, QuoteSummaryProjection};
use crate::underwriting::queue::ApprovalQueueProjection;

/// Cheap to clone: pools and handles.
#[derive(Clone)]
pub struct AppState {
    pub db: Db,
    pub store: EventStore,
    pub quotes: QuoteService,
    pub sessions: Sessions,
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

impl AppState {
    /// Applies migrations and starts the event store with every projection that
    /// must be kept in the append's transaction.
    pub async fn open(db: Db) -> anyhow::Result<AppState> {
        Self::open_with(db, Caches::default()).await
    }

    /// [`AppState::open`] with caches of these sizes.
    pub async fn open_with(db: Db, caches: Caches) -> anyhow::Result<AppState> {
        db.migrate().await?;
        let projectors: Vec<Arc<dyn Projector>> = vec![Arc::new(QuoteProjector::new(vec![
            Arc::new(QuoteSummaryProjection),
            Arc::new(ApprovalQueueProjection),
            Arc::new(TimelineProjection),
        ]))];
        let store = EventStore::new(db.clone(), projectors);
        let quotes = QuoteService::with_cache_bytes(store.clone(), caches.quote_bytes);
        let sessions = Sessions::open_with(&db, caches.sessions).await?;
        sessions.spawn_expired_deletion();
        Ok(AppState {
            db,
            store,
            quotes,
            sessions,
        })
    }

    /// The same state with sessions kept by `settings` (their cookie, their lifetime).
    pub fn with_session_settings(self, settings: SessionSettings) -> AppState {
        AppState {
            sessions: self.sessions.with_settings(settings),
            ..self
        }
    }
}
