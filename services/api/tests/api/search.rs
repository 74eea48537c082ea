//! Pages and hybrid search over rows seeded as the indexer writes them.

use chrono::{Duration, Utc};
use serde_json::Value;
use uuid::Uuid;

use pagestream_api::search_index::Nearest;
use pagestream_api::{SearchSettings, TextLeg};
use pagestream_store::pages::PageFilters;
use pagestream_store::search::{ChunkKind, HybridQuery, QueryVector, hybrid};

use crate::support::{
    self, SeedPage, TestApi, assert_error, seed_blog_post, seed_page, seed_source,
};

/// A small space: runbook 100 with child 101 and sibling 102 under /1; 200 under /2; 300 deleted.
/// Seeded, with the BM25 text leg (the Postgres one has its own test).
async fn seeded(responder: bool) -> (TestApi, Uuid) {
    seeded_with(
        responder,
        SearchSettings {
            text_leg: TextLeg::Bm25,
            ..SearchSettings::default()
        },
    )
    .await
}

async fn seeded_with(responder: bool, settings: SearchSettings) -> (TestApi, Uuid) {
    let api = support::start_with(responder, settings).await;
    let source = Uuid::new_v4();
    seed_source(&api.pool, source, "docs").await;
    let week_ago = Utc::now() - Duration::days(7);
    let pages = [
        SeedPage {
            page_id: "100",
            title: "Payments runbook",
            path: "/1/100",
            labels: &["runbook"],
            jira: &["PAY-42"],
            mentions: &["acc-alice"],
            deleted: false,
            last_modified: week_ago,
            chunks: &[
                (
                    "Credentials",
                    "Rotate the payment gateway credentials every quarter; tracked in PAY-42. The checkout service reads them at start.",
                ),
                (
                    "Escalation",
                    "Page the on-call engineer when refunds fail twice in a row.",
                ),
            ],
        },
        SeedPage {
            page_id: "101",
            title: "Checkout latency",
            path: "/1/100/101",
            labels: &["performance"],
            jira: &[],
            mentions: &[],
            deleted: false,
            last_modified: Utc::now(),
            chunks: &[(
                "Budget",
                "The checkout latency budget is 300 milliseconds at the 99th percentile.",
            )],
        },
        SeedPage {
            page_id: "102",
            title: "Cluster operations",
            path: "/1/102",
            labels: &["runbook"],
            jira: &["OPS-7"],
            mentions: &["acc-bob"],
            deleted: false,
            last_modified: week_ago,
            chunks: &[(
                "Nodes",
                "Drain kubernetes nodes one at a time before an upgrade.",
            )],
        },
        SeedPage {
            page_id: "200",
            title: "Team offsite",
            path: "/2/200",
            labels: &["social"],
            jira: &[],
            mentions: &[],
            deleted: false,
            last_modified: week_ago,
            chunks: &[(
                "Agenda",
                "Quarterly offsite agenda: hiking, dinner, and the hotel checkout at noon.",
            )],
        },
        SeedPage {
            page_id: "300",
            title: "Zebra migration",
            path: "/1/300",
            labels: &["runbook"],
            jira: &["PAY-99"],
            mentions: &[],
            deleted: true,
            last_modified: week_ago,
            chunks: &[(
                "Plan",
                "The zebra migration plan moves checkout credentials, tracked in PAY-99.",
            )],
        },
    ];
    for page in &pages {
        seed_page(&api.pool, source, page).await;
    }
    api.search_index_settled().await;
    (api, source)
}

async fn search(api: &TestApi, query: &str) -> Value {
    let (status, body) = api.get(&format!("/api/search?{query}")).await;
    assert_eq!(status.as_u16(), 200, "{query}: {body}");
    body
}

fn page_ids(body: &Value) -> Vec<String> {
    body["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .map(|hit| hit["page_id"].as_str().expect("page id").to_owned())
        .collect()
}

fn first_hit(body: &Value) -> &Value {
    &body["hits"][0]
}

#[tokio::test]
async fn search_finds_pages_by_jira_key_phrase_and_meaning() {
    let (api, _) = seeded(true).await;

    // A Jira key as a query, and as a filter.
    let by_key = search(&api, "q=PAY-42").await;
    assert!(
        by_key["warnings"].as_array().expect("warnings").is_empty(),
        "{by_key}"
    );
    let hit = first_hit(&by_key);
    assert_eq!(hit["page_id"], "100", "{by_key}");
    assert_eq!(hit["text_rank"], 1);
    assert_eq!(hit["title"], "Payments runbook");
    assert_eq!(
        hit["url"],
        "https://example.atlassian.net/wiki/spaces/DOCS/pages/100"
    );
    assert_eq!(
        hit["heading_path"],
        serde_json::json!(["Payments runbook", "Credentials"])
    );
    assert!(
        hit["snippet"].as_str().expect("snippet").contains("<mark>"),
        "{hit}"
    );
    assert!(hit["score"].as_f64().expect("score") > 0.0);
    let filtered = search(&api, "q=quarter&jira=pay-42").await;
    assert_eq!(page_ids(&filtered), vec!["100", "100"], "{filtered}");

    // A phrase: the words in that order.
    let phrase = search(&api, "q=%22latency+budget%22").await;
    let hit = first_hit(&phrase);
    assert_eq!(hit["page_id"], "101");
    assert_eq!(hit["text_rank"], 1);
    assert_eq!(
        hit["snippet"]
            .as_str()
            .expect("snippet")
            .matches("<mark>")
            .count(),
        2,
        "{hit}"
    );
    let reversed = search(&api, "q=%22budget+latency%22").await;
    assert!(
        reversed["hits"]
            .as_array()
            .expect("hits")
            .iter()
            .all(|hit| hit["text_rank"].is_null()),
        "the reversed phrase does not match as text: {reversed}"
    );

    // No chunk holds every word: the text leg is silent and the vector leg ranks alone (a leg
    // that offered chunks holding some of the words outvoted the vector leg on the relevance
    // bench).
    let meaning = search(&api, "q=rotate+gateway+credentials+kubernetes").await;
    let hit = first_hit(&meaning);
    assert_eq!(hit["page_id"], "100", "{meaning}");
    assert_eq!(hit["chunk_index"], 0);
    assert_eq!(hit["vector_rank"], 1);
    assert!(text_ranked(&meaning).is_empty(), "{meaning}");
    assert!(text_ranked(&search(&api, "q=gateway+kubernetes").await).is_empty());
    // Each of those words alone finds its page.
    assert!(text_ranked(&search(&api, "q=gateway").await).contains(&"100".to_owned()));
    assert!(text_ranked(&search(&api, "q=kubernetes").await).contains(&"102".to_owned()));

    // An excluded word removes its chunks from the text leg.
    let excluded = search(&api, "q=checkout+-hotel&limit=50").await;
    assert!(
        !text_ranked(&excluded).contains(&"200".to_owned()),
        "{excluded}"
    );
    assert!(
        text_ranked(&excluded).contains(&"101".to_owned()),
        "{excluded}"
    );
    assert!(
        text_ranked(&search(&api, "q=hotel+checkout&limit=50").await).contains(&"200".to_owned()),
        "without the exclusion the chunk matches"
    );
}

/// The pages of the hits the text leg ranked, in its order.
fn text_ranked(body: &Value) -> Vec<String> {
    let mut ranked: Vec<(i64, String)> = body["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .filter_map(|hit| {
            Some((
                hit["text_rank"].as_i64()?,
                hit["page_id"].as_str()?.to_owned(),
            ))
        })
        .collect();
    ranked.sort();
    ranked.into_iter().map(|(_, page)| page).collect()
}

#[tokio::test]
async fn postgres_ranks_the_text_leg_when_told_to_and_requires_every_word() {
    // Postgres ranks both legs, the filtered vector leg exactly.
    let settings = SearchSettings {
        text_leg: TextLeg::Postgres,
        memory_vectors: false,
        ..SearchSettings::default()
    };
    let (api, source) = seeded_with(true, settings).await;
    assert!(api.state.search_index().is_none());
    let meaning = search(&api, "q=rotate+gateway+credentials+kubernetes").await;
    assert_eq!(first_hit(&meaning)["page_id"], "100", "{meaning}");
    assert!(text_ranked(&meaning).is_empty(), "{meaning}");
    assert_eq!(
        text_ranked(&search(&api, "q=rotate+gateway+credentials").await),
        vec!["100"]
    );
    check_filters(&api, source).await;
}

#[tokio::test]
async fn the_search_index_follows_what_postgres_commits() {
    let (api, _) = seeded(true).await;
    let index = api.state.search_index().expect("bm25 search index").clone();
    assert_eq!(index.chunk_count(), 5, "the live pages' chunks");

    // New words in a chunk, a new label on a page.
    sqlx::query(
        "UPDATE chunks SET text = 'The offsite moves to the zeppelin hangar.' \
         WHERE page_id = '200'",
    )
    .execute(&api.pool)
    .await
    .expect("update chunk");
    sqlx::query(
        "UPDATE confluence_pages SET labels = labels || '{performance}' WHERE page_id = '102'",
    )
    .execute(&api.pool)
    .await
    .expect("update labels");
    // A deletion: the search statement drops the page at once, whatever the index holds yet.
    sqlx::query("UPDATE confluence_pages SET is_deleted = true WHERE page_id = '101'")
        .execute(&api.pool)
        .await
        .expect("delete page");
    let at_once = search(&api, "q=latency+budget&limit=50").await;
    assert!(!page_ids(&at_once).contains(&"101".to_owned()), "{at_once}");

    api.search_index_settled().await;
    assert_eq!(
        index.chunk_count(),
        4,
        "the deleted page's chunk left the index"
    );
    assert_eq!(text_ranked(&search(&api, "q=zeppelin").await), vec!["200"]);
    assert_eq!(
        text_ranked(&search(&api, "q=drain+nodes&label=performance").await),
        vec!["102"]
    );
}

#[tokio::test]
async fn a_stream_of_changes_is_taken_in_spaced_refreshes() {
    let (api, source) = seeded(true).await;
    api.search_index_settled().await;
    let index = api.state.search_index().expect("bm25 search index").clone();
    let (refreshes_before, chunks_before) = (index.refresh_count(), index.chunk_count());
    // Pages committed one by one, as an indexer under a full sync commits its batches.
    let started = std::time::Instant::now();
    for number in 0..40 {
        let page_id = (3000 + number).to_string();
        let text = format!("zephyr rollout notes {number}");
        seed_page(
            &api.pool,
            source,
            &SeedPage {
                page_id: &page_id,
                title: &format!("Zephyr {number}"),
                path: &format!("/9/{page_id}"),
                labels: &[],
                jira: &[],
                mentions: &[],
                deleted: false,
                last_modified: Utc::now(),
                chunks: &[("Zephyr", text.as_str())],
            },
        )
        .await;
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    api.search_index_settled().await;
    let elapsed = started.elapsed();
    assert_eq!(
        index.chunk_count(),
        chunks_before + 40,
        "every page's chunk"
    );
    assert_eq!(
        text_ranked(&search(&api, "q=zephyr+39").await),
        vec!["3039"]
    );
    // Each refresh commits a segment: at most one every 250 ms, the first and the last aside.
    let refreshes = index.refresh_count() - refreshes_before;
    let bound = elapsed.as_millis() as u64 / 250 + 2;
    assert!(
        (1..=bound).contains(&refreshes),
        "{refreshes} refreshes in {elapsed:?} for 40 pages committed one by one (at most {bound})"
    );
}

#[tokio::test]
async fn filters_apply_to_both_legs() {
    // Few pages pass these filters: the vector leg ranks them exactly.
    let (api, source) = seeded(true).await;
    check_filters(&api, source).await;
}

/// The exact vector ranking of a filtered query, as Postgres ranks it (`exact`, no given ranking).
async fn postgres_exact_ranking(
    api: &TestApi,
    vector: &[f32],
    filters: &PageFilters,
) -> Vec<(String, i32)> {
    let mut rows = hybrid(
        &api.pool,
        &HybridQuery {
            text: "zzzz",
            model: support::MODEL,
            vector: Some(QueryVector {
                dimension: 384,
                vector,
                exact: true,
            }),
            filters,
            kind: &ChunkKind::Section,
            depth: 50,
            text_candidates: None,
            text_ranking: None,
            vector_ranking: None,
            rrf_k: 60.0,
            limit: 50,
            headline_options: "",
        },
    )
    .await
    .expect("postgres search");
    rows.sort_by_key(|row| row.vector_rank);
    rows.into_iter()
        .map(|row| (row.page_id, row.chunk_index))
        .collect()
}

fn ranked_keys(nearest: Nearest) -> Vec<(String, i32)> {
    match nearest {
        Nearest::Ranked(keys) => keys
            .into_iter()
            .map(|key| (key.page_id, key.chunk_index))
            .collect(),
        Nearest::TooManyPages => panic!("ranked in postgres"),
    }
}

/// 60 more pages of three chunks, on two labels and two subtrees, with vectors that hardly ever
/// tie.
async fn seed_notes(api: &TestApi, source: Uuid) {
    let words = [
        "deploy", "rollback", "latency", "budget", "kafka", "schema", "vault", "oncall", "index",
        "cache",
    ];
    let texts: Vec<[String; 3]> = (0..60)
        .map(|page| {
            std::array::from_fn(|chunk| {
                format!(
                    "{} {} {} notes {page} {chunk}",
                    words[(page + chunk) % 10],
                    words[(page * 3 + chunk) % 10],
                    words[(page * 7 + chunk * 2) % 10]
                )
            })
        })
        .collect();
    for (number, chunks) in texts.iter().enumerate() {
        let page_id = (1000 + number).to_string();
        let path = format!("/{}/{page_id}", 5 + number % 2);
        let chunks: Vec<(&str, &str)> =
            chunks.iter().map(|text| ("Notes", text.as_str())).collect();
        seed_page(
            &api.pool,
            source,
            &SeedPage {
                page_id: &page_id,
                title: &format!("Notes {number}"),
                path: &path,
                labels: if number % 3 == 0 { &["ops"] } else { &["dev"] },
                jira: &[],
                mentions: &[],
                deleted: false,
                last_modified: Utc::now(),
                chunks: &chunks,
            },
        )
        .await;
    }
    // Hash vectors of so few words tie often; these hardly ever do.
    sqlx::query(
        "UPDATE chunks SET embedding = (SELECT array_agg(sin(g * (page_id::int % 89 + 1) \
         + chunk_index * 0.7 + g * g * 0.013))::real[] FROM generate_series(1, 384) g)::vector \
         WHERE page_id::int >= 1000",
    )
    .execute(&api.pool)
    .await
    .expect("spread vectors");
}

#[tokio::test]
async fn a_filtered_vector_leg_ranked_in_memory_is_the_exact_ranking_postgres_gives() {
    let (api, source) = seeded(true).await;
    seed_notes(&api, source).await;
    api.search_index_settled().await;
    let index = api.state.search_index().expect("bm25 search index").clone();
    let vector: Vec<f32> = (1..=384)
        .map(|g| (f64::from(g) * 0.37).sin() as f32)
        .collect();
    let filter_sets = [
        PageFilters {
            label: Some("ops".into()),
            ..PageFilters::default()
        },
        PageFilters {
            path: Some("/6".into()),
            ..PageFilters::default()
        },
        PageFilters {
            label: Some("dev".into()),
            path: Some("/5".into()),
            ..PageFilters::default()
        },
    ];
    for filters in &filter_sets {
        let expected = postgres_exact_ranking(&api, &vector, filters).await;
        assert!(expected.len() >= 30, "{filters:?}: {expected:?}");
        let nearest = index
            .nearest(&vector, filters, &ChunkKind::Section, 50, 1000)
            .expect("nearest");
        assert_eq!(ranked_keys(nearest), expected, "{filters:?}");
    }
    // 20 pages carry the label: past a bound of 19 the HNSW index ranks them.
    assert_eq!(
        index
            .nearest(&vector, &filter_sets[0], &ChunkKind::Section, 50, 19)
            .expect("nearest"),
        Nearest::TooManyPages
    );

    // A page's chunks replaced by the query's own vector (as the api embeds it): they rank
    // first, the old ones are gone.
    let vector = support::embedder().vector("kafka schema rollback");
    sqlx::query("UPDATE chunks SET embedding = $1::real[]::vector WHERE page_id = '1003'")
        .bind(&vector)
        .execute(&api.pool)
        .await
        .expect("update vectors");
    api.search_index_settled().await;
    let after = ranked_keys(
        index
            .nearest(&vector, &filter_sets[0], &ChunkKind::Section, 200, 1000)
            .expect("nearest"),
    );
    assert_eq!(
        after.len(),
        60,
        "each of the 20 pages' chunks once: {after:?}"
    );
    let first: Vec<&str> = after[..3].iter().map(|(page, _)| page.as_str()).collect();
    assert_eq!(first, vec!["1003"; 3]);
    assert_eq!(
        after[..50],
        postgres_exact_ranking(&api, &vector, &filter_sets[0]).await
    );
    // Through the api, the fused hits carry those vector ranks.
    let body = search(&api, "q=kafka+schema+rollback&label=ops&limit=50").await;
    let vector_first: Vec<&Value> = body["hits"]
        .as_array()
        .expect("hits")
        .iter()
        .filter(|hit| hit["vector_rank"].as_i64().is_some_and(|rank| rank <= 3))
        .collect();
    assert_eq!(vector_first.len(), 3, "{body}");
    assert!(
        vector_first.iter().all(|hit| hit["page_id"] == "1003"),
        "{body}"
    );
}

/// While bulk mode has dropped the model's vector index, the vector leg of an unfiltered query
/// is ranked exactly over every chunk (in the api's memory: Postgres could only read every row).
#[tokio::test]
async fn without_the_vector_index_the_vector_leg_ranks_every_chunk_exactly() {
    let (api, source) = seeded(true).await;
    seed_notes(&api, source).await;
    assert_eq!(
        pagestream_store::drop_search_indexes(&api.pool)
            .await
            .expect("drop the search indexes"),
        2,
        "the model's vector index and the full-text index"
    );
    api.search_index_settled().await;
    let query = "kafka schema rollback";
    let expected = postgres_exact_ranking(
        &api,
        &support::embedder().vector(query),
        &PageFilters::default(),
    )
    .await;
    assert_eq!(expected.len(), 50);
    let body = search(&api, "q=kafka+schema+rollback&limit=50").await;
    // Each hit's vector rank is its place in the exact ranking.
    let mut ranks = Vec::new();
    for hit in body["hits"].as_array().expect("hits") {
        let Some(rank) = hit["vector_rank"].as_i64() else {
            continue;
        };
        let key = (
            hit["page_id"].as_str().expect("page id").to_owned(),
            hit["chunk_index"].as_i64().expect("chunk index") as i32,
        );
        assert_eq!(expected[rank as usize - 1], key, "rank {rank}: {body}");
        ranks.push(rank);
    }
    ranks.sort_unstable();
    assert_eq!(ranks[..10], (1..=10).collect::<Vec<i64>>(), "{body}");
}

#[tokio::test]
async fn filters_apply_inside_the_hnsw_scan() {
    // Never exact: the filters apply during the iterative index scan. The in-memory index ranks
    // text only, and holds no vectors.
    let settings = SearchSettings {
        exact_filter_pages: 0,
        memory_vectors: false,
        text_leg: TextLeg::Bm25,
        ..SearchSettings::default()
    };
    let (api, source) = seeded_with(true, settings).await;
    check_filters(&api, source).await;
}

async fn check_filters(api: &TestApi, source: Uuid) {
    let mut all = page_ids(&search(api, "q=checkout&limit=50").await);
    all.sort();
    all.dedup();
    assert_eq!(
        all,
        vec!["100", "101", "102", "200"],
        "every live page, via the vector leg"
    );

    let subtree = search(api, "q=checkout&path=/1/100&limit=50").await;
    let mut ids = page_ids(&subtree);
    ids.sort();
    assert_eq!(ids, vec!["100", "100", "101"], "{subtree}");
    assert_eq!(
        page_ids(&search(api, "q=checkout&path=/1/100/101/").await),
        vec!["101"]
    );
    // A prefix of an id is not a subtree.
    assert!(page_ids(&search(api, "q=checkout&path=/1/10").await).is_empty());

    assert_eq!(
        page_ids(&search(api, "q=checkout&label=performance").await),
        vec!["101"]
    );
    assert_eq!(
        page_ids(&search(api, "q=checkout&label=Social").await),
        vec!["200"]
    );
    assert_eq!(
        page_ids(&search(api, "q=nodes&mention=acc-bob").await),
        vec!["102"]
    );
    let recent = search(
        api,
        &format!(
            "q=checkout&updated_after={}",
            (Utc::now() - Duration::days(1)).format("%Y-%m-%d")
        ),
    )
    .await;
    assert_eq!(page_ids(&recent), vec!["101"]);
    assert_eq!(
        page_ids(&search(api, "q=checkout&space=DOCS&limit=1").await).len(),
        1
    );
    assert!(page_ids(&search(api, "q=checkout&space=OTHER").await).is_empty());
    assert_eq!(
        page_ids(&search(api, &format!("q=offsite&source={source}&limit=1")).await),
        vec!["200"]
    );
    assert_eq!(
        page_ids(&search(api, "q=offsite&source=docs&limit=1").await),
        vec!["200"]
    );
}

#[tokio::test]
async fn deleted_pages_are_never_found() {
    let (api, _) = seeded(true).await;
    for query in [
        "q=zebra+migration&limit=100",
        "q=PAY-99",
        "q=checkout&jira=PAY-99",
        "q=plan&path=/1/300",
    ] {
        let body = search(&api, query).await;
        assert!(
            !page_ids(&body).contains(&"300".to_owned()),
            "{query}: {body}"
        );
    }
    assert_error(
        &api.get("/api/pages/docs/300").await,
        404,
        "page_not_found",
        None,
    );
    let (_, listed) = api.get("/api/confluence/docs/pages?limit=100").await;
    assert!(!listed.to_string().contains("Zebra"), "{listed}");
}

#[tokio::test]
async fn search_without_the_embedder_answers_from_full_text() {
    let (api, _) = seeded(false).await;
    let body = search(&api, "q=latency+budget").await;
    assert_eq!(page_ids(&body), vec!["101"]);
    assert!(first_hit(&body)["vector_rank"].is_null());
    let warnings = body["warnings"].as_array().expect("warnings");
    assert_eq!(warnings.len(), 1, "{body}");
    assert!(
        warnings[0]
            .as_str()
            .expect("warning")
            .contains("full-text results only")
    );
}

#[tokio::test]
async fn bad_search_input_names_the_parameter() {
    let (api, _) = seeded(true).await;
    let cases = [
        ("", "q"),
        ("q=", "q"),
        ("q=x&limit=0", "limit"),
        ("q=x&limit=101", "limit"),
        ("q=x&limit=ten", "limit"),
        ("q=x&path=abc", "path"),
        ("q=x&jira=not-a-key", "jira"),
        ("q=x&space=A%20B", "space"),
        ("q=x&updated_after=yesterday", "updated_after"),
        ("q=x&colour=red", "colour"),
        ("q=x&q=y", "q"),
        ("q=x&kind=prose", "kind"),
        ("q=x&kind=section&language=python", "language"),
    ];
    for (query, field) in cases {
        let response = api.get(&format!("/api/search?{query}")).await;
        assert_error(&response, 400, "invalid_parameter", Some(field));
    }
    let long = format!("q={}", "a".repeat(1001));
    assert_error(
        &api.get(&format!("/api/search?{long}")).await,
        400,
        "invalid_parameter",
        Some("q"),
    );
    assert_error(
        &api.get("/api/search?q=x&source=nope").await,
        404,
        "source_not_found",
        Some("source"),
    );
    // An unknown source id too (it is checked when the search finds nothing).
    assert_error(
        &api.get(&format!("/api/search?q=x&source={}", Uuid::new_v4()))
            .await,
        404,
        "source_not_found",
        Some("source"),
    );
}

#[tokio::test]
async fn the_content_type_filter_tells_blog_posts_from_pages() {
    let (api, source) = seeded(true).await;
    seed_blog_post(
        &api.pool,
        source,
        &SeedPage {
            page_id: "400",
            title: "Release 3.2 notes",
            path: "/400",
            labels: &["release-notes"],
            jira: &[],
            mentions: &[],
            deleted: false,
            last_modified: Utc::now(),
            chunks: &[(
                "Highlights",
                "Checkout now retries failed refunds on its own.",
            )],
        },
    )
    .await;
    api.search_index_settled().await;
    let content_types = |body: &Value| -> Vec<(String, String)> {
        body["hits"]
            .as_array()
            .expect("hits")
            .iter()
            .map(|hit| {
                (
                    hit["page_id"].as_str().expect("page id").to_owned(),
                    hit["content_type"]
                        .as_str()
                        .expect("content type")
                        .to_owned(),
                )
            })
            .collect()
    };
    let both = content_types(&search(&api, "q=checkout").await);
    assert!(
        both.contains(&("400".into(), "blogpost".into())),
        "{both:?}"
    );
    assert!(both.contains(&("101".into(), "page".into())), "{both:?}");
    let blog_posts = content_types(&search(&api, "q=checkout&content_type=blogpost").await);
    assert_eq!(blog_posts, [("400".to_owned(), "blogpost".to_owned())]);
    let pages = content_types(&search(&api, "q=checkout&content_type=page").await);
    assert!(!pages.is_empty());
    assert!(
        pages.iter().all(|(id, kind)| id != "400" && kind == "page"),
        "{pages:?}"
    );
    assert_error(
        &api.get("/api/search?q=x&content_type=comment").await,
        400,
        "invalid_parameter",
        Some("content_type"),
    );

    // The listing filters the same way and shows the type; a blog post is no top-level page.
    let (_, listed) = api
        .get("/api/confluence/docs/pages?content_type=blogpost")
        .await;
    assert_eq!(page_ids_of(&listed), vec!["400"]);
    assert_eq!(listed["pages"][0]["content_type"], "blogpost");
    let (_, top) = api.get("/api/confluence/docs/pages?top_level=true").await;
    assert_eq!(page_ids_of(&top), Vec::<&str>::new());
    let (_, post) = api.get("/api/pages/docs/400").await;
    assert_eq!(post["content_type"], "blogpost");
}

#[tokio::test]
async fn pages_are_listed_with_filters_and_shown_with_their_markdown() {
    let (api, source) = seeded(false).await;
    let (status, first) = api.get("/api/confluence/docs/pages?limit=3").await;
    assert_eq!(status.as_u16(), 200, "{first}");
    assert_eq!(page_ids_of(&first), vec!["100", "101", "102"]);
    let cursor = first["next_cursor"].as_str().expect("cursor").to_owned();
    let (_, rest) = api
        .get(&format!(
            "/api/confluence/{source}/pages?limit=3&cursor={cursor}"
        ))
        .await;
    assert_eq!(page_ids_of(&rest), vec!["200"]);
    assert!(rest["next_cursor"].is_null());

    let (_, subtree) = api.get("/api/confluence/docs/pages?path=/1/100").await;
    assert_eq!(page_ids_of(&subtree), vec!["100", "101"]);
    let (_, labelled) = api.get("/api/confluence/docs/pages?label=runbook").await;
    assert_eq!(page_ids_of(&labelled), vec!["100", "102"]);
    assert_eq!(
        labelled["pages"][0]["labels"],
        serde_json::json!(["runbook"])
    );
    let (_, recent) = api
        .get(&format!(
            "/api/confluence/docs/pages?updated_after={}",
            (Utc::now() - Duration::days(1)).format("%Y-%m-%d")
        ))
        .await;
    assert_eq!(page_ids_of(&recent), vec!["101"]);
    // Where a page stands: by title, parent, Jira key and mention (the MCP tools' lookups).
    for (query, expected) in [
        ("title=payments%20RUNBOOK", vec!["100"]),
        ("title=Payments", vec![]),
        ("parent=100", vec!["101"]),
        ("parent=1", vec!["100", "102"]),
        ("jira=pay-42", vec!["100"]),
        ("mention=acc-bob", vec!["102"]),
        ("top_level=true", vec![]),
        ("jira=PAY-99", vec![]),
    ] {
        let (status, listed) = api
            .get(&format!("/api/confluence/docs/pages?{query}"))
            .await;
        assert_eq!(status.as_u16(), 200, "{query}: {listed}");
        assert_eq!(page_ids_of(&listed), expected, "{query}");
    }

    for (query, field) in [
        ("limit=0", "limit"),
        ("path=x", "path"),
        ("cursor=abc", "cursor"),
        ("updated_after=soon", "updated_after"),
        ("jira=PAY", "jira"),
        ("parent=x", "parent"),
        ("links_to=x", "links_to"),
        ("top_level=maybe", "top_level"),
        ("colour=red", "colour"),
    ] {
        let response = api
            .get(&format!("/api/confluence/docs/pages?{query}"))
            .await;
        assert_error(&response, 400, "invalid_parameter", Some(field));
    }
    assert_error(
        &api.get("/api/confluence/nope/pages").await,
        404,
        "source_not_found",
        Some("id"),
    );

    let (status, page) = api.get("/api/pages/docs/100").await;
    assert_eq!(status.as_u16(), 200, "{page}");
    assert_eq!(page["title"], "Payments runbook");
    assert_eq!(page["path"], "/1/100");
    assert!(
        page["markdown"]
            .as_str()
            .expect("markdown")
            .contains("Rotate the payment gateway")
    );
    assert_eq!(
        page["metadata"]["jira_issue_links"],
        serde_json::json!(["PAY-42"])
    );
    let (status, by_uuid) = api.get(&format!("/api/pages/{source}/101")).await;
    assert_eq!(status.as_u16(), 200);
    assert_eq!(by_uuid["title"], "Checkout latency");
    assert_error(
        &api.get("/api/pages/docs/abc").await,
        400,
        "invalid_parameter",
        Some("page"),
    );
    assert_error(
        &api.get("/api/pages/docs/999").await,
        404,
        "page_not_found",
        None,
    );
    assert_error(
        &api.get("/api/pages/nope/100").await,
        404,
        "source_not_found",
        Some("source"),
    );
}

fn page_ids_of(body: &Value) -> Vec<String> {
    body["pages"]
        .as_array()
        .expect("pages")
        .iter()
        .map(|page| page["page_id"].as_str().expect("page id").to_owned())
        .collect()
}
