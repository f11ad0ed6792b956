//! Eviction strategies: which unlocked leaf goes first.

use std::str::FromStr;

/// Per-node statistics an eviction strategy may rank by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct NodeStats {
    /// Logical time of the last match or insert that touched the node.
    pub last_access: u64,
    /// Logical time the node's tokens were first inserted.
    pub creation: u64,
    /// How many matches reached the node.
    pub hit_count: u64,
    /// Request priority (the maximum over the inserts that touched it).
    pub priority: i64,
}

/// An eviction rank: the leaf with the smallest key is evicted first.
pub type EvictionKey = (i64, i64);

/// Ranks unlocked leaves for eviction. Keys are recomputed whenever a node's statistics change,
/// so a strategy must be a pure function of [`NodeStats`].
pub trait EvictionStrategy: std::fmt::Debug + Send + Sync {
    /// The rank of a node: smallest goes first.
    fn key(&self, stats: &NodeStats) -> EvictionKey;
}

/// The built-in strategies, named as SGLang's `--radix-eviction-policy` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum EvictionPolicy {
    /// Least recently used first (SGLang's default).
    #[default]
    Lru,
    /// Least frequently used first, least recently used among equals.
    Lfu,
    /// Oldest inserted first.
    Fifo,
    /// Most recently used first.
    Mru,
    /// Newest inserted first.
    Filo,
    /// Lowest request priority first, least recently used among equals.
    Priority,
}

/// A counter as a rank component. Saturating is deliberate, not a fallback: [`NodeStats`] is
/// public, so a custom caller may pass any value, and the logical clock that fills it ticks once
/// per operation, so it never gets near `i64::MAX` in a real tree.
fn signed(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

impl EvictionStrategy for EvictionPolicy {
    fn key(&self, s: &NodeStats) -> EvictionKey {
        match self {
            EvictionPolicy::Lru => (signed(s.last_access), 0),
            EvictionPolicy::Lfu => (signed(s.hit_count), signed(s.last_access)),
            EvictionPolicy::Fifo => (signed(s.creation), 0),
            EvictionPolicy::Mru => (-signed(s.last_access), 0),
            EvictionPolicy::Filo => (-signed(s.creation), 0),
            EvictionPolicy::Priority => (s.priority, signed(s.last_access)),
        }
    }
}

impl EvictionPolicy {
    /// Every built-in policy.
    pub const ALL: [EvictionPolicy; 6] = [
        EvictionPolicy::Lru,
        EvictionPolicy::Lfu,
        EvictionPolicy::Fifo,
        EvictionPolicy::Mru,
        EvictionPolicy::Filo,
        EvictionPolicy::Priority,
    ];

    /// The policy's command-line name.
    pub fn name(self) -> &'static str {
        match self {
            EvictionPolicy::Lru => "lru",
            EvictionPolicy::Lfu => "lfu",
            EvictionPolicy::Fifo => "fifo",
            EvictionPolicy::Mru => "mru",
            EvictionPolicy::Filo => "filo",
            EvictionPolicy::Priority => "priority",
        }
    }
}

/// An eviction policy name that is not one of [`EvictionPolicy::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown eviction policy {0:?} (expected lru, lfu, fifo, mru, filo or priority)")]
pub struct UnknownPolicy(pub String);

impl FromStr for EvictionPolicy {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EvictionPolicy::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownPolicy(s.to_string()))
    }
}
