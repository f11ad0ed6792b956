//! Admission that computes a shared uncached prompt prefix once per batch (beyond SGLang,
//! whose FCFS admits every request and computes the prefix once per request).

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use router::{Namespace, Scheduler, SchedulerConfig};

/// A 100-token system prompt, then a three-token question (the fake model's vocabulary has
/// 16 tokens).
fn prompt(q: u32) -> Vec<u32> {
    let mut p: Vec<u32> = (0..100).map(|i| i % 7).collect();
    p.extend([8 + q, 14, 8 + q]);
    p
}

/// Every request's outcome, by id.
type Outcomes = Vec<(u64, Outcome)>;

/// Queues four requests on one uncached system prompt (the last in namespace `last_ns`) and
/// returns the first two steps' (batch size, tokens computed), then every outcome.
fn four_on_one_prompt(cfg: SchedulerConfig, last_ns: Namespace) -> (Vec<(usize, usize)>, Outcomes) {
    let mut s = Scheduler::new(cfg).unwrap();
    let mut r = FakeRunner::default();
    for id in 1..=3 {
        s.add_request(req(id, prompt(id as u32), 2)).unwrap();
    }
    s.add_request(req_ns(4, prompt(4), 2, last_ns)).unwrap();
    let steps = (0..2)
        .map(|_| {
            let rep = s.step(&mut r).unwrap().unwrap();
            assert_eq!(rep.error, None);
            (rep.batch_size, rep.tokens_computed)
        })
        .collect();
    let mut out: Vec<(u64, Outcome)> = run_to_idle(&mut s, &mut r, 50).into_iter().collect();
    out.sort_by_key(|(id, _)| *id);
    (steps, out)
}

#[test]
fn requests_on_one_uncached_prompt_compute_it_once_and_get_the_same_tokens() {
    let shared = Namespace::shared();
    let (deferring, out) = four_on_one_prompt(config(1, 2048), shared.clone());
    // Step 1: the first request alone (the batch computes the prompt once); step 2: the
    // other three find 100 tokens cached and compute their questions only.
    assert_eq!(deferring, vec![(1, 103), (3, 9)]);
    let mut sglang = config(1, 2048);
    sglang.defer_shared_prefill = None;
    let (together, out_sglang) = four_on_one_prompt(sglang, shared);
    assert_eq!(
        together[0],
        (4, 4 * 103),
        "SGLang's FCFS computes it four times"
    );
    let tokens = |o: &[(u64, Outcome)]| -> Vec<Vec<u32>> {
        o.iter().map(|(_, o)| o.tokens.clone()).collect()
    };
    assert_eq!(
        tokens(&out),
        tokens(&out_sglang),
        "only the admission order differs"
    );
}

#[test]
fn another_namespace_or_a_disabled_cache_is_not_deferred() {
    let (steps, _) = four_on_one_prompt(config(1, 2048), Namespace::salted("tenant-b"));
    assert_eq!(
        steps[0],
        (2, 2 * 103),
        "the other tenant's request cannot share the prefix"
    );
    let mut no_cache = config(1, 2048);
    no_cache.disable_radix_cache = true;
    let (steps, _) = four_on_one_prompt(no_cache, Namespace::shared());
    assert_eq!(
        steps[0],
        (4, 4 * 103),
        "nothing would be found cached next round"
    );
}

#[test]
fn a_long_queue_on_one_prompt_is_not_scanned_whole_each_round() {
    let mut s = Scheduler::new(SchedulerConfig {
        max_running_requests: 200,
        ..config(1, 8192)
    })
    .unwrap();
    let mut r = FakeRunner::default();
    for id in 1..=150 {
        s.add_request(req(id, prompt(id as u32 % 4), 1)).unwrap();
    }
    // Request 1 computes the prompt; the next 64 are passed over and admission stops there,
    // so a request past them that shares nothing waits for the next round.
    s.add_request(req(151, vec![7; 40], 1)).unwrap();
    let first = s.step(&mut r).unwrap().unwrap();
    assert_eq!((first.batch_size, first.tokens_computed), (1, 103));
    // Next round the prompt is cached: the others and request 151 are admitted.
    let second = s.step(&mut r).unwrap().unwrap();
    assert_eq!(second.batch_size, 150);
    let out = run_to_idle(&mut s, &mut r, 50);
    assert_eq!(out.len(), 151, "every request finishes");
}
