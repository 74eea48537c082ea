//! Pages as the projection holds them: a source's pages (paginated, filterable) and one page's
//! Markdown and metadata. Deleted pages are not shown.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use chrono::{DateTime, Utc};
use pagestream_events::PageId;
use serde::Serialize;
use sqlx::{Postgres, QueryBuilder};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::error::{ApiError, ErrorBody, ErrorCode, truncated};
use crate::params::QueryParams;
use crate::search::{PageFilters, push_page_filters};
use crate::sources::projected_source_id;

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct PageSummary {
    pub source: String,
    pub page_id: String,
    pub space_key: String,
    pub title: String,
    pub version: i64,
    pub last_modified: Option<DateTime<Utc>>,
    /// Ancestor ids and the page itself: `/root/parent/page`.
    pub path: String,
    pub url: String,
    #[schema(value_type = Vec<String>)]
    pub labels: sqlx::types::Json<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PageList {
    pub pages: Vec<PageSummary>,
    /// Pass as `cursor` to get the next page of results; absent on the last one.
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct PageDetail {
    #[sqlx(flatten)]
    #[serde(flatten)]
    pub page: PageSummary,
    pub markdown: Option<String>,
    /// Ancestors, labels, author, jira_issue_links, user_mentions, links, attachments, word_count.
    #[schema(value_type = Object)]
    pub metadata: sqlx::types::Json<serde_json::Value>,
    pub updated_at: DateTime<Utc>,
}

const SUMMARY_COLUMNS: &str = "s.key AS source, p.page_id, p.space_key, p.title, p.version, \
    p.last_modified, p.path, p.url, \
    COALESCE(CASE WHEN jsonb_typeof(p.metadata -> 'labels') = 'array' \
        THEN p.metadata -> 'labels' END, '[]'::jsonb) AS labels";

#[utoipa::path(
    get, path = "/api/confluence/{id}/pages", tag = "pages",
    params(
        ("id" = String, Path, description = "source key or uuid"),
        ("path" = Option<String>, Query, description = "subtree: a materialized path such as /65601/65602"),
        ("label" = Option<String>, Query),
        ("updated_after" = Option<String>, Query, description = "RFC 3339 timestamp or date"),
        ("limit" = Option<u32>, Query, description = "1 to 500, default 50"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous response"),
    ),
    responses(
        (status = 200, body = PageList),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn list(
    State(state): State<AppState>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<PageList>, ApiError> {
    let mut params = QueryParams::parse(query.as_deref())?;
    let filters = PageFilters::parse(&mut params, false)?;
    let limit = params.integer("limit", 1..=500)?.unwrap_or(50);
    let cursor = params
        .text("cursor", 40)?
        .map(|cursor| parse_cursor(&cursor))
        .transpose()?;
    params.finish()?;
    let source_id = projected_source_id(&state, &id, "id").await?;

    let mut sql: QueryBuilder<Postgres> = QueryBuilder::new(format!(
        "SELECT {SUMMARY_COLUMNS} FROM confluence_pages p JOIN sources s ON s.id = p.source_id \
         WHERE NOT p.is_deleted AND p.source_id = "
    ));
    sql.push_bind(source_id);
    push_page_filters(&mut sql, &filters);
    // Keyset pagination in numeric id order (ids are decimal strings).
    if let Some((length, id)) = &cursor {
        sql.push(" AND (length(p.page_id), p.page_id) > (");
        sql.push_bind(*length);
        sql.push(", ");
        sql.push_bind(id.clone());
        sql.push(")");
    }
    sql.push(" ORDER BY length(p.page_id), p.page_id LIMIT ");
    sql.push_bind(i64::from(limit) + 1);
    let mut pages: Vec<PageSummary> = sql.build_query_as().fetch_all(&state.inner.pool).await?;
    let next_cursor = if pages.len() > limit as usize {
        pages.truncate(limit as usize);
        pages.last().map(|page| page.page_id.clone())
    } else {
        None
    };
    Ok(Json(PageList { pages, next_cursor }))
}

fn parse_cursor(cursor: &str) -> Result<(i32, String), ApiError> {
    let id = PageId::new(cursor).map_err(|_| ApiError::invalid("cursor", "not a cursor"))?;
    Ok((id.as_str().len() as i32, id.as_str().to_owned()))
}

#[utoipa::path(
    get, path = "/api/pages/{source}/{page}", tag = "pages",
    params(
        ("source" = String, Path, description = "source key or uuid"),
        ("page" = String, Path, description = "Confluence page id"),
    ),
    responses(
        (status = 200, body = PageDetail),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn detail(
    State(state): State<AppState>,
    Path((source, page)): Path<(String, String)>,
) -> Result<Json<PageDetail>, ApiError> {
    let page =
        PageId::new(page).map_err(|_| ApiError::invalid("page", "not a Confluence page id"))?;
    let source_id: Uuid = projected_source_id(&state, &source, "source").await?;
    let detail: Option<PageDetail> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SUMMARY_COLUMNS}, p.markdown, p.metadata, p.updated_at \
         FROM confluence_pages p JOIN sources s ON s.id = p.source_id \
         WHERE p.source_id = $1 AND p.page_id = $2 AND NOT p.is_deleted"
    )))
    .bind(source_id)
    .bind(page.as_str())
    .fetch_optional(&state.inner.pool)
    .await?;
    detail.map(Json).ok_or_else(|| {
        ApiError::new(
            ErrorCode::PageNotFound,
            format!("no page {page} in source {:?}", truncated(&source)),
        )
    })
}
