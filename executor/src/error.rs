//! Typed errors of the executor crate.

use std::path::PathBuf;

/// Everything that can go wrong while loading a model or running a batch.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The model file or directory does not exist.
    #[error("model file not found: {0}")]
    NotFound(PathBuf),
    /// An operating-system error while reading a file.
    #[error("cannot read {path}: {source}")]
    Io {
        /// File being read.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file ends before a structure that should be there.
    #[error(
        "truncated GGUF file: needed {needed} bytes at offset {offset} for {what}, file has {len}"
    )]
    Truncated {
        /// What was being read.
        what: String,
        /// Byte offset of the read.
        offset: usize,
        /// Bytes needed.
        needed: usize,
        /// File length.
        len: usize,
    },
    /// The file does not start with the GGUF magic.
    #[error("not a GGUF file: bad magic {0:#010x} (expected 0x46554747 \"GGUF\")")]
    BadMagic(u32),
    /// GGUF version other than 2 or 3.
    #[error("unsupported GGUF version {0} (supported: 2, 3)")]
    UnsupportedVersion(u32),
    /// A structurally invalid GGUF file (bad type tag, bad UTF-8, overflow...).
    #[error("malformed GGUF file: {0}")]
    Malformed(String),
    /// A tensor type this reader cannot dequantise.
    #[error("tensor {name}: unsupported tensor type {ty}")]
    UnsupportedTensorType {
        /// Tensor name.
        name: String,
        /// Type name or raw id.
        ty: String,
    },
    /// A model architecture other than the Llama family.
    #[error("unsupported architecture {0:?} (supported: llama, qwen2, mistral)")]
    UnsupportedArchitecture(String),
    /// A required metadata key is absent or has the wrong type.
    #[error("metadata key {key}: {problem}")]
    Metadata {
        /// Key name.
        key: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A required tensor is absent.
    #[error("missing tensor {0}")]
    MissingTensor(String),
    /// A tensor has an unexpected shape.
    #[error("tensor {name}: expected shape {expected:?}, found {found:?}")]
    Shape {
        /// Tensor name.
        name: String,
        /// Expected shape.
        expected: Vec<usize>,
        /// Actual shape.
        found: Vec<usize>,
    },
    /// Tokenizer construction or encoding failure.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Chat template parse or render failure.
    #[error("chat template: {0}")]
    Template(String),
    /// config.json or other JSON problem.
    #[error("json in {path}: {message}")]
    Json {
        /// File being parsed.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// safetensors parse failure.
    #[error("safetensors {path}: {message}")]
    Safetensors {
        /// File being parsed.
        path: PathBuf,
        /// Parser message.
        message: String,
    },
    /// A forward batch that violates the contract (lengths, slots, positions).
    #[error("invalid batch")]
    InvalidBatch(#[from] router::BatchError),
    /// A KV cache built for another model (layer count or width).
    #[error("the KV cache was built for another model: {0}")]
    KvMismatch(&'static str),
    /// The host forward path was asked for but its weights or pools are missing or misshapen.
    #[error("host forward path: {0}")]
    HostPath(&'static str),
    /// The model has no such layer.
    #[error("the model has no layer {0}")]
    NoLayer(usize),
    /// Reading a tensor back from the backend failed.
    #[error("reading a tensor back from the backend failed: {0}")]
    Readback(String),
    /// Invalid sampling parameters.
    #[error("invalid sampling parameters: {0}")]
    InvalidSampling(String),
    /// A KV cache element type this build does not offer.
    #[error("unsupported {0}")]
    Unsupported(String),
}

/// Result alias of this crate.
pub type Result<T> = std::result::Result<T, ExecutorError>;
