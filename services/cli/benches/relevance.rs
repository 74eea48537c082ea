//! Search quality (run by `ops/bench/relevance`): real documentation served as a simulated space,
//! a judged query set, MRR@10 and nDCG@10 of the vector leg, the text leg and the fused result.
//!
//! CORPUS is the JSON that `ops/bench/relevance_corpus.py` makes from the Python documentation:
//! pages (storage format, with their hierarchy) and queries from the documentation's own index,
//! each with the pages the index points to. The pages are created in the simulator, synced through
//! the whole pipeline with the `local` model, and every query is sent to `/api/search` once with
//! `limit=100`: the answer holds every chunk either leg ranked (each leg's depth is 50) with its
//! rank in each leg, so the vector-only and text-only rankings, and the fusion at other RRF
//! constants, depths and text weights, are computed from the api's own leg ranks. The api's text
//! leg is BM25; Postgres's `ts_rank_cd` leg is asked of the store for the same queries, so both
//! text legs are judged side by side, and the BM25 leg's variants ([`TextRanking`]: how many words
//! a chunk must hold, the heading path's weight, a score floor) are asked of the api's own index
//! and fused with the same vector ranks. Relevance is judged per page (a page's best chunk stands for
//! it). Prints one JSON object.

#[allow(dead_code)]
#[path = "../tests/cli/stack.rs"]
mod stack;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use confluence_sim::CreatePage;
use pagestream_api::TextLeg;
use pagestream_api::search_index::{TextRanking, WordsRequired};
use pagestream_store::pages::PageFilters;
use pagestream_store::search::{self, ChunkKind, HybridQuery, SearchRow};
use pagestream_testkit::bench::{loadavg, round};
use percent_encoding::{NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use serde_json::{Value, json};
use stack::{API_KEY, Provider, SOURCE, Stack};

/// The api's defaults.
const RRF_K: f64 = 60.0;
const LEG_DEPTH: i64 = 50;

#[derive(Deserialize)]
struct Corpus {
    pages: Vec<CorpusPage>,
    queries: Vec<Query>,
}

#[derive(Deserialize)]
struct CorpusPage {
    key: String,
    title: String,
    parent: Option<String>,
    body: String,
    #[serde(default)]
    labels: Vec<String>,
}

#[derive(Clone, Deserialize)]
struct Query {
    query: String,
    kind: String,
    relevant: Vec<String>,
}

/// One chunk of an answer, with its rank in each leg: the api's (its text leg is BM25) and
/// Postgres's own text leg (`ts_rank_cd`, every word required), asked of the store directly.
#[derive(Clone)]
struct Hit {
    page: String,
    chunk_index: i64,
    vector_rank: Option<i64>,
    text_rank: Option<i64>,
    postgres_text_rank: Option<i64>,
}

impl Hit {
    fn text_rank(&self, leg: TextLeg) -> Option<i64> {
        match leg {
            TextLeg::Bm25 => self.text_rank,
            TextLeg::Postgres => self.postgres_text_rank,
        }
    }
}

/// How a ranking is made from the legs.
#[derive(Clone, Copy)]
enum Ranking {
    Vector,
    Text(TextLeg),
    Fused {
        k: f64,
        depth: i64,
        /// The text leg's weight in the fusion (the vector leg's is 1).
        text_weight: f64,
        text: TextLeg,
    },
    /// The api's own order.
    Api,
}

/// Pages in ranked order (each once, at its best chunk), at most ten.
fn top_pages(hits: &[Hit], ranking: Ranking) -> Vec<String> {
    let mut scored: Vec<(f64, &Hit)> = hits
        .iter()
        .enumerate()
        .filter_map(|(position, hit)| {
            let score = match ranking {
                Ranking::Vector => hit.vector_rank.map(|rank| -(rank as f64)),
                Ranking::Text(leg) => hit.text_rank(leg).map(|rank| -(rank as f64)),
                Ranking::Fused {
                    k,
                    depth,
                    text_weight,
                    text,
                } => {
                    let leg = |rank: Option<i64>| {
                        rank.filter(|rank| *rank <= depth)
                            .map_or(0.0, |rank| 1.0 / (k + rank as f64))
                    };
                    let score = leg(hit.vector_rank) + text_weight * leg(hit.text_rank(text));
                    (score > 0.0).then_some(score)
                }
                Ranking::Api => Some(-(position as f64)),
            }?;
            Some((score, hit))
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut pages: Vec<String> = Vec::new();
    for (_, hit) in scored {
        if !pages.contains(&hit.page) {
            pages.push(hit.page.clone());
            if pages.len() == 10 {
                break;
            }
        }
    }
    pages
}

/// MRR@10 and nDCG@10 (binary gains) of one ranked list.
fn judge(ranked: &[String], relevant: &HashSet<&str>) -> (f64, f64) {
    let reciprocal = ranked
        .iter()
        .position(|page| relevant.contains(page.as_str()))
        .map_or(0.0, |position| 1.0 / (position + 1) as f64);
    let dcg: f64 = ranked
        .iter()
        .enumerate()
        .filter(|(_, page)| relevant.contains(page.as_str()))
        .map(|(position, _)| 1.0 / ((position + 2) as f64).log2())
        .sum();
    let ideal: f64 = (0..relevant.len().min(10))
        .map(|position| 1.0 / ((position + 2) as f64).log2())
        .sum();
    (reciprocal, if ideal > 0.0 { dcg / ideal } else { 0.0 })
}

/// Puts one leg's ranks into an answer: `ranked` holds (page, chunk, rank) and `leg` picks the
/// rank it sets; a chunk the answer lacks is added with that rank alone.
fn merge_leg(
    hits: &mut Vec<Hit>,
    ranked: impl IntoIterator<Item = (String, i64, Option<i64>)>,
    leg: fn(&mut Hit) -> &mut Option<i64>,
) {
    for (page, chunk_index, rank) in ranked {
        match hits
            .iter_mut()
            .find(|hit| hit.page == page && hit.chunk_index == chunk_index)
        {
            Some(hit) => *leg(hit) = rank,
            None => {
                let mut hit = Hit {
                    page,
                    chunk_index,
                    vector_rank: None,
                    text_rank: None,
                    postgres_text_rank: None,
                };
                *leg(&mut hit) = rank;
                hits.push(hit);
            }
        }
    }
}

fn bm25_rank(hit: &mut Hit) -> &mut Option<i64> {
    &mut hit.text_rank
}

fn postgres_rank(hit: &mut Hit) -> &mut Option<i64> {
    &mut hit.postgres_text_rank
}

/// The BM25 leg's variants the bench measures beside the api's own (its default).
fn text_rankings() -> Vec<TextRanking> {
    let mut variants = Vec::new();
    for words in [
        WordsRequired::All,
        WordsRequired::AllButAThird,
        WordsRequired::Any,
    ] {
        for heading_boost in [0.0, 1.0, 2.0, 4.0] {
            variants.push(TextRanking {
                words,
                heading_boost,
                min_score_ratio: 0.0,
            });
        }
    }
    for heading_boost in [1.0, 2.0, 4.0, 8.0] {
        for min_score_ratio in [0.5, 0.6, 0.75, 0.85, 0.9] {
            variants.push(TextRanking {
                words: WordsRequired::All,
                heading_boost,
                min_score_ratio,
            });
        }
    }
    for words in [WordsRequired::AllButAThird, WordsRequired::Any] {
        variants.push(TextRanking {
            words,
            ..TextRanking::default()
        });
    }
    variants
}

/// Mean MRR@10 and nDCG@10 of a ranking over the queries (optionally of one kind).
fn evaluate(answers: &[(Query, Vec<Hit>)], ranking: Ranking, kind: Option<&str>) -> Value {
    let mut count = 0usize;
    let (mut mrr, mut ndcg) = (0.0, 0.0);
    for (query, hits) in answers {
        if kind.is_some_and(|kind| kind != query.kind) {
            continue;
        }
        let relevant: HashSet<&str> = query.relevant.iter().map(String::as_str).collect();
        let (r, n) = judge(&top_pages(hits, ranking), &relevant);
        mrr += r;
        ndcg += n;
        count += 1;
    }
    let count = count.max(1) as f64;
    json!({"mrr_at_10": (mrr / count * 1000.0).round() / 1000.0,
           "ndcg_at_10": (ndcg / count * 1000.0).round() / 1000.0})
}

fn leg_name(leg: TextLeg) -> &'static str {
    match leg {
        TextLeg::Bm25 => "bm25",
        TextLeg::Postgres => "postgres",
    }
}

/// Postgres's own text leg for a query, as the api ranked it before the BM25 index: `ts_rank_cd`
/// over the chunks that hold every word, at most 1,000 candidates, cut to the leg depth.
async fn postgres_text_leg(stack: &Stack, query: &str) -> anyhow::Result<Vec<SearchRow>> {
    let filters = PageFilters::default();
    let kind = ChunkKind::default();
    Ok(search::hybrid(
        &stack.pool,
        &HybridQuery {
            text: query,
            model: "all-MiniLM-L6-v2",
            vector: None,
            filters: &filters,
            kind: &kind,
            depth: LEG_DEPTH,
            text_candidates: Some(1000),
            text_ranking: None,
            vector_ranking: None,
            rrf_k: RRF_K,
            limit: LEG_DEPTH,
            headline_options: "",
        },
    )
    .await?)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::var("CORPUS")
        .context("CORPUS: the corpus JSON (ops/bench/relevance makes it)")?;
    let corpus: Corpus =
        serde_json::from_slice(&std::fs::read(&path).with_context(|| format!("read {path}"))?)
            .context("parse the corpus")?;
    let stack = Stack::start(1, Provider::Local).await;

    // The pages, parents first; titles are unique in a space, as in Confluence.
    let mut ids: HashMap<String, u64> = HashMap::new();
    let mut keys: HashMap<String, String> = HashMap::new();
    let mut titles: HashSet<String> = HashSet::new();
    for page in &corpus.pages {
        let mut title = page.title.trim().to_owned();
        if title.is_empty() || !titles.insert(title.clone()) {
            title = format!("{title} ({})", page.key);
            titles.insert(title.clone());
        }
        let parent_id = match &page.parent {
            Some(parent) => Some(
                *ids.get(parent)
                    .with_context(|| format!("parent {parent} comes after {}", page.key))?,
            ),
            None => None,
        };
        let (created, _) = stack
            .sim
            .handle
            .create(CreatePage {
                title,
                parent_id,
                body: Some(page.body.clone()),
                labels: page.labels.clone(),
            })
            .await
            .map_err(|error| anyhow::anyhow!("create {}: {error}", page.key))?;
        ids.insert(page.key.clone(), created.id);
        keys.insert(created.id.to_string(), page.key.clone());
    }

    stack.add_source().await;
    eprintln!(
        "bench/relevance: syncing {} pages with the local model",
        corpus.pages.len()
    );
    let synced = Instant::now();
    stack
        .cli(&["sync", SOURCE, "--full", "--wait", "--timeout-secs", "7200"])
        .await
        .context("sync")?;
    let sync_s = synced.elapsed().as_secs_f64();
    if !stack
        .api
        .search_index_settled(Duration::from_secs(60))
        .await?
    {
        bail!("the api's search index did not catch up within 60 s");
    }
    let (pages, chunks): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM confluence_pages WHERE NOT is_deleted), (SELECT count(*) FROM chunks)",
    )
    .fetch_one(&stack.pool)
    .await?;

    let http = reqwest::Client::new();
    let mut answers = Vec::with_capacity(corpus.queries.len());
    for query in corpus.queries {
        let url = format!(
            "{}/api/search?q={}&limit=100",
            stack.api_url,
            utf8_percent_encode(&query.query, NON_ALPHANUMERIC)
        );
        let response: Value = http
            .get(url)
            .bearer_auth(API_KEY)
            .send()
            .await?
            .json()
            .await?;
        let Some(hits) = response["hits"].as_array() else {
            bail!("search {:?} failed: {response}", query.query);
        };
        let mut hits: Vec<Hit> = hits
            .iter()
            .filter_map(|hit| {
                Some(Hit {
                    page: keys.get(hit["page_id"].as_str()?)?.clone(),
                    chunk_index: hit["chunk_index"].as_i64()?,
                    vector_rank: hit["vector_rank"].as_i64(),
                    text_rank: hit["text_rank"].as_i64(),
                    postgres_text_rank: None,
                })
            })
            .collect();
        let postgres = postgres_text_leg(&stack, &query.query).await?;
        merge_leg(
            &mut hits,
            postgres.into_iter().filter_map(|row| {
                Some((
                    keys.get(&row.page_id)?.clone(),
                    i64::from(row.chunk_index),
                    row.text_rank,
                ))
            }),
            postgres_rank,
        );
        answers.push((query, hits));
    }

    let fused = Ranking::Fused {
        k: RRF_K,
        depth: LEG_DEPTH,
        text_weight: 1.0,
        text: TextLeg::Bm25,
    };
    // The BM25 leg's variants, asked of the api's own index, fused with the api's vector ranks.
    let index = stack
        .api
        .search_index()
        .context("the api holds no search index")?;
    let mut text_variants = Vec::new();
    let fused_k10_text_weight_1_5 = Ranking::Fused {
        k: 10.0,
        depth: LEG_DEPTH,
        text_weight: 1.5,
        text: TextLeg::Bm25,
    };
    for ranking in text_rankings() {
        let mut variant_answers = Vec::with_capacity(answers.len());
        for (query, hits) in &answers {
            let ranked = index.search(
                &query.query,
                &PageFilters::default(),
                &ChunkKind::default(),
                LEG_DEPTH as usize,
                &ranking,
            )?;
            let mut hits = hits.clone();
            hits.iter_mut().for_each(|hit| hit.text_rank = None);
            merge_leg(
                &mut hits,
                ranked
                    .into_iter()
                    .enumerate()
                    .filter_map(|(position, key)| {
                        Some((
                            keys.get(&key.page_id)?.clone(),
                            i64::from(key.chunk_index),
                            Some(position as i64 + 1),
                        ))
                    }),
                bm25_rank,
            );
            variant_answers.push((query.clone(), hits));
        }
        text_variants.push(json!({
            "variant": format!("{ranking:?}"),
            "default": ranking == TextRanking::default(),
            "text": evaluate(&variant_answers, Ranking::Text(TextLeg::Bm25), None),
            "fused": evaluate(&variant_answers, fused, None),
            "fused_k10_text_weight_1_5": evaluate(&variant_answers, fused_k10_text_weight_1_5, None),
            "fused_api_queries": evaluate(&variant_answers, fused, Some("api")),
            "fused_concept_queries": evaluate(&variant_answers, fused, Some("concept")),
        }));
    }
    let mut by_kind = BTreeMap::new();
    for kind in ["api", "concept"] {
        by_kind.insert(
            kind,
            json!({
                "queries": answers.iter().filter(|(query, _)| query.kind == kind).count(),
                "vector": evaluate(&answers, Ranking::Vector, Some(kind)),
                "text": evaluate(&answers, Ranking::Text(TextLeg::Bm25), Some(kind)),
                "fused": evaluate(&answers, fused, Some(kind)),
                "postgres_text": evaluate(&answers, Ranking::Text(TextLeg::Postgres), Some(kind)),
            }),
        );
    }
    // The fusion's knobs, from the same leg ranks, with either text leg.
    let mut sweep = Vec::new();
    for text in [TextLeg::Bm25, TextLeg::Postgres] {
        for k in [1.0, 10.0, 30.0, 60.0, 100.0] {
            for depth in [10, 20, 30, 50] {
                for text_weight in [1.0, 1.5, 2.0] {
                    let ranking = Ranking::Fused {
                        k,
                        depth,
                        text_weight,
                        text,
                    };
                    let scores = evaluate(&answers, ranking, None);
                    sweep.push(json!({"text_leg": leg_name(text), "rrf_k": k, "leg_depth": depth,
                                      "text_weight": text_weight,
                                      "mrr_at_10": scores["mrr_at_10"], "ndcg_at_10": scores["ndcg_at_10"]}));
                }
            }
        }
    }
    let postgres_text = evaluate(&answers, Ranking::Text(TextLeg::Postgres), None);
    let postgres_fused = evaluate(
        &answers,
        Ranking::Fused {
            k: RRF_K,
            depth: LEG_DEPTH,
            text_weight: 1.0,
            text: TextLeg::Postgres,
        },
        None,
    );
    let vector = evaluate(&answers, Ranking::Vector, None);
    let text = evaluate(&answers, Ranking::Text(TextLeg::Bm25), None);
    let fused_all = evaluate(&answers, fused, None);
    let beats = |metric: &str| {
        fused_all[metric].as_f64() > vector[metric].as_f64()
            && fused_all[metric].as_f64() > text[metric].as_f64()
    };
    println!(
        "{}",
        json!({
            "benchmark": "relevance",
            "model": "all-MiniLM-L6-v2",
            "corpus": "python3.11-doc (Debian)",
            "pages": pages,
            "chunks": chunks,
            "queries": answers.len(),
            "vector": vector,
            "text": text,
            "fused": fused_all,
            "postgres_text_leg": {"text": postgres_text, "fused": postgres_fused},
            "api_order": evaluate(&answers, Ranking::Api, None),
            "fused_beats_both": beats("mrr_at_10") && beats("ndcg_at_10"),
            "rrf_k": RRF_K,
            "leg_depth": LEG_DEPTH,
            "by_kind": by_kind,
            "fusion_sweep": sweep,
            "text_leg_variants": text_variants,
            "sync_seconds": round(sync_s),
            "loadavg": loadavg(),
        })
    );
    Ok(())
}
