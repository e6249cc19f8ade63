//! Events copied as they were recorded into another store (`quoteline replay`): the
//! same ids, versions, times, hashes and positions, so that the copy's chains verify
//! and its pages name events by the positions the original shows.

use super::batch::upsert_heads;
use super::model::RecordedEvent;
use super::sql::push_event_values;
use crate::db::{Backend, Conn};
use crate::on_backend;

/// Rows per INSERT: 12 parameters each stays far below both backends' limits.
const ROWS_PER_INSERT: usize = 1_000;

/// Inserts `events` (each stream's in version order, following what the store holds
/// of it) with their own positions, and moves each stream's head, inside the
/// caller's transaction.
pub async fn copy_in(mut conn: Conn<'_>, events: &[RecordedEvent]) -> Result<(), sqlx::Error> {
    let overriding = match &conn {
        Backend::Sqlite(_) => "",
        // The identity column is GENERATED ALWAYS: a given position must say so.
        Backend::Postgres(_) => " OVERRIDING SYSTEM VALUE",
    };
    for rows in events.chunks(ROWS_PER_INSERT) {
        on_backend!(conn.reborrow(), c => {
            let mut insert = sqlx::QueryBuilder::new(format!(
                "INSERT INTO events (position, stream_id, version, event_id, event_type, \
                 schema_version, payload, actor, recorded_at, request_id, prev_hash, hash){overriding} "
            ));
            insert.push_values(rows, |mut row, e| {
                row.push_bind(e.global.position);
                push_event_values!(row, e);
            });
            insert.build().execute(&mut *c).await?;
        });
    }
    upsert_heads(conn, events.iter()).await
}

/// After positions were given explicitly: the next event appended takes the
/// position after the highest (PostgreSQL's identity sequence does not follow
/// explicit values on its own; SQLite's AUTOINCREMENT does).
pub async fn follow_positions(conn: Conn<'_>) -> Result<(), sqlx::Error> {
    if let Backend::Postgres(c) = conn {
        sqlx::query(
            "SELECT setval(pg_get_serial_sequence('events', 'position'), \
             COALESCE((SELECT MAX(position) FROM events), 0) + 1, false)",
        )
        .execute(&mut *c)
        .await?;
    }
    Ok(())
}
