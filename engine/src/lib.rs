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
//!
//! [`Engine::with_runner`] starts an engine over any [`router::ModelRunner`]; here a runner that
//! always samples token 2, and a word-level tokenizer:
//!
//! ```
//! use engine::{Engine, GenerateRequest, Input, ModelInfo, RunnerSetup, TextTokenizer};
//! use router::{ForwardBatch, ModelError, ModelRunner, SampledToken, SchedulerConfig, StepOutput};
//!
//! struct AlwaysTwo;
//! impl ModelRunner for AlwaysTwo {
//!     fn forward(&mut self, batch: &ForwardBatch) -> Result<StepOutput, ModelError> {
//!         let tokens = batch.seqs.iter()
//!             .map(|s| s.sample.then_some(SampledToken { token: 2, logprob: None }))
//!             .collect();
//!         Ok(StepOutput { tokens })
//!     }
//! }
//!
//! let dir = std::env::temp_dir().join(format!("engine-doc-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! std::fs::write(dir.join("tokenizer.json"), r#"{"version": "1.0", "added_tokens": [],
//!     "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null,
//!     "decoder": null,
//!     "model": {"type": "WordLevel", "vocab": {"<unk>": 0, "hello": 1, "world": 2},
//!               "unk_token": "<unk>"}}"#)?;
//! let tokenizer = TextTokenizer::from_hf_dir(&dir)?;
//! let setup = RunnerSetup {
//!     info: ModelInfo {
//!         model_path: "fake".into(), model_name: "fake".into(), vocab_size: 3,
//!         context_length: 64, kv_capacity_tokens: 128, page_size: 1,
//!         eos_token_ids: vec![], has_chat_template: false,
//!     },
//!     scheduler: SchedulerConfig { num_pages: 128, context_length: 64, ..Default::default() },
//!     max_in_flight: 8,
//!     trust_message_content: false,
//! };
//! let engine = Engine::with_runner(AlwaysTwo, tokenizer, setup)?;
//! let mut request = GenerateRequest::new(Input::Text("hello".into()));
//! request.stop.max_new_tokens = 3;
//! let done = engine.generate_blocking(request)?;
//! assert_eq!(done.text, "world world world");
//! assert_eq!(done.usage.prompt_tokens, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

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

pub use executor::{ChatMessage, ExecutorError, TextTokenizer};
pub use radix_tree::{EvictionPolicy, Namespace};
pub use router::{FinishReason, Policy, SamplingParams, StopConditions, TokenLimit};
