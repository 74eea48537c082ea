//! `openai`: any OpenAI-compatible `POST {base_url}/embeddings` server (OpenAI, Azure OpenAI,
//! Ollama, vLLM, TEI).
//!
//! Texts go in batches within the server's limits (inputs and estimated tokens per request);
//! results are matched to inputs by their `index`, never by position. 429, 408 and 5xx answers,
//! timeouts and connection failures are retried by the shared [`RetryPolicy`] (the server's
//! `Retry-After`, else capped exponential backoff) and reported as transient once the retries are spent; any other 4xx is
//! permanent at once. The API key is sent as a bearer token and appears in no `Debug` output and
//! no error (a server that echoes it back has it replaced).

use std::time::Duration;

use async_trait::async_trait;
use pagestream_retry::RetryPolicy;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use crate::{EmbedError, EmbeddingProvider, EstimatedTokenCounter, TokenCounter};

/// An API key: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }

    fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiKey([redacted])")
    }
}

#[derive(Debug, Clone)]
pub struct OpenAiConfig {
    /// Up to and including the API version, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    pub model: String,
    pub api_key: Option<ApiKey>,
    /// The length of the vectors the model returns.
    pub dimension: usize,
    /// Send `dimensions` (for models that can shorten their vectors, e.g. text-embedding-3-*).
    pub send_dimensions: bool,
    /// Chunk size limit, in estimated tokens.
    pub max_input_tokens: usize,
    pub max_batch_inputs: usize,
    /// Estimated tokens per request.
    pub max_batch_tokens: usize,
    /// Retries of one request after a transient failure.
    pub retry: RetryPolicy,
    pub request_timeout: Duration,
}

impl OpenAiConfig {
    /// Defaults within the limits of OpenAI and of the common self-hosted servers.
    pub fn new(base_url: impl Into<String>, model: impl Into<String>, dimension: usize) -> Self {
        Self {
            base_url: base_url.into(),
            model: model.into(),
            api_key: None,
            dimension,
            send_dimensions: false,
            max_input_tokens: 512,
            max_batch_inputs: 64,
            max_batch_tokens: 32_768,
            retry: RetryPolicy {
                max_attempts: 6,
                initial_backoff: Duration::from_millis(500),
                ..RetryPolicy::default()
            },
            request_timeout: Duration::from_secs(60),
        }
    }
}

#[derive(Debug)]
pub struct OpenAiProvider {
    config: OpenAiConfig,
    url: String,
    client: reqwest::Client,
    counter: EstimatedTokenCounter,
}

#[derive(Serialize)]
struct EmbeddingsRequest<'a> {
    model: &'a str,
    input: &'a [String],
    encoding_format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    dimensions: Option<usize>,
}

#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<EmbeddingItem>,
}

#[derive(Deserialize)]
struct EmbeddingItem {
    index: usize,
    embedding: Vec<f32>,
}

#[derive(Deserialize)]
struct ErrorResponse {
    error: ErrorBody,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ErrorBody {
    Object { message: String },
    Text(String),
}

/// What one attempt came to.
/// One request's answer: the vectors, a failure no retry changes, or a transient failure.
type Attempt = pagestream_retry::Attempt<Result<Vec<Vec<f32>>, EmbedError>, EmbedError>;

impl OpenAiProvider {
    pub fn new(config: OpenAiConfig) -> Result<Self, EmbedError> {
        if config.dimension == 0 || config.max_batch_inputs == 0 || config.max_input_tokens == 0 {
            return Err(EmbedError::Config(
                "dimension, max_batch_inputs and max_input_tokens must be positive".into(),
            ));
        }
        let client = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .build()
            .map_err(|e| EmbedError::Config(format!("http client: {e}")))?;
        Ok(Self {
            url: format!("{}/embeddings", config.base_url.trim_end_matches('/')),
            counter: EstimatedTokenCounter::new(config.max_input_tokens),
            client,
            config,
        })
    }

    /// Consecutive ranges of `texts`, each within the batch limits.
    fn batches(&self, texts: &[String]) -> Vec<std::ops::Range<usize>> {
        let mut batches = Vec::new();
        let mut start = 0;
        let mut tokens = 0;
        for (i, text) in texts.iter().enumerate() {
            let text_tokens = self.counter.count_tokens(text);
            let full = i - start == self.config.max_batch_inputs
                || (i > start && tokens + text_tokens > self.config.max_batch_tokens);
            if full {
                batches.push(start..i);
                start = i;
                tokens = 0;
            }
            tokens += text_tokens;
        }
        if start < texts.len() {
            batches.push(start..texts.len());
        }
        batches
    }

    async fn embed_batch(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbedError> {
        self.config
            .retry
            .run(
                |_| self.attempt(texts),
                |attempt, error, wait| {
                    tracing::warn!(
                        model = %self.config.model,
                        attempt,
                        wait_ms = wait.as_millis() as u64,
                        %error,
                        "embedding request failed; retrying"
                    );
                },
            )
            .await
            .unwrap_or_else(|spent| Err(spent.error))
    }

    async fn attempt(&self, texts: &[String]) -> Attempt {
        let request = EmbeddingsRequest {
            model: &self.config.model,
            input: texts,
            encoding_format: "float",
            dimensions: self.config.send_dimensions.then_some(self.config.dimension),
        };
        let mut builder = self.client.post(&self.url).json(&request);
        if let Some(key) = &self.config.api_key {
            builder = builder.bearer_auth(key.expose());
        }
        let response = match builder.send().await {
            Ok(response) => response,
            Err(error) => {
                return Attempt::Retry {
                    error: EmbedError::Unavailable(self.scrub(&error.without_url().to_string())),
                    server_wait: None,
                };
            }
        };
        let status = response.status();
        let server_wait = pagestream_retry::server_wait(response.headers());
        let body = match response.bytes().await {
            Ok(body) => body,
            Err(error) => {
                return Attempt::Retry {
                    error: EmbedError::Unavailable(self.scrub(&error.without_url().to_string())),
                    server_wait: None,
                };
            }
        };
        if status.is_success() {
            return Attempt::Done(self.parse(&body, texts.len()));
        }
        let message = self.error_message(&body);
        let transient = status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::REQUEST_TIMEOUT
            || status.is_server_error();
        if transient {
            Attempt::Retry {
                error: EmbedError::Unavailable(format!("status {}: {message}", status.as_u16())),
                server_wait,
            }
        } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            // Retrying now gives the same answer; the stage waits until an operator fixes the key.
            Attempt::Done(Err(EmbedError::Credentials {
                status: status.as_u16(),
                message,
            }))
        } else {
            Attempt::Done(Err(EmbedError::Rejected {
                status: status.as_u16(),
                message,
            }))
        }
    }

    fn parse(&self, body: &[u8], expected: usize) -> Result<Vec<Vec<f32>>, EmbedError> {
        let response: EmbeddingsResponse = serde_json::from_slice(body)
            .map_err(|e| EmbedError::Protocol(format!("response body: {e}")))?;
        let mut vectors: Vec<Option<Vec<f32>>> = vec![None; expected];
        for item in response.data {
            let dimension = item.embedding.len();
            if dimension != self.config.dimension {
                return Err(EmbedError::Protocol(format!(
                    "vector of dimension {dimension}, expected {}",
                    self.config.dimension
                )));
            }
            let slot = vectors.get_mut(item.index).ok_or_else(|| {
                EmbedError::Protocol(format!("index {} for {expected} inputs", item.index))
            })?;
            if slot.replace(item.embedding).is_some() {
                return Err(EmbedError::Protocol(format!(
                    "index {} answered twice",
                    item.index
                )));
            }
        }
        vectors
            .into_iter()
            .enumerate()
            .map(|(index, vector)| {
                vector.ok_or_else(|| EmbedError::Protocol(format!("no vector for index {index}")))
            })
            .collect()
    }

    /// The server's own error message, short, without the key should the server echo it.
    fn error_message(&self, body: &[u8]) -> String {
        let message = match serde_json::from_slice::<ErrorResponse>(body) {
            Ok(ErrorResponse {
                error: ErrorBody::Object { message } | ErrorBody::Text(message),
            }) => message,
            Err(_) => String::from_utf8_lossy(body).into_owned(),
        };
        let message: String = message.chars().take(300).collect();
        self.scrub(&message)
    }

    fn scrub(&self, text: &str) -> String {
        match &self.config.api_key {
            Some(key) if !key.expose().is_empty() => text.replace(key.expose(), "[redacted]"),
            _ => text.to_owned(),
        }
    }
}

#[async_trait]
impl EmbeddingProvider for OpenAiProvider {
    fn model(&self) -> &str {
        &self.config.model
    }

    fn dimension(&self) -> usize {
        self.config.dimension
    }

    fn token_counter(&self) -> &dyn TokenCounter {
        &self.counter
    }

    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut vectors = Vec::with_capacity(texts.len());
        for batch in self.batches(&texts) {
            vectors.extend(self.embed_batch(&texts[batch]).await?);
        }
        Ok(vectors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_respect_input_and_token_limits() {
        let mut config = OpenAiConfig::new("http://localhost/v1", "m", 8);
        config.max_batch_inputs = 3;
        config.max_batch_tokens = 19;
        let provider = OpenAiProvider::new(config).expect("provider");
        // Each "word" text is 2 + 1 = 3 estimated tokens; the long one 2 + 15.
        let mut texts: Vec<String> = (0..7).map(|i| format!("w{i}")).collect();
        texts.insert(4, "aaaa ".repeat(15));
        let batches = provider.batches(&texts);
        assert_eq!(batches, vec![0..3, 3..4, 4..5, 5..8]);
        assert_eq!(provider.batches(&[]), Vec::<std::ops::Range<usize>>::new());
    }

    #[test]
    fn api_key_is_redacted() {
        let mut config = OpenAiConfig::new("http://localhost/v1", "m", 8);
        config.api_key = Some(ApiKey::new("sk-secret-123"));
        let provider = OpenAiProvider::new(config).expect("provider");
        assert!(!format!("{provider:?}").contains("sk-secret-123"));
        let message = provider.error_message(br#"{"error":{"message":"bad key sk-secret-123"}}"#);
        assert_eq!(message, "bad key [redacted]");
    }
}
