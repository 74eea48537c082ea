//! `sources`: one row per registered Confluence source, projected from the registry.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::StoreError;

/// A registry entry as the projection stores it (credentials stay sealed).
#[derive(Debug, Clone)]
pub struct SourceRow<'a> {
    pub id: Uuid,
    pub key: &'a str,
    pub site_url: &'a str,
    /// The source's spaces as shown (`ENG, OPS`, or `all spaces`).
    pub space_key: &'a str,
    pub auth_kind: &'a str,
    pub sealed_credentials: &'a [u8],
    pub settings: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Inserts or updates a source. A source removed and added again under its key has a new id: the
/// new one replaces the old row (and its pages, by cascade).
pub async fn upsert(pool: &PgPool, source: &SourceRow<'_>) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    // Replicas project the same registry: one at a time per key, or two inserts of one new source
    // race on the unique key, which ON CONFLICT (id) does not arbitrate.
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext('pagestream.sources'), hashtext($1))")
        .bind(source.key)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM sources WHERE key = $1 AND id <> $2")
        .bind(source.key)
        .bind(source.id)
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
    .bind(source.id)
    .bind(source.key)
    .bind(source.site_url)
    .bind(source.space_key)
    .bind(source.auth_kind)
    .bind(source.sealed_credentials)
    .bind(&source.settings)
    .bind(source.created_at)
    .bind(source.updated_at)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Removes a source; its pages, chunks and runs go with it (cascade).
pub async fn remove(pool: &PgPool, key: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM sources WHERE key = $1")
        .bind(key)
        .execute(pool)
        .await?;
    Ok(())
}

/// The id of the source with this key, if projected.
pub async fn id_by_key<'c>(
    executor: impl sqlx::PgExecutor<'c>,
    key: &str,
) -> Result<Option<Uuid>, StoreError> {
    Ok(sqlx::query_scalar("SELECT id FROM sources WHERE key = $1")
        .bind(key)
        .fetch_optional(executor)
        .await?)
}

/// Whether a source of this id is projected.
pub async fn exists(pool: &PgPool, id: Uuid) -> Result<bool, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM sources WHERE id = $1)")
            .bind(id)
            .fetch_one(pool)
            .await?,
    )
}

/// Live pages and chunks (of `model`) per projected source among `ids`.
pub async fn counts(
    pool: &PgPool,
    ids: &[Uuid],
    model: &str,
) -> Result<Vec<(Uuid, i64, i64)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT s.id, \
            (SELECT count(*) FROM confluence_pages p WHERE p.source_id = s.id AND NOT p.is_deleted), \
            (SELECT count(*) FROM chunks c WHERE c.source_id = s.id AND c.embedding_model = $2) \
         FROM sources s WHERE s.id = ANY($1)",
    )
    .bind(ids)
    .bind(model)
    .fetch_all(pool)
    .await?)
}
