//! Scheduling policies (SGLang's `--schedule-policy`).

use std::str::FromStr;

/// The order in which waiting requests are considered for a prefill batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum Policy {
    /// First come, first served (SGLang's default).
    #[default]
    Fcfs,
    /// Longest cached prefix first, with in-batch prefix deduplication and an aging bound.
    Lpm,
    /// Depth-first over the radix tree, heaviest subtrees first, so requests that share deep
    /// prefixes run together.
    DfsWeight,
    /// Longest output first (by `max_new_tokens`).
    Lof,
    /// Random order.
    Random,
}

impl Policy {
    /// Every policy.
    pub const ALL: [Policy; 5] = [
        Policy::Fcfs,
        Policy::Lpm,
        Policy::DfsWeight,
        Policy::Lof,
        Policy::Random,
    ];

    /// The command-line name.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Fcfs => "fcfs",
            Policy::Lpm => "lpm",
            Policy::DfsWeight => "dfs-weight",
            Policy::Lof => "lof",
            Policy::Random => "random",
        }
    }

    /// Whether the policy reads the radix tree (and so becomes FCFS when the cache is disabled).
    pub fn is_cache_aware(self) -> bool {
        matches!(self, Policy::Lpm | Policy::DfsWeight)
    }
}

/// A policy name that is none of [`Policy::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown schedule policy {0:?} (expected fcfs, lpm, dfs-weight, lof or random)")]
pub struct UnknownSchedulePolicy(pub String);

impl FromStr for Policy {
    type Err = UnknownSchedulePolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Policy::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownSchedulePolicy(s.to_string()))
    }
}
