//! A row's attention output is the same whatever task, source or batch computes it, and it
//! is the attention a plain f64 computation gives.

use super::*;
use crate::batch::SequenceInput;
use crate::weights::RopeStyle;
use router::ForwardMode;

fn config(heads: usize, kv_heads: usize, head_dim: usize) -> LlamaConfig {
    LlamaConfig {
        vocab_size: 8,
        hidden_size: heads * head_dim,
        intermediate_size: 8,
        num_layers: 1,
        num_heads: heads,
        num_kv_heads: kv_heads,
        head_dim,
        rms_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position: 256,
        rope_style: RopeStyle::Neox,
        rope_scaling: Default::default(),
    }
}

/// Pseudo-random values in [-1, 1).
fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Pools of `slots` rows filled with values rounded to `dtype`.
fn pools(dtype: KvDtype, slots: usize, width: usize) -> (KvPool, KvPool) {
    let (mut k, mut v) = (
        KvPool::zeros(dtype, slots * width),
        KvPool::zeros(dtype, slots * width),
    );
    k.write(0, &values(slots * width, 1));
    v.write(0, &values(slots * width, 2));
    (k, v)
}

/// Runs one task of `rows` (query heads for KV head `j`, context slots) and returns each
/// row's output.
fn run(
    cfg: &LlamaConfig,
    j: usize,
    source: Source<'_>,
    rows: &[(&[f32], &[u32])],
    shared: usize,
    dtype: KvDtype,
) -> Vec<Vec<f32>> {
    run_with(cfg, j, source, rows, (shared, None), dtype)
}

/// [`run`] with the first keys read from a widened prefix.
fn run_with(
    cfg: &LlamaConfig,
    j: usize,
    source: Source<'_>,
    rows: &[(&[f32], &[u32])],
    (shared, prefix): (usize, Option<HeadPrefix<'_>>),
    dtype: KvDtype,
) -> Vec<Vec<f32>> {
    let group = cfg.num_heads / cfg.num_kv_heads * cfg.head_dim;
    let mut outs = vec![vec![0f32; group]; rows.len()];
    // Scores are never cleared between tasks: NaN left over from an earlier task would reach
    // the output of a task that read a score it had not written.
    let mut scratch = Scratch {
        scores: vec![f32::NAN; 1 << 16],
        ..Scratch::default()
    };
    AttendRows {
        cfg,
        j,
        source,
        rows: rows
            .iter()
            .zip(outs.iter_mut())
            .map(|(&(q, slots), out)| Query { q, slots, out })
            .collect(),
        shared,
        prefix,
        scratch: &mut scratch,
        width: cfg.num_kv_heads * cfg.head_dim,
        dtype,
    }
    .run();
    outs
}

/// Softmax attention in f64 over the pools' values, for KV head `j`.
fn reference(
    cfg: &LlamaConfig,
    j: usize,
    (k, v): (&KvPool, &KvPool),
    q: &[f32],
    slots: &[u32],
) -> Vec<f64> {
    let (hd, width) = (cfg.head_dim, cfg.num_kv_heads * cfg.head_dim);
    let mut keys = vec![0f32; slots.len() * hd];
    let mut vals = vec![0f32; slots.len() * hd];
    k.read_cols(slots, width, j * hd, hd, &mut keys);
    v.read_cols(slots, width, j * hd, hd, &mut vals);
    let mut out = Vec::new();
    for qa in q.chunks_exact(hd) {
        let s: Vec<f64> = keys
            .chunks_exact(hd)
            .map(|key| {
                qa.iter()
                    .zip(key)
                    .map(|(x, y)| f64::from(*x) * f64::from(*y))
                    .sum::<f64>()
                    / (hd as f64).sqrt()
            })
            .collect();
        let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let e: Vec<f64> = s.iter().map(|x| (x - max).exp()).collect();
        let total: f64 = e.iter().sum();
        for d in 0..hd {
            out.push(
                e.iter()
                    .zip(vals.chunks_exact(hd))
                    .map(|(p, r)| p / total * f64::from(r[d]))
                    .sum(),
            );
        }
    }
    out
}

#[test]
fn a_row_gets_the_same_bits_alone_in_a_shared_task_or_from_a_gathered_context() {
    for (dtype, hd) in [
        (KvDtype::F16, 64),
        (KvDtype::F32, 64),
        (KvDtype::Bf16, 32),
        (KvDtype::F16, 48),
    ] {
        let cfg = config(6, 2, hd);
        let width = 2 * hd;
        let (k, v) = pools(dtype, 500, width);
        let pools = Source::Pools { k: &k, v: &v };
        // Five rows on one 150-slot prefix (several chunks), each with its own further slots.
        let prefix: Vec<u32> = (1..=150).collect();
        let ctxs: Vec<Vec<u32>> = (0..5u32)
            .map(|r| {
                prefix
                    .iter()
                    .copied()
                    .chain(200 + 40 * r..200 + 40 * r + 17 * r + 1)
                    .collect()
            })
            .collect();
        let qs: Vec<Vec<f32>> = (0..5)
            .map(|r| {
                let q = values(3 * hd, 10 + r);
                q.iter().map(|&x| dtype.round(x)).collect()
            })
            .collect();
        for j in 0..2 {
            let rows: Vec<(&[f32], &[u32])> = qs
                .iter()
                .zip(&ctxs)
                .map(|(q, c)| (&q[..], &c[..]))
                .collect();
            let together = run(&cfg, j, pools, &rows, 150, dtype);
            // The same task with its first two chunks from a widened prefix (a decode group's).
            let mut widened = PrefixKv::default();
            let both = Pools {
                k: &k,
                v: &v,
                width,
            };
            widened.gather(both, &prefix[..2 * CHUNK], 2, hd);
            let prefixed = run_with(&cfg, j, pools, &rows, (150, Some(widened.head(j))), dtype);
            assert_eq!(
                together, prefixed,
                "{dtype} hd {hd}: prefix and pools differ"
            );
            for (r, row) in rows.iter().enumerate() {
                let alone = run(&cfg, j, pools, &[*row], 0, dtype);
                assert_eq!(
                    alone[0], together[r],
                    "{dtype} hd {hd} row {r}: alone and shared differ"
                );
                // The same row as the last of a prefill sequence, from its gathered context.
                let mut ctx = PrefixKv::default();
                ctx.gather(both, row.1, 2, hd);
                let gathered = run(&cfg, j, Source::Gathered(&ctx), &[*row], 0, dtype);
                assert_eq!(
                    alone[0], gathered[0],
                    "{dtype} hd {hd} row {r}: pools and gathered differ"
                );
                let want = reference(&cfg, j, (&k, &v), row.0, row.1);
                for (g, w) in alone[0].iter().zip(&want) {
                    let tol = match dtype {
                        KvDtype::F32 => 1e-5,
                        KvDtype::F16 => 2e-3,
                        KvDtype::Bf16 => 2e-2,
                    };
                    assert!(
                        (f64::from(*g) - w).abs() <= tol,
                        "{dtype} hd {hd} row {r}: {g} vs {w}"
                    );
                }
            }
        }
    }
}

#[test]
fn plan_groups_decode_rows_by_prefix_and_prefill_rows_in_runs() {
    let seq = |tokens: usize, prefix: &[u32], new: std::ops::Range<u32>| {
        SequenceInput::new(vec![1; tokens], prefix, &new.collect::<Vec<_>>(), true)
    };
    let common: Vec<u32> = (1..=20).collect();
    let mut longer = common.clone();
    longer.extend(30..35);
    let batch = ForwardBatch {
        mode: ForwardMode::Mixed,
        seqs: vec![
            seq(1, &common, 40..41),
            seq(1, &[50, 51], 52..53),
            seq(10, &[60, 61, 62], 63..73),
            seq(1, &longer, 41..42),
            seq(1, &common[..12], 42..43),
        ],
    };
    let mut rows = Vec::new();
    for (si, s) in batch.seqs.iter().enumerate() {
        rows.extend((0..s.token_ids.len()).map(|i| (si, i)));
    }
    let Plan { tasks, prefixes } = plan(&batch, &rows);
    assert!(prefixes.is_empty(), "no group shares a whole chunk of keys");
    // The prefill run of 10 rows in 8 and 2, sharing the first row's context (4 and 12 keys).
    assert_eq!(
        tasks[0],
        Task {
            rows: (2..10).collect(),
            shared: 4,
            prefix: None,
        }
    );
    assert_eq!(
        tasks[1],
        Task {
            rows: vec![10, 11],
            shared: 12,
            prefix: None,
        }
    );
    // The three decode rows on slot 1 in two tasks (two rows at least make two tasks): rows 0
    // and 12 share their 20 slots, row 13 alone holds 13; their 12 common slots are less
    // than a chunk, so no prefix. Slot 50 alone.
    assert_eq!(
        tasks[2],
        Task {
            rows: vec![0, 12],
            shared: 20,
            prefix: None,
        }
    );
    assert_eq!(
        tasks[3],
        Task {
            rows: vec![13],
            shared: 13,
            prefix: None,
        }
    );
    assert_eq!(
        tasks[4],
        Task {
            rows: vec![1],
            shared: 3,
            prefix: None,
        }
    );
    assert_eq!(tasks.len(), 5);
}

#[test]
fn a_decode_group_of_three_tasks_shares_its_whole_chunks_as_a_prefix() {
    let common: Vec<u32> = (1..=150).collect();
    let group = |n: u32| ForwardBatch {
        mode: ForwardMode::Decode,
        seqs: (0..n)
            .map(|i| SequenceInput::new(vec![1], &common, &[200 + i], true))
            .collect(),
    };
    let rows = |n: usize| -> Vec<(usize, usize)> { (0..n).map(|s| (s, 0)).collect() };
    // 40 rows make three tasks (16, 16, 8): the 150 common slots' two whole chunks of 64 are
    // widened once for all of them.
    let Plan { tasks, prefixes } = plan(&group(40), &rows(40));
    assert_eq!(prefixes, vec![Prefix { seq: 0, len: 128 }]);
    assert_eq!(tasks.len(), 3);
    assert_eq!(
        tasks.iter().map(|t| t.rows.len()).collect::<Vec<_>>(),
        [16, 16, 8]
    );
    assert!(tasks.iter().all(|t| t.prefix == Some(0) && t.shared == 150));
    // 32 rows make two tasks of 16, and 10 rows two of 5: they read their blocks from the
    // pools.
    for (n, per_task) in [(32, 16), (10, 5)] {
        let Plan { tasks, prefixes } = plan(&group(n as u32), &rows(n));
        assert!(prefixes.is_empty(), "two tasks widen their own blocks");
        assert_eq!(tasks.len(), 2);
        assert!(tasks.iter().all(|t| t.rows.len() == per_task));
        assert!(tasks.iter().all(|t| t.prefix.is_none() && t.shared == 150));
    }
}

#[test]
fn short_extends_over_one_cached_context_share_its_whole_chunks_as_a_prefix() {
    let cached: Vec<u32> = (1..=150).collect();
    // Extends of `n` new tokens each, over the cached slots (sequence i's own slots after).
    let extends = |lens: &[usize]| {
        let mut next = 1000;
        let seqs: Vec<SequenceInput> = lens
            .iter()
            .map(|&n| {
                let own: Vec<u32> = (next..next + n as u32).collect();
                next += n as u32;
                SequenceInput::new(vec![1; n], &cached, &own, true)
            })
            .collect();
        let rows: Vec<(usize, usize)> = lens
            .iter()
            .enumerate()
            .flat_map(|(s, &n)| (0..n).map(move |i| (s, i)))
            .collect();
        (
            ForwardBatch {
                mode: ForwardMode::Extend,
                seqs,
            },
            rows,
        )
    };
    // Two extends of 10 tokens make four tasks (8 + 2 rows each): the cached context's two
    // whole chunks are widened once for all of them.
    let (batch, rows) = extends(&[10, 10]);
    let Plan { tasks, prefixes } = plan(&batch, &rows);
    assert_eq!(prefixes, vec![Prefix { seq: 0, len: 128 }]);
    assert_eq!(tasks.len(), 4);
    assert!(tasks.iter().all(|t| t.prefix == Some(0)));
    // One extend of 20 tokens makes three tasks on its own.
    let (batch, rows) = extends(&[20]);
    let Plan { tasks, prefixes } = plan(&batch, &rows);
    assert_eq!(prefixes, vec![Prefix { seq: 0, len: 128 }]);
    assert!(tasks.len() == 3 && tasks.iter().all(|t| t.prefix == Some(0)));
    // One extend of 10 tokens makes two tasks, which read their blocks from the pools; so
    // does a prefill of more than `POOL_ROWS` tokens, which reads its gathered context.
    for lens in [&[10][..], &[POOL_ROWS + 1]] {
        let (batch, rows) = extends(lens);
        let Plan { tasks, prefixes } = plan(&batch, &rows);
        assert!(prefixes.is_empty(), "{lens:?}");
        assert!(tasks.iter().all(|t| t.prefix.is_none()), "{lens:?}");
    }
}
