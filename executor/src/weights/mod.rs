//! Model configuration and host-side (f32) weights, loaded from GGUF or Hugging Face directories.

use std::path::Path;
use std::sync::Arc;

use crate::error::{ExecutorError, Result};
use crate::gguf::{GgmlType, GgufFile, GgufValue};
use crate::rope::{Llama3Scaling, RopeScaling, YarnScaling};

mod load;

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
        let hidden_size = us("embedding_length")?;
        let num_heads = us("attention.head_count")?;
        let num_kv_heads = us("attention.head_count_kv").unwrap_or(num_heads);
        let head_dim = us("rope.dimension_count")
            .or_else(|_| us("attention.key_length"))
            .unwrap_or(hidden_size / num_heads.max(1));
        let rope_theta = g.get_f64(&k("rope.freq_base")).unwrap_or(10_000.0);
        let mut rope_scaling = gguf_rope_scaling(g, &k, rope_theta, head_dim)?;
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
            rope_theta: rope_theta as f32,
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
            max_position: sliding_window_cap(
                &v,
                &model_type,
                scaled_context(
                    get("max_position_embeddings").unwrap_or(4096),
                    v.get("rope_scaling").filter(|r| !r.is_null()),
                ),
            ),
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

/// The context of a Hugging Face config with sliding-window attention (Mistral's
/// `sliding_window`; Qwen2's when `use_sliding_window` is set) capped at the window: radixserve
/// attends to every earlier position, which is the same attention up to the window's length.
fn sliding_window_cap(v: &serde_json::Value, model_type: &str, max_position: usize) -> usize {
    let used = match model_type {
        "mistral" => true,
        _ => v
            .get("use_sliding_window")
            .and_then(serde_json::Value::as_bool)
            .unwrap_or(false),
    };
    let window = v
        .get("sliding_window")
        .and_then(serde_json::Value::as_u64)
        .map(|w| w as usize);
    match window {
        Some(w) if used && w > 0 && w < max_position => {
            tracing::warn!(
                window = w,
                max_position,
                "sliding-window attention: the context is capped at the window"
            );
            w
        }
        _ => max_position,
    }
}

/// GGUF `{arch}.rope.scaling.*`: none, linear or yarn (with llama.cpp's defaults for the
/// keys a file leaves out); anything else is refused by name.
fn gguf_rope_scaling(
    g: &GgufFile,
    k: &dyn Fn(&str) -> String,
    theta: f64,
    head_dim: usize,
) -> Result<RopeScaling> {
    let key = k("rope.scaling.type");
    let or = |name: &str, default: f64| g.get_f64(&k(name)).unwrap_or(default);
    match g.get(&key).and_then(GgufValue::as_str) {
        None | Some("none") => Ok(RopeScaling::none()),
        Some("linear") => Ok(RopeScaling::linear(
            g.get_f64(&k("rope.scaling.factor"))? as f32
        )),
        Some("yarn") => {
            // DeepSeek's multiplier changes the magnitude formula: not this one.
            let log_mul = k("rope.scaling.yarn_log_multiplier");
            if g.get(&log_mul).is_some() {
                return Err(ExecutorError::Metadata {
                    key: log_mul,
                    problem: "YaRN with a log multiplier (DeepSeek's) is not supported".into(),
                });
            }
            Ok(RopeScaling::yarn(
                theta,
                head_dim,
                YarnScaling {
                    factor: g.get_f64(&k("rope.scaling.factor"))?,
                    original_context: g.get_f64(&k("rope.scaling.original_context_length"))?,
                    beta_fast: or("rope.scaling.yarn_beta_fast", 32.0),
                    beta_slow: or("rope.scaling.yarn_beta_slow", 1.0),
                    attn_factor: or("rope.scaling.attn_factor", 1.0),
                },
            ))
        }
        Some(kind) => Err(ExecutorError::Metadata {
            key,
            problem: format!(
                "RoPE scaling {kind:?} is not supported (none, linear, yarn, rope_freqs)"
            ),
        }),
    }
}

/// The context a Hugging Face config serves, as SGLang reads it: `max_position_embeddings`,
/// times the factor of a `linear` or `dynamic` scaling (which extend the context; `llama3`
/// configs, and those naming `original_max_position_embeddings`, already give the extended one).
fn scaled_context(max_position: usize, rope_scaling: Option<&serde_json::Value>) -> usize {
    let Some(r) = rope_scaling else {
        return max_position;
    };
    let kind = r
        .get("rope_type")
        .or_else(|| r.get("type"))
        .and_then(serde_json::Value::as_str);
    let factor = r.get("factor").and_then(serde_json::Value::as_f64);
    match (kind, factor) {
        (Some("linear" | "dynamic"), Some(f))
            if f >= 1.0 && r.get("original_max_position_embeddings").is_none() =>
        {
            (max_position as f64 * f) as usize
        }
        _ => max_position,
    }
}

/// Hugging Face `rope_scaling`: `linear`, `llama3` and `dynamic`; anything else is refused by
/// name.
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
        "dynamic" => Ok(RopeScaling::dynamic_ntk(theta, head_dim, num("factor")?)),
        "yarn" => hf_yarn(r, theta, head_dim),
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
            "rope_scaling {r} is not supported (supported: linear, llama3, dynamic, yarn)"
        )),
    }
}

/// Hugging Face `rope_scaling` of type `yarn`, as transformers reads it (its defaults:
/// `beta_fast` 32, `beta_slow` 1, `attention_factor` `0.1 ln factor + 1`). DeepSeek's `mscale`
/// variant and `truncate: false` are refused by name.
fn hf_yarn(
    r: &serde_json::Value,
    theta: f64,
    head_dim: usize,
) -> std::result::Result<RopeScaling, String> {
    let num = |key: &str| r.get(key).and_then(serde_json::Value::as_f64);
    for key in ["mscale", "mscale_all_dim"] {
        if r.get(key).is_some_and(|v| !v.is_null()) {
            return Err(format!(
                "rope_scaling yarn with {key} (DeepSeek's) is not supported"
            ));
        }
    }
    if r.get("truncate").and_then(serde_json::Value::as_bool) == Some(false) {
        return Err("rope_scaling yarn with truncate: false is not supported".into());
    }
    let factor = num("factor").ok_or("rope_scaling \"yarn\" needs a numeric factor")?;
    let original = num("original_max_position_embeddings")
        .ok_or("rope_scaling \"yarn\" needs original_max_position_embeddings")?;
    // transformers' attention_factor replaces the whole magnitude; ggml's multiplies it.
    let attn_factor = num("attention_factor").map_or(1.0, |a| a / (1.0 + 0.1 * factor.ln()));
    Ok(RopeScaling::yarn(
        theta,
        head_dim,
        YarnScaling {
            factor,
            original_context: original,
            beta_fast: num("beta_fast").unwrap_or(32.0),
            beta_slow: num("beta_slow").unwrap_or(1.0),
            attn_factor,
        },
    ))
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

#[cfg(test)]
mod tests {
    use super::sliding_window_cap;
    use serde_json::json;

    #[test]
    fn hugging_face_yarn_is_the_yarn_gguf_files_carry() {
        use super::hf_rope_scaling;
        use crate::rope::{RopeScaling, YarnScaling};
        let gguf = RopeScaling::yarn(
            10_000.0,
            64,
            YarnScaling {
                factor: 4.0,
                original_context: 4096.0,
                beta_fast: 32.0,
                beta_slow: 1.0,
                attn_factor: 1.0,
            },
        );
        let hf = |v: serde_json::Value| hf_rope_scaling(&v, 10_000.0, 64);
        let plain = json!({"rope_type": "yarn", "factor": 4.0,
            "original_max_position_embeddings": 4096});
        assert_eq!(hf(plain).expect("yarn"), gguf);
        // The ramp runs from kept (1) to interpolated (1 / factor) frequencies.
        let f = gguf.freq_factors.as_ref().expect("divisors");
        assert_eq!((f[0], f[31]), (1.0, 4.0));
        assert!((gguf.mscale - (1.0 + 0.1 * 4f32.ln())).abs() < 1e-6);
        // transformers' attention_factor is the whole magnitude.
        let set = json!({"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 4096,
            "attention_factor": 0.8});
        assert!((hf(set).expect("yarn").mscale - 0.8).abs() < 1e-6);
        let deepseek = json!({"type": "yarn", "factor": 40.0, "mscale": 1.0,
            "original_max_position_embeddings": 4096});
        assert!(hf(deepseek).expect_err("refused").contains("mscale"));
    }

    #[test]
    fn linear_and_dynamic_factors_extend_the_context_as_sglang_reads_it() {
        use super::scaled_context;
        let r = |v: serde_json::Value| scaled_context(4096, Some(&v));
        assert_eq!(r(json!({"type": "dynamic", "factor": 2.0})), 8192);
        assert_eq!(r(json!({"rope_type": "linear", "factor": 4.0})), 16384);
        // llama3 configs (and any naming the original context) give the extended one already.
        assert_eq!(r(json!({"rope_type": "llama3", "factor": 8.0})), 4096);
        let named =
            json!({"type": "linear", "factor": 4.0, "original_max_position_embeddings": 1024});
        assert_eq!(r(named), 4096);
        assert_eq!(scaled_context(4096, None), 4096);
    }

    #[test]
    fn a_sliding_window_caps_the_context_where_the_model_uses_it() {
        let mistral = json!({"sliding_window": 4096});
        assert_eq!(sliding_window_cap(&mistral, "mistral", 32768), 4096);
        assert_eq!(
            sliding_window_cap(&json!({"sliding_window": null}), "mistral", 32768),
            32768
        );
        // Qwen2 configs carry a window they do not use unless `use_sliding_window` says so.
        let qwen = json!({"sliding_window": 4096, "use_sliding_window": false});
        assert_eq!(sliding_window_cap(&qwen, "qwen2", 32768), 32768);
        let used = json!({"sliding_window": 4096, "use_sliding_window": true});
        assert_eq!(sliding_window_cap(&used, "qwen2", 32768), 4096);
        // A window at least as long as the context changes nothing.
        assert_eq!(sliding_window_cap(&mistral, "mistral", 2048), 2048);
    }
}
