//! Input logprobs (SGLang's `logprob_start_len`): every prompt token from the start position
//! gets its logprob (the first prompt token has none), whatever the cache holds, however the
//! prompt is chunked, and across a retraction; the cache stops before the scored positions.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use router::{Req, Scheduler, Token};

/// A finished request: id, its scored prompt tokens, its cached tokens.
type Scored = (u64, Vec<(Token, Option<f32>)>, usize);

fn scored(s: &mut Scheduler, runner: &mut FakeRunner) -> Vec<Scored> {
    let mut out: Vec<Scored> = run_to_idle(s, runner, 500)
        .into_iter()
        .map(|(id, o)| (id, o.prompt.unwrap_or_default(), o.cached))
        .collect();
    out.sort_by_key(|x| x.0);
    out
}

fn with_logprobs(id: u64, prompt: Vec<Token>, start: usize) -> Req {
    let mut r = req(id, prompt, 3);
    r.sampling.return_logprob = true;
    r.logprob_start = Some(start);
    r
}

#[test]
fn every_prompt_token_from_the_start_is_scored_once_with_cache_and_chunks() {
    let prompt: Vec<Token> = (1..=12).collect();
    for (page, chunk) in [(1, None), (1, Some(5)), (4, Some(4))] {
        for start in [0, 1, 5, 11] {
            let mut cfg = config(page, 256);
            cfg.chunked_prefill_size = chunk;
            let mut s = Scheduler::new(cfg).unwrap();
            let mut r = FakeRunner::default();
            // Warm the cache with the whole prompt.
            s.add_request(req(1, prompt.clone(), 2)).unwrap();
            scored(&mut s, &mut r);
            s.add_request(with_logprobs(2, prompt.clone(), start))
                .unwrap();
            let out = scored(&mut s, &mut r);
            let (_, lps, cached) = &out[0];
            let want: Vec<(Token, Option<f32>)> = (start..prompt.len())
                .map(|p| (prompt[p], (p > 0).then(|| -(p as f32))))
                .collect();
            assert_eq!(lps, &want, "page {page} chunk {chunk:?} start {start}");
            assert!(
                *cached < start.max(1),
                "the cache stops before the scored positions"
            );
        }
    }
}

#[test]
fn a_retraction_does_not_score_a_position_twice() {
    let mut cfg = config(1, 48);
    cfg.max_running_requests = 4;
    cfg.schedule_conservativeness = 0.01;
    let mut s = Scheduler::new(cfg).unwrap();
    let prompts: Vec<Vec<Token>> = (0..4)
        .map(|i| (0..8).map(|k| ((k + i) % 14) as Token).collect())
        .collect();
    for (i, p) in prompts.iter().enumerate() {
        let mut r = with_logprobs(i as u64, p.clone(), 2);
        r.stop.max_new_tokens = 12;
        s.add_request(r).unwrap();
    }
    let out = scored(&mut s, &mut FakeRunner::default());
    assert!(s.counters().retractions > 0, "the test must retract");
    for (id, lps, _) in out {
        let want: Vec<(Token, Option<f32>)> = (2..8)
            .map(|p| (prompts[id as usize][p], Some(-(p as f32))))
            .collect();
        assert_eq!(lps, want, "request {id}");
    }
}

#[test]
fn a_start_past_the_prompt_is_refused() {
    let mut s = Scheduler::new(config(1, 64)).unwrap();
    assert!(s.add_request(with_logprobs(1, vec![1, 2, 3], 3)).is_err());
    assert!(s.add_request(with_logprobs(2, vec![1, 2, 3], 2)).is_ok());
}
