//! `sync_runs`: each sync run's status and per-stage page counts.

use chrono::{DateTime, Utc};
use pagestream_events::{SyncMode, SyncProgress, SyncStatus};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::StoreError;

/// A pipeline stage whose pages the indexer counts per run, as it applies their events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Converted,
    Embedded,
    Indexed,
}

impl Stage {
    fn column(self) -> &'static str {
        match self {
            Stage::Converted => "pages_converted",
            Stage::Embedded => "pages_embedded",
            Stage::Indexed => "pages_indexed",
        }
    }
}

/// Adds `count` to each of a run's stage counters; the run's row appears with the first count if
/// the fetcher's progress has not arrived yet.
pub async fn count_stages(
    conn: &mut PgConnection,
    source_id: Uuid,
    run: Uuid,
    stages: &[Stage],
    count: i64,
) -> Result<(), StoreError> {
    if stages.is_empty() {
        return Ok(());
    }
    let columns: Vec<&str> = stages.iter().map(|stage| stage.column()).collect();
    let values = vec!["$3"; columns.len()].join(", ");
    let updates: Vec<String> = columns
        .iter()
        .map(|column| format!("{column} = sync_runs.{column} + $3"))
        .collect();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO sync_runs (id, source_id, mode, status, {}) VALUES ($1, $2, $4, $5, {values})
         ON CONFLICT (id) DO UPDATE SET {}, updated_at = now()",
        columns.join(", "),
        updates.join(", ")
    )))
    .bind(run)
    .bind(source_id)
    .bind(count)
    .bind(SyncMode::Incremental.as_str())
    .bind(SyncStatus::Running.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Projects a run's progress snapshot (counters are cumulative, so the newest wins, and a
/// finished run is not reopened by an older snapshot). Returns whether the row changed.
pub async fn apply_progress(
    conn: &mut PgConnection,
    source_id: Uuid,
    progress: &SyncProgress,
) -> Result<bool, StoreError> {
    let as_i64 = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
    let result = sqlx::query(
        r#"
        INSERT INTO sync_runs AS r (id, source_id, mode, status, pages_seen, pages_changed,
            pages_deleted, pages_failed, confluence_requests, rate_limit_wait_ms, started_at,
            finished_at, last_error, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
        ON CONFLICT (id) DO UPDATE SET
            mode = EXCLUDED.mode, status = EXCLUDED.status, pages_seen = EXCLUDED.pages_seen,
            pages_changed = EXCLUDED.pages_changed, pages_deleted = EXCLUDED.pages_deleted,
            pages_failed = EXCLUDED.pages_failed, confluence_requests = EXCLUDED.confluence_requests,
            rate_limit_wait_ms = EXCLUDED.rate_limit_wait_ms, started_at = EXCLUDED.started_at,
            finished_at = EXCLUDED.finished_at, last_error = EXCLUDED.last_error,
            updated_at = EXCLUDED.updated_at
        WHERE r.updated_at <= EXCLUDED.updated_at OR r.status = ANY($15) AND EXCLUDED.status <> ALL($15)
        "#,
    )
    .bind(progress.run_id)
    .bind(source_id)
    .bind(progress.mode.as_str())
    .bind(progress.status.as_str())
    .bind(as_i64(progress.pages_seen))
    .bind(as_i64(progress.pages_changed))
    .bind(as_i64(progress.pages_deleted))
    .bind(as_i64(progress.pages_failed))
    .bind(as_i64(progress.requests))
    .bind(as_i64(progress.rate_limit_wait_ms))
    .bind(progress.started_at)
    .bind(progress.finished_at)
    .bind(progress.last_error.as_deref())
    .bind(progress.updated_at)
    .bind(SyncStatus::UNFINISHED.map(SyncStatus::as_str).to_vec())
    .execute(&mut *conn)
    .await?;
    Ok(result.rows_affected() > 0)
}

/// Per-stage page counts of a run.
#[derive(Debug, Default, Clone, sqlx::FromRow)]
pub struct StageCounts {
    pub seen: i64,
    pub changed: i64,
    pub deleted: i64,
    pub converted: i64,
    pub embedded: i64,
    pub indexed: i64,
    pub failed: i64,
}

/// A run as projected.
#[derive(Debug, sqlx::FromRow)]
pub struct SyncRun {
    pub id: Uuid,
    pub source_id: Uuid,
    #[sqlx(try_from = "String")]
    pub mode: SyncMode,
    #[sqlx(try_from = "String")]
    pub status: SyncStatus,
    #[sqlx(flatten)]
    pub counts: StageCounts,
    pub confluence_requests: i64,
    pub rate_limit_wait_ms: i64,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub updated_at: DateTime<Utc>,
}

const SYNC_RUN_COLUMNS: &str = "id, source_id, mode, status, pages_seen AS seen, \
    pages_changed AS changed, pages_deleted AS deleted, pages_converted AS converted, \
    pages_embedded AS embedded, pages_indexed AS indexed, pages_failed AS failed, \
    confluence_requests, rate_limit_wait_ms, started_at, finished_at, last_error, updated_at";

/// The latest run (by start) of each of `source_ids` that has one.
pub async fn latest_per_source(
    pool: &PgPool,
    source_ids: &[Uuid],
) -> Result<Vec<SyncRun>, StoreError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT DISTINCT ON (source_id) {SYNC_RUN_COLUMNS} FROM sync_runs \
         WHERE source_id = ANY($1) ORDER BY source_id, started_at DESC"
    )))
    .bind(source_ids)
    .fetch_all(pool)
    .await?)
}

/// One run of a source.
pub async fn get(pool: &PgPool, source_id: Uuid, run: Uuid) -> Result<Option<SyncRun>, StoreError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SYNC_RUN_COLUMNS} FROM sync_runs WHERE id = $1 AND source_id = $2"
    )))
    .bind(run)
    .bind(source_id)
    .fetch_optional(pool)
    .await?)
}

/// A source's latest run.
pub async fn latest(pool: &PgPool, source_id: Uuid) -> Result<Option<SyncRun>, StoreError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SYNC_RUN_COLUMNS} FROM sync_runs WHERE source_id = $1 \
         ORDER BY started_at DESC LIMIT 1"
    )))
    .bind(source_id)
    .fetch_optional(pool)
    .await?)
}

/// A source's latest `limit` runs, newest first.
pub async fn recent(
    pool: &PgPool,
    source_id: Uuid,
    limit: i64,
) -> Result<Vec<SyncRun>, StoreError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SYNC_RUN_COLUMNS} FROM sync_runs WHERE source_id = $1 \
         ORDER BY started_at DESC LIMIT $2"
    )))
    .bind(source_id)
    .bind(limit)
    .fetch_all(pool)
    .await?)
}
