//! Prefill and decode throughput on the default model (SmolLM2-135M Q4_1): the burn reference
//! path (weights dequantised to f32) against the host path of `with_host_kernels`.
//! Skips with a message when the model file is absent.
// criterion_group! generates an undocumented function.
#![allow(missing_docs)]

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use executor::{default_model_path, load_gguf, CpuBackend, Executor};
use router::{ForwardBatch, ForwardMode, SequenceInput};

fn bench(c: &mut Criterion) {
    let path = default_model_path();
    if !path.exists() {
        eprintln!("!!!! skipping benches: {} not found", path.display());
        return;
    }
    let (model, _tok) = load_gguf::<CpuBackend>(&path, &Default::default()).expect("model loads");
    let prompt =
        |n: usize| -> Vec<u32> { (0..n).map(|i| 100 + (i as u32 * 37) % 40_000).collect() };

    // The burn reference path ("prefill") and the host path the engine runs ("prefill_host").
    let fast = model.clone().with_host_kernels(32).expect("host kernels");
    for (name, m) in [("prefill", &model), ("prefill_host", &fast)] {
        let mut g = c.benchmark_group(name);
        g.sample_size(10)
            .measurement_time(Duration::from_secs(10))
            .warm_up_time(Duration::from_secs(1));
        for n in [128usize, 512] {
            let mut exec = Executor::new(m.clone(), n + 1);
            let slots: Vec<u32> = (1..=n as u32).collect();
            let batch = ForwardBatch {
                mode: ForwardMode::Extend,
                seqs: vec![SequenceInput::new(prompt(n), &[], &slots, true)],
            };
            g.throughput(Throughput::Elements(n as u64));
            g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
                b.iter(|| exec.step(&batch).expect("prefill"))
            });
        }
        g.finish();
    }

    // Decode at context 128: each sequence has a cached 128-token prompt and computes one token.
    let ctx = 128;
    for (name, m) in [
        ("decode_ctx128_burn", &model),
        ("decode_ctx128_host", &fast),
    ] {
        let mut g = c.benchmark_group(name);
        g.sample_size(10)
            .measurement_time(Duration::from_secs(5))
            .warm_up_time(Duration::from_secs(1));
        for bs in [1usize, 8, 32] {
            let mut exec = Executor::new(m.clone(), bs * (ctx + 1) + 1);
            let rows: Vec<Vec<u32>> = (0..bs)
                .map(|i| {
                    (1 + i * (ctx + 1)..1 + (i + 1) * (ctx + 1))
                        .map(|s| s as u32)
                        .collect()
                })
                .collect();
            let prefill = ForwardBatch {
                mode: ForwardMode::Extend,
                seqs: rows
                    .iter()
                    .map(|r| SequenceInput::new(prompt(ctx), &[], &r[..ctx], false))
                    .collect(),
            };
            exec.step(&prefill).expect("prefill");
            let decode = ForwardBatch {
                mode: ForwardMode::Decode,
                seqs: rows
                    .iter()
                    .map(|r| SequenceInput::new(vec![42], &r[..ctx], &r[ctx..], true))
                    .collect(),
            };
            g.throughput(Throughput::Elements(bs as u64));
            g.bench_with_input(BenchmarkId::from_parameter(bs), &bs, |b, _| {
                b.iter(|| exec.step(&decode).expect("decode"))
            });
        }
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
