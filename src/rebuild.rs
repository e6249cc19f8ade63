//! `quoteline rebuild`: projections replayed from the whole log into shadow tables
//! while the app keeps serving, caught up with what was written meanwhile, and
//! swapped in within one short transaction.
//!
//! 1. One rebuild at a time across all processes: an advisory lock on PostgreSQL
//!    (held by a connection of its own, gone with it), a lock row on SQLite (taken
//!    over when its holder has not beaten for a minute).
//! 2. Each projection's tables get a shadow copy (`quote_summary__rebuild`, …), made
//!    from the live table's own definition, indexes and constraints included; the
//!    projections write to it under their own checkpoints (`quote_summary__rebuild`).
//! 3. The shadow projections are filled from the first event by each projector's
//!    [`Fill`]: a page per transaction on one connection (on SQLite with a 256 MiB
//!    page cache), while a reader on another connection reads the next page. A
//!    quote's rows that every event changes (its summary, its place in the queue,
//!    its folded state) are kept in memory and written once at the end, in key
//!    order; rows no later event changes (the timeline's) are written page by page.
//!    The live projections keep being written inline meanwhile. The shadows'
//!    secondary indexes are built after that, over all their rows at once, and the
//!    shadows catch up again.
//! 4. The swap: one write transaction that shuts appends out (SQLite's write lock; on
//!    PostgreSQL an EXCLUSIVE lock on `events`, which readers pass), applies the few
//!    events written since the last page, drops the live tables, renames the shadows
//!    into their place, and hands the live checkpoints the shadows' positions.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::db::{Backend, Conn, Db, Tables, rename_identifiers};
use crate::eventstore::checkpoints::{self, CATCH_UP_PAGE};
use crate::eventstore::{
    CatchUpError, Projector, ReadError, Rebuildable, Together, catch_up, clear_part, event_count,
    fill,
};
use crate::lock::{LockError, MaintenanceLock};
use crate::state::rebuildable;

/// What a rebuild did.
#[derive(Debug, Clone, PartialEq)]
pub struct Rebuilt {
    pub projections: Vec<&'static str>,
    /// Events replayed into the shadow tables, the swap's own included.
    pub events: u64,
    pub took: Duration,
}

impl Rebuilt {
    pub fn events_per_second(&self) -> f64 {
        self.events as f64 / self.took.as_secs_f64().max(1e-9)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error(transparent)]
    Busy(#[from] LockError),
    #[error("there is no projection named {name:?}; the projections are {known}")]
    Unknown { name: String, known: String },
    #[error(transparent)]
    CatchUp(#[from] CatchUpError),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Read(#[from] ReadError),
}

/// Events per page (and transaction) while the shadow tables fill. Larger pages cost
/// memory (up to three are held at once: one applied, one waiting, one being read)
/// and gain little, now that a quote's rows are kept in memory between pages.
const PAGE: i64 = 20_000;

/// Rebuilds every projection, or only the one named `only`. `progress` hears the
/// events replayed so far and the number of events in the store when it started.
pub async fn rebuild(
    db: &Db,
    only: Option<&str>,
    progress: impl FnMut(u64, u64),
) -> Result<Rebuilt, RebuildError> {
    rebuild_in_pages(db, only, PAGE, progress).await
}

/// [`rebuild`], reading the log `page` events at a time (tests use small pages, so
/// that a quote's life crosses several).
pub async fn rebuild_in_pages(
    db: &Db,
    only: Option<&str>,
    page: i64,
    mut progress: impl FnMut(u64, u64),
) -> Result<Rebuilt, RebuildError> {
    let started = Instant::now();
    let live = chosen(only)?;
    let lock = MaintenanceLock::take(db, "rebuild").await?;
    let outcome = async {
        let shadow = Together(live.0.iter().map(|p| p.copy(Tables::Shadow)).collect());
        let indexes = prepare_shadows(db, &live, &shadow).await?;
        let total = event_count(db).await?;
        progress(0, total);
        let mut events = fill(db, &shadow, page, |done| progress(done, total)).await?;
        build_indexes(db, &indexes).await?;
        // What was written while the indexes were built, so that the swap, which
        // appends wait for, has only the last moments' events to apply.
        events += catch_up(db, &shadow, PAGE, |_| {}).await?;
        events += swap(db, &live, &shadow).await?;
        Ok(Rebuilt {
            projections: parts(&live).map(|part| part.name).collect(),
            events,
            took: started.elapsed(),
        })
    }
    .await;
    lock.release().await;
    outcome
}

/// Every projection, or the one called `only`.
fn chosen(only: Option<&str>) -> Result<Together, RebuildError> {
    let every = Together(rebuildable());
    let Some(name) = only else {
        return Ok(every);
    };
    every
        .0
        .iter()
        .find_map(|projector| projector.alone(name))
        .map(|alone| Together(vec![alone]))
        .ok_or_else(|| RebuildError::Unknown {
            name: name.to_owned(),
            known: parts(&every)
                .map(|part| part.name)
                .collect::<Vec<_>>()
                .join(", "),
        })
}

/// Each projection of these projectors, with the copy of its tables it writes.
fn parts(projectors: &Together) -> impl Iterator<Item = crate::eventstore::Part> + '_ {
    projectors.0.iter().flat_map(|p| p.parts())
}

/// Each projection with the copy of its tables its projector writes.
fn parts_writing(
    projectors: &Together,
) -> impl Iterator<Item = (crate::eventstore::Part, Tables)> + '_ {
    projectors.0.iter().flat_map(|p: &Arc<dyn Rebuildable>| {
        p.parts().into_iter().map(|part| (part, p.writes_to()))
    })
}

/// Fresh, empty shadow tables (a crashed rebuild's are dropped first), each projection
/// as before its first event, its shadow checkpoint forgotten. Returns the statements
/// that index them once filled.
async fn prepare_shadows(
    db: &Db,
    live: &Together,
    shadow: &Together,
) -> Result<Vec<String>, sqlx::Error> {
    let mut pooled = db.acquire().await?;
    let mut tx = pooled.as_conn().begin_write().await?;
    let mut indexes = Vec::new();
    for part in parts(live) {
        for table in part.tables {
            indexes.extend(create_shadow(tx.as_conn(), table).await?);
        }
    }
    for (part, tables) in parts_writing(shadow) {
        clear_part(tx.as_conn(), &part, tables).await?;
    }
    tx.commit().await?;
    Ok(indexes)
}

/// Applies what was written since the last page, then puts the shadow tables in the
/// live ones' place, in one transaction that appends wait for. Returns the events it
/// applied.
async fn swap(db: &Db, live: &Together, shadow: &Together) -> Result<u64, RebuildError> {
    let mut pooled = db.acquire().await?;
    let mut tx = pooled.as_conn().begin_write().await?;
    if let Backend::Postgres(_) = tx.as_conn() {
        // Appends wait; readers (ACCESS SHARE) pass. Every transaction that wrote an
        // event has ended once this is granted, so no read can meet a gap.
        tx.as_conn()
            .execute_plain("LOCK TABLE events IN EXCLUSIVE MODE")
            .await?;
    }
    let names = Projector::projections(shadow);
    let mut from = checkpoints::checkpoint(tx.as_conn(), &names[0])
        .await?
        .unwrap_or_default();
    let mut applied = 0;
    loop {
        let events = checkpoints::read_all_quiesced(tx.as_conn(), from, CATCH_UP_PAGE).await?;
        let Some(last) = events.last() else { break };
        from = last.global;
        checkpoints::project(tx.as_conn(), &[shadow as &dyn Projector], &events)
            .await
            .map_err(CatchUpError::from)?;
        applied += events.len() as u64;
    }
    for (part, tables) in parts_writing(live) {
        for table in part.tables {
            replace_with_shadow(tx.as_conn(), table).await?;
        }
        let name = tables.name(part.name).into_owned();
        checkpoints::forget(tx.as_conn(), &name).await?;
        if from != Default::default() {
            checkpoints::advance(tx.as_conn(), &[name], from).await?;
        }
    }
    for name in &names {
        checkpoints::forget(tx.as_conn(), name).await?;
    }
    tx.commit().await?;
    Ok(applied)
}

// ----- Shadow tables ------------------------------------------------------------

/// `name` as the other copy of its table calls it. SQLite cannot rename an index,
/// so a swapped-in table keeps its shadow's index names: the next shadow takes the
/// names without the suffix again.
fn other_index_name(name: &str) -> String {
    match name.strip_suffix(Tables::SHADOW_SUFFIX) {
        Some(live) => live.to_owned(),
        None => format!("{name}{}", Tables::SHADOW_SUFFIX),
    }
}

/// A new empty `table__rebuild` with `table`'s columns and constraints; returns the
/// statements that give it `table`'s other indexes, to run once it is filled (an
/// index built over the rows at once costs a fraction of one kept row by row).
async fn create_shadow(mut conn: Conn<'_>, table: &str) -> Result<Vec<String>, sqlx::Error> {
    let mut indexes_later = Vec::new();
    let shadow = Tables::Shadow.name(table).into_owned();
    conn.execute_plain(&format!("DROP TABLE IF EXISTS {shadow}"))
        .await?;
    match conn {
        Backend::Sqlite(c) => {
            let definitions: Vec<(String, String, String)> = sqlx::query_as(
                "SELECT type, name, sql FROM sqlite_master \
                 WHERE tbl_name = $1 AND sql IS NOT NULL ORDER BY type = 'index', name",
            )
            .bind(table)
            .fetch_all(&mut *c)
            .await?;
            for (kind, name, sql) in definitions {
                if kind == "index" {
                    let renamed = rename_identifiers(&sql, &[table], Tables::SHADOW_SUFFIX);
                    indexes_later.push(rename_one(&renamed, &name, &other_index_name(&name)));
                } else {
                    let sql = rename_identifiers(&sql, &[table], Tables::SHADOW_SUFFIX);
                    sqlx::query(&sql).execute(&mut *c).await?;
                }
            }
        }
        Backend::Postgres(c) => {
            sqlx::query(&format!(
                "CREATE TABLE {shadow} (LIKE {table} INCLUDING DEFAULTS INCLUDING CONSTRAINTS \
                 INCLUDING IDENTITY INCLUDING GENERATED)"
            ))
            .execute(&mut *c)
            .await?;
            // Primary keys and unique constraints as constraints, under names the
            // swap gives back; every other index as it is defined.
            let constraints: Vec<(String, String)> = sqlx::query_as(
                "SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint \
                 WHERE conrelid = $1::regclass AND contype IN ('p', 'u') ORDER BY conname",
            )
            .bind(table)
            .fetch_all(&mut *c)
            .await?;
            for (name, definition) in &constraints {
                sqlx::query(&format!(
                    "ALTER TABLE {shadow} ADD CONSTRAINT {name}{} {definition}",
                    Tables::SHADOW_SUFFIX
                ))
                .execute(&mut *c)
                .await?;
            }
            let indexes: Vec<(String, String)> = sqlx::query_as(
                "SELECT i.relname::text, pg_get_indexdef(i.oid) FROM pg_index x \
                 JOIN pg_class i ON i.oid = x.indexrelid \
                 WHERE x.indrelid = $1::regclass \
                   AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.oid) \
                 ORDER BY i.relname",
            )
            .bind(table)
            .fetch_all(&mut *c)
            .await?;
            for (name, definition) in indexes {
                indexes_later.push(rename_identifiers(
                    &definition,
                    &[table, &name],
                    Tables::SHADOW_SUFFIX,
                ));
            }
        }
    }
    Ok(indexes_later)
}

/// Runs each statement in a write transaction of its own (on SQLite, appends wait for
/// each index as it is built).
async fn build_indexes(db: &Db, statements: &[String]) -> Result<(), sqlx::Error> {
    let mut pooled = db.acquire().await?;
    for statement in statements {
        let mut tx = pooled.as_conn().begin_write().await?;
        tx.as_conn().execute_plain(statement).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// `sql` with the identifier `from` (once, as a whole word) called `to`.
fn rename_one(sql: &str, from: &str, to: &str) -> String {
    let marked = rename_identifiers(sql, &[from], "\u{0}");
    let word = format!("{from}\u{0}");
    marked.replacen(&word, to, 1).replace(&word, from)
}

/// Drops `table` and renames its shadow into its place; on PostgreSQL the shadow's
/// indexes and constraints get the live names back.
async fn replace_with_shadow(mut conn: Conn<'_>, table: &str) -> Result<(), sqlx::Error> {
    let shadow = Tables::Shadow.name(table).into_owned();
    conn.execute_plain(&format!("DROP TABLE {table}")).await?;
    conn.execute_plain(&format!("ALTER TABLE {shadow} RENAME TO {table}"))
        .await?;
    if let Backend::Postgres(c) = conn {
        let indexes: Vec<(String,)> = sqlx::query_as(
            "SELECT i.relname::text FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
             WHERE x.indrelid = $1::regclass",
        )
        .bind(table)
        .fetch_all(&mut *c)
        .await?;
        for (name,) in indexes {
            if let Some(live) = name.strip_suffix(Tables::SHADOW_SUFFIX) {
                // Renaming a constraint's index renames the constraint.
                sqlx::query(&format!("ALTER INDEX {name} RENAME TO {live}"))
                    .execute(&mut *c)
                    .await?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_names_alternate_between_the_two_copies() {
        assert_eq!(
            other_index_name("quote_summary_by_agent"),
            "quote_summary_by_agent__rebuild"
        );
        assert_eq!(
            other_index_name("quote_summary_by_agent__rebuild"),
            "quote_summary_by_agent"
        );
    }

    #[test]
    fn one_identifier_is_renamed_once() {
        assert_eq!(
            rename_one(
                "CREATE INDEX qs_by_agent ON quote_summary__rebuild (agent, qs_by_agent)",
                "qs_by_agent",
                "qs_by_agent__rebuild"
            ),
            "CREATE INDEX qs_by_agent__rebuild ON quote_summary__rebuild (agent, qs_by_agent)"
        );
    }
}
