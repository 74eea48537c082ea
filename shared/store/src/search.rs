//! Hybrid search (DESIGN §6): a vector leg (cosine distance through the model's partial HNSW
//! index) and a full-text leg (`websearch_to_tsquery` over the chunk tsvector, ranked by
//! `ts_rank_cd`), each cut to the leg depth, fused by reciprocal rank fusion
//! (score = Σ 1 / (k + rank)). Filters apply inside both legs, so that each leg ranks only what
//! may be shown. Either leg may come ranked from an in-process index instead (the api's BM25
//! index, and its exact ranking of filtered vectors): the statement then checks that ranking
//! against the rows (live, same filters). The whole search is one SQL statement.

use chrono::{DateTime, Utc};
use sqlx::postgres::PgListener;
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use crate::StoreError;
use crate::pages::PageFilters;

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
    /// Appends the kind as an ` AND ...` condition on `c` (chunks): a code chunk's block is its
    /// `metadata.code`.
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

/// One chunk of one model, by key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkKey {
    pub source_id: Uuid,
    pub page_id: String,
    pub chunk_index: i32,
}

/// The vector leg's input.
#[derive(Debug, Clone, Copy)]
pub struct QueryVector<'a> {
    /// The stored vectors' dimension (the vector has as many components).
    pub dimension: i32,
    pub vector: &'a [f32],
    /// Rank the filtered chunks exactly instead of walking the HNSW graph: when a filter leaves
    /// few pages, an iterative index scan would visit far more vectors than there are to rank.
    pub exact: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct HybridQuery<'a> {
    /// The user's query, in `websearch_to_tsquery` syntax.
    pub text: &'a str,
    pub model: &'a str,
    /// Absent: full-text leg only.
    pub vector: Option<QueryVector<'a>>,
    pub filters: &'a PageFilters,
    pub kind: &'a ChunkKind,
    /// How many candidates each leg contributes to the fusion.
    pub depth: i64,
    /// How many matching chunks the text leg ranks at most (none: all).
    pub text_candidates: Option<i64>,
    /// The text leg ranked elsewhere (an in-process BM25 index), best first: these chunks in this
    /// order, less any that no longer pass the filters or are gone. None: Postgres ranks it.
    pub text_ranking: Option<&'a [ChunkKey]>,
    /// The vector leg ranked elsewhere (exactly, in process, over the chunks that pass the
    /// filters), checked as `text_ranking` is; taken only with a `vector`. None: Postgres ranks it.
    pub vector_ranking: Option<&'a [ChunkKey]>,
    pub rrf_k: f64,
    pub limit: i64,
    /// `ts_headline` options for the snippet.
    pub headline_options: &'a str,
}

/// One fused hit.
#[derive(Debug, sqlx::FromRow)]
pub struct SearchRow {
    pub source: String,
    pub page_id: String,
    pub chunk_index: i32,
    pub title: String,
    pub url: String,
    pub space_key: String,
    pub path: String,
    pub heading_path: Vec<String>,
    pub text: String,
    /// `ts_headline` of the chunk text.
    pub snippet: String,
    pub score: f64,
    pub vector_rank: Option<i64>,
    pub text_rank: Option<i64>,
    pub last_modified: Option<DateTime<Utc>>,
    /// `section` or `code`.
    pub kind: String,
    /// What the chunk's page is: `page` or `blogpost`.
    pub content_type: String,
    /// A code block's language and title, when it has them.
    pub language: Option<String>,
    pub code_title: Option<String>,
}

/// How many live pages pass the filters, counted up to `cap + 1`.
pub async fn count_live_pages(
    pool: &PgPool,
    filters: &PageFilters,
    cap: i64,
) -> Result<i64, StoreError> {
    let mut sql: QueryBuilder<Postgres> = QueryBuilder::new(
        "SELECT count(*) FROM (SELECT 1 FROM confluence_pages p WHERE NOT p.is_deleted",
    );
    filters.push(&mut sql);
    sql.push(" LIMIT ");
    sql.push_bind(cap + 1);
    sql.push(") passing");
    Ok(sql.build_query_scalar().fetch_one(pool).await?)
}

/// The text leg ranked by Postgres: `ts_rank_cd` over the chunks that match every query term.
fn push_postgres_text_leg(
    sql: &mut QueryBuilder<Postgres>,
    query: &HybridQuery<'_>,
    model_literal: &str,
) {
    // At most `text_candidates` matching chunks are ranked: a term in a third of the corpus would
    // otherwise cost a rank computation (and a tsvector read) per match, and such a term hardly
    // discriminates; the vector leg still ranks the whole corpus.
    sql.push(
        ", text_leg AS (SELECT source_id, page_id, chunk_index, \
         row_number() OVER (ORDER BY score DESC, source_id, page_id, chunk_index) AS rank \
         FROM (SELECT * FROM (SELECT c.source_id, c.page_id, c.chunk_index, \
         ts_rank_cd(c.tsv, q.query) AS score \
         FROM chunks c \
         JOIN confluence_pages p ON p.source_id = c.source_id AND p.page_id = c.page_id, \
         (SELECT websearch_to_tsquery('english', ",
    );
    sql.push_bind(query.text.to_owned());
    sql.push(format!(
        ") AS query) q WHERE c.tsv @@ q.query AND c.embedding_model = {model_literal} \
         AND NOT p.is_deleted"
    ));
    query.filters.push(sql);
    query.kind.push_condition(sql);
    if let Some(candidates) = query.text_candidates {
        sql.push(" LIMIT ");
        sql.push_bind(candidates);
    }
    sql.push(") candidates ORDER BY score DESC LIMIT ");
    sql.push_bind(query.depth);
    sql.push(") matched)");
}

/// A leg (`vector_leg` or `text_leg`) as ranked elsewhere, checked against what Postgres holds
/// now: the index that ranked it may lag a commit behind, and the filters are Postgres's.
fn push_given_leg(
    sql: &mut QueryBuilder<Postgres>,
    leg: &str,
    query: &HybridQuery<'_>,
    ranking: &[ChunkKey],
    model_literal: &str,
) {
    let depth = usize::try_from(query.depth).unwrap_or(0);
    let ranking = &ranking[..ranking.len().min(depth)];
    sql.push(format!(
        "{leg} AS (SELECT c.source_id, c.page_id, c.chunk_index, \
         row_number() OVER (ORDER BY given.position) AS rank \
         FROM unnest("
    ));
    sql.push_bind(ranking.iter().map(|key| key.source_id).collect::<Vec<_>>());
    sql.push("::uuid[], ");
    sql.push_bind(
        ranking
            .iter()
            .map(|key| key.page_id.clone())
            .collect::<Vec<_>>(),
    );
    sql.push("::text[], ");
    sql.push_bind(
        ranking
            .iter()
            .map(|key| key.chunk_index)
            .collect::<Vec<_>>(),
    );
    sql.push(format!(
        "::integer[]) WITH ORDINALITY AS given (source_id, page_id, chunk_index, position) \
         JOIN chunks c ON c.source_id = given.source_id AND c.page_id = given.page_id \
         AND c.embedding_model = {model_literal} AND c.chunk_index = given.chunk_index \
         JOIN confluence_pages p ON p.source_id = c.source_id AND p.page_id = c.page_id \
         WHERE NOT p.is_deleted"
    ));
    query.filters.push(sql);
    query.kind.push_condition(sql);
    sql.push(")");
}

/// Runs a hybrid search.
pub async fn hybrid(pool: &PgPool, query: &HybridQuery<'_>) -> Result<Vec<SearchRow>, StoreError> {
    // The model is inlined (quoted) and the dimension is an integer: the planner can only match
    // the model's partial HNSW index against literals, not parameters.
    let model_literal = format!("'{}'", query.model.replace('\'', "''"));
    let mut sql: QueryBuilder<Postgres> = QueryBuilder::new("WITH ");
    match (query.vector_ranking, &query.vector) {
        (Some(ranking), Some(_)) => {
            push_given_leg(&mut sql, "vector_leg", query, ranking, &model_literal)
        }
        (None, Some(leg)) => {
            sql.push("vector_leg AS (");
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
            sql.push_bind(leg.vector.to_vec());
            sql.push(format!(
                "::real[]::vector({dimension}) AS embedding) q \
                 WHERE c.embedding_model = {model_literal} AND NOT p.is_deleted"
            ));
            query.filters.push(&mut sql);
            query.kind.push_condition(&mut sql);
            // `+ 0` hides the ordering from the HNSW index: an exact scan of the filtered rows.
            let exact = if leg.exact { " + 0" } else { "" };
            sql.push(format!(
                " ORDER BY (c.embedding::vector({dimension}) <=> q.embedding){exact} LIMIT "
            ));
            sql.push_bind(query.depth);
            sql.push(") nearest)");
        }
        (_, None) => {
            sql.push(
                "vector_leg AS (SELECT NULL::uuid AS source_id, NULL::text AS page_id, NULL::integer AS chunk_index, \
                 NULL::bigint AS rank WHERE false)",
            );
        }
    }
    match query.text_ranking {
        Some(ranking) => {
            sql.push(", ");
            push_given_leg(&mut sql, "text_leg", query, ranking, &model_literal);
        }
        None => push_postgres_text_leg(&mut sql, query, &model_literal),
    }
    sql.push(
        ", fused AS (SELECT \
         COALESCE(v.source_id, t.source_id) AS source_id, \
         COALESCE(v.page_id, t.page_id) AS page_id, \
         COALESCE(v.chunk_index, t.chunk_index) AS chunk_index, \
         v.rank AS vector_rank, t.rank AS text_rank, \
         COALESCE(1.0 / (",
    );
    sql.push_bind(query.rrf_k);
    sql.push("::float8 + v.rank), 0) + COALESCE(1.0 / (");
    sql.push_bind(query.rrf_k);
    sql.push(
        "::float8 + t.rank), 0) AS score \
         FROM vector_leg v FULL OUTER JOIN text_leg t \
         ON v.source_id = t.source_id AND v.page_id = t.page_id AND v.chunk_index = t.chunk_index \
         ORDER BY score DESC, source_id, page_id, chunk_index LIMIT ",
    );
    sql.push_bind(query.limit);
    sql.push(
        ") SELECT s.key AS source, f.page_id, f.chunk_index, p.title, p.url, p.space_key, p.path, \
         c.heading_path, c.text, ts_headline('english', c.text, websearch_to_tsquery('english', ",
    );
    sql.push_bind(query.text.to_owned());
    sql.push("), ");
    sql.push_bind(query.headline_options.to_owned());
    sql.push(format!(
        ") AS snippet, f.score::float8 AS score, f.vector_rank, f.text_rank, p.last_modified, \
         p.content_type, \
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
    Ok(sql.build_query_as().fetch_all(pool).await?)
}

/// The channel on which every committed change to a page row or its chunk rows is announced (a
/// trigger, see the `search_changes` migration).
const SEARCH_CHANGES_CHANNEL: &str = "pagestream_search";

/// A committed change to what search reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SearchChange {
    /// This page's row or chunk rows changed.
    Page { source_id: Uuid, page_id: String },
    /// A marker from [`announce_search_marker`]: every change committed before it has been
    /// announced before it.
    Marker(String),
    /// Anything may have changed: a table was truncated, or changes were missed while the
    /// listening connection was down.
    Everything,
}

impl SearchChange {
    fn parse(payload: &str) -> Self {
        if let Some(marker) = payload.strip_prefix(MARKER_PREFIX) {
            return Self::Marker(marker.to_owned());
        }
        payload
            .split_once('/')
            .and_then(|(source, page)| {
                Some(Self::Page {
                    source_id: source.parse().ok()?,
                    page_id: page.to_owned(),
                })
            })
            .unwrap_or(Self::Everything)
    }
}

const MARKER_PREFIX: &str = "marker:";

/// Announces a marker after every change committed so far: whoever follows the changes can tell
/// when it has applied all of them (a test or a benchmark waiting for its writes to be searchable).
pub async fn announce_search_marker(pool: &PgPool, marker: &str) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(SEARCH_CHANGES_CHANNEL)
        .bind(format!("{MARKER_PREFIX}{marker}"))
        .execute(pool)
        .await?;
    Ok(())
}

/// The announcements of committed changes, in commit order, from the moment of [`Self::listen`].
pub struct SearchChanges {
    listener: PgListener,
}

impl SearchChanges {
    pub async fn listen(pool: &PgPool) -> Result<Self, StoreError> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener.listen(SEARCH_CHANGES_CHANNEL).await?;
        Ok(Self { listener })
    }

    /// The next change. A lost connection is reconnected by the next call and reported as
    /// [`SearchChange::Everything`]: what was announced meanwhile is gone.
    pub async fn next(&mut self) -> Result<SearchChange, StoreError> {
        match self.listener.try_recv().await? {
            Some(notification) => Ok(SearchChange::parse(notification.payload())),
            None => Ok(SearchChange::Everything),
        }
    }

    /// A change already received, without waiting (none: none is pending).
    pub fn next_pending(&mut self) -> Option<SearchChange> {
        self.listener
            .next_buffered()
            .map(|notification| SearchChange::parse(notification.payload()))
    }
}

/// One chunk as an in-process search index holds it: its words, its vector and what search
/// filters on.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SearchIndexChunk {
    pub source_id: Uuid,
    pub page_id: String,
    pub chunk_index: i32,
    pub heading_path: Vec<String>,
    pub text: String,
    pub space_key: String,
    pub path: String,
    pub labels: Vec<String>,
    pub jira_keys: Vec<String>,
    pub mentions: Vec<String>,
    pub last_modified: Option<DateTime<Utc>>,
    pub content_type: String,
    /// A code chunk's language ("" for a code block without one); none for a section.
    pub code_language: Option<String>,
    /// Read only when asked for (an index that ranks text alone needs no vectors).
    pub embedding: Option<pgvector::Vector>,
}

/// The live chunks of `model`, with their vectors or without, as the conditions that follow say.
fn search_index_chunks(model: &str, with_vectors: bool) -> QueryBuilder<Postgres> {
    let embedding = if with_vectors {
        "c.embedding"
    } else {
        "NULL::vector AS embedding"
    };
    let mut sql = QueryBuilder::new(format!(
        "SELECT c.source_id, c.page_id, c.chunk_index, \
         c.heading_path, c.text, p.space_key, p.path, p.labels, p.jira_keys, p.mentions, \
         p.last_modified, p.content_type, \
         CASE WHEN c.metadata ? 'code' THEN COALESCE(c.metadata -> 'code' ->> 'language', '') END \
         AS code_language, {embedding} \
         FROM chunks c \
         JOIN confluence_pages p ON p.source_id = c.source_id AND p.page_id = c.page_id \
         WHERE NOT p.is_deleted AND c.embedding_model = "
    ));
    sql.push_bind(model.to_owned());
    sql
}

/// The live chunks of one model after `after` in key order, at most `limit`: a whole corpus read
/// in pages without holding a transaction open.
pub async fn search_index_chunks_after(
    pool: &PgPool,
    model: &str,
    with_vectors: bool,
    after: Option<&ChunkKey>,
    limit: i64,
) -> Result<Vec<SearchIndexChunk>, StoreError> {
    let mut sql = search_index_chunks(model, with_vectors);
    if let Some(after) = after {
        sql.push(" AND (c.source_id, c.page_id, c.chunk_index) > (")
            .push_bind(after.source_id)
            .push(", ")
            .push_bind(after.page_id.clone())
            .push(", ")
            .push_bind(after.chunk_index)
            .push(")");
    }
    sql.push(" ORDER BY c.source_id, c.page_id, c.chunk_index LIMIT ")
        .push_bind(limit);
    Ok(sql.build_query_as().fetch_all(pool).await?)
}

/// The live chunks of one model on these pages (a deleted or gone page has none).
pub async fn search_index_page_chunks(
    pool: &PgPool,
    model: &str,
    with_vectors: bool,
    pages: &[(Uuid, String)],
) -> Result<Vec<SearchIndexChunk>, StoreError> {
    let mut sql = search_index_chunks(model, with_vectors);
    sql.push(" AND (c.source_id, c.page_id) IN (SELECT * FROM unnest(")
        .push_bind(pages.iter().map(|(source, _)| *source).collect::<Vec<_>>())
        .push("::uuid[], ")
        .push_bind(
            pages
                .iter()
                .map(|(_, page)| page.clone())
                .collect::<Vec<_>>(),
        )
        .push("::text[]))");
    Ok(sql.build_query_as().fetch_all(pool).await?)
}
