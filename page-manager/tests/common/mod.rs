//! What the randomised lifecycle tests share: the identity of the K/V a slot holds, and a
//! running request of the simulations.

#![allow(dead_code)]

use page_manager::RowId;

/// Identity of the KV a slot holds: a hash of (namespace, tokens up to and including it).
pub type Content = u64;

/// The identity of the K/V at each position of `tokens` in namespace `ns`.
pub fn prefix_hashes(ns: u8, tokens: &[u32]) -> Vec<Content> {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ ns as u64;
    tokens
        .iter()
        .map(|&t| {
            h = (h ^ (t as u64 + 1)).wrapping_mul(0x0100_0000_01b3);
            h
        })
        .collect()
}

/// A request of the simulations that holds a row.
pub struct Active {
    pub row: RowId,
    pub ns: u8,
    /// Prompt then outputs; KV exists for `tokens[..kv_len]`.
    pub tokens: Vec<u32>,
    pub prompt_len: usize,
    pub max_new: usize,
}
