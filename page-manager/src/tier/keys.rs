//! Block keys: a chained digest per block of tokens, as SGLang's storage tier and vLLM's
//! prefix caching key pages. Block `i`'s key covers the namespace and every token up to the
//! block's end, so equal keys mean equal prefixes; keys are all a disk index needs.

use crate::Slot;
use radix_tree::{Namespace, Token};
use sha2::{Digest, Sha256};

/// The key of one block of a prefix (the first 16 bytes of a SHA-256 chain).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlockKey(pub [u8; 16]);

impl BlockKey {
    /// Lower-case hex, the block's file name.
    pub fn hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// Parses [`BlockKey::hex`].
    pub fn from_hex(s: &str) -> Option<Self> {
        if s.len() != 32 || !s.is_ascii() {
            return None;
        }
        let mut out = [0u8; 16];
        for (i, b) in out.iter_mut().enumerate() {
            *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(BlockKey(out))
    }
}

/// A digest of a namespace. Each part is tagged and length-prefixed so that no two
/// namespaces encode alike; only the digest reaches the disk, never a salt or a tenant.
pub fn namespace_digest(ns: &Namespace) -> [u8; 32] {
    let mut h = Sha256::new();
    for (tag, part) in [(1u8, ns.tenant()), (2, ns.salt()), (3, ns.adapter())] {
        h.update([tag]);
        match part {
            None => h.update([0u8]),
            Some(s) => {
                h.update([1u8]);
                h.update((s.len() as u64).to_le_bytes());
                h.update(s.as_bytes());
            }
        }
    }
    h.finalize().into()
}

/// The keys of the whole blocks of `tokens` (a trailing partial block has none). `seed` ties
/// the keys to one model and cache layout, `ns` to one namespace.
pub fn block_keys(
    seed: &[u8; 32],
    ns: &Namespace,
    tokens: &[Token],
    block: usize,
) -> Vec<BlockKey> {
    let mut prev: Vec<u8> = Vec::with_capacity(64);
    prev.extend_from_slice(seed);
    prev.extend_from_slice(&namespace_digest(ns));
    tokens
        .chunks_exact(block.max(1))
        .map(|chunk| {
            let mut h = Sha256::new();
            h.update(&prev);
            for t in chunk {
                h.update(t.to_le_bytes());
            }
            let digest: [u8; 32] = h.finalize().into();
            let mut key = [0u8; 16];
            key.copy_from_slice(&digest[..16]);
            prev.clear();
            prev.extend_from_slice(&key);
            BlockKey(key)
        })
        .collect()
}

/// One block to copy out of the pool before its slots are written again: its key, its tokens
/// (kept in the file, checked on load) and the slots that hold its K/V now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CopyOut {
    pub key: BlockKey,
    pub tokens: Vec<Token>,
    pub slots: Vec<Slot>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_chain_the_whole_prefix_and_the_namespace() {
        let seed = [7u8; 32];
        let ns = Namespace::shared();
        let a = block_keys(&seed, &ns, &[1, 2, 3, 4, 5, 6, 7], 2);
        assert_eq!(a.len(), 3, "the partial block has no key");
        let b = block_keys(&seed, &ns, &[9, 2, 3, 4], 2);
        assert_ne!(a[1], b[1], "a block's key depends on every earlier token");
        assert_eq!(a[..2], block_keys(&seed, &ns, &[1, 2, 3, 4], 2)[..]);
        let salted = block_keys(&seed, &Namespace::salted("t"), &[1, 2], 2);
        assert_ne!(a[0], salted[0]);
        let other_model = block_keys(&[8u8; 32], &ns, &[1, 2], 2);
        assert_ne!(a[0], other_model[0]);
        assert_eq!(BlockKey::from_hex(&a[0].hex()), Some(a[0]));
        assert_eq!(BlockKey::from_hex("zz"), None);
    }

    #[test]
    fn namespace_parts_cannot_be_confused() {
        let a = Namespace::salted("a1");
        let b = Namespace::salted("a").with_adapter("1");
        let c = Namespace::shared().with_tenant("a1");
        assert_ne!(namespace_digest(&a), namespace_digest(&b));
        assert_ne!(namespace_digest(&a), namespace_digest(&c));
    }
}
