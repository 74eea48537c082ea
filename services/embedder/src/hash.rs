//! `hash`: deterministic feature-hashing vectors. For tests and pipeline benchmarks only: texts
//! that share words get similar vectors, but there is no semantics in them. Each lowercased word
//! adds ±1 at a position chosen by its FNV-1a hash; the vector is L2-normalised.

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
            model: format!("hash-{dimension}"),
            dimension,
            counter: EstimatedTokenCounter::new(max_tokens),
        })
    }

    pub fn embed_one(&self, text: &str) -> Vec<f32> {
        let mut vector = vec![0f32; self.dimension];
        for word in text
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
        {
            let hash = fnv1a(word.to_lowercase().as_bytes());
            // The dimension fits in u64 and the remainder is below it, so it fits back in usize.
            let position = (hash % self.dimension as u64) as usize;
            vector[position] += if hash >> 63 == 0 { 1.0 } else { -1.0 };
        }
        let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm > 0.0 {
            vector.iter_mut().for_each(|x| *x /= norm);
        }
        vector
    }
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
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

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn vectors_are_deterministic_normalised_and_word_based() {
        let provider = HashProvider::new(64, 256).expect("provider");
        let a = provider.embed_one("Deploy the API service");
        assert_eq!(a, provider.embed_one("deploy, the api SERVICE!"));
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-5);
        let unrelated = provider.embed_one("quarterly budget spreadsheet");
        let related = provider.embed_one("deploy the API gateway");
        assert!(cosine(&a, &related) > cosine(&a, &unrelated));
        assert!(provider.embed_one("  ,;  ").iter().all(|x| *x == 0.0));
        assert!(HashProvider::new(0, 256).is_err());
    }
}
