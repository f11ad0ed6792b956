//! The request-level control plane of radixserve, in the manner of SGLang's scheduler.
//!
//! A [`Scheduler`] owns the waiting queue, the running batch and the KV bookkeeping
//! ([`page_manager::KvCacheManager`]). Each [`Scheduler::step`] builds one [`ForwardBatch`]
//! (a new prefill batch first, else a decode step), hands it to a [`ModelRunner`] — the one seam
//! to the executor — and turns the sampled tokens into per-request [`Event`]s, caching prompts in
//! the radix tree as SGLang does (`cache_unfinished_req` after a prefill, `cache_finished_req` at
//! the end). Policies (`fcfs`, `lpm`, `dfs-weight`, `lof`, `random`), prefill budgets, chunked
//! prefill, retraction under memory pressure and aborts follow SGLang's semantics.
//!
//! # Example
//!
//! A model that always answers token 7, and one request run to its end:
//!
//! ```
//! use router::{
//!     Event, FinishReason, ForwardBatch, ModelError, ModelRunner, Req, SampledToken,
//!     SamplingParams, Scheduler, SchedulerConfig, StepOutput, StopConditions,
//! };
//!
//! struct Sevens;
//!
//! impl ModelRunner for Sevens {
//!     fn forward(&mut self, batch: &ForwardBatch) -> Result<StepOutput, ModelError> {
//!         // One answer per sequence; a token only where the batch asks for one.
//!         let tokens = batch
//!             .seqs
//!             .iter()
//!             .map(|s| s.sample.then_some(SampledToken::new(7, None)))
//!             .collect();
//!         Ok(StepOutput::new(tokens))
//!     }
//! }
//!
//! let mut scheduler = Scheduler::new(SchedulerConfig {
//!     num_pages: 64,
//!     context_length: 32,
//!     ..SchedulerConfig::default()
//! })?;
//! let stop = StopConditions { max_new_tokens: 3, ..StopConditions::default() };
//! scheduler.add_request(Req::new(1, vec![1, 2, 3], SamplingParams::greedy(), stop))?;
//!
//! let mut runner = Sevens;
//! let mut generated = Vec::new();
//! let mut finished = None;
//! while finished.is_none() {
//!     // The first step is the prefill (it samples the first token), then one decode per token.
//!     scheduler.step(&mut runner)?;
//!     for event in scheduler.take_events() {
//!         match event {
//!             Event::Token { token, .. } => generated.push(token),
//!             Event::Finished { reason, completion_tokens, .. } => {
//!                 finished = Some((reason, completion_tokens))
//!             }
//!             Event::Prompt { .. } | Event::Progress { .. } => {} // only when asked for
//!         }
//!     }
//! }
//! assert_eq!(generated, [7, 7, 7]);
//! assert_eq!(finished, Some((FinishReason::Length { length: 3 }, 3)));
//! assert!(scheduler.is_idle());
//! # Ok::<(), router::RouterError>(())
//! ```

mod adder;
mod batch;
mod constraint;
mod error;
mod limits;
mod policy;
mod request;
mod scheduler;

pub use adder::{AddResult, Plan, PrefillAdder};
pub use batch::{
    BatchError, ForwardBatch, ForwardMode, ModelError, ModelRunner, SampledToken, SamplingParams,
    SequenceInput, StepOutput, TokenAlternatives, MAX_LOGPROB_TOKEN_IDS, MAX_TOP_LOGPROBS,
};
pub use constraint::{ConstraintError, ConstraintState, SharedMask, TokenConstraint, TokenMask};
pub use error::RouterError;
pub use limits::TokenLimit;
pub use policy::{Policy, UnknownSchedulePolicy};
pub use request::{FinishReason, Req, ReqId, ReqStatus, StopConditions};
pub use scheduler::{
    retract_ratio, retraction_order, Counters, Event, Scheduler, SchedulerConfig, StepReport,
};

pub use page_manager::tier::{KvTransfer, TransferError};
pub use page_manager::Slot;
pub use radix_tree::{Namespace, Token};
