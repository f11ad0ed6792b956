//! `radixserve bench`: shared-prefix workloads run in-process with the cache on and off.

use crate::args::EngineArgs;
use anyhow::{bail, Context, Result};
use clap::Args;
use engine::{Engine, GenerateRequest, Input, SamplingParams, StopConditions};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Bench flags.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Workloads to run, comma-separated: few-shot (one shared system prompt), multi-prefix
    /// (four interleaved system prompts), multi-turn (conversations that grow turn by turn),
    /// tree-of-thought (branches over a shared root), no-sharing.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "few-shot,multi-prefix,multi-turn,tree-of-thought,no-sharing"
    )]
    workloads: Vec<String>,
    /// Requests per workload (multi-turn: conversations x turns; tree-of-thought: leaves).
    #[arg(long, default_value_t = 32)]
    requests: usize,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Shared prefix length in tokens.
    #[arg(long, default_value_t = 1000)]
    prefix_tokens: usize,
    /// Distinct part of each prompt, in tokens.
    #[arg(long, default_value_t = 40)]
    question_tokens: usize,
    /// Tokens generated per request (EOS ignored, so every request generates exactly this many).
    #[arg(long, default_value_t = 32)]
    output_tokens: usize,
    /// Run only with the cache on (`on`), only off (`off`), or both.
    #[arg(long, default_value = "both")]
    cache: String,
    /// Draw time to first token and throughput, cache on vs off, into this SVG file.
    #[arg(long)]
    plot: Option<std::path::PathBuf>,
    /// Seed of the synthetic prompts.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    #[command(flatten)]
    engine: EngineArgs,
}

/// One client session: prompts sent one after another; a turn's prompt may extend the previous
/// prompt and its output.
#[derive(Debug, Clone)]
struct Session {
    turns: Vec<Vec<u32>>,
    /// Later turns append the previous output and the next turn's tokens to the history.
    chained: bool,
}

fn tokens(rng: &mut StdRng, n: usize) -> Vec<u32> {
    (0..n).map(|_| rng.gen_range(1_000..40_000)).collect()
}

fn workload(name: &str, a: &BenchArgs) -> Result<Vec<Session>> {
    let mut rng = StdRng::seed_from_u64(a.seed);
    let single = |p: Vec<u32>| Session {
        turns: vec![p],
        chained: false,
    };
    Ok(match name {
        "few-shot" => {
            let system = tokens(&mut rng, a.prefix_tokens);
            (0..a.requests)
                .map(|_| {
                    let mut p = system.clone();
                    p.extend(tokens(&mut rng, a.question_tokens));
                    single(p)
                })
                .collect()
        }
        "multi-prefix" => {
            let systems: Vec<Vec<u32>> =
                (0..4).map(|_| tokens(&mut rng, a.prefix_tokens)).collect();
            (0..a.requests)
                .map(|i| {
                    let mut p = systems[i % 4].clone();
                    p.extend(tokens(&mut rng, a.question_tokens));
                    single(p)
                })
                .collect()
        }
        "multi-turn" => {
            let turns = 4;
            let conversations = a.requests.div_ceil(turns).max(1);
            (0..conversations)
                .map(|_| {
                    let mut t = vec![tokens(&mut rng, a.prefix_tokens / 2)];
                    t.extend((1..turns).map(|_| tokens(&mut rng, a.question_tokens)));
                    Session {
                        turns: t,
                        chained: true,
                    }
                })
                .collect()
        }
        "tree-of-thought" => {
            let root = tokens(&mut rng, a.prefix_tokens / 2);
            let branches: Vec<Vec<u32>> = (0..4)
                .map(|_| tokens(&mut rng, a.question_tokens * 2))
                .collect();
            (0..a.requests)
                .map(|i| {
                    let mut p = root.clone();
                    p.extend(&branches[i % 4]);
                    p.extend(tokens(&mut rng, a.question_tokens));
                    single(p)
                })
                .collect()
        }
        "no-sharing" => (0..a.requests)
            .map(|_| single(tokens(&mut rng, a.prefix_tokens + a.question_tokens)))
            .collect(),
        other => bail!("unknown workload {other:?}"),
    })
}

/// What one request measured.
#[derive(Debug, Clone, Copy)]
struct Sample {
    ttft: f64,
    prompt: usize,
    cached: usize,
    output: usize,
}

/// What one workload run measured.
#[derive(Debug, Clone)]
struct Summary {
    workload: String,
    cache_on: bool,
    hit_rate: f64,
    ttft_mean: f64,
    ttft_p50: f64,
    ttft_p90: f64,
    throughput: f64,
    wall: f64,
}

impl Summary {
    /// The run as a markdown table row (printed as progress and in the final table).
    fn row(&self) -> String {
        format!(
            "| {} | {} | {:.1}% | {:.3} | {:.3} | {:.3} | {:.1} | {:.1} |",
            self.workload,
            if self.cache_on { "on" } else { "off" },
            self.hit_rate * 100.0,
            self.ttft_mean,
            self.ttft_p50,
            self.ttft_p90,
            self.throughput,
            self.wall
        )
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * q).round() as usize;
    sorted[i]
}

fn run_workload(
    engine: &Arc<Engine>,
    sessions: Vec<Session>,
    a: &BenchArgs,
) -> Result<(Vec<Sample>, f64)> {
    engine
        .flush_cache()
        .context("flushing the cache between runs")?;
    let queue = Arc::new(Mutex::new(VecDeque::from(sessions)));
    let samples = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::<String>::new()));
    let started = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..a.concurrency.max(1) {
            let (queue, samples, errors) = (queue.clone(), samples.clone(), errors.clone());
            scope.spawn(move || loop {
                let Some(session) = queue.lock().ok().and_then(|mut q| q.pop_front()) else {
                    return;
                };
                let mut history: Vec<u32> = Vec::new();
                for turn in &session.turns {
                    let prompt = if session.chained {
                        history.extend(turn);
                        history.clone()
                    } else {
                        turn.clone()
                    };
                    let mut r = GenerateRequest::new(Input::Tokens(prompt));
                    r.sampling = SamplingParams::greedy();
                    r.stop = StopConditions {
                        max_new_tokens: a.output_tokens,
                        ignore_eos: true,
                        ..StopConditions::default()
                    };
                    match engine.generate_blocking(r) {
                        Ok(c) => {
                            if session.chained {
                                history.extend(&c.token_ids);
                            }
                            if let Ok(mut s) = samples.lock() {
                                s.push(Sample {
                                    ttft: c.time_to_first_token.unwrap_or(c.e2e_latency),
                                    prompt: c.usage.prompt_tokens,
                                    cached: c.usage.cached_tokens,
                                    output: c.usage.completion_tokens,
                                });
                            }
                        }
                        Err(e) => {
                            if let Ok(mut v) = errors.lock() {
                                v.push(e.to_string());
                            }
                            return;
                        }
                    }
                }
            });
        }
    });
    let wall = started.elapsed().as_secs_f64();
    if let Some(e) = errors.lock().ok().and_then(|v| v.first().cloned()) {
        bail!("a request failed: {e}");
    }
    let samples = samples.lock().map(|s| s.clone()).unwrap_or_default();
    Ok((samples, wall))
}

fn summarize(name: &str, cache_on: bool, samples: &[Sample], wall: f64) -> Summary {
    let prompt: usize = samples.iter().map(|s| s.prompt).sum();
    let cached: usize = samples.iter().map(|s| s.cached).sum();
    let output: usize = samples.iter().map(|s| s.output).sum();
    let mut ttfts: Vec<f64> = samples.iter().map(|s| s.ttft).collect();
    ttfts.sort_by(f64::total_cmp);
    Summary {
        workload: name.to_string(),
        cache_on,
        hit_rate: if prompt == 0 {
            0.0
        } else {
            cached as f64 / prompt as f64
        },
        ttft_mean: ttfts.iter().sum::<f64>() / ttfts.len().max(1) as f64,
        ttft_p50: percentile(&ttfts, 0.5),
        ttft_p90: percentile(&ttfts, 0.9),
        throughput: output as f64 / wall.max(1e-9),
        wall,
    }
}

/// Runs the bench.
pub fn run(a: BenchArgs) -> Result<()> {
    let modes: Vec<bool> = match a.cache.as_str() {
        "both" => vec![true, false],
        "on" => vec![true],
        "off" => vec![false],
        other => bail!("--cache must be on, off or both, not {other:?}"),
    };
    for w in &a.workloads {
        workload(w, &a)?;
    }
    let mut results = Vec::new();
    for &cache_on in &modes {
        let mut args = a.engine.clone();
        args.disable_radix_cache = !cache_on;
        let engine = Arc::new(args.engine()?);
        for w in &a.workloads {
            let sessions = workload(w, &a)?;
            let (samples, wall) = run_workload(&engine, sessions, &a)?;
            let s = summarize(w, cache_on, &samples, wall);
            eprintln!("{}", s.row());
            results.push(s);
        }
        engine.shutdown();
    }
    println!("| workload | cache | hit rate | TTFT mean (s) | TTFT p50 (s) | TTFT p90 (s) | output tok/s | wall (s) |");
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for s in &results {
        println!("{}", s.row());
    }
    if let Some(path) = &a.plot {
        plot(path, &a.workloads, &results)?;
        eprintln!("plot written to {}", path.display());
    }
    Ok(())
}

fn plot(path: &std::path::Path, workloads: &[String], results: &[Summary]) -> Result<()> {
    use plotters::prelude::*;
    let root = SVGBackend::new(path, (1100, 450)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow::anyhow!("{e}"))?;
    let panels = root.split_evenly((1, 2));
    type Metric = fn(&Summary) -> f64;
    let metrics: [(&str, Metric); 2] = [
        ("mean time to first token (s)", |s| s.ttft_mean),
        ("throughput (output tokens/s)", |s| s.throughput),
    ];
    for (panel, (title, metric)) in panels.iter().zip(metrics) {
        let max = results.iter().map(metric).fold(0.0f64, f64::max).max(1e-6) * 1.15;
        let n = workloads.len();
        let mut chart = ChartBuilder::on(panel)
            .caption(title, ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0.0..max)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let names = workloads.to_vec();
        chart
            .configure_mesh()
            .x_labels(n)
            .x_label_formatter(&|x| {
                let i = x.round();
                if (x - i).abs() < 1e-6 && i >= 0.0 {
                    names.get(i as usize).cloned().unwrap_or_default()
                } else {
                    String::new()
                }
            })
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        for (on, color, label) in [(true, BLUE, "cache on"), (false, RED, "cache off")] {
            let pts: Vec<(f64, f64)> = workloads
                .iter()
                .enumerate()
                .filter_map(|(i, w)| {
                    results
                        .iter()
                        .find(|s| &s.workload == w && s.cache_on == on)
                        .map(|s| (i as f64, metric(s)))
                })
                .collect();
            if pts.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color));
            chart
                .draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    root.present().map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(())
}
