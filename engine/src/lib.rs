//! The radixserve engine (SGLang's `Engine` with its tokenizer and detokenizer managers).
//!
//! [`Engine::new`] loads a model (GGUF file or Hugging Face directory), sizes the KV pool from a
//! memory budget, and starts one scheduler thread that owns the router's [`router::Scheduler`]
//! and the executor, fed by a crossbeam channel. [`Engine::generate`] tokenizes (applying the
//! model's chat template for chat requests, with user content kept from forging control tokens)
//! and returns a [`GenerationStream`] of text deltas and a final completion with usage (prompt,
//! completion and cached tokens), readable from a thread or from async code. Dropping a stream
//! aborts its request and frees everything it held. At most `max_running_requests +
//! max_queued_requests` requests are in flight; more are refused with
//! [`EngineError::Overloaded`].

mod config;
mod detok;
mod engine;
mod error;
mod stream;
mod types;
mod worker;

pub use config::EngineConfig;
pub use detok::{IncrementalDecoder, StopMatcher};
pub use engine::{Engine, RunnerSetup};
pub use error::{EngineError, StartError};
pub use stream::GenerationStream;
pub use types::{
    Completion, Delta, EngineStats, GenerateRequest, Input, ModelInfo, StreamEvent, Usage,
};

pub use executor::{ChatMessage, TextTokenizer};
pub use radix_tree::{EvictionPolicy, Namespace};
pub use router::{FinishReason, Policy, SamplingParams, StopConditions, TokenLimit};
