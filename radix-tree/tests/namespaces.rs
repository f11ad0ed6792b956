//! Namespaces are held only while they own nodes: client-supplied salts must not grow the
//! cache's memory beyond what it stores.

#![allow(clippy::unwrap_used)]

use radix_tree::{Namespace, RadixCache, RadixKey};
use std::sync::Arc;

/// A distinct, long salt per index, kept by the test so that it can see when the cache lets go.
fn salts(n: usize) -> Vec<Arc<str>> {
    (0..n)
        .map(|i| Arc::from(format!("{i:04}-{}", "s".repeat(1024))))
        .collect()
}

/// Inserts `[1, 2, 3]` and `[1, 2, 4]` (which splits a node) under each salt.
fn insert_under_each(c: &mut RadixCache<u32>, salts: &[Arc<str>]) {
    for salt in salts {
        let ns = Namespace::salted(Arc::clone(salt));
        c.insert(&RadixKey::new(vec![1, 2, 3], ns.clone()), &[1, 2, 3])
            .unwrap();
        c.insert(&RadixKey::new(vec![1, 2, 4], ns), &[4, 5, 6])
            .unwrap();
    }
    c.check_integrity().unwrap();
}

/// True when nothing but the test holds the salt's string any more.
fn released(salt: &Arc<str>) -> bool {
    Arc::strong_count(salt) == 1
}

#[test]
fn evicting_everything_frees_100_salted_namespaces() {
    let mut c: RadixCache<u32> = RadixCache::new(1);
    let salts = salts(100);
    insert_under_each(&mut c, &salts);
    assert_eq!(c.num_namespaces(), 101);
    c.evict(usize::MAX);
    c.check_integrity().unwrap();
    assert_eq!(c.total_size(), 0);
    assert_eq!(c.num_namespaces(), 1);
    assert!(salts.iter().all(released), "the cache still holds a salt");
}

#[test]
fn reset_frees_100_salted_namespaces() {
    let mut c: RadixCache<u32> = RadixCache::new(1);
    let salts = salts(100);
    insert_under_each(&mut c, &salts);
    c.insert(&RadixKey::from_tokens(vec![9]), &[9]).unwrap();
    c.reset();
    c.check_integrity().unwrap();
    assert_eq!(c.num_namespaces(), 1);
    assert!(salts.iter().all(released), "the cache still holds a salt");
    // The shared namespace survives a reset and still works.
    c.insert(&RadixKey::from_tokens(vec![9]), &[9]).unwrap();
    assert_eq!(c.match_prefix(&RadixKey::from_tokens(vec![9])).values, [9]);
    assert_eq!(c.num_namespaces(), 1);
}

#[test]
fn matching_an_unknown_namespace_creates_nothing() {
    let mut c: RadixCache<u32> = RadixCache::new(1);
    for salt in salts(10) {
        let key = RadixKey::new(vec![1, 2, 3], Namespace::salted(salt));
        assert!(c.match_prefix(&key).is_empty());
    }
    assert_eq!(c.num_namespaces(), 1);
    c.check_integrity().unwrap();
}

#[test]
fn a_namespace_lives_until_its_last_node_goes() {
    let mut c: RadixCache<u32> = RadixCache::new(1);
    let salt = salts(1).remove(0);
    insert_under_each(&mut c, std::slice::from_ref(&salt));
    // [1, 2] | [3] | [4]: three nodes; lock one leaf and evict the other.
    let ns = Namespace::salted(Arc::clone(&salt));
    let locked = c
        .match_prefix(&RadixKey::new(vec![1, 2, 3], ns.clone()))
        .last_node;
    c.inc_lock_ref(locked).unwrap();
    assert_eq!(c.evict(usize::MAX), [6], "the leaf [4] holds value 6");
    c.check_integrity().unwrap();
    assert_eq!(c.num_namespaces(), 2);
    c.dec_lock_ref(locked).unwrap();
    c.evict(1);
    c.check_integrity().unwrap();
    assert_eq!(c.num_namespaces(), 2, "the upper node [1, 2] is left");
    c.evict(1);
    c.check_integrity().unwrap();
    assert_eq!(c.num_namespaces(), 1);
    drop(ns);
    assert!(released(&salt));
}

#[test]
fn freed_ids_are_reused_without_mixing_namespaces() {
    let mut c: RadixCache<u32> = RadixCache::new(1);
    let (a, b, fresh) = (Namespace::salted("a"), Namespace::salted("b"), salts(3));
    c.insert(&RadixKey::new(vec![1, 2], a.clone()), &[1, 2])
        .unwrap();
    c.insert(&RadixKey::new(vec![1, 2], b.clone()), &[3, 4])
        .unwrap();
    let lock = c.match_prefix(&RadixKey::new(vec![1, 2], b.clone()));
    c.inc_lock_ref(lock.last_node).unwrap();
    assert_eq!(c.evict(usize::MAX), [1, 2], "only a's node is unlocked");
    assert_eq!(c.num_namespaces(), 2);
    for (i, salt) in fresh.iter().enumerate() {
        let ns = Namespace::salted(Arc::clone(salt));
        let v = 10 * i as u32;
        c.insert(&RadixKey::new(vec![1, 2], ns.clone()), &[v, v + 1])
            .unwrap();
        assert_eq!(
            c.match_prefix(&RadixKey::new(vec![1, 2], ns)).values,
            [v, v + 1]
        );
        c.check_integrity().unwrap();
    }
    assert_eq!(c.num_namespaces(), 5);
    assert!(c.match_prefix(&RadixKey::new(vec![1, 2], a)).is_empty());
    assert_eq!(c.match_prefix(&RadixKey::new(vec![1, 2], b)).values, [3, 4]);
}

#[test]
fn disabled_cache_holds_no_namespaces() {
    let mut c: RadixCache<u32> = RadixCache::disabled(1);
    c.insert(&RadixKey::new(vec![1], Namespace::salted("a")), &[1])
        .unwrap();
    assert_eq!(c.num_namespaces(), 1);
    c.check_integrity().unwrap();
}
