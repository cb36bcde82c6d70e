//! Counting sequences `1 2 3 … N`: the material of the seed's context-distillation
//! experiment (a model that has seen sequences of every length up to [`DEFAULT_MAX_COUNT`]
//! continues `1 … 63` with `64`).

use rand::Rng;

/// The longest sequence of the default corpus.
pub const DEFAULT_MAX_COUNT: usize = 128;

/// `"1 2 3 … n"`.
pub fn counting_sequence(n: usize) -> String {
    (1..=n).map(|i| i.to_string()).collect::<Vec<_>>().join(" ")
}

/// A counting document: one to three sequences, one per line, each of a length drawn
/// uniformly from 1..=`max`; returns the text and the lengths.
pub fn counting_document(max: usize, rng: &mut impl Rng) -> (String, Vec<usize>) {
    let lines = rng.random_range(1..=3);
    let lengths: Vec<usize> = (0..lines)
        .map(|_| rng.random_range(1..=max.max(1)))
        .collect();
    let text = lengths
        .iter()
        .map(|&n| counting_sequence(n))
        .collect::<Vec<_>>()
        .join("\n");
    (text, lengths)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cai_core::rng::rng_from_seed;

    #[test]
    fn sequences_count_from_one() {
        assert_eq!(counting_sequence(1), "1");
        assert_eq!(counting_sequence(5), "1 2 3 4 5");
        assert!(counting_sequence(100).ends_with("99 100"));
    }

    #[test]
    fn documents_cover_long_sequences() {
        let mut rng = rng_from_seed(0);
        let longest = (0..400)
            .flat_map(|_| counting_document(DEFAULT_MAX_COUNT, &mut rng).1)
            .max()
            .unwrap();
        assert!(longest >= 100, "{longest}");
        let (text, lengths) = counting_document(10, &mut rng);
        assert_eq!(text.lines().count(), lengths.len());
    }
}
