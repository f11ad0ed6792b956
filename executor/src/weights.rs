//! Model configuration and host-side (f32) weights, loaded from GGUF or Hugging Face directories.

use std::path::Path;
use std::sync::Arc;

use half::{bf16, f16};
use safetensors::{Dtype, SafeTensors};

use crate::error::{ExecutorError, Result};
use crate::gguf::{GgmlType, GgufFile, GgufValue};
use crate::rope::{Llama3Scaling, RopeScaling};

/// How rotary embeddings pair up the dimensions of a head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RopeStyle {
    /// Adjacent pairs (2i, 2i+1): ggml's "normal" RoPE, right for GGUF Llama weights, whose Q/K
    /// rows llama.cpp's converter permuted.
    Interleaved,
    /// Halves (i, i + d/2): Hugging Face rotate_half / GPT-NeoX, right for HF checkpoints and
    /// GGUF qwen2 weights (which llama.cpp does not permute).
    Neox,
}

/// Shape and hyper-parameters of a Llama-family decoder.
#[derive(Debug, Clone, PartialEq)]
pub struct LlamaConfig {
    /// Vocabulary size (rows of the embedding).
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// SwiGLU inner width.
    pub intermediate_size: usize,
    /// Decoder layers.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than query heads).
    pub num_kv_heads: usize,
    /// Per-head width.
    pub head_dim: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// Longest supported position + 1 (size of the RoPE tables).
    pub max_position: usize,
    /// Pairing convention of RoPE for these weights.
    pub rope_style: RopeStyle,
    /// RoPE frequency scaling (plain by default).
    pub rope_scaling: RopeScaling,
}

impl LlamaConfig {
    /// Checks internal consistency (heads divide, head_dim even, ...).
    pub fn validate(&self) -> Result<()> {
        let bad = |p: String| {
            Err(ExecutorError::Metadata {
                key: "model config".into(),
                problem: p,
            })
        };
        if self.num_heads == 0
            || self.num_kv_heads == 0
            || !self.num_heads.is_multiple_of(self.num_kv_heads)
        {
            return bad(format!(
                "{} query heads are not a multiple of {} kv heads",
                self.num_heads, self.num_kv_heads
            ));
        }
        if self.head_dim == 0 || !self.head_dim.is_multiple_of(2) {
            return bad(format!(
                "head_dim {} must be even and positive",
                self.head_dim
            ));
        }
        if self.vocab_size == 0 || self.hidden_size == 0 || self.num_layers == 0 {
            return bad("zero-sized model".into());
        }
        self.rope_scaling.validate(self.head_dim)
    }

    /// Reads the config of a GGUF Llama/Qwen2/Mistral model.
    pub fn from_gguf(g: &GgufFile) -> Result<Self> {
        let arch = g.get_str("general.architecture")?.to_string();
        let rope_style = match arch.as_str() {
            "llama" | "mistral" => RopeStyle::Interleaved,
            "qwen2" | "qwen3" => RopeStyle::Neox,
            _ => return Err(ExecutorError::UnsupportedArchitecture(arch)),
        };
        let k = |s: &str| format!("{arch}.{s}");
        let us = |s: &str| g.get_u64(&k(s)).map(|v| v as usize);
        let mut rope_scaling = gguf_rope_scaling(g, &k)?;
        let hidden_size = us("embedding_length")?;
        let num_heads = us("attention.head_count")?;
        let num_kv_heads = us("attention.head_count_kv").unwrap_or(num_heads);
        let head_dim = us("rope.dimension_count")
            .or_else(|_| us("attention.key_length"))
            .unwrap_or(hidden_size / num_heads.max(1));
        let vocab_size = match us("vocab_size") {
            Ok(v) => v,
            Err(_) => g
                .tensor_info("token_embd.weight")
                .and_then(|t| t.dims.get(1).copied())
                .ok_or_else(|| ExecutorError::MissingTensor("token_embd.weight".into()))?,
        };
        let cfg = Self {
            vocab_size,
            hidden_size,
            intermediate_size: us("feed_forward_length")?,
            num_layers: us("block_count")?,
            num_heads,
            num_kv_heads,
            head_dim,
            rms_eps: g.get_f64(&k("attention.layer_norm_rms_epsilon"))? as f32,
            rope_theta: g.get_f64(&k("rope.freq_base")).unwrap_or(10_000.0) as f32,
            max_position: us("context_length").unwrap_or(4096),
            rope_style,
            rope_scaling: RopeScaling::none(),
        };
        // Llama 3.1+ GGUFs carry their scaling as per-frequency divisors in a tensor.
        if g.tensor_info("rope_freqs.weight").is_some() {
            rope_scaling.freq_factors = Some(g.dequantize("rope_freqs.weight")?.1);
        }
        let cfg = Self {
            rope_scaling,
            ..cfg
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads a Hugging Face `config.json` (LlamaForCausalLM, Qwen2ForCausalLM, MistralForCausalLM).
    pub fn from_hf_config(path: &Path) -> Result<(Self, bool)> {
        let text = std::fs::read_to_string(path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                ExecutorError::NotFound(path.to_path_buf())
            } else {
                ExecutorError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })?;
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| ExecutorError::Json {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let model_type = v
            .get("model_type")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("")
            .to_string();
        if !matches!(model_type.as_str(), "llama" | "qwen2" | "qwen3" | "mistral") {
            return Err(ExecutorError::UnsupportedArchitecture(model_type));
        }
        let get = |key: &str| -> Result<usize> {
            v.get(key)
                .and_then(serde_json::Value::as_u64)
                .map(|x| x as usize)
                .ok_or_else(|| ExecutorError::Json {
                    path: path.to_path_buf(),
                    message: format!("missing integer field {key}"),
                })
        };
        let f = |key: &str, default: f64| {
            v.get(key)
                .and_then(serde_json::Value::as_f64)
                .unwrap_or(default)
        };
        let hidden_size = get("hidden_size")?;
        let num_heads = get("num_attention_heads")?;
        let rope_theta = f("rope_theta", 10_000.0);
        let head_dim = get("head_dim").unwrap_or(hidden_size / num_heads.max(1));
        let rope_scaling = match v.get("rope_scaling").filter(|r| !r.is_null()) {
            None => RopeScaling::none(),
            Some(r) => {
                hf_rope_scaling(r, rope_theta, head_dim).map_err(|message| ExecutorError::Json {
                    path: path.to_path_buf(),
                    message,
                })?
            }
        };
        let cfg = Self {
            vocab_size: get("vocab_size")?,
            hidden_size,
            intermediate_size: get("intermediate_size")?,
            num_layers: get("num_hidden_layers")?,
            num_heads,
            num_kv_heads: get("num_key_value_heads").unwrap_or(num_heads),
            head_dim,
            rms_eps: f("rms_norm_eps", 1e-6) as f32,
            rope_theta: rope_theta as f32,
            max_position: get("max_position_embeddings").unwrap_or(4096),
            rope_style: RopeStyle::Neox,
            rope_scaling,
        };
        cfg.validate()?;
        let tied = v
            .get("tie_word_embeddings")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false);
        Ok((cfg, tied))
    }
}

/// GGUF `{arch}.rope.scaling.*`: none or linear; anything else is refused by name.
fn gguf_rope_scaling(g: &GgufFile, k: &dyn Fn(&str) -> String) -> Result<RopeScaling> {
    let key = k("rope.scaling.type");
    match g.get(&key).and_then(GgufValue::as_str) {
        None | Some("none") => Ok(RopeScaling::none()),
        Some("linear") => Ok(RopeScaling::linear(
            g.get_f64(&k("rope.scaling.factor"))? as f32
        )),
        Some(kind) => Err(ExecutorError::Metadata {
            key,
            problem: format!("RoPE scaling {kind:?} is not supported (none, linear, rope_freqs)"),
        }),
    }
}

/// Hugging Face `rope_scaling`: `linear` and `llama3`; anything else is refused by name.
fn hf_rope_scaling(
    r: &serde_json::Value,
    theta: f64,
    head_dim: usize,
) -> std::result::Result<RopeScaling, String> {
    let kind = r
        .get("rope_type")
        .or_else(|| r.get("type"))
        .and_then(serde_json::Value::as_str)
        .unwrap_or("");
    let num = |key: &str| {
        r.get(key)
            .and_then(serde_json::Value::as_f64)
            .ok_or_else(|| format!("rope_scaling {kind:?} needs a numeric {key}"))
    };
    match kind {
        "default" => Ok(RopeScaling::none()),
        "linear" => Ok(RopeScaling::linear(num("factor")? as f32)),
        "llama3" => Ok(RopeScaling::llama3(
            theta,
            head_dim,
            Llama3Scaling {
                factor: num("factor")?,
                low_freq_factor: num("low_freq_factor")?,
                high_freq_factor: num("high_freq_factor")?,
                original_max_position: num("original_max_position_embeddings")?,
            },
        )),
        _ => Err(format!(
            "rope_scaling {r} is not supported (supported: linear, llama3)"
        )),
    }
}

/// A row-major f32 matrix `[rows][cols]`; for projections rows = outputs, cols = inputs.
#[derive(Debug, Clone, PartialEq)]
pub struct HostMatrix {
    /// Number of rows.
    pub rows: usize,
    /// Number of columns.
    pub cols: usize,
    /// `rows * cols` values.
    pub data: Vec<f32>,
    /// The GGUF blocks `data` was dequantised from, when the CPU kernels take their type
    /// directly (so they compute from the blocks, not from a refit of `data`).
    pub blocks: Option<Arc<QuantBlocks>>,
}

/// A GGUF tensor's quantised data as stored: row-major blocks of one type.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantBlocks {
    /// The block type.
    pub ty: GgmlType,
    /// The tensor's bytes.
    pub bytes: Vec<u8>,
}

impl HostMatrix {
    /// Wraps data, checking its length.
    pub fn new(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self> {
        if data.len() != rows * cols {
            return Err(ExecutorError::Shape {
                name: "matrix".into(),
                expected: vec![rows, cols],
                found: vec![data.len()],
            });
        }
        Ok(Self {
            rows,
            cols,
            data,
            blocks: None,
        })
    }

    /// The transpose, `[cols][rows]`.
    pub fn transposed(&self) -> Vec<f32> {
        let mut out = vec![0f32; self.data.len()];
        for r in 0..self.rows {
            for c in 0..self.cols {
                out[c * self.rows + r] = self.data[r * self.cols + c];
            }
        }
        out
    }
}

/// Host weights of one decoder layer (projections `[out][in]`).
#[derive(Debug, Clone)]
pub struct LayerWeights {
    /// RMSNorm before attention.
    pub attn_norm: Vec<f32>,
    /// Query projection.
    pub wq: HostMatrix,
    /// Key projection.
    pub wk: HostMatrix,
    /// Value projection.
    pub wv: HostMatrix,
    /// Optional query bias (Qwen2).
    pub bq: Option<Vec<f32>>,
    /// Optional key bias (Qwen2).
    pub bk: Option<Vec<f32>>,
    /// Optional value bias (Qwen2).
    pub bv: Option<Vec<f32>>,
    /// Attention output projection.
    pub wo: HostMatrix,
    /// RMSNorm before the MLP.
    pub ffn_norm: Vec<f32>,
    /// SwiGLU gate projection.
    pub w_gate: HostMatrix,
    /// SwiGLU up projection.
    pub w_up: HostMatrix,
    /// MLP down projection.
    pub w_down: HostMatrix,
    /// Optional per-head RMSNorm of the queries before RoPE (Qwen3), `head_dim` values.
    pub q_norm: Option<Vec<f32>>,
    /// Optional per-head RMSNorm of the keys before RoPE (Qwen3), `head_dim` values.
    pub k_norm: Option<Vec<f32>>,
}

/// All host weights of a Llama-family model.
#[derive(Debug, Clone)]
pub struct LlamaWeights {
    /// Configuration.
    pub config: LlamaConfig,
    /// Token embedding `[vocab][hidden]`.
    pub embedding: HostMatrix,
    /// Decoder layers.
    pub layers: Vec<LayerWeights>,
    /// Final RMSNorm.
    pub final_norm: Vec<f32>,
    /// LM head `[vocab][hidden]`; `None` = tied to the embedding.
    pub lm_head: Option<HostMatrix>,
}

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

    /// The tensor's blocks, when the CPU kernels read its type directly.
    fn blocks(&self, _name: &str) -> Option<QuantBlocks> {
        None
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

    fn blocks(&self, name: &str) -> Option<QuantBlocks> {
        let (t, bytes) = self.tensor_bytes(name).ok()?;
        crate::kernels::ggml_convertible(t.ty).then(|| QuantBlocks {
            ty: t.ty,
            bytes: bytes.to_vec(),
        })
    }
}

/// A GGUF file read for the host model alone: a matrix whose blocks have a kernel layout
/// keeps only its blocks (its `data` stays empty), so no f32 copy of it is made.
struct BlocksOnly<'a>(&'a GgufFile);

impl TensorSource for BlocksOnly<'_> {
    fn has(&self, name: &str) -> Result<bool> {
        self.0.has(name)
    }

    fn load(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        self.0.load(name)
    }

    fn blocks(&self, name: &str) -> Option<QuantBlocks> {
        self.0.blocks(name)
    }

    fn matrix(&self, name: &str, rows: usize, cols: usize) -> Result<HostMatrix> {
        let Some(blocks) = self.blocks(name) else {
            return self.0.matrix(name, rows, cols);
        };
        let shape = self
            .0
            .tensor_info(name)
            .map(|t| t.shape())
            .unwrap_or_default();
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

impl TensorSource for SafetensorsSource {
    fn has(&self, name: &str) -> Result<bool> {
        for (path, bytes) in &self.files {
            let st = SafeTensors::deserialize(bytes).map_err(|e| ExecutorError::Safetensors {
                path: path.clone(),
                message: e.to_string(),
            })?;
            if st.tensor(name).is_ok() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn load(&self, name: &str) -> Result<Option<(Vec<usize>, Vec<f32>)>> {
        for (path, bytes) in &self.files {
            let st = SafeTensors::deserialize(bytes).map_err(|e| ExecutorError::Safetensors {
                path: path.clone(),
                message: e.to_string(),
            })?;
            let Ok(view) = st.tensor(name) else { continue };
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
            return Ok(Some((view.shape().to_vec(), data)));
        }
        Ok(None)
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
        load_all(config, &SafetensorsSource { files }, &HF_NAMES, tied)
    }
}

/// llama.cpp's converter permutation of Q/K rows (HF rotate-half layout -> interleaved pairs):
/// within each head, new row `2i + t` is old row `t * head_dim / 2 + i`.
pub fn permute_for_interleaved_rope(w: &HostMatrix, n_heads: usize) -> HostMatrix {
    let hd = w.rows / n_heads;
    let half_hd = hd / 2;
    let mut out = vec![0f32; w.data.len()];
    for h in 0..n_heads {
        for i in 0..half_hd {
            for t in 0..2 {
                let dst = h * hd + 2 * i + t;
                let src = h * hd + t * half_hd + i;
                out[dst * w.cols..(dst + 1) * w.cols]
                    .copy_from_slice(&w.data[src * w.cols..(src + 1) * w.cols]);
            }
        }
    }
    HostMatrix {
        rows: w.rows,
        cols: w.cols,
        data: out,
        blocks: None,
    }
}
