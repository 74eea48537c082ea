//! Hybrid search (DESIGN §6): a vector leg (cosine distance through the model's partial HNSW
//! index) and a full-text leg (`websearch_to_tsquery` over the chunk tsvector, ranked by
//! `ts_rank_cd`), each cut to the leg depth, fused by reciprocal rank fusion
//! (score = Σ 1 / (k + rank)). Filters apply inside both legs, so that each leg ranks only what
//! may be shown. The whole search is one SQL statement.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, QueryBuilder};

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

/// Runs a hybrid search.
pub async fn hybrid(pool: &PgPool, query: &HybridQuery<'_>) -> Result<Vec<SearchRow>, StoreError> {
    // The model is inlined (quoted) and the dimension is an integer: the planner can only match
    // the model's partial HNSW index against literals, not parameters.
    let model_literal = format!("'{}'", query.model.replace('\'', "''"));
    let mut sql: QueryBuilder<Postgres> = QueryBuilder::new("WITH vector_leg AS (");
    match &query.vector {
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
    sql.push_bind(query.text.to_owned());
    sql.push(format!(
        ") AS query) q WHERE c.tsv @@ q.query AND c.embedding_model = {model_literal} \
         AND NOT p.is_deleted"
    ));
    query.filters.push(&mut sql);
    query.kind.push_condition(&mut sql);
    if let Some(candidates) = query.text_candidates {
        sql.push(" LIMIT ");
        sql.push_bind(candidates);
    }
    sql.push(") candidates ORDER BY score DESC LIMIT ");
    sql.push_bind(query.depth);
    sql.push(
        ") matched), fused AS (SELECT \
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
