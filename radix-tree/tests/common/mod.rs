//! Helpers shared by the SGLang behaviour tests (`semantics.rs` and `eviction.rs`).

use radix_tree::{RadixCache, RadixKey};

/// A key of `tokens` in the shared namespace.
pub fn key(tokens: &[u32]) -> RadixKey {
    RadixKey::from_tokens(tokens.to_vec())
}

/// Asserts every structural invariant of the cache; each test ends with it.
#[allow(clippy::unwrap_used)]
pub fn ok<V: Copy>(c: &RadixCache<V>) {
    c.check_integrity().unwrap();
}
