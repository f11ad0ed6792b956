//! The whole forward pass on the host, for CPU backends: projections through
//! [`crate::kernels::HostLinear`] (compact weights, both cores), norms, RoPE and attention as
//! plain loops over a host K/V pool. No strided tensor copies, no padding of decode batches to
//! the longest sequence, and every token row is computed the same way whatever else is in the
//! batch (batch-invariant). The burn forward in [`crate::model`] stays the reference.

use rayon::prelude::*;

use crate::attention::{self, Layer, Pools, PrefixKv};
use crate::batch::ForwardBatch;
use crate::kernels::HostLinear;
use crate::kv_dtype::{KvDtype, KvPool};
use crate::model::Scored;
use crate::scoring::score_targets;
use crate::weights::{LlamaConfig, RopeStyle};
use crate::MIN_ROWS;

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

/// RMSNorm of each `w.len()`-wide row of `x`, rows in parallel.
fn rms_norm_rows(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let d = w.len();
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(d)
        .zip(x.par_chunks(d))
        .with_min_len(MIN_ROWS)
        .for_each(|(o, r)| rms_norm(r, w, eps, o));
    out
}

/// RMSNorm of one row `r` into `o`.
fn rms_norm(r: &[f32], w: &[f32], eps: f32, o: &mut [f32]) {
    let ms = r.iter().map(|v| v * v).sum::<f32>() / w.len() as f32;
    let inv = 1.0 / (ms + eps).sqrt();
    for ((o, &v), &g) in o.iter_mut().zip(r).zip(w) {
        *o = v * inv * g;
    }
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
        // Per sequence of many new tokens, its context's keys and values of the current layer,
        // widened head by head (buffers kept across layers).
        let mut contexts: Vec<PrefixKv> = batch.seqs.iter().map(|_| PrefixKv::default()).collect();
        let plan = attention::plan(batch, &rows);
        // Per decode-group prefix, its keys and values of the current layer, widened once.
        let mut prefixes: Vec<PrefixKv> =
            plan.prefixes.iter().map(|_| PrefixKv::default()).collect();
        for (li, layer) in self.layers.iter().enumerate() {
            let hn = rms_norm_rows(&x, &layer.attn_norm, c.rms_eps);
            let mut qkv = layer.wqkv.forward(&hn, t);
            // Bias, per-head norms and RoPE row by row in parallel; queries rounded to the
            // cache's type as the keys are by the store below.
            let dtype = kv.dtype;
            qkv.par_chunks_exact_mut(qkv_w)
                .zip(positions.par_iter())
                .with_min_len(MIN_ROWS)
                .for_each(|(row, &p)| {
                    if let Some(b) = &layer.bqkv {
                        for (v, bv) in row.iter_mut().zip(b) {
                            *v += bv;
                        }
                    }
                    let (cs, sn) = (
                        &self.cos[p * half..(p + 1) * half],
                        &self.sin[p * half..(p + 1) * half],
                    );
                    let (q, rest) = row.split_at_mut(h * hd);
                    if let Some(w) = &layer.q_norm {
                        for head in q.chunks_exact_mut(hd) {
                            let r = head.to_vec();
                            rms_norm(&r, w, c.rms_eps, head);
                        }
                    }
                    rope(q, h, hd, cs, sn, c.rope_style);
                    let k = &mut rest[..kvh * hd];
                    if let Some(w) = &layer.k_norm {
                        for head in k.chunks_exact_mut(hd) {
                            let r = head.to_vec();
                            rms_norm(&r, w, c.rms_eps, head);
                        }
                    }
                    rope(k, kvh, hd, cs, sn, c.rope_style);
                    dtype.round_slice(q);
                });
            for (row, &slot) in qkv.chunks_exact(qkv_w).zip(&out_slots) {
                let (k, v) = row[h * hd..].split_at(kvh * hd);
                kv.k[li].write(slot * width, k);
                kv.v[li].write(slot * width, v);
            }
            let (k_pool, v_pool, dtype) = (&kv.k[li], &kv.v[li], kv.dtype);
            let pools = Pools {
                k: k_pool,
                v: v_pool,
                width,
            };
            // Sequences with many query rows read their context once for all of them.
            for (ctx, s) in contexts.iter_mut().zip(&batch.seqs) {
                if attention::gathers(s.token_ids.len()) {
                    ctx.gather(pools, &s.slot_row, kvh, hd);
                }
            }
            for (buf, p) in prefixes.iter_mut().zip(&plan.prefixes) {
                buf.gather(pools, &batch.seqs[p.seq].slot_row[..p.len], kvh, hd);
            }
            let attn = Layer {
                cfg: c,
                batch,
                rows: &rows,
                qkv: &qkv,
                qkv_w,
                contexts: &contexts,
                k: k_pool,
                v: v_pool,
                width,
                dtype,
                prefixes: &prefixes,
            }
            .attend(&plan.tasks);
            let o = layer.wo.forward(&attn, t);
            for (xv, ov) in x.iter_mut().zip(&o) {
                *xv += ov;
            }
            let hn = rms_norm_rows(&x, &layer.ffn_norm, c.rms_eps);
            let gu = layer.w_gate_up.forward(&hn, t);
            let mut act = vec![0f32; t * ff];
            act.par_chunks_mut(ff)
                .zip(gu.par_chunks(2 * ff))
                .with_min_len(MIN_ROWS)
                .for_each(|(a, r)| {
                    let (gate, up) = r.split_at(ff);
                    crate::vexp::silu_mul(gate, up, a);
                });
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
        let mut per_row: Vec<Vec<f32>> = logits
            .par_chunks_exact(c.vocab_size)
            .with_min_len(MIN_ROWS)
            .map(<[f32]>::to_vec)
            .collect();
        per_row.reverse();
        for (o, s) in out.iter_mut().zip(&batch.seqs) {
            if s.sample {
                *o = per_row.pop();
            }
        }
        (out, scored)
    }
}
