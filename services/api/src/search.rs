//! Hybrid search over HTTP (DESIGN §6): the query is validated and embedded here; the store runs
//! the hybrid query ([`pagestream_store::search`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Json;
use axum::extract::{RawQuery, State};
use pagestream_confluence::SpaceKey;
use pagestream_events::ContentType;
use pagestream_store::pages::PageFilters;
use pagestream_store::search::{self, ChunkKind, HybridQuery, QueryVector};
pub use pagestream_views::{SearchHit, SearchResponse};
use uuid::Uuid;

use crate::error::{ApiError, ErrorBody};
use crate::params::QueryParams;
use crate::search_index::{Nearest, SearchIndex, SearchIndexError, TextRanking};
use crate::sources::projected_source_id;
use crate::{AppState, TextLeg};

/// Marks a highlighted term in `ts_headline` output before the snippet is HTML-escaped: private-use
/// characters that cannot collide with anything escaping produces.
const MARK_START: char = '\u{E000}';
const MARK_END: char = '\u{E001}';

/// Reads `path`, `label` and `updated_after`, and with `all` also `space`, `jira`, `mention` and
/// `content_type` (`source` is resolved by the caller).
pub fn parse_filters(params: &mut QueryParams, all: bool) -> Result<PageFilters, ApiError> {
    let mut filters = PageFilters {
        label: params.text("label", 255)?.map(|label| label.to_lowercase()),
        path: params
            .text("path", 2000)?
            .map(|path| parse_path(&path))
            .transpose()?,
        updated_after: params.timestamp("updated_after")?,
        ..PageFilters::default()
    };
    if all {
        filters.space = params
            .text("space", 255)?
            .map(|space| {
                SpaceKey::new(space.as_str())
                    .map(|_| space)
                    .map_err(|_| ApiError::invalid("space", "not a Confluence space key"))
            })
            .transpose()?;
        filters.jira = params
            .text("jira", 64)?
            .map(|key| parse_jira_key(&key))
            .transpose()?;
        filters.mention = params.text("mention", 200)?;
        filters.content_type = params
            .text("content_type", 20)?
            .map(|kind| {
                kind.parse::<ContentType>()
                    .map_err(|reason| ApiError::invalid("content_type", reason))
            })
            .transpose()?;
    }
    Ok(filters)
}

fn parse_path(path: &str) -> Result<String, ApiError> {
    let trimmed = path.trim_end_matches('/');
    let valid = trimmed.starts_with('/')
        && trimmed[1..]
            .split('/')
            .all(|id| !id.is_empty() && id.len() <= 32 && id.bytes().all(|b| b.is_ascii_digit()));
    if valid {
        Ok(trimmed.to_owned())
    } else {
        Err(ApiError::invalid(
            "path",
            "must be a path of page ids such as /65601/65602",
        ))
    }
}

fn parse_jira_key(key: &str) -> Result<String, ApiError> {
    pagestream_events::jira::normalize_issue_key(key)
        .ok_or_else(|| ApiError::invalid("jira", "must be a Jira issue key such as PROJ-123"))
}

/// Reads `kind` (section or code) and `language` (implies code).
fn parse_kind(params: &mut QueryParams) -> Result<ChunkKind, ApiError> {
    let language = params
        .text("language", 40)?
        .map(|language| language.to_ascii_lowercase());
    match params.text("kind", 20)?.as_deref() {
        None | Some("section") if language.is_none() => Ok(ChunkKind::Section),
        None | Some("code") => Ok(ChunkKind::Code { language }),
        Some("section") => Err(ApiError::invalid("language", "applies to kind=code only")),
        Some(_) => Err(ApiError::invalid("kind", "must be section or code")),
    }
}

/// A validated search request.
#[derive(Debug, Clone)]
pub struct SearchRequest {
    pub query: String,
    pub limit: u32,
    pub filters: PageFilters,
    pub kind: ChunkKind,
}

#[utoipa::path(
    get, path = "/api/search", tag = "search",
    params(
        ("q" = String, Query, description = "the query: words, \"a phrase\", -excluded, or"),
        ("limit" = Option<u32>, Query, description = "1 to 100, default 10"),
        ("source" = Option<String>, Query, description = "source key or uuid"),
        ("space" = Option<String>, Query, description = "Confluence space key"),
        ("label" = Option<String>, Query, description = "page label"),
        ("path" = Option<String>, Query, description = "subtree: a materialized path such as /65601/65602"),
        ("jira" = Option<String>, Query, description = "Jira issue key linked from the page"),
        ("mention" = Option<String>, Query, description = "user mentioned on the page"),
        ("updated_after" = Option<String>, Query, description = "RFC 3339 timestamp or date"),
        ("content_type" = Option<String>, Query, description = "page or blogpost: only pages, or only blog posts"),
        ("kind" = Option<String>, Query, description = "section (default) or code: the code blocks"),
        ("language" = Option<String>, Query, description = "code blocks of this language (implies kind=code)"),
    ),
    responses(
        (status = 200, body = SearchResponse),
        (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
    ),
    security(("api_key" = []))
)]
pub async fn handler(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Json<SearchResponse>, ApiError> {
    let started = Instant::now();
    let mut params = QueryParams::parse(query.as_deref())?;
    let query = params
        .text("q", 1000)?
        .ok_or_else(|| ApiError::invalid("q", "is required"))?;
    let limit = params.integer("limit", 1..=100)?.unwrap_or(10);
    let source = params.text("source", 100)?;
    let mut filters = parse_filters(&mut params, true)?;
    let kind = parse_kind(&mut params)?;
    params.finish()?;
    // A source named by its id is checked only when the search finds nothing: a hit is joined
    // with its source's row, so a search with hits names a source that exists.
    let mut unchecked_source = None;
    if let Some(source) = source {
        filters.source_id = Some(match Uuid::parse_str(&source) {
            Ok(id) => {
                unchecked_source = Some(source);
                id
            }
            Err(_) => projected_source_id(&state, &source, "source").await?,
        });
    }
    let mut response = search(
        &state,
        &SearchRequest {
            query,
            limit,
            filters,
            kind,
        },
    )
    .await?;
    if let Some(source) = unchecked_source
        && response.hits.is_empty()
    {
        projected_source_id(&state, &source, "source").await?;
    }
    response.took_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(Json(response))
}

pub async fn search(state: &AppState, request: &SearchRequest) -> Result<SearchResponse, ApiError> {
    let settings = &state.inner.search;
    let model = settings.embedding_model.as_str();
    let depth = settings.leg_depth.max(request.limit);
    let mut warnings = Vec::new();
    // The query's embedding (a request to the embedder) and its BM25 ranking (CPU here) at once.
    let (embedded, text_ranking) = tokio::join!(
        state.inner.embedder.embed(&request.query),
        bm25_ranking(state, request, depth)
    );
    let vector = match embedded {
        Ok(embedding) => match model_dimension(state, model).await? {
            Some(dimension) if dimension as usize == embedding.vector.len() => {
                Some((dimension, embedding.vector))
            }
            Some(dimension) => {
                warnings.push(format!(
                    "the query vector has {} dimensions, the stored vectors {dimension}: full-text results only",
                    embedding.vector.len()
                ));
                None
            }
            None => {
                warnings.push(format!(
                    "no vectors of model {model:?} are stored: full-text results only"
                ));
                None
            }
        },
        Err(error) => {
            tracing::warn!(%error, "query embedding failed; searching full text only");
            warnings.push(format!("{error}: full-text results only"));
            None
        }
    };
    // Without the model's vector index (bulk mode builds it after a load) Postgres can only read
    // every row: the in-memory index ranks whatever the filters leave, however many pages.
    let no_vector_index = vector.is_some() && !vector_index_exists(state, model).await?;
    let (exact, vector_ranking) = match &vector {
        Some((_, embedding)) if !request.filters.is_empty() || no_vector_index => {
            match memory_nearest(state, request, embedding, depth, no_vector_index).await {
                Some(Nearest::Ranked(ranking)) => (true, Some(ranking)),
                Some(Nearest::TooManyPages) => (false, None),
                None if settings.exact_filter_pages == 0 || request.filters.is_empty() => {
                    (false, None)
                }
                None => {
                    let cap = i64::from(settings.exact_filter_pages);
                    let few = search::count_live_pages(&state.inner.pool, &request.filters, cap)
                        .await?
                        <= cap;
                    (few, None)
                }
            }
        }
        _ => (false, None),
    };
    let headline_options = headline_options();
    let rows = search::hybrid(
        &state.inner.pool,
        &HybridQuery {
            text: &request.query,
            model,
            vector: vector.as_ref().map(|(dimension, vector)| QueryVector {
                dimension: *dimension,
                vector,
                exact,
            }),
            filters: &request.filters,
            kind: &request.kind,
            depth: i64::from(depth),
            text_candidates: (settings.text_candidates > 0)
                .then(|| i64::from(settings.text_candidates.max(settings.leg_depth))),
            text_ranking: text_ranking.as_deref(),
            vector_ranking: vector_ranking.as_deref(),
            rrf_k: f64::from(settings.rrf_k),
            limit: i64::from(request.limit),
            headline_options: &headline_options,
        },
    )
    .await?;
    let hits = rows
        .into_iter()
        .map(|row| SearchHit {
            snippet: highlight_html(&row.snippet),
            source: row.source,
            page_id: row.page_id,
            chunk_index: row.chunk_index,
            title: row.title,
            url: row.url,
            space_key: row.space_key,
            path: row.path,
            heading_path: row.heading_path,
            text: row.text,
            score: row.score,
            vector_rank: row.vector_rank,
            text_rank: row.text_rank,
            last_modified: row.last_modified,
            kind: row.kind,
            content_type: row.content_type,
            language: row.language,
            code_title: row.code_title,
        })
        .collect();
    Ok(SearchResponse {
        query: request.query.clone(),
        model: model.to_owned(),
        hits,
        warnings,
        took_ms: 0.0,
    })
}

/// The text leg ranked by the BM25 index: none while it loads, or if it fails (then Postgres ranks
/// the text leg, and the failure is logged).
async fn bm25_ranking(
    state: &AppState,
    request: &SearchRequest,
    depth: u32,
) -> Option<Vec<search::ChunkKey>> {
    if state.inner.search.text_leg != TextLeg::Bm25 {
        return None;
    }
    let query = request.query.clone();
    rank_in_memory(state, request, "text", move |index, filters, kind| {
        index.search(
            &query,
            filters,
            kind,
            depth as usize,
            &TextRanking::default(),
        )
    })
    .await
}

/// The vector leg ranked exactly by the in-process index, when there is one and the filters
/// leave at most `memory_exact_filter_pages` pages (any number with `every_page`); none when there
/// is none or it fails (then Postgres decides and ranks, and the failure is logged).
async fn memory_nearest(
    state: &AppState,
    request: &SearchRequest,
    embedding: &[f32],
    depth: u32,
    every_page: bool,
) -> Option<Nearest> {
    let max_pages = state.inner.search.memory_exact_filter_pages as usize;
    if !state.inner.search.memory_vectors || max_pages == 0 {
        return None;
    }
    let max_pages = if every_page { usize::MAX } else { max_pages };
    let embedding = embedding.to_vec();
    rank_in_memory(state, request, "vector", move |index, filters, kind| {
        index.nearest(&embedding, filters, kind, depth as usize, max_pages)
    })
    .await
}

/// Runs `rank` over the loaded search index with the request's filters and kind, off the runtime
/// (CPU work); none when the index has not loaded or `rank` fails (logged): Postgres ranks the
/// `leg` then.
async fn rank_in_memory<T: Send + 'static>(
    state: &AppState,
    request: &SearchRequest,
    leg: &'static str,
    rank: impl FnOnce(&SearchIndex, &PageFilters, &ChunkKind) -> Result<T, SearchIndexError>
    + Send
    + 'static,
) -> Option<T> {
    let index = Arc::clone(state.ready_search_index()?);
    let filters = request.filters.clone();
    let kind = request.kind.clone();
    match tokio::task::spawn_blocking(move || rank(&index, &filters, &kind)).await {
        Ok(Ok(ranking)) => Some(ranking),
        Ok(Err(error)) => {
            tracing::warn!(%error, leg, "in-memory ranking failed; postgres ranks the leg");
            None
        }
        Err(error) => {
            tracing::warn!(%error, leg, "in-memory ranking task failed; postgres ranks the leg");
            None
        }
    }
}

/// The dimension of a model's stored vectors, if any are stored (cached: it never changes).
async fn model_dimension(state: &AppState, model: &str) -> Result<Option<i32>, ApiError> {
    if let Ok(known) = state.inner.model_dimensions.lock()
        && let Some(dimension) = known.get(model)
    {
        return Ok(Some(*dimension));
    }
    let dimension = pagestream_store::model_dimension(&state.inner.pool, model).await?;
    if let (Some(dimension), Ok(mut known)) = (dimension, state.inner.model_dimensions.lock()) {
        known.insert(model.to_owned(), dimension);
    }
    Ok(dimension)
}

/// Whether the model's vector index exists, as read at most a second ago.
async fn vector_index_exists(state: &AppState, model: &str) -> Result<bool, ApiError> {
    if let Ok(seen) = state.inner.vector_index_seen.lock()
        && let Some((at, exists)) = *seen
        && at.elapsed() < Duration::from_secs(1)
    {
        return Ok(exists);
    }
    let exists = pagestream_store::embedding_index_exists(&state.inner.pool, model).await?;
    if let Ok(mut seen) = state.inner.vector_index_seen.lock() {
        *seen = Some((Instant::now(), exists));
    }
    Ok(exists)
}

/// Escapes the headline for HTML and turns the sentinel marks into `<mark>` elements.
fn highlight_html(headline: &str) -> String {
    let mut html = String::with_capacity(headline.len() + 32);
    for c in headline.chars() {
        match c {
            MARK_START => html.push_str("<mark>"),
            MARK_END => html.push_str("</mark>"),
            '&' => html.push_str("&amp;"),
            '<' => html.push_str("&lt;"),
            '>' => html.push_str("&gt;"),
            '"' => html.push_str("&quot;"),
            '\'' => html.push_str("&#39;"),
            c => html.push(c),
        }
    }
    html
}

/// `ts_headline` options: the sentinel marks, up to two fragments of a sentence or so each.
fn headline_options() -> String {
    format!(
        "StartSel={MARK_START}, StopSel={MARK_END}, MaxFragments=2, MaxWords=30, MinWords=12, \
         FragmentDelimiter=\" … \""
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snippets_are_escaped_and_marked() {
        let headline = format!("use {MARK_START}<script>{MARK_END} & \"quotes\"");
        assert_eq!(
            highlight_html(&headline),
            "use <mark>&lt;script&gt;</mark> &amp; &quot;quotes&quot;"
        );
        assert!(headline_options().contains("MaxFragments=2"));
    }

    #[test]
    fn filters_are_validated() {
        assert_eq!(parse_path("/1/22/").expect("path"), "/1/22");
        assert!(parse_path("1/2").is_err());
        assert!(parse_path("/1//2").is_err());
        assert!(parse_path("/1/x").is_err());
        assert!(parse_path("/").is_err());
        assert_eq!(parse_jira_key("proj-12").expect("key"), "PROJ-12");
        assert!(parse_jira_key("PROJ").is_err());
        assert!(parse_jira_key("12-PROJ").is_err());
        assert!(parse_jira_key("PROJ-12a").is_err());
    }
}
