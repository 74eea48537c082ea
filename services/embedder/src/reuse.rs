//! Reuse of unchanged chunks: a chunk whose embedded text (content hash) and model are the same
//! as in the page's previous `chunks.ready` keeps its vector, wherever it moved in the page; only
//! the others are embedded.

use std::collections::HashMap;

use pagestream_events::{Chunk, ChunksReady};

use crate::{EmbedError, TextChunk};

/// A page version's chunks, some with vectors taken over from the previous version.
#[derive(Debug)]
pub struct ReusePlan {
    chunks: Vec<(TextChunk, Option<Vec<f32>>)>,
}

impl ReusePlan {
    /// `previous` is what the stream holds for the page (if anything); its vectors count only if
    /// they come from the same model with the same dimension.
    pub fn new(
        previous: Option<&ChunksReady>,
        model: &str,
        dimension: usize,
        chunks: Vec<TextChunk>,
    ) -> Self {
        let reusable: HashMap<&str, &Chunk> = previous
            .filter(|p| p.model == model && usize::try_from(p.dimension).ok() == Some(dimension))
            .map(|p| {
                p.chunks
                    .iter()
                    .filter(|c| c.vector.dimension() == dimension)
                    .map(|c| (c.content_hash.as_str(), c))
                    .collect()
            })
            .unwrap_or_default();
        let chunks = chunks
            .into_iter()
            .map(|chunk| {
                let vector = reusable
                    .get(chunk.content_hash.as_str())
                    .map(|old| old.vector.0.clone());
                (chunk, vector)
            })
            .collect();
        Self { chunks }
    }

    /// The texts to embed, in the order `complete` expects their vectors.
    pub fn texts_to_embed(&self) -> Vec<String> {
        self.chunks
            .iter()
            .filter(|(_, vector)| vector.is_none())
            .map(|(chunk, _)| chunk.text.clone())
            .collect()
    }

    /// How many chunks kept their vector.
    pub fn reused(&self) -> usize {
        self.chunks.iter().filter(|(_, v)| v.is_some()).count()
    }

    /// The chunks with vectors: reused ones, and `embedded` (one per text of `texts_to_embed`,
    /// in that order) for the rest.
    pub fn complete(self, embedded: Vec<Vec<f32>>) -> Result<Vec<Chunk>, EmbedError> {
        let expected = self.chunks.len() - self.reused();
        if embedded.len() != expected {
            return Err(EmbedError::VectorCount {
                expected,
                got: embedded.len(),
            });
        }
        let mut embedded = embedded.into_iter();
        Ok(self
            .chunks
            .into_iter()
            .map(|(chunk, vector)| {
                let vector = vector.or_else(|| embedded.next()).unwrap_or_default();
                chunk.with_vector(vector)
            })
            .collect())
    }
}
