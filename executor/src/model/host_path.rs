//! The host path of [`LlamaModel`]: host kernels beside a burn model
//! ([`LlamaModel::with_host_kernels`], then [`LlamaModel::release_backend_weights`]), or a model
//! that is the host model alone ([`LlamaModel::from_host`], the CPU device's: no burn weights at
//! all).

use std::sync::Arc;

use burn::tensor::backend::Backend;
use burn::tensor::Tensor;

use super::{to_vec, Layer, LayerHost, LlamaModel};
use crate::error::{ExecutorError, Result};
use crate::host::{Embedding, HostLayer, HostModel};
use crate::kernels::HostLinear;
use crate::kv_dtype::KvDtype;
use crate::weights::{HostMatrix, QuantBlocks};

/// GGUF blocks of one layer's projections, in the fused order of the host kernels.
#[derive(Clone, Debug)]
pub(super) struct LayerBlocks {
    pub(super) wqkv: Vec<BlockPart>,
    pub(super) wo: Vec<BlockPart>,
    pub(super) w_gate_up: Vec<BlockPart>,
    pub(super) w_down: Vec<BlockPart>,
}

/// One tensor of a fused projection: its rows and blocks.
pub(super) type BlockPart = (usize, Arc<QuantBlocks>);

/// The blocks of `parts` (rows and blocks of each), if every one has blocks.
pub(super) fn block_parts(parts: &[&HostMatrix]) -> Option<Vec<BlockPart>> {
    parts
        .iter()
        .map(|m| m.blocks.clone().map(|b| (m.rows, b)))
        .collect()
}

/// The host kernel of a fused projection read straight from its GGUF blocks, if they have
/// kernel layouts.
fn host_from_blocks(inp: usize, parts: &[BlockPart]) -> Option<HostLinear> {
    let tensors: Vec<_> = parts
        .iter()
        .map(|(rows, b)| (b.ty, *rows, b.bytes.as_slice()))
        .collect();
    HostLinear::from_ggml(inp, &tensors)
}

impl<B: Backend> LlamaModel<B> {
    /// Turns on the host path for CPU backends (`max_rows = 0` turns it off): the weights are
    /// read back to host memory once, projections kept as GGUF-style Q4_1/Q8_0 blocks where
    /// that is exact (else f32), and KV caches made by [`Self::new_kv_cache`] then live in host
    /// memory, where [`Self::forward`] runs every batch, prefill and decode of any size, on
    /// both cores ([`crate::host`]). With a backend KV cache ([`KvCache::new`]) the burn forward
    /// still runs and only its projections of at most `max_rows` rows use the host kernel.
    pub fn with_host_kernels(mut self, max_rows: usize) -> Result<Self> {
        if self.released {
            return Err(ExecutorError::HostPath("the backend weights were released"));
        }
        let host = |w: &Tensor<B, 2>| -> Result<HostLinear> {
            let [inp, out] = w.dims();
            let data = to_vec(w.clone())?;
            let t = HostMatrix::new(inp, out, data)?.transposed();
            HostLinear::new(inp, out, t).ok_or(ExecutorError::HostPath("host weight shape"))
        };
        // From the GGUF blocks when they have kernel layouts, else from the backend's f32.
        let from = |w: &Tensor<B, 2>, parts: Option<&Vec<BlockPart>>| -> Result<HostLinear> {
            match parts.and_then(|p| host_from_blocks(w.dims()[0], p)) {
                Some(h) => Ok(h),
                None => host(w),
            }
        };
        if max_rows > 0 {
            for l in &mut self.layers {
                if l.host.is_none() {
                    let b = l.blocks.take();
                    l.host = Some(LayerHost {
                        wqkv: from(&l.wqkv, b.as_ref().map(|b| &b.wqkv))?,
                        wo: from(&l.wo, b.as_ref().map(|b| &b.wo))?,
                        w_gate_up: from(&l.w_gate_up, b.as_ref().map(|b| &b.w_gate_up))?,
                        w_down: from(&l.w_down, b.as_ref().map(|b| &b.w_down))?,
                    });
                }
            }
            if self.host_lm_head.is_none() {
                let b = self.head_blocks.take();
                self.host_lm_head = Some(from(&self.lm_head, b.as_ref())?);
            }
            self.host_model = Some(Arc::new(self.build_host_model()?));
            let bytes: usize = self
                .layers
                .iter()
                .filter_map(|l| l.host.as_ref())
                .flat_map(|h| [&h.wqkv, &h.wo, &h.w_gate_up, &h.w_down])
                .chain(self.host_lm_head.as_ref())
                .map(HostLinear::weight_bytes)
                .sum();
            tracing::info!(
                weight_bytes = bytes,
                lm_head = self
                    .host_lm_head
                    .as_ref()
                    .map_or("none".into(), HostLinear::format),
                layers =
                    self.layers
                        .first()
                        .and_then(|l| l.host.as_ref())
                        .map_or("none".into(), |h| {
                            [&h.wqkv, &h.wo, &h.w_gate_up, &h.w_down]
                                .map(HostLinear::format)
                                .join(", ")
                        }),
                "host kernels ready"
            );
        } else {
            for l in &mut self.layers {
                l.host = None;
            }
            self.host_lm_head = None;
            self.host_model = None;
            // Typed caches need the host forward.
            self.kv_dtype = KvDtype::F32;
        }
        self.host_max_rows = max_rows;
        Ok(self)
    }

    /// Drops the backend (burn) copies of the weights once the host forward has its own, so
    /// that only the compact host weights stay resident. The model then runs on host K/V
    /// caches only; a backend cache is refused.
    pub fn release_backend_weights(mut self) -> Result<Self> {
        if self.host_model.is_none() {
            return Err(ExecutorError::HostPath(
                "releasing the backend weights needs the host forward",
            ));
        }
        let dev = self.device.clone();
        let empty2 = || Tensor::<B, 2>::zeros([1, 1], &dev);
        let empty1 = || Tensor::<B, 1>::zeros([1], &dev);
        for l in &mut self.layers {
            l.attn_norm = empty1();
            l.wqkv = empty2();
            l.bqkv = None;
            l.wo = empty2();
            l.ffn_norm = empty1();
            l.w_gate_up = empty2();
            l.w_down = empty2();
            l.host = None;
        }
        self.embedding = empty2();
        self.lm_head = empty2();
        self.final_norm = empty1();
        self.rope_cos = empty2();
        self.rope_sin = empty2();
        self.host_lm_head = None;
        self.released = true;
        Ok(self)
    }

    /// Host copies of everything the host forward needs (projections from the layer hosts).
    fn build_host_model(&self) -> Result<HostModel> {
        let mut layers = Vec::with_capacity(self.layers.len());
        for l in &self.layers {
            let h = l
                .host
                .as_ref()
                .ok_or(ExecutorError::HostPath("host weights missing"))?;
            layers.push(HostLayer {
                attn_norm: to_vec(l.attn_norm.clone())?,
                bqkv: l.bqkv.clone().map(to_vec).transpose()?,
                q_norm: l.q_norm.clone().map(to_vec).transpose()?,
                k_norm: l.k_norm.clone().map(to_vec).transpose()?,
                wqkv: h.wqkv.clone(),
                wo: h.wo.clone(),
                ffn_norm: to_vec(l.ffn_norm.clone())?,
                w_gate_up: h.w_gate_up.clone(),
                w_down: h.w_down.clone(),
            });
        }
        Ok(HostModel {
            config: self.config.clone(),
            embed: if self.tied {
                Embedding::TiedHead
            } else {
                Embedding::Table(to_vec(self.embedding.clone())?)
            },
            layers,
            final_norm: to_vec(self.final_norm.clone())?,
            lm_head: self
                .host_lm_head
                .clone()
                .ok_or(ExecutorError::HostPath("host LM head missing"))?,
            cos: to_vec(self.rope_cos.clone())?,
            sin: to_vec(self.rope_sin.clone())?,
        })
    }

    /// A model that is `host` alone, for the CPU device: the host forward runs every batch and
    /// no burn weights exist (as after [`Self::release_backend_weights`]); its K/V caches hold
    /// f32 values until [`Self::with_kv_dtype`] says otherwise.
    pub(crate) fn from_host(
        host: HostModel,
        format: crate::runner::ModelFormat,
        device: &B::Device,
    ) -> Self {
        let empty2 = || Tensor::<B, 2>::zeros([1, 1], device);
        let empty1 = || Tensor::<B, 1>::zeros([1], device);
        let layers = (0..host.config.num_layers)
            .map(|_| Layer {
                attn_norm: empty1(),
                wqkv: empty2(),
                bqkv: None,
                q_norm: None,
                k_norm: None,
                wo: empty2(),
                ffn_norm: empty1(),
                w_gate_up: empty2(),
                w_down: empty2(),
                host: None,
                blocks: None,
            })
            .collect();
        LlamaModel {
            config: host.config.clone(),
            device: device.clone(),
            embedding: empty2(),
            layers,
            final_norm: empty1(),
            lm_head: empty2(),
            rope_cos: empty2(),
            rope_sin: empty2(),
            host_lm_head: None,
            head_blocks: None,
            host_max_rows: usize::MAX,
            tied: matches!(host.embed, Embedding::TiedHead),
            host_model: Some(Arc::new(host)),
            kv_dtype: KvDtype::F32,
            released: true,
            format,
        }
    }

    /// How the host forward holds each projection, for logs and tests: per layer the fused
    /// Q/K/V, the attention output, the fused gate/up and the down projection, then the LM head
    /// (a [`HostLinear::format`] each); empty without the host forward.
    pub fn host_layouts(&self) -> Vec<String> {
        let Some(h) = &self.host_model else {
            return Vec::new();
        };
        h.layers
            .iter()
            .flat_map(|l| [&l.wqkv, &l.wo, &l.w_gate_up, &l.w_down])
            .chain([&h.lm_head])
            .map(HostLinear::format)
            .collect()
    }
}
