//! The client against the in-process Confluence simulator: pagination, errors, retries, rate
//! limits, secrets, CQL escaping, and decoding of payloads shaped like real ones.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use confluence_sim::{EditPage, FaultRule, Faults, LinkStyle, RunningSim, SimConfig};
use pagestream_confluence::{
    Auth, ClientConfig, ConfluenceClient, ConfluenceError, CqlQuery, ListOptions, RetryPolicy,
    SYNC_EXPAND, SpaceKey, quote_cql,
};
use pagestream_events::{PageId, Retryable};

#[path = "confluence/decoding.rs"]
mod decoding;
#[path = "confluence/secrets.rs"]
mod secrets;
#[path = "confluence/webhooks.rs"]
mod webhooks;

const TOKEN: &str = "tok-Zx81-very-secret-9f3a";
const EMAIL: &str = "robot@example.com";

async fn sim(pages: usize) -> RunningSim {
    let mut config = SimConfig::new(11, pages);
    config.email = EMAIL.into();
    config.api_token = TOKEN.into();
    config.personal_access_token = Some("pat-Qq77-secret".into());
    confluence_sim::start(config, SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .expect("simulator starts")
}

fn fast_config(sim: &RunningSim) -> ClientConfig {
    let mut config = ClientConfig::new(sim.base_url(), Auth::cloud(EMAIL, TOKEN));
    config.retry = RetryPolicy {
        max_attempts: 8,
        initial_backoff: Duration::from_millis(5),
        max_backoff: Duration::from_millis(40),
        max_retry_after: Duration::from_millis(150),
    };
    config.limits.requests_per_second = None;
    config.limits.max_concurrent = 8;
    config.limits.near_limit_spacing = Duration::from_millis(5);
    config.limits.near_limit_cooldown = Duration::from_millis(200);
    config
}

fn client(sim: &RunningSim) -> ConfluenceClient {
    ConfluenceClient::new(fast_config(sim)).expect("client")
}

fn ids(ids: &[u64]) -> Vec<PageId> {
    ids.iter().map(|id| PageId::from(*id)).collect()
}

async fn space_listing(client: &ConfluenceClient, limit: u32) -> Vec<u64> {
    let space = client
        .space_by_key(&SpaceKey::new("ENG").expect("key"))
        .await
        .expect("space");
    let options = ListOptions {
        limit,
        with_body: false,
    };
    client
        .space_pages(&space.id, &options)
        .collect_all()
        .await
        .expect("listing")
        .iter()
        .map(|p| p.id.as_str().parse().expect("numeric id"))
        .collect()
}

#[tokio::test]
async fn space_listing_is_complete_under_a_page_size_cap() {
    let sim = sim(120).await;
    let client = client(&sim);
    sim.handle.set_faults(Faults {
        page_size_cap: Some(7),
        ..Faults::default()
    });
    let listed = space_listing(&client, 250).await;
    assert_eq!(listed, sim.handle.current_page_ids());
    // 120 pages at 7 per page is 18 listing requests, plus one to resolve the space.
    assert_eq!(sim.handle.stats().endpoint("v2.space_pages"), 18);
    assert_eq!(client.stats().requests, 19);
}

#[tokio::test]
async fn listing_follows_link_header_or_body_links_alike() {
    let sim = sim(60).await;
    let client = client(&sim);
    for style in [LinkStyle::HeaderOnly, LinkStyle::BodyOnly, LinkStyle::Both] {
        sim.handle.set_faults(Faults {
            v2_links: style,
            ..Faults::default()
        });
        sim.handle.reset_stats();
        assert_eq!(
            space_listing(&client, 25).await,
            sim.handle.current_page_ids(),
            "{style:?}"
        );
        assert_eq!(
            sim.handle.stats().endpoint("v2.space_pages"),
            3,
            "{style:?}"
        );
    }
}

#[tokio::test]
async fn empty_pages_that_still_carry_next_end_the_listing() {
    let sim = sim(30).await;
    let client = client(&sim);
    sim.handle.set_faults(Faults {
        trailing_empty_page: true,
        ..Faults::default()
    });
    assert_eq!(
        space_listing(&client, 10).await,
        sim.handle.current_page_ids()
    );
    // 3 full pages, then one empty page that still carried `next`: the client stops there.
    assert_eq!(sim.handle.stats().endpoint("v2.space_pages"), 4);

    let cql = CqlQuery::pages_in_space(SpaceKey::new("ENG").expect("key")).to_string();
    let found = client
        .search(&cql, &["version"], 25)
        .collect_all()
        .await
        .expect("search");
    assert_eq!(found.len(), 30);
    // CQL pages may be empty mid-listing (permissions): empty pages are followed, a bounded few.
    assert_eq!(
        sim.handle.stats().endpoint("v1.search"),
        2 + 1 + u64::from(pagestream_confluence::MAX_EMPTY_SEARCH_PAGES)
    );
}

#[tokio::test]
async fn cql_pages_emptied_by_permissions_do_not_end_the_search() {
    let sim = sim(60).await;
    let client = client(&sim);
    let cql = CqlQuery::pages_in_space(SpaceKey::new("ENG").expect("key")).to_string();
    let search = || async {
        client
            .search(&cql, &["version"], 10)
            .collect_all()
            .await
            .expect("search")
            .into_iter()
            .map(|content| content.id.as_str().parse::<u64>().expect("id"))
            .collect::<Vec<_>>()
    };
    let in_order = search().await;
    assert_eq!(in_order.len(), 60);
    // The first two pages of 10 results are hidden from the API user, and two of the third.
    sim.handle.set_faults(Faults {
        cql_hidden: in_order[..22].to_vec(),
        ..Faults::default()
    });
    assert_eq!(search().await, in_order[22..].to_vec());
}

#[tokio::test]
async fn bulk_fetch_batches_ids_and_returns_bodies() {
    let sim = sim(320).await;
    let client = client(&sim);
    let all = sim.handle.current_page_ids();
    let mut wanted = ids(&all[..300]);
    wanted.push(PageId::from(999_999_999));
    wanted.push(wanted[0].clone());
    let pages = client.pages_by_id(&wanted).await.expect("bulk").pages;
    let got: BTreeSet<u64> = pages
        .iter()
        .map(|p| p.id.as_str().parse().expect("id"))
        .collect();
    assert_eq!(got, all[..300].iter().copied().collect());
    // 301 distinct ids: one batch of 250 and one of 51.
    assert_eq!(sim.handle.stats().endpoint("v2.pages"), 2);
    for page in pages.iter().step_by(37) {
        let id: u64 = page.id.as_str().parse().expect("id");
        let expected = sim.handle.page(id).expect("sim page");
        assert_eq!(page.storage(), sim.handle.body(id).as_deref());
        assert_eq!(page.version_number(), expected.version);
        assert_eq!(page.title, expected.title);
        assert_eq!(
            page.parent_id
                .as_ref()
                .map(|p| p.as_str().parse::<u64>().expect("id")),
            expected.parent_id
        );
    }
}

#[tokio::test]
async fn a_search_over_the_bound_asks_for_less_and_the_huge_page_alone_comes_without_its_body() {
    let sim = sim(40).await;
    let large = sim
        .handle
        .pages()
        .into_iter()
        .find(|p| p.body_target > 1_000_000)
        .expect("a page over 1 MB")
        .id;
    // Just under the huge page's body alone; the other pages together fit.
    let large_len = sim.handle.body(large).map_or(0, |b| b.len());
    let others: usize = sim
        .handle
        .current_page_ids()
        .into_iter()
        .filter(|id| *id != large)
        .filter_map(|id| sim.handle.body(id))
        .map(|b| b.len())
        .sum();
    assert!(others * 2 < large_len, "{others} bytes beside {large_len}");
    let mut config = fast_config(&sim);
    config.max_response_bytes = large_len * 9 / 10;
    let client = ConfluenceClient::new(config).expect("client");
    let cql = CqlQuery::pages_in_space(SpaceKey::new("ENG").expect("key")).to_string();
    let found = client
        .search(&cql, SYNC_EXPAND, 50)
        .collect_all()
        .await
        .expect("the search completes");
    let found_ids: BTreeSet<u64> = found
        .iter()
        .map(|c| c.id.as_str().parse().expect("id"))
        .collect();
    assert_eq!(
        found_ids,
        sim.handle
            .current_page_ids()
            .into_iter()
            .collect::<BTreeSet<u64>>()
    );
    for content in &found {
        let huge = content.id == PageId::from(large);
        assert_eq!(content.storage().is_none(), huge, "{}", content.id);
        assert!(content.version.is_some(), "the rest of the expansion stays");
    }
    // Halving down to the huge page, then back to full pages after it: a few requests, not one
    // per page.
    let requests = sim.handle.stats().endpoint("v1.search");
    assert!(requests <= 14, "{requests} search requests for 40 pages");
}

#[tokio::test]
async fn bulk_fetch_follows_next_inside_a_batch_and_splits_oversized_responses() {
    let sim = sim(40).await;
    let all = sim.handle.current_page_ids();
    let large = sim
        .handle
        .pages()
        .into_iter()
        .find(|p| p.body_target > 1_000_000)
        .expect("a page over 1 MB");
    sim.handle.set_faults(Faults {
        page_size_cap: Some(9),
        ..Faults::default()
    });
    let client = client(&sim);
    let pages = client
        .pages_by_id(&ids(&all))
        .await
        .expect("capped bulk")
        .pages;
    assert_eq!(pages.len(), all.len());
    assert_eq!(sim.handle.stats().endpoint("v2.pages"), 5);

    sim.handle.clear_faults();
    sim.handle.reset_stats();
    let large_len = sim.handle.body(large.id).map_or(0, |b| b.len());
    let mut config = fast_config(&sim);
    // Room for the large page alone (JSON escaping included), not for the whole batch.
    config.max_response_bytes = large_len * 13 / 10 + 20_000;
    let bounded = ConfluenceClient::new(config).expect("client");
    let pages = bounded
        .pages_by_id(&ids(&all))
        .await
        .expect("split bulk")
        .pages;
    assert_eq!(pages.len(), all.len());
    assert!(
        sim.handle.stats().endpoint("v2.pages") > 2,
        "the batch was split"
    );
    let big = pages
        .iter()
        .find(|p| p.id == PageId::from(large.id))
        .expect("large page fetched alone");
    assert!(big.storage().map_or(0, str::len) > 1_000_000);

    let single = bounded
        .pages_by_id(&ids(&[large.id]))
        .await
        .expect("alone it fits");
    assert_eq!(single.pages.len(), 1);
    // A page over the bound alone fails alone: the rest of its batch is fetched.
    let mut tiny = fast_config(&sim);
    tiny.max_response_bytes = 100_000;
    let bulk = ConfluenceClient::new(tiny)
        .expect("client")
        .pages_by_id(&ids(&all))
        .await
        .expect("the others are fetched");
    assert_eq!(bulk.pages.len(), all.len() - 1);
    assert!(bulk.pages.iter().all(|p| p.id != PageId::from(large.id)));
    let [(id, err)] = bulk.too_large.as_slice() else {
        panic!("one page too large: {:?}", bulk.too_large);
    };
    assert_eq!(*id, PageId::from(large.id));
    assert!(
        matches!(err, ConfluenceError::ResponseTooLarge { .. }),
        "{err}"
    );
    assert!(!err.is_transient());
}

#[tokio::test]
async fn incremental_search_returns_exactly_the_edited_pages_with_everything_expanded() {
    let sim = sim(80).await;
    let client = client(&sim);
    let all = sim.handle.current_page_ids();
    let before = chrono::Utc::now() - chrono::Duration::minutes(1);
    let edited = [all[5], all[17], all[42]];
    for id in edited {
        sim.handle
            .edit(id, EditPage::default())
            .await
            .expect("edit");
    }
    let cql = CqlQuery::pages_in_space(SpaceKey::new("ENG").expect("key"))
        .modified_from(before)
        .modified_before(chrono::Utc::now() + chrono::Duration::minutes(2))
        .to_string();
    let found = client
        .search(&cql, SYNC_EXPAND, 50)
        .collect_all()
        .await
        .expect("search");
    let found_ids: Vec<u64> = found
        .iter()
        .map(|c| c.id.as_str().parse().expect("id"))
        .collect();
    assert_eq!(found_ids, edited, "oldest first");
    for content in &found {
        let id: u64 = content.id.as_str().parse().expect("id");
        let page = sim.handle.page(id).expect("page");
        assert_eq!(content.version_number(), page.version);
        assert_eq!(content.storage(), sim.handle.body(id).as_deref());
        assert_eq!(content.label_names(), page.labels);
        assert_eq!(content.space.as_ref().map(|s| s.key.as_str()), Some("ENG"));
        let ancestor_ids: Vec<u64> = content
            .ancestors
            .iter()
            .map(|a| a.id.as_str().parse().expect("id"))
            .collect();
        assert_eq!(ancestor_ids, sim.handle.ancestors(id));
        assert!(content.ancestors.iter().all(|a| a.title.is_some()));
        assert!(content.last_modified().is_some());
        assert!(
            content
                .history
                .as_ref()
                .and_then(|h| h.created_by.as_ref())
                .is_some()
        );
    }
}

#[tokio::test]
async fn quoted_cql_values_cannot_break_out_and_bad_cql_is_a_permanent_error() {
    let sim = sim(20).await;
    let client = client(&sim);
    let hostile = r#"ENG" or space = "ENG"#;
    let injected = format!("type=page and space={}", quote_cql(hostile));
    let found = client
        .search(&injected, &[], 25)
        .collect_all()
        .await
        .expect("escaped value is one value");
    assert!(found.is_empty(), "escaped quote must not widen the query");

    let backslash = format!("type=page and space={}", quote_cql(r"ENG\"));
    assert!(
        client
            .search(&backslash, &[], 25)
            .collect_all()
            .await
            .expect("escaped backslash")
            .is_empty()
    );

    let err = client
        .search("type=page or space=ENG", &[], 25)
        .collect_all()
        .await
        .expect_err("unsupported cql");
    match &err {
        ConfluenceError::Rejected {
            status, message, ..
        } => {
            assert_eq!(*status, 400);
            assert!(message.contains("Could not parse cql"), "{message}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    assert!(!err.is_transient());
    assert_eq!(
        sim.handle.stats().endpoint("v1.search"),
        3,
        "400 is not retried"
    );
}

#[tokio::test]
async fn auth_forbidden_and_not_found_are_typed_and_not_retried() {
    let sim = sim(10).await;
    let mut wrong = fast_config(&sim);
    wrong.auth = Auth::cloud(EMAIL, "wrong-token");
    let err = ConfluenceClient::new(wrong)
        .expect("client")
        .page(&PageId::from(confluence_sim::FIRST_PAGE_ID))
        .await
        .expect_err("401");
    assert!(matches!(err, ConfluenceError::Unauthorized { .. }), "{err}");
    // Refused credentials are an outage of configuration: waited out, not a poison page.
    assert!(err.is_transient());

    let client = client(&sim);
    let err = client
        .page(&PageId::from(123))
        .await
        .expect_err("missing page");
    assert!(err.is_not_found(), "{err}");

    let first = PageId::from(confluence_sim::FIRST_PAGE_ID + 1);
    sim.handle
        .trash(confluence_sim::FIRST_PAGE_ID + 1)
        .await
        .expect("trash");
    assert!(
        client
            .page(&first)
            .await
            .expect_err("trashed")
            .is_not_found()
    );

    sim.handle.set_faults(Faults {
        rules: vec![FaultRule::new(403)],
        ..Faults::default()
    });
    let err = client
        .ancestors(&PageId::from(confluence_sim::FIRST_PAGE_ID))
        .await
        .expect_err("403");
    assert!(matches!(err, ConfluenceError::Forbidden { .. }), "{err}");
    assert_eq!(client.stats().requests, 3, "none of these is retried");
    assert_eq!(client.stats().retries, 0);
}

#[tokio::test]
async fn rate_limits_honour_retry_after_and_clamp_absurd_values() {
    let sim = sim(10).await;
    let page = PageId::from(confluence_sim::FIRST_PAGE_ID);

    // Without Retry-After: exponential backoff (5 ms, 10 ms with ±20 % jitter).
    let client = client(&sim);
    sim.handle.set_faults(Faults {
        rules: vec![FaultRule::new(429).times(2)],
        ..Faults::default()
    });
    client.page(&page).await.expect("succeeds after two 429s");
    let stats = client.stats();
    assert_eq!(
        (stats.requests, stats.retries, stats.rate_limited),
        (3, 2, 2)
    );
    assert!(stats.retry_wait >= Duration::from_millis(12), "{stats:?}");
    assert!(stats.retry_wait < Duration::from_millis(150), "{stats:?}");

    // An absurd Retry-After is clamped to the configured maximum (150 ms here).
    let client = client.with_fresh_stats();
    sim.handle.set_faults(Faults {
        rules: vec![FaultRule::new(429).retry_after("86400000").times(1)],
        ..Faults::default()
    });
    client.page(&page).await.expect("succeeds after the clamp");
    let stats = client.stats();
    assert_eq!(stats.retry_wait, Duration::from_millis(150), "{stats:?}");

    // A sane Retry-After is waited at least in full (503 counts as a rate limit too).
    let mut patient = fast_config(&sim);
    patient.retry.max_retry_after = Duration::from_secs(5);
    let patient = ConfluenceClient::new(patient).expect("client");
    sim.handle.set_faults(Faults {
        rules: vec![FaultRule::new(503).retry_after("1").times(1)],
        ..Faults::default()
    });
    patient
        .page(&page)
        .await
        .expect("succeeds after Retry-After");
    let stats = patient.stats();
    assert!(stats.retry_wait >= Duration::from_secs(1), "{stats:?}");
    assert!(stats.retry_wait <= Duration::from_millis(1100), "{stats:?}");
    assert_eq!(stats.rate_limited, 1);
}

#[tokio::test]
async fn server_errors_are_retried_then_reported_as_transient() {
    let sim = sim(10).await;
    let client = client(&sim);
    let page = PageId::from(confluence_sim::FIRST_PAGE_ID);
    sim.handle.set_faults(Faults {
        rules: vec![FaultRule::new(500).times(2), FaultRule::new(502).times(1)],
        ..Faults::default()
    });
    client.page(&page).await.expect("succeeds after three 5xx");
    let stats = client.stats();
    assert_eq!(
        (stats.requests, stats.server_errors, stats.retries),
        (4, 3, 3)
    );

    let mut config = fast_config(&sim);
    config.retry.max_attempts = 3;
    let impatient = ConfluenceClient::new(config).expect("client");
    sim.handle.set_faults(Faults {
        rules: vec![FaultRule::new(503)],
        ..Faults::default()
    });
    let err = impatient.page(&page).await.expect_err("always 503");
    assert!(
        matches!(err, ConfluenceError::RateLimited { attempts: 3, .. }),
        "{err}"
    );
    assert!(err.is_transient());
    sim.handle.set_faults(Faults {
        rules: vec![FaultRule::new(500)],
        ..Faults::default()
    });
    let err = impatient.page(&page).await.expect_err("always 500");
    assert!(
        matches!(
            err,
            ConfluenceError::Server {
                status: 500,
                attempts: 3,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.is_transient());
    assert_eq!(impatient.stats().requests, 6);
}

#[tokio::test]
async fn a_thirty_percent_429_storm_still_yields_every_page() {
    let sim = sim(500).await;
    let client = client(&sim);
    sim.handle.set_faults(Faults {
        rules: vec![
            FaultRule::new(429).rate(0.15).retry_after("1"),
            FaultRule::new(429).rate(0.18),
        ],
        ..Faults::default()
    });
    let listed = space_listing(&client, 50).await;
    assert_eq!(listed, sim.handle.current_page_ids());
    let pages = client.pages_by_id(&ids(&listed)).await.expect("bulk").pages;
    assert_eq!(pages.len(), 500);
    assert!(
        pages
            .iter()
            .all(|p| p.storage().is_some_and(|b| b.len() >= 1000))
    );
    let cql = CqlQuery::pages_in_space(SpaceKey::new("ENG").expect("key")).to_string();
    let found = client
        .search(&cql, &["version"], 100)
        .collect_all()
        .await
        .expect("search");
    assert_eq!(found.len(), 500);
    let stats = client.stats();
    assert!(stats.rate_limited > 0, "{stats:?}");
    assert_eq!(stats.requests, sim.handle.stats().requests);
    assert_eq!(stats.requests - stats.retries, 1 + 10 + 2 + 5);
}

#[tokio::test]
async fn near_limit_signals_and_the_rate_limit_pace_requests() {
    let sim = sim(30).await;
    let mut config = fast_config(&sim);
    config.limits.near_limit_spacing = Duration::from_millis(30);
    let client = ConfluenceClient::new(config).expect("client");
    sim.handle.set_faults(Faults {
        near_limit_rate: 1.0,
        ..Faults::default()
    });
    space_listing(&client, 5).await;
    let stats = client.stats();
    assert!(stats.near_limit_signals >= 7, "{stats:?}");
    assert!(stats.throttle_wait > Duration::ZERO, "{stats:?}");
    assert_eq!(stats.waited(), stats.throttle_wait + stats.retry_wait);

    sim.handle.clear_faults();
    let paced = |burst: u32| {
        let mut config = fast_config(&sim);
        config.limits.requests_per_second = Some(20.0);
        config.limits.burst = burst;
        ConfluenceClient::new(config).expect("client")
    };
    let spaced = paced(1);
    space_listing(&spaced, 5).await;
    let stats = spaced.stats();
    // 7 requests spaced 50 ms apart: the last six each waited for their slot.
    assert!(
        stats.throttle_wait >= Duration::from_millis(100),
        "{stats:?}"
    );
    // With a burst of 7, a quiet client starts all 7 at once; the 8th waits for the rate.
    let bursting = paced(7);
    space_listing(&bursting, 5).await;
    assert_eq!(bursting.stats().throttle_wait, Duration::ZERO);
    space_listing(&bursting, 5).await;
    assert!(
        bursting.stats().throttle_wait >= Duration::from_millis(100),
        "{:?}",
        bursting.stats()
    );
}

#[tokio::test]
async fn an_urgent_request_goes_before_a_backlog_of_background_ones() {
    let sim = sim(10).await;
    let mut config = fast_config(&sim);
    config.limits.requests_per_second = Some(10.0);
    config.limits.burst = 1;
    let client = ConfluenceClient::new(config).expect("client");
    let space = SpaceKey::new("ENG").expect("key");
    let background = client.with_fresh_stats().in_background();
    let urgent = client.with_fresh_stats();
    // Eight background requests at once (a sync run's pages, the includers of a changed page),
    // then an urgent one (a webhook's page) while they wait for their slots.
    let backlog = futures::future::join_all((0..8).map(|_| background.space_by_key(&space)));
    let late = async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let asked = std::time::Instant::now();
        urgent.space_by_key(&space).await.expect("urgent request");
        asked.elapsed()
    };
    let (answers, urgent_took) = tokio::join!(backlog, late);
    assert!(answers.iter().all(Result::is_ok));
    // At 10 per second the backlog takes 700 ms after its first request; the urgent request
    // waits for the next slot only.
    assert!(
        urgent_took < Duration::from_millis(250),
        "the urgent request took {urgent_took:?}"
    );
    assert!(urgent.stats().throttle_wait < Duration::from_millis(250));
    assert!(
        background.stats().throttle_wait >= Duration::from_millis(700),
        "{:?}",
        background.stats()
    );

    // With a burst, background work leaves it whole: four urgent requests start at once.
    let mut config = fast_config(&sim);
    config.limits.requests_per_second = Some(10.0);
    config.limits.burst = 5;
    let client = ConfluenceClient::new(config).expect("client");
    let background = client.with_fresh_stats().in_background();
    let urgent = client.with_fresh_stats();
    let backlog = futures::future::join_all((0..12).map(|_| background.space_by_key(&space)));
    let late = async {
        tokio::time::sleep(Duration::from_millis(150)).await;
        futures::future::join_all((0..4).map(|_| urgent.space_by_key(&space))).await
    };
    let (answers, urgent_answers) = tokio::join!(backlog, late);
    assert!(answers.iter().chain(&urgent_answers).all(Result::is_ok));
    assert_eq!(
        urgent.stats().throttle_wait,
        Duration::ZERO,
        "{:?}",
        urgent.stats()
    );
}

#[tokio::test]
async fn concurrent_requests_are_capped_by_the_client() {
    let sim = sim(10).await;
    sim.handle.set_faults(Faults {
        latency_ms: 40,
        ..Faults::default()
    });
    let run = |max_concurrent: usize| {
        let mut config = fast_config(&sim);
        config.limits.max_concurrent = max_concurrent;
        let client = ConfluenceClient::new(config).expect("client");
        async move {
            let page = |offset: u64| {
                let client = client.clone();
                async move {
                    client
                        .page(&PageId::from(confluence_sim::FIRST_PAGE_ID + offset))
                        .await
                        .expect("page")
                }
            };
            tokio::join!(page(0), page(1), page(2), page(3), page(4), page(5));
        }
    };
    run(2).await;
    assert_eq!(sim.handle.stats().max_in_flight, 2);
    sim.handle.reset_stats();
    run(8).await;
    assert!(
        sim.handle.stats().max_in_flight > 2,
        "the cap is the client's"
    );
}

#[tokio::test]
async fn fresh_stats_are_per_run_and_the_root_keeps_its_own() {
    let sim = sim(10).await;
    let root = client(&sim);
    let run = root.with_fresh_stats();
    run.page(&PageId::from(confluence_sim::FIRST_PAGE_ID))
        .await
        .expect("page");
    assert_eq!(run.stats().requests, 1);
    assert_eq!(root.stats().requests, 0);
    let before = run.stats();
    run.page(&PageId::from(confluence_sim::FIRST_PAGE_ID))
        .await
        .expect("page");
    assert_eq!(run.stats().since(&before).requests, 1);
    assert!(run.stats().bytes_received > before.bytes_received);
}

#[tokio::test]
async fn single_page_ancestors_and_labels_match_the_space() {
    let sim = sim(200).await;
    let client = client(&sim);
    let deepest = sim
        .handle
        .current_page_ids()
        .into_iter()
        .max_by_key(|id| sim.handle.ancestors(*id).len())
        .expect("pages");
    let chain = client
        .ancestors(&PageId::from(deepest))
        .await
        .expect("ancestors");
    let chain: Vec<u64> = chain
        .iter()
        .map(|a| a.id.as_str().parse().expect("id"))
        .collect();
    assert_eq!(chain, sim.handle.ancestors(deepest));
    assert_eq!(chain.len(), usize::from(confluence_sim::MAX_DEPTH) - 1);
    let page = client.page(&PageId::from(deepest)).await.expect("page");
    let expected = sim.handle.page(deepest).expect("sim page");
    assert_eq!(page.label_names(), expected.labels);
    assert_eq!(page.storage(), sim.handle.body(deepest).as_deref());
    assert_eq!(
        page.parent_id,
        chain.last().map(|p| PageId::from(*p)),
        "parent is the last ancestor"
    );
}

#[tokio::test]
async fn data_center_bearer_tokens_work_over_v1() {
    let sim = sim(15).await;
    let mut config = fast_config(&sim);
    config.auth = Auth::data_center("pat-Qq77-secret");
    let client = ConfluenceClient::new(config).expect("client");
    let first = PageId::from(confluence_sim::FIRST_PAGE_ID);
    let content = client
        .content(&first, &["body.storage", "version"])
        .await
        .expect("v1 content");
    assert_eq!(content.id, first);
    assert!(content.storage().is_some());
    let all = client
        .search(r#"type=page and space="ENG""#, &[], 25)
        .collect_all()
        .await
        .expect("search");
    assert_eq!(all.len(), 15);
}

#[test]
fn https_is_enforced_outside_loopback() {
    for url in [
        "http://example.atlassian.net/wiki",
        "http://192.168.1.10/wiki",
    ] {
        let err = ConfluenceClient::new(ClientConfig::new(url, Auth::cloud(EMAIL, TOKEN)))
            .expect_err("plain http to a remote host");
        assert!(matches!(err, ConfluenceError::Config(_)), "{err}");
        assert!(!err.to_string().contains(TOKEN));
    }
    let client = ConfluenceClient::new(ClientConfig::new(
        "https://example.atlassian.net",
        Auth::cloud(EMAIL, TOKEN),
    ))
    .expect("https");
    assert_eq!(
        client.base_url().as_str(),
        "https://example.atlassian.net/wiki"
    );
    assert!(
        ConfluenceClient::new(ClientConfig::new(
            "http://127.0.0.1:9/wiki",
            Auth::cloud(EMAIL, TOKEN)
        ))
        .is_ok()
    );
}

#[tokio::test]
async fn unreachable_servers_are_transient_transport_errors() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let mut config = ClientConfig::new(format!("http://{addr}/wiki"), Auth::cloud(EMAIL, TOKEN));
    config.retry.max_attempts = 2;
    config.retry.initial_backoff = Duration::from_millis(5);
    let client = ConfluenceClient::new(config).expect("client");
    let err = client
        .page(&PageId::from(1))
        .await
        .expect_err("nothing listens");
    assert!(
        matches!(err, ConfluenceError::Transport { attempts: 2, .. }),
        "{err}"
    );
    assert!(err.is_transient());
    assert_eq!(client.stats().transport_errors, 2);
}

#[tokio::test]
async fn a_page_is_found_by_space_and_title_and_a_folder_by_its_id() {
    let sim = sim(5).await;
    let client = client(&sim);
    let (folder, _) = sim
        .handle
        .create_folder(confluence_sim::CreatePage {
            title: "Handbook".into(),
            ..confluence_sim::CreatePage::default()
        })
        .await
        .expect("folder");
    let (page, _) = sim
        .handle
        .create(confluence_sim::CreatePage {
            title: "Q&A \"quoted\" / slashed".into(),
            parent_id: Some(folder.id),
            body: Some("<p>included text</p>".into()),
            ..confluence_sim::CreatePage::default()
        })
        .await
        .expect("page");
    let eng = SpaceKey::new("ENG").expect("key");
    let found = client
        .page_by_title(&eng, &page.title, &["body.storage", "version", "ancestors"])
        .await
        .expect("lookup")
        .expect("found");
    assert_eq!(found.id, PageId::from(page.id));
    assert_eq!(found.storage(), Some("<p>included text</p>"));
    assert_eq!(found.version_number(), 1);
    assert_eq!(
        found
            .ancestors
            .last()
            .and_then(|a| a.content_type.as_deref()),
        Some("folder")
    );
    assert!(
        client
            .page_by_title(&eng, "No such page", &[])
            .await
            .expect("lookup")
            .is_none()
    );
    assert!(
        client
            .page_by_title(&eng, "Handbook", &[])
            .await
            .expect("lookup")
            .is_none(),
        "a folder is not a page"
    );

    let listed = client
        .folder(&PageId::from(folder.id))
        .await
        .expect("folder");
    assert_eq!(listed.title, "Handbook");
    assert_eq!(listed.parent_type.as_deref(), Some("page"));
    assert_eq!(
        listed.parent_id,
        sim.handle.homepage(sim.handle.space_id()).map(PageId::from)
    );
    let not_a_folder = client.folder(&PageId::from(page.id)).await;
    assert!(matches!(
        not_a_folder,
        Err(ConfluenceError::NotFound { .. })
    ));
}
