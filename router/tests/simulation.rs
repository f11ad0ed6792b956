//! Randomised end-to-end simulation of the control plane with the fake runner: random arrivals
//! of requests with shared prefixes, a tiny KV pool, every policy, page sizes 1 and 16, chunking
//! on and off, random aborts. Every request must finish or be aborted; outputs must equal the
//! same request run alone with the cache disabled (an aborted one's output a prefix of it); the
//! accounting is checked after every step (the scheduler's `check_invariants`) and must be exact
//! when idle.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use proptest::prelude::*;
use router::{Policy, Req, Scheduler};
use std::collections::HashMap;

/// Runs `r` alone in a fresh scheduler with the radix cache disabled.
fn alone(r: &Req, page_size: usize) -> Vec<u32> {
    let mut cfg = config(page_size, 4096 / page_size);
    cfg.disable_radix_cache = true;
    let mut s = Scheduler::new(cfg).unwrap();
    let mut runner = FakeRunner::default();
    s.add_request(r.clone()).unwrap();
    run_to_idle(&mut s, &mut runner, 1000)[&r.id].tokens.clone()
}

fn simulate(
    seed: u64,
    policy: Policy,
    page_size: usize,
    chunk: Option<usize>,
    n: usize,
) -> router::Counters {
    let mut rng = seed;
    let mut next = move |m: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % m.max(1)
    };
    let mut cfg = config(page_size, if page_size == 1 { 100 } else { 7 });
    cfg.policy = policy;
    cfg.chunked_prefill_size = chunk;
    cfg.max_running_requests = 4;
    cfg.max_prefill_tokens = 64;
    cfg.max_wait_rounds = 8;
    cfg.seed = seed;
    // Half the runs reserve almost nothing for decoding, so memory runs out mid-decode.
    cfg.schedule_conservativeness = if seed % 2 == 1 { 0.02 } else { 1.0 };
    // MIXED steps in half the runs; prefill deferral off, on, or eager (8 shared tokens).
    cfg.enable_mixed_chunk = seed % 4 >= 2;
    cfg.defer_shared_prefill = [None, Some(32), Some(8)][(seed / 4 % 3) as usize];
    let mut s = Scheduler::new(cfg).unwrap();
    let mut runner = FakeRunner::default();
    let bases: Vec<Vec<u32>> = (0..3)
        .map(|_| (0..10 + next(30)).map(|_| next(3) as u32).collect())
        .collect();
    let mut reqs: Vec<Req> = Vec::new();
    for id in 0..n as u64 {
        let base = &bases[next(3) as usize];
        let mut prompt = base[..next(base.len() as u64 + 1) as usize].to_vec();
        prompt.extend((0..1 + next(12)).map(|_| next(3) as u32));
        let mut r = req(id, prompt, 1 + next(16) as usize);
        r.stop.ignore_eos = next(2) == 0;
        reqs.push(r);
    }
    let mut pending = reqs.clone();
    pending.reverse();
    let mut out: HashMap<u64, Outcome> = HashMap::new();
    let mut aborted = Vec::new();
    let mut steps = 0;
    while !(pending.is_empty() && s.is_idle()) {
        for _ in 0..next(3) {
            if let Some(r) = pending.pop() {
                s.add_request(r).unwrap();
            }
        }
        if next(25) == 0 {
            let id = next(n as u64);
            if s.abort(id, "random abort") {
                aborted.push(id);
            }
        }
        s.step(&mut runner).unwrap();
        collect(&mut s, &mut out);
        steps += 1;
        assert!(steps < 20_000, "no progress");
    }
    let acc = s.check_invariants().unwrap();
    assert_eq!(acc.available + acc.evictable, acc.capacity);
    for r in &reqs {
        let o = &out[&r.id];
        let expect = alone(r, page_size);
        match o.finish.as_deref() {
            Some("abort") => {
                assert!(aborted.contains(&r.id), "request {} aborted unasked", r.id);
                assert!(
                    expect.starts_with(&o.tokens),
                    "aborted output is not a prefix"
                );
            }
            Some(_) => assert_eq!(
                o.tokens, expect,
                "request {} ({policy:?}, ps {page_size}, chunk {chunk:?})",
                r.id
            ),
            None => panic!("request {} never finished", r.id),
        }
    }
    s.counters()
}

#[test]
fn every_policy_page_size_and_chunking_mode() {
    let (mut hits, mut retractions, mut aborted) = (0, 0, 0);
    for (i, policy) in Policy::ALL.into_iter().enumerate() {
        for page_size in [1, 16] {
            for chunk in [None, Some(16)] {
                let c = simulate(
                    1 + i as u64 * 7 + page_size as u64,
                    policy,
                    page_size,
                    chunk,
                    60,
                );
                hits += c.prefix_hit_tokens;
                retractions += c.retractions;
                aborted += c.aborted;
            }
        }
    }
    // The workload is meant to exercise all three paths.
    assert!(
        hits > 0 && retractions > 0 && aborted > 0,
        "hits {hits}, retractions {retractions}, aborts {aborted}"
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn random_workloads_match_uncached_runs(
        seed in 1u64..u64::MAX,
        policy in prop::sample::select(Policy::ALL.to_vec()),
        page_size in prop::sample::select(vec![1usize, 16]),
        chunk in prop::option::of(prop::sample::select(vec![16usize, 32])),
    ) {
        let _ = simulate(seed, policy, page_size, chunk, 30);
    }
}
