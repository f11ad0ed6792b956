//! The host model built straight from loaded weights, for the CPU device: no burn model and,
//! for GGUF files, no f32 copy of any projection whose blocks have a kernel layout (the
//! weights go from the file's blocks to [`HostLinear`]'s layouts, see
//! [`crate::kernels::HostLinear::from_ggml`]).

use crate::error::{ExecutorError, Result};
use crate::gguf::dequantize_into;
use crate::host::{Embedding, HostLayer, HostModel};
use crate::kernels::HostLinear;
use crate::weights::{HostMatrix, LlamaWeights};

/// The f32 values of `m`: its data, or its blocks dequantised when only those were kept.
fn values(m: &HostMatrix) -> Result<Vec<f32>> {
    if !m.data.is_empty() || m.rows * m.cols == 0 {
        return Ok(m.data.clone());
    }
    let blocks = m
        .blocks
        .as_ref()
        .ok_or(ExecutorError::HostPath("a matrix without values"))?;
    let mut out = vec![0f32; m.rows * m.cols];
    dequantize_into(blocks.ty, &blocks.bytes, &mut out).map_err(|ty| {
        ExecutorError::UnsupportedTensorType {
            name: "matrix".into(),
            ty,
        }
    })?;
    Ok(out)
}

/// The projection of `parts` (matrices `[rows][inp]` stacked along their rows): from their
/// GGUF blocks when every one has a kernel layout, else from f32 values (kept in Q4_1/Q8_0
/// blocks where that is exact).
pub(crate) fn linear(parts: &[&HostMatrix]) -> Result<HostLinear> {
    let inp = parts.first().map_or(0, |m| m.cols);
    let blocks: Option<Vec<_>> = parts
        .iter()
        .map(|m| {
            m.blocks
                .as_ref()
                .map(|b| (b.ty, m.rows, b.bytes.as_slice()))
        })
        .collect();
    if let Some(lin) = blocks.and_then(|t| HostLinear::from_ggml(inp, &t)) {
        return Ok(lin);
    }
    let mut w = Vec::with_capacity(parts.iter().map(|m| m.rows * inp).sum());
    for m in parts {
        w.extend(values(m)?);
    }
    let out = parts.iter().map(|m| m.rows).sum();
    HostLinear::new(inp, out, w).ok_or(ExecutorError::HostPath("host weight shape"))
}

/// `bq`, `bk`, `bv` as one vector (zeros for the missing ones), if any is present.
fn fused_bias(parts: [(&Option<Vec<f32>>, usize); 3]) -> Option<Vec<f32>> {
    parts.iter().any(|(b, _)| b.is_some()).then(|| {
        parts
            .iter()
            .flat_map(|&(b, n)| b.clone().unwrap_or_else(|| vec![0.0; n]))
            .collect()
    })
}

impl HostModel {
    /// The host model of `w` (consumed).
    pub(crate) fn from_weights(w: LlamaWeights) -> Result<Self> {
        let c = w.config;
        c.validate()?;
        let mut layers = Vec::with_capacity(w.layers.len());
        for l in w.layers {
            layers.push(HostLayer {
                bqkv: fused_bias([(&l.bq, l.wq.rows), (&l.bk, l.wk.rows), (&l.bv, l.wv.rows)]),
                wqkv: linear(&[&l.wq, &l.wk, &l.wv])?,
                wo: linear(&[&l.wo])?,
                w_gate_up: linear(&[&l.w_gate, &l.w_up])?,
                w_down: linear(&[&l.w_down])?,
                attn_norm: l.attn_norm,
                ffn_norm: l.ffn_norm,
                q_norm: l.q_norm,
                k_norm: l.k_norm,
            });
        }
        let (lm_head, embed) = match &w.lm_head {
            None => (linear(&[&w.embedding])?, Embedding::TiedHead),
            Some(head) => {
                let embed = match w.embedding.blocks {
                    Some(_) => Embedding::Rows(linear(&[&w.embedding])?),
                    None => Embedding::Table(w.embedding.data),
                };
                (linear(&[head])?, embed)
            }
        };
        let (cos, sin) = c
            .rope_scaling
            .tables(c.rope_theta, c.head_dim, c.max_position);
        Ok(HostModel {
            config: c,
            embed,
            layers,
            final_norm: w.final_norm,
            lm_head,
            cos,
            sin,
        })
    }
}
