//! SGLang radix-cache eviction behaviours, one test each (the eviction cases of section (h);
//! the rest are in `semantics.rs`): whole-leaf eviction, locks, the built-in policies and arena
//! compaction. Every test that builds a tree ends with `check_integrity()`.

#![allow(clippy::unwrap_used)]

mod common;

use common::{key, ok};
use radix_tree::{EvictionPolicy, RadixCache};

#[test]
fn evict_returns_values_and_reduces_total() {
    let mut c = RadixCache::new(1);
    c.insert(&key(&[1, 2]), &[10, 20]).unwrap();
    c.insert(&key(&[3, 4]), &[30, 40]).unwrap();
    let freed = c.evict(2);
    assert_eq!(freed.len(), 2);
    assert_eq!(c.total_size(), 2);
    ok(&c);
}

#[test]
fn lru_evicts_least_recently_matched_first() {
    let mut c = RadixCache::new(1);
    c.insert(&key(&[1, 2]), &[10, 20]).unwrap();
    c.insert(&key(&[3, 4]), &[30, 40]).unwrap();
    c.match_prefix(&key(&[1, 2]));
    assert_eq!(c.evict(2), vec![30, 40]);
    ok(&c);
}

#[test]
fn evict_cascades_to_parent_left_childless() {
    let mut c = RadixCache::new(1);
    c.insert(&key(&[1, 2, 3]), &[1, 2, 3]).unwrap();
    c.match_prefix(&key(&[1, 2]));
    assert_eq!(c.node_count(), 3);
    let mut freed = c.evict(3);
    freed.sort();
    assert_eq!(freed, vec![1, 2, 3]);
    assert_eq!(c.total_size(), 0);
    ok(&c);
}

#[test]
fn evict_takes_whole_nodes() {
    let mut c = RadixCache::new(1);
    let t: Vec<u32> = (1..=10).collect();
    c.insert(&key(&t), &t).unwrap();
    assert_eq!(c.evict(1).len(), 10);
    ok(&c);
}

#[test]
fn locked_leaves_are_never_evicted() {
    let mut c = RadixCache::new(1);
    let a = c.insert(&key(&[1, 2, 3]), &[1, 2, 3]).unwrap().last_node;
    let b = c.insert(&key(&[1, 2, 4]), &[1, 2, 4]).unwrap().last_node;
    c.inc_lock_ref(a).unwrap();
    c.inc_lock_ref(b).unwrap();
    assert!(c.evict(100).is_empty());
    assert_eq!(c.total_size(), 4);
    ok(&c);
}

#[test]
fn fifo_evicts_oldest_insert_even_if_recently_matched() {
    let mut c = RadixCache::with_strategy(1, EvictionPolicy::Fifo);
    c.insert(&key(&[1, 2]), &[10, 20]).unwrap();
    c.insert(&key(&[3, 4]), &[30, 40]).unwrap();
    c.match_prefix(&key(&[1, 2]));
    assert_eq!(c.evict(2), vec![10, 20]);
    ok(&c);
}

#[test]
fn mru_evicts_most_recently_used_first() {
    let mut c = RadixCache::with_strategy(1, EvictionPolicy::Mru);
    c.insert(&key(&[1, 2]), &[10, 20]).unwrap();
    c.insert(&key(&[3, 4]), &[30, 40]).unwrap();
    c.match_prefix(&key(&[1, 2]));
    assert_eq!(c.evict(2), vec![10, 20]);
    ok(&c);
}

#[test]
fn filo_evicts_newest_insert_first() {
    let mut c = RadixCache::with_strategy(1, EvictionPolicy::Filo);
    c.insert(&key(&[1, 2]), &[10, 20]).unwrap();
    c.insert(&key(&[3, 4]), &[30, 40]).unwrap();
    c.match_prefix(&key(&[3, 4]));
    assert_eq!(c.evict(2), vec![30, 40]);
    ok(&c);
}

#[test]
fn lfu_evicts_least_hit_first() {
    let mut c = RadixCache::with_strategy(1, EvictionPolicy::Lfu);
    c.insert(&key(&[1, 2]), &[10, 20]).unwrap();
    c.insert(&key(&[3, 4]), &[30, 40]).unwrap();
    c.match_prefix(&key(&[1, 2]));
    c.match_prefix(&key(&[1, 2]));
    c.match_prefix(&key(&[3, 4]));
    assert_eq!(c.evict(2), vec![30, 40]);
    ok(&c);
}

#[test]
fn priority_evicts_lowest_priority_then_lru() {
    let mut c = RadixCache::with_strategy(1, EvictionPolicy::Priority);
    c.insert_with_priority(&key(&[1, 2]), &[10, 20], 5).unwrap();
    c.insert_with_priority(&key(&[3, 4]), &[30, 40], 1).unwrap();
    c.insert_with_priority(&key(&[5, 6]), &[50, 60], 1).unwrap();
    c.match_prefix(&key(&[3, 4]));
    assert_eq!(
        c.evict(2),
        vec![50, 60],
        "equal priority: least recently used"
    );
    assert_eq!(c.evict(2), vec![30, 40]);
    assert_eq!(c.evict(2), vec![10, 20]);
    ok(&c);
}

#[test]
fn priority_propagates_as_maximum_along_the_path() {
    let mut c = RadixCache::with_strategy(1, EvictionPolicy::Priority);
    c.insert_with_priority(&key(&[1, 2, 3, 4]), &[1, 2, 3, 4], 5)
        .unwrap();
    c.insert_with_priority(&key(&[1, 2]), &[1, 2], 1).unwrap();
    c.insert_with_priority(&key(&[9, 9]), &[9, 9], 3).unwrap();
    // [1,2] (split off, priority 5) outranks [9,9] (priority 3): the latter goes first.
    assert_eq!(c.evict(1), vec![9, 9]);
    ok(&c);
}

#[test]
fn policy_names_parse_and_unknown_is_an_error() {
    for p in EvictionPolicy::ALL {
        assert_eq!(p.name().parse::<EvictionPolicy>().unwrap(), p);
    }
    assert!("bogus".parse::<EvictionPolicy>().is_err());
}

#[test]
fn evicted_runs_are_reclaimed_and_survivors_keep_their_values() {
    // 100,000 tokens in 1,000 leaves; evicting 90% leaves the arena mostly garbage, which
    // triggers compaction. Survivors must still match with their own values.
    let mut c = RadixCache::new(1);
    let seqs: Vec<Vec<u32>> = (0..1000u32)
        .map(|i| (0..100).map(|j| i * 1000 + j).collect())
        .collect();
    for s in &seqs {
        let vals: Vec<u32> = s.iter().map(|t| t + 7).collect();
        c.insert(&key(s), &vals).unwrap();
    }
    // Lock a few so they survive, then evict the rest.
    let keep: Vec<_> = seqs[..50]
        .iter()
        .map(|s| c.match_prefix(&key(s)).last_node)
        .collect();
    for &n in &keep {
        c.inc_lock_ref(n).unwrap();
    }
    let freed = c.evict(95_000);
    assert_eq!(freed.len(), 95_000);
    ok(&c);
    for s in &seqs[..50] {
        let expect: Vec<u32> = s.iter().map(|t| t + 7).collect();
        assert_eq!(c.match_prefix(&key(s)).values, expect);
    }
    for &n in &keep {
        c.dec_lock_ref(n).unwrap();
    }
    // The tree keeps working after compaction: split and extend a survivor.
    let mut longer = seqs[0][..60].to_vec();
    longer.push(1);
    assert_eq!(
        c.insert(&key(&longer), &vec![0; 61]).unwrap().prefix_len,
        60
    );
    assert_eq!(c.match_prefix(&key(&seqs[0])).values[59], seqs[0][59] + 7);
    ok(&c);
}
