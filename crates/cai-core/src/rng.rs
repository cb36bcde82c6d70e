//! Seeded randomness that does not depend on batch order: per-item seeds derived from the
//! run seed and a key (prompt id, round, ...) by a hash that is stable across runs,
//! platforms and Rust releases.
//!
//! std's `DefaultHasher` is not used: its output may change between Rust releases.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The splitmix64 increment (2^64 / golden ratio).
const GAMMA: u64 = 0x9e37_79b9_7f4a_7c15;
const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The splitmix64 output function: a bijection on `u64` with full avalanche.
fn mix64(z: u64) -> u64 {
    let z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// FNV-1a (64-bit) of a byte string.
fn fnv1a64(bytes: &[u8]) -> u64 {
    bytes.iter().fold(FNV_OFFSET_BASIS, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(FNV_PRIME)
    })
}

/// A seed for one item, derived from the run seed and integer key parts (prompt index, round,
/// sample number, ...). Order matters: `[1, 2]` and `[2, 1]` give different seeds.
pub fn derive_seed_u64(seed: u64, parts: &[u64]) -> u64 {
    parts
        .iter()
        .fold(mix64(seed.wrapping_add(GAMMA)), |h, &part| {
            mix64(h.wrapping_add(GAMMA) ^ mix64(part.wrapping_add(GAMMA)))
        })
}

/// A seed for one item, derived from the run seed and string key parts (stage name, prompt
/// id, ...): each part is hashed with FNV-1a, then mixed as in [`derive_seed_u64`].
///
/// ```
/// use cai_core::rng::derive_seed;
///
/// let round = 2.to_string();
/// let a = derive_seed(1234, &["critique", "prompt-17", &round]);
/// assert_eq!(a, derive_seed(1234, &["critique", "prompt-17", &round]));
/// assert_ne!(a, derive_seed(1234, &["critique", "prompt-18", &round]));
/// ```
pub fn derive_seed(seed: u64, parts: &[&str]) -> u64 {
    let hashed: Vec<u64> = parts.iter().map(|part| fnv1a64(part.as_bytes())).collect();
    derive_seed_u64(seed, &hashed)
}

/// A ChaCha8 generator seeded from `seed`; its stream is the same on every platform.
pub fn rng_from_seed(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, RngCore};

    #[test]
    fn mix64_matches_reference_splitmix64() {
        // Reference splitmix64 seeded with 0: the first output is mix(0 + GAMMA).
        assert_eq!(mix64(GAMMA), 0xe220_a839_7b1d_cdaf);
        assert_eq!(mix64(0), 0);
    }

    #[test]
    fn fnv1a64_matches_reference_vectors() {
        assert_eq!(fnv1a64(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a64(b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn derived_seeds_are_pinned() {
        // Computed once, and checked against an independent Python implementation; a change
        // here changes every sampled principle and response of a seeded run.
        assert_eq!(derive_seed_u64(0, &[]), 0xe220_a839_7b1d_cdaf);
        assert_eq!(derive_seed_u64(42, &[7, 1]), 0x96ba_64a1_0792_03d7);
        assert_eq!(
            derive_seed(42, &["critique", "prompt-7"]),
            0xecd0_e10f_f6b7_2c05
        );
    }

    #[test]
    fn different_keys_give_different_seeds() {
        let base = derive_seed_u64(1, &[3, 4]);
        assert_ne!(base, derive_seed_u64(1, &[4, 3]));
        assert_ne!(base, derive_seed_u64(2, &[3, 4]));
        assert_ne!(base, derive_seed_u64(1, &[3, 4, 0]));
        assert_ne!(derive_seed(1, &["ab", "c"]), derive_seed(1, &["a", "bc"]));
        assert_ne!(derive_seed(1, &["a"]), derive_seed(1, &["a", ""]));
    }

    #[test]
    fn rng_stream_is_pinned() {
        // ChaCha8 seeded through rand_core's portable `seed_from_u64`; computed once.
        assert_eq!(rng_from_seed(42).next_u64(), 0xae90_bfb5_395d_5ba1);
        let draws = |seed| -> Vec<u32> {
            let mut rng = rng_from_seed(seed);
            (0..8).map(|_| rng.random_range(0..1000)).collect()
        };
        assert_eq!(draws(7), draws(7));
        assert_ne!(draws(7), draws(8));
    }
}
