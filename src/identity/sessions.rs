//! Server-side sessions in the application's database (tower-sessions), expiring after
//! 30 minutes without activity, and the keys quoteline keeps in them.

use std::time::Duration;

use axum::Router;
use tower_sessions::cookie::SameSite;
use tower_sessions::cookie::time;
use tower_sessions::session_store::ExpiredDeletion;
use tower_sessions::{Expiry, Session, SessionManagerLayer, SessionStore};
use tower_sessions_sqlx_store::{PostgresStore, SqliteStore};

use crate::db::{Backend, Db};
use crate::on_backend;

/// A session ends after this long without a request that renews it.
pub const INACTIVITY_LIMIT: time::Duration = time::Duration::minutes(30);
/// A signed-in request renews its session at most this often, so that reading pages
/// does not cost a session write each time.
pub const RENEW_AFTER_SECONDS: i64 = 60;
const TABLE: &str = "sessions";
const DELETE_EXPIRED_EVERY: Duration = Duration::from_secs(5 * 60);

/// Session keys.
pub const USER_ID: &str = "user_id";
pub const CSRF_TOKEN: &str = "csrf_token";
pub const RENEWED_AT: &str = "renewed_at";

/// The session store for the database's backend, and how its cookie is set.
#[derive(Clone, Debug)]
pub struct Sessions {
    store: Backend<SqliteStore, PostgresStore>,
    secure_cookies: bool,
}

impl Sessions {
    /// Creates the session table when missing. On PostgreSQL it goes into the
    /// connection's current schema (the first on its search_path), beside our tables.
    /// Cookies are marked Secure when `QUOTELINE_SECURE_COOKIES=1`, for a deployment
    /// behind HTTPS; off by default because the app is served on http://localhost.
    pub async fn open(db: &Db) -> anyhow::Result<Sessions> {
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
        let secure_cookies = std::env::var("QUOTELINE_SECURE_COOKIES").is_ok_and(|v| v == "1");
        Ok(Sessions {
            store,
            secure_cookies,
        })
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

    /// Wraps `router` in the session layer of this backend's store.
    pub fn layer(&self, router: Router) -> Router {
        on_backend!(&self.store, store => router.layer(self.configure(SessionManagerLayer::new(store.clone()))))
    }

    fn configure<S: SessionStore + Clone>(
        &self,
        layer: SessionManagerLayer<S>,
    ) -> SessionManagerLayer<S> {
        layer
            .with_name("quoteline_session")
            .with_http_only(true)
            .with_same_site(SameSite::Lax)
            .with_secure(self.secure_cookies)
            .with_expiry(Expiry::OnInactivity(INACTIVITY_LIMIT))
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
/// its last renewal is more than a minute old.
pub async fn renew(session: &Session, now: i64) -> Result<(), tower_sessions::session::Error> {
    let renewed_at: Option<i64> = session.get(RENEWED_AT).await?;
    if renewed_at.is_none_or(|at| now - at >= RENEW_AFTER_SECONDS) {
        session.insert(RENEWED_AT, now).await?;
    }
    Ok(())
}
