//! `chunks`: a page's embedded chunks per model, replaced as a set (only the changed rows are
//! written).

use pagestream_events::ChunksReady;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{StoreError, bigint, ensure_embedding_index};

/// Replaces a page's chunks of the event's model with the event's, unless the page is deleted at
/// that version or newer chunks are stored. Runs in the caller's transaction, so readers see the
/// old set or the new one; concurrent replicas replace one page's chunks one after the other (the
/// page row is locked). Returns whether the chunks were written.
pub async fn replace(
    conn: &mut PgConnection,
    source_id: Uuid,
    event: &ChunksReady,
) -> Result<bool, StoreError> {
    let version = bigint("page version", event.version)?;
    let incarnation = bigint("page incarnation", event.incarnation)?;
    let dimension = i32::try_from(event.dimension).map_err(|_| StoreError::Invalid {
        what: "dimension",
        reason: format!("{} too large", event.dimension),
    })?;
    for chunk in &event.chunks {
        if chunk.vector.dimension() != event.dimension as usize {
            return Err(StoreError::Invalid {
                what: "chunk",
                reason: format!(
                    "chunk {} has {} dimensions, the event says {}",
                    chunk.index,
                    chunk.vector.dimension(),
                    event.dimension
                ),
            });
        }
    }
    let page_id = event.page_id.as_str();
    // The page row must exist for search to join it; a minimal one waits for page.changed.
    sqlx::query(
        "INSERT INTO confluence_pages (source_id, page_id, space_key, version, incarnation) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (source_id, page_id) DO NOTHING",
    )
    .bind(source_id)
    .bind(page_id)
    .bind(&event.space_key)
    .bind(version)
    .bind(incarnation)
    .execute(&mut *conn)
    .await?;
    // `chunks_version` and `chunks_incarnation`: what the chunks last written belong to. The chunk
    // rows cannot tell: a chunk that an edit left alone keeps the version it was written at.
    let (stored_version, stored_incarnation, is_deleted, chunks_version, chunks_incarnation): (
        i64,
        i64,
        bool,
        Option<i64>,
        i64,
    ) = sqlx::query_as(
        "SELECT version, incarnation, is_deleted, chunks_version, chunks_incarnation \
         FROM confluence_pages WHERE source_id = $1 AND page_id = $2 FOR UPDATE",
    )
    .bind(source_id)
    .bind(page_id)
    .fetch_one(&mut *conn)
    .await?;
    if is_deleted && (stored_version, stored_incarnation) >= (version, incarnation) {
        return Ok(false);
    }
    if chunks_version.is_some_and(|newest| (newest, chunks_incarnation) > (version, incarnation)) {
        return Ok(false);
    }
    ensure_embedding_index(&mut *conn, &event.model, dimension).await?;
    let chunks = &event.chunks;
    let indexes: Vec<i32> = chunks.iter().map(|chunk| chunk.index as i32).collect();
    let texts: Vec<&str> = chunks.iter().map(|chunk| chunk.text.as_str()).collect();
    let headings: Vec<serde_json::Value> = chunks
        .iter()
        .map(|chunk| serde_json::json!(chunk.heading_path))
        .collect();
    let hashes: Vec<&str> = chunks
        .iter()
        .map(|chunk| chunk.content_hash.as_str())
        .collect();
    let tokens: Vec<i32> = chunks
        .iter()
        .map(|chunk| chunk.token_count as i32)
        .collect();
    // A code chunk's block (language, title) is its metadata; search filters on it.
    let metadata: Vec<serde_json::Value> = chunks
        .iter()
        .map(|chunk| match &chunk.code {
            Some(code) => serde_json::json!({ "code": code }),
            None => serde_json::json!({}),
        })
        .collect();
    let vectors: Vec<pgvector::Vector> = chunks
        .iter()
        .map(|chunk| pgvector::Vector::from(chunk.vector.0.clone()))
        .collect();
    // Only what changed is written: a chunk stored at the same place with the same embedded text
    // (its hash covers the heading path) and the same metadata stays as it is, row and HNSW entry
    // alike; the others are deleted, and the missing ones inserted.
    let deleted = sqlx::query(
        "DELETE FROM chunks c WHERE c.source_id = $1 AND c.page_id = $2 AND c.embedding_model = $3 \
         AND NOT EXISTS (SELECT 1 FROM unnest($4::int[], $5::text[], $6::jsonb[]) \
         AS n(idx, hash, metadata) \
         WHERE n.idx = c.chunk_index AND n.hash = c.content_hash AND n.metadata = c.metadata)",
    )
    .bind(source_id)
    .bind(page_id)
    .bind(&event.model)
    .bind(&indexes)
    .bind(&hashes)
    .bind(&metadata)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    let inserted = sqlx::query(
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
        ON CONFLICT (source_id, page_id, embedding_model, chunk_index) DO NOTHING
        "#,
    )
    .bind(source_id)
    .bind(page_id)
    .bind(&event.model)
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
    .await?
    .rows_affected();
    // The same chunks of the same fact again (a redelivery, or the live lane's event taken again
    // by the stage's own consumer): nothing was applied, and the run's counters stay.
    if chunks_version == Some(version)
        && chunks_incarnation == incarnation
        && deleted + inserted == 0
    {
        return Ok(false);
    }
    sqlx::query(
        "UPDATE confluence_pages SET chunks_version = $3, chunks_incarnation = $4, updated_at = now() \
         WHERE source_id = $1 AND page_id = $2",
    )
    .bind(source_id)
    .bind(page_id)
    .bind(version)
    .bind(incarnation)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// How many pages have chunks stored.
pub async fn pages_with_chunks(pool: &PgPool) -> Result<u64, StoreError> {
    let count: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM confluence_pages WHERE chunks_version IS NOT NULL AND NOT is_deleted",
    )
    .fetch_one(pool)
    .await?;
    Ok(count.max(0) as u64)
}

/// Whether no chunk of any model is stored (a replay into it can bulk-load).
pub async fn none_stored(pool: &PgPool) -> Result<bool, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT NOT EXISTS (SELECT 1 FROM chunks)")
            .fetch_one(pool)
            .await?,
    )
}
