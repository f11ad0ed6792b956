//! SGLang request-caching and allocator behaviours (reference cases 28-49 of section (h)),
//! one test each, with the accounting checked after every step.

#![allow(clippy::unwrap_used)]

use page_manager::{
    KvCacheManager, KvCapacity, KvDims, KvError, ManagerConfig, RowId, SlotAllocator,
};
use radix_tree::{EvictionPolicy, Namespace};

fn manager(page_size: usize, num_pages: usize) -> KvCacheManager {
    KvCacheManager::new(&ManagerConfig {
        page_size,
        num_pages,
        max_rows: 8,
        max_context: 128,
        disable_radix_cache: false,
        eviction: EvictionPolicy::Lru,
    })
    .unwrap()
}

fn sizes(m: &KvCacheManager) -> (usize, usize, usize) {
    let t = m.tree();
    (t.evictable_size(), t.protected_size(), t.total_size())
}

fn ok(m: &KvCacheManager) {
    m.check_accounting().unwrap();
}

/// Admits `tokens` with the L-1 prefix rule and allocates the rest; returns the row and prefix.
fn start(m: &mut KvCacheManager, tokens: &[u32]) -> (RowId, usize) {
    let ns = Namespace::shared();
    let hit = m.match_request_prefix(&ns, tokens, None);
    let row = m.admit(ns, hit).unwrap();
    m.alloc_extend(row, tokens.len() - hit.len).unwrap();
    ok(m);
    (row, hit.len)
}

fn idle_leak_check(m: &KvCacheManager) {
    let acc = m.check_accounting().unwrap();
    assert_eq!(acc.active_rows, 0);
    assert_eq!(acc.protected, 0);
    assert_eq!(acc.available + acc.evictable, acc.capacity);
}

#[test]
fn finish_without_prefix_inserts_everything_and_frees_the_row() {
    let mut m = manager(1, 64);
    let (row, prefix) = start(&mut m, &[1, 2, 3, 4]);
    assert_eq!(prefix, 0);
    m.cache_finished(row, &[1, 2, 3, 4]).unwrap();
    assert_eq!(sizes(&m), (4, 0, 4));
    assert_eq!(m.available_size(), 60);
    assert_eq!(m.active_rows(), 0);
    idle_leak_check(&m);
}

#[test]
fn same_prompt_prefilled_together_frees_the_second_copy() {
    let mut m = manager(1, 64);
    let p = [1, 2, 3, 4];
    let (a, _) = start(&mut m, &p);
    let (b, _) = start(&mut m, &p);
    let b_slots = m.row_slots(b).unwrap().to_vec();
    assert_eq!(m.available_size(), 56);
    m.cache_unfinished(a, &p).unwrap();
    m.cache_unfinished(b, &p).unwrap();
    assert_eq!(
        m.available_size(),
        60,
        "B's four duplicate slots were freed"
    );
    assert_eq!(m.row_slots(b).unwrap(), m.row_slots(a).unwrap());
    assert_ne!(m.row_slots(b).unwrap(), &b_slots[..]);
    assert_eq!(m.row_info(b).unwrap().protected_len, 4);
    let leaf = m.row_info(a).unwrap().last_node;
    assert_eq!(m.row_info(b).unwrap().last_node, leaf);
    assert_eq!(m.tree().lock_ref(leaf).unwrap(), 2);
    assert_eq!(sizes(&m), (0, 4, 4));
    ok(&m);
}

#[test]
fn prefix_is_reused_and_extended() {
    let mut m = manager(1, 64);
    let (x, _) = start(&mut m, &[1, 2, 3]);
    m.cache_finished(x, &[1, 2, 3]).unwrap();
    let prompt = [1, 2, 3, 4, 5];
    let (row, prefix) = start(&mut m, &prompt);
    assert_eq!(prefix, 3);
    assert_eq!(m.row_info(row).unwrap().kv_len, 5);
    assert_eq!(sizes(&m), (0, 3, 3));
    m.cache_unfinished(row, &prompt).unwrap();
    assert_eq!(sizes(&m), (0, 5, 5));
    // Decode k = 3 tokens: the last sampled one never gets KV.
    let mut all = prompt.to_vec();
    for t in [6, 7] {
        m.alloc_decode(row).unwrap();
        all.push(t);
    }
    all.push(8);
    let kv_len = m.row_info(row).unwrap().kv_len;
    assert_eq!(kv_len, 7);
    m.cache_finished(row, &all[..kv_len]).unwrap();
    assert_eq!(sizes(&m), (7, 0, 7));
    idle_leak_check(&m);
}

#[test]
fn identical_prompt_reuses_all_but_the_last_token() {
    let mut m = manager(1, 64);
    let p = [5, 6, 7, 8];
    let (x, _) = start(&mut m, &p);
    m.cache_finished(x, &p).unwrap();
    let (row, prefix) = start(&mut m, &p);
    assert_eq!(prefix, 3);
    assert_eq!(m.row_info(row).unwrap().kv_len - prefix, 1);
    ok(&m);
}

#[test]
fn logprob_start_caps_the_prefix() {
    let mut m = manager(1, 64);
    let p = [5, 6, 7, 8];
    let (x, _) = start(&mut m, &p);
    m.cache_finished(x, &p).unwrap();
    let hit = m.match_request_prefix(&Namespace::shared(), &p, Some(0));
    assert_eq!(hit.len, 0);
    let hit = m.match_request_prefix(&Namespace::shared(), &p, Some(2));
    assert_eq!(hit.len, 2);
    ok(&m);
}

#[test]
fn chunked_prefill_caches_each_chunk_and_moves_the_lock() {
    let mut m = manager(1, 64);
    let prompt: Vec<u32> = (1..=10).collect();
    let hit = m_hit(&mut m, &prompt);
    let row = m.admit(Namespace::shared(), hit).unwrap();
    m.alloc_extend(row, 4).unwrap();
    m.cache_unfinished(row, &prompt[..4]).unwrap();
    let info = m.row_info(row).unwrap().clone();
    assert_eq!((info.protected_len, info.prefix_len), (4, 0));
    assert_eq!(m.tree().prefix_len(info.last_node).unwrap(), 4);
    assert_eq!(sizes(&m), (0, 4, 4));
    let chunk2 = m.alloc_extend(row, 4).unwrap();
    assert_eq!(chunk2.len(), 4);
    assert_eq!(&m.row_slots(row).unwrap()[4..8], &chunk2[..]);
    m.cache_unfinished(row, &prompt[..8]).unwrap();
    m.alloc_extend(row, 2).unwrap();
    m.cache_unfinished(row, &prompt).unwrap();
    assert_eq!(sizes(&m), (0, 10, 10));
    assert_eq!(
        m.row_info(row).unwrap().prefix_len,
        0,
        "own chunks are not cache hits"
    );
    m.cache_finished(row, &prompt).unwrap();
    idle_leak_check(&m);
}

fn m_hit(m: &mut KvCacheManager, tokens: &[u32]) -> page_manager::PrefixHit {
    m.match_request_prefix(&Namespace::shared(), tokens, None)
}

#[test]
fn paged_unfinished_keeps_the_partial_page_private() {
    let mut m = manager(4, 16);
    let fill: Vec<u32> = (1..=6).collect();
    let (row, _) = start(&mut m, &fill);
    let before = m.available_size();
    m.cache_unfinished(row, &fill).unwrap();
    let info = m.row_info(row).unwrap();
    assert_eq!(info.protected_len, 4);
    assert_eq!(info.kv_len, 6);
    assert_eq!(sizes(&m), (0, 4, 4));
    assert_eq!(m.available_size(), before, "nothing freed");
    assert_eq!(m.check_accounting().unwrap().private, 4, "one private page");
}

#[test]
fn paged_finish_inserts_whole_pages_and_frees_the_tail_page() {
    let mut m = manager(4, 16);
    let tokens: Vec<u32> = (1..=7).collect();
    let (row, _) = start(&mut m, &tokens);
    m.cache_finished(row, &tokens).unwrap();
    assert_eq!(sizes(&m), (4, 0, 4));
    assert_eq!(m.available_size(), 60);
    idle_leak_check(&m);
}

#[test]
fn retraction_frees_only_private_slots_and_keeps_the_tree() {
    let mut m = manager(1, 64);
    let (x, _) = start(&mut m, &[1, 2, 3]);
    m.cache_finished(x, &[1, 2, 3]).unwrap();
    let prompt = [1, 2, 3, 4, 5, 6, 7, 8];
    let (row, prefix) = start(&mut m, &prompt);
    assert_eq!(prefix, 3);
    let avail = m.available_size();
    m.release(row).unwrap();
    assert_eq!(m.available_size(), avail + 5);
    assert_eq!(sizes(&m), (3, 0, 3));
    idle_leak_check(&m);
}

#[test]
fn disabled_cache_never_matches_and_frees_everything_at_finish() {
    let mut m = KvCacheManager::new(&ManagerConfig {
        page_size: 1,
        num_pages: 64,
        max_rows: 4,
        max_context: 64,
        disable_radix_cache: true,
        eviction: EvictionPolicy::Lru,
    })
    .unwrap();
    let p: Vec<u32> = (1..=10).collect();
    let (row, prefix) = start(&mut m, &p[..4]);
    assert_eq!(prefix, 0);
    m.cache_unfinished(row, &p[..4]).unwrap();
    assert_eq!(m.row_info(row).unwrap().kv_len, 4, "chunk keeps its slots");
    m.alloc_extend(row, 6).unwrap();
    m.cache_unfinished(row, &p).unwrap();
    m.cache_finished(row, &p).unwrap();
    assert_eq!(m.available_size(), 64);
    let (row2, prefix2) = start(&mut m, &p);
    assert_eq!(prefix2, 0);
    m.cache_finished(row2, &p).unwrap();
    idle_leak_check(&m);
}

#[test]
fn token_allocator_reserves_slot_zero_and_fails_without_consuming() {
    let mut a = SlotAllocator::new(8, 1).unwrap();
    assert_eq!(a.available_size(), 8);
    assert_eq!(a.alloc(3).unwrap(), vec![1, 2, 3]);
    assert!(matches!(a.alloc(6), Err(KvError::OutOfMemory { .. })));
    assert_eq!(a.available_size(), 5);
    a.free(&[2]).unwrap();
    assert_eq!(a.available_size(), 6);
    a.free(&[]).unwrap();
    assert_eq!(a.available_size(), 6);
    assert_eq!(a.free(&[2]), Err(KvError::DoubleFree(2)));
    assert_eq!(a.free(&[0]), Err(KvError::InvalidSlot(0)));
    assert_eq!(a.free(&[9]), Err(KvError::InvalidSlot(9)));
    assert_eq!(a.free(&[1, 1]), Err(KvError::DoubleFree(1)));
    assert_eq!(a.available_size(), 6, "failed frees change nothing");
}

#[test]
fn free_group_releases_together() {
    let mut a = SlotAllocator::new(8, 1).unwrap();
    a.alloc(3).unwrap();
    a.free_group_begin();
    a.free(&[1]).unwrap();
    a.free(&[2]).unwrap();
    assert_eq!(a.available_size(), 5);
    assert_eq!(
        a.free(&[1]),
        Err(KvError::DoubleFree(1)),
        "double free inside a group"
    );
    a.free_group_end();
    assert_eq!(a.available_size(), 7);
}

#[test]
fn paged_allocator_hands_out_and_frees_whole_pages() {
    let mut a = SlotAllocator::new(4, 4).unwrap();
    assert_eq!(a.alloc(8).unwrap(), (4..12).collect::<Vec<u32>>());
    assert_eq!(a.available_size(), 8);
    a.free(&[5]).unwrap();
    assert_eq!(a.available_size(), 12);
    assert!(matches!(a.alloc(3), Err(KvError::Unaligned { .. })));
}

#[test]
fn alloc_extend_from_empty_takes_a_full_and_a_partial_page() {
    let mut a = SlotAllocator::new(4, 4).unwrap();
    let s = a.alloc_extend(0, 6, None).unwrap();
    assert_eq!(s, vec![4, 5, 6, 7, 8, 9]);
    assert_eq!(a.free_pages(), 2);
}

#[test]
fn alloc_extend_fills_the_partial_page_first() {
    let mut a = SlotAllocator::new(8, 4).unwrap();
    let first = a.alloc_extend(0, 2, None).unwrap(); // page 1: slots 4, 5
    let x = *first.last().unwrap();
    assert_eq!((x + 1) % 4, 2);
    let s = a.alloc_extend(2, 9, Some(x)).unwrap();
    assert_eq!(&s[..2], &[x + 1, x + 2]);
    assert_eq!(&s[2..6], &[8, 9, 10, 11]);
    assert_eq!(&s[6..], &[12]);
    assert_eq!(a.free_pages(), 8 - 3);
}

#[test]
fn alloc_extend_within_the_last_page_takes_no_page() {
    let mut a = SlotAllocator::new(4, 4).unwrap();
    let s = a.alloc_extend(0, 3, None).unwrap();
    let free = a.free_pages();
    assert_eq!(
        a.alloc_extend(3, 4, s.last().copied()).unwrap(),
        vec![s[2] + 1]
    );
    assert_eq!(a.free_pages(), free);
}

#[test]
fn alloc_decode_takes_a_new_page_only_on_a_boundary() {
    let mut a = SlotAllocator::new(4, 4).unwrap();
    let s = a.alloc_extend(0, 4, None).unwrap();
    let slot = a.alloc_decode(4, s.last().copied()).unwrap();
    assert_eq!(slot % 4, 0, "first slot of a new page");
    let next = a.alloc_decode(5, Some(slot)).unwrap();
    assert_eq!(next, slot + 1);
}

#[test]
fn failed_alloc_extend_consumes_nothing() {
    let mut a = SlotAllocator::new(2, 4).unwrap();
    let before = a.backup_state();
    assert!(matches!(
        a.alloc_extend(0, 12, None),
        Err(KvError::OutOfMemory { .. })
    ));
    assert_eq!(a.backup_state(), before);
}

#[test]
fn backup_and_restore_roll_back_allocations() {
    let mut a = SlotAllocator::new(4, 1).unwrap();
    let state = a.backup_state();
    a.alloc(3).unwrap();
    a.restore_state(state);
    assert_eq!(a.available_size(), 4);
    assert_eq!(a.alloc(4).unwrap(), vec![1, 2, 3, 4]);
}

#[test]
fn eviction_refills_the_free_list_with_aligned_pages() {
    let mut m = manager(4, 4);
    // Two cached pages in two leaves, then use up the rest.
    for base in [1u32, 11] {
        let p: Vec<u32> = (base..base + 4).collect();
        let (x, _) = start(&mut m, &p);
        m.cache_finished(x, &p).unwrap();
    }
    let (y, _) = start(&mut m, &(20..28).collect::<Vec<u32>>());
    assert_eq!(m.available_size(), 0);
    assert_eq!(m.tree().evictable_size(), 8);
    let (z, _) = start(&mut m, &[50, 51, 52]);
    let slots = m.row_slots(z).unwrap().to_vec();
    assert_eq!(slots[0] % 4, 0, "page aligned");
    let ys = m.row_slots(y).unwrap();
    assert!(slots.iter().all(|s| !ys.contains(s)), "no overlap");
    let acc = m.check_accounting().unwrap();
    assert_eq!(acc.evictable, 4, "only the shortfall was evicted");
}

#[test]
fn out_of_memory_leaves_every_structure_unchanged() {
    let mut m = manager(1, 8);
    let (x, _) = start(&mut m, &[1, 2, 3]);
    m.cache_finished(x, &[1, 2, 3]).unwrap();
    let (row, _) = start(&mut m, &[9, 9]);
    let before = (
        m.check_accounting().unwrap(),
        m.tree().dump_text(),
        m.row_slots(row).unwrap().to_vec(),
    );
    let err = m.alloc_extend(row, 7).unwrap_err();
    assert!(
        matches!(
            err,
            KvError::OutOfMemory {
                needed: 7,
                available: 6
            }
        ),
        "{err:?}"
    );
    let after = (
        m.check_accounting().unwrap(),
        m.tree().dump_text(),
        m.row_slots(row).unwrap().to_vec(),
    );
    assert_eq!(before, after);
}

#[test]
fn flush_is_refused_while_requests_hold_kv() {
    let mut m = manager(1, 16);
    let (row, _) = start(&mut m, &[1, 2, 3]);
    assert_eq!(m.flush(), Err(KvError::Busy { active: 1 }));
    m.cache_finished(row, &[1, 2, 3]).unwrap();
    m.flush().unwrap();
    assert_eq!(m.available_size(), 16);
    assert_eq!(m.tree().total_size(), 0);
    idle_leak_check(&m);
}

#[test]
fn rows_run_out_with_a_typed_error_and_no_lock_left_behind() {
    let mut m = KvCacheManager::new(&ManagerConfig {
        page_size: 1,
        num_pages: 32,
        max_rows: 1,
        max_context: 16,
        disable_radix_cache: false,
        eviction: EvictionPolicy::Lru,
    })
    .unwrap();
    let (x, _) = start(&mut m, &[1, 2, 3]);
    m.cache_unfinished(x, &[1, 2, 3]).unwrap();
    let hit = m_hit(&mut m, &[1, 2, 3, 4]);
    assert_eq!(
        m.admit(Namespace::shared(), hit),
        Err(KvError::NoFreeRow { rows: 1 })
    );
    assert_eq!(
        m.tree().lock_ref(hit.last_node).unwrap(),
        1,
        "only x's lock"
    );
    assert!(matches!(
        m.alloc_extend(x, 14),
        Err(KvError::ContextOverflow { .. })
    ));
    ok(&m);
}

#[test]
fn wrong_token_count_is_refused() {
    let mut m = manager(1, 16);
    let (row, _) = start(&mut m, &[1, 2, 3]);
    assert!(matches!(
        m.cache_finished(row, &[1, 2]),
        Err(KvError::TokenCountMismatch { .. })
    ));
    assert!(matches!(
        m.cache_unfinished(RowId(7), &[1]),
        Err(KvError::UnknownRow(_))
    ));
    ok(&m);
}

#[test]
fn namespaces_do_not_share_kv() {
    let mut m = manager(1, 32);
    let salted = Namespace::salted("tenant-a");
    let p = [1, 2, 3, 4];
    let hit = m.match_request_prefix(&salted, &p, None);
    let row = m.admit(salted.clone(), hit).unwrap();
    m.alloc_extend(row, 4).unwrap();
    m.cache_finished(row, &p).unwrap();
    assert_eq!(m_hit(&mut m, &p).len, 0, "shared namespace sees nothing");
    assert_eq!(m.match_request_prefix(&salted, &p, None).len, 3);
    ok(&m);
}

#[test]
fn capacity_plan_fits_the_budget() {
    let dims = KvDims {
        layers: 30,
        kv_heads: 3,
        head_dim: 64,
        dtype_bytes: 4,
    };
    assert_eq!(dims.bytes_per_token(), 46_080);
    let cap = KvCapacity::plan(dims, 256 << 20, 16).unwrap();
    assert!(cap.bytes <= 256 << 20);
    assert!(
        cap.bytes + 16 * dims.bytes_per_token() > 256 << 20,
        "largest that fits"
    );
    assert_eq!(cap.num_slots, cap.num_pages * 16);
    assert_eq!(cap.storage_slots, cap.num_slots + 16);
    assert!(KvCapacity::plan(dims, 1000, 16).is_err());
    assert!(KvCapacity::plan(dims, 1 << 30, 0).is_err());
}

#[test]
fn eviction_inside_a_free_group_makes_room_at_once() {
    let mut m = manager(1, 8);
    let (x, _) = start(&mut m, &[1, 2, 3, 4, 5, 6]);
    m.cache_finished(x, &[1, 2, 3, 4, 5, 6]).unwrap();
    let (row, _) = start(&mut m, &[9, 9]);
    m.free_group_begin();
    // 0 free slots: the allocation must evict and use the evicted pages in the same call.
    m.alloc_extend(row, 4).unwrap();
    m.free_group_end();
    ok(&m);
}

#[test]
fn alloc_extend_checks_that_the_last_slot_fits_the_prefix() {
    let mut a = SlotAllocator::new(8, 4).unwrap();
    let s = a.alloc_extend(0, 2, None).unwrap();
    // (last + 1) % 4 must equal prefix % 4.
    assert_eq!(
        a.alloc_extend(3, 5, Some(s[1])),
        Err(KvError::InvalidSlot(s[1]))
    );
    assert!(
        a.alloc_extend(2, 5, None).is_err(),
        "a partial page needs its last slot"
    );
    assert_eq!(a.alloc_extend(2, 3, Some(s[1])).unwrap(), vec![s[1] + 1]);
}
