//! What every request handler may need, opened once at start-up.

use std::sync::Arc;

use crate::audit::TimelineProjection;
use crate::db::Db;
use crate::eventstore::{EventStore, Projector};
use crate::identity::Sessions;
use crate::quoting::projection::QuoteProjector;
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

impl AppState {
    /// Applies migrations and starts the event store with every projection that
    /// must be kept in the append's transaction.
    pub async fn open(db: Db) -> anyhow::Result<AppState> {
        db.migrate().await?;
        let projectors: Vec<Arc<dyn Projector>> = vec![Arc::new(QuoteProjector::new(vec![
            Arc::new(QuoteSummaryProjection),
            Arc::new(ApprovalQueueProjection),
            Arc::new(TimelineProjection),
        ]))];
        let store = EventStore::new(db.clone(), projectors);
        let quotes = QuoteService::new(store.clone());
        let sessions = Sessions::open(&db).await?;
        sessions.spawn_expired_deletion();
        Ok(AppState {
            db,
            store,
            quotes,
            sessions,
        })
    }
}
