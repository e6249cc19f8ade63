//! Filling a projection's empty tables from the whole log at once: what a rebuild
//! does to its shadow tables (the data generator's too, which rebuilds a new
//! database's projections). Each projector brings its [`Fill`]; the log is read a
//! page at a time beside it.

use tokio::sync::mpsc;

use super::checkpoints::{self, CatchUpError, last_position};
use super::model::{GlobalPosition, RecordedEvent};
use super::projector::{Fill, Projector, Together};
use crate::db::{Backend, Db, POOL_CACHE_KIB};

/// SQLite's page cache while tables fill, in KiB: the tables and their
/// indexes stay in memory instead of being read back from the file page by page.
const FILL_CACHE_KIB: i64 = 256 * 1024;

/// Rows a fill writes from memory in one transaction at the end: on SQLite appends
/// wait for each, so each is kept short (a few tenths of a second).
const KEPT_ROWS_PER_TRANSACTION: usize = 10_000;

/// Replays the log as it stands into `projectors`' empty tables, through their fills. A
/// task of its own reads the next page (on a connection of its own) while this one
/// applies the last, in a transaction per page on one connection (on SQLite with a
/// large page cache, given back to the pool's afterwards); the fills then write
/// what they kept in memory, a transaction for every 10,000 rows, the checkpoints
/// with the last. What
/// is written meanwhile, and anything the gap-safe read holds back, is left to the
/// catch-up that follows.
pub async fn fill(
    db: &Db,
    projectors: &Together,
    page: i64,
    mut progress: impl FnMut(u64),
) -> Result<u64, CatchUpError> {
    let Some(end) = last_position(db).await? else {
        return Ok(0);
    };
    let (pages_in, mut pages) = mpsc::channel(1);
    let reader = tokio::spawn(read_pages(db.clone(), end, page, pages_in));
    let mut pooled = db.acquire().await?;
    let sqlite = matches!(db, Backend::Sqlite(_));
    if sqlite {
        pooled
            .as_conn()
            .execute_plain(&format!("PRAGMA cache_size = -{FILL_CACHE_KIB}"))
            .await?;
    }
    let filled = async {
        let mut fills: Vec<Box<dyn Fill>> = projectors.0.iter().map(|p| p.fill()).collect();
        let (mut applied, mut last) = (0, None);
        while let Some(page) = pages.recv().await {
            let events: Vec<RecordedEvent> = page?;
            let mut tx = pooled.as_conn().begin_write().await?;
            for fill in &mut fills {
                fill.page(tx.as_conn(), &events).await?;
            }
            tx.commit().await?;
            last = events.last().map(|e| e.global).or(last);
            applied += events.len() as u64;
            progress(applied);
        }
        let Some(last) = last else {
            return Ok(0);
        };
        let count = fills.len();
        for (index, fill) in fills.iter_mut().enumerate() {
            loop {
                let mut tx = pooled.as_conn().begin_write().await?;
                let more = fill.flush(tx.as_conn(), KEPT_ROWS_PER_TRANSACTION).await?;
                if !more && index + 1 == count {
                    checkpoints::advance(tx.as_conn(), &projectors.projections(), last).await?;
                }
                tx.commit().await?;
                if !more {
                    break;
                }
            }
        }
        Ok::<u64, CatchUpError>(applied)
    }
    .await;
    // On an error above the reader stops at its next page: no one receives it.
    drop(pages);
    let _ = reader.await;
    if sqlite
        && pooled
            .as_conn()
            .execute_plain(&format!("PRAGMA cache_size = -{POOL_CACHE_KIB}"))
            .await
            .is_err()
    {
        // A pooled connection must not keep a quarter of a gigabyte of cache.
        pooled.discard();
    }
    filled
}

/// Reads the log from its start up to `end` a page at a time, each page sent as soon
/// as it is read (one waits in the channel while the last is applied). Stops at an
/// empty page, an error (sent on), or when no one receives.
async fn read_pages(
    db: Db,
    end: GlobalPosition,
    limit: i64,
    pages: mpsc::Sender<Result<Vec<RecordedEvent>, CatchUpError>>,
) {
    let mut pooled = match db.acquire().await {
        Ok(pooled) => pooled,
        Err(error) => {
            let _ = pages.send(Err(error.into())).await;
            return;
        }
    };
    let mut from = GlobalPosition::START;
    while from < end {
        let page = checkpoints::read_all_in(pooled.as_conn(), from, limit).await;
        let Some(last) = page
            .as_ref()
            .map_or(None, |events| events.last().map(|e| e.global))
        else {
            if let Err(error) = page {
                let _ = pages.send(Err(error.into())).await;
            }
            return;
        };
        if pages.send(page.map_err(CatchUpError::from)).await.is_err() {
            return;
        }
        from = last;
    }
}
