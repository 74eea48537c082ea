//! The `openai` provider against a small local server speaking the `/v1/embeddings` protocol.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use pagestream_embedder::hash::HashProvider;
use pagestream_embedder::openai::{ApiKey, OpenAiConfig, OpenAiProvider};
use pagestream_embedder::{EmbedError, EmbeddingProvider};
use pagestream_events::Retryable;
use serde_json::{Value, json};

const KEY: &str = "sk-test-0123456789";
const DIMENSION: usize = 16;

#[derive(Debug, Clone)]
struct Seen {
    inputs: Vec<String>,
    dimensions: Option<u64>,
    authorization: Option<String>,
}

/// What the server answers, call by call; once the script is done, it answers correctly.
#[derive(Clone)]
enum Answer {
    Status(u16, Option<&'static str>),
    WrongDimension,
    MissingIndex,
}

#[derive(Clone)]
struct Server {
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Mutex<VecDeque<Answer>>>,
}

async fn embeddings(
    State(server): State<Server>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let inputs: Vec<String> = body["input"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    server.seen.lock().expect("lock").push(Seen {
        inputs: inputs.clone(),
        dimensions: body["dimensions"].as_u64(),
        authorization: headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
    });
    let hash = HashProvider::new(DIMENSION, 512).expect("hash");
    let mut data: Vec<Value> = inputs
        .iter()
        .enumerate()
        .map(|(index, text)| json!({"object": "embedding", "index": index, "embedding": hash.embed_one(text)}))
        .collect();
    // Out of order on purpose: results must be matched by index.
    data.reverse();
    let answer = server.script.lock().expect("lock").pop_front();
    match answer {
        Some(Answer::Status(status, retry_after)) => {
            let status = StatusCode::from_u16(status).expect("status");
            // Servers sometimes echo what they were sent; the key must not come back out.
            let body =
                json!({"error": {"message": format!("refused for key {KEY}"), "type": "test"}});
            let mut response = (status, Json(body)).into_response();
            if let Some(seconds) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", seconds.parse().expect("header"));
            }
            response
        }
        Some(Answer::WrongDimension) => {
            Json(json!({"data": [{"index": 0, "embedding": [0.5, 0.5]}]})).into_response()
        }
        Some(Answer::MissingIndex) => {
            data.pop();
            Json(json!({"object": "list", "data": data})).into_response()
        }
        None => {
            Json(json!({"object": "list", "data": data, "model": body["model"]})).into_response()
        }
    }
}

async fn start(script: Vec<Answer>) -> (Server, String) {
    let server = Server {
        seen: Arc::default(),
        script: Arc::new(Mutex::new(script.into())),
    };
    let app = axum::Router::new()
        .route("/v1/embeddings", post(embeddings))
        .with_state(server.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (server, format!("http://{address}/v1"))
}

fn config(base_url: &str) -> OpenAiConfig {
    let mut config = OpenAiConfig::new(base_url, "text-embedding-test", DIMENSION);
    config.api_key = Some(ApiKey::new(KEY));
    config.max_batch_inputs = 3;
    config.retry.max_attempts = 4;
    config.retry.initial_backoff = Duration::from_millis(5);
    config.retry.max_backoff = Duration::from_millis(20);
    config
}

fn texts(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| format!("text number {i} about topic {}", i * 7))
        .collect()
}

#[tokio::test]
async fn batches_within_limits_and_matches_results_by_index() {
    let (server, url) = start(Vec::new()).await;
    let provider = OpenAiProvider::new(config(&url)).expect("provider");
    let input = texts(7);
    let vectors = provider.embed(input.clone()).await.expect("embed");
    let hash = HashProvider::new(DIMENSION, 512).expect("hash");
    for (text, vector) in input.iter().zip(&vectors) {
        assert_eq!(vector, &hash.embed_one(text));
    }
    let seen = server.seen.lock().expect("lock").clone();
    let sizes: Vec<usize> = seen.iter().map(|s| s.inputs.len()).collect();
    assert_eq!(sizes, vec![3, 3, 1]);
    assert!(
        seen.iter()
            .all(|s| s.authorization.as_deref() == Some(&format!("Bearer {KEY}")))
    );
    assert!(seen.iter().all(|s| s.dimensions.is_none()));
}

#[tokio::test]
async fn sends_dimensions_where_configured() {
    let (server, url) = start(Vec::new()).await;
    let mut config = config(&url);
    config.send_dimensions = true;
    let provider = OpenAiProvider::new(config).expect("provider");
    provider.embed(texts(2)).await.expect("embed");
    assert_eq!(
        server.seen.lock().expect("lock")[0].dimensions,
        Some(DIMENSION as u64)
    );
}

#[tokio::test]
async fn retries_rate_limits_and_server_errors() {
    let script = vec![
        Answer::Status(503, None),
        Answer::Status(429, Some("0")),
        Answer::Status(500, None),
    ];
    let (server, url) = start(script).await;
    let provider = OpenAiProvider::new(config(&url)).expect("provider");
    let vectors = provider
        .embed(texts(2))
        .await
        .expect("succeeds after retries");
    assert_eq!(vectors.len(), 2);
    assert_eq!(server.seen.lock().expect("lock").len(), 4);
}

#[tokio::test]
async fn gives_up_as_transient_when_retries_are_spent() {
    let (server, url) = start(vec![Answer::Status(502, None); 10]).await;
    let provider = OpenAiProvider::new(config(&url)).expect("provider");
    let error = provider.embed(texts(1)).await.expect_err("unavailable");
    assert!(matches!(error, EmbedError::Unavailable(_)), "{error}");
    assert!(error.is_transient());
    assert!(!error.to_string().contains(KEY), "{error}");
    assert_eq!(server.seen.lock().expect("lock").len(), 4);
}

#[tokio::test]
async fn client_errors_are_permanent_and_not_retried() {
    for status in [400, 404, 422] {
        let (server, url) = start(vec![Answer::Status(status, None)]).await;
        let provider = OpenAiProvider::new(config(&url)).expect("provider");
        let error = provider.embed(texts(1)).await.expect_err("rejected");
        assert!(
            matches!(error, EmbedError::Rejected { status: s, .. } if s == status),
            "{error}"
        );
        assert!(!error.is_transient());
        let message = error.to_string();
        assert!(!message.contains(KEY), "{message}");
        assert!(message.contains("[redacted]"), "{message}");
        assert_eq!(server.seen.lock().expect("lock").len(), 1);
    }
}

#[tokio::test]
async fn refused_credentials_are_an_outage_and_not_retried_at_once() {
    for status in [401, 403] {
        let (server, url) = start(vec![Answer::Status(status, None)]).await;
        let provider = OpenAiProvider::new(config(&url)).expect("provider");
        let error = provider.embed(texts(1)).await.expect_err("refused");
        assert!(
            matches!(error, EmbedError::Credentials { status: s, .. } if s == status),
            "{error}"
        );
        // Waited out by the stage (with backoff), not dead-lettered.
        assert!(error.is_transient());
        assert!(!error.to_string().contains(KEY), "{error}");
        assert_eq!(server.seen.lock().expect("lock").len(), 1);
    }
}

#[tokio::test]
async fn unusable_answers_are_permanent() {
    for answer in [Answer::WrongDimension, Answer::MissingIndex] {
        let (_, url) = start(vec![answer]).await;
        let provider = OpenAiProvider::new(config(&url)).expect("provider");
        let error = provider.embed(texts(3)).await.expect_err("protocol");
        assert!(matches!(error, EmbedError::Protocol(_)), "{error}");
        assert!(!error.is_transient());
    }
}

#[tokio::test]
async fn unreachable_server_is_transient() {
    // Bind then drop: nothing listens on the port any more.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    drop(listener);
    let mut config = config(&format!("http://{address}/v1"));
    config.retry.max_attempts = 2;
    let provider = OpenAiProvider::new(config).expect("provider");
    let error = provider.embed(texts(1)).await.expect_err("unreachable");
    assert!(error.is_transient(), "{error}");
}

#[test]
fn api_key_stays_out_of_debug_output() {
    let provider = OpenAiProvider::new(config("http://127.0.0.1:1/v1")).expect("provider");
    let debug = format!("{provider:?}");
    assert!(!debug.contains(KEY));
    assert!(debug.contains("redacted"));
}
