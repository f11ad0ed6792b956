//! What goes into and comes out of the engine: requests, streamed deltas, completions, stats.

use crate::error::EngineError;
use constrained::GrammarSpec;
use executor::ChatMessage;
use page_manager::Accounting;
use radix_tree::{CacheStats, Namespace};
use router::{
    Counters, FinishReason, SampledToken, SamplingParams, StopConditions, TokenAlternatives,
};
use std::path::PathBuf;

/// What the engine serves.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// Where the model was loaded from.
    pub model_path: PathBuf,
    /// The model's id in the API: `--served-model-name`, else the file or directory name.
    pub model_name: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest prompt plus output.
    pub context_length: usize,
    /// KV slots in the pool.
    pub kv_capacity_tokens: usize,
    /// Tokens per page.
    pub page_size: usize,
    /// The architecture as the model file names it.
    pub architecture: String,
    /// The storage type of most weights (`Q4_1`, `bfloat16`, ...).
    pub quantization: String,
    /// Element type of the K/V cache (reported as `kv_cache_dtype`).
    pub kv_cache_dtype: executor::KvDtype,
    /// End-of-sequence ids.
    pub eos_token_ids: Vec<u32>,
    /// Whether a chat template is available.
    pub has_chat_template: bool,
    /// The disk tier below the KV pool, when there is one.
    pub disk_tier: Option<DiskTierInfo>,
}

/// How the disk tier is set up (its live counters are in [`EngineStats::tier`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskTierInfo {
    /// The directory.
    pub dir: PathBuf,
    /// When blocks are written.
    pub policy: page_manager::tier::WritePolicy,
    /// Tokens per block.
    pub block_tokens: usize,
    /// The size bound.
    pub capacity_bytes: u64,
    /// Blocks found on disk at start (restored from the last run).
    pub restored_blocks: u64,
}

/// The prompt of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Plain text, tokenized as is (special tokens written in it are recognised: the caller
    /// writes its own prompt format).
    Text(String),
    /// Token ids.
    Tokens(Vec<u32>),
    /// Chat messages, rendered with the model's chat template (with the generation prompt).
    /// Special-token spellings inside message content stay plain text unless the engine was
    /// configured to trust message content.
    Chat(Vec<ChatMessage>),
    /// Chat messages whose final (assistant) message the model continues: no end of turn
    /// after it and no generation prompt (`continue_final_message`).
    ChatContinued(Vec<ChatMessage>),
}

/// One generation request.
#[derive(Debug, Clone, PartialEq)]
pub struct GenerateRequest {
    /// The prompt.
    pub input: Input,
    /// How to sample.
    pub sampling: SamplingParams,
    /// When to stop (token level).
    pub stop: StopConditions,
    /// Stop strings, matched on the decoded text and cut from it.
    pub stop_strings: Vec<String>,
    /// Keep a matched stop string at the end of the text (SGLang's `no_stop_trim`).
    pub no_stop_trim: bool,
    /// Cache namespace (a salt, a tenant): prefixes are shared only within one namespace.
    pub namespace: Namespace,
    /// Leave special tokens out of the text.
    pub skip_special_tokens: bool,
    /// Structured output: what the generated text must match.
    pub grammar: Option<GrammarSpec>,
    /// Score the prompt from this position on (SGLang's `logprob_start_len`; needs
    /// `sampling.return_logprob`): see [`Completion::input_logprobs`].
    pub logprob_start: Option<usize>,
    /// Report the prompt's progress as it is computed ([`StreamEvent::Progress`], one per
    /// computed chunk; llama.cpp's `return_progress`).
    pub report_progress: bool,
}

impl GenerateRequest {
    /// A greedy request for `input` with default stop conditions.
    pub fn new(input: Input) -> Self {
        GenerateRequest {
            input,
            sampling: SamplingParams::greedy(),
            stop: StopConditions::default(),
            stop_strings: Vec::new(),
            no_stop_trim: false,
            namespace: Namespace::shared(),
            skip_special_tokens: true,
            grammar: None,
            logprob_start: None,
            report_progress: false,
        }
    }
}

/// Token accounting of a finished request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// Prompt tokens.
    pub prompt_tokens: usize,
    /// Generated tokens.
    pub completion_tokens: usize,
    /// Prompt tokens served from the prefix cache.
    pub cached_tokens: usize,
}

/// New output of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Delta {
    /// New text (never a partial UTF-8 character; never part of a stop string).
    pub text: String,
    /// The tokens generated since the last delta.
    pub token_ids: Vec<u32>,
    /// Their log-probabilities, when requested.
    pub logprobs: Vec<f32>,
    /// Their positions' most likely and asked-about tokens, when requested.
    pub alternatives: Vec<TokenAlternatives>,
    /// The scored prompt (as [`Completion::input_logprobs`]), in the first delta that follows
    /// its scoring; empty in every other delta.
    pub input_logprobs: Vec<SampledToken>,
}

/// The end of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// Why it ended.
    pub finish_reason: FinishReason,
    /// Token counts.
    pub usage: Usage,
    /// The whole generated text.
    pub text: String,
    /// All generated token ids.
    pub token_ids: Vec<u32>,
    /// Log-probabilities of the generated tokens (empty unless requested).
    pub logprobs: Vec<f32>,
    /// Per generated token, the most likely and asked-about tokens at its position (empty
    /// unless requested).
    pub alternatives: Vec<TokenAlternatives>,
    /// The prompt tokens from `logprob_start` on, each with its log-probability under the
    /// model given the tokens before it (none for the first prompt token) and alternatives when
    /// asked; empty unless requested.
    pub input_logprobs: Vec<SampledToken>,
    /// Seconds from submission to the end.
    pub e2e_latency: f64,
    /// Seconds from submission to the first token, if one was produced.
    pub time_to_first_token: Option<f64>,
}

/// How far a request's prompt is computed (llama.cpp's `prompt_progress`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PromptProgress {
    /// Prompt tokens.
    pub total: usize,
    /// Prompt tokens served from the prefix cache.
    pub cached: usize,
    /// Prompt tokens with KV now, the cached ones included (`total` after the last chunk).
    pub processed: usize,
    /// Seconds from submission to this report.
    pub elapsed: f64,
}

/// What a [`crate::GenerationStream`] yields: deltas (and, when asked for, progress reports
/// before the first of them), then exactly one of `Done` or `Failed`.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// A chunk of the prompt was computed (only with [`GenerateRequest::report_progress`]).
    Progress(PromptProgress),
    /// Output so far.
    Delta(Delta),
    /// The request ended (finished, stopped, or aborted with a reason).
    Done(Completion),
    /// The engine stopped before the request ended (its scheduler thread died): the output is
    /// incomplete and no completion will come.
    Failed(EngineError),
}

/// Counters and accounting, refreshed after every scheduler step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EngineStats {
    /// The scheduler's counters.
    pub counters: Counters,
    /// The radix tree's counters.
    pub cache: CacheStats,
    /// Where every KV slot is.
    pub kv: Accounting,
    /// Requests waiting.
    pub waiting: usize,
    /// Requests admitted.
    pub running: usize,
    /// Scheduler steps run.
    pub steps: u64,
    /// Cache namespaces alive in the radix tree (the shared one included).
    pub namespaces: usize,
    /// The disk tier's counters, when there is one.
    pub tier: Option<page_manager::tier::TierStats>,
}
