//! The radixserve engine (SGLang's `Engine` with its tokenizer and detokenizer managers).
//!
//! [`Engine::new`] loads a model (GGUF file or Hugging Face directory), sizes the KV pool from a
//! memory budget, and starts one scheduler thread that owns the router's [`router::Scheduler`]
//! and the executor, fed by a crossbeam channel. [`Engine::generate`] tokenizes (applying the
//! model's chat template for chat requests) and returns a [`GenerationStream`] of text deltas and
//! a final completion with usage (prompt, completion and cached tokens). Dropping a stream aborts
//! its request and frees everything it held.

mod detok;
mod engine;
mod error;

pub use detok::{IncrementalDecoder, StopMatcher};
pub use engine::{
    Completion, Delta, Engine, EngineConfig, EngineStats, GenerateRequest, GenerationStream, Input,
    ModelInfo, StreamEvent, Usage,
};
pub use error::EngineError;

pub use executor::ChatMessage;
pub use radix_tree::{EvictionPolicy, Namespace};
pub use router::{FinishReason, Policy, SamplingParams, StopConditions};
