//! Integrity checks of the event store's hash chains, and the record of each run.
//!
//! A run walks every stream's chain and its head (`EventStore::verify`) and stores
//! its result in `verification_runs`: the page shows the last run, whoever started
//! it (an auditor on the page, or `quoteline verify`), and the table keeps when each
//! check happened. A table rather than memory, so that the result survives a restart
//! and every instance shows the same. A run changes no quote: it is the one thing an
//! auditor may POST.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use uuid::Uuid;

use super::timeline;
use crate::db::Db;
use crate::eventstore::{EventStore, VerifyReport};
use crate::on_backend;

/// At most this many mismatches are stored with a run (all are counted).
pub const STORED_MISMATCHES: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundMismatch {
    pub stream_id: Uuid,
    pub version: i64,
    /// What is wrong, in words.
    pub problem: String,
    /// The quote's reference, where the timeline knows the stream.
    pub reference: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct VerificationRun {
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub run_by: String,
    pub streams_checked: i64,
    pub events_checked: i64,
    pub mismatch_count: i64,
    pub mismatches: Json<Vec<FoundMismatch>>,
}

impl VerificationRun {
    pub fn is_intact(&self) -> bool {
        self.mismatch_count == 0
    }

    /// Whether some mismatches were counted but not stored.
    pub fn is_truncated(&self) -> bool {
        self.mismatch_count as usize > self.mismatches.0.len()
    }
}

const INSERT_RUN: &str = "INSERT INTO verification_runs (started_at, finished_at, run_by, \
     streams_checked, events_checked, mismatch_count, mismatches) \
     VALUES ($1, $2, $3, $4, $5, $6, $7)";

const LATEST_RUN: &str = "SELECT started_at, finished_at, run_by, streams_checked, \
     events_checked, mismatch_count, mismatches FROM verification_runs ORDER BY id DESC LIMIT 1";

/// Verifies every chain, names the quotes of the streams found wanting, and records
/// the run. Returns the full report beside the run as stored.
#[tracing::instrument(skip(store))]
pub async fn run(
    store: &EventStore,
    run_by: &str,
) -> Result<(VerifyReport, VerificationRun), sqlx::Error> {
    let started_at = Utc::now();
    let report = store.verify().await?;
    let finished_at = Utc::now();
    let shown = &report.mismatches[..report.mismatches.len().min(STORED_MISMATCHES)];
    let mut streams: Vec<Uuid> = shown.iter().map(|m| m.stream_id).collect();
    streams.sort_unstable();
    streams.dedup();
    let references = timeline::references(store.db(), &streams).await?;
    let mismatches: Vec<FoundMismatch> = shown
        .iter()
        .map(|m| FoundMismatch {
            stream_id: m.stream_id,
            version: m.version,
            problem: m.problem.to_string(),
            reference: references.get(&m.stream_id).cloned(),
        })
        .collect();
    let run = VerificationRun {
        started_at,
        finished_at,
        run_by: run_by.to_owned(),
        streams_checked: report.streams_checked as i64,
        events_checked: report.events_checked as i64,
        mismatch_count: report.mismatches.len() as i64,
        mismatches: Json(mismatches),
    };
    on_backend!(store.db(), pool => {
        sqlx::query(INSERT_RUN)
            .bind(run.started_at)
            .bind(run.finished_at)
            .bind(&run.run_by)
            .bind(run.streams_checked)
            .bind(run.events_checked)
            .bind(run.mismatch_count)
            .bind(&run.mismatches)
            .execute(pool)
            .await?;
    });
    if report.is_intact() {
        tracing::info!(
            streams = report.streams_checked,
            events = report.events_checked,
            "every hash chain is intact"
        );
    } else {
        tracing::warn!(
            mismatches = report.mismatches.len(),
            "hash-chain verification found mismatches"
        );
    }
    Ok((report, run))
}

/// The last run recorded, if any.
pub async fn latest(db: &Db) -> Result<Option<VerificationRun>, sqlx::Error> {
    on_backend!(db, pool => sqlx::query_as(LATEST_RUN).fetch_optional(pool).await)
}
