//! Whole paths for a second tier: `leaf_paths` covers every stored token with the values a match
//! would return, and `evict_with` reports each evicted leaf's path just before it goes, with the
//! values eviction then returns.

#![allow(clippy::unwrap_used)]

use proptest::prelude::*;
use radix_tree::{KeyRef, Namespace, RadixCache};

fn namespace(i: u8) -> Namespace {
    if i == 0 {
        Namespace::shared()
    } else {
        Namespace::salted(format!("s{i}"))
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn leaf_paths_cover_the_tree_and_evict_with_reports_what_goes(
        inserts in prop::collection::vec(
            (0u8..2, prop::collection::vec(0u32..3, 1..12)), 1..24),
        evict in 1usize..40,
    ) {
        let mut tree: RadixCache<u32> = RadixCache::new(1);
        let mut next = 1u32;
        for (ns, tokens) in &inserts {
            let values: Vec<u32> = (next..next + tokens.len() as u32).collect();
            next += tokens.len() as u32;
            tree.insert(KeyRef::new(tokens, &namespace(*ns)), &values).unwrap();
        }
        let paths = tree.leaf_paths();
        // Every stored token is the end of exactly one distinct prefix on some leaf's path.
        let prefixes: std::collections::HashSet<(Namespace, Vec<u32>)> = paths
            .iter()
            .flat_map(|p| (1..=p.tokens.len()).map(|i| (p.namespace.clone(), p.tokens[..i].to_vec())))
            .collect();
        prop_assert_eq!(prefixes.len(), tree.total_size(), "the leaf paths do not cover the tree");
        for p in &paths {
            prop_assert_eq!(p.tokens.len(), p.values.len());
            prop_assert!(p.start < p.tokens.len());
            let m = tree.match_prefix(KeyRef::new(&p.tokens, &p.namespace));
            prop_assert_eq!(&m.values, &p.values);
        }

        let mut reported = Vec::new();
        let mut out = Vec::new();
        let n = tree.evict_with(evict, &mut out, &mut |p| {
            reported.extend_from_slice(&p.values[p.start..]);
        });
        prop_assert_eq!(n, out.len());
        prop_assert_eq!(reported, out, "the reported leaves are not the evicted values");
        tree.check_integrity().unwrap();
    }
}
