//! Llama-family decoder over burn, with K/V stored by slot.

use std::sync::Arc;

use burn::tensor::activation::{silu, softmax};
use burn::tensor::backend::Backend;
use burn::tensor::{Int, Tensor, TensorData};

use crate::batch::{ForwardBatch, SequenceInput};
use crate::error::{ExecutorError, Result};
use crate::host::HostModel;
use crate::kernels::HostLinear;
use crate::kv_cache::{assign_rows, KvCache};
use crate::kv_dtype::KvDtype;
use crate::scoring::score_targets;
use router::SampledToken;

/// Per sequence, the last position's logits when it samples; and per sequence, its scored
/// input logprobs.
pub type Scored = (Vec<Option<Vec<f32>>>, Vec<Vec<SampledToken>>);
use crate::weights::{HostMatrix, LlamaConfig, LlamaWeights, RopeStyle};

#[derive(Clone)]
struct Layer<B: Backend> {
    attn_norm: Tensor<B, 1>,
    wqkv: Tensor<B, 2>,
    bqkv: Option<Tensor<B, 1>>,
    /// Per-head RMSNorm weights of queries and keys (Qwen3).
    q_norm: Option<Tensor<B, 1>>,
    k_norm: Option<Tensor<B, 1>>,
    wo: Tensor<B, 2>,
    ffn_norm: Tensor<B, 1>,
    w_gate_up: Tensor<B, 2>,
    w_down: Tensor<B, 2>,
    host: Option<LayerHost>,
    /// The projections' GGUF blocks, kept until the host kernels are built from them.
    blocks: Option<LayerBlocks>,
}

mod host_path;

use host_path::{block_parts, BlockPart, LayerBlocks};

#[derive(Clone)]
struct LayerHost {
    wqkv: HostLinear,
    wo: HostLinear,
    w_gate_up: HostLinear,
    w_down: HostLinear,
}

/// A Llama/Qwen2/Mistral decoder with dequantised f32 weights on a burn backend
/// (cloning shares the weight tensors).
#[derive(Clone)]
pub struct LlamaModel<B: Backend> {
    config: LlamaConfig,
    device: B::Device,
    embedding: Tensor<B, 2>,
    layers: Vec<Layer<B>>,
    final_norm: Tensor<B, 1>,
    lm_head: Tensor<B, 2>,
    rope_cos: Tensor<B, 2>,
    rope_sin: Tensor<B, 2>,
    host_lm_head: Option<HostLinear>,
    /// The LM head's GGUF blocks, kept until the host kernels are built from them.
    head_blocks: Option<Vec<BlockPart>>,
    host_max_rows: usize,
    host_model: Option<Arc<HostModel>>,
    kv_dtype: KvDtype,
    /// The LM head is the embedding matrix (tied weights).
    tied: bool,
    /// The backend copies of the weights were dropped ([`Self::release_backend_weights`]).
    released: bool,
    /// What the loaded file is.
    format: crate::runner::ModelFormat,
}

impl<B: Backend> std::fmt::Debug for LlamaModel<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaModel")
            .field("config", &self.config)
            .finish()
    }
}

pub(crate) fn to_vec<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| ExecutorError::Readback(format!("{e:?}")))
}

pub(crate) fn index<B: Backend>(ids: &[usize], device: &B::Device) -> Tensor<B, 1, Int> {
    let v: Vec<i64> = ids.iter().map(|&i| i as i64).collect();
    Tensor::from_data(TensorData::new(v, [ids.len()]), device)
}

pub(crate) fn tensor2<B: Backend>(
    data: Vec<f32>,
    shape: [usize; 2],
    device: &B::Device,
) -> Tensor<B, 2> {
    Tensor::from_data(TensorData::new(data, shape), device)
}

fn tensor1<B: Backend>(data: Vec<f32>, device: &B::Device) -> Tensor<B, 1> {
    let n = data.len();
    Tensor::from_data(TensorData::new(data, [n]), device)
}

/// `[in, out]` layout of several `[out][in]` host matrices concatenated along outputs.
fn concat_in_out(parts: &[&HostMatrix]) -> (Vec<f32>, [usize; 2]) {
    let cols = parts[0].cols;
    let out_total: usize = parts.iter().map(|p| p.rows).sum();
    let mut data = vec![0f32; cols * out_total];
    let mut off = 0;
    for p in parts {
        for r in 0..p.rows {
            for c in 0..cols {
                data[c * out_total + off + r] = p.data[r * cols + c];
            }
        }
        off += p.rows;
    }
    (data, [cols, out_total])
}

fn rms_norm<B: Backend>(x: Tensor<B, 2>, w: &Tensor<B, 1>, eps: f32) -> Tensor<B, 2> {
    let ms = x.clone().powi_scalar(2).mean_dim(1);
    let inv = ms.add_scalar(eps).sqrt().recip();
    x.mul(inv).mul(w.clone().unsqueeze_dim(0))
}

/// `[t, heads * hd]` rows as `[t, heads, hd]`, each head RMS-normalised with `w` when given.
fn head_norm<B: Backend>(
    x: Tensor<B, 2>,
    w: &Option<Tensor<B, 1>>,
    heads: usize,
    eps: f32,
) -> Tensor<B, 3> {
    let [t, width] = x.dims();
    let hd = width / heads;
    match w {
        Some(w) => rms_norm(x.reshape([t * heads, hd]), w, eps).reshape([t, heads, hd]),
        None => x.reshape([t, heads, hd]),
    }
}

impl<B: Backend> LlamaModel<B> {
    /// Uploads host weights (consumed) to `device`.
    pub fn new(weights: LlamaWeights, device: &B::Device) -> Result<Self> {
        let c = weights.config.clone();
        c.validate()?;
        let (d, vocab) = (c.hidden_size, c.vocab_size);
        let mut layers = Vec::with_capacity(c.num_layers);
        for lw in weights.layers {
            let (qkv, qkv_shape) = concat_in_out(&[&lw.wq, &lw.wk, &lw.wv]);
            let bqkv = match (&lw.bq, &lw.bk, &lw.bv) {
                (None, None, None) => None,
                (bq, bk, bv) => {
                    let z =
                        |b: &Option<Vec<f32>>, n: usize| b.clone().unwrap_or_else(|| vec![0.0; n]);
                    let mut all = z(bq, lw.wq.rows);
                    all.extend(z(bk, lw.wk.rows));
                    all.extend(z(bv, lw.wv.rows));
                    Some(tensor1(all, device))
                }
            };
            let blocks = (|| {
                Some(LayerBlocks {
                    wqkv: block_parts(&[&lw.wq, &lw.wk, &lw.wv])?,
                    wo: block_parts(&[&lw.wo])?,
                    w_gate_up: block_parts(&[&lw.w_gate, &lw.w_up])?,
                    w_down: block_parts(&[&lw.w_down])?,
                })
            })();
            let (gu, gu_shape) = concat_in_out(&[&lw.w_gate, &lw.w_up]);
            let (wo, wo_shape) = concat_in_out(&[&lw.wo]);
            let (wd, wd_shape) = concat_in_out(&[&lw.w_down]);
            layers.push(Layer {
                attn_norm: tensor1(lw.attn_norm, device),
                wqkv: tensor2(qkv, qkv_shape, device),
                bqkv,
                q_norm: lw.q_norm.map(|w| tensor1(w, device)),
                k_norm: lw.k_norm.map(|w| tensor1(w, device)),
                wo: tensor2(wo, wo_shape, device),
                ffn_norm: tensor1(lw.ffn_norm, device),
                w_gate_up: tensor2(gu, gu_shape, device),
                w_down: tensor2(wd, wd_shape, device),
                host: None,
                blocks,
            });
        }
        let tied = weights.lm_head.is_none();
        let head = weights.lm_head.as_ref().unwrap_or(&weights.embedding);
        let head_blocks = block_parts(&[head]);
        let lm_head = tensor2(head.transposed(), [d, vocab], device);
        let embedding = tensor2(weights.embedding.data, [vocab, d], device);
        // RoPE tables [max_position, head_dim / 2]: angle = pos * inv_freq(i), scaled.
        let half = c.head_dim / 2;
        let (cos, sin) = c
            .rope_scaling
            .tables(c.rope_theta, c.head_dim, c.max_position);
        Ok(Self {
            rope_cos: tensor2(cos, [c.max_position, half], device),
            rope_sin: tensor2(sin, [c.max_position, half], device),
            final_norm: tensor1(weights.final_norm, device),
            embedding,
            lm_head,
            layers,
            host_lm_head: None,
            head_blocks,
            host_max_rows: 0,
            host_model: None,
            kv_dtype: KvDtype::F32,
            tied,
            released: false,
            format: Default::default(),
            device: device.clone(),
            config: c,
        })
    }

    /// `x · w`, through the host kernel for small row counts when enabled.
    fn linear(
        &self,
        x: Tensor<B, 2>,
        w: &Tensor<B, 2>,
        host: Option<&HostLinear>,
    ) -> Result<Tensor<B, 2>> {
        let [m, _] = x.dims();
        match host {
            Some(h) if m <= self.host_max_rows => {
                let y = h.forward(&to_vec(x)?, m);
                Ok(tensor2(y, [m, h.out()], &self.device))
            }
            _ => Ok(x.matmul(w.clone())),
        }
    }

    /// Model configuration.
    pub fn config(&self) -> &LlamaConfig {
        &self.config
    }

    /// Device the weights live on.
    pub fn device(&self) -> &B::Device {
        &self.device
    }

    /// The same model with K/V caches of `dtype` values; anything but f32 needs the host
    /// forward ([`Self::with_host_kernels`] first).
    pub fn with_kv_dtype(mut self, dtype: KvDtype) -> Result<Self> {
        if dtype != KvDtype::F32 && self.host_model.is_none() {
            return Err(ExecutorError::Unsupported(format!(
                "KV cache dtype {dtype} on the burn path (only f32)"
            )));
        }
        self.kv_dtype = dtype;
        Ok(self)
    }

    /// The same model described as `format` (set by the loaders).
    pub(crate) fn with_format(mut self, format: crate::runner::ModelFormat) -> Self {
        self.format = format;
        self
    }

    /// What the loaded file is (architecture, weight storage type); empty for models built
    /// directly from weights.
    pub fn format(&self) -> &crate::runner::ModelFormat {
        &self.format
    }

    /// The element type of the K/V caches this model makes.
    pub fn kv_dtype(&self) -> KvDtype {
        self.kv_dtype
    }

    /// A KV pool of `num_slots` slots for this model (in host memory when host kernels are on).
    pub fn new_kv_cache(&self, num_slots: usize) -> KvCache<B> {
        if self.host_model.is_some() {
            KvCache::new_host(&self.config, num_slots, self.kv_dtype)
        } else {
            KvCache::new(&self.config, num_slots, &self.device)
        }
    }

    /// Applies RoPE to `x: [T, heads, head_dim]` with per-token `cos`/`sin: [T, head_dim/2]`.
    fn rope(&self, x: Tensor<B, 3>, cos: &Tensor<B, 2>, sin: &Tensor<B, 2>) -> Tensor<B, 3> {
        let [t, h, hd] = x.dims();
        let half = hd / 2;
        let (pair_dim, x4, shape) = match self.config.rope_style {
            RopeStyle::Interleaved => (3, x.reshape([t, h, half, 2]), [t, 1, half, 1]),
            RopeStyle::Neox => (2, x.reshape([t, h, 2, half]), [t, 1, 1, half]),
        };
        let full = x4.dims();
        let mut part = full;
        part[pair_dim] = 1;
        let c = cos.clone().reshape(shape).expand(part);
        let s = sin.clone().reshape(shape).expand(part);
        let x0 = x4.clone().narrow(pair_dim, 0, 1);
        let x1 = x4.narrow(pair_dim, 1, 1);
        let o0 = x0.clone().mul(c.clone()).sub(x1.clone().mul(s.clone()));
        let o1 = x0.mul(s).add(x1.mul(c));
        Tensor::cat(vec![o0, o1], pair_dim).reshape([t, h, hd])
    }

    /// Causal attention of a group of sequences, padded to a common query/key length.
    /// `q: [T, heads*hd]` packed over the whole batch; `starts[i]` is sequence i's first token.
    /// Returns `[sum of group tokens, heads*hd]` in the group's token order.
    fn attend_group(
        &self,
        q: &Tensor<B, 2>,
        k_pool: &Tensor<B, 2>,
        v_pool: &Tensor<B, 2>,
        seqs: &[(&SequenceInput, usize)],
    ) -> Tensor<B, 2> {
        let c = &self.config;
        let (h, kvh, hd) = (c.num_heads, c.num_kv_heads, c.head_dim);
        let g = h / kvh;
        let b = seqs.len();
        let n_max = seqs
            .iter()
            .map(|(s, _)| s.token_ids.len())
            .max()
            .unwrap_or(1);
        let l_max = seqs
            .iter()
            .map(|(s, _)| s.slot_row.len())
            .max()
            .unwrap_or(1);
        let mut kv_idx = vec![0usize; b * l_max];
        let mut q_idx = vec![0usize; b * n_max];
        let mut mask = vec![f32::NEG_INFINITY; b * n_max * l_max];
        let mut keep = Vec::new();
        for (bi, (s, start)) in seqs.iter().enumerate() {
            for (dst, &slot) in kv_idx[bi * l_max..].iter_mut().zip(&s.slot_row) {
                *dst = slot as usize;
            }
            let n = s.token_ids.len();
            let prefix = s.slot_row.len() - n;
            for i in 0..n_max {
                let row = &mut mask[(bi * n_max + i) * l_max..(bi * n_max + i + 1) * l_max];
                if i < n {
                    q_idx[bi * n_max + i] = start + i;
                    keep.push(bi * n_max + i);
                    row[..=prefix + i].fill(0.0);
                } else {
                    q_idx[bi * n_max + i] = *start;
                    row[0] = 0.0;
                }
            }
        }
        let dev = &self.device;
        let kv_index = index::<B>(&kv_idx, dev);
        let k = k_pool
            .clone()
            .select(0, kv_index.clone())
            .reshape([b, l_max, kvh, hd])
            .swap_dims(1, 2);
        let v = v_pool
            .clone()
            .select(0, kv_index)
            .reshape([b, l_max, kvh, hd])
            .swap_dims(1, 2);
        // q: [b, n, kvh, g, hd] -> [b, kvh, g * n, hd] (query head = kv_head * g + j).
        let qg = q
            .clone()
            .select(0, index::<B>(&q_idx, dev))
            .reshape([b, n_max, kvh, g, hd])
            .permute([0, 2, 3, 1, 4])
            .reshape([b, kvh, g * n_max, hd]);
        let scale = 1.0 / (hd as f32).sqrt();
        let scores = qg.matmul(k.swap_dims(2, 3)).mul_scalar(scale);
        let mask_t: Tensor<B, 5> =
            Tensor::<B, 2>::from_data(TensorData::new(mask, [b * n_max, l_max]), dev)
                .reshape([b, 1, 1, n_max, l_max])
                .expand([b, kvh, g, n_max, l_max]);
        let scores = scores.reshape([b, kvh, g, n_max, l_max]).add(mask_t);
        let probs = softmax(scores, 4).reshape([b, kvh, g * n_max, l_max]);
        let out = probs
            .matmul(v)
            .reshape([b, kvh, g, n_max, hd])
            .permute([0, 3, 1, 2, 4])
            .reshape([b * n_max, h * hd]);
        out.select(0, index::<B>(&keep, dev))
    }

    /// Runs the new tokens of `batch` through the model, writing their K/V into `kv` at the
    /// output slots. Returns, per sequence, the logits of its last position when `sample` is set.
    pub fn forward(
        &self,
        batch: &ForwardBatch,
        kv: &mut KvCache<B>,
    ) -> Result<Vec<Option<Vec<f32>>>> {
        Ok(self.forward_scored(batch, kv)?.0)
    }

    /// [`LlamaModel::forward`], also scoring each sequence's `logprob_targets` (input
    /// logprobs).
    pub fn forward_scored(&self, batch: &ForwardBatch, kv: &mut KvCache<B>) -> Result<Scored> {
        let c = &self.config;
        crate::batch::validate(batch, kv.num_slots, c.vocab_size, c.max_position)?;
        if let Some(hkv) = &mut kv.host {
            let hm = self.host_model.as_ref().ok_or(ExecutorError::HostPath(
                "a host KV cache needs a model with host kernels",
            ))?;
            if hkv.k.len() != c.num_layers || hkv.width != c.num_kv_heads * c.head_dim {
                return Err(ExecutorError::KvMismatch("layer count or width"));
            }
            // The whole pass on a pool thread: its parallel loops then fork and join among
            // the pool's threads, instead of each blocking and waking this thread.
            return Ok(rayon::scope(|_| hm.forward(batch, hkv)));
        }
        if self.released {
            return Err(ExecutorError::HostPath(
                "the backend weights were released: only host K/V caches run",
            ));
        }
        if kv.k.len() != c.num_layers {
            return Err(ExecutorError::KvMismatch("layer count"));
        }
        if batch.seqs.is_empty() {
            return Ok((Vec::new(), Vec::new()));
        }
        let dev = &self.device;
        let mut ids = Vec::new();
        let mut positions = Vec::new();
        let mut out_slots = Vec::new();
        let mut starts = Vec::with_capacity(batch.seqs.len());
        for s in &batch.seqs {
            starts.push(ids.len());
            ids.extend(s.token_ids.iter().map(|&t| t as usize));
            positions.extend_from_slice(&s.positions);
            out_slots.extend(s.out_slots.iter().map(|&x| x as usize));
        }
        let t = ids.len();
        let (h, kvh, hd) = (c.num_heads, c.num_kv_heads, c.head_dim);
        // Group sequences for attention: all single-token sequences together, each longer one alone.
        let mut groups: Vec<Vec<(&SequenceInput, usize)>> = Vec::new();
        let mut singles = Vec::new();
        for (s, &st) in batch.seqs.iter().zip(&starts) {
            if s.token_ids.len() == 1 {
                singles.push((s, st));
            } else {
                groups.push(vec![(s, st)]);
            }
        }
        if !singles.is_empty() {
            groups.push(singles);
        }
        let order: Vec<usize> = groups
            .iter()
            .flat_map(|g| g.iter().flat_map(|(s, st)| *st..*st + s.token_ids.len()))
            .collect();
        let identity = order.iter().enumerate().all(|(i, &o)| i == o);
        let mut inverse = vec![0usize; t];
        for (row, &tok) in order.iter().enumerate() {
            inverse[tok] = row;
        }
        let inverse_idx = (!identity).then(|| index::<B>(&inverse, dev));

        let mut x = self.embedding.clone().select(0, index::<B>(&ids, dev));
        let pos_idx = index::<B>(&positions, dev);
        let cos = self.rope_cos.clone().select(0, pos_idx.clone());
        let sin = self.rope_sin.clone().select(0, pos_idx);
        let slot_idx = index::<B>(&out_slots, dev);
        for (li, layer) in self.layers.iter().enumerate() {
            let hn = rms_norm(x.clone(), &layer.attn_norm, c.rms_eps);
            let host = layer.host.as_ref();
            let mut qkv = self.linear(hn, &layer.wqkv, host.map(|h| &h.wqkv))?;
            if let Some(b) = &layer.bqkv {
                qkv = qkv.add(b.clone().unsqueeze_dim(0));
            }
            let q = head_norm(
                qkv.clone().narrow(1, 0, h * hd),
                &layer.q_norm,
                h,
                c.rms_eps,
            );
            let k = head_norm(
                qkv.clone().narrow(1, h * hd, kvh * hd),
                &layer.k_norm,
                kvh,
                c.rms_eps,
            );
            let v = qkv.narrow(1, (h + kvh) * hd, kvh * hd);
            let q = self.rope(q, &cos, &sin).reshape([t, h * hd]);
            let k = self.rope(k, &cos, &sin).reshape([t, kvh * hd]);
            // Write K/V at the output slots (exactly: a reused slot holds the new value).
            assign_rows(&mut kv.k[li], slot_idx.clone(), k);
            assign_rows(&mut kv.v[li], slot_idx.clone(), v);
            let parts: Vec<Tensor<B, 2>> = groups
                .iter()
                .map(|g| self.attend_group(&q, &kv.k[li], &kv.v[li], g))
                .collect();
            let mut attn = if parts.len() == 1 {
                parts.into_iter().next().unwrap_or_else(|| q.clone())
            } else {
                Tensor::cat(parts, 0)
            };
            if let Some(inv) = &inverse_idx {
                attn = attn.select(0, inv.clone());
            }
            x = x.add(self.linear(attn, &layer.wo, host.map(|h| &h.wo))?);
            let hn = rms_norm(x.clone(), &layer.ffn_norm, c.rms_eps);
            let gu = self.linear(hn, &layer.w_gate_up, host.map(|h| &h.w_gate_up))?;
            let ff = c.intermediate_size;
            let gate = gu.clone().narrow(1, 0, ff);
            let up = gu.narrow(1, ff, ff);
            x = x.add(self.linear(silu(gate).mul(up), &layer.w_down, host.map(|h| &h.w_down))?);
        }
        // LM head only at the last token of sampled sequences, and at scored rows.
        let head = |rows: &[usize]| -> Result<Vec<f32>> {
            let picked = x.clone().select(0, index::<B>(rows, dev));
            to_vec(self.linear(
                rms_norm(picked, &self.final_norm, c.rms_eps),
                &self.lm_head,
                self.host_lm_head.as_ref(),
            )?)
        };
        let scored = score_targets(batch, &starts, c.vocab_size, head)?;
        let rows: Vec<usize> = batch
            .seqs
            .iter()
            .zip(&starts)
            .filter(|(s, _)| s.sample)
            .map(|(s, &st)| st + s.token_ids.len() - 1)
            .collect();
        let mut out = vec![None; batch.seqs.len()];
        if rows.is_empty() {
            return Ok((out, scored));
        }
        let flat = head(&rows)?;
        let mut chunks = flat.chunks_exact(c.vocab_size);
        for (o, s) in out.iter_mut().zip(&batch.seqs) {
            if s.sample {
                *o = chunks.next().map(<[f32]>::to_vec);
            }
        }
        Ok((out, scored))
    }
}
