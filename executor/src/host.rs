//! The whole forward pass on the host, for CPU backends: projections through
//! [`crate::kernels::HostLinear`] (compact weights, both cores), norms, RoPE and attention as
//! plain loops over a host K/V pool. No strided tensor copies, no padding of decode batches to
//! the longest sequence, and every token row is computed the same way whatever else is in the
//! batch (batch-invariant). The burn forward in [`crate::model`] stays the reference.

use pulp::{Arch, Simd, WithSimd};
use rayon::prelude::*;

use crate::batch::ForwardBatch;
use crate::kernels::{micro, HostLinear};
use crate::kv_dtype::{KvDtype, KvPool};
use crate::model::Scored;
use crate::scoring::score_targets;
use crate::weights::{LlamaConfig, RopeStyle};

/// Host weights of one decoder layer.
#[derive(Debug)]
pub(crate) struct HostLayer {
    pub attn_norm: Vec<f32>,
    pub bqkv: Option<Vec<f32>>,
    /// Per-head RMSNorm weights of queries and keys (Qwen3).
    pub q_norm: Option<Vec<f32>>,
    pub k_norm: Option<Vec<f32>>,
    pub wqkv: HostLinear,
    pub wo: HostLinear,
    pub ffn_norm: Vec<f32>,
    pub w_gate_up: HostLinear,
    pub w_down: HostLinear,
}

/// Host copy of a whole model.
#[derive(Debug)]
pub(crate) struct HostModel {
    pub config: LlamaConfig,
    /// Token embeddings.
    pub embed: Embedding,
    pub layers: Vec<HostLayer>,
    pub final_norm: Vec<f32>,
    pub lm_head: HostLinear,
    /// `[max_position][head_dim / 2]`.
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

/// Where the host forward reads token embeddings.
#[derive(Debug)]
pub(crate) enum Embedding {
    /// `[vocab][hidden]` f32.
    Table(Vec<f32>),
    /// `[vocab][hidden]` in a kernel layout (the file's blocks), expanded per token.
    Rows(HostLinear),
    /// The rows of the (tied) LM head's compact weights, expanded per token.
    TiedHead,
}

/// Host K/V pools: per layer `[num_slots][kv_heads * head_dim]` values of `dtype`.
#[derive(Debug, Clone)]
pub(crate) struct HostKv {
    pub k: Vec<KvPool>,
    pub v: Vec<KvPool>,
    pub width: usize,
    pub dtype: KvDtype,
}

impl HostKv {
    pub fn new(config: &LlamaConfig, num_slots: usize, dtype: KvDtype) -> Self {
        let width = config.num_kv_heads * config.head_dim;
        let make = || {
            (0..config.num_layers)
                .map(|_| KvPool::zeros(dtype, num_slots * width))
                .collect()
        };
        Self {
            k: make(),
            v: make(),
            width,
            dtype,
        }
    }
}

fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    let mut out = vec![0f32; x.len()];
    for (o, r) in out.chunks_exact_mut(d).zip(x.chunks_exact(d)) {
        let ms = r.iter().map(|v| v * v).sum::<f32>() / d as f32;
        let inv = 1.0 / (ms + eps).sqrt();
        for ((o, &v), &g) in o.iter_mut().zip(r).zip(w) {
            *o = v * inv * g;
        }
    }
    out
}

/// Rotates `heads` heads of `x` (one token) at table row `pos`.
fn rope(x: &mut [f32], heads: usize, hd: usize, cos: &[f32], sin: &[f32], style: RopeStyle) {
    let half = hd / 2;
    for h in 0..heads {
        let v = &mut x[h * hd..(h + 1) * hd];
        for i in 0..half {
            let (a, b) = match style {
                RopeStyle::Interleaved => (2 * i, 2 * i + 1),
                RopeStyle::Neox => (i, i + half),
            };
            let (x0, x1) = (v[a], v[b]);
            v[a] = x0 * cos[i] - x1 * sin[i];
            v[b] = x0 * sin[i] + x1 * cos[i];
        }
    }
}

#[inline(always)]
fn dot<S: Simd>(simd: S, a: &[f32], b: &[f32]) -> f32 {
    let (av, at) = S::as_simd_f32s(a);
    let (bv, bt) = S::as_simd_f32s(b);
    let mut acc0 = simd.splat_f32s(0.0);
    let mut acc1 = simd.splat_f32s(0.0);
    let mut pairs = av.chunks_exact(2).zip(bv.chunks_exact(2));
    for (x, y) in &mut pairs {
        acc0 = simd.mul_add_e_f32s(x[0], y[0], acc0);
        acc1 = simd.mul_add_e_f32s(x[1], y[1], acc1);
    }
    if av.len() % 2 == 1 {
        acc0 = simd.mul_add_e_f32s(av[av.len() - 1], bv[bv.len() - 1], acc0);
    }
    let mut s = simd.reduce_sum_f32s(simd.add_f32s(acc0, acc1));
    for (x, y) in at.iter().zip(bt) {
        s += x * y;
    }
    s
}

/// `o = Σ p_l * v_l` over the value rows `v[l * stride..][..hd]` (`hd == o.len()`), with `NV`
/// vector accumulators held in registers (`o.len() == NV * lanes`). Returns false if shapes
/// differ.
#[inline(always)]
fn weighted_sum<S: Simd, const NV: usize>(
    simd: S,
    p: &[f32],
    v: &[f32],
    stride: usize,
    o: &mut [f32],
) -> bool {
    let hd = o.len();
    let mut acc = [simd.splat_f32s(0.0); NV];
    for (li, &pi) in p.iter().enumerate() {
        let (vv, _) = S::as_simd_f32s(&v[li * stride..li * stride + hd]);
        if vv.len() != NV {
            return false;
        }
        let w = simd.splat_f32s(pi);
        for (a, &v) in acc.iter_mut().zip(vv) {
            *a = simd.mul_add_e_f32s(w, v, *a);
        }
    }
    let (ov, _) = S::as_mut_simd_f32s(o);
    if ov.len() != NV {
        return false;
    }
    ov.copy_from_slice(&acc);
    true
}

/// One sequence's context K and V rows of one layer as f32, `[l][width]` each, read once
/// from the pools for all of the sequence's query rows.
#[derive(Default)]
struct Context {
    k: Vec<f32>,
    v: Vec<f32>,
}

impl Context {
    fn gather(&mut self, k_pool: &KvPool, v_pool: &KvPool, slots: &[u32], width: usize) {
        self.k.resize(slots.len() * width, 0.0);
        self.v.resize(slots.len() * width, 0.0);
        k_pool.read_rows(slots, width, &mut self.k);
        v_pool.read_rows(slots, width, &mut self.v);
    }
}

thread_local! {
    /// A decode row's K and V rows of one KV head, per thread.
    static SCRATCH: std::cell::RefCell<Context> = std::cell::RefCell::default();
}

/// Where a query row reads its context's K and V.
enum Source<'a> {
    /// Its sequence's rows, gathered once for all of the sequence's query rows (prefill).
    Gathered(&'a Context),
    /// Straight from the pools, one KV head at a time into a small scratch buffer (a decode
    /// row: gathering the whole context would only add memory traffic).
    Pools {
        k: &'a KvPool,
        v: &'a KvPool,
        slots: &'a [u32],
        scratch: &'a mut Context,
    },
}

/// Causal attention of one query row's heads that share KV head `j`, over the first `l` rows
/// of its sequence's context (itself last). One task per (row, KV head), so that even a
/// single decode row keeps every core busy.
struct AttendRow<'a> {
    cfg: &'a LlamaConfig,
    /// KV head `j`'s query heads, already rounded to the cache's type.
    q: &'a [f32],
    j: usize,
    source: Source<'a>,
    l: usize,
    width: usize,
    dtype: KvDtype,
    out: &'a mut [f32],
}

impl AttendRow<'_> {
    /// KV head `j`'s K and V rows: `(k, v, stride)`, row `li` at `li * stride`.
    fn head_rows(&mut self, j: usize) -> (&[f32], &[f32], usize) {
        let hd = self.cfg.head_dim;
        let (l, width) = (self.l, self.width);
        match &mut self.source {
            Source::Gathered(ctx) => (&ctx.k[j * hd..], &ctx.v[j * hd..], width),
            Source::Pools {
                k,
                v,
                slots,
                scratch,
            } => {
                scratch.k.resize(l * hd, 0.0);
                scratch.v.resize(l * hd, 0.0);
                k.read_cols(&slots[..l], width, j * hd, hd, &mut scratch.k);
                v.read_cols(&slots[..l], width, j * hd, hd, &mut scratch.v);
                (&scratch.k[..], &scratch.v[..], hd)
            }
        }
    }
}

impl WithSimd for AttendRow<'_> {
    type Output = ();

    #[inline(always)]
    fn with_simd<S: Simd>(mut self, simd: S) {
        let c = self.cfg;
        let qg = self.q;
        let (h, kvh, hd) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let g = h / kvh;
        let scale = 1.0 / (hd as f32).sqrt();
        let (l, j) = (self.l, self.j);
        let mut scores = vec![0f32; g * l];
        self.out.fill(0.0);
        // Scores of the `g` query heads that share KV head `j`, one K row read for all.
        let (krows, _, stride) = self.head_rows(j);
        for li in 0..l {
            let k = &krows[li * stride..li * stride + hd];
            if g == 3 {
                let r = micro::<S, 3, 1>(simd, qg, k, hd);
                for (a, ra) in r.iter().enumerate() {
                    scores[a * l + li] = ra[0] * scale;
                }
            } else {
                for a in 0..g {
                    scores[a * l + li] = dot(simd, &qg[a * hd..(a + 1) * hd], k) * scale;
                }
            }
        }
        for (a, p) in scores.chunks_exact_mut(l).enumerate() {
            self.head(simd, j, a, p);
        }
    }
}

impl AttendRow<'_> {
    /// Softmax of the group's query head `head`'s scores `p` (over KV head `j`'s keys) and its
    /// output.
    #[inline(always)]
    fn head<S: Simd>(&mut self, simd: S, j: usize, head: usize, p: &mut [f32]) {
        let hd = self.cfg.head_dim;
        // The weights in the cache's type, as ggml multiplies them with a typed V.
        crate::vexp::softmax_rounded(p, self.dtype);
        let (v, stride) = match &self.source {
            Source::Gathered(ctx) => (&ctx.v[j * hd..], self.width),
            // Filled for head `j` by `head_rows` before the scores.
            Source::Pools { scratch, .. } => (&scratch.v[..], hd),
        };
        let o = &mut self.out[head * hd..(head + 1) * hd];
        // Register accumulators for the usual head sizes; the plain loop otherwise.
        let done = hd.is_multiple_of(S::F32_LANES)
            && match hd / S::F32_LANES {
                2 => weighted_sum::<S, 2>(simd, p, v, stride, o),
                4 => weighted_sum::<S, 4>(simd, p, v, stride, o),
                8 => weighted_sum::<S, 8>(simd, p, v, stride, o),
                16 => weighted_sum::<S, 16>(simd, p, v, stride, o),
                _ => false,
            };
        if !done {
            o.fill(0.0);
            for (li, &w) in p.iter().enumerate() {
                for (ov, &vv) in o.iter_mut().zip(&v[li * stride..li * stride + hd]) {
                    *ov += w * vv;
                }
            }
        }
    }
}

impl HostModel {
    /// Runs `batch` (already validated) over `kv`; returns the last-position logits of sampled
    /// sequences and the sequences' scored input logprobs.
    pub fn forward(&self, batch: &ForwardBatch, kv: &mut HostKv) -> Scored {
        let c = &self.config;
        let (d, h, kvh, hd) = (c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim);
        let half = hd / 2;
        let qkv_w = (h + 2 * kvh) * hd;
        let ff = c.intermediate_size;
        // Token rows: (sequence, index within its new tokens).
        let mut rows = Vec::new();
        let mut x = Vec::new();
        for (si, s) in batch.seqs.iter().enumerate() {
            for (i, &t) in s.token_ids.iter().enumerate() {
                rows.push((si, i));
                match &self.embed {
                    Embedding::Table(e) => {
                        x.extend_from_slice(&e[t as usize * d..(t as usize + 1) * d]);
                    }
                    Embedding::Rows(table) => {
                        let at = x.len();
                        x.resize(at + d, 0.0);
                        table.row(t as usize, &mut x[at..]);
                    }
                    Embedding::TiedHead => {
                        let at = x.len();
                        x.resize(at + d, 0.0);
                        self.lm_head.row(t as usize, &mut x[at..]);
                    }
                }
            }
        }
        let t = rows.len();
        let positions: Vec<usize> = batch
            .seqs
            .iter()
            .flat_map(|s| s.positions.iter().copied())
            .collect();
        let out_slots: Vec<usize> = batch
            .seqs
            .iter()
            .flat_map(|s| s.out_slots.iter().map(|&x| x as usize))
            .collect();
        let width = kv.width;
        // Per sequence, its context's K/V rows of the current layer (buffers kept across layers).
        let mut contexts: Vec<Context> = batch.seqs.iter().map(|_| Context::default()).collect();
        for (li, layer) in self.layers.iter().enumerate() {
            let hn = rms_norm_rows(&x, &layer.attn_norm, c.rms_eps);
            let mut qkv = layer.wqkv.forward(&hn, t);
            for (r, row) in qkv.chunks_exact_mut(qkv_w).enumerate() {
                if let Some(b) = &layer.bqkv {
                    for (v, bv) in row.iter_mut().zip(b) {
                        *v += bv;
                    }
                }
                let p = positions[r];
                let (cs, sn) = (
                    &self.cos[p * half..(p + 1) * half],
                    &self.sin[p * half..(p + 1) * half],
                );
                let (q, rest) = row.split_at_mut(h * hd);
                if let Some(w) = &layer.q_norm {
                    q.copy_from_slice(&rms_norm_rows(q, w, c.rms_eps));
                }
                rope(q, h, hd, cs, sn, c.rope_style);
                let (k, v) = rest.split_at_mut(kvh * hd);
                if let Some(w) = &layer.k_norm {
                    k.copy_from_slice(&rms_norm_rows(k, w, c.rms_eps));
                }
                rope(k, kvh, hd, cs, sn, c.rope_style);
                let slot = out_slots[r];
                kv.k[li].write(slot * width, k);
                kv.v[li].write(slot * width, v);
                for x in q.iter_mut() {
                    *x = kv.dtype.round(*x);
                }
            }
            let (k_pool, v_pool, dtype) = (&kv.k[li], &kv.v[li], kv.dtype);
            // Sequences with several query rows read their context once for all of them.
            contexts
                .par_iter_mut()
                .zip(batch.seqs.par_iter())
                .filter(|(_, s)| s.token_ids.len() > 1)
                .for_each(|(ctx, s)| ctx.gather(k_pool, v_pool, &s.slot_row, width));
            let mut attn = vec![0f32; t * h * hd];
            let group = h / kvh * hd;
            attn.par_chunks_mut(group)
                .enumerate()
                .for_each(|(task, out)| {
                    // Each pool thread's own scratch, kept across tasks and steps: a fresh
                    // buffer per task would map and fault in new pages every time.
                    SCRATCH.with_borrow_mut(|scratch| {
                        let (r, j) = (task / kvh, task % kvh);
                        let (si, i) = rows[r];
                        let row = &qkv[r * qkv_w..(r + 1) * qkv_w];
                        let s = &batch.seqs[si];
                        let source = if s.token_ids.len() > 1 {
                            Source::Gathered(&contexts[si])
                        } else {
                            Source::Pools {
                                k: k_pool,
                                v: v_pool,
                                slots: &s.slot_row,
                                scratch,
                            }
                        };
                        Arch::new().dispatch(AttendRow {
                            cfg: c,
                            q: &row[j * group..(j + 1) * group],
                            j,
                            source,
                            l: s.slot_row.len() - s.token_ids.len() + i + 1,
                            width,
                            dtype,
                            out,
                        });
                    })
                });
            let o = layer.wo.forward(&attn, t);
            for (xv, ov) in x.iter_mut().zip(&o) {
                *xv += ov;
            }
            let hn = rms_norm_rows(&x, &layer.ffn_norm, c.rms_eps);
            let gu = layer.w_gate_up.forward(&hn, t);
            let mut act = vec![0f32; t * ff];
            for (a, r) in act.chunks_exact_mut(ff).zip(gu.chunks_exact(2 * ff)) {
                let (gate, up) = r.split_at(ff);
                crate::vexp::silu_mul(gate, up, a);
            }
            let dn = layer.w_down.forward(&act, t);
            for (xv, dv) in x.iter_mut().zip(&dn) {
                *xv += dv;
            }
        }
        // LM head only at the last token of sampled sequences, and at scored rows.
        let head = |rows: &[usize]| -> Vec<f32> {
            let mut picked = Vec::with_capacity(rows.len() * d);
            for &r in rows {
                picked.extend_from_slice(&x[r * d..(r + 1) * d]);
            }
            self.lm_head.forward(
                &rms_norm_rows(&picked, &self.final_norm, c.rms_eps),
                rows.len(),
            )
        };
        let mut starts = Vec::with_capacity(batch.seqs.len());
        let mut rows = Vec::new();
        let mut start = 0;
        for s in &batch.seqs {
            starts.push(start);
            start += s.token_ids.len();
            if s.sample {
                rows.push(start - 1);
            }
        }
        let scored = match score_targets(batch, &starts, c.vocab_size, |r| {
            Ok::<_, std::convert::Infallible>(head(r))
        }) {
            Ok(s) => s,
            Err(never) => match never {},
        };
        let mut out = vec![None; batch.seqs.len()];
        if rows.is_empty() {
            return (out, scored);
        }
        let logits = head(&rows);
        let mut chunks = logits.chunks_exact(c.vocab_size);
        for (o, s) in out.iter_mut().zip(&batch.seqs) {
            if s.sample {
                *o = chunks.next().map(<[f32]>::to_vec);
            }
        }
        (out, scored)
    }
}
