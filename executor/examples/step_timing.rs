//! Times prefill or decode steps of the default model outside criterion (for profiling).
//! `cargo run --release -p radixserve-executor --example step_timing -- decode 8 [iters] [burn|CTX]`
//! or `... -- shared 32 [iters] [CTX]` (decode rows over one shared context), or
//! `... -- extend 4 [iters] [CTX]` (4 sequences of 35 new tokens over one cached context), or
//! `... -- prefill 128 [iters]`, or `... -- kernel M [iters] [exact]` for one projection.
#![allow(missing_docs)]

use std::time::Instant;

use executor::{default_model_path, load_gguf, CpuBackend, Executor};
use router::{ForwardBatch, ForwardMode, SequenceInput};

#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mode = args.get(1).map_or("decode", String::as_str).to_string();
    let n: usize = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(1);
    let iters: usize = args.get(3).and_then(|s| s.parse().ok()).unwrap_or(20);
    let burn_only = args.get(4).is_some_and(|s| s == "burn");
    let ctx: usize = args.get(4).and_then(|s| s.parse().ok()).unwrap_or(128);
    if mode == "kernel" {
        kernel(n, iters, args.get(4).is_some_and(|s| s == "exact"));
        return;
    }
    let path = default_model_path();
    let model = if burn_only {
        load_gguf::<CpuBackend>(&path, &Default::default())
            .expect("model loads")
            .0
    } else {
        // The CPU device's model: the host model alone, straight from the file's blocks.
        executor::load_host_weights::<CpuBackend>(&path, &Default::default())
            .and_then(|m| m.with_kv_dtype(executor::KvDtype::F16))
            .expect("host model loads")
    };
    let layouts = model.host_layouts();
    eprintln!(
        "layouts: {:?} ... LM head {:?}",
        layouts.get(..5),
        layouts.last()
    );
    let prompt =
        |n: usize| -> Vec<u32> { (0..n).map(|i| 100 + (i as u32 * 37) % 40_000).collect() };
    let (mut exec, batch) = if mode == "prefill" {
        let slots: Vec<u32> = (1..=n as u32).collect();
        (
            Executor::new(model, n + 1),
            ForwardBatch {
                mode: ForwardMode::Extend,
                seqs: vec![SequenceInput::new(prompt(n), &[], &slots, true)],
            },
        )
    } else if mode == "extend" {
        // `n` sequences of 35 new tokens each over one cached context of `ctx` slots (as
        // questions arrive after a cached system prompt).
        const NEW: usize = 35;
        let (exec, shared) = cached_context(model, ctx, n * NEW, prompt(ctx));
        let extend = ForwardBatch {
            mode: ForwardMode::Extend,
            seqs: (0..n)
                .map(|i| {
                    let own: Vec<u32> = (0..NEW).map(|k| (ctx + 1 + i * NEW + k) as u32).collect();
                    SequenceInput::new(prompt(NEW), &shared, &own, true)
                })
                .collect(),
        };
        (exec, extend)
    } else if mode == "shared" {
        // `n` decode rows over one shared context of `ctx` slots (as the radix cache hands
        // out a cached system prompt), each with its own next slot.
        let (exec, shared) = cached_context(model, ctx, n, prompt(ctx));
        let decode = ForwardBatch {
            mode: ForwardMode::Decode,
            seqs: (0..n)
                .map(|i| SequenceInput::new(vec![42], &shared, &[(ctx + 1 + i) as u32], true))
                .collect(),
        };
        (exec, decode)
    } else {
        let mut exec = Executor::new(model, n * (ctx + 1) + 1);
        let rows: Vec<Vec<u32>> = (0..n)
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
        (exec, decode)
    };
    exec.step(&batch).expect("warm-up");
    let mut times = Vec::new();
    for _ in 0..iters {
        let t0 = Instant::now();
        exec.step(&batch).expect("step");
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    let med = times[times.len() / 2];
    println!(
        "{mode} {n}: median {med:.2} ms, min {:.2} ms, {:.1} tok/s",
        times[0],
        n as f64 * 1e3 / med
    );
}

/// An executor with room for `ctx + extra` slots whose first `ctx` slots hold `tokens`
/// computed (a cached prompt), and those slots.
fn cached_context(
    model: executor::LlamaModel<CpuBackend>,
    ctx: usize,
    extra: usize,
    tokens: Vec<u32>,
) -> (Executor<CpuBackend>, Vec<u32>) {
    let mut exec = Executor::new(model, ctx + extra + 1);
    let shared: Vec<u32> = (1..=ctx as u32).collect();
    let prefill = ForwardBatch {
        mode: ForwardMode::Extend,
        seqs: vec![SequenceInput::new(tokens, &[], &shared, false)],
    };
    exec.step(&prefill).expect("prefill");
    (exec, shared)
}

/// Times the host kernel alone on a Q4_1-valued [1536][576] matrix with `m` input rows,
/// through the integer kernels or (`exact`) the f32 expansion.
fn kernel(m: usize, iters: usize, exact: bool) {
    let (inp, out) = (576, 1536 * 4);
    let w: Vec<f32> = (0..inp * out)
        .map(|i| {
            let b = i / 32;
            let d = half::f16::from_f32(0.01 + (b % 7) as f32 * 0.003).to_f32();
            let mn = half::f16::from_f32(-0.05).to_f32();
            ((i * 7 + b) % 16) as f32 * d + mn
        })
        .collect();
    let lin = executor::HostLinear::new(inp, out, w).expect("shape");
    let lin = if exact { lin.exact() } else { lin };
    let x: Vec<f32> = (0..m * inp).map(|i| (i % 13) as f32 * 0.1).collect();
    let t0 = Instant::now();
    for _ in 0..iters {
        std::hint::black_box(lin.forward(&x, m));
    }
    let dt = t0.elapsed().as_secs_f64() / iters as f64;
    println!(
        "kernel {} ({}) m={m}: {:.3} ms, {:.1} GB/s, {:.1} GFLOP/s",
        lin.format(),
        lin.integer_kernel().unwrap_or("f32 expansion"),
        dt * 1e3,
        lin.weight_bytes() as f64 / dt / 1e9,
        2.0 * (m * inp * out) as f64 / dt / 1e9
    );
}
