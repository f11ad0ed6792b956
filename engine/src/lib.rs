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
//! [`Engine::with_runner`] starts an engine over any [`router::ModelRunner`] and any
//! [`Tokenizer`]; here a runner that always samples token 2, and a three-word tokenizer:
//!
//! ```
//! use engine::{ChatMessage, Engine, ExecutorError, GenerateRequest, Input, ModelInfo,
//!              RunnerSetup, Tokenizer};
//! use router::{ForwardBatch, ModelError, ModelRunner, SampledToken, SchedulerConfig, StepOutput};
//!
//! struct AlwaysTwo;
//! impl ModelRunner for AlwaysTwo {
//!     fn forward(&mut self, batch: &ForwardBatch) -> Result<StepOutput, ModelError> {
//!         let tokens = batch.seqs.iter()
//!             .map(|s| s.sample.then_some(SampledToken::new(2, None)))
//!             .collect();
//!         Ok(StepOutput::new(tokens))
//!     }
//! }
//!
//! const WORDS: [&str; 3] = ["<unk>", "hello", "world"];
//! struct Words;
//! impl Tokenizer for Words {
//!     fn encode(&self, text: &str, _: bool) -> Result<Vec<u32>, ExecutorError> {
//!         Ok(text.split_whitespace()
//!             .map(|w| WORDS.iter().position(|&k| k == w).unwrap_or(0) as u32)
//!             .collect())
//!     }
//!     fn encode_chat(&self, m: &[ChatMessage], _: bool, _: bool) -> Result<Vec<u32>, ExecutorError> {
//!         self.encode(&m.iter().map(|m| m.content.as_str()).collect::<Vec<_>>().join(" "), true)
//!     }
//!     fn decode(&self, ids: &[u32], _: bool) -> Result<String, ExecutorError> {
//!         Ok(ids.iter().map(|&i| WORDS[i as usize]).collect::<Vec<_>>().join(" "))
//!     }
//! }
//!
//! let setup = RunnerSetup {
//!     info: ModelInfo {
//!         model_path: "fake".into(), model_name: "fake".into(), vocab_size: 3,
//!         context_length: 64, kv_capacity_tokens: 128, page_size: 1,
//!         architecture: "fake".into(), quantization: "none".into(),
//!         kv_cache_dtype: Default::default(), eos_token_ids: vec![], has_chat_template: false, disk_tier: None,
//!     },
//!     scheduler: SchedulerConfig { num_pages: 128, context_length: 64, ..Default::default() },
//!     max_in_flight: 8,
//!     trust_message_content: false,
//! };
//! let engine = Engine::with_runner(AlwaysTwo, Words, setup)?;
//! let mut request = GenerateRequest::new(Input::Text("hello".into()));
//! request.stop.max_new_tokens = 3;
//! let done = engine.generate_blocking(request)?;
//! assert_eq!(done.text, "world world world");
//! assert_eq!(done.usage.prompt_tokens, 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod config;
mod detok;
mod device;
mod disk;
mod engine;
mod error;
mod stream;
mod tokenizer;
mod types;
mod worker;

pub use config::EngineConfig;
pub use detok::{IncrementalDecoder, StopMatcher};
pub use device::{probe_cuda, Device};
pub use engine::{Engine, RunnerSetup};
pub use error::{EngineError, StartError};
pub use stream::GenerationStream;
pub use tokenizer::Tokenizer;
pub use types::{
    Completion, Delta, DiskTierInfo, EngineStats, GenerateRequest, Input, ModelInfo,
    PromptProgress, StreamEvent, Usage,
};

pub use constrained::{compact_json, GrammarError, GrammarSpec};
pub use executor::{
    named_chat_template, ChatMessage, ExecutorError, KvDtype, TextTokenizer, CHAT_TEMPLATE_NAMES,
};
pub use page_manager::tier::{TierStats, WritePolicy};
pub use radix_tree::{EvictionPolicy, Namespace};
pub use router::{
    FinishReason, Policy, SampledToken, SamplingParams, StopConditions, TokenAlternatives,
    TokenLimit, MAX_LOGPROB_TOKEN_IDS, MAX_TOP_LOGPROBS,
};
