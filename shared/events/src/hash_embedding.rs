//! The `hash-<dimension>` model: deterministic feature-hashing vectors, for tests, demos and
//! benchmarks without a model. The embedder stores chunk vectors of this model and the api embeds
//! queries with it, so both must compute exactly the same function: this one.
//!
//! Each lowercased word adds ±1 at a position chosen by its FNV-1a hash; the vector is
//! L2-normalised. Texts that share words are close in cosine distance; there are no semantics.

/// The model name vectors of `dimension` values are stored under.
pub fn hash_model_name(dimension: usize) -> String {
    format!("hash-{dimension}")
}

/// The vector of `text` (`dimension` must be positive). A text without words gets a valid unit
/// vector along the first axis, since a zero vector has no cosine distance.
pub fn hash_embedding(text: &str, dimension: usize) -> Vec<f32> {
    let dimension = dimension.max(1);
    let mut vector = vec![0f32; dimension];
    for word in text
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
    {
        let hash = fnv1a(word.to_lowercase().as_bytes());
        // The dimension fits in u64 and the remainder is below it, so it fits back in usize.
        let position = (hash % dimension as u64) as usize;
        vector[position] += if hash >> 63 == 0 { 1.0 } else { -1.0 };
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        vector.iter_mut().for_each(|x| *x /= norm);
    } else {
        vector[0] = 1.0;
    }
    vector
}

fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cosine(a: &[f32], b: &[f32]) -> f32 {
        a.iter().zip(b).map(|(x, y)| x * y).sum()
    }

    #[test]
    fn vectors_are_deterministic_normalised_and_word_based() {
        let a = hash_embedding("Deploy the API service", 64);
        assert_eq!(a, hash_embedding("deploy, the api SERVICE!", 64));
        assert!((cosine(&a, &a) - 1.0).abs() < 1e-5);
        let unrelated = hash_embedding("quarterly budget spreadsheet", 64);
        let related = hash_embedding("deploy the API gateway", 64);
        assert!(cosine(&a, &related) > cosine(&a, &unrelated));
        let empty = hash_embedding("  ,;  ", 64);
        assert_eq!(empty.len(), 64);
        assert!((cosine(&empty, &empty) - 1.0).abs() < 1e-5);
        assert_eq!(hash_model_name(384), "hash-384");
    }
}
