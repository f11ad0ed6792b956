//! SGLang scheduling behaviours (reference cases 50-68 of section (h)) and the router's own
//! guarantees, with the deterministic fake runner.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use router::{
    retract_ratio, retraction_order, AddResult, FinishReason, ForwardMode, Namespace, Plan, Policy,
    PrefillAdder, RouterError, Scheduler, StopConditions,
};

fn tokens(seed: u32, n: usize) -> Vec<u32> {
    (0..n as u32)
        .map(|i| (i.wrapping_mul(7) ^ seed) % 3)
        .collect()
}

#[test]
fn policy_names_parse_and_cache_aware_become_fcfs_without_cache() {
    assert_eq!("lpm".parse::<Policy>().unwrap(), Policy::Lpm);
    assert_eq!("fcfs".parse::<Policy>().unwrap(), Policy::Fcfs);
    assert_eq!("dfs-weight".parse::<Policy>().unwrap(), Policy::DfsWeight);
    assert!("invalid".parse::<Policy>().is_err());
    let mut cfg = config(1, 256);
    cfg.policy = Policy::Lpm;
    cfg.disable_radix_cache = true;
    assert_eq!(Scheduler::new(cfg).unwrap().policy(), Policy::Fcfs);
}

#[test]
fn fcfs_keeps_arrival_order() {
    let mut s = Scheduler::new(config(1, 256)).unwrap();
    for id in [1, 3, 2] {
        s.add_request(req(id, vec![1, 2, 3], 4)).unwrap();
    }
    assert_eq!(s.preview_order(), vec![1, 3, 2]);
}

/// Runs one request to completion so that its prompt (and output) are cached.
fn warm(s: &mut Scheduler, r: &mut FakeRunner, id: u64, prompt: Vec<u32>) {
    s.add_request(req(id, prompt, 1)).unwrap();
    run_to_idle(s, r, 100);
}

#[test]
fn lpm_orders_by_longest_cached_prefix_and_keeps_arrival_order_on_ties() {
    let mut cfg = config(1, 2048);
    cfg.policy = Policy::Lpm;
    let mut s = Scheduler::new(cfg).unwrap();
    let mut r = FakeRunner::default();
    let base: Vec<u32> = (0..100).map(|i| i % 3).collect();
    warm(&mut s, &mut r, 100, base.clone());
    let mut a = base[..50].to_vec();
    a.extend([9; 60]);
    let b = vec![8; 110];
    let mut c = base.clone();
    c.extend([7; 10]);
    let mut d = base[..50].to_vec();
    d.extend([6; 60]);
    s.add_request(req(1, a, 4)).unwrap();
    s.add_request(req(2, b, 4)).unwrap();
    s.add_request(req(3, c, 4)).unwrap();
    s.add_request(req(4, d, 4)).unwrap();
    assert_eq!(s.preview_order(), vec![3, 1, 4, 2]);
}

#[test]
fn lpm_does_not_fall_back_to_fcfs_on_long_queues() {
    let mut cfg = config(1, 8192);
    cfg.policy = Policy::Lpm;
    let mut s = Scheduler::new(cfg).unwrap();
    let mut r = FakeRunner::default();
    let base: Vec<u32> = vec![5; 40];
    warm(&mut s, &mut r, 10_000, base.clone());
    for id in 0..200u64 {
        let mut p = vec![4u32; 8];
        p.push(id as u32 % 3);
        s.add_request(req(id, p, 2)).unwrap();
    }
    let mut hit = base.clone();
    hit.push(1);
    s.add_request(req(500, hit, 2)).unwrap();
    assert_eq!(
        s.preview_order()[0],
        500,
        "the cache hit goes first even with 201 waiting"
    );
}

#[test]
fn in_batch_prefix_caching_defers_sharers_of_an_uncached_prefix() {
    let mut cfg = config(1, 2048);
    cfg.policy = Policy::Lpm;
    let mut s = Scheduler::new(cfg).unwrap();
    let shared = tokens(1, 64);
    for id in 1..=3u64 {
        let mut p = shared.clone();
        p.extend([id as u32 + 3; 4]);
        s.add_request(req(id, p, 2)).unwrap();
    }
    s.add_request(req(4, vec![9; 20], 2)).unwrap();
    assert_eq!(s.preview_order(), vec![1, 4, 2, 3]);
}

#[test]
fn in_batch_prefix_caching_ignores_short_shared_prefixes() {
    let mut cfg = config(1, 2048);
    cfg.policy = Policy::Lpm;
    let mut s = Scheduler::new(cfg).unwrap();
    let shared = tokens(1, 20);
    for id in 1..=3u64 {
        let mut p = shared.clone();
        p.extend([id as u32 + 3; 4]);
        s.add_request(req(id, p, 2)).unwrap();
    }
    s.add_request(req(4, vec![9; 20], 2)).unwrap();
    assert_eq!(s.preview_order(), vec![1, 2, 3, 4]);
}

#[test]
fn dfs_weight_visits_heaviest_subtrees_first_and_parents_after_children() {
    let mut cfg = config(1, 4096);
    cfg.policy = Policy::DfsWeight;
    cfg.in_batch_prefix_check = None;
    let mut s = Scheduler::new(cfg).unwrap();
    let mut r = FakeRunner::default();
    // Tree: a = [1;10], b = a + [2;10], c = a + [3;10].
    let a = vec![1u32; 10];
    let mut b = a.clone();
    b.extend([2; 10]);
    let mut c = a.clone();
    c.extend([3; 10]);
    warm(&mut s, &mut r, 100, b.clone());
    warm(&mut s, &mut r, 101, c.clone());
    let with = |mut p: Vec<u32>, t: u32| {
        p.extend([t, t]);
        p
    };
    s.add_request(req(1, with(a.clone(), 9), 2)).unwrap(); // at a
    s.add_request(req(2, with(c.clone(), 9), 2)).unwrap(); // at c
    s.add_request(req(3, with(b.clone(), 8), 2)).unwrap(); // at b
    s.add_request(req(4, vec![7, 7, 7], 2)).unwrap(); // at root
    s.add_request(req(5, with(b.clone(), 9), 2)).unwrap(); // at b
    let order = s.preview_order();
    assert_eq!(order.len(), 5);
    let pos = |id: u64| order.iter().position(|&x| x == id).unwrap();
    assert!(
        pos(3) < pos(2) && pos(5) < pos(2),
        "b (weight 2) before c (weight 1): {order:?}"
    );
    assert!(pos(2) < pos(1), "children before their parent: {order:?}");
    assert_eq!(
        *order.last().unwrap(),
        4,
        "root's own requests last: {order:?}"
    );
}

#[test]
fn lof_orders_by_max_new_tokens_descending() {
    let mut cfg = config(1, 2048);
    cfg.policy = Policy::Lof;
    let mut s = Scheduler::new(cfg).unwrap();
    s.add_request(req(1, vec![1, 2], 10)).unwrap();
    s.add_request(req(2, vec![1, 2], 100)).unwrap();
    s.add_request(req(3, vec![1, 2], 50)).unwrap();
    assert_eq!(s.preview_order(), vec![2, 3, 1]);
}

#[test]
fn budget_rejects_when_future_reservations_exceed_the_pool() {
    let mut a = PrefillAdder::new(1, 0.7, 4096, [], 16384, None);
    assert_eq!(a.precheck(100, 200, 1000), None);
    assert_eq!(a.plan(100, 200, 1000), Plan::Whole);
    assert_eq!(a.reserved_tokens(), 300.0);
    assert_eq!(a.precheck(100, 700, 1000), Some(AddResult::NoToken));
}

#[test]
fn running_requests_reserve_clipped_decode_tokens() {
    let a = PrefillAdder::new(1, 0.7, 4096, [(1000, 100)], 16384, None);
    assert!((a.reserved_tokens() - 630.0).abs() < 1e-9);
    let b = PrefillAdder::new(1, 0.7, 4096, [(10000, 0)], 16384, None);
    assert!((b.reserved_tokens() - 2867.2).abs() < 1e-6);
}

#[test]
fn first_request_may_exceed_max_prefill_tokens() {
    let mut a = PrefillAdder::new(1, 0.7, 4096, [], 100, None);
    assert_eq!(a.precheck(500, 10, 100_000), None);
    assert_eq!(a.plan(500, 10, 100_000), Plan::Whole);
    assert_eq!(a.budget_state(100_000), AddResult::Other);
    assert_eq!(a.precheck(10, 10, 100_000), Some(AddResult::Other));
}

#[test]
fn chunked_prefill_budget_splits_a_long_prompt() {
    let mut a = PrefillAdder::new(1, 0.7, 4096, [], 16384, Some(256));
    assert_eq!(a.plan(1000, 50, 100_000), Plan::Chunk(256));
    assert_eq!(
        a.reserved_tokens(),
        256.0,
        "no decode reservation for a chunk"
    );
    assert_eq!(a.budget_state(100_000), AddResult::Other);
    let mut left = 1000 - 256;
    let mut chunks = vec![256];
    while left > 0 {
        let mut next = PrefillAdder::new(1, 0.7, 4096, [], 16384, Some(256));
        let n = next.add_chunked(left, 50, 100_000);
        if n == left {
            assert_eq!(
                next.reserved_tokens(),
                (n + 50) as f64,
                "last chunk reserves max_new"
            );
        }
        chunks.push(n);
        left -= n;
    }
    assert_eq!(chunks, vec![256, 256, 256, 232]);
}

#[test]
fn paged_chunks_are_page_aligned() {
    let mut a = PrefillAdder::new(16, 0.7, 4096, [], 16384, Some(100));
    assert_eq!(a.plan(1000, 10, 100_000), Plan::Chunk(96));
    let mut b = PrefillAdder::new(16, 0.7, 4096, [], 16384, Some(10));
    assert_eq!(b.plan(1000, 10, 100_000), Plan::Reject(AddResult::Other));
}

#[test]
fn retraction_takes_fewest_outputs_first_and_longest_prompt_on_ties() {
    // A(5,100), B(1,50), C(1,200), D(9,10)
    let order = retraction_order(&[(5, 100), (1, 50), (1, 200), (9, 10)]);
    assert_eq!(&order[..2], &[2, 1]);
}

#[test]
fn retraction_ratio_formula() {
    let r = retract_ratio(30, 2, 20, 200);
    assert!((r - 70.0 / 201.0).abs() < 1e-12);
    assert_eq!(retract_ratio(1000, 2, 20, 10), 1.0);
}

#[test]
fn prefix_skip_computes_only_the_uncached_suffix() {
    let mut s = Scheduler::new(config(1, 512)).unwrap();
    let mut r = FakeRunner {
        record: true,
        ..FakeRunner::default()
    };
    warm(&mut s, &mut r, 1, vec![1, 2, 3]);
    r.batches.clear();
    s.add_request(req(2, vec![1, 2, 3, 4, 5], 1)).unwrap();
    let out = run_to_idle(&mut s, &mut r, 10);
    let b = &r.batches[0];
    assert_eq!(b.mode, ForwardMode::Extend);
    let seq = &b.seqs[0];
    assert_eq!(seq.token_ids, vec![4, 5]);
    assert_eq!(seq.positions, vec![3, 4]);
    assert_eq!(seq.slot_row.len(), 5);
    assert_eq!(&seq.slot_row[3..], &seq.out_slots[..]);
    assert_eq!(out[&2].cached, 3);
    assert_eq!(
        out[&2].tokens,
        reference(&[1, 2, 3, 4, 5], &req(2, vec![], 1).stop)
    );
}

#[test]
fn decode_writes_one_slot_at_the_next_position() {
    let mut s = Scheduler::new(config(1, 512)).unwrap();
    let mut r = FakeRunner {
        record: true,
        ..FakeRunner::default()
    };
    s.add_request(req(1, vec![1, 2, 3, 4, 5], 3)).unwrap();
    run_to_idle(&mut s, &mut r, 10);
    let d = &r.batches[1];
    assert_eq!(d.mode, ForwardMode::Decode);
    assert_eq!(d.seqs[0].positions, vec![5]);
    assert_eq!(d.seqs[0].slot_row.len(), 6);
}

#[test]
fn identical_prompt_hits_all_but_the_last_token() {
    let mut s = Scheduler::new(config(1, 512)).unwrap();
    let mut r = FakeRunner::default();
    let p = tokens(3, 12);
    s.add_request(req(1, p.clone(), 1)).unwrap();
    let first = run_to_idle(&mut s, &mut r, 10);
    assert_eq!(first[&1].cached, 0);
    assert_eq!(first[&1].finish.as_deref(), Some("length"));
    s.add_request(req(2, p.clone(), 1)).unwrap();
    let second = run_to_idle(&mut s, &mut r, 10);
    assert_eq!(second[&2].cached, p.len() - 1);
    assert_eq!(second[&2].tokens, first[&1].tokens);
}

#[test]
fn paged_identical_prompt_hits_whole_pages() {
    let mut s = Scheduler::new(config(4, 128)).unwrap();
    let mut r = FakeRunner::default();
    let p = tokens(3, 11);
    s.add_request(req(1, p.clone(), 1)).unwrap();
    run_to_idle(&mut s, &mut r, 10);
    s.add_request(req(2, p.clone(), 1)).unwrap();
    let second = run_to_idle(&mut s, &mut r, 10);
    assert_eq!(second[&2].cached, 8, "floor((11 - 1) / 4) * 4");
}

#[test]
fn chunked_prefill_counts_no_cache_hit_for_own_chunks() {
    let mut cfg = config(1, 512);
    cfg.chunked_prefill_size = Some(4);
    let mut s = Scheduler::new(cfg).unwrap();
    let mut r = FakeRunner {
        record: true,
        ..FakeRunner::default()
    };
    let p = tokens(5, 10);
    s.add_request(req(1, p.clone(), 3)).unwrap();
    let out = run_to_idle(&mut s, &mut r, 20);
    let extend_sizes: Vec<usize> = r
        .batches
        .iter()
        .filter(|b| b.mode == ForwardMode::Extend)
        .map(|b| b.seqs[0].token_ids.len())
        .collect();
    assert_eq!(extend_sizes, vec![4, 4, 2]);
    assert_eq!(out[&1].cached, 0);
    assert_eq!(out[&1].tokens, reference(&p, &req(1, vec![], 3).stop));
}

#[test]
fn abort_of_a_queued_request_touches_no_kv() {
    let mut s = Scheduler::new(config(1, 512)).unwrap();
    s.add_request(req(1, vec![1, 2, 3], 3)).unwrap();
    let before = s.check_invariants().unwrap();
    assert!(s.abort(1, "client went away"));
    let events = s.take_events();
    assert!(matches!(
        &events[0],
        router::Event::Finished {
            id: 1,
            reason: FinishReason::Abort { .. },
            ..
        }
    ));
    assert_eq!(s.check_invariants().unwrap(), before);
    assert!(s.is_idle());
    assert!(!s.abort(1, "again"), "unknown ids are reported");
}

#[test]
fn abort_of_a_running_request_caches_its_computed_kv() {
    let mut s = Scheduler::new(config(1, 512)).unwrap();
    let mut r = FakeRunner::default();
    let p = tokens(7, 16);
    s.add_request(req(1, p.clone(), 50)).unwrap();
    s.step(&mut r).unwrap();
    s.step(&mut r).unwrap();
    assert!(s.abort(1, "stop"));
    let mut out = std::collections::HashMap::new();
    s.step(&mut r).unwrap();
    collect(&mut s, &mut out);
    assert_eq!(out[&1].finish.as_deref(), Some("abort"));
    assert!(s.is_idle());
    s.check_invariants().unwrap();
    s.add_request(req(2, p.clone(), 1)).unwrap();
    let again = run_to_idle(&mut s, &mut r, 10);
    assert!(again[&2].cached > 0);
}

#[test]
fn flush_only_when_idle() {
    let mut s = Scheduler::new(config(1, 512)).unwrap();
    let mut r = FakeRunner::default();
    s.add_request(req(1, vec![1, 2, 3, 4], 5)).unwrap();
    s.step(&mut r).unwrap();
    assert!(matches!(s.flush_cache(), Err(RouterError::Busy(1))));
    run_to_idle(&mut s, &mut r, 20);
    s.flush_cache().unwrap();
    s.add_request(req(2, vec![1, 2, 3, 4], 1)).unwrap();
    let out = run_to_idle(&mut s, &mut r, 20);
    assert_eq!(out[&2].cached, 0);
}

#[test]
fn bad_requests_are_refused_and_change_nothing() {
    let mut cfg = config(1, 64);
    cfg.context_length = 32;
    let mut s = Scheduler::new(cfg).unwrap();
    assert!(matches!(
        s.add_request(req(1, vec![], 3)),
        Err(RouterError::InvalidRequest(_))
    ));
    assert!(matches!(
        s.add_request(req(1, vec![1; 30], 3)),
        Err(RouterError::TooLong {
            prompt_tokens: 30,
            limit: 32,
            ..
        })
    ));
    let mut bad = req(1, vec![1], 3);
    bad.sampling.top_p = 0.0;
    assert!(matches!(
        s.add_request(bad),
        Err(RouterError::InvalidRequest(_))
    ));
    s.add_request(req(1, vec![1], 3)).unwrap();
    assert!(matches!(
        s.add_request(req(1, vec![2], 3)),
        Err(RouterError::DuplicateId(1))
    ));
    assert_eq!(s.num_waiting(), 1);
}

/// Runs one request (prompt `[1, 2, 3]`, at most 8 new tokens) against a model whose outputs
/// are `script`, and returns what it generated and why it finished.
fn run_scripted(
    script: &[u32],
    edit: impl FnOnce(&mut StopConditions),
) -> (Vec<u32>, FinishReason) {
    let mut s = Scheduler::new(config(1, 512)).unwrap();
    let mut r = FakeRunner {
        script: Some(script.to_vec()),
        ..FakeRunner::default()
    };
    let mut q = req(1, vec![1, 2, 3], 8);
    q.stop.ignore_eos = false;
    edit(&mut q.stop);
    s.add_request(q).unwrap();
    let (mut tokens, mut finish) = (Vec::new(), None);
    for _ in 0..20 {
        s.step(&mut r).unwrap();
        for e in s.take_events() {
            match e {
                router::Event::Token { token, .. } => tokens.push(token),
                router::Event::Finished { reason, .. } => finish = Some(reason),
                router::Event::Prompt { .. } | router::Event::Progress { .. } => {}
            }
        }
        if s.is_idle() {
            return (
                tokens,
                finish.expect("an idle scheduler reported the finish"),
            );
        }
    }
    panic!("the request did not finish");
}

fn stopped_by(token: u32) -> FinishReason {
    FinishReason::Stop {
        token: Some(token),
        text: None,
    }
}

#[test]
fn stop_tokens_eos_and_min_new_tokens() {
    // A stop token taken from the unscripted model's own run ends generation there.
    let mut s = Scheduler::new(config(1, 512)).unwrap();
    let mut r = FakeRunner::default();
    let p = tokens(11, 6);
    let free_run = reference(&p, &req(0, vec![], 40).stop);
    let stop_tok = free_run[3];
    let mut q = req(1, p.clone(), 40);
    q.stop.stop_token_ids = vec![stop_tok];
    q.stop.ignore_eos = false;
    let expect = reference(&p, &q.stop);
    s.add_request(q).unwrap();
    let out = run_to_idle(&mut s, &mut r, 100);
    assert_eq!(out[&1].tokens, expect);
    assert_eq!(out[&1].finish.as_deref(), Some("stop"));
    assert_eq!(*out[&1].tokens.last().unwrap(), stop_tok);

    // EOS ends generation, whether sampled by the prefill or by a decode step.
    assert_eq!(run_scripted(&[EOS], |_| {}), (vec![EOS], stopped_by(EOS)));
    assert_eq!(
        run_scripted(&[4, 5, EOS, 6], |_| {}),
        (vec![4, 5, EOS], stopped_by(EOS))
    );

    // min_new_tokens 3: EOS as token 1 or 2 is ignored; as token 3 (no fewer than three
    // generated) it ends generation.
    let min3 = |st: &mut StopConditions| st.min_new_tokens = 3;
    assert_eq!(
        run_scripted(&[EOS, EOS, EOS, 4], min3),
        (vec![EOS, EOS, EOS], stopped_by(EOS))
    );
    assert_eq!(
        run_scripted(&[4, EOS, 5, 6, EOS, 7], min3),
        (vec![4, EOS, 5, 6, EOS], stopped_by(EOS))
    );

    // stop_token_ids likewise.
    let stop9 = |st: &mut StopConditions| {
        st.stop_token_ids = vec![9];
        st.min_new_tokens = 3;
    };
    assert_eq!(
        run_scripted(&[9, EOS, 4, 9, 5], stop9),
        (vec![9, EOS, 4, 9], stopped_by(9))
    );
    // ignore_eos turns off every token-based stop, stop_token_ids included (SGLang's
    // `_check_token_based_finish` returns at once under ignore_eos).
    let ignore_all = |st: &mut StopConditions| {
        st.stop_token_ids = vec![9];
        st.ignore_eos = true;
    };
    assert_eq!(
        run_scripted(&[9; 8], ignore_all),
        (vec![9; 8], FinishReason::Length { length: 8 })
    );

    // ignore_eos: EOS never ends generation; max_new_tokens does.
    assert_eq!(
        run_scripted(&[EOS; 8], |st| st.ignore_eos = true),
        (vec![EOS; 8], FinishReason::Length { length: 8 })
    );
}

#[test]
fn a_failed_forward_aborts_its_requests_and_frees_their_kv() {
    let mut s = Scheduler::new(config(1, 512)).unwrap();
    let mut r = FakeRunner {
        fail_on_call: Some(2),
        ..FakeRunner::default()
    };
    s.add_request(req(1, tokens(1, 8), 5)).unwrap();
    s.add_request(req(2, tokens(2, 8), 5)).unwrap();
    s.step(&mut r).unwrap();
    let report = s.step(&mut r).unwrap().unwrap();
    assert!(report.error.is_some());
    let mut out = std::collections::HashMap::new();
    collect(&mut s, &mut out);
    assert_eq!(out[&1].finish.as_deref(), Some("abort"));
    assert!(s.is_idle());
    s.check_invariants().unwrap();
    assert_eq!(
        s.kv().tree().total_size(),
        16,
        "prefill KV was cached before the failure"
    );
}

#[test]
fn retraction_under_memory_pressure_preserves_outputs() {
    // 4 requests whose decode cannot all fit: some are retracted and re-run.
    let mut cfg = config(1, 48);
    cfg.max_running_requests = 4;
    cfg.schedule_conservativeness = 0.01;
    let mut s = Scheduler::new(cfg).unwrap();
    let mut r = FakeRunner::default();
    let prompts: Vec<Vec<u32>> = (0..4).map(|i| tokens(20 + i, 8)).collect();
    for (i, p) in prompts.iter().enumerate() {
        s.add_request(req(i as u64, p.clone(), 12)).unwrap();
    }
    let out = run_to_idle(&mut s, &mut r, 500);
    assert!(
        s.counters().retractions > 0,
        "the pool was meant to force retraction"
    );
    for (i, p) in prompts.iter().enumerate() {
        assert_eq!(
            out[&(i as u64)].tokens,
            reference(p, &req(0, vec![], 12).stop),
            "request {i}"
        );
    }
}

#[test]
fn namespaces_never_share_cached_prefixes() {
    let mut s = Scheduler::new(config(1, 512)).unwrap();
    let mut r = FakeRunner::default();
    let p = tokens(9, 12);
    s.add_request(req_ns(1, p.clone(), 1, Namespace::salted("a")))
        .unwrap();
    run_to_idle(&mut s, &mut r, 10);
    s.add_request(req_ns(2, p.clone(), 1, Namespace::salted("b")))
        .unwrap();
    s.add_request(req_ns(3, p.clone(), 1, Namespace::salted("a")))
        .unwrap();
    let out = run_to_idle(&mut s, &mut r, 10);
    assert_eq!(out[&2].cached, 0);
    assert_eq!(out[&3].cached, 11);
}

#[test]
fn lpm_aging_bounds_the_wait_of_a_cache_miss() {
    // A steady stream of cache hits must not starve a miss forever.
    let mut cfg = config(1, 4096);
    cfg.policy = Policy::Lpm;
    cfg.max_running_requests = 2;
    cfg.max_wait_rounds = 5;
    cfg.in_batch_prefix_check = None;
    let mut s = Scheduler::new(cfg).unwrap();
    let mut r = FakeRunner::default();
    let hot = vec![1u32; 64];
    warm(&mut s, &mut r, 9_999, hot.clone());
    s.add_request(req(0, vec![2; 8], 2)).unwrap(); // the miss
    let mut next = 1u64;
    let mut admitted_at = None;
    for round in 0..200 {
        // Keep the queue full of hits.
        while s.num_waiting() < 6 {
            let mut p = hot.clone();
            p.push((next % 3) as u32);
            s.add_request(req(next, p, 2)).unwrap();
            next += 1;
        }
        s.step(&mut r).unwrap();
        if !s.waiting_ids().contains(&0) {
            admitted_at = Some(round);
            break;
        }
    }
    let rounds = admitted_at.expect("the cache miss was never admitted");
    // Each step is at most one prefill round; the bound is max_wait_rounds prefill rounds plus
    // the decode steps of the (bounded) running batch in between.
    assert!(rounds <= 5 * 4, "admitted after {rounds} steps");
}

#[test]
fn retraction_ties_retract_the_later_arrival_first() {
    let order = retraction_order(&[(1, 50), (1, 50)]);
    assert_eq!(order[0], 1);
}

#[test]
fn a_request_filling_the_whole_pool_is_refused_up_front() {
    let mut s = Scheduler::new(config(1, 32)).unwrap();
    assert!(matches!(
        s.add_request(req(1, vec![1; 16], 16)),
        Err(RouterError::TooLong {
            prompt_tokens: 16,
            limit: 31,
            ..
        })
    ));
    s.add_request(req(2, vec![1; 16], 15)).unwrap();
    let mut r = FakeRunner::default();
    let out = run_to_idle(&mut s, &mut r, 100);
    assert_eq!(out[&2].tokens.len(), 15);
}

#[test]
fn chunk_size_below_the_page_size_is_a_configuration_error() {
    let mut cfg = config(16, 64);
    cfg.chunked_prefill_size = Some(8);
    assert!(matches!(Scheduler::new(cfg), Err(RouterError::Config(_))));
}

#[test]
fn cached_tokens_stay_frozen_after_a_retraction() {
    // Request 1's 10-token prompt is computed in chunks of 4: at its admission it finds nothing
    // cached (cached_tokens 0) and has computed 4 tokens itself (SGLang's `already_computed`).
    // Decoding next to request 0 then runs out of memory and request 1 (as many outputs, the
    // longer prompt) is retracted. Its prompt stays cached (no eviction for the survivor), so
    // its re-admission hits all 10 prompt tokens: without the freeze, cached_tokens would grow
    // by 10 - 4 = 6.
    let mut cfg = config(1, 24);
    cfg.max_running_requests = 2;
    cfg.chunked_prefill_size = Some(4);
    cfg.schedule_conservativeness = 0.01;
    cfg.retract_decode_steps = 0;
    let mut s = Scheduler::new(cfg).unwrap();
    let mut r = FakeRunner::default();
    // Distinct first tokens: neither request can hit the other's prefix.
    let p0 = [vec![10], tokens(50, 3)].concat();
    let p1 = [vec![11], tokens(51, 9)].concat();
    s.add_request(req(0, p0.clone(), 8)).unwrap();
    s.add_request(req(1, p1.clone(), 8)).unwrap();
    let mut out = std::collections::HashMap::new();
    let mut readmission_hit = None;
    for _ in 0..100 {
        let report = s.step(&mut r).unwrap().unwrap();
        collect(&mut s, &mut out);
        let readmitted = s.counters().retractions > 0 && !s.waiting_ids().contains(&1);
        if readmitted && readmission_hit.is_none() {
            readmission_hit = Some(report.tokens_cached);
        }
        if s.is_idle() {
            break;
        }
    }
    assert!(s.is_idle());
    assert_eq!(s.counters().retractions, 1);
    assert_eq!(
        readmission_hit,
        Some(10),
        "request 1 was re-admitted over its own cached prompt"
    );
    assert_eq!(
        s.counters().prefix_hit_tokens,
        10,
        "first admissions hit nothing"
    );
    assert_eq!(out[&1].cached, 0, "cached_tokens frozen at its first value");
    assert_eq!(out[&0].cached, 0);
    assert_eq!(out[&0].tokens, reference(&p0, &req(0, vec![], 8).stop));
    assert_eq!(out[&1].tokens, reference(&p1, &req(1, vec![], 8).stop));
}

#[test]
fn a_live_batch_retracts_fewest_outputs_first_then_longest_prompt() {
    // Three requests decode together: 0 (12-token prompt) was admitted two decode steps before
    // 1 (9 tokens) and 2 (6 tokens), which were admitted one round apart before any decode.
    // When the pool runs out, 1 and 2 have the fewest outputs and 1 the longer prompt: 1 is
    // retracted, though 0 holds the longest prompt and 2 arrived last. Freeing it is enough for
    // the other two.
    let mut cfg = config(1, 60);
    cfg.max_running_requests = 3;
    cfg.schedule_conservativeness = 0.01;
    cfg.chunked_prefill_size = None;
    cfg.retract_decode_steps = 2;
    let mut s = Scheduler::new(cfg).unwrap();
    let mut r = FakeRunner::default();
    let prompts = [tokens(60, 12), tokens(61, 9), tokens(62, 6)];
    let mut out = std::collections::HashMap::new();
    s.add_request(req(0, prompts[0].clone(), 30)).unwrap();
    for _ in 0..3 {
        s.step(&mut r).unwrap(); // prefill, then two decodes
    }
    for id in [1, 2] {
        s.add_request(req(id, prompts[id as usize].clone(), 30))
            .unwrap();
        let report = s.step(&mut r).unwrap().unwrap();
        assert_eq!((report.mode, report.batch_size), (ForwardMode::Extend, 1));
    }
    collect(&mut s, &mut out);
    let report = loop {
        let before: Vec<(usize, usize)> = (0..3u64)
            .map(|id| (out[&id].tokens.len(), prompts[id as usize].len()))
            .collect();
        let report = s.step(&mut r).unwrap().unwrap();
        collect(&mut s, &mut out);
        if report.retracted > 0 {
            assert_eq!(before, vec![(13, 12), (11, 9), (11, 6)]);
            assert_eq!(retraction_order(&before)[0], 1, "the helper agrees");
            break report;
        }
        assert_eq!(report.mode, ForwardMode::Decode);
    };
    assert_eq!(report.retracted, 1);
    assert_eq!(s.waiting_ids(), vec![1]);
    assert_eq!(report.batch_size, 2, "the survivors decode this step");
    // SGLang: min(1, (tokens the survivors decoded + steps * survivors) / (their max_new + 1)).
    let expected = retract_ratio(13 + 11, 2, 2, 30 + 30);
    assert!((expected - 28.0 / 61.0).abs() < 1e-12);
    assert!(
        (s.new_token_ratio() - expected).abs() < 1e-12,
        "{}",
        s.new_token_ratio()
    );
    let rest = run_to_idle(&mut s, &mut r, 500);
    for (id, p) in prompts.iter().enumerate() {
        let id = id as u64;
        let mut all = out[&id].tokens.clone();
        all.extend(rest.get(&id).map_or(&[][..], |o| &o.tokens[..]));
        assert_eq!(all, reference(p, &req(id, vec![], 30).stop), "request {id}");
    }
}

#[test]
fn new_token_ratio_starts_at_0_7_and_decays_per_decode_step() {
    let mut s = Scheduler::new(config(1, 512)).unwrap();
    assert!((s.new_token_ratio() - 0.7).abs() < 1e-12);
    let mut r = FakeRunner::default();
    s.add_request(req(1, vec![1, 2, 3], 3)).unwrap();
    s.step(&mut r).unwrap(); // prefill
    s.step(&mut r).unwrap(); // decode
    let decay = (0.7 - 0.7 * 0.14) / 600.0;
    assert!((s.new_token_ratio() - (0.7 - decay)).abs() < 1e-12);
    let mut cfg = config(1, 512);
    cfg.schedule_conservativeness = 2.0;
    assert_eq!(
        Scheduler::new(cfg).unwrap().new_token_ratio(),
        1.0,
        "clipped at 1"
    );
}

#[test]
fn retracted_requests_rejoin_the_queue_behind_waiting_ones() {
    let mut cfg = config(1, 48);
    cfg.max_running_requests = 4;
    cfg.schedule_conservativeness = 0.01;
    let mut s = Scheduler::new(cfg).unwrap();
    let mut r = FakeRunner::default();
    for i in 0..4u32 {
        let mut p = vec![10 + i];
        p.extend(tokens(40 + i, 7));
        s.add_request(req(i as u64, p, 12)).unwrap();
    }
    s.step(&mut r).unwrap();
    s.add_request(req(99, vec![9, 9, 9], 2)).unwrap();
    for _ in 0..100 {
        s.step(&mut r).unwrap();
        if s.counters().retractions > 0 {
            let ids = s.waiting_ids();
            assert_eq!(
                ids[0], 99,
                "the request that was already waiting stays first: {ids:?}"
            );
            assert!(ids.len() > 1);
            return;
        }
    }
    panic!("no retraction happened");
}

#[test]
fn stop_tokens_and_eos_are_banned_from_sampling_until_min_new_tokens() {
    let mut s = Scheduler::new(config(1, 512)).unwrap();
    let mut r = FakeRunner {
        record: true,
        ..FakeRunner::default()
    };
    let mut q = req(1, tokens(3, 4), 6);
    q.stop.min_new_tokens = 3;
    q.stop.stop_token_ids = vec![9];
    q.stop.ignore_eos = false;
    s.add_request(q).unwrap();
    let out = run_to_idle(&mut s, &mut r, 100);
    let n = out[&1].tokens.len();
    assert!(n >= 3, "at least min_new_tokens tokens: {:?}", out[&1]);
    // One sampling step per output token, in order: the first three may not pick 9 or EOS.
    let banned: Vec<Vec<router::Token>> = r
        .batches
        .iter()
        .flat_map(|b| b.seqs.iter().filter(|s| s.sample))
        .map(|s| s.sampling.banned_tokens.clone())
        .collect();
    assert_eq!(banned.len(), n, "one sampling step per output token");
    let eos = config(1, 512).eos_token_ids;
    for (i, b) in banned.iter().enumerate() {
        if i < 3 {
            assert!(b.contains(&9), "step {i}: {b:?}");
            assert!(eos.iter().all(|e| b.contains(e)), "step {i}: {b:?}");
        } else {
            assert!(b.is_empty(), "step {i}: {b:?}");
        }
    }
}
