//! The api's in-process search index: every live chunk of the search model, held in memory by
//! this process. Postgres stays the truth: the index is loaded from it at start, follows the
//! changes it announces on commit ([`SearchChanges`]), and every hit is checked against it again
//! (liveness, filters) in the search statement, so a hit the index still holds for a moment after
//! a deletion is never shown. It serves two rankings:
//!
//! - The text leg (`bm25`): Okapi BM25 over the chunk's heading path and text (tantivy; English
//!   stems, stop words dropped), a word in the heading path weighing more; a chunk must hold
//!   every word and score at least three quarters of the best chunk's score ([`TextRanking`]:
//!   the relevance bench measures the alternatives).
//! - The vector leg of a filtered query ([`SearchIndex::nearest`]), with the vectors kept: the
//!   chunks that pass the filters (found through the same index's filter fields) ranked exactly.
//!   In Postgres that exact scan reads every passing chunk's whole row (about 4 KB), and it was
//!   most of a filtered search's time under load.
//!
//! Until the first load is done ([`SearchIndex::is_ready`]) Postgres ranks both legs.

use std::collections::HashMap;
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use pagestream_retry::Backoff;
use pagestream_store::StoreError;
use pagestream_store::pages::PageFilters;
use pagestream_store::search::{
    self, ChunkKey, ChunkKind, SearchChange, SearchChanges, SearchIndexChunk,
};
use sqlx::PgPool;
use tantivy::collector::TopDocs;
use tantivy::query::{
    BooleanQuery, BoostQuery, ConstScoreQuery, EnableScoring, Occur, PhraseQuery, Query,
    RangeQuery, TermQuery,
};
use tantivy::schema::{
    FAST, Field, IndexRecordOption, STORED, STRING, Schema, TextFieldIndexing, TextOptions, Value,
};
use tantivy::tokenizer::{
    Language, LowerCaser, RemoveLongFilter, SimpleTokenizer, Stemmer, StopWordFilter, TextAnalyzer,
};
use tantivy::{
    DocSet, Index, IndexReader, IndexWriter, ReloadPolicy, TERMINATED, TantivyDocument, Term,
};
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
/// The least time from one refresh to the next: under a load each commit takes more pages (a
/// commit costs tantivy a new segment and pipeline, megabytes to zero, whatever it holds).
const REFRESH_SPACING: Duration = Duration::from_millis(250);
/// The writer's indexing memory (tantivy's minimum is 15 MB).
const WRITER_MEMORY: usize = 32 << 20;

#[derive(Debug, thiserror::Error)]
pub enum SearchIndexError {
    #[error("search index: {0}")]
    Tantivy(#[from] tantivy::TantivyError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("search index task failed: {0}")]
    Task(String),
}

struct Fields {
    /// `<source uuid>/<page id>`: what a change names, so that a page's chunks go together.
    page: Field,
    chunk: Field,
    /// The heading path and the text.
    content: Field,
    /// The heading path again, so that a word found there can weigh more.
    heading: Field,
    source: Field,
    space: Field,
    label: Field,
    /// Every prefix of the page's materialized path, so that a subtree is one term.
    path: Field,
    jira: Field,
    mention: Field,
    /// Last modified, in seconds since the epoch: a fast field, so that a range reads one column
    /// (indexed, a range would visit every distinct second in it, one posting list each).
    modified: Field,
    content_type: Field,
    /// `section`, or `code` and `code:<language>`.
    kind: Field,
    /// The chunk's entry in [`Vectors`].
    vector: Field,
}

/// The chunks' vectors, one after another in one allocation (a scan reads them in order), each in
/// a slot that an indexed chunk names by its id: the slot's number and its generation. A slot is
/// reused once its chunk is gone, under a new generation, so a searcher that still sees a
/// replaced chunk finds its id stale and skips it.
#[derive(Default)]
struct Vectors {
    /// Of every vector held: the first one's (a vector of another length is not held).
    dimension: Option<usize>,
    slots: Vec<Slot>,
    /// The unit vectors, `dimension` values per slot.
    values: Vec<f32>,
    free: Vec<u32>,
    /// The ids of each page's chunks (by [`page_key`]), to drop them when the page is replaced.
    by_page: HashMap<String, Vec<u64>>,
}

#[derive(Default)]
struct Slot {
    generation: u32,
    /// None: free.
    key: Option<ChunkKey>,
}

impl Vectors {
    /// Holds `chunk`'s vector scaled to unit length (zero stays zero), so that a cosine is a dot
    /// product; its id, for the indexed chunk (none: not held).
    fn insert(&mut self, chunk: &SearchIndexChunk) -> Option<u64> {
        let vector = chunk.embedding.as_ref()?.as_slice();
        let dimension = *self.dimension.get_or_insert(vector.len());
        if vector.len() != dimension {
            return None;
        }
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(Slot::default());
                self.values.resize(self.slots.len() * dimension, 0.0);
                u32::try_from(self.slots.len() - 1).ok()?
            }
        };
        let index = slot as usize;
        let entry = &mut self.slots[index];
        entry.generation = entry.generation.wrapping_add(1);
        entry.key = Some(ChunkKey {
            source_id: chunk.source_id,
            page_id: chunk.page_id.clone(),
            chunk_index: chunk.chunk_index,
        });
        let id = (u64::from(slot) << 32) | u64::from(entry.generation);
        let values = &mut self.values[index * dimension..(index + 1) * dimension];
        values.copy_from_slice(vector);
        scale_to_unit(values);
        let page = page_key(chunk.source_id, &chunk.page_id);
        self.by_page.entry(page).or_default().push(id);
        Some(id)
    }

    /// The slot and chunk of a live id.
    fn get(&self, id: u64) -> Option<(usize, &ChunkKey)> {
        let slot = usize::try_from(id >> 32).ok()?;
        let entry = self.slots.get(slot)?;
        if entry.generation != id as u32 {
            return None;
        }
        Some((slot, entry.key.as_ref()?))
    }

    fn values(&self, slot: usize) -> &[f32] {
        let dimension = self.dimension.unwrap_or(0);
        &self.values[slot * dimension..(slot + 1) * dimension]
    }

    /// Every held vector's id, whether a page still names it or not (a load cut short).
    fn live_ids(&self) -> Vec<u64> {
        (0u64..)
            .zip(&self.slots)
            .filter(|(_, slot)| slot.key.is_some())
            .map(|(number, slot)| (number << 32) | u64::from(slot.generation))
            .collect()
    }

    fn remove(&mut self, ids: &[u64]) {
        for id in ids {
            if let Some((slot, _)) = self.get(*id) {
                self.slots[slot].key = None;
                self.free.push(slot as u32);
            }
        }
    }
}

/// What [`SearchIndex::nearest`] found.
#[derive(Debug, PartialEq)]
pub enum Nearest {
    /// The nearest chunks that pass the filters, nearest first.
    Ranked(Vec<ChunkKey>),
    /// The filters leave more pages than the bound: the HNSW index ranks them.
    TooManyPages,
}

/// The api's in-memory index of one model's chunks; see the module documentation.
pub struct SearchIndex {
    model: String,
    reader: IndexReader,
    writer: Mutex<IndexWriter>,
    fields: Fields,
    vectors: RwLock<Vectors>,
    keep_vectors: bool,
    ready: AtomicBool,
    /// The last marker ([`search::announce_search_marker`]) after whose changes the index is.
    applied_marker: Mutex<Option<String>>,
    /// Commits of changed pages since the load.
    refreshes: AtomicU64,
}

impl SearchIndex {
    /// An empty index of `model`'s chunks; with `keep_vectors`, it holds their vectors too.
    pub fn new(model: &str, keep_vectors: bool) -> Result<Self, SearchIndexError> {
        let mut schema = Schema::builder();
        let content_options = TextOptions::default().set_indexing_options(
            TextFieldIndexing::default()
                .set_tokenizer(ANALYZER)
                .set_index_option(IndexRecordOption::WithFreqsAndPositions),
        );
        let fields = Fields {
            page: schema.add_text_field("page", STRING | STORED),
            chunk: schema.add_u64_field("chunk", STORED),
            content: schema.add_text_field("content", content_options.clone()),
            heading: schema.add_text_field("heading", content_options),
            source: schema.add_text_field("source", STRING),
            space: schema.add_text_field("space", STRING),
            label: schema.add_text_field("label", STRING),
            path: schema.add_text_field("path", STRING),
            jira: schema.add_text_field("jira", STRING),
            mention: schema.add_text_field("mention", STRING),
            modified: schema.add_i64_field("modified", FAST),
            content_type: schema.add_text_field("content_type", STRING),
            kind: schema.add_text_field("kind", STRING),
            vector: schema.add_u64_field("vector", FAST),
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
            vectors: RwLock::new(Vectors::default()),
            keep_vectors,
            ready: AtomicBool::new(false),
            applied_marker: Mutex::new(None),
            refreshes: AtomicU64::new(0),
        })
    }

    /// Whether the whole corpus has been loaded once: until then, Postgres ranks both legs.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// Whether every change committed before `marker` was announced is searchable here.
    pub fn has_applied(&self, marker: &str) -> bool {
        self.applied_marker
            .lock()
            .is_ok_and(|applied| applied.as_deref() == Some(marker))
    }

    /// How many times changed pages were committed (each a new segment to search and merge).
    pub fn refresh_count(&self) -> u64 {
        self.refreshes.load(Ordering::Relaxed)
    }

    /// How many chunks the index holds (as of its last commit).
    pub fn chunk_count(&self) -> u64 {
        self.reader.searcher().num_docs()
    }

    /// The best `limit` chunks for `query` that pass the filters, best first, ranked as `ranking`
    /// says (the api ranks with [`TextRanking::default`]).
    pub fn search(
        &self,
        query: &str,
        filters: &PageFilters,
        kind: &ChunkKind,
        limit: usize,
        ranking: &TextRanking,
    ) -> Result<Vec<ChunkKey>, SearchIndexError> {
        let Some(words) = self.words_query(query, ranking) else {
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
        let floor = top
            .first()
            .map_or(0.0, |(best, _)| best * ranking.min_score_ratio);
        let mut keys = Vec::with_capacity(top.len());
        for (score, address) in top {
            if score < floor {
                break;
            }
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

    /// The `limit` chunks nearest to `query` (cosine distance, as the HNSW index orders them; ties
    /// by key) among those that pass the filters, ranked exactly, unless the filters leave more
    /// than `max_pages` pages.
    pub fn nearest(
        &self,
        query: &[f32],
        filters: &PageFilters,
        kind: &ChunkKind,
        limit: usize,
        max_pages: usize,
    ) -> Result<Nearest, SearchIndexError> {
        if !self.keep_vectors {
            return Err(SearchIndexError::Task("this index holds no vectors".into()));
        }
        let filter = BooleanQuery::new(
            self.filter_queries(filters, kind)
                .into_iter()
                .map(|query| (Occur::Must, query))
                .collect(),
        );
        let searcher = self.reader.searcher();
        let weight = filter.weight(EnableScoring::disabled_from_searcher(&searcher))?;
        let vectors = self.vectors()?;
        if vectors.dimension != Some(query.len()) {
            return Ok(Nearest::Ranked(Vec::new()));
        }
        // A page's chunks are indexed together, one after another: counting where the page
        // changes counts pages (or a few more, where a commit split a page across segments), and
        // a filter that passes too many is known without reading all that it passes.
        let mut passing: Vec<(usize, &ChunkKey)> = Vec::new();
        let mut pages = 0;
        for segment in searcher.segment_readers() {
            let ids = segment.fast_fields().u64("vector")?;
            let alive = segment.alive_bitset();
            let mut matching = weight.scorer(segment, 1.0)?;
            let mut doc = matching.doc();
            while doc != TERMINATED {
                if alive.is_none_or(|bits| bits.is_alive(doc))
                    && let Some((slot, key)) = ids.first(doc).and_then(|id| vectors.get(id))
                {
                    let new_page = passing.last().is_none_or(|(_, last)| {
                        last.page_id != key.page_id || last.source_id != key.source_id
                    });
                    if new_page {
                        pages += 1;
                        if pages > max_pages {
                            return Ok(Nearest::TooManyPages);
                        }
                    }
                    passing.push((slot, key));
                }
                doc = matching.advance();
            }
        }
        let mut query = query.to_vec();
        scale_to_unit(&mut query);
        let mut ranked: Vec<(f32, &ChunkKey)> = passing
            .iter()
            .map(|(slot, key)| (cosine_distance(&query, vectors.values(*slot)), *key))
            .collect();
        let by_distance = |a: &(f32, &ChunkKey), b: &(f32, &ChunkKey)| {
            a.0.total_cmp(&b.0).then_with(|| {
                (a.1.source_id, &a.1.page_id, a.1.chunk_index).cmp(&(
                    b.1.source_id,
                    &b.1.page_id,
                    b.1.chunk_index,
                ))
            })
        };
        if ranked.len() > limit {
            ranked.select_nth_unstable_by(limit, by_distance);
            ranked.truncate(limit);
        }
        ranked.sort_unstable_by(by_distance);
        Ok(Nearest::Ranked(
            ranked.into_iter().map(|(_, key)| key.clone()).collect(),
        ))
    }

    /// The query's words as websearch syntax reads them (`"a phrase"`, `-excluded`, `or`), of
    /// which a chunk must hold as many as `ranking.words` says; none to match, nothing returned.
    fn words_query(&self, query: &str, ranking: &TextRanking) -> Option<Box<dyn Query>> {
        let mut analyzer = analyzer();
        let mut clauses: Vec<(Occur, Box<dyn Query>)> = Vec::new();
        for part in query_parts(query) {
            let mut tokens = Vec::new();
            let mut stream = analyzer.token_stream(part.text);
            while let Some(token) = stream.next() {
                tokens.push((token.position, token.text.clone()));
            }
            let first_position = tokens.first().map_or(0, |(position, _)| *position);
            let in_field = |field: Field| -> Option<Box<dyn Query>> {
                let mut terms: Vec<(usize, Term)> = tokens
                    .iter()
                    .map(|(position, text)| {
                        (
                            position - first_position,
                            Term::from_field_text(field, text),
                        )
                    })
                    .collect();
                match terms.len() {
                    0 => None,
                    1 => Some(Box::new(TermQuery::new(
                        terms.remove(0).1,
                        IndexRecordOption::WithFreqs,
                    ))),
                    _ => Some(Box::new(PhraseQuery::new_with_offset(terms))),
                }
            };
            let Some(content) = in_field(self.fields.content) else {
                continue;
            };
            if part.excluded {
                clauses.push((Occur::MustNot, content));
                continue;
            }
            // The content holds the heading path too: a heading match adds to a content match.
            let clause = if ranking.heading_boost > 0.0
                && let Some(heading) = in_field(self.fields.heading)
            {
                Box::new(BooleanQuery::new(vec![
                    (Occur::Must, content),
                    (
                        Occur::Should,
                        Box::new(BoostQuery::new(heading, ranking.heading_boost)),
                    ),
                ]))
            } else {
                content
            };
            clauses.push((Occur::Should, clause));
        }
        let words = clauses
            .iter()
            .filter(|(occur, _)| *occur == Occur::Should)
            .count();
        if words == 0 {
            return None;
        }
        let required = ranking.words.required(words);
        if required == words {
            // Every word: an intersection, which skips through the posting lists.
            for (occur, _) in &mut clauses {
                if *occur == Occur::Should {
                    *occur = Occur::Must;
                }
            }
            return Some(Box::new(BooleanQuery::new(clauses)));
        }
        Some(Box::new(BooleanQuery::with_minimum_required_clauses(
            clauses, required,
        )))
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

    fn document(&self, chunk: &SearchIndexChunk, vector_id: Option<u64>) -> TantivyDocument {
        let fields = &self.fields;
        let mut document = TantivyDocument::new();
        if let Some(id) = vector_id {
            document.add_u64(fields.vector, id);
        }
        document.add_text(fields.page, page_key(chunk.source_id, &chunk.page_id));
        document.add_u64(fields.chunk, u64::try_from(chunk.chunk_index).unwrap_or(0));
        for heading in &chunk.heading_path {
            document.add_text(fields.content, heading);
            document.add_text(fields.heading, heading);
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

    fn writer(&self) -> Result<MutexGuard<'_, IndexWriter>, SearchIndexError> {
        self.writer
            .lock()
            .map_err(|_| SearchIndexError::Task("the index writer was poisoned".into()))
    }

    fn vectors(&self) -> Result<std::sync::RwLockReadGuard<'_, Vectors>, SearchIndexError> {
        self.vectors
            .read()
            .map_err(|_| SearchIndexError::Task("the vectors were poisoned".into()))
    }

    fn vectors_mut(&self) -> Result<std::sync::RwLockWriteGuard<'_, Vectors>, SearchIndexError> {
        self.vectors
            .write()
            .map_err(|_| SearchIndexError::Task("the vectors were poisoned".into()))
    }

    /// Adds `chunks` (uncommitted) and their vectors.
    fn add_chunks(
        &self,
        writer: &IndexWriter,
        chunks: &[SearchIndexChunk],
    ) -> Result<(), SearchIndexError> {
        let mut vectors = self.vectors_mut()?;
        for chunk in chunks {
            let id = vectors.insert(chunk);
            writer.add_document(self.document(chunk, id))?;
        }
        Ok(())
    }

    /// Replaces the indexed chunks of `pages` with `chunks` (theirs, as Postgres holds them now)
    /// and makes the result searchable.
    fn replace_pages(
        &self,
        pages: &[(Uuid, String)],
        chunks: &[SearchIndexChunk],
    ) -> Result<(), SearchIndexError> {
        let mut writer = self.writer()?;
        let mut replaced = Vec::new();
        {
            let mut vectors = self.vectors_mut()?;
            for (source_id, page_id) in pages {
                let page = page_key(*source_id, page_id);
                replaced.extend(vectors.by_page.remove(&page).unwrap_or_default());
                writer.delete_term(Term::from_field_text(self.fields.page, &page));
            }
        }
        self.add_chunks(&writer, chunks)?;
        writer.commit()?;
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("pagestream_search_index_refreshes_total").increment(1);
        self.reader.reload()?;
        // After the reload: a search until then still ranks the replaced chunks' vectors.
        self.vectors_mut()?.remove(&replaced);
        Ok(())
    }
}

/// Loads and then follows the corpus until `token` is cancelled. Postgres being away is waited
/// out (capped backoff) and followed by a full reload, as is a lost listening connection.
pub async fn maintain(
    index: Arc<SearchIndex>,
    pool: PgPool,
    token: CancellationToken,
) -> Result<(), SearchIndexError> {
    let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(10));
    while !token.is_cancelled() {
        let result = tokio::select! {
            () = token.cancelled() => return Ok(()),
            result = load_and_follow(&index, &pool) => result,
        };
        match result {
            Err(SearchIndexError::Store(error))
                if pagestream_events::Retryable::is_transient(&error) =>
            {
                let wait = backoff.next_wait();
                tracing::warn!(%error, retry_in_ms = wait.as_millis() as u64, "search index: postgres unavailable, reloading when it is back");
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
async fn load_and_follow(index: &Arc<SearchIndex>, pool: &PgPool) -> Result<(), SearchIndexError> {
    // Listening first: a change committed during the load is applied again after it.
    let mut changes = SearchChanges::listen(pool).await?;
    load_everything(index, pool).await?;
    let mut last_refresh = tokio::time::Instant::now();
    loop {
        let mut pages = Vec::new();
        let mut marker = None;
        let mut change = Some(changes.next().await?);
        let deadline =
            (tokio::time::Instant::now() + REFRESH_WINDOW).max(last_refresh + REFRESH_SPACING);
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
            last_refresh = tokio::time::Instant::now();
            let chunks =
                search::search_index_page_chunks(pool, &index.model, index.keep_vectors, &pages)
                    .await?;
            let writing = Arc::clone(index);
            tokio::task::spawn_blocking(move || writing.replace_pages(&pages, &chunks))
                .await
                .map_err(|error| SearchIndexError::Task(error.to_string()))??;
        }
        if let (Some(marker), Ok(mut applied)) = (marker, index.applied_marker.lock()) {
            *applied = Some(marker);
        }
    }
}

async fn load_everything(index: &Arc<SearchIndex>, pool: &PgPool) -> Result<(), SearchIndexError> {
    let started = Instant::now();
    {
        // A load cut short by an outage left documents uncommitted: they go first.
        let mut writer = index.writer()?;
        writer.rollback()?;
        writer.delete_all_documents()?;
    }
    // Every vector held now goes once the load is searchable (a reload after an outage searches
    // the old ones until then; an earlier load cut short left some that no chunk names).
    let replaced = index.vectors()?.live_ids();
    index.vectors_mut()?.by_page.clear();
    let mut after: Option<ChunkKey> = None;
    let mut loaded = 0usize;
    loop {
        let batch = search::search_index_chunks_after(
            pool,
            &index.model,
            index.keep_vectors,
            after.as_ref(),
            LOAD_BATCH,
        )
        .await?;
        let Some(last) = batch.last() else { break };
        after = Some(ChunkKey {
            source_id: last.source_id,
            page_id: last.page_id.clone(),
            chunk_index: last.chunk_index,
        });
        loaded += batch.len();
        let writing = Arc::clone(index);
        tokio::task::spawn_blocking(move || -> Result<(), SearchIndexError> {
            let writer = writing.writer()?;
            writing.add_chunks(&writer, &batch)
        })
        .await
        .map_err(|error| SearchIndexError::Task(error.to_string()))??;
    }
    let writing = Arc::clone(index);
    tokio::task::spawn_blocking(move || -> Result<(), SearchIndexError> {
        writing.writer()?.commit()?;
        writing.reader.reload()?;
        writing.vectors_mut()?.remove(&replaced);
        Ok(())
    })
    .await
    .map_err(|error| SearchIndexError::Task(error.to_string()))??;
    index.ready.store(true, Ordering::Release);
    tracing::info!(
        chunks = loaded,
        elapsed_ms = started.elapsed().as_millis() as u64,
        "search index loaded"
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

/// How the text leg ranks with BM25. The api ranks with the defaults; `ops/bench/relevance`
/// measures the others (README, "Search").
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TextRanking {
    /// How many of the query's words (and phrases) a chunk must hold.
    pub words: WordsRequired,
    /// The extra weight of a query word found in the chunk's heading path (0: none; the content
    /// holds the heading path as well, so a heading word always counts once).
    pub heading_boost: f32,
    /// Chunks that score below this share of the best chunk's score are left out (0: none).
    pub min_score_ratio: f32,
}

impl Default for TextRanking {
    /// Measured on the relevance bench (README, "Search"), fused with the vector leg, one run:
    /// MRR@10 0.808 (nDCG@10 0.843), against 0.731 (0.790) for every chunk that lacks at most a
    /// third of the words, unweighted, and 0.802 (0.844) for Postgres's `ts_rank_cd` leg. A
    /// heading names what its section is about, as a page title does (Postgres's leg weighs it 2.5
    /// times the text); and a text leg that speaks only when it is sure (every word, near the best
    /// score) lets the vector leg rank the rest, where one that always offers 50 candidates
    /// outvotes it. Score floors from 0.6 to 0.9 score within 0.004 of each other.
    fn default() -> Self {
        Self {
            words: WordsRequired::All,
            heading_boost: 4.0,
            min_score_ratio: 0.75,
        }
    }
}

/// How many of a query's words (and phrases) a chunk must hold to rank.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WordsRequired {
    /// Every one.
    All,
    /// All but a third of them, and at least all but one. A chunk that lacks one word of five
    /// still ranks; one that shares a single common word with a long question does not (on pages
    /// that repeat that word, it would outrank what the question means).
    AllButAThird,
    /// Any one.
    Any,
}

impl WordsRequired {
    fn required(self, words: usize) -> usize {
        match self {
            Self::All => words,
            Self::AllButAThird => words.saturating_sub((words / 3).max(1)).max(1),
            Self::Any => 1,
        }
    }
}

fn scale_to_unit(vector: &mut [f32]) {
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    }
}

/// One minus the cosine of two unit vectors; a zero vector is as far as can be (pgvector gives
/// it NaN, which sorts last).
fn cosine_distance(a: &[f32], b: &[f32]) -> f32 {
    let dot = dot_product(a, b);
    if dot == 0.0 && (a.iter().all(|x| *x == 0.0) || b.iter().all(|x| *x == 0.0)) {
        f32::INFINITY
    } else {
        1.0 - dot
    }
}

/// Summed in eight lanes, which the compiler turns into vector instructions (a single running
/// sum must keep its order, and stays scalar).
fn dot_product(a: &[f32], b: &[f32]) -> f32 {
    const LANES: usize = 8;
    let mut lanes = [0f32; LANES];
    let (a_chunks, b_chunks) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = a_chunks
        .remainder()
        .iter()
        .zip(b_chunks.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for lane in 0..LANES {
            lanes[lane] += x[lane] * y[lane];
        }
    }
    lanes.iter().sum::<f32>() + tail
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

    fn chunk(page_id: &str, chunk_index: i32, vector: Vec<f32>) -> SearchIndexChunk {
        SearchIndexChunk {
            source_id: Uuid::nil(),
            page_id: page_id.into(),
            chunk_index,
            heading_path: Vec::new(),
            text: String::new(),
            space_key: "DOCS".into(),
            path: format!("/{page_id}"),
            labels: Vec::new(),
            jira_keys: Vec::new(),
            mentions: Vec::new(),
            last_modified: None,
            content_type: "page".into(),
            code_language: None,
            embedding: Some(vector.into()),
        }
    }

    #[test]
    fn a_reused_vector_slot_does_not_answer_for_its_former_chunk() {
        let mut vectors = Vectors::default();
        let first = vectors
            .insert(&chunk("1", 0, vec![3.0, 4.0]))
            .expect("held");
        let second = vectors
            .insert(&chunk("1", 1, vec![0.0, 0.0]))
            .expect("held");
        assert_eq!(
            vectors.values(vectors.get(first).expect("live").0),
            [0.6, 0.8]
        );
        assert!(
            vectors.insert(&chunk("2", 0, vec![1.0])).is_none(),
            "another dimension"
        );

        vectors.remove(&[first]);
        assert!(vectors.get(first).is_none());
        let third = vectors
            .insert(&chunk("3", 0, vec![0.0, 2.0]))
            .expect("held");
        assert_eq!(third >> 32, first >> 32, "the freed slot is reused");
        assert!(vectors.get(first).is_none(), "a stale id stays stale");
        let (slot, key) = vectors.get(third).expect("live");
        assert_eq!(
            (key.page_id.as_str(), vectors.values(slot)),
            ("3", &[0.0, 1.0][..])
        );
        let mut live = vectors.live_ids();
        live.sort_unstable();
        let mut expected = vec![second, third];
        expected.sort_unstable();
        assert_eq!(live, expected);
        assert_eq!(cosine_distance(&[0.0, 1.0], &[0.0, 0.0]), f32::INFINITY);
        assert_eq!(dot_product(&[1.0; 11], &[2.0; 11]), 22.0);
    }

    #[test]
    fn headings_weigh_more_and_the_ranking_options_apply() {
        let index = SearchIndex::new("m", false).expect("index");
        let text_chunk = |page_id: &str, heading: &str, text: &str| SearchIndexChunk {
            heading_path: vec![heading.into()],
            text: text.into(),
            embedding: None,
            ..chunk(page_id, 0, Vec::new())
        };
        index
            .replace_pages(
                &[],
                &[
                    text_chunk(
                        "heading",
                        "Rollback",
                        "how the release is undone, step by step",
                    ),
                    text_chunk(
                        "text",
                        "Notes",
                        "a rollback undoes the release; rollback is quick",
                    ),
                    text_chunk(
                        "canary",
                        "Canary",
                        "a canary takes one percent of the traffic",
                    ),
                ],
            )
            .expect("indexed");
        let search = |query: &str, ranking: TextRanking| -> Vec<String> {
            index
                .search(
                    query,
                    &PageFilters::default(),
                    &ChunkKind::default(),
                    10,
                    &ranking,
                )
                .expect("searched")
                .into_iter()
                .map(|key| key.page_id)
                .collect()
        };
        let weighted = TextRanking {
            words: WordsRequired::All,
            heading_boost: 2.0,
            min_score_ratio: 0.0,
        };
        let plain = TextRanking {
            heading_boost: 0.0,
            ..weighted
        };
        assert_eq!(
            search("rollback", plain),
            ["text", "heading"],
            "twice in the text wins unweighted"
        );
        assert_eq!(search("rollback", weighted), ["heading", "text"]);

        assert!(
            search("rollback canary", weighted).is_empty(),
            "no chunk holds both"
        );
        assert_eq!(search("release rollback", weighted), ["heading", "text"]);
        let any = TextRanking {
            words: WordsRequired::Any,
            ..weighted
        };
        assert_eq!(search("rollback canary", any).len(), 3);
        let best_only = TextRanking {
            min_score_ratio: 0.99,
            ..any
        };
        assert_eq!(search("rollback", best_only), ["heading"]);
    }

    #[test]
    fn a_chunk_may_lack_a_third_of_the_query_words() {
        let required = |rule: WordsRequired| {
            (1..=7)
                .map(|words| rule.required(words))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            required(WordsRequired::AllButAThird),
            vec![1, 1, 2, 3, 4, 4, 5]
        );
        assert_eq!(required(WordsRequired::All), vec![1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(required(WordsRequired::Any), vec![1; 7]);
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
