//! Property tests: random operation sequences against a naive model of the cache.
//!
//! The model keeps every stored prefix (namespace, tokens[..=i]) with the value of its last token,
//! and the multiset of locked prefixes. It checks that a match returns exactly the longest stored
//! page-aligned prefix in the same namespace with the right values, that sizes agree, that locked
//! values are never evicted, and that every value handed to `insert` is accounted exactly once
//! (still stored, returned as a duplicate, or returned by eviction). It also checks that the
//! cache holds exactly the namespaces that own stored prefixes (plus the shared one), however many
//! distinct salts come and go.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use radix_tree::{EvictionPolicy, KeyRef, Namespace, NodeId, RadixCache, RadixError};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashSet};

#[derive(Debug, Clone)]
enum Op {
    Insert { ns: u8, tokens: Vec<u32> },
    Match { ns: u8, tokens: Vec<u32> },
    Lock { ns: u8, tokens: Vec<u32> },
    Unlock { pick: usize },
    BadUnlock { ns: u8, tokens: Vec<u32> },
    Evict { n: usize },
    Reset,
}

struct Harness {
    cache: RadixCache<u64>,
    page: usize,
    /// The namespaces ops pick from by index; 0 is shared and 1 the original salted one.
    namespaces: Vec<Namespace>,
    /// (namespace, page-aligned prefix) -> values of the prefix's last page.
    stored: BTreeMap<(u8, Vec<u32>), Vec<u64>>,
    /// Locks held: handle and the prefix it ends at.
    locks: Vec<(NodeId, u8, Vec<u32>)>,
    next_value: u64,
    /// Every value ever handed to `insert` that has since come back (duplicate or evicted).
    returned: HashSet<u64>,
    handed: u64,
}

impl Harness {
    fn new(page: usize, policy: EvictionPolicy) -> Self {
        Self::with_namespaces(page, policy, 2)
    }

    /// A harness whose ops pick from `count` namespaces: shared, then distinct salts (some with
    /// tenants or adapters, one of them long).
    fn with_namespaces(page: usize, policy: EvictionPolicy, count: usize) -> Self {
        Harness {
            cache: RadixCache::with_strategy(page, policy),
            page,
            namespaces: (0..count).map(namespace).collect(),
            stored: BTreeMap::new(),
            locks: Vec::new(),
            next_value: 1,
            returned: HashSet::new(),
            handed: 0,
        }
    }

    fn floor(&self, n: usize) -> usize {
        n - n % self.page
    }

    /// Longest stored page-aligned prefix of `tokens` in `ns` (the stored set is prefix-closed).
    fn model_match(&self, ns: u8, tokens: &[u32]) -> usize {
        let mut len = 0;
        while len + self.page <= tokens.len()
            && self
                .stored
                .contains_key(&(ns, tokens[..len + self.page].to_vec()))
        {
            len += self.page;
        }
        len
    }

    fn model_values(&self, ns: u8, tokens: &[u32]) -> Vec<u64> {
        (self.page..=tokens.len())
            .step_by(self.page)
            .flat_map(|i| self.stored[&(ns, tokens[..i].to_vec())].clone())
            .collect()
    }

    fn give_back(&mut self, v: u64) {
        assert!(self.returned.insert(v), "value {v} returned twice");
    }

    fn is_protected(&self, ns: u8, prefix: &[u32]) -> bool {
        self.locks.iter().any(|(_, lns, lp)| {
            *lns == ns && lp.len() >= prefix.len() && lp[..prefix.len()] == *prefix
        })
    }

    fn do_match(&mut self, ns: u8, tokens: &[u32]) -> (usize, NodeId) {
        let key = KeyRef::new(tokens, &self.namespaces[ns as usize]);
        let m = self.cache.match_prefix(key);
        let aligned = self.floor(tokens.len());
        let expect = self.model_match(ns, &tokens[..aligned]);
        assert_eq!(m.len(), expect, "match length for {tokens:?} in ns {ns}");
        assert_eq!(m.values, self.model_values(ns, &tokens[..expect]));
        assert_eq!(self.cache.prefix_len(m.last_node).unwrap(), expect);
        assert_eq!(self.cache.path_values(m.last_node).unwrap(), m.values);
        (expect, m.last_node)
    }

    fn apply(&mut self, op: &Op) {
        match op {
            Op::Insert { ns, tokens } => {
                let tokens = &tokens[..self.floor(tokens.len())];
                let values: Vec<u64> = (0..tokens.len() as u64)
                    .map(|i| self.next_value + i)
                    .collect();
                self.next_value += tokens.len() as u64;
                self.handed += tokens.len() as u64;
                let expect = self.model_match(*ns, tokens);
                let key = KeyRef::new(tokens, &self.namespaces[*ns as usize]);
                let out = self.cache.insert(key, &values).unwrap();
                assert_eq!(out.prefix_len, expect, "insert {tokens:?}");
                assert_eq!(self.cache.prefix_len(out.last_node).unwrap(), tokens.len());
                for &v in &values[..expect] {
                    self.give_back(v);
                }
                for i in (expect..tokens.len()).step_by(self.page) {
                    let page = values[i..i + self.page].to_vec();
                    self.stored
                        .insert((*ns, tokens[..i + self.page].to_vec()), page);
                }
            }
            Op::Match { ns, tokens } => {
                self.do_match(*ns, tokens);
            }
            Op::Lock { ns, tokens } => {
                let (len, node) = self.do_match(*ns, tokens);
                self.cache.inc_lock_ref(node).unwrap();
                if len > 0 {
                    self.locks.push((node, *ns, tokens[..len].to_vec()));
                }
            }
            Op::Unlock { pick } => {
                if !self.locks.is_empty() {
                    let (node, _, _) = self.locks.remove(pick % self.locks.len());
                    self.cache.dec_lock_ref(node).unwrap();
                }
            }
            Op::BadUnlock { ns, tokens } => {
                let (len, node) = self.do_match(*ns, tokens);
                let held = self
                    .locks
                    .iter()
                    .any(|(_, lns, lp)| *lns == *ns && lp[..] == tokens[..len]);
                if len > 0 && !held {
                    let before = (self.cache.evictable_size(), self.cache.protected_size());
                    assert_eq!(
                        self.cache.dec_lock_ref(node),
                        Err(RadixError::UnbalancedUnlock(node))
                    );
                    assert_eq!(
                        before,
                        (self.cache.evictable_size(), self.cache.protected_size())
                    );
                }
            }
            Op::Evict { n } => {
                let evictable_before = self.cache.evictable_size();
                let freed = self.cache.evict(*n);
                let by_value: BTreeMap<u64, (u8, Vec<u32>)> = self
                    .stored
                    .iter()
                    .flat_map(|(k, page)| page.iter().map(move |v| (*v, k.clone())))
                    .collect();
                for v in &freed {
                    let (ns, prefix) = by_value.get(v).cloned().expect("evicted value was stored");
                    assert!(
                        !self.is_protected(ns, &prefix),
                        "evicted a locked prefix {prefix:?}"
                    );
                    if let Some(page) = self.stored.remove(&(ns, prefix)) {
                        assert!(
                            page.iter().all(|p| freed.contains(p)),
                            "a page was evicted in part"
                        );
                    }
                    self.give_back(*v);
                }
                for (ns, prefix) in self.stored.keys() {
                    let parent = prefix[..prefix.len() - self.page].to_vec();
                    assert!(
                        parent.is_empty() || self.stored.contains_key(&(*ns, parent)),
                        "eviction left {prefix:?} without its parent"
                    );
                }
                if freed.len() < *n {
                    assert_eq!(
                        self.cache.evictable_size(),
                        0,
                        "stopped early with evictable tokens left"
                    );
                    assert_eq!(freed.len(), evictable_before);
                }
            }
            Op::Reset => {
                for v in self.stored.values().flatten().copied().collect::<Vec<_>>() {
                    self.give_back(v);
                }
                self.cache.reset();
                self.stored.clear();
                for (node, _, _) in self.locks.drain(..) {
                    assert_eq!(
                        self.cache.dec_lock_ref(node),
                        Err(RadixError::StaleNode(node))
                    );
                }
            }
        }
        self.check();
    }

    fn check(&self) {
        self.cache.check_integrity().unwrap();
        let owners: HashSet<u8> = self
            .stored
            .keys()
            .map(|(ns, _)| *ns)
            .filter(|&ns| ns != 0)
            .collect();
        assert_eq!(
            self.cache.num_namespaces(),
            1 + owners.len(),
            "namespaces held differ from those owning nodes"
        );
        let total = self.stored.len() * self.page;
        let protected = self
            .stored
            .keys()
            .filter(|(ns, p)| self.is_protected(*ns, p))
            .count()
            * self.page;
        assert_eq!(self.cache.total_size(), total);
        assert_eq!(self.cache.protected_size(), protected);
        assert_eq!(self.cache.evictable_size(), total - protected);
        let mut in_tree = self.cache.values();
        in_tree.sort_unstable();
        let mut in_model: Vec<u64> = self.stored.values().flatten().copied().collect();
        in_model.sort_unstable();
        assert_eq!(in_tree, in_model, "tree values differ from the model");
        assert_eq!(
            self.returned.len() as u64 + in_model.len() as u64,
            self.handed,
            "a value leaked"
        );
        assert!(
            in_model.iter().all(|v| !self.returned.contains(v)),
            "stored value also freed"
        );
    }
}

/// The `i`-th namespace a harness uses: 0 is shared, 1 the salt of the original model.
fn namespace(i: usize) -> Namespace {
    match i {
        0 => Namespace::shared(),
        1 => Namespace::salted("tenant"),
        2 => Namespace::salted("x".repeat(4096)),
        i if i % 5 == 0 => Namespace::salted("s").with_tenant(format!("t{i}")),
        i if i % 3 == 0 => Namespace::salted(format!("s{i}")).with_adapter("lora"),
        i => Namespace::salted(format!("s{i}")),
    }
}

fn tokens_strategy() -> impl Strategy<Value = Vec<u32>> {
    prop::collection::vec(0u32..3, 0..12)
}

/// Random ops over the first `namespaces` namespaces.
fn op_strategy(namespaces: u8) -> impl Strategy<Value = Op> {
    let ns = move || 0u8..namespaces;
    prop_oneof![
        4 => (ns(), tokens_strategy()).prop_map(|(ns, tokens)| Op::Insert { ns, tokens }),
        3 => (ns(), tokens_strategy()).prop_map(|(ns, tokens)| Op::Match { ns, tokens }),
        2 => (ns(), tokens_strategy()).prop_map(|(ns, tokens)| Op::Lock { ns, tokens }),
        2 => any::<usize>().prop_map(|pick| Op::Unlock { pick }),
        1 => (ns(), tokens_strategy()).prop_map(|(ns, tokens)| Op::BadUnlock { ns, tokens }),
        2 => (0usize..10).prop_map(|n| Op::Evict { n }),
        1 => Just(Op::Reset),
    ]
}

fn policy_strategy() -> impl Strategy<Value = EvictionPolicy> {
    (0usize..EvictionPolicy::ALL.len()).prop_map(|i| EvictionPolicy::ALL[i])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_operations_agree_with_the_model(
        page in prop::sample::select(vec![1usize, 2, 4]),
        policy in policy_strategy(),
        ops in prop::collection::vec(op_strategy(2), 1..80),
    ) {
        let mut h = Harness::new(page, policy);
        for op in &ops {
            h.apply(op);
        }
    }

    /// Many distinct salts come and go: after every op the integrity check (which counts each
    /// namespace's nodes) passes and the cache holds exactly the namespaces owning nodes.
    #[test]
    fn namespaces_are_held_exactly_while_they_own_nodes(
        page in prop::sample::select(vec![1usize, 2, 4]),
        policy in policy_strategy(),
        ops in prop::collection::vec(op_strategy(MANY_NAMESPACES), 1..120),
    ) {
        let mut h = Harness::with_namespaces(page, policy, MANY_NAMESPACES.into());
        for op in &ops {
            h.apply(op);
        }
    }
}

/// Namespaces for the tests of namespace bookkeeping (the shared one and 15 salts).
const MANY_NAMESPACES: u8 = 16;

/// A random op over the first `namespaces` namespaces.
fn random_op(rng: &mut StdRng, namespaces: u8) -> Op {
    let tokens = |rng: &mut StdRng| -> Vec<u32> {
        let len = rng.gen_range(0..12);
        (0..len).map(|_| rng.gen_range(0..3)).collect()
    };
    match rng.gen_range(0..15) {
        0..=3 => Op::Insert {
            ns: rng.gen_range(0..namespaces),
            tokens: tokens(rng),
        },
        4..=6 => Op::Match {
            ns: rng.gen_range(0..namespaces),
            tokens: tokens(rng),
        },
        7..=8 => Op::Lock {
            ns: rng.gen_range(0..namespaces),
            tokens: tokens(rng),
        },
        9..=10 => Op::Unlock { pick: rng.gen() },
        11 => Op::BadUnlock {
            ns: rng.gen_range(0..namespaces),
            tokens: tokens(rng),
        },
        12..=13 => Op::Evict {
            n: rng.gen_range(0..10),
        },
        _ => {
            if rng.gen_range(0..50) == 0 {
                Op::Reset
            } else {
                Op::Evict { n: 1 }
            }
        }
    }
}

#[test]
fn seeded_long_run_of_100k_operations() {
    for (seed, page) in [(1u64, 1usize), (2, 2), (3, 4)] {
        let mut rng = StdRng::seed_from_u64(seed);
        let policy = EvictionPolicy::ALL[seed as usize % EvictionPolicy::ALL.len()];
        let mut h = Harness::new(page, policy);
        let ops = if page == 1 { 40_000 } else { 30_000 };
        for _ in 0..ops {
            let op = random_op(&mut rng, 2);
            h.apply(&op);
            while h.locks.len() > 6 {
                h.apply(&Op::Unlock { pick: 0 });
            }
        }
    }
}

#[test]
fn seeded_long_run_over_many_salts() {
    for (seed, page) in [(4u64, 1usize), (5, 2)] {
        let mut rng = StdRng::seed_from_u64(seed);
        let policy = EvictionPolicy::ALL[seed as usize % EvictionPolicy::ALL.len()];
        let mut h = Harness::with_namespaces(page, policy, MANY_NAMESPACES.into());
        for _ in 0..15_000 {
            let op = random_op(&mut rng, MANY_NAMESPACES);
            h.apply(&op);
            while h.locks.len() > 6 {
                h.apply(&Op::Unlock { pick: 0 });
            }
        }
    }
}
