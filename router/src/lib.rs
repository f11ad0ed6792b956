//! The request-level control plane of radixserve, in the manner of SGLang's scheduler.
//!
//! A [`Scheduler`] owns the waiting queue, the running batch and the KV bookkeeping
//! ([`page_manager::KvCacheManager`]). Each [`Scheduler::step`] builds one [`ForwardBatch`]
//! (a new prefill batch first, else a decode step), hands it to a [`ModelRunner`] — the one seam
//! to the executor — and turns the sampled tokens into per-request [`Event`]s, caching prompts in
//! the radix tree as SGLang does (`cache_unfinished_req` after a prefill, `cache_finished_req` at
//! the end). Policies (`fcfs`, `lpm`, `dfs-weight`, `lof`, `random`), prefill budgets, chunked
//! prefill, retraction under memory pressure and aborts follow SGLang's semantics.

mod adder;
mod batch;
mod error;
mod limits;
mod policy;
mod request;
mod scheduler;

pub use adder::{AddResult, Plan, PrefillAdder};
pub use batch::{
    ForwardBatch, ForwardMode, ModelError, ModelRunner, SampledToken, SamplingParams,
    SequenceInput, StepOutput,
};
pub use error::RouterError;
pub use limits::TokenLimit;
pub use policy::{Policy, UnknownSchedulePolicy};
pub use request::{FinishReason, Req, ReqId, ReqStatus, StopConditions};
pub use scheduler::{
    retract_ratio, retraction_order, Counters, Event, Scheduler, SchedulerConfig, StepReport,
};

pub use page_manager::Slot;
pub use radix_tree::{Namespace, Token};
