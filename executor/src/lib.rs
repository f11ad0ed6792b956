//! radixserve executor: loads Llama-family models (GGUF or Hugging Face), runs forward batches
//! that compute only the uncached tokens over a slot-indexed KV pool, and samples.
//!
//! Layout: [`gguf`] (file reader, dequantisation), [`weights`] (config + host weights),
//! [`tokenizer`] (GGUF/HF tokenizer, chat template), [`model`] (burn forward, KV pool),
//! [`batch`] (the ForwardBatch mirror), [`sampling`], [`runner`] (the facade).

pub mod batch;
pub mod error;
pub mod gguf;
mod host;
pub mod kernels;
pub mod model;
pub mod runner;
pub mod sampling;
pub mod tokenizer;
pub mod weights;

pub use batch::{ForwardBatch, ForwardMode, SampledToken, SequenceInput, StepOutput};
pub use error::{ExecutorError, Result};
pub use model::{KvCache, LlamaModel};
pub use runner::{default_model_path, load_gguf, load_hf_dir, load_model, Executor};
pub use sampling::SamplingParams;
pub use tokenizer::{ChatMessage, ChatTemplate, TextTokenizer};
pub use weights::{LlamaConfig, LlamaWeights, RopeStyle};

/// The CPU backend (burn flex).
pub type CpuBackend = burn::backend::Flex;

/// The CUDA backend (feature `cuda`; probe for libcuda before using it).
#[cfg(feature = "cuda")]
pub type CudaBackend = burn::backend::Cuda;

/// Re-export of burn so callers name backends and devices with the same version.
pub use burn;
