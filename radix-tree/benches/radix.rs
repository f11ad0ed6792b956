//! Radix cache throughput on four serving workloads, for page sizes 1 and 16.
//!
//! Run: `cargo bench -p radixserve-radix-tree --bench radix`. Figures are reported as matched or
//! inserted tokens per second (criterion's "elements") and time per call.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use radix_tree::{KeyRef, Namespace, RadixCache};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::Duration;

type Seq = Vec<u32>;

fn random_tokens(rng: &mut StdRng, n: usize) -> Seq {
    (0..n).map(|_| rng.gen_range(0..50_000)).collect()
}

/// A workload: sequences to insert (in order) and queries to match afterwards.
struct Workload {
    name: &'static str,
    inserts: Vec<Seq>,
    queries: Vec<Seq>,
}

fn few_shot(rng: &mut StdRng) -> Workload {
    let prefixes: Vec<Seq> = (0..10).map(|_| random_tokens(rng, 2_000)).collect();
    let seqs: Vec<Seq> = (0..1_000)
        .map(|i| {
            let mut s = prefixes[i % 10].clone();
            s.extend(random_tokens(rng, 200));
            s
        })
        .collect();
    Workload {
        name: "few-shot",
        inserts: seqs.clone(),
        queries: seqs,
    }
}

fn multi_turn(rng: &mut StdRng) -> Workload {
    let mut inserts = Vec::new();
    let mut queries = Vec::new();
    for _ in 0..200 {
        let mut history: Seq = Vec::new();
        for _ in 0..10 {
            history.extend(random_tokens(rng, 100)); // user message
            queries.push(history.clone());
            history.extend(random_tokens(rng, 100)); // answer
            inserts.push(history.clone());
        }
    }
    Workload {
        name: "multi-turn",
        inserts,
        queries,
    }
}

fn tree_of_thought(rng: &mut StdRng) -> Workload {
    let mut paths: Vec<Seq> = vec![Vec::new()];
    for _ in 0..4 {
        paths = paths
            .iter()
            .flat_map(|p| {
                (0..4)
                    .map(|_| {
                        let mut s = p.clone();
                        s.extend(random_tokens(rng, 256));
                        s
                    })
                    .collect::<Vec<_>>()
            })
            .collect();
    }
    Workload {
        name: "tree-of-thought",
        inserts: paths.clone(),
        queries: paths,
    }
}

fn no_sharing(rng: &mut StdRng) -> Workload {
    let seqs: Vec<Seq> = (0..10_000).map(|_| random_tokens(rng, 1_000)).collect();
    Workload {
        name: "no-sharing",
        inserts: seqs.clone(),
        queries: seqs,
    }
}

fn build(w: &Workload, page_size: usize) -> RadixCache<u32> {
    let ns = Namespace::shared();
    let mut cache = RadixCache::new(page_size);
    for s in &w.inserts {
        let len = s.len() - s.len() % page_size;
        let _ = cache.insert(KeyRef::new(&s[..len], &ns), &s[..len]);
    }
    cache
}

fn bench_workloads(c: &mut Criterion) {
    let ns = Namespace::shared();
    let mut rng = StdRng::seed_from_u64(20261127);
    let workloads = [
        few_shot(&mut rng),
        multi_turn(&mut rng),
        tree_of_thought(&mut rng),
        no_sharing(&mut rng),
    ];
    for w in &workloads {
        for page_size in [1usize, 16] {
            let mut group = c.benchmark_group(format!("{}/ps{page_size}", w.name));
            group.sample_size(10);
            group.warm_up_time(Duration::from_millis(500));
            group.measurement_time(Duration::from_secs(2));

            let inserted: usize = w
                .inserts
                .iter()
                .map(|s| s.len() - s.len() % page_size)
                .sum();
            group.throughput(Throughput::Elements(inserted as u64));
            group.bench_function("insert", |b| {
                b.iter_batched(
                    || RadixCache::<u32>::new(page_size),
                    |mut cache| {
                        for s in &w.inserts {
                            let len = s.len() - s.len() % page_size;
                            let _ = cache.insert(KeyRef::new(&s[..len], &ns), &s[..len]);
                        }
                        cache
                    },
                    BatchSize::LargeInput,
                )
            });

            let mut cache = build(w, page_size);
            let mut buf = Vec::new();
            let matched: usize = w
                .queries
                .iter()
                .map(|q| {
                    buf.clear();
                    cache.match_prefix_into(KeyRef::new(q, &ns), &mut buf);
                    buf.len()
                })
                .sum();
            group.throughput(Throughput::Elements(matched as u64));
            group.bench_function("match", |b| {
                b.iter(|| {
                    let mut total = 0;
                    for q in &w.queries {
                        buf.clear();
                        cache.match_prefix_into(KeyRef::new(q, &ns), &mut buf);
                        total += buf.len();
                    }
                    total
                })
            });

            if cache.evictable_size() >= 100_000 {
                group.throughput(Throughput::Elements(100_000));
                group.bench_function("evict-100k", |b| {
                    b.iter_batched(
                        || build(w, page_size),
                        |mut cache| {
                            let freed = cache.evict(100_000);
                            (freed.len(), cache)
                        },
                        BatchSize::PerIteration,
                    )
                });
            }
            group.finish();
        }
    }
}

fn bench_single_match(c: &mut Criterion) {
    let ns = Namespace::shared();
    let mut rng = StdRng::seed_from_u64(7);
    let prefix = random_tokens(&mut rng, 2_000);
    let mut cache = RadixCache::<u32>::new(1);
    let _ = cache.insert(KeyRef::new(&prefix, &ns), &prefix);
    let mut group = c.benchmark_group("single");
    group.sample_size(20);
    group.measurement_time(Duration::from_secs(2));
    group.throughput(Throughput::Elements(2_000));
    let mut buf = Vec::with_capacity(2_000);
    group.bench_function("match-2000-token-prefix", |b| {
        b.iter(|| {
            buf.clear();
            cache.match_prefix_into(KeyRef::new(&prefix, &ns), &mut buf);
            buf.len()
        })
    });
    group.finish();
}

criterion_group!(benches, bench_single_match, bench_workloads);
criterion_main!(benches);
