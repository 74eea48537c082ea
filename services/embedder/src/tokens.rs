//! Token counting, so that chunks are sized by what the model really sees.

/// Counts the tokens a model sees for a text.
pub trait TokenCounter: Send + Sync {
    /// Tokens of `text` as the model sees them, special tokens (`[CLS]`, `[SEP]`) included.
    fn count_tokens(&self, text: &str) -> usize;

    /// The most tokens the model takes in one input, special tokens included.
    fn max_tokens(&self) -> usize;
}

/// An estimate for models whose tokenizer is not at hand (`hash`, `openai`): one token per four
/// characters of a word (at least one), one per punctuation character, plus two special tokens.
/// It errs on the high side for English BPE and WordPiece vocabularies, and it adds up across
/// whitespace like the real ones do, which is what the chunker relies on.
#[derive(Debug, Clone)]
pub struct EstimatedTokenCounter {
    max_tokens: usize,
}

impl EstimatedTokenCounter {
    pub const SPECIAL_TOKENS: usize = 2;

    pub fn new(max_tokens: usize) -> Self {
        Self { max_tokens }
    }
}

impl TokenCounter for EstimatedTokenCounter {
    fn count_tokens(&self, text: &str) -> usize {
        let mut tokens = Self::SPECIAL_TOKENS;
        let mut word_chars = 0usize;
        for c in text.chars() {
            if c.is_alphanumeric() {
                word_chars += 1;
                continue;
            }
            tokens += word_chars.div_ceil(4);
            word_chars = 0;
            if !c.is_whitespace() {
                tokens += 1;
            }
        }
        tokens + word_chars.div_ceil(4)
    }

    fn max_tokens(&self) -> usize {
        self.max_tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn estimate_counts_words_punctuation_and_specials() {
        let counter = EstimatedTokenCounter::new(256);
        assert_eq!(counter.count_tokens(""), 2);
        // "hello" = 2, "," = 1, "world" = 2, "!" = 1
        assert_eq!(counter.count_tokens("hello, world!"), 8);
        let a = "alpha beta";
        let b = "gamma, delta.";
        let joined = format!("{a}\n\n{b}");
        assert_eq!(
            counter.count_tokens(&joined) - 2,
            counter.count_tokens(a) - 2 + counter.count_tokens(b) - 2
        );
    }
}
