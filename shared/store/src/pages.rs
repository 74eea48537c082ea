//! `confluence_pages`: one row per page, moved only forward by version; a deleted page is a
//! tombstone that keeps nothing of its content.

use chrono::{DateTime, Utc};
use pagestream_events::{Ancestor, Author, ContentMetadata, ContentType, PageConverted, PageInfo};
use serde::Serialize;
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::{StoreError, bigint};

/// Filters on the page a row belongs to, shared by search and the page listing.
#[derive(Debug, Default, Clone)]
pub struct PageFilters {
    pub source_id: Option<Uuid>,
    pub space: Option<String>,
    /// A label, lowercase as Confluence stores them.
    pub label: Option<String>,
    /// A materialized path: the page at its end and everything below it.
    pub path: Option<String>,
    pub jira: Option<String>,
    pub mention: Option<String>,
    pub updated_after: Option<DateTime<Utc>>,
    /// Only pages, or only blog posts.
    pub content_type: Option<ContentType>,
}

impl PageFilters {
    pub fn is_empty(&self) -> bool {
        self.source_id.is_none()
            && self.space.is_none()
            && self.label.is_none()
            && self.path.is_none()
            && self.jira.is_none()
            && self.mention.is_none()
            && self.updated_after.is_none()
            && self.content_type.is_none()
    }

    /// Appends the filters as ` AND ...` conditions on `p` (confluence_pages).
    pub(crate) fn push(&self, sql: &mut QueryBuilder<Postgres>) {
        if let Some(source_id) = self.source_id {
            sql.push(" AND p.source_id = ").push_bind(source_id);
        }
        if let Some(space) = &self.space {
            sql.push(" AND p.space_key = ").push_bind(space.clone());
        }
        if let Some(label) = &self.label {
            sql.push(" AND p.labels @> ARRAY[")
                .push_bind(label.clone())
                .push("]");
        }
        if let Some(path) = &self.path {
            // `path text_pattern_ops` serves the prefix match; ids are digits, so nothing to escape.
            sql.push(" AND (p.path = ")
                .push_bind(path.clone())
                .push(" OR p.path LIKE ")
                .push_bind(format!("{path}/%"))
                .push(")");
        }
        if let Some(jira) = &self.jira {
            sql.push(" AND p.jira_keys @> ARRAY[")
                .push_bind(jira.clone())
                .push("]");
        }
        if let Some(mention) = &self.mention {
            sql.push(" AND p.mentions @> ARRAY[")
                .push_bind(mention.clone())
                .push("]");
        }
        if let Some(updated_after) = self.updated_after {
            sql.push(" AND p.last_modified >= ")
                .push_bind(updated_after);
        }
        if let Some(content_type) = self.content_type {
            sql.push(" AND p.content_type = ")
                .push_bind(content_type.as_str());
        }
    }
}

/// Where a listed page stands: its title, its place in the tree, its links.
#[derive(Debug, Default, Clone)]
pub struct PageRelations {
    /// The page titled so (case-insensitive).
    pub title: Option<String>,
    /// The direct children of this page id.
    pub parent: Option<String>,
    /// Only pages without a parent (blog posts have none, and are no part of the tree).
    pub top_level: bool,
    /// Pages whose links point at this page id.
    pub links_to: Option<String>,
}

impl PageRelations {
    /// Appends the conditions as ` AND ...` on `p` (confluence_pages).
    fn push(&self, sql: &mut QueryBuilder<Postgres>) {
        if let Some(title) = &self.title {
            sql.push(" AND lower(p.title) = lower(")
                .push_bind(title.clone())
                .push(")");
        }
        if let Some(parent) = &self.parent {
            // A child's path ends with its parent's id and its own (ids are digits: no wildcards).
            sql.push(" AND p.path LIKE '%/' || ")
                .push_bind(parent.clone())
                .push(" || '/' || p.page_id");
        }
        if self.top_level {
            sql.push(" AND p.path = '/' || p.page_id AND p.content_type = 'page'");
        }
        if let Some(target) = &self.links_to {
            // A link names its target by id, or by title (and space, when another one).
            sql.push(
                " AND EXISTS (SELECT 1 FROM confluence_pages t, jsonb_array_elements(\
                 CASE WHEN jsonb_typeof(p.metadata -> 'internal_links') = 'array' \
                 THEN p.metadata -> 'internal_links' ELSE '[]'::jsonb END) AS link \
                 WHERE t.source_id = p.source_id AND NOT t.is_deleted AND t.page_id = ",
            )
            .push_bind(target.clone())
            .push(
                " AND p.page_id <> t.page_id AND (link ->> 'page_id' = t.page_id \
                 OR (link ->> 'title' = t.title \
                 AND COALESCE(link ->> 'space_key', p.space_key) = t.space_key)))",
            );
        }
    }
}

/// The `metadata` document shown with a page: what the page event says, plus the converter's
/// content metadata once the page is converted.
#[derive(Serialize)]
struct PageMetadata<'a> {
    ancestors: &'a [Ancestor],
    labels: &'a [String],
    author: &'a Option<Author>,
    created_at: &'a Option<DateTime<Utc>>,
    #[serde(flatten)]
    content: Option<&'a ContentMetadata>,
}

/// Upserts a page's row from what a page event says; `converted` carries the Markdown and content
/// metadata of `page.converted` (`page.changed` keeps what is stored). Returns whether the row
/// changed: on conflict it changes only for a (version, incarnation) at least the stored one, and a
/// deleted row only for a strictly newer one. The same version and incarnation again updates where
/// the page stands (a move or a label change creates no version) and its Markdown (a comment
/// change: the `page.changed` of the new incarnation arrives first and keeps the old Markdown).
pub async fn upsert(
    conn: &mut PgConnection,
    source_id: Uuid,
    page: &PageInfo,
    converted: Option<&PageConverted>,
) -> Result<bool, StoreError> {
    let version = bigint("page version", page.version)?;
    let incarnation = bigint("page incarnation", page.incarnation)?;
    let content = converted.map(|event| &event.metadata);
    let metadata = serde_json::to_value(PageMetadata {
        ancestors: &page.ancestors,
        labels: &page.labels,
        author: &page.author,
        created_at: &page.created_at,
        content,
    })
    .map_err(|error| StoreError::Invalid {
        what: "page metadata",
        reason: error.to_string(),
    })?;
    let markdown = converted.map(|event| event.markdown.as_str());
    let jira_keys = content.map(|content| content.jira_issue_links.as_slice());
    let mentions = content.map(|content| content.user_mentions.as_slice());
    // Converted metadata replaces the stored one; page.changed merges into it (keeping the
    // converter's fields).
    let result = sqlx::query(
        r#"
        INSERT INTO confluence_pages AS p
            (source_id, page_id, space_key, title, version, last_modified, path, url, metadata,
             markdown, markdown_version, labels, jira_keys, mentions, incarnation, content_type)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, CASE WHEN $10::text IS NULL THEN NULL ELSE $5 END,
                $11, COALESCE($12, '{}'), COALESCE($13, '{}'), $14, $15)
        ON CONFLICT (source_id, page_id) DO UPDATE SET
            space_key = EXCLUDED.space_key,
            content_type = EXCLUDED.content_type,
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
            labels = EXCLUDED.labels,
            jira_keys = COALESCE($12, p.jira_keys),
            mentions = COALESCE($13, p.mentions),
            updated_at = now()
        WHERE (p.version, p.incarnation) < (EXCLUDED.version, EXCLUDED.incarnation)
           OR ((p.version, p.incarnation) = (EXCLUDED.version, EXCLUDED.incarnation) AND NOT p.is_deleted
               AND ($10::text IS NULL OR p.markdown_version IS DISTINCT FROM EXCLUDED.version
                    OR p.markdown IS DISTINCT FROM $10
                    OR p.path IS DISTINCT FROM EXCLUDED.path
                    OR p.labels IS DISTINCT FROM EXCLUDED.labels))
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
    .bind(&page.labels)
    .bind(jira_keys)
    .bind(mentions)
    .bind(incarnation)
    .bind(page.content_type.as_str())
    .execute(&mut *conn)
    .await?;
    Ok(result.rows_affected() > 0)
}

/// Marks a page deleted at `(version, incarnation)` (keeping nothing of its content, as a replay
/// that never sees the purged events would build it) and removes its chunks of versions up to that
/// one; a newer version's chunks stay, and a stale tombstone leaves a restored page's chunks alone.
/// Version 0 (the fetcher confirmed the page gone without ever knowing its version) deletes
/// whatever is stored. Returns whether the page row changed.
pub async fn tombstone(
    conn: &mut PgConnection,
    source_id: Uuid,
    page_id: &str,
    space_key: Option<&str>,
    version: u64,
    incarnation: u64,
) -> Result<bool, StoreError> {
    let version = bigint("page version", version)?;
    let incarnation = bigint("page incarnation", incarnation)?;
    let result = sqlx::query(
        r#"
        INSERT INTO confluence_pages AS p (source_id, page_id, space_key, version, incarnation, is_deleted)
        VALUES ($1, $2, COALESCE($3, ''), $4, $5, true)
        ON CONFLICT (source_id, page_id) DO UPDATE SET
            is_deleted = true,
            version = CASE WHEN EXCLUDED.version = 0 THEN p.version ELSE EXCLUDED.version END,
            incarnation = CASE WHEN EXCLUDED.version = 0 THEN p.incarnation ELSE EXCLUDED.incarnation END,
            title = '', path = '', url = '', metadata = '{}'::jsonb, last_modified = NULL,
            labels = '{}', jira_keys = '{}', mentions = '{}',
            markdown = NULL, markdown_version = NULL, chunks_version = NULL, chunks_incarnation = 0,
            updated_at = now()
        WHERE NOT p.is_deleted
          AND ((p.version, p.incarnation) <= (EXCLUDED.version, EXCLUDED.incarnation) OR EXCLUDED.version = 0)
        "#,
    )
    .bind(source_id)
    .bind(page_id)
    .bind(space_key)
    .bind(version)
    .bind(incarnation)
    .execute(&mut *conn)
    .await?;
    let applied = result.rows_affected() > 0;
    if applied {
        sqlx::query(
            "DELETE FROM chunks WHERE source_id = $1 AND page_id = $2 AND ($3 = 0 OR page_version <= $3)",
        )
        .bind(source_id)
        .bind(page_id)
        .bind(version)
        .execute(&mut *conn)
        .await?;
    }
    Ok(applied)
}

/// Every page row, deleted ones included.
pub async fn count_all(pool: &PgPool) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar("SELECT count(*) FROM confluence_pages")
        .fetch_one(pool)
        .await?)
}

/// A live page as listed.
#[derive(Debug, sqlx::FromRow)]
pub struct PageSummary {
    pub source: String,
    pub page_id: String,
    pub space_key: String,
    pub title: String,
    pub version: i64,
    pub last_modified: Option<DateTime<Utc>>,
    pub path: String,
    pub url: String,
    pub labels: Vec<String>,
    /// `page` or `blogpost`.
    pub content_type: String,
}

/// A live page with its Markdown and metadata.
#[derive(Debug, sqlx::FromRow)]
pub struct PageDetail {
    #[sqlx(flatten)]
    pub page: PageSummary,
    pub markdown: Option<String>,
    pub metadata: sqlx::types::Json<serde_json::Value>,
    pub updated_at: DateTime<Utc>,
}

const SUMMARY_COLUMNS: &str = "s.key AS source, p.page_id, p.space_key, p.title, p.version, \
    p.last_modified, p.path, p.url, p.labels, p.content_type";

/// A source's live pages passing `filters` and `relations`, in numeric id order, after the page
/// `after` (ids are decimal strings): at most `limit`.
pub async fn list(
    pool: &PgPool,
    source_id: Uuid,
    filters: &PageFilters,
    relations: &PageRelations,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<PageSummary>, StoreError> {
    let mut sql: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "SELECT {SUMMARY_COLUMNS} FROM confluence_pages p JOIN sources s ON s.id = p.source_id \
         WHERE NOT p.is_deleted AND p.source_id = "
    ));
    sql.push_bind(source_id);
    filters.push(&mut sql);
    relations.push(&mut sql);
    if let Some(after) = after {
        sql.push(" AND (length(p.page_id), p.page_id) > (");
        sql.push_bind(after.len() as i32);
        sql.push(", ");
        sql.push_bind(after.to_owned());
        sql.push(")");
    }
    sql.push(" ORDER BY length(p.page_id), p.page_id LIMIT ");
    sql.push_bind(limit);
    Ok(sql.build_query_as().fetch_all(pool).await?)
}

/// One live page.
pub async fn detail(
    pool: &PgPool,
    source_id: Uuid,
    page_id: &str,
) -> Result<Option<PageDetail>, StoreError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SUMMARY_COLUMNS}, p.markdown, p.metadata, p.updated_at \
         FROM confluence_pages p JOIN sources s ON s.id = p.source_id \
         WHERE p.source_id = $1 AND p.page_id = $2 AND NOT p.is_deleted"
    )))
    .bind(source_id)
    .bind(page_id)
    .fetch_optional(pool)
    .await?)
}
