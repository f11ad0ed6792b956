//! Per-sequence sampling: greedy, temperature, top-k, top-p, min-p, penalties, seeds, logprobs.

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::batch::SampledToken;
use crate::error::{ExecutorError, Result};
use router::TokenAlternatives;

pub use router::SamplingParams;

/// Applies repetition, frequency and presence penalties in place.
pub fn apply_penalties(
    logits: &mut [f32],
    p: &SamplingParams,
    prompt_ids: &[u32],
    output_ids: &[u32],
) {
    if p.repetition_penalty != 1.0 {
        let mut seen = vec![false; logits.len()];
        for &t in prompt_ids.iter().chain(output_ids) {
            if let Some(s) = seen.get_mut(t as usize) {
                *s = true;
            }
        }
        for (l, s) in logits.iter_mut().zip(seen) {
            if s {
                *l = if *l > 0.0 {
                    *l / p.repetition_penalty
                } else {
                    *l * p.repetition_penalty
                };
            }
        }
    }
    if p.frequency_penalty != 0.0 || p.presence_penalty != 0.0 {
        let mut counts: HashMap<u32, u32> = HashMap::new();
        for &t in output_ids {
            *counts.entry(t).or_default() += 1;
        }
        for (t, c) in counts {
            if let Some(l) = logits.get_mut(t as usize) {
                *l -= p.frequency_penalty * c as f32 + p.presence_penalty;
            }
        }
    }
}

/// Index of the largest value (lowest index on ties; NaN never wins).
pub fn argmax(x: &[f32]) -> usize {
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in x.iter().enumerate() {
        if v > best_v {
            best_v = v;
            best = i;
        }
    }
    best
}

/// log softmax(x)[i].
pub fn log_softmax_at(x: &[f32], i: usize) -> f32 {
    x[i] - log_sum_exp(x)
}

/// log(sum(exp(x))), computed stably: log softmax(x)[i] is `x[i] - log_sum_exp(x)`.
fn log_sum_exp(x: &[f32]) -> f32 {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let s: f64 = x.iter().map(|&v| ((v - m) as f64).exp()).sum();
    m + s.ln() as f32
}

/// A prompt token's log-probability under the raw logits of the row before it (no penalties,
/// bias or masks: the model's own distribution), with alternatives when `p` asks for them.
pub fn score(logits: &[f32], target: u32, p: &SamplingParams) -> SampledToken {
    let norm = log_sum_exp(logits);
    SampledToken {
        token: target,
        logprob: Some(
            logits
                .get(target as usize)
                .map_or(f32::NEG_INFINITY, |&v| v - norm),
        ),
        alternatives: p
            .wants_alternatives()
            .then(|| Box::new(alternatives(logits, p))),
    }
}

/// The most likely tokens (ties to the lower id) and the asked-about ones, with their
/// log-probabilities under the same distribution as the chosen token's.
fn alternatives(logits: &[f32], p: &SamplingParams) -> TokenAlternatives {
    let norm = log_sum_exp(logits);
    let mut top: Vec<(u32, f32)> = Vec::with_capacity(p.top_logprobs + 1);
    if p.top_logprobs > 0 {
        let better = |a: (u32, f32), b: (u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        for (i, &v) in logits.iter().enumerate() {
            let cand = (i as u32, v);
            if top.len() < p.top_logprobs {
                top.push(cand);
                top.sort_by(|a, b| better(*a, *b));
            } else if top.last().is_some_and(|&worst| better(cand, worst).is_lt()) {
                top.pop();
                let at = top.partition_point(|&x| better(x, cand).is_lt());
                top.insert(at, cand);
            }
        }
    }
    let at = |t: u32| {
        logits
            .get(t as usize)
            .map_or(f32::NEG_INFINITY, |&v| v - norm)
    };
    TokenAlternatives {
        top: top.into_iter().map(|(t, v)| (t, v - norm)).collect(),
        requested: p.logprob_token_ids.iter().map(|&t| (t, at(t))).collect(),
    }
}

fn rng_for(seed: Option<u64>, step: u64) -> StdRng {
    let base = seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        t ^ (std::process::id() as u64).rotate_left(32)
    });
    // splitmix64 of (seed, step): distinct, well-mixed streams per step.
    let mut z = base ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    StdRng::seed_from_u64(z ^ (z >> 31))
}

/// The candidate set after temperature, top-k, top-p and min-p: (token, renormalised prob),
/// most likely first.
pub fn filtered_distribution(logits: &[f32], p: &SamplingParams) -> Vec<(u32, f32)> {
    let t = p.temperature.max(1e-6);
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut probs: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &l)| (i as u32, ((l - m) / t).exp()))
        .filter(|&(_, q)| q > 0.0)
        .collect();
    probs.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    if p.top_k > 0 {
        probs.truncate(p.top_k);
    }
    let total: f32 = probs.iter().map(|x| x.1).sum();
    for x in &mut probs {
        x.1 /= total;
    }
    if p.top_p < 1.0 {
        let mut cum = 0.0;
        let mut keep = probs.len();
        for (i, x) in probs.iter().enumerate() {
            cum += x.1;
            if cum >= p.top_p {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep.max(1));
    }
    if p.min_p > 0.0 {
        let top = probs.first().map_or(0.0, |x| x.1);
        probs.retain(|x| x.1 >= p.min_p * top);
    }
    let total: f32 = probs.iter().map(|x| x.1).sum();
    for x in &mut probs {
        x.1 /= total;
    }
    probs
}

/// Sets the banned tokens' logits to -inf, unless that leaves nothing to sample: a constraint
/// that only allows what `min_new_tokens` bans (a complete grammar's end) wins.
fn ban(logits: &mut [f32], banned: &[u32]) {
    let mut saved = Vec::with_capacity(banned.len());
    for &t in banned {
        if let Some(x) = logits.get_mut(t as usize) {
            saved.push((t as usize, *x));
            *x = f32::NEG_INFINITY;
        }
    }
    if !saved.is_empty() && logits.iter().all(|&x| x == f32::NEG_INFINITY) {
        for (i, x) in saved {
            logits[i] = x;
        }
    }
}

/// Samples one token from `logits` (one row of the LM head) for a sequence with the given
/// history; `output_ids.len()` indexes the seeded random stream.
pub fn sample(
    logits: &[f32],
    p: &SamplingParams,
    prompt_ids: &[u32],
    output_ids: &[u32],
) -> Result<SampledToken> {
    if logits.is_empty() {
        return Err(ExecutorError::InvalidSampling("empty logits".into()));
    }
    let mut l = logits.to_vec();
    apply_penalties(&mut l, p, prompt_ids, output_ids);
    for &(t, bias) in &p.logit_bias {
        if let Some(x) = l.get_mut(t as usize) {
            *x += bias;
        }
    }
    if let Some(mask) = &p.allowed_tokens {
        for (i, x) in l.iter_mut().enumerate() {
            if !mask.is_allowed(i as u32) {
                *x = f32::NEG_INFINITY;
            }
        }
    }
    ban(&mut l, &p.banned_tokens);
    if p.is_greedy() {
        let token = argmax(&l);
        return Ok(report(&l, token, p, || vec![(token as u32, 1.0)]));
    }
    let dist = filtered_distribution(&l, p);
    let mut rng = rng_for(p.seed, output_ids.len() as u64);
    let r: f32 = rng.gen();
    let mut cum = 0.0;
    let mut chosen = dist.first().map_or(argmax(&l), |x| x.0 as usize);
    for &(tok, q) in &dist {
        cum += q;
        if r < cum {
            chosen = tok as usize;
            break;
        }
    }
    Ok(report(&l, chosen, p, || dist))
}

/// The sampled token with what `p` asks to report: log-probabilities under the model's
/// distribution (`l`, after penalties, bias and masks), or with `post_sampling_probs` under the
/// distribution that was sampled (`sampled`: kept tokens and their renormalised probabilities;
/// every other token has probability 0).
fn report(
    l: &[f32],
    token: usize,
    p: &SamplingParams,
    sampled: impl FnOnce() -> Vec<(u32, f32)>,
) -> SampledToken {
    let mut out = SampledToken {
        token: token as u32,
        logprob: p.return_logprob.then(|| log_softmax_at(l, token)),
        alternatives: p.wants_alternatives().then(|| Box::new(alternatives(l, p))),
    };
    if p.post_sampling_probs {
        let kept: HashMap<u32, f32> = sampled().into_iter().collect();
        let lp = |t: u32| kept.get(&t).map_or(f32::NEG_INFINITY, |q| q.ln());
        out.logprob = out.logprob.map(|_| lp(token as u32));
        if let Some(alt) = out.alternatives.as_mut() {
            // The kept tokens lead the model's ranking (filters keep the most likely), so the
            // model's top list is the sampled one's, with zeros after the kept tokens.
            for (t, v) in alt.top.iter_mut().chain(alt.requested.iter_mut()) {
                *v = lp(*t);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn banned_tokens_are_never_sampled() {
        let logits = [0.0, 3.0, 1.0];
        for temperature in [0.0, 1.0] {
            for step in 0..20u32 {
                let p = SamplingParams {
                    temperature,
                    seed: Some(7),
                    banned_tokens: vec![1, 9],
                    ..SamplingParams::greedy()
                };
                let out = sample(&logits, &p, &[], &vec![0; step as usize]).expect("samples");
                assert_ne!(out.token, 1);
            }
        }
    }

    #[test]
    fn only_allowed_tokens_are_sampled_and_an_allowed_end_beats_a_ban() {
        let logits = [0.0, 3.0, 1.0, 2.0];
        let mut mask = router::TokenMask::empty(3);
        mask.allow(0);
        mask.allow(2);
        for temperature in [0.0, 1.0] {
            for step in 0..20u32 {
                let p = SamplingParams {
                    temperature,
                    seed: Some(3),
                    allowed_tokens: Some(std::sync::Arc::new(mask.clone())),
                    ..SamplingParams::greedy()
                };
                let out = sample(&logits, &p, &[], &vec![0; step as usize]).expect("samples");
                assert!([0, 2].contains(&out.token), "{}", out.token);
            }
        }
        // Only token 2 is allowed and it is banned (min_new_tokens): the constraint wins.
        let mut only = router::TokenMask::empty(4);
        only.allow(2);
        let p = SamplingParams {
            allowed_tokens: Some(std::sync::Arc::new(only)),
            banned_tokens: vec![2],
            ..SamplingParams::greedy()
        };
        assert_eq!(sample(&logits, &p, &[], &[]).expect("samples").token, 2);
        // Without a constraint a ban still holds even on the best token.
        let p = SamplingParams {
            banned_tokens: vec![1],
            ..SamplingParams::greedy()
        };
        assert_eq!(sample(&logits, &p, &[], &[]).expect("samples").token, 3);
    }

    #[test]
    fn post_sampling_probs_come_from_the_distribution_sampled() {
        let logits = [0.5, 3.0, 1.0, 2.0, -2.0];
        let asked = |temperature: f32, top_k: usize| SamplingParams {
            temperature,
            top_k,
            seed: Some(11),
            return_logprob: true,
            top_logprobs: 4,
            logprob_token_ids: vec![4],
            post_sampling_probs: true,
            ..SamplingParams::greedy()
        };
        // Greedy: everything on the chosen token.
        let out = sample(&logits, &asked(0.0, 0), &[], &[]).expect("samples");
        assert_eq!((out.token, out.logprob), (1, Some(0.0)));
        let alt = out.alternatives.expect("asked for");
        assert_eq!(alt.top[0], (1, 0.0));
        assert!(alt.top[1..].iter().all(|x| x.1 == f32::NEG_INFINITY));
        assert_eq!(alt.requested, vec![(4, f32::NEG_INFINITY)]);
        // Top-k 2 at temperature 1: the two kept share all the mass, the rest has none.
        for step in 0..10u32 {
            let out =
                sample(&logits, &asked(1.0, 2), &[], &vec![0; step as usize]).expect("samples");
            let alt = out.alternatives.expect("asked for");
            let ids: Vec<u32> = alt.top.iter().map(|x| x.0).collect();
            assert_eq!(ids, [1, 3, 2, 0]);
            let (p1, p3) = (alt.top[0].1.exp(), alt.top[1].1.exp());
            assert!((p1 + p3 - 1.0).abs() < 1e-5);
            assert!((p1 / p3 - 1f32.exp()).abs() < 1e-4);
            assert!(alt.top[2..].iter().all(|x| x.1 == f32::NEG_INFINITY));
            let chosen = alt.top.iter().find(|x| x.0 == out.token).expect("listed");
            assert_eq!(out.logprob, Some(chosen.1));
            assert!([1, 3].contains(&out.token));
        }
        // Without the flag the same request reports the model's distribution.
        let model = SamplingParams {
            post_sampling_probs: false,
            ..asked(1.0, 2)
        };
        let alt = sample(&logits, &model, &[], &[])
            .expect("samples")
            .alternatives
            .expect("asked for");
        assert!(alt.top.iter().all(|x| x.1.is_finite() && x.1 < 0.0));
    }

    #[test]
    fn alternatives_are_the_most_likely_tokens_and_the_asked_ones() {
        let logits = [0.5, 3.0, 1.0, 3.0, -2.0];
        let p = SamplingParams {
            return_logprob: true,
            top_logprobs: 3,
            logprob_token_ids: vec![4, 99],
            ..SamplingParams::greedy()
        };
        let out = sample(&logits, &p, &[], &[]).expect("samples");
        let alt = out.alternatives.expect("asked for");
        let ids: Vec<u32> = alt.top.iter().map(|x| x.0).collect();
        assert_eq!(ids, [1, 3, 2], "most likely first, ties to the lower id");
        assert_eq!(alt.top[0].1, out.logprob.expect("asked for"));
        let total: f32 = logits.iter().map(|&v| (v - logits[1]).exp()).sum();
        assert!((alt.top[0].1 + total.ln()).abs() < 1e-5);
        assert_eq!(alt.requested[0].0, 4);
        assert!((alt.requested[0].1 - (alt.top[0].1 - 5.0)).abs() < 1e-5);
        assert_eq!(
            alt.requested[1],
            (99, f32::NEG_INFINITY),
            "outside the vocabulary"
        );
        // More than the vocabulary: all of it.
        let p = SamplingParams {
            top_logprobs: 20,
            ..SamplingParams::greedy()
        };
        let all = sample(&logits, &p, &[], &[])
            .expect("samples")
            .alternatives
            .expect("asked");
        assert_eq!(all.top.len(), 5);
        assert!(sample(&logits, &SamplingParams::greedy(), &[], &[])
            .expect("samples")
            .alternatives
            .is_none());
    }

    #[test]
    fn logit_bias_shifts_the_chosen_token() {
        let logits = [0.0, 3.0, 1.0];
        let none = sample(&logits, &SamplingParams::greedy(), &[], &[]).expect("samples");
        assert_eq!(none.token, 1);
        let p = SamplingParams {
            logit_bias: vec![(1, -100.0), (2, 0.5)],
            return_logprob: true,
            ..SamplingParams::greedy()
        };
        let biased = sample(&logits, &p, &[], &[]).expect("samples");
        assert_eq!(biased.token, 2);
        assert!(biased.logprob.expect("asked for") > (0.5f32).ln());
    }

    fn params() -> SamplingParams {
        SamplingParams {
            temperature: 1.0,
            ..SamplingParams::greedy()
        }
    }

    #[test]
    fn greedy_picks_argmax_lowest_index_on_ties() {
        let s = sample(&[0.1, 3.0, 3.0, -1.0], &SamplingParams::greedy(), &[], &[]).expect("ok");
        assert_eq!(s.token, 1);
        assert_eq!(s.logprob, None);
    }

    #[test]
    fn logprob_of_chosen_token_is_log_softmax() {
        let p = SamplingParams {
            return_logprob: true,
            ..SamplingParams::greedy()
        };
        let s = sample(&[0.0, 1.0f32.ln()], &p, &[], &[]).expect("ok");
        // logits [0, 0]: each token has probability 1/2.
        assert_eq!(s.token, 0);
        assert!((s.logprob.expect("requested") - 0.5f32.ln()).abs() < 1e-6);
    }

    #[test]
    fn temperature_sampling_follows_the_distribution() {
        // probs 0.5 / 0.25 / 0.25
        let logits = [2f32.ln(), 0.0, 0.0];
        let mut counts = [0usize; 3];
        for step in 0..4000u32 {
            let p = SamplingParams {
                seed: Some(u64::from(step)),
                ..params()
            };
            counts[sample(&logits, &p, &[], &[]).expect("ok").token as usize] += 1;
        }
        let f0 = counts[0] as f64 / 4000.0;
        assert!((f0 - 0.5).abs() < 0.04, "{counts:?}");
        assert!(counts[1] > 800 && counts[2] > 800, "{counts:?}");
    }

    #[test]
    fn low_temperature_concentrates_on_the_best_token() {
        let p = SamplingParams {
            temperature: 0.01,
            seed: Some(1),
            ..params()
        };
        for s in 0..50 {
            let out = sample(
                &[1.0, 1.5, 0.5],
                &SamplingParams {
                    seed: Some(s),
                    ..p.clone()
                },
                &[],
                &[],
            );
            assert_eq!(out.expect("ok").token, 1);
        }
    }

    #[test]
    fn top_k_keeps_only_k_tokens() {
        let p = SamplingParams {
            top_k: 2,
            ..params()
        };
        let d = filtered_distribution(&[1.0, 3.0, 2.0, 0.0], &p);
        let toks: Vec<u32> = d.iter().map(|x| x.0).collect();
        assert_eq!(toks, vec![1, 2]);
        assert!((d.iter().map(|x| x.1).sum::<f32>() - 1.0).abs() < 1e-6);
    }

    #[test]
    fn top_p_keeps_the_smallest_set_reaching_p() {
        // probs 0.5, 0.3, 0.2
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let d = filtered_distribution(
            &logits,
            &SamplingParams {
                top_p: 0.7,
                ..params()
            },
        );
        assert_eq!(d.iter().map(|x| x.0).collect::<Vec<_>>(), vec![0, 1]);
        let d = filtered_distribution(
            &logits,
            &SamplingParams {
                top_p: 0.4,
                ..params()
            },
        );
        assert_eq!(d.iter().map(|x| x.0).collect::<Vec<_>>(), vec![0]);
        assert!((d[0].1 - 1.0).abs() < 1e-6);
    }

    #[test]
    fn min_p_drops_tokens_below_fraction_of_top() {
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let d = filtered_distribution(
            &logits,
            &SamplingParams {
                min_p: 0.5,
                ..params()
            },
        );
        assert_eq!(d.iter().map(|x| x.0).collect::<Vec<_>>(), vec![0, 1]);
    }

    #[test]
    fn repetition_penalty_divides_positive_and_multiplies_negative() {
        let mut l = [2.0, -2.0, 2.0];
        let p = SamplingParams {
            repetition_penalty: 2.0,
            ..params()
        };
        apply_penalties(&mut l, &p, &[0], &[1]);
        assert_eq!(l, [1.0, -4.0, 2.0]);
    }

    #[test]
    fn frequency_and_presence_penalties_count_output_tokens() {
        let mut l = [0.0, 0.0, 0.0];
        let p = SamplingParams {
            frequency_penalty: 0.5,
            presence_penalty: 1.0,
            ..params()
        };
        apply_penalties(&mut l, &p, &[2, 2], &[0, 0, 1]);
        assert_eq!(l, [-2.0, -1.5, 0.0]);
        // The penalty changes a greedy choice.
        let g = SamplingParams {
            presence_penalty: 1.0,
            ..SamplingParams::greedy()
        };
        assert_eq!(sample(&[1.0, 0.5], &g, &[], &[0]).expect("ok").token, 1);
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_step_dependent() {
        let logits: Vec<f32> = (0..100).map(|i| (i % 7) as f32 * 0.1).collect();
        let p = SamplingParams {
            seed: Some(42),
            ..params()
        };
        let run = || -> Vec<u32> {
            let mut out = Vec::new();
            for _ in 0..20 {
                let t = sample(&logits, &p, &[], &out).expect("ok").token;
                out.push(t);
            }
            out
        };
        let a = run();
        assert_eq!(a, run());
        let distinct: std::collections::HashSet<_> = a.iter().collect();
        assert!(
            distinct.len() > 3,
            "steps use different random draws: {a:?}"
        );
    }

    #[test]
    fn invalid_parameters_are_rejected() {
        assert!(SamplingParams {
            temperature: -1.0,
            ..params()
        }
        .validate()
        .is_err());
        assert!(SamplingParams {
            top_p: 0.0,
            ..params()
        }
        .validate()
        .is_err());
        assert!(SamplingParams {
            min_p: 2.0,
            ..params()
        }
        .validate()
        .is_err());
        assert!(SamplingParams {
            repetition_penalty: 0.0,
            ..params()
        }
        .validate()
        .is_err());
        assert!(params().validate().is_ok());
    }
}
