//! radixserve executor: loads Llama-family models (GGUF or Hugging Face), runs forward batches
//! that compute only the uncached tokens over a slot-indexed KV pool, and samples.
//!
//! The public API is what a caller needs: loading ([`load_model`], [`load_gguf`],
//! [`load_hf_dir`]), the [`Executor`] (the router's `ModelRunner`), the [`LlamaModel`] and its
//! weights for building models directly, the [`TextTokenizer`] with its chat template, and the
//! GGUF reader ([`GgufFile`]). The batch types are the router's own (`router::ForwardBatch`,
//! `router::SamplingParams`, ...); this crate does not re-export them.
//!
//! Inside: `gguf` (file reader, dequantisation), `weights` (config + host weights), `tokenizer`
//! (GGUF/HF tokenizer, chat template), `model` (burn forward, KV pool), `host` and `kernels`
//! (the CPU host path), `batch` (the contract checks), `sampling`, `runner` (the facade).
//!
//! ```no_run
//! use executor::{load_model, CpuBackend, Executor};
//!
//! let path = executor::default_model_path();
//! let (model, tokenizer) = load_model::<CpuBackend>(&path, &Default::default())?;
//! let prompt = tokenizer.encode("The capital of France is")?;
//! let runner = Executor::new(model, 4096); // a KV pool of 4,096 slots
//! # let _ = (prompt, runner);
//! # Ok::<(), executor::ExecutorError>(())
//! ```
//!
//! Chat templates are Hugging Face Jinja templates, compiled once and rendered with minijinja:
//!
//! ```
//! use executor::{ChatMessage, ChatTemplate};
//!
//! let chatml = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n\
//!               {% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
//! let template = ChatTemplate::new(chatml)?;
//! let prompt = template.render(&[ChatMessage::new("user", "Hi")], true, "", "")?;
//! assert_eq!(prompt, "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n");
//! # Ok::<(), executor::ExecutorError>(())
//! ```

mod attention;

/// Fewest rows a row-wise loop of the host step hands to another thread: below it, waking a
/// second thread costs more than the rows' work (a fork and join per loop, many per layer).
pub(crate) const MIN_ROWS: usize = 8;

mod batch;
mod error;
mod gguf;
mod host;
mod host_build;
mod kernels;
mod kv_cache;
mod kv_dtype;
mod model;
mod rope;
mod runner;
mod sampling;
mod scoring;
mod tokenizer;
mod vexp;
mod weights;

pub use error::{ExecutorError, Result};
#[cfg(any(test, feature = "testing"))]
pub use gguf::writer as gguf_writer;
pub use gguf::{GgmlType, GgufFile, GgufValue, TensorInfo};
pub use kernels::HostLinear;
pub use kv_cache::KvCache;
pub use kv_dtype::KvDtype;
pub use model::LlamaModel;
pub use rope::{Llama3Scaling, RopeScaling, YarnScaling};
pub use runner::{
    default_model_path, load_gguf, load_hf_dir, load_host_model, load_host_weights, load_model,
    Executor, ModelFormat,
};
pub use tokenizer::{
    named_chat_template, render_chat_template, ChatMessage, ChatTemplate, TextTokenizer,
    CHAT_TEMPLATE_NAMES, SPECIAL_TOKEN_MARKER,
};
pub use weights::{
    permute_for_interleaved_rope, HostMatrix, LayerWeights, LlamaConfig, LlamaWeights, QuantBlocks,
    RopeStyle,
};

/// The CPU backend (burn flex).
pub type CpuBackend = burn::backend::Flex;

/// The CUDA backend (feature `cuda`; probe for libcuda before using it).
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Cuda;

/// Re-export of burn so callers name backends and devices with the same version.
pub use burn;
