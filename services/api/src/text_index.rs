//! The text leg's BM25 index: every live chunk of the search model, held in memory by this api
//! process (tantivy), ranked by Okapi BM25 over the chunk's heading path and text (English stems,
//! stop words dropped) with OR semantics within bounds: a chunk may lack a third of the query's
//! words (at least one), and ranks below those that hold them. Postgres stays the truth: the
//! index is loaded from it at start, follows the changes it announces on commit
//! ([`SearchChanges`]), and every hit is checked against it again (liveness, filters) in the
//! search statement, so a hit the index still holds for a moment after a deletion is never shown.
//!
//! Until the first load is done ([`TextIndex::is_ready`]) search ranks the text leg in Postgres.

use std::ops::Bound;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use pagestream_retry::Backoff;
use pagestream_store::StoreError;
use pagestream_store::pages::PageFilters;
use pagestream_store::search::{
    self, ChunkKey, ChunkKind, SearchChange, SearchChanges, TextIndexChunk,
};
use sqlx::PgPool;
use tantivy::collector::TopDocs;
use tantivy::query::{
    BooleanQuery, ConstScoreQuery, Occur, PhraseQuery, Query, RangeQuery, TermQuery,
};
use tantivy::schema::{
    Field, INDEXED, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions,
    Value,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The analyzer of chunk text and of queries.
const ANALYZER: &str = "pagestream_english";
/// Rows read from Postgres per request while loading the whole corpus.
const LOAD_BATCH: i64 = 2000;
/// Pages re-read per refresh at most: a burst of changes is taken in a few refreshes.
const REFRESH_PAGES: usize = 500;
/// How long a refresh waits for more changes to take them in one commit.
const REFRESH_WINDOW: Duration = Duration::from_millis(20);
/// The writer's indexing memory (tantivy's minimum is 15 MB).
const WRITER_MEMORY: usize = 32 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TextIndexError {
    #[error("text index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("text index task failed: {0}")]
    Task(String),
}

struct Fields {
    /// `<source uuid>/<page id>`: what a change names, so that a page's chunks go together.
    page: Field,
    chunk: Field,
    content: Field,
    source: Field,
    space: Field,
    label: Field,
    /// Every prefix of the page's materialized path, so that a subtree is one term.
    path: Field,
    jira: Field,
    mention: Field,
    /// Last modified, in seconds since the epoch.
    modified: Field,
    content_type: Field,
    /// `section`, or `code` and `code:<language>`.
    kind: Field,
}

/// An in-memory BM25 index of one model's chunks; see the module documentation.
pub struct TextIndex {
    model: String,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    fields: Fields,
    ready: AtomicBool,
    /// The last marker ([`search::announce_search_marker`]) after whose changes the index is.
    applied_marker: Mutex<Option<String>>,
}

impl TextIndex {
    pub fn new(model: &str) -> Result<Self, TextIndexError> {
        let mut schema = Schema::builder();
        let content_options = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(ANALYZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        let fields = Fields {
            page: schema.add_text_field("page", STRING | STORED),
            chunk: schema.add_u64_field("chunk", STORED),
            content: schema.add_text_field("content", content_options),
            source: schema.add_text_field("source", STRING),
            space: schema.add_text_field("space", STRING),
            label: schema.add_text_field("label", STRING),
            path: schema.add_text_field("path", STRING),
            jira: schema.add_text_field("jira", STRING),
            mention: schema.add_text_field("mention", STRING),
            modified: schema.add_i64_field("modified", INDEXED),
            content_type: schema.add_text_field("content_type", STRING),
            kind: schema.add_text_field("kind", STRING),
        };
        let index = Index::create_in_ram(schema.build());
        index.tokenizers().register(ANALYZER, analyzer());
        let writer = index.writer_with_num_threads(1, WRITER_MEMORY)?;
        let reader = index
            .reader_builder()
            .reload_policy(ReloadPolicy::Manual)
            .try_into()?;
        Ok(Self {
            model: model.to_owned(),
            reader,
            writer: Mutex::new(writer),
            fields,
            ready: AtomicBool::new(false),
            applied_marker: Mutex::new(None),
        })
    }

    /// Whether the whole corpus has been loaded once: until then, search ranks text in Postgres.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Whether every change committed before `marker` was announced is searchable here.
    pub fn has_applied(&self, marker: &str) -> bool {
        self.applied_marker
            .lock()
            .is_ok_and(|applied| applied.as_deref() == Some(marker))
    }

    /// How many chunks the index holds (as of its last commit).
    pub fn chunk_count(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// The best `limit` chunks for `query` that pass the filters, best first.
    pub fn search(
        &self,
        query: &str,
        filters: &PageFilters,
        kind: &ChunkKind,
        limit: usize,
    ) -> Result<Vec<ChunkKey>, TextIndexError> {
        let Some(words) = self.words_query(query) else {
            return Ok(Vec::new());
        };
        let mut clauses = vec![(Occur::Must, words)];
        clauses.extend(
            self.filter_queries(filters, kind)
                .into_iter()
                .map(|filter| {
                    (
                        Occur::Must,
                        Box::new(ConstScoreQuery::new(filter, 0.0)) as _,
                    )
                }),
        );
        let searcher = self.reader.searcher();
        let top = searcher.search(
            &BooleanQuery::new(clauses),
            &TopDocs::with_limit(limit.max(1)).order_by_score(),
        )?;
        let mut keys = Vec::with_capacity(top.len());
        for (_score, address) in top {
            let document: TantivyDocument = searcher.doc(address)?;
            let page = document
                .get_first(self.fields.page)
                .and_then(|v| v.as_str());
            let chunk = document
                .get_first(self.fields.chunk)
                .and_then(|v| v.as_u64());
            if let (Some((source_id, page_id)), Some(chunk_index)) =
                (page.and_then(split_page_key), chunk)
            {
                keys.push(ChunkKey {
                    source_id,
                    page_id: page_id.to_owned(),
                    chunk_index: i32::try_from(chunk_index).unwrap_or(i32::MAX),
                });
            }
        }
        Ok(keys)
    }

    /// The query's words as websearch syntax reads them (`"a phrase"`, `-excluded`, `or`), of
    /// which a chunk must hold [`required_words`]; none to match, nothing returned.
    fn words_query(&self, query: &str) -> Option<Box<dyn Query>> {
        let mut analyzer = analyzer();
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for part in query_parts(query) {
            let mut terms = Vec::new();
            let mut stream = analyzer.token_stream(part.text);
            while let Some(token) = stream.next() {
                terms.push((
                    token.position,
                    Term::from_field_text(self.fields.content, &token.text),
                ));
            }
            let first_position = terms.first().map_or(0, |(position, _)| *position);
            let clause: Box<dyn Query> = match terms.len() {
                0 => continue,
                1 => {
                    let (_, term) = terms.remove(0);
                    Box::new(TermQuery::new(term, IndexRecordOption::WithFreqs))
                }
                _ => Box::new(PhraseQuery::new_with_offset(
                    terms
                        .into_iter()
                        .map(|(position, term)| (position - first_position, term))
                        .collect(),
                )),
            };
            let occur = if part.excluded {
                Occur::MustNot
            } else {
                Occur::Should
            };
            clauses.push((occur, clause));
        }
        let words = clauses
            .iter()
            .filter(|(occur, _)| *occur == Occur::Should)
            .count();
        (words > 0).then(|| {
            Box::new(BooleanQuery::with_minimum_required_clauses(
                clauses,
                required_words(words),
            )) as Box<dyn Query>
        })
    }

    fn filter_queries(&self, filters: &PageFilters, kind: &ChunkKind) -> Vec<Box<dyn Query>> {
        let term = |field: Field, value: &str| -> Box<dyn Query> {
            Box::new(TermQuery::new(
                Term::from_field_text(field, value),
                IndexRecordOption::Basic,
            ))
        };
        let fields = &self.fields;
        let mut queries = Vec::new();
        if let Some(source_id) = filters.source_id {
            queries.push(term(fields.source, &source_id.to_string()));
        }
        if let Some(space) = &filters.space {
            queries.push(term(fields.space, space));
        }
        if let Some(label) = &filters.label {
            queries.push(term(fields.label, label));
        }
        if let Some(path) = &filters.path {
            queries.push(term(fields.path, path));
        }
        if let Some(jira) = &filters.jira {
            queries.push(term(fields.jira, jira));
        }
        if let Some(mention) = &filters.mention {
            queries.push(term(fields.mention, mention));
        }
        if let Some(updated_after) = filters.updated_after {
            queries.push(Box::new(RangeQuery::new(
                // Whole seconds: the statement checks the exact instant again.
                Bound::Included(Term::from_field_i64(
                    fields.modified,
                    updated_after.timestamp(),
                )),
                Bound::Unbounded,
            )));
        }
        if let Some(content_type) = filters.content_type {
            queries.push(term(fields.content_type, content_type.as_str()));
        }
        match kind {
            ChunkKind::Section => queries.push(term(fields.kind, "section")),
            ChunkKind::Code { language: None } => queries.push(term(fields.kind, "code")),
            ChunkKind::Code {
                language: Some(language),
            } => queries.push(term(fields.kind, &format!("code:{language}"))),
        }
        queries
    }

    fn document(&self, chunk: &TextIndexChunk) -> TantivyDocument {
        let fields = &self.fields;
        let mut document = TantivyDocument::new();
        document.add_text(fields.page, page_key(chunk.source_id, &chunk.page_id));
        document.add_u64(fields.chunk, u64::try_from(chunk.chunk_index).unwrap_or(0));
        for heading in &chunk.heading_path {
            document.add_text(fields.content, heading);
        }
        document.add_text(fields.content, &chunk.text);
        document.add_text(fields.source, chunk.source_id.to_string());
        document.add_text(fields.space, &chunk.space_key);
        for label in &chunk.labels {
            document.add_text(fields.label, label);
        }
        for (end, _) in chunk.path.match_indices('/').skip(1) {
            document.add_text(fields.path, &chunk.path[..end]);
        }
        document.add_text(fields.path, &chunk.path);
        for key in &chunk.jira_keys {
            document.add_text(fields.jira, key);
        }
        for mention in &chunk.mentions {
            document.add_text(fields.mention, mention);
        }
        if let Some(modified) = chunk.last_modified {
            document.add_i64(fields.modified, modified.timestamp());
        }
        document.add_text(fields.content_type, &chunk.content_type);
        match &chunk.code_language {
            None => document.add_text(fields.kind, "section"),
            Some(language) => {
                document.add_text(fields.kind, "code");
                document.add_text(fields.kind, format!("code:{language}"));
            }
        }
        document
    }

    fn writer(&self) -> Result<MutexGuard<'_, IndexWriter>, TextIndexError> {
        self.writer
            .lock()
            .map_err(|_| TextIndexError::Task("the index writer was poisoned".into()))
    }

    /// Replaces the indexed chunks of `pages` with `chunks` (theirs, as Postgres holds them now)
    /// and makes the result searchable.
    fn replace_pages(
        &self,
        pages: &[(Uuid, String)],
        chunks: &[TextIndexChunk],
    ) -> Result<(), TextIndexError> {
        let mut writer = self.writer()?;
        for (source_id, page_id) in pages {
            writer.delete_term(Term::from_field_text(
                self.fields.page,
                &page_key(*source_id, page_id),
            ));
        }
        for chunk in chunks {
            writer.add_document(self.document(chunk))?;
        }
        writer.commit()?;
        self.reader.reload()?;
        Ok(())
    }
}

/// Loads and then follows the corpus until `token` is cancelled. Postgres being away is waited
/// out (capped backoff) and followed by a full reload, as is a lost listening connection.
pub async fn maintain(
    index: Arc<TextIndex>,
    pool: PgPool,
    token: CancellationToken,
) -> Result<(), TextIndexError> {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
    while !token.is_cancelled() {
        let result = tokio::select! {
            () = token.cancelled() => return Ok(()),
            result = load_and_follow(&index, &pool) => result,
        };
        match result {
            Err(TextIndexError::Store(error))
                if pagestream_events::Retryable::is_transient(&error) =>
            {
                let wait = backoff.next_wait();
                tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64, "text index: postgres unavailable, reloading when it is back");
                tokio::select! {
                    () = token.cancelled() => return Ok(()),
                    () = tokio::time::sleep(wait) => {}
                }
            }
            Err(error) => return Err(error),
            Ok(()) => backoff.reset(),
        }
    }
    Ok(())
}

/// Listens, loads everything, then applies changes until one says everything may have changed.
async fn load_and_follow(index: &Arc<TextIndex>, pool: &PgPool) -> Result<(), TextIndexError> {
    // Listening first: a change committed during the load is applied again after it.
    let mut changes = SearchChanges::listen(pool).await?;
    load_everything(index, pool).await?;
    loop {
        let mut pages = Vec::new();
        let mut marker = None;
        let mut change = Some(changes.next().await?);
        let deadline = tokio::time::Instant::now() + REFRESH_WINDOW;
        while let Some(current) = change.take() {
            match current {
                SearchChange::Everything => return Ok(()),
                SearchChange::Marker(seen) => marker = Some(seen),
                SearchChange::Page { source_id, page_id } => {
                    if !pages.contains(&(source_id, page_id.clone())) {
                        pages.push((source_id, page_id));
                    }
                }
            }
            if pages.len() >= REFRESH_PAGES {
                break;
            }
            change = match changes.next_pending() {
                Some(next) => Some(next),
                None => tokio::time::timeout_at(deadline, changes.next())
                    .await
                    .ok()
                    .transpose()?,
            };
        }
        if !pages.is_empty() {
            let chunks = search::text_index_page_chunks(pool, &index.model, &pages).await?;
            let writing = Arc::clone(index);
            tokio::task::spawn_blocking(move || writing.replace_pages(&pages, &chunks))
                .await
                .map_err(|error| TextIndexError::Task(error.to_string()))??;
        }
        if let (Some(marker), Ok(mut applied)) = (marker, index.applied_marker.lock()) {
            *applied = Some(marker);
        }
    }
}

async fn load_everything(index: &Arc<TextIndex>, pool: &PgPool) -> Result<(), TextIndexError> {
    let started = Instant::now();
    {
        // A load cut short by an outage left documents uncommitted: they go first.
        let mut writer = index.writer()?;
        writer.rollback()?;
        writer.delete_all_documents()?;
    }
    let mut after: Option<ChunkKey> = None;
    let mut loaded = 0usize;
    loop {
        let batch =
            search::text_index_chunks_after(pool, &index.model, after.as_ref(), LOAD_BATCH).await?;
        let Some(last) = batch.last() else { break };
        after = Some(ChunkKey {
            source_id: last.source_id,
            page_id: last.page_id.clone(),
            chunk_index: last.chunk_index,
        });
        loaded += batch.len();
        let writing = Arc::clone(index);
        tokio::task::spawn_blocking(move || -> Result<(), TextIndexError> {
            let writer = writing.writer()?;
            for chunk in &batch {
                writer.add_document(writing.document(chunk))?;
            }
            Ok(())
        })
        .await
        .map_err(|error| TextIndexError::Task(error.to_string()))??;
    }
    let writing = Arc::clone(index);
    tokio::task::spawn_blocking(move || -> Result<(), TextIndexError> {
        writing.writer()?.commit()?;
        writing.reader.reload()?;
        Ok(())
    })
    .await
    .map_err(|error| TextIndexError::Task(error.to_string()))??;
    index.ready.store(true, Ordering::Release);
    tracing::info!(
        chunks = loaded,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "text index loaded"
    );
    Ok(())
}

fn analyzer() -> TextAnalyzer {
    let builder = TextAnalyzer::builder(SimpleTokenizer::default())
        .filter(RemoveLongFilter::limit(40))
        .filter(LowerCaser);
    match StopWordFilter::new(Language::English) {
        Some(stop_words) => builder
            .filter(stop_words)
            .filter(Stemmer::new(Language::English))
            .build(),
        None => builder.filter(Stemmer::new(Language::English)).build(),
    }
}

/// How many of a query's `words` (and phrases) a chunk must hold: all but a third of them, and
/// at least all but one. A chunk that lacks one word of five still ranks; one that shares a single
/// common word with a long question does not (on pages that repeat that word, it would outrank
/// what the question means).
fn required_words(words: usize) -> usize {
    words.saturating_sub((words / 3).max(1)).max(1)
}

fn page_key(source_id: Uuid, page_id: &str) -> String {
    format!("{source_id}/{page_id}")
}

fn split_page_key(key: &str) -> Option<(Uuid, &str)> {
    let (source, page) = key.split_once('/')?;
    Some((source.parse().ok()?, page))
}

/// One word or quoted phrase of a query, and whether it is excluded (`-word`, `-"a phrase"`).
#[derive(Debug, PartialEq, Eq)]
struct QueryPart<'a> {
    text: &'a str,
    excluded: bool,
}

/// Splits a query as `websearch_to_tsquery` reads it; `or` between words is what every pair of
/// words means here already, so it is dropped.
fn query_parts(query: &str) -> Vec<QueryPart<'_>> {
    let mut parts = Vec::new();
    let mut rest = query;
    loop {
        rest = rest.trim_start();
        if rest.is_empty() {
            break;
        }
        let excluded = rest.starts_with('-');
        if excluded {
            rest = &rest[1..];
        }
        let text = if let Some(quoted) = rest.strip_prefix('"') {
            let end = quoted.find('"').unwrap_or(quoted.len());
            rest = quoted.get(end + 1..).unwrap_or("");
            &quoted[..end]
        } else {
            let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
            let word = &rest[..end];
            rest = &rest[end..];
            if !excluded && word.eq_ignore_ascii_case("or") {
                continue;
            }
            word
        };
        parts.push(QueryPart { text, excluded });
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(text: &str, excluded: bool) -> QueryPart<'_> {
        QueryPart { text, excluded }
    }

    #[test]
    fn a_chunk_may_lack_a_third_of_the_query_words() {
        let required: Vec<usize> = (1..=7).map(required_words).collect();
        assert_eq!(required, vec![1, 1, 2, 3, 4, 4, 5]);
    }

    #[test]
    fn queries_split_as_websearch_syntax_reads_them() {
        assert_eq!(
            query_parts(r#"  deploy "blue green" -canary or rollback -"dry run" "unclosed"#),
            vec![
                part("deploy", false),
                part("blue green", false),
                part("canary", true),
                part("rollback", false),
                part("dry run", true),
                part("unclosed", false),
            ]
        );
        assert_eq!(query_parts("OR"), vec![]);
        assert_eq!(query_parts("-"), vec![part("", true)]);
    }
}
