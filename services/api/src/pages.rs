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
        ("space" = Option<String>, Query, description = "Confluence space key"),
        ("jira" = Option<String>, Query, description = "Jira issue key linked from the page"),
        ("mention" = Option<String>, Query, description = "user mentioned on the page"),
        ("title" = Option<String>, Query, description = "the page titled so (case-insensitive)"),
        ("parent" = Option<String>, Query, description = "the direct children of this page id"),
        ("top_level" = Option<bool>, Query, description = "only pages without a parent"),
        ("links_to" = Option<String>, Query, description = "pages whose links point at this page id"),
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
    let filters = PageFilters::parse(&mut params, true)?;
    let relations = PageRelations::parse(&mut params)?;
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
    relations.push_conditions(&mut sql);
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

/// Where a listed page stands: its title, its place in the tree, its links.
#[derive(Debug, Default)]
struct PageRelations {
    title: Option<String>,
    parent: Option<PageId>,
    top_level: bool,
    links_to: Option<PageId>,
}

impl PageRelations {
    fn parse(params: &mut QueryParams) -> Result<Self, ApiError> {
        let page_id = |value: Option<String>, field: &str| {
            value
                .map(|id| {
                    PageId::new(id)
                        .map_err(|_| ApiError::invalid(field, "not a Confluence page id"))
                })
                .transpose()
        };
        Ok(Self {
            title: params.text("title", 255)?,
            parent: page_id(params.text("parent", 40)?, "parent")?,
            top_level: params.boolean("top_level")?.unwrap_or(false),
            links_to: page_id(params.text("links_to", 40)?, "links_to")?,
        })
    }

    /// Appends the conditions as ` AND ...` on `p` (confluence_pages).
    fn push_conditions(&self, sql: &mut QueryBuilder<Postgres>) {
        if let Some(title) = &self.title {
            sql.push(" AND lower(p.title) = lower(")
                .push_bind(title.clone())
                .push(")");
        }
        if let Some(parent) = &self.parent {
            // A child's path ends with its parent's id and its own (ids are digits: no wildcards).
            sql.push(" AND p.path LIKE '%/' || ")
                .push_bind(parent.as_str().to_owned())
                .push(" || '/' || p.page_id");
        }
        if self.top_level {
            sql.push(" AND p.path = '/' || p.page_id");
        }
        if let Some(target) = &self.links_to {
            // A link names its target by id, or by title (and space, when another one).
            sql.push(
                " AND EXISTS (SELECT 1 FROM confluence_pages t, jsonb_array_elements(\
                 CASE WHEN jsonb_typeof(p.metadata -> 'internal_links') = 'array' \
                 THEN p.metadata -> 'internal_links' ELSE '[]'::jsonb END) AS link \
                 WHERE t.source_id = p.source_id AND NOT t.is_deleted AND t.page_id = ",
            )
            .push_bind(target.as_str().to_owned())
            .push(
                " AND p.page_id <> t.page_id AND (link ->> 'page_id' = t.page_id \
                 OR (link ->> 'title' = t.title \
                 AND COALESCE(link ->> 'space_key', p.space_key) = t.space_key)))",
            );
        }
    }
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
