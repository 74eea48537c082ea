//! Pages as the projection holds them: a source's pages (paginated, filterable) and one page's
//! Markdown and metadata. Deleted pages are not shown.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use pagestream_events::PageId;
use pagestream_store::pages;
use pagestream_views::{PageDetail, PageList, PageSummary};
use uuid::Uuid;

use crate::AppState;
use crate::error::{ApiError, ErrorBody, ErrorCode, truncated};
use crate::params::QueryParams;
use crate::search::parse_filters;
use crate::sources::projected_source_id;

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
        ("content_type" = Option<String>, Query, description = "page or blogpost: only pages, or only blog posts"),
        ("title" = Option<String>, Query, description = "the page titled so (case-insensitive)"),
        ("parent" = Option<String>, Query, description = "the direct children of this page id"),
        ("top_level" = Option<bool>, Query, description = "only pages without a parent (no blog posts)"),
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
    let filters = parse_filters(&mut params, true)?;
    let relations = parse_relations(&mut params)?;
    let limit = params.integer("limit", 1..=500)?.unwrap_or(50);
    let cursor = params
        .text("cursor", 40)?
        .map(|cursor| parse_cursor(&cursor))
        .transpose()?;
    params.finish()?;
    let source_id = projected_source_id(&state, &id, "id").await?;

    // Keyset pagination in numeric id order (ids are decimal strings).
    let mut pages: Vec<PageSummary> = pages::list(
        &state.inner.pool,
        source_id,
        &filters,
        &relations,
        cursor.as_deref(),
        i64::from(limit) + 1,
    )
    .await?
    .into_iter()
    .map(summary_view)
    .collect();
    let next_cursor = if pages.len() > limit as usize {
        pages.truncate(limit as usize);
        pages.last().map(|page| page.page_id.clone())
    } else {
        None
    };
    Ok(Json(PageList { pages, next_cursor }))
}

fn summary_view(page: pages::PageSummary) -> PageSummary {
    PageSummary {
        source: page.source,
        page_id: page.page_id,
        space_key: page.space_key,
        title: page.title,
        version: page.version,
        last_modified: page.last_modified,
        path: page.path,
        url: page.url,
        labels: page.labels,
        content_type: page.content_type,
    }
}

/// Reads `title`, `parent`, `top_level` and `links_to`.
fn parse_relations(params: &mut QueryParams) -> Result<pages::PageRelations, ApiError> {
    let page_id = |value: Option<String>, field: &str| {
        value
            .map(|id| {
                PageId::new(id)
                    .map(|id| id.as_str().to_owned())
                    .map_err(|_| ApiError::invalid(field, "not a Confluence page id"))
            })
            .transpose()
    };
    Ok(pages::PageRelations {
        title: params.text("title", 255)?,
        parent: page_id(params.text("parent", 40)?, "parent")?,
        top_level: params.boolean("top_level")?.unwrap_or(false),
        links_to: page_id(params.text("links_to", 40)?, "links_to")?,
    })
}

fn parse_cursor(cursor: &str) -> Result<String, ApiError> {
    let id = PageId::new(cursor).map_err(|_| ApiError::invalid("cursor", "not a cursor"))?;
    Ok(id.as_str().to_owned())
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
    let detail = pages::detail(&state.inner.pool, source_id, page.as_str())
        .await?
        .map(|detail| PageDetail {
            page: summary_view(detail.page),
            markdown: detail.markdown,
            metadata: detail.metadata.0,
            updated_at: detail.updated_at,
        });
    detail.map(Json).ok_or_else(|| {
        ApiError::new(
            ErrorCode::PageNotFound,
            format!("no page {page} in source {:?}", truncated(&source)),
        )
    })
}
