//! Scheduler overhead per step with 256 running and 10,000 waiting requests.
//!
//! Run: `cargo bench -p radixserve-router --bench scheduler`. The runner is a trivial stand-in
//! (it returns a fixed token), so the time is the control plane's alone: ordering the queue
//! (LPM re-matches and sorts), budgets, admission, KV allocation and caching.
#![allow(missing_docs, clippy::unwrap_used)]

use criterion::{criterion_group, criterion_main, Criterion};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use router::{
    ForwardBatch, ModelError, ModelRunner, Policy, Req, SampledToken, SamplingParams, Scheduler,
    SchedulerConfig, StepOutput, StopConditions,
};
use std::time::{Duration, Instant};

struct NullRunner;

impl ModelRunner for NullRunner {
    fn forward(&mut self, batch: &ForwardBatch) -> Result<StepOutput, ModelError> {
        Ok(StepOutput::new(
            batch
                .seqs
                .iter()
                .map(|s| s.sample.then_some(SampledToken::new(1, None)))
                .collect(),
        ))
    }
}

struct Workload {
    rng: StdRng,
    systems: Vec<Vec<u32>>,
    next_id: u64,
}

impl Workload {
    fn request(&mut self) -> Req {
        let sys = &self.systems[self.rng.gen_range(0..self.systems.len())];
        let mut prompt = sys.clone();
        prompt.extend((0..50).map(|_| self.rng.gen_range(0..50_000)));
        self.next_id += 1;
        Req::new(
            self.next_id,
            prompt,
            SamplingParams::greedy(),
            StopConditions {
                max_new_tokens: self.rng.gen_range(8..64),
                ignore_eos: true,
                ..StopConditions::default()
            },
        )
    }
}

fn bench_policy(c: &mut Criterion, policy: Policy) {
    let cfg = SchedulerConfig {
        page_size: 1,
        num_pages: 400_000,
        context_length: 4096,
        max_running_requests: 256,
        chunked_prefill_size: Some(2048),
        max_prefill_tokens: 16_384,
        policy,
        check_invariants: false,
        ..SchedulerConfig::default()
    };
    let mut s = Scheduler::new(cfg).unwrap();
    let mut rng = StdRng::seed_from_u64(1);
    let systems = (0..16)
        .map(|_| (0..200).map(|_| rng.gen_range(0..50_000)).collect())
        .collect();
    let mut w = Workload {
        rng,
        systems,
        next_id: 0,
    };
    let mut runner = NullRunner;
    let refill = |s: &mut Scheduler, w: &mut Workload| {
        while s.num_waiting() < 10_000 {
            s.add_request(w.request()).unwrap();
        }
    };
    // Warm up until 256 requests are running.
    for _ in 0..2_000 {
        refill(&mut s, &mut w);
        s.step(&mut runner).unwrap();
        s.take_events();
        if s.num_running() >= 256 {
            break;
        }
    }
    let mut group = c.benchmark_group("scheduler");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function(
        format!("step/{}/256-running/10k-waiting", policy.name()),
        |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    refill(&mut s, &mut w);
                    let t = Instant::now();
                    s.step(&mut runner).unwrap();
                    total += t.elapsed();
                    s.take_events();
                }
                total
            })
        },
    );
    group.finish();
    eprintln!(
        "{}: running {}, waiting {}, prefill steps {}, decode steps {}",
        policy.name(),
        s.num_running(),
        s.num_waiting(),
        s.counters().prefill_steps,
        s.counters().decode_steps
    );
}

fn benches(c: &mut Criterion) {
    bench_policy(c, Policy::Lpm);
    bench_policy(c, Policy::Fcfs);
}

criterion_group!(scheduler, benches);
criterion_main!(scheduler);
