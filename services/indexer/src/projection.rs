//! How each event changes the projection. Every function is idempotent and version-guarded, so
//! events may arrive in any order, twice, or from a replay, and the result is the same:
//!
//! - a page's row moves only forward: an event older than the stored `version` changes nothing;
//! - a deleted page stays deleted until an event of a strictly newer version, or of the same
//!   version and a later incarnation (a restore), arrives;
//! - a deletion of version 0 (the fetcher never knew the version) deletes whatever is stored;
//! - a page's chunks for a model are replaced in one statement group inside the caller's
//!   transaction, so readers see the old set or the new one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use pagestream_events::{
    ChunksReady, Envelope, PageChanged, PageConverted, PageDeleted, PageInfo, SourceKey,
    SyncProgress,
};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum ProjectionError {
    /// The source is not (yet) in the `sources` table: the registry projection will bring it.
    #[error("unknown source {0}")]
    UnknownSource(SourceKey),
    #[error("invalid event: {0}")]
    Invalid(String),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("store: {0}")]
    Store(#[from] pagestream_store::StoreError),
}

impl pagestream_events::Retryable for ProjectionError {
    /// An unknown source or a database outage may pass; an invalid event or data the database
    /// refuses will not.
    fn is_transient(&self) -> bool {
        match self {
            ProjectionError::UnknownSource(_) => true,
            ProjectionError::Invalid(_) => false,
            ProjectionError::Database(error) => pagestream_store::is_transient(error),
            ProjectionError::Store(error) => error.is_transient(),
        }
    }
}

/// Maps source keys to ids, caching what the database said.
#[derive(Clone, Default)]
pub struct SourceIds(Arc<Mutex<HashMap<SourceKey, Uuid>>>);

impl SourceIds {
    pub async fn resolve(
        &self,
        conn: &mut PgConnection,
        key: &SourceKey,
    ) -> Result<Uuid, ProjectionError> {
        if let Some(id) = self.0.lock().ok().and_then(|ids| ids.get(key).copied()) {
            return Ok(id);
        }
        let id: Option<Uuid> = sqlx::query_scalar("SELECT id FROM sources WHERE key = $1")
            .bind(key.as_str())
            .fetch_optional(&mut *conn)
            .await?;
        let id = id.ok_or_else(|| ProjectionError::UnknownSource(key.clone()))?;
        if let Ok(mut ids) = self.0.lock() {
            ids.insert(key.clone(), id);
        }
        Ok(id)
    }

    pub fn forget(&self, key: &SourceKey) {
        if let Ok(mut ids) = self.0.lock() {
            ids.remove(key);
        }
    }
}

/// Whether an event changed the projection (a stale or repeated one does not).
pub type Applied = bool;

fn as_bigint(what: &str, value: u64) -> Result<i64, ProjectionError> {
    i64::try_from(value).map_err(|_| ProjectionError::Invalid(format!("{what} {value} too large")))
}

fn page_metadata(
    page: &PageInfo,
    content: Option<&pagestream_events::ContentMetadata>,
) -> serde_json::Value {
    let mut metadata = serde_json::json!({
        "ancestors": page.ancestors,
        "labels": page.labels,
        "author": page.author,
        "created_at": page.created_at,
    });
    if let (Some(content), Some(object)) = (content, metadata.as_object_mut())
        && let Ok(serde_json::Value::Object(fields)) = serde_json::to_value(content)
    {
        object.extend(fields);
    }
    metadata
}

/// Upserts a page's row from what a page event says. The `markdown` and content metadata are only
/// written by `page.converted`; `page.changed` keeps what is there.
async fn upsert_page(
    conn: &mut PgConnection,
    source_id: Uuid,
    page: &PageInfo,
    converted: Option<&PageConverted>,
) -> Result<Applied, ProjectionError> {
    let version = as_bigint("version", page.version)?;
    let metadata = page_metadata(page, converted.map(|event| &event.metadata));
    let markdown = converted.map(|event| event.markdown.as_str());
    // On conflict the row changes only for a version at least the stored one, and a deleted row
    // only for a strictly newer version. Converted metadata replaces the stored one; page.changed
    // merges into it (keeping the converter's fields).
    let incarnation = as_bigint("incarnation", page.incarnation)?;
    // On conflict the row changes only for a (version, incarnation) at least the stored one, and a
    // deleted row only for a strictly newer one. The same version and incarnation again updates
    // where the page stands (a move or a label change creates no version); converted metadata
    // replaces the stored one, page.changed merges into it (keeping the converter's fields).
    let result = sqlx::query(
        r#"
        INSERT INTO confluence_pages AS p
            (source_id, page_id, space_key, title, version, last_modified, path, url, metadata,
             markdown, markdown_version, incarnation)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, CASE WHEN $10::text IS NULL THEN NULL ELSE $5 END, $11)
        ON CONFLICT (source_id, page_id) DO UPDATE SET
            space_key = EXCLUDED.space_key,
            title = EXCLUDED.title,
            version = EXCLUDED.version,
            incarnation = EXCLUDED.incarnation,
            last_modified = EXCLUDED.last_modified,
            path = EXCLUDED.path,
            url = EXCLUDED.url,
            is_deleted = false,
            metadata = CASE WHEN $10::text IS NULL THEN p.metadata || EXCLUDED.metadata ELSE EXCLUDED.metadata END,
            markdown = COALESCE($10, p.markdown),
            markdown_version = CASE WHEN $10::text IS NULL THEN p.markdown_version ELSE $5 END,
            updated_at = now()
        WHERE (p.version, p.incarnation) < (EXCLUDED.version, EXCLUDED.incarnation)
           OR ((p.version, p.incarnation) = (EXCLUDED.version, EXCLUDED.incarnation) AND NOT p.is_deleted
               AND ($10::text IS NULL OR p.markdown_version IS DISTINCT FROM EXCLUDED.version
                    OR p.path IS DISTINCT FROM EXCLUDED.path
                    OR p.metadata -> 'labels' IS DISTINCT FROM EXCLUDED.metadata -> 'labels'))
        "#,
    )
    .bind(source_id)
    .bind(page.page_id.as_str())
    .bind(&page.space_key)
    .bind(&page.title)
    .bind(version)
    .bind(page.last_modified)
    .bind(&page.path)
    .bind(&page.url)
    .bind(metadata)
    .bind(markdown)
    .bind(incarnation)
    .execute(&mut *conn)
    .await?;
    Ok(result.rows_affected() > 0)
}

pub async fn apply_changed(
    conn: &mut PgConnection,
    ids: &SourceIds,
    event: &Envelope<PageChanged>,
) -> Result<Applied, ProjectionError> {
    let source_id = ids.resolve(conn, &event.data.page.source).await?;
    upsert_page(conn, source_id, &event.data.page, None).await
}

pub async fn apply_converted(
    conn: &mut PgConnection,
    ids: &SourceIds,
    event: &Envelope<PageConverted>,
) -> Result<Applied, ProjectionError> {
    let source_id = ids.resolve(conn, &event.data.page.source).await?;
    upsert_page(conn, source_id, &event.data.page, Some(&event.data)).await
}

pub async fn apply_chunks(
    conn: &mut PgConnection,
    ids: &SourceIds,
    event: &Envelope<ChunksReady>,
) -> Result<Applied, ProjectionError> {
    let data = &event.data;
    let source_id = ids.resolve(conn, &data.source).await?;
    let version = as_bigint("version", data.version)?;
    let incarnation = as_bigint("incarnation", data.incarnation)?;
    let dimension = i32::try_from(data.dimension)
        .map_err(|_| ProjectionError::Invalid(format!("dimension {} too large", data.dimension)))?;
    for chunk in &data.chunks {
        if chunk.vector.dimension() != data.dimension as usize {
            return Err(ProjectionError::Invalid(format!(
                "chunk {} has {} dimensions, the event says {}",
                chunk.index,
                chunk.vector.dimension(),
                data.dimension
            )));
        }
    }
    // The page row must exist for search to join it; a minimal one waits for page.changed.
    sqlx::query(
        "INSERT INTO confluence_pages (source_id, page_id, space_key, version, incarnation) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (source_id, page_id) DO NOTHING",
    )
    .bind(source_id)
    .bind(data.page_id.as_str())
    .bind(&data.space_key)
    .bind(version)
    .bind(incarnation)
    .execute(&mut *conn)
    .await?;
    // Lock the page row: concurrent replicas replace one page's chunks one after the other.
    let (stored_version, stored_incarnation, is_deleted): (i64, i64, bool) = sqlx::query_as(
        "SELECT version, incarnation, is_deleted FROM confluence_pages WHERE source_id = $1 AND page_id = $2 FOR UPDATE",
    )
    .bind(source_id)
    .bind(data.page_id.as_str())
    .fetch_one(&mut *conn)
    .await?;
    if is_deleted && (stored_version, stored_incarnation) >= (version, incarnation) {
        return Ok(false);
    }
    let newest_chunks: Option<i64> = sqlx::query_scalar(
        "SELECT max(page_version) FROM chunks WHERE source_id = $1 AND page_id = $2 AND embedding_model = $3",
    )
    .bind(source_id)
    .bind(data.page_id.as_str())
    .bind(&data.model)
    .fetch_one(&mut *conn)
    .await?;
    if newest_chunks.is_some_and(|newest| newest > version) {
        return Ok(false);
    }
    pagestream_store::ensure_embedding_index(&mut *conn, &data.model, dimension).await?;
    sqlx::query(
        "DELETE FROM chunks WHERE source_id = $1 AND page_id = $2 AND embedding_model = $3",
    )
    .bind(source_id)
    .bind(data.page_id.as_str())
    .bind(&data.model)
    .execute(&mut *conn)
    .await?;
    let indexes: Vec<i32> = data.chunks.iter().map(|chunk| chunk.index as i32).collect();
    let texts: Vec<&str> = data
        .chunks
        .iter()
        .map(|chunk| chunk.text.as_str())
        .collect();
    let headings: Vec<serde_json::Value> = data
        .chunks
        .iter()
        .map(|chunk| serde_json::json!(chunk.heading_path))
        .collect();
    let hashes: Vec<&str> = data
        .chunks
        .iter()
        .map(|chunk| chunk.content_hash.as_str())
        .collect();
    let tokens: Vec<i32> = data
        .chunks
        .iter()
        .map(|chunk| chunk.token_count as i32)
        .collect();
    // A code chunk's block (language, title) is its metadata; search filters on it.
    let metadata: Vec<serde_json::Value> = data
        .chunks
        .iter()
        .map(|chunk| match &chunk.code {
            Some(code) => serde_json::json!({ "code": code }),
            None => serde_json::json!({}),
        })
        .collect();
    let vectors: Vec<pgvector::Vector> = data
        .chunks
        .iter()
        .map(|chunk| pgvector::Vector::from(chunk.vector.0.clone()))
        .collect();
    sqlx::query(
        r#"
        INSERT INTO chunks (source_id, page_id, embedding_model, chunk_index, page_version, text,
                            heading_path, content_hash, token_count, metadata, embedding_dim,
                            embedding)
        SELECT $1, $2, $3, c.idx, $4, c.text,
               ARRAY(SELECT jsonb_array_elements_text(c.heading)), c.hash, c.tokens, c.metadata, $5,
               c.embedding
        FROM unnest($6::int[], $7::text[], $8::jsonb[], $9::text[], $10::int[], $11::vector[],
                    $12::jsonb[])
             AS c(idx, text, heading, hash, tokens, embedding, metadata)
        "#,
    )
    .bind(source_id)
    .bind(data.page_id.as_str())
    .bind(&data.model)
    .bind(version)
    .bind(dimension)
    .bind(indexes)
    .bind(texts)
    .bind(headings)
    .bind(hashes)
    .bind(tokens)
    .bind(vectors)
    .bind(metadata)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE confluence_pages SET chunks_version = $3, updated_at = now() WHERE source_id = $1 AND page_id = $2",
    )
    .bind(source_id)
    .bind(data.page_id.as_str())
    .bind(version)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

pub async fn apply_deleted(
    conn: &mut PgConnection,
    ids: &SourceIds,
    event: &Envelope<PageDeleted>,
) -> Result<Applied, ProjectionError> {
    let data = &event.data;
    let source_id = ids.resolve(conn, &data.source).await?;
    let version = as_bigint("version", data.version)?;
    let incarnation = as_bigint("incarnation", data.incarnation)?;
    // Version 0: the fetcher confirmed the page gone without ever knowing its version (a removal
    // hint for a page it never recorded); whatever is stored goes.
    let result = sqlx::query(
        r#"
        INSERT INTO confluence_pages AS p (source_id, page_id, space_key, version, incarnation, is_deleted)
        VALUES ($1, $2, COALESCE($3, ''), $4, $5, true)
        ON CONFLICT (source_id, page_id) DO UPDATE SET
            is_deleted = true,
            version = CASE WHEN EXCLUDED.version = 0 THEN p.version ELSE EXCLUDED.version END,
            incarnation = CASE WHEN EXCLUDED.version = 0 THEN p.incarnation ELSE EXCLUDED.incarnation END,
            -- a tombstone keeps nothing of the content: as a replay (which never sees the purged
            -- events) would build it
            title = '', path = '', url = '', metadata = '{}'::jsonb, last_modified = NULL,
            markdown = NULL, markdown_version = NULL, chunks_version = NULL, updated_at = now()
        WHERE NOT p.is_deleted
          AND ((p.version, p.incarnation) <= (EXCLUDED.version, EXCLUDED.incarnation) OR EXCLUDED.version = 0)
        "#,
    )
    .bind(source_id)
    .bind(data.page_id.as_str())
    .bind(data.space_key.as_deref())
    .bind(version)
    .bind(incarnation)
    .execute(&mut *conn)
    .await?;
    let applied = result.rows_affected() > 0;
    // Chunks of versions up to the deleted one go (a newer version's chunks stay); a stale
    // tombstone leaves a restored page's chunks alone.
    if applied {
        sqlx::query(
            "DELETE FROM chunks WHERE source_id = $1 AND page_id = $2 AND ($3 = 0 OR page_version <= $3)",
        )
            .bind(source_id)
            .bind(data.page_id.as_str())
            .bind(version)
            .execute(&mut *conn)
            .await?;
    }
    Ok(applied)
}

/// Adds `count` to each of a sync run's stage counters; the run's row appears with the first
/// count if the fetcher's progress has not arrived yet.
pub async fn count_stages(
    conn: &mut PgConnection,
    source_id: Uuid,
    run: Uuid,
    columns: &[&'static str],
    count: i64,
) -> Result<(), ProjectionError> {
    if columns.is_empty() {
        return Ok(());
    }
    // `columns` are a few fixed names, never input.
    let names = columns.join(", ");
    let values = vec!["$3"; columns.len()].join(", ");
    let updates: Vec<String> = columns
        .iter()
        .map(|column| format!("{column} = sync_runs.{column} + $3"))
        .collect();
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO sync_runs (id, source_id, mode, status, {names}) VALUES ($1, $2, 'incremental', 'running', {values})
         ON CONFLICT (id) DO UPDATE SET {}, updated_at = now()",
        updates.join(", ")
    )))
    .bind(run)
    .bind(source_id)
    .bind(count)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Projects a sync run's progress snapshot (counters are cumulative, so the newest wins).
pub async fn apply_progress(
    conn: &mut PgConnection,
    ids: &SourceIds,
    progress: &SyncProgress,
) -> Result<Applied, ProjectionError> {
    let source_id = ids.resolve(conn, &progress.source).await?;
    let mode = serde_json::to_value(progress.mode)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_else(|| "full".to_owned());
    let status = serde_json::to_value(progress.status)
        .ok()
        .and_then(|value| value.as_str().map(str::to_owned))
        .unwrap_or_else(|| "running".to_owned());
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
        WHERE r.updated_at <= EXCLUDED.updated_at OR r.status IN ('queued', 'running') AND EXCLUDED.status NOT IN ('queued', 'running')
        "#,
    )
    .bind(progress.run_id)
    .bind(source_id)
    .bind(mode)
    .bind(status)
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
    .execute(&mut *conn)
    .await?;
    Ok(result.rows_affected() > 0)
}

/// Records the last applied sequence of a stream, in the caller's transaction.
pub async fn checkpoint(
    conn: &mut PgConnection,
    stream: &str,
    sequence: u64,
) -> Result<(), ProjectionError> {
    sqlx::query(
        "INSERT INTO projection_checkpoints (stream, last_sequence) VALUES ($1, $2)
         ON CONFLICT (stream) DO UPDATE SET last_sequence = GREATEST(projection_checkpoints.last_sequence, EXCLUDED.last_sequence), updated_at = now()",
    )
    .bind(stream)
    .bind(i64::try_from(sequence).unwrap_or(i64::MAX))
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Projects one registry entry into `sources`.
pub async fn upsert_source(
    pool: &PgPool,
    record: &pagestream_sources::SourceRecord,
) -> Result<(), ProjectionError> {
    let mut tx = pool.begin().await?;
    // Replicas project the same registry: one at a time per key, or two inserts of one new source
    // race on the unique key, which ON CONFLICT (id) does not arbitrate.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('pagestream.sources'), hashtext($1))")
        .bind(record.key.as_str())
        .execute(&mut *tx)
        .await?;
    // A source removed and added again under its key has a new id: the new one replaces it.
    sqlx::query("DELETE FROM sources WHERE key = $1 AND id <> $2")
        .bind(record.key.as_str())
        .bind(record.id)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        r#"
        INSERT INTO sources (id, key, site_url, space_key, auth_kind, credentials, settings, created_at, updated_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
        ON CONFLICT (id) DO UPDATE SET site_url = EXCLUDED.site_url, space_key = EXCLUDED.space_key,
            auth_kind = EXCLUDED.auth_kind, credentials = EXCLUDED.credentials,
            settings = EXCLUDED.settings, updated_at = EXCLUDED.updated_at
        "#,
    )
    .bind(record.id)
    .bind(record.key.as_str())
    .bind(&record.site_url)
    .bind(&record.space_key)
    .bind(record.auth_kind.as_str())
    .bind(record.sealed_credentials.as_bytes())
    .bind(serde_json::to_value(&record.settings).unwrap_or_default())
    .bind(record.created_at)
    .bind(record.updated_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Removes a source; its pages, chunks and runs go with it (cascade).
pub async fn remove_source(
    pool: &PgPool,
    ids: &SourceIds,
    key: &SourceKey,
) -> Result<(), ProjectionError> {
    sqlx::query("DELETE FROM sources WHERE key = $1")
        .bind(key.as_str())
        .execute(pool)
        .await?;
    ids.forget(key);
    Ok(())
}
