//! MIXED steps (SGLang's `--enable-mixed-chunk`, reference section d.2 step 7 and d.4's
//! `mixed_with_decode_tokens`), with the deterministic fake runner.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use router::{ForwardMode, PrefillAdder, Scheduler, SchedulerConfig};

fn prompt(seed: u32, n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| (i * 5 + seed) % 13).collect()
}

fn mixed_config() -> SchedulerConfig {
    SchedulerConfig {
        enable_mixed_chunk: true,
        ..config(1, 4096)
    }
}

/// A step's mode, batch size and tokens computed.
type Step = (ForwardMode, usize, usize);

/// Request 1 decodes for a while, then request 2 arrives. Returns the modes and sizes of the
/// steps after its arrival, the batches the runner saw, and every request's tokens.
fn late_arrival(cfg: SchedulerConfig, logprob: bool) -> (Vec<Step>, Vec<Vec<u32>>) {
    let mut s = Scheduler::new(cfg).unwrap();
    let mut r = FakeRunner::default();
    s.add_request(req(1, prompt(1, 40), 12)).unwrap();
    for _ in 0..3 {
        s.step(&mut r).unwrap();
    }
    let mut second = req(2, prompt(2, 30), 6);
    second.sampling.return_logprob = logprob;
    s.add_request(second).unwrap();
    let mut steps = Vec::new();
    let mut out = std::collections::HashMap::new();
    while let Some(rep) = s.step(&mut r).unwrap() {
        assert_eq!(rep.error, None);
        steps.push((rep.mode, rep.batch_size, rep.tokens_computed));
        for e in s.take_events() {
            if let router::Event::Token { id, token, .. } = e {
                out.entry(id).or_insert_with(Vec::new).push(token);
            }
        }
    }
    let mut ids: Vec<u64> = out.keys().copied().collect();
    ids.sort_unstable();
    (steps, ids.iter().map(|id| out[id].clone()).collect())
}

#[test]
fn a_prefill_carries_the_running_requests_decode_tokens() {
    let (steps, tokens) = late_arrival(mixed_config(), false);
    // The new prompt (30 tokens) and request 1's next token in one forward.
    assert_eq!(steps[0], (ForwardMode::Mixed, 2, 31));
    assert!(steps[1..].iter().all(|s| s.0 == ForwardMode::Decode));
    let (plain, plain_tokens) = late_arrival(config(1, 4096), false);
    assert_eq!(
        plain[0],
        (ForwardMode::Extend, 1, 30),
        "off by default, as in SGLang"
    );
    assert_eq!(
        steps.len() + 1,
        plain.len(),
        "the mixed step saved a decode step"
    );
    assert_eq!(tokens, plain_tokens, "the same tokens either way");
    let want = [
        reference(&prompt(1, 40), &stop(12)),
        reference(&prompt(2, 30), &stop(6)),
    ];
    assert_eq!(tokens, want);
}

#[test]
fn no_mixing_with_logprobs_or_without_chunked_prefill() {
    let (steps, _) = late_arrival(mixed_config(), true);
    assert_eq!(
        steps[0].0,
        ForwardMode::Extend,
        "a request asks for logprobs"
    );
    let unchunked = SchedulerConfig {
        chunked_prefill_size: None,
        ..mixed_config()
    };
    let (steps, _) = late_arrival(unchunked, false);
    assert_eq!(
        steps[0].0,
        ForwardMode::Extend,
        "SGLang mixes only with chunked prefill"
    );
}

#[test]
fn the_decode_tokens_count_against_every_prefill_budget() {
    let plain = PrefillAdder::new(1, 0.5, 4096, [(10, 2)], 100, Some(64));
    let mixed = PrefillAdder::new(1, 0.5, 4096, [(10, 2)], 100, Some(64)).with_mixed_decode(3);
    assert_eq!(
        plain.rem_total_tokens(1000) - mixed.rem_total_tokens(1000),
        3.0
    );
    assert_eq!(plain.cur_rem_tokens(1000) - mixed.cur_rem_tokens(1000), 3.0);
    // 61 chunk tokens are left: a 62-token prompt is chunked, a 61-token one is not.
    let mut m = mixed.clone();
    assert_eq!(m.plan(62, 4, 1000), router::Plan::Chunk(61));
    let mut m = mixed;
    assert_eq!(m.plan(61, 4, 1000), router::Plan::Whole);
}

fn stop(max_new: usize) -> router::StopConditions {
    router::StopConditions {
        max_new_tokens: max_new,
        ignore_eos: true,
        ..router::StopConditions::default()
    }
}
