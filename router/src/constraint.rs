//! Constrained decoding at the scheduler's seam (SGLang's `grammar` on a request): a
//! [`TokenConstraint`] says which tokens may come next, and is told each token that was chosen.
//!
//! The scheduler asks for the allowed set when it builds a sampling step and hands it to the
//! model runner as [`TokenMask`] in the request's sampling parameters; after the step it commits
//! the sampled token. What the constraint is (a JSON schema, a regex, a grammar) is not the
//! scheduler's business: the engine compiles it, the scheduler only drives it.

use std::fmt;
use std::sync::Arc;

use radix_tree::Token;

/// A set of token ids, one bit each. Ids past its length are not in the set.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenMask {
    words: Vec<u32>,
    len: usize,
}

impl fmt::Debug for TokenMask {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenMask")
            .field("len", &self.len)
            .field("allowed", &self.count())
            .finish()
    }
}

impl TokenMask {
    /// A set over `len` ids with none of them in it.
    pub fn empty(len: usize) -> Self {
        TokenMask {
            words: vec![0; len.div_ceil(32)],
            len,
        }
    }

    /// A set over `len` ids from its 32-bit words (bit `i % 32` of word `i / 32` is id `i`);
    /// bits at or past `len` are cleared.
    pub fn from_words(mut words: Vec<u32>, len: usize) -> Self {
        words.resize(len.div_ceil(32), 0);
        if !len.is_multiple_of(32) {
            if let Some(last) = words.last_mut() {
                *last &= (1u32 << (len % 32)) - 1;
            }
        }
        TokenMask { words, len }
    }

    /// The number of ids the set ranges over.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when it ranges over no ids.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Puts `token` in the set (ignored past the range).
    pub fn allow(&mut self, token: Token) {
        let i = token as usize;
        if i < self.len {
            self.words[i / 32] |= 1 << (i % 32);
        }
    }

    /// True when `token` is in the set.
    pub fn is_allowed(&self, token: Token) -> bool {
        let i = token as usize;
        i < self.len && self.words[i / 32] & (1 << (i % 32)) != 0
    }

    /// How many ids are in the set.
    pub fn count(&self) -> usize {
        self.words.iter().map(|w| w.count_ones() as usize).sum()
    }

    /// The ids in the set, ascending.
    pub fn iter(&self) -> impl Iterator<Item = Token> + '_ {
        self.words.iter().enumerate().flat_map(|(wi, &w)| {
            (0..32u32)
                .filter(move |b| w & (1 << b) != 0)
                .map(move |b| wi as u32 * 32 + b)
        })
    }
}

/// What committing a token did to a constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConstraintState {
    /// More tokens may follow.
    Open,
    /// The constrained text is complete and nothing may follow: the request stops.
    Done,
}

/// A constraint that went wrong: the request ends with an abort carrying the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("constrained decoding failed: {0}")]
pub struct ConstraintError(pub String);

/// The per-request state of constrained decoding. Object-safe so that any engine (a grammar
/// library, a fake in tests) can drive the scheduler.
pub trait TokenConstraint: Send + fmt::Debug {
    /// The tokens allowed next. Called once per sampling step, before the forward.
    fn allowed(&mut self) -> Result<TokenMask, ConstraintError>;

    /// Advances past the chosen token (one the last mask allowed, or an end-of-sequence token).
    fn commit(&mut self, token: Token) -> Result<ConstraintState, ConstraintError>;

    /// An independent copy in the same state (requests are `Clone`).
    fn boxed_clone(&self) -> Box<dyn TokenConstraint>;
}

impl Clone for Box<dyn TokenConstraint> {
    fn clone(&self) -> Self {
        self.boxed_clone()
    }
}

/// The mask as it travels in sampling parameters: shared, not copied, per step.
pub type SharedMask = Arc<TokenMask>;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn a_mask_holds_exactly_the_ids_put_in_range(
            len in 0usize..200,
            ids in proptest::collection::vec(0u32..260, 0..40),
        ) {
            let mut m = TokenMask::empty(len);
            for &t in &ids {
                m.allow(t);
            }
            let mut expected: Vec<u32> = ids.iter().copied().filter(|&t| (t as usize) < len).collect();
            expected.sort_unstable();
            expected.dedup();
            prop_assert_eq!(m.iter().collect::<Vec<_>>(), expected.clone());
            prop_assert_eq!(m.count(), expected.len());
            for t in 0..260u32 {
                prop_assert_eq!(m.is_allowed(t), expected.contains(&t));
            }
            let again = TokenMask::from_words(m.words.clone(), len);
            prop_assert_eq!(again, m);
        }
    }

    #[test]
    fn from_words_clears_bits_past_the_range() {
        let m = TokenMask::from_words(vec![u32::MAX, u32::MAX], 40);
        assert_eq!(m.count(), 40);
        assert!(!m.is_allowed(40));
        let short = TokenMask::from_words(vec![], 10);
        assert_eq!(short.count(), 0);
    }
}
