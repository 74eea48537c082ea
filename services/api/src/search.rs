//! Hybrid search (DESIGN §6): a vector leg (cosine distance through the search model's partial
//! HNSW index) and a full-text leg (`websearch_to_tsquery` over the chunk tsvector, ranked by
//! `ts_rank_cd`), each cut to the leg depth, fused by reciprocal rank fusion
//! (score = Σ 1 / (k + rank)). Filters apply inside both legs, so that each leg ranks only what
//! may be shown. The whole search is one SQL statement.

use std::time::Instant;

use axum::Json;
use axum::extract::{RawQuery, State};
use chrono::{DateTime, Utc};
use pagestream_confluence::SpaceKey;
use serde::Serialize;
use sqlx::{Postgres, QueryBuilder};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::AppState;
use crate::error::{ApiError, ErrorBody};
use crate::params::QueryParams;
use crate::sources::projected_source_id;

/// Marks a highlighted term in `ts_headline` output before the snippet is HTML-escaped: private-use
/// characters that cannot collide with anything escaping produces.
const MARK_START: char = '\u{E000}';
const MARK_END: char = '\u{E001}';

/// Filters on the page a chunk belongs to, shared by search and the page listing.
#[derive(Debug, Default, Clone)]
pub struct PageFilters {
    pub source_id: Option<Uuid>,
    pub space: Option<String>,
    pub label: Option<String>,
    /// A materialized path: the page at its end and everything below it.
    pub path: Option<String>,
    pub jira: Option<String>,
    pub mention: Option<String>,
    pub updated_after: Option<DateTime<Utc>>,
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
    }

    /// Reads `path`, `label` and `updated_after`, and with `all` also `space`, `jira` and
    /// `mention` (`source` is resolved by the caller).
    pub fn parse(params: &mut QueryParams, all: bool) -> Result<Self, ApiError> {
        let mut filters = Self {
            label: params.text("label", 255)?.map(|label| label.to_lowercase()),
            path: params
                .text("path", 2000)?
                .map(|path| parse_path(&path))
                .transpose()?,
            updated_after: params.timestamp("updated_after")?,
            ..Self::default()
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
        }
        Ok(filters)
    }
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

/// Appends the filters as ` AND ...` conditions on `p` (confluence_pages).
pub fn push_page_filters(sql: &mut QueryBuilder<Postgres>, filters: &PageFilters) {
    if let Some(source_id) = filters.source_id {
        sql.push(" AND p.source_id = ").push_bind(source_id);
    }
    if let Some(space) = &filters.space {
        sql.push(" AND p.space_key = ").push_bind(space.clone());
    }
    if let Some(label) = &filters.label {
        sql.push(" AND p.metadata -> 'labels' ? ")
            .push_bind(label.clone());
    }
    if let Some(path) = &filters.path {
        // `path text_pattern_ops` serves the prefix match; ids are digits, so nothing to escape.
        sql.push(" AND (p.path = ")
            .push_bind(path.clone())
            .push(" OR p.path LIKE ")
            .push_bind(format!("{path}/%"))
            .push(")");
    }
    if let Some(jira) = &filters.jira {
        sql.push(" AND p.metadata -> 'jira_issue_links' ? ")
            .push_bind(jira.clone());
    }
    if let Some(mention) = &filters.mention {
        sql.push(" AND p.metadata -> 'user_mentions' ? ")
            .push_bind(mention.clone());
    }
    if let Some(updated_after) = filters.updated_after {
        sql.push(" AND p.last_modified >= ")
            .push_bind(updated_after);
    }
}

#[derive(Debug, Serialize, ToSchema, sqlx::FromRow)]
pub struct SearchHit {
    pub source: String,
    pub page_id: String,
    pub chunk_index: i32,
    pub title: String,
    /// The page in Confluence.
    pub url: String,
    pub space_key: String,
    pub path: String,
    /// Page title, then each heading above the chunk.
    pub heading_path: Vec<String>,
    /// The chunk's Markdown.
    pub text: String,
    /// HTML: the best fragments of the chunk, escaped, with the matched terms in `<mark>`.
    pub snippet: String,
    /// Reciprocal rank fusion score.
    pub score: f64,
    /// 1-based rank in the vector leg, if the chunk made its cut.
    pub vector_rank: Option<i64>,
    /// 1-based rank in the full-text leg, if the chunk made its cut.
    pub text_rank: Option<i64>,
    pub last_modified: Option<DateTime<Utc>>,
    /// `section` (a part of the page) or `code` (one code block of it).
    pub kind: String,
    /// A code block's language and title, when it has them.
    pub language: Option<String>,
    pub code_title: Option<String>,
}

/// Which chunks a search ranks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ChunkKind {
    /// The page's sections (the default).
    #[default]
    Section,
    /// The page's code blocks (`code` and `noformat` macros), optionally of one language.
    Code { language: Option<String> },
}

impl ChunkKind {
    fn parse(params: &mut QueryParams) -> Result<Self, ApiError> {
        let language = params
            .text("language", 40)?
            .map(|language| language.to_ascii_lowercase());
        match params.text("kind", 20)?.as_deref() {
            None | Some("section") if language.is_none() => Ok(Self::Section),
            None | Some("code") => Ok(Self::Code { language }),
            Some("section") => Err(ApiError::invalid("language", "applies to kind=code only")),
            Some(_) => Err(ApiError::invalid("kind", "must be section or code")),
        }
    }

    /// Appends the kind as an ` AND ...` condition on `c` (chunks).
    fn push_condition(&self, sql: &mut QueryBuilder<Postgres>) {
        match self {
            Self::Section => {
                sql.push(" AND NOT c.metadata ? 'code'");
            }
            Self::Code { language: None } => {
                sql.push(" AND c.metadata ? 'code'");
            }
            Self::Code {
                language: Some(language),
            } => {
                sql.push(" AND c.metadata -> 'code' ->> 'language' = ")
                    .push_bind(language.clone());
            }
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct SearchResponse {
    pub query: String,
    /// The embedding model the vector leg searched.
    pub model: String,
    pub hits: Vec<SearchHit>,
    /// Why a leg was left out (the embedder did not answer, no vectors of the model are stored).
    pub warnings: Vec<String>,
    pub took_ms: f64,
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
    let mut filters = PageFilters::parse(&mut params, true)?;
    let kind = ChunkKind::parse(&mut params)?;
    params.finish()?;
    if let Some(source) = source {
        filters.source_id = Some(projected_source_id(&state, &source, "source").await?);
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
    response.took_ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok(Json(response))
}

/// The search model's vector leg, when it can run.
struct VectorLeg {
    dimension: i32,
    vector: Vec<f32>,
    /// Rank the filtered chunks exactly instead of walking the HNSW graph: when a filter leaves
    /// few pages, an iterative index scan would visit far more vectors than there are to rank.
    exact: bool,
}

/// How many live pages pass the filters, counted up to `cap + 1`.
async fn filtered_pages(
    state: &AppState,
    filters: &PageFilters,
    cap: u32,
) -> Result<i64, ApiError> {
    let mut sql: QueryBuilder<Postgres> = QueryBuilder::new(
        "SELECT count(*) FROM (SELECT 1 FROM confluence_pages p WHERE NOT p.is_deleted",
    );
    push_page_filters(&mut sql, filters);
    sql.push(" LIMIT ");
    sql.push_bind(i64::from(cap) + 1);
    sql.push(") passing");
    Ok(sql
        .build_query_scalar()
        .fetch_one(&state.inner.pool)
        .await?)
}

pub async fn search(state: &AppState, request: &SearchRequest) -> Result<SearchResponse, ApiError> {
    let settings = &state.inner.search;
    let model = settings.embedding_model.as_str();
    let mut warnings = Vec::new();
    let mut vector_leg = match state.inner.embedder.embed(&request.query).await {
        Ok(embedding) => match model_dimension(state, model).await? {
            Some(dimension) if dimension as usize == embedding.vector.len() => Some(VectorLeg {
                dimension,
                vector: embedding.vector,
                exact: false,
            }),
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
    let depth = i64::from(settings.leg_depth.max(request.limit));
    if let Some(leg) = &mut vector_leg {
        leg.exact = settings.exact_filter_pages > 0
            && !request.filters.is_empty()
            && filtered_pages(state, &request.filters, settings.exact_filter_pages).await?
                <= i64::from(settings.exact_filter_pages);
    }
    // The model is inlined (quoted) and the dimension is an integer: the planner can only match
    // the model's partial HNSW index against literals, not parameters.
    let model_literal = format!("'{}'", model.replace('\'', "''"));
    let mut sql: QueryBuilder<Postgres> = QueryBuilder::new("WITH vector_leg AS (");
    match &vector_leg {
        Some(leg) => {
            let dimension = leg.dimension;
            sql.push(format!(
                "SELECT source_id, page_id, chunk_index, \
                 row_number() OVER (ORDER BY distance, source_id, page_id, chunk_index) AS rank \
                 FROM (SELECT c.source_id, c.page_id, c.chunk_index, \
                 c.embedding::vector({dimension}) <=> q.embedding AS distance \
                 FROM chunks c \
                 JOIN confluence_pages p ON p.source_id = c.source_id AND p.page_id = c.page_id, \
                 (SELECT "
            ));
            sql.push_bind(leg.vector.clone());
            sql.push(format!(
                "::real[]::vector({dimension}) AS embedding) q \
                 WHERE c.embedding_model = {model_literal} AND NOT p.is_deleted"
            ));
            push_page_filters(&mut sql, &request.filters);
            request.kind.push_condition(&mut sql);
            // `+ 0` hides the ordering from the HNSW index: an exact scan of the filtered rows.
            let exact = if leg.exact { " + 0" } else { "" };
            sql.push(format!(
                " ORDER BY (c.embedding::vector({dimension}) <=> q.embedding){exact} LIMIT "
            ));
            sql.push_bind(depth);
            sql.push(") nearest)");
        }
        None => {
            sql.push(
                "SELECT NULL::uuid AS source_id, NULL::text AS page_id, NULL::integer AS chunk_index, \
                 NULL::bigint AS rank WHERE false)",
            );
        }
    }
    // The text leg ranks at most `text_candidates` matching chunks: a term in a third of the
    // corpus would otherwise cost a rank computation (and a tsvector read) per match, and such a
    // term hardly discriminates; the vector leg still ranks the whole corpus.
    sql.push(
        ", text_leg AS (SELECT source_id, page_id, chunk_index, \
         row_number() OVER (ORDER BY score DESC, source_id, page_id, chunk_index) AS rank \
         FROM (SELECT * FROM (SELECT c.source_id, c.page_id, c.chunk_index, \
         ts_rank_cd(c.tsv, q.query) AS score \
         FROM chunks c \
         JOIN confluence_pages p ON p.source_id = c.source_id AND p.page_id = c.page_id, \
         (SELECT websearch_to_tsquery('english', ",
    );
    sql.push_bind(request.query.clone());
    sql.push(format!(
        ") AS query) q WHERE c.tsv @@ q.query AND c.embedding_model = {model_literal} \
         AND NOT p.is_deleted"
    ));
    push_page_filters(&mut sql, &request.filters);
    request.kind.push_condition(&mut sql);
    if settings.text_candidates > 0 {
        sql.push(" LIMIT ");
        sql.push_bind(i64::from(settings.text_candidates.max(settings.leg_depth)));
    }
    sql.push(") candidates ORDER BY score DESC LIMIT ");
    sql.push_bind(depth);
    sql.push(
        ") matched), fused AS (SELECT \
         COALESCE(v.source_id, t.source_id) AS source_id, \
         COALESCE(v.page_id, t.page_id) AS page_id, \
         COALESCE(v.chunk_index, t.chunk_index) AS chunk_index, \
         v.rank AS vector_rank, t.rank AS text_rank, \
         COALESCE(1.0 / (",
    );
    sql.push_bind(f64::from(settings.rrf_k));
    sql.push("::float8 + v.rank), 0) + COALESCE(1.0 / (");
    sql.push_bind(f64::from(settings.rrf_k));
    sql.push(
        "::float8 + t.rank), 0) AS score \
         FROM vector_leg v FULL OUTER JOIN text_leg t \
         ON v.source_id = t.source_id AND v.page_id = t.page_id AND v.chunk_index = t.chunk_index \
         ORDER BY score DESC, source_id, page_id, chunk_index LIMIT ",
    );
    sql.push_bind(i64::from(request.limit));
    sql.push(
        ") SELECT s.key AS source, f.page_id, f.chunk_index, p.title, p.url, p.space_key, p.path, \
         c.heading_path, c.text, ts_headline('english', c.text, websearch_to_tsquery('english', ",
    );
    sql.push_bind(request.query.clone());
    sql.push("), ");
    sql.push_bind(headline_options());
    sql.push(format!(
        ") AS snippet, f.score::float8 AS score, f.vector_rank, f.text_rank, p.last_modified, \
         CASE WHEN c.metadata ? 'code' THEN 'code' ELSE 'section' END AS kind, \
         c.metadata -> 'code' ->> 'language' AS language, \
         c.metadata -> 'code' ->> 'title' AS code_title \
         FROM fused f \
         JOIN chunks c ON c.source_id = f.source_id AND c.page_id = f.page_id \
         AND c.embedding_model = {model_literal} AND c.chunk_index = f.chunk_index \
         JOIN confluence_pages p ON p.source_id = f.source_id AND p.page_id = f.page_id \
         JOIN sources s ON s.id = f.source_id \
         ORDER BY f.score DESC, f.source_id, f.page_id, f.chunk_index"
    ));
    let mut hits: Vec<SearchHit> = sql.build_query_as().fetch_all(&state.inner.pool).await?;
    for hit in &mut hits {
        hit.snippet = highlight_html(&hit.snippet);
    }
    Ok(SearchResponse {
        query: request.query.clone(),
        model: model.to_owned(),
        hits,
        warnings,
        took_ms: 0.0,
    })
}

/// The dimension of a model's stored vectors, if any are stored (cached: it never changes).
async fn model_dimension(state: &AppState, model: &str) -> Result<Option<i32>, ApiError> {
    if let Ok(known) = state.inner.model_dimensions.lock()
        && let Some(dimension) = known.get(model)
    {
        return Ok(Some(*dimension));
    }
    let dimension: Option<i32> =
        sqlx::query_scalar("SELECT dimension FROM embedding_models WHERE model = $1")
            .bind(model)
            .fetch_optional(&state.inner.pool)
            .await?;
    if let (Some(dimension), Ok(mut known)) = (dimension, state.inner.model_dimensions.lock()) {
        known.insert(model.to_owned(), dimension);
    }
    Ok(dimension)
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
