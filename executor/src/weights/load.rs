//! Reading weights from GGUF files and Hugging Face directories: the tensor sources, the
//! tensor names of each, and loading every tensor of a model into [`LlamaWeights`].

use std::path::Path;
use std::sync::Arc;

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};

use super::{HostMatrix, LayerWeights, LlamaConfig, LlamaWeights, QuantBlocks};
use crate::error::{ExecutorError, Result};
use crate::gguf::{GgmlType, GgufFile};

fn check_shape(name: &str, shape: &[usize], expected: &[usize]) -> Result<()> {
    if shape != expected {
        return Err(ExecutorError::Shape {
            name: name.into(),
            expected: expected.to_vec(),
            found: shape.to_vec(),
        });
    }
    Ok(())
}

trait TensorSource {
    fn load(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>>;

    /// Whether the tensor exists.
    fn has(&self, name: &str) -> Result<bool> {
        Ok(self.load(name)?.is_some())
    }

    /// The tensor as stored, with its row-major shape, when the CPU kernels take its type
    /// directly (quantised blocks, or f32/f16/bf16 values).
    fn raw_blocks(&self, _name: &str) -> Option<(Vec<usize>, QuantBlocks)> {
        None
    }

    /// [`Self::raw_blocks`] of a quantised tensor: what the host kernels read instead of a
    /// refit of its dequantised values (float tensors are not copied twice).
    fn blocks(&self, name: &str) -> Option<QuantBlocks> {
        self.raw_blocks(name)
            .map(|(_, b)| b)
            .filter(|b| !matches!(b.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16))
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<HostMatrix> {
        let (shape, data) = self
            .load(name)?
            .ok_or_else(|| ExecutorError::MissingTensor(name.into()))?;
        check_shape(name, &shape, &[rows, cols])?;
        let mut m = HostMatrix::new(rows, cols, data)?;
        m.blocks = self.blocks(name).map(Arc::new);
        Ok(m)
    }

    fn vector(&self, name: &str, n: usize) -> Result<Vec<f32>> {
        self.opt_vector(name, n)?
            .ok_or_else(|| ExecutorError::MissingTensor(name.into()))
    }

    fn opt_vector(&self, name: &str, n: usize) -> Result<Option<Vec<f32>>> {
        match self.load(name)? {
            None => Ok(None),
            Some((shape, data)) => {
                check_shape(name, &shape, &[n])?;
                Ok(Some(data))
            }
        }
    }
}

impl TensorSource for GgufFile {
    fn load(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        if self.tensor_info(name).is_none() {
            return Ok(None);
        }
        self.dequantize(name).map(Some)
    }

    fn has(&self, name: &str) -> Result<bool> {
        Ok(self.tensor_info(name).is_some())
    }

    fn raw_blocks(&self, name: &str) -> Option<(Vec<usize>, QuantBlocks)> {
        let (t, bytes) = self.tensor_bytes(name).ok()?;
        crate::kernels::ggml_convertible(t.ty).then(|| {
            let blocks = QuantBlocks {
                ty: t.ty,
                bytes: bytes.to_vec(),
            };
            (t.shape(), blocks)
        })
    }
}

/// A model read for the host model alone: a matrix the CPU kernels take as stored keeps only
/// its blocks (its `data` stays empty), so no f32 copy of it is made.
struct BlocksOnly<'a, S: TensorSource>(&'a S);

impl<S: TensorSource> TensorSource for BlocksOnly<'_, S> {
    fn has(&self, name: &str) -> Result<bool> {
        self.0.has(name)
    }

    fn load(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        self.0.load(name)
    }

    fn raw_blocks(&self, name: &str) -> Option<(Vec<usize>, QuantBlocks)> {
        self.0.raw_blocks(name)
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<HostMatrix> {
        let Some((shape, blocks)) = self.raw_blocks(name) else {
            return self.0.matrix(name, rows, cols);
        };
        check_shape(name, &shape, &[rows, cols])?;
        Ok(HostMatrix {
            rows,
            cols,
            data: Vec::new(),
            blocks: Some(Arc::new(blocks)),
        })
    }
}

struct SafetensorsSource {
    files: Vec<(std::path::PathBuf, Vec<u8>)>,
}

impl SafetensorsSource {
    /// The view of tensor `name` in whichever file has it.
    fn find<T>(
        &self,
        name: &str,
        f: impl Fn(&safetensors::tensor::TensorView<'_>) -> Result<T>,
    ) -> Result<Option<T>> {
        for (path, bytes) in &self.files {
            let st = SafeTensors::deserialize(bytes).map_err(|e| ExecutorError::Safetensors {
                path: path.clone(),
                message: e.to_string(),
            })?;
            if let Ok(view) = st.tensor(name) {
                return f(&view).map(Some);
            }
        }
        Ok(None)
    }
}

impl TensorSource for SafetensorsSource {
    fn has(&self, name: &str) -> Result<bool> {
        Ok(self.find(name, |_| Ok(()))?.is_some())
    }

    fn raw_blocks(&self, name: &str) -> Option<(Vec<usize>, QuantBlocks)> {
        self.find(name, |view| {
            let ty = match view.dtype() {
                Dtype::F32 => GgmlType::F32,
                Dtype::F16 => GgmlType::F16,
                Dtype::BF16 => GgmlType::BF16,
                _ => return Ok(None),
            };
            let blocks = QuantBlocks {
                ty,
                bytes: view.data().to_vec(),
            };
            Ok(Some((view.shape().to_vec(), blocks)))
        })
        .ok()
        .flatten()
        .flatten()
    }

    fn load(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        self.find(name, |view| {
            let raw = view.data();
            let data: Vec<f32> = match view.dtype() {
                Dtype::F32 => raw
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
                Dtype::F16 => raw
                    .chunks_exact(2)
                    .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                Dtype::BF16 => raw
                    .chunks_exact(2)
                    .map(|c| bf16::from_le_bytes([c[0], c[1]]).to_f32())
                    .collect(),
                other => {
                    return Err(ExecutorError::UnsupportedTensorType {
                        name: name.into(),
                        ty: format!("safetensors {other:?}"),
                    })
                }
            };
            Ok((view.shape().to_vec(), data))
        })
    }
}

struct Names {
    embed: &'static str,
    final_norm: &'static str,
    lm_head: &'static str,
    layer: fn(usize, &str) -> String,
}

const GGUF_NAMES: Names = Names {
    embed: "token_embd.weight",
    final_norm: "output_norm.weight",
    lm_head: "output.weight",
    layer: |i, part| {
        let n = match part {
            "attn_norm" => "attn_norm.weight",
            "wq" => "attn_q.weight",
            "wk" => "attn_k.weight",
            "wv" => "attn_v.weight",
            "bq" => "attn_q.bias",
            "bk" => "attn_k.bias",
            "bv" => "attn_v.bias",
            "wo" => "attn_output.weight",
            "ffn_norm" => "ffn_norm.weight",
            "w_gate" => "ffn_gate.weight",
            "w_up" => "ffn_up.weight",
            "q_norm" => "attn_q_norm.weight",
            "k_norm" => "attn_k_norm.weight",
            _ => "ffn_down.weight",
        };
        format!("blk.{i}.{n}")
    },
};

const HF_NAMES: Names = Names {
    embed: "model.embed_tokens.weight",
    final_norm: "model.norm.weight",
    lm_head: "lm_head.weight",
    layer: |i, part| {
        let n = match part {
            "attn_norm" => "input_layernorm.weight",
            "wq" => "self_attn.q_proj.weight",
            "wk" => "self_attn.k_proj.weight",
            "wv" => "self_attn.v_proj.weight",
            "bq" => "self_attn.q_proj.bias",
            "bk" => "self_attn.k_proj.bias",
            "bv" => "self_attn.v_proj.bias",
            "wo" => "self_attn.o_proj.weight",
            "ffn_norm" => "post_attention_layernorm.weight",
            "w_gate" => "mlp.gate_proj.weight",
            "w_up" => "mlp.up_proj.weight",
            "q_norm" => "self_attn.q_norm.weight",
            "k_norm" => "self_attn.k_norm.weight",
            _ => "mlp.down_proj.weight",
        };
        format!("model.layers.{i}.{n}")
    },
};

fn load_all(
    config: LlamaConfig,
    src: &dyn TensorSource,
    names: &Names,
    tied: bool,
) -> Result<LlamaWeights> {
    let c = &config;
    let (d, q_out, kv_out, ff) = (
        c.hidden_size,
        c.num_heads * c.head_dim,
        c.num_kv_heads * c.head_dim,
        c.intermediate_size,
    );
    let embedding = src.matrix(names.embed, c.vocab_size, d)?;
    let mut layers = Vec::with_capacity(c.num_layers);
    for i in 0..c.num_layers {
        let n = |p: &str| (names.layer)(i, p);
        layers.push(LayerWeights {
            attn_norm: src.vector(&n("attn_norm"), d)?,
            wq: src.matrix(&n("wq"), q_out, d)?,
            wk: src.matrix(&n("wk"), kv_out, d)?,
            wv: src.matrix(&n("wv"), kv_out, d)?,
            bq: src.opt_vector(&n("bq"), q_out)?,
            bk: src.opt_vector(&n("bk"), kv_out)?,
            bv: src.opt_vector(&n("bv"), kv_out)?,
            wo: src.matrix(&n("wo"), d, q_out)?,
            ffn_norm: src.vector(&n("ffn_norm"), d)?,
            w_gate: src.matrix(&n("w_gate"), ff, d)?,
            w_up: src.matrix(&n("w_up"), ff, d)?,
            w_down: src.matrix(&n("w_down"), d, ff)?,
            q_norm: src.opt_vector(&n("q_norm"), c.head_dim)?,
            k_norm: src.opt_vector(&n("k_norm"), c.head_dim)?,
        });
    }
    let final_norm = src.vector(names.final_norm, d)?;
    let lm_head = if !tied && src.has(names.lm_head)? {
        Some(src.matrix(names.lm_head, c.vocab_size, d)?)
    } else {
        None
    };
    Ok(LlamaWeights {
        config,
        embedding,
        layers,
        final_norm,
        lm_head,
    })
}

impl LlamaWeights {
    /// Loads and dequantises all weights of a GGUF model (LM head tied when `output.weight` is absent).
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let config = LlamaConfig::from_gguf(g)?;
        load_all(config, g, &GGUF_NAMES, false)
    }

    /// Loads a GGUF model for the host model alone: matrices whose blocks the CPU kernels
    /// read directly keep only their blocks (empty `data`); the rest is dequantised.
    pub(crate) fn from_gguf_blocks(g: &GgufFile) -> Result<Self> {
        let config = LlamaConfig::from_gguf(g)?;
        load_all(config, &BlocksOnly(g), &GGUF_NAMES, false)
    }

    /// Loads a Hugging Face directory: `config.json` + `*.safetensors`.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let (config, tied, src) = open_hf_dir(dir)?;
        load_all(config, &src, &HF_NAMES, tied)
    }

    /// Loads a Hugging Face directory for the host model alone: matrices keep their stored
    /// f32/f16/bf16 values (empty `data`), without an f32 copy.
    pub(crate) fn from_hf_dir_blocks(dir: &Path) -> Result<Self> {
        let (config, tied, src) = open_hf_dir(dir)?;
        load_all(config, &BlocksOnly(&src), &HF_NAMES, tied)
    }
}

/// `config.json` (with whether the LM head is tied) and the `*.safetensors` files of `dir`.
fn open_hf_dir(dir: &Path) -> Result<(LlamaConfig, bool, SafetensorsSource)> {
    if !dir.is_dir() {
        return Err(ExecutorError::NotFound(dir.to_path_buf()));
    }
    let (config, tied) = LlamaConfig::from_hf_config(&dir.join("config.json"))?;
    let mut paths: Vec<_> = std::fs::read_dir(dir)
        .map_err(|source| ExecutorError::Io {
            path: dir.to_path_buf(),
            source,
        })?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .collect();
    paths.sort();
    if paths.is_empty() {
        return Err(ExecutorError::NotFound(dir.join("*.safetensors")));
    }
    let mut files = Vec::new();
    for p in paths {
        let bytes = std::fs::read(&p).map_err(|source| ExecutorError::Io {
            path: p.clone(),
            source,
        })?;
        files.push((p, bytes));
    }
    Ok((config, tied, SafetensorsSource { files }))
}
