//! SGLang radix-cache behaviours, one test each (reference cases 1-25 of section (h); the
//! eviction cases are in `eviction.rs`). Every test ends with `check_integrity()`.

#![allow(clippy::unwrap_used)]

mod common;

use common::{key, ok};
use radix_tree::{KeyRef, Namespace, RadixCache, RadixError, RadixKey};

fn sizes<V: Copy>(c: &RadixCache<V>) -> (usize, usize, usize) {
    (c.evictable_size(), c.protected_size(), c.total_size())
}

#[test]
fn match_on_empty_tree_returns_nothing_and_root() {
    let mut c = RadixCache::<u32>::new(1);
    let m = c.match_prefix(&key(&[1, 2, 3]));
    assert!(m.values.is_empty());
    assert_eq!(m.last_node, c.root());
    assert_eq!(sizes(&c), (0, 0, 0));
    ok(&c);
}

#[test]
fn insert_then_match_and_partial_match_splits_without_changing_size() {
    let mut c = RadixCache::new(1);
    assert_eq!(
        c.insert(&key(&[1, 2, 3]), &[10, 20, 30])
            .unwrap()
            .prefix_len,
        0
    );
    assert_eq!((c.total_size(), c.evictable_size()), (3, 3));
    assert_eq!(c.match_prefix(&key(&[1, 2, 3])).values, vec![10, 20, 30]);
    let nodes_before = c.node_count();
    assert_eq!(c.match_prefix(&key(&[1, 2])).values, vec![10, 20]);
    assert_eq!(
        c.node_count(),
        nodes_before + 1,
        "partial match splits the node"
    );
    assert_eq!(c.total_size(), 3);
    ok(&c);
}

#[test]
fn reinsert_returns_full_length_and_keeps_old_values() {
    let mut c = RadixCache::new(1);
    c.insert(&key(&[1, 2, 3]), &[10, 20, 30]).unwrap();
    assert_eq!(
        c.insert(&key(&[1, 2, 3]), &[11, 21, 31])
            .unwrap()
            .prefix_len,
        3
    );
    assert_eq!(c.match_prefix(&key(&[1, 2, 3])).values, vec![10, 20, 30]);
    assert_eq!(c.total_size(), 3);
    ok(&c);
}

#[test]
fn insert_diverging_key_splits_shared_prefix() {
    let mut c = RadixCache::new(1);
    c.insert(&key(&[1, 2, 3]), &[1, 2, 3]).unwrap();
    assert_eq!(
        c.insert(&key(&[1, 2, 4, 5]), &[1, 2, 4, 5])
            .unwrap()
            .prefix_len,
        2
    );
    assert_eq!(c.total_size(), 5);
    let snap = c.snapshot();
    let top: Vec<_> = snap.nodes.iter().filter(|n| n.depth == 1).collect();
    assert_eq!(top.len(), 1, "root has one child");
    assert_eq!(top[0].tokens, vec![1, 2]);
    assert_eq!(snap.nodes.iter().filter(|n| n.depth == 2).count(), 2);
    ok(&c);
}

#[test]
fn insert_ending_inside_a_node_splits_it_and_adds_no_leaf() {
    let mut c = RadixCache::new(1);
    c.insert(&key(&[1, 2, 3, 4]), &[1, 2, 3, 4]).unwrap();
    let out = c.insert(&key(&[1, 2]), &[7, 7]).unwrap();
    assert_eq!(out.prefix_len, 2);
    assert_eq!(c.total_size(), 4);
    assert_eq!(c.node_count(), 3, "root + [1,2] + [3,4]");
    assert_eq!(c.prefix_len(out.last_node).unwrap(), 2);
    ok(&c);
}

#[test]
fn matches_after_divergent_inserts_page_sizes_1_and_2() {
    for ps in [1, 2] {
        let mut c = RadixCache::new(ps);
        let v1: Vec<u32> = (1..=8).map(|x| x * 10).collect();
        c.insert(&key(&[1, 2, 3, 4, 5, 6, 7, 8]), &v1).unwrap();
        c.insert(&key(&[1, 2, 9, 10]), &[10, 20, 90, 100]).unwrap();
        assert_eq!(c.total_size(), 10);
        assert_eq!(
            c.match_prefix(&key(&[1, 2, 3, 4, 999, 1000])).values,
            v1[..4]
        );
        assert_eq!(c.total_size(), 10);
        assert_eq!(
            c.match_prefix(&key(&[1, 2, 3, 4, 5, 6, 777, 888])).values,
            v1[..6]
        );
        assert_eq!(c.total_size(), 10);
        assert_eq!(
            c.match_prefix(&key(&[1, 2, 9, 10])).values,
            vec![10, 20, 90, 100]
        );
        assert_eq!(c.total_size(), 10);
        ok(&c);
    }
}

#[test]
fn match_is_truncated_to_whole_pages() {
    for (ps, len, expect) in [(1, 5, 5), (2, 5, 4), (4, 6, 4)] {
        let mut c = RadixCache::new(ps);
        let tokens: Vec<u32> = (0..len).collect();
        c.insert(&key(&tokens), &tokens).unwrap();
        assert_eq!(
            c.match_prefix(&key(&tokens)).len(),
            expect as usize,
            "ps {ps} len {len}"
        );
        ok(&c);
    }
}

#[test]
fn stored_partial_page_never_matches_a_longer_query_page() {
    let mut c = RadixCache::new(4);
    let stored: Vec<u32> = (0..6).collect();
    c.insert(&key(&stored), &stored).unwrap();
    let query: Vec<u32> = (0..8).collect();
    assert_eq!(c.match_prefix(&key(&query)).values, vec![0, 1, 2, 3]);
    ok(&c);
}

#[test]
fn key_shorter_than_a_page_matches_nothing() {
    let mut c = RadixCache::new(4);
    c.insert(&key(&[1, 2, 3, 4]), &[1, 2, 3, 4]).unwrap();
    let m = c.match_prefix(&key(&[1, 2, 3]));
    assert!(m.is_empty());
    assert_eq!(m.last_node, c.root());
    ok(&c);
}

#[test]
fn paged_match_splits_on_page_boundary() {
    let mut c = RadixCache::new(2);
    c.insert(&key(&[1, 2, 3, 4]), &[1, 2, 3, 4]).unwrap();
    let m = c.match_prefix(&key(&[1, 2, 3, 9]));
    assert_eq!(m.values, vec![1, 2]);
    assert_eq!(c.prefix_len(m.last_node).unwrap(), 2);
    assert_eq!(c.node_count(), 3);
    ok(&c);
}

#[test]
fn paged_children_are_keyed_by_whole_first_page() {
    let mut c = RadixCache::new(2);
    c.insert(&key(&[1, 2, 3, 4]), &[1, 2, 3, 4]).unwrap();
    assert_eq!(
        c.insert(&key(&[1, 3, 5, 6]), &[1, 3, 5, 6])
            .unwrap()
            .prefix_len,
        0
    );
    assert_eq!(c.total_size(), 8);
    assert_eq!(
        c.node_count(),
        3,
        "two siblings under the root, no shared single token"
    );
    ok(&c);
}

#[test]
fn namespaces_isolate_equal_tokens() {
    let mut c = RadixCache::new(1);
    let k1 = RadixKey::new(vec![1, 2, 3], Namespace::salted("key1"));
    let k2 = RadixKey::new(vec![1, 2, 3], Namespace::salted("key2"));
    let k0 = key(&[1, 2, 3]);
    assert_eq!(c.insert(&k1, &[10, 20, 30]).unwrap().prefix_len, 0);
    assert_eq!(c.insert(&k2, &[40, 50, 60]).unwrap().prefix_len, 0);
    assert_eq!(c.insert(&k0, &[70, 80, 90]).unwrap().prefix_len, 0);
    assert_eq!(c.total_size(), 9);
    assert_eq!(c.match_prefix(&k1).values, vec![10, 20, 30]);
    assert_eq!(c.match_prefix(&k2).values, vec![40, 50, 60]);
    assert_eq!(c.match_prefix(&k0).values, vec![70, 80, 90]);
    let unknown = RadixKey::new(vec![1, 2, 3], Namespace::salted("nonexistent"));
    assert!(c.match_prefix(&unknown).is_empty());
    // Salt and adapter are separate fields: ("a1", none) differs from ("a", "1").
    let a1 = RadixKey::new(vec![1, 2, 3], Namespace::salted("a1"));
    let a_1 = RadixKey::new(vec![1, 2, 3], Namespace::salted("a").with_adapter("1"));
    c.insert(&a1, &[1, 1, 1]).unwrap();
    assert!(c.match_prefix(&a_1).is_empty());
    ok(&c);
}

#[test]
fn lock_moves_tokens_between_evictable_and_protected() {
    let mut c = RadixCache::new(1);
    c.insert(&key(&[1, 2, 3]), &[1, 2, 3]).unwrap();
    let n = c.match_prefix(&key(&[1, 2, 3])).last_node;
    assert_eq!(c.inc_lock_ref(n).unwrap(), 3);
    assert_eq!(sizes(&c), (0, 3, 3));
    ok(&c);
    assert_eq!(c.dec_lock_ref(n).unwrap(), 3);
    assert_eq!(sizes(&c), (3, 0, 3));
    ok(&c);
}

#[test]
fn lock_on_one_path_leaves_sibling_evictable() {
    let mut c = RadixCache::new(1);
    c.insert(&key(&[1, 2, 3]), &[10, 20, 30]).unwrap();
    c.insert(&key(&[1, 2, 4, 5]), &[10, 20, 40, 50]).unwrap();
    let n = c.match_prefix(&key(&[1, 2, 4, 5])).last_node;
    c.inc_lock_ref(n).unwrap();
    assert_eq!(sizes(&c), (1, 4, 5));
    assert_eq!(c.evict(10), vec![30]);
    assert_eq!(c.total_size(), 4);
    ok(&c);
}

#[test]
fn split_preserves_locks_and_unlock_through_original_node() {
    let mut c = RadixCache::new(1);
    let n = c
        .insert(&key(&[1, 2, 3, 4]), &[1, 2, 3, 4])
        .unwrap()
        .last_node;
    c.inc_lock_ref(n).unwrap();
    assert_eq!(sizes(&c), (0, 4, 4));
    c.insert(&key(&[1, 2, 9]), &[1, 2, 9]).unwrap();
    assert_eq!(sizes(&c), (1, 4, 5));
    ok(&c);
    c.dec_lock_ref(n).unwrap();
    assert_eq!(sizes(&c), (5, 0, 5));
    ok(&c);
}

#[test]
fn root_is_never_evicted_and_reset_clears_everything() {
    let mut c = RadixCache::new(1);
    let root = c.root();
    assert_eq!(c.lock_ref(root).unwrap(), 1);
    c.inc_lock_ref(root).unwrap();
    c.dec_lock_ref(root).unwrap();
    assert_eq!(c.lock_ref(root).unwrap(), 1, "locking the root is a no-op");
    let n = c.insert(&key(&[1, 2]), &[1, 2]).unwrap().last_node;
    c.evict(100);
    assert_eq!(c.node_count(), 1);
    c.insert(&key(&[5, 6]), &[5, 6]).unwrap();
    c.reset();
    assert_eq!(sizes(&c), (0, 0, 0));
    assert_eq!(c.lock_ref(c.root()).unwrap(), 1);
    assert_eq!(c.inc_lock_ref(n), Err(RadixError::StaleNode(n)));
    ok(&c);
}

#[test]
fn disabled_cache_stores_and_matches_nothing() {
    let mut c = RadixCache::disabled(1);
    assert_eq!(
        c.insert(&key(&[1, 2, 3]), &[1, 2, 3]).unwrap().prefix_len,
        0
    );
    assert_eq!(c.total_size(), 0);
    assert!(c.match_prefix(&key(&[1, 2, 3])).is_empty());
    ok(&c);
}

#[test]
fn all_values_flatten() {
    let mut c = RadixCache::new(1);
    c.insert(&key(&[1, 2]), &[10, 20]).unwrap();
    c.insert(&key(&[3, 4]), &[30, 40]).unwrap();
    let mut v = c.values();
    v.sort();
    assert_eq!(v, vec![10, 20, 30, 40]);
    ok(&c);
}

#[test]
fn unbalanced_unlock_is_an_error_and_changes_nothing() {
    let mut c = RadixCache::new(1);
    let n = c.insert(&key(&[1, 2, 3]), &[1, 2, 3]).unwrap().last_node;
    assert_eq!(c.dec_lock_ref(n), Err(RadixError::UnbalancedUnlock(n)));
    assert_eq!(sizes(&c), (3, 0, 3));
    // A lock anchored at a descendant does not let an ancestor be unlocked.
    c.insert(&key(&[1, 2, 3, 4]), &[1, 2, 3, 4]).unwrap();
    let leaf = c.match_prefix(&key(&[1, 2, 3, 4])).last_node;
    c.inc_lock_ref(leaf).unwrap();
    assert_eq!(c.dec_lock_ref(n), Err(RadixError::UnbalancedUnlock(n)));
    assert_eq!(sizes(&c), (0, 4, 4));
    ok(&c);
}

#[test]
fn stale_handles_are_detected_after_eviction() {
    let mut c = RadixCache::new(1);
    let n = c.insert(&key(&[1, 2, 3]), &[1, 2, 3]).unwrap().last_node;
    c.evict(3);
    c.insert(&key(&[4, 5]), &[4, 5]).unwrap(); // may reuse the slot
    assert_eq!(c.inc_lock_ref(n), Err(RadixError::StaleNode(n)));
    ok(&c);
}

#[test]
fn insert_rejects_value_count_mismatch() {
    let mut c = RadixCache::new(1);
    assert_eq!(
        c.insert(&key(&[1, 2, 3]), &[1, 2]),
        Err(RadixError::LengthMismatch {
            tokens: 3,
            values: 2
        })
    );
    assert_eq!(c.total_size(), 0);
    ok(&c);
}

#[test]
fn unit_values_build_a_simulation_tree() {
    let mut c = RadixCache::<()>::new(1);
    let t = [1, 2, 3, 4];
    c.insert(&key(&t), &[(); 4]).unwrap();
    assert_eq!(c.insert(&key(&[1, 2, 5]), &[(); 3]).unwrap().prefix_len, 2);
    assert_eq!(c.match_prefix(&key(&[1, 2, 3, 9])).len(), 3);
    assert_eq!(c.total_size(), 5);
    ok(&c);
}

#[test]
fn stats_count_queries_and_hits_monotonically() {
    let mut c = RadixCache::new(1);
    c.insert(&key(&[1, 2, 3]), &[1, 2, 3]).unwrap();
    c.match_prefix(&key(&[1, 2, 3, 4]));
    c.match_prefix(&key(&[9]));
    let s = c.stats();
    assert_eq!((s.match_calls, s.tokens_queried, s.tokens_hit), (2, 5, 3));
    assert_eq!((s.insert_calls, s.tokens_inserted), (1, 3));
    c.reset();
    assert_eq!(c.stats().tokens_hit, 3, "reset keeps counters");
    ok(&c);
}

#[test]
fn borrowed_keys_match_slices_of_a_buffer() {
    let mut c = RadixCache::new(1);
    let ns = Namespace::shared();
    let buf = [1u32, 2, 3, 4, 5];
    c.insert(KeyRef::new(&buf, &ns), &buf).unwrap();
    let m = c.match_prefix(KeyRef::new(&buf, &ns).prefix(buf.len() - 1));
    assert_eq!(m.values, vec![1, 2, 3, 4]);
    ok(&c);
}

#[test]
fn dumps_show_structure_as_text_and_json() {
    let mut c = RadixCache::new(1);
    c.insert(&key(&[1, 2, 3]), &[10, 20, 30]).unwrap();
    c.insert(&key(&[1, 2, 4]), &[10, 20, 40]).unwrap();
    c.insert(&RadixKey::new(vec![7], Namespace::salted("t")), &[70])
        .unwrap();
    let text = c.dump_text();
    assert!(text.contains("tokens=[1, 2]"), "{text}");
    assert!(text.contains("    #"), "children are indented: {text}");
    assert!(text.contains("salt=\"t\""), "{text}");
    let json: serde_json::Value = serde_json::from_str(&c.dump_json()).unwrap();
    assert_eq!(json["nodes"].as_array().unwrap().len(), 5);
    assert_eq!(json["evictable_size"], 5);
    ok(&c);
}

#[test]
fn parent_and_children_navigate_the_tree() {
    let mut c = RadixCache::new(1);
    let a = c.insert(&key(&[1, 2, 3]), &[1, 2, 3]).unwrap().last_node;
    let b = c.insert(&key(&[1, 2, 4]), &[1, 2, 4]).unwrap().last_node;
    let mid = c.parent(a).unwrap().unwrap();
    assert_eq!(c.parent(b).unwrap(), Some(mid));
    assert_eq!(c.prefix_len(mid).unwrap(), 2);
    let mut kids = c.children(mid).unwrap();
    kids.sort();
    let mut expect = vec![a, b];
    expect.sort();
    assert_eq!(kids, expect);
    assert_eq!(c.parent(c.parent(mid).unwrap().unwrap()).unwrap(), None);
    ok(&c);
}

#[test]
fn tenants_are_isolated_even_with_equal_salts() {
    let mut c = RadixCache::new(1);
    let a = RadixKey::new(vec![1, 2, 3], Namespace::salted("s").with_tenant("a"));
    let b = RadixKey::new(vec![1, 2, 3], Namespace::salted("s").with_tenant("b"));
    c.insert(&a, &[1, 2, 3]).unwrap();
    assert!(c.match_prefix(&b).is_empty());
    assert_eq!(c.match_prefix(&a).len(), 3);
    assert!(c.dump_text().contains("tenant=\"a\""));
    ok(&c);
}
