//! `hash`: deterministic feature-hashing vectors ([`pagestream_events::hash_embedding`], the same
//! function the api embeds queries with). For tests and pipeline benchmarks only: texts that share
//! words get similar vectors, but there is no semantics in them.

use async_trait::async_trait;

use crate::{EmbedError, EmbeddingProvider, EstimatedTokenCounter, TokenCounter};

#[derive(Debug, Clone)]
pub struct HashProvider {
    model: String,
    dimension: usize,
    counter: EstimatedTokenCounter,
}

impl HashProvider {
    /// Vectors of `dimension` values; chunks sized for at most `max_tokens` estimated tokens.
    pub fn new(dimension: usize, max_tokens: usize) -> Result<Self, EmbedError> {
        if dimension == 0 {
            return Err(EmbedError::Config("hash dimension must be positive".into()));
        }
        Ok(Self {
            model: pagestream_events::hash_model_name(dimension),
            dimension,
            counter: EstimatedTokenCounter::new(max_tokens),
        })
    }

    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        pagestream_events::hash_embedding(text, self.dimension)
    }
}

#[async_trait]
impl EmbeddingProvider for HashProvider {
    fn model(&self) -> &str {
        &self.model
    }

    fn dimension(&self) -> usize {
        self.dimension
    }

    fn token_counter(&self) -> &dyn TokenCounter {
        &self.counter
    }

    /// Cheap enough (microseconds per chunk) to run on the calling task.
    async fn embed(&self, texts: Vec<String>) -> Result<Vec<Vec<f32>>, EmbedError> {
        Ok(texts.iter().map(|text| self.embed_one(text)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_names_its_model_by_dimension_and_refuses_zero() {
        let provider = HashProvider::new(64, 256).expect("provider");
        assert_eq!(provider.model(), "hash-64");
        assert_eq!(provider.embed_one("deploy the api").len(), 64);
        assert!(HashProvider::new(0, 256).is_err());
    }
}
