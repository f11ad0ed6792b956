//! The engine: a scheduler thread fed by a channel, and per-request output streams.

use crate::detok::{IncrementalDecoder, StopMatcher};
use crate::error::EngineError;
use crossbeam_channel::{unbounded, Receiver, Sender};
use executor::{ChatMessage, TextTokenizer};
use page_manager::{Accounting, KvCapacity, KvDims};
use radix_tree::{CacheStats, EvictionPolicy, Namespace};
use router::{
    Counters, Event, FinishReason, ModelRunner, Policy, Req, ReqId, SamplingParams, Scheduler,
    SchedulerConfig, StopConditions,
};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How to build an [`Engine`]; the names mirror SGLang's server arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// A GGUF file or a Hugging Face directory.
    pub model: PathBuf,
    /// Tokens per KV page (`--page-size`).
    pub page_size: usize,
    /// Turn prefix caching off (`--disable-radix-cache`).
    pub disable_radix_cache: bool,
    /// Waiting-queue order (`--schedule-policy`).
    pub schedule_policy: Policy,
    /// Cache eviction order (`--radix-eviction-policy`).
    pub eviction_policy: EvictionPolicy,
    /// Prompt chunk size (`--chunked-prefill-size`); `None` disables chunking.
    pub chunked_prefill_size: Option<usize>,
    /// Prompt tokens per prefill batch (`--max-prefill-tokens`).
    pub max_prefill_tokens: usize,
    /// Requests decoding at once (`--max-running-requests`).
    pub max_running_requests: usize,
    /// Bytes of K/V cache (`--kv-cache-memory`).
    pub kv_cache_memory: usize,
    /// Longest prompt plus output; `None` takes the model's.
    pub context_length: Option<usize>,
    /// Check the full KV accounting after every scheduler step.
    pub check_invariants: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            model: executor::default_model_path(),
            page_size: 1,
            disable_radix_cache: false,
            schedule_policy: Policy::Lpm,
            eviction_policy: EvictionPolicy::Lru,
            chunked_prefill_size: Some(2048),
            max_prefill_tokens: 16_384,
            max_running_requests: 32,
            kv_cache_memory: 512 << 20,
            context_length: None,
            check_invariants: cfg!(debug_assertions),
        }
    }
}

/// What the engine serves.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// Where the model was loaded from.
    pub model_path: PathBuf,
    /// A short name (the file or directory name).
    pub model_name: String,
    /// Vocabulary size.
    pub vocab_size: usize,
    /// Longest prompt plus output.
    pub context_length: usize,
    /// KV slots in the pool.
    pub kv_capacity_tokens: usize,
    /// Tokens per page.
    pub page_size: usize,
    /// End-of-sequence ids.
    pub eos_token_ids: Vec<u32>,
    /// Whether a chat template is available.
    pub has_chat_template: bool,
}

/// The prompt of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Plain text, tokenized as is.
    Text(String),
    /// Token ids.
    Tokens(Vec<u32>),
    /// Chat messages, rendered with the model's chat template (with the generation prompt).
    Chat(Vec<ChatMessage>),
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
    /// Cache namespace (a salt, a tenant): prefixes are shared only within one namespace.
    pub namespace: Namespace,
    /// Leave special tokens out of the text.
    pub skip_special_tokens: bool,
}

impl GenerateRequest {
    /// A greedy request for `input` with default stop conditions.
    pub fn new(input: Input) -> Self {
        GenerateRequest {
            input,
            sampling: SamplingParams::greedy(),
            stop: StopConditions::default(),
            stop_strings: Vec::new(),
            namespace: Namespace::shared(),
            skip_special_tokens: true,
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
    /// Seconds from submission to the end.
    pub e2e_latency: f64,
    /// Seconds from submission to the first token, if one was produced.
    pub time_to_first_token: Option<f64>,
}

/// What a [`GenerationStream`] yields.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamEvent {
    /// Output so far.
    Delta(Delta),
    /// The final event.
    Done(Completion),
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
}

enum Update {
    Token { token: u32, logprob: Option<f32> },
    Finished { reason: FinishReason, usage: Usage },
}

enum Command {
    Add {
        req: Box<Req>,
        out: Sender<Update>,
    },
    Abort {
        id: ReqId,
    },
    Finish {
        id: ReqId,
        reason: FinishReason,
    },
    Flush {
        reply: Sender<Result<(), EngineError>>,
    },
    Shutdown,
}

/// The engine. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Engine {
    commands: Sender<Command>,
    thread: Mutex<Option<JoinHandle<()>>>,
    tokenizer: Arc<TextTokenizer>,
    info: ModelInfo,
    stats: Arc<Mutex<EngineStats>>,
    next_id: AtomicU64,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("info", &self.info).finish()
    }
}

impl Engine {
    /// Loads the model, sizes the KV pool and starts the scheduler thread.
    pub fn new(config: EngineConfig) -> Result<Self, EngineError> {
        if !config.model.exists() {
            return Err(EngineError::Load(format!(
                "{} does not exist (run `cargo xtask fetch-model` for the default model)",
                config.model.display()
            )));
        }
        let started = Instant::now();
        tracing::info!(model = %config.model.display(), "loading model");
        let device = Default::default();
        let (model, tokenizer) =
            executor::load_model::<executor::CpuBackend>(&config.model, &device)
                .map_err(|e| EngineError::Load(e.to_string()))?;
        let model = model
            .with_host_kernels(config.max_running_requests.max(16))
            .map_err(|e| EngineError::Load(e.to_string()))?;
        let mc = model.config().clone();
        let dims = KvDims {
            layers: mc.num_layers,
            kv_heads: mc.num_kv_heads,
            head_dim: mc.head_dim,
            dtype_bytes: 4,
        };
        let capacity = KvCapacity::plan(dims, config.kv_cache_memory, config.page_size)
            .map_err(|e| EngineError::Config(e.to_string()))?;
        let context_length = config
            .context_length
            .unwrap_or(mc.max_position)
            .min(mc.max_position);
        let eos: Vec<u32> = tokenizer.eos_token_id.into_iter().collect();
        let info = ModelInfo {
            model_name: config
                .model
                .file_name()
                .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned()),
            model_path: config.model.clone(),
            vocab_size: mc.vocab_size,
            context_length,
            kv_capacity_tokens: capacity.num_slots,
            page_size: config.page_size,
            eos_token_ids: eos.clone(),
            has_chat_template: tokenizer.chat_template.is_some(),
        };
        let sched_cfg = SchedulerConfig {
            page_size: config.page_size,
            num_pages: capacity.num_pages,
            context_length,
            max_running_requests: config.max_running_requests,
            max_prefill_tokens: config.max_prefill_tokens,
            chunked_prefill_size: config.chunked_prefill_size,
            policy: config.schedule_policy,
            eviction: config.eviction_policy,
            disable_radix_cache: config.disable_radix_cache,
            eos_token_ids: eos,
            check_invariants: config.check_invariants,
            ..SchedulerConfig::default()
        };
        let scheduler =
            Scheduler::new(sched_cfg).map_err(|e| EngineError::Config(e.to_string()))?;
        let runner = executor::Executor::new(model, capacity.storage_slots);
        tracing::info!(
            seconds = started.elapsed().as_secs_f64(),
            kv_tokens = capacity.num_slots,
            kv_mib = capacity.bytes >> 20,
            "model loaded"
        );
        Ok(Self::start(scheduler, runner, tokenizer, info))
    }

    /// Starts an engine over any runner (the executor, or a stand-in in tests).
    fn start<R: ModelRunner + Send + 'static>(
        scheduler: Scheduler,
        runner: R,
        tokenizer: TextTokenizer,
        info: ModelInfo,
    ) -> Self {
        let (tx, rx) = unbounded();
        let stats = Arc::new(Mutex::new(EngineStats::default()));
        let thread_stats = Arc::clone(&stats);
        let thread = std::thread::Builder::new()
            .name("radixserve-scheduler".into())
            .spawn(move || scheduler_loop(scheduler, runner, rx, thread_stats))
            .ok();
        Engine {
            commands: tx,
            thread: Mutex::new(thread),
            tokenizer: Arc::new(tokenizer),
            info,
            stats,
            next_id: AtomicU64::new(1),
        }
    }

    /// What the engine serves.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }

    /// Counters and accounting as of the last scheduler step.
    pub fn stats(&self) -> EngineStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    /// Tokenizes a request's input (chat messages through the chat template).
    pub fn tokenize(&self, input: &Input) -> Result<Vec<u32>, EngineError> {
        let bad = |e: executor::ExecutorError| EngineError::InvalidRequest(e.to_string());
        match input {
            Input::Text(t) => self.tokenizer.encode(t).map_err(bad),
            Input::Tokens(ids) => Ok(ids.clone()),
            Input::Chat(messages) => {
                if messages.is_empty() {
                    return Err(EngineError::InvalidRequest(
                        "messages must not be empty".into(),
                    ));
                }
                let text = self
                    .tokenizer
                    .apply_chat_template(messages, true)
                    .map_err(bad)?;
                // The template writes special tokens itself; do not add another BOS.
                let ids = self.tokenizer.encode(&text).map_err(bad)?;
                Ok(ids)
            }
        }
    }

    /// Submits a request; returns its output stream. Refuses bad requests with
    /// [`EngineError::InvalidRequest`] before anything is queued.
    pub fn generate(&self, request: GenerateRequest) -> Result<GenerationStream, EngineError> {
        let prompt = self.tokenize(&request.input)?;
        if prompt.is_empty() {
            return Err(EngineError::InvalidRequest("the prompt is empty".into()));
        }
        if let Some(&bad) = prompt.iter().find(|&&t| t as usize >= self.info.vocab_size) {
            return Err(EngineError::InvalidRequest(format!(
                "token id {bad} is outside the vocabulary (size {})",
                self.info.vocab_size
            )));
        }
        let need = prompt.len() + request.stop.max_new_tokens;
        let limit = self.info.context_length.min(self.info.kv_capacity_tokens);
        if need > limit {
            return Err(EngineError::InvalidRequest(format!(
                "the prompt ({} tokens) plus max_tokens ({}) exceeds the context length ({limit})",
                prompt.len(),
                request.stop.max_new_tokens
            )));
        }
        if request.stop.min_new_tokens > request.stop.max_new_tokens {
            return Err(EngineError::InvalidRequest(
                "min_tokens exceeds max_tokens".into(),
            ));
        }
        request
            .sampling
            .validate()
            .map_err(EngineError::InvalidRequest)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let prompt_tokens = prompt.len();
        let req =
            Req::new(id, prompt, request.sampling, request.stop).with_namespace(request.namespace);
        let (tx, rx) = unbounded();
        self.commands
            .send(Command::Add {
                req: Box::new(req),
                out: tx,
            })
            .map_err(|_| EngineError::Closed)?;
        Ok(GenerationStream {
            id,
            updates: rx,
            commands: self.commands.clone(),
            tokenizer: Arc::clone(&self.tokenizer),
            skip_special: request.skip_special_tokens,
            decoder: IncrementalDecoder::new(),
            stops: StopMatcher::new(request.stop_strings),
            text: String::new(),
            logprobs: Vec::new(),
            done: false,
            stop_sent: false,
            prompt_tokens,
            submitted: Instant::now(),
            first_token: None,
            pending_done: None,
        })
    }

    /// Runs a request to the end and returns its completion.
    pub fn generate_blocking(&self, request: GenerateRequest) -> Result<Completion, EngineError> {
        self.generate(request)?.collect_completion()
    }

    /// Empties the prefix cache; refused with [`EngineError::Busy`] while requests run.
    pub fn flush_cache(&self) -> Result<(), EngineError> {
        let (tx, rx) = unbounded();
        self.commands
            .send(Command::Flush { reply: tx })
            .map_err(|_| EngineError::Closed)?;
        rx.recv().map_err(|_| EngineError::Closed)?
    }

    /// Aborts in-flight requests and stops the scheduler thread.
    pub fn shutdown(&self) {
        let _ = self.commands.send(Command::Shutdown);
        if let Ok(mut t) = self.thread.lock() {
            if let Some(handle) = t.take() {
                let _ = handle.join();
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn scheduler_loop<R: ModelRunner>(
    mut sched: Scheduler,
    mut runner: R,
    commands: Receiver<Command>,
    stats: Arc<Mutex<EngineStats>>,
) {
    let mut outputs: HashMap<ReqId, Sender<Update>> = HashMap::new();
    let mut steps = 0u64;
    let mut shutting_down = false;
    loop {
        if sched.is_idle() {
            if shutting_down {
                break;
            }
            match commands.recv_timeout(Duration::from_millis(200)) {
                Ok(cmd) => {
                    shutting_down |= handle(cmd, &mut sched, &mut outputs);
                }
                Err(crossbeam_channel::RecvTimeoutError::Timeout) => continue,
                Err(crossbeam_channel::RecvTimeoutError::Disconnected) => break,
            }
        }
        while let Ok(cmd) = commands.try_recv() {
            shutting_down |= handle(cmd, &mut sched, &mut outputs);
        }
        if shutting_down {
            let ids: Vec<ReqId> = outputs.keys().copied().collect();
            for id in ids {
                sched.abort(id, "the server is shutting down");
            }
        }
        if let Err(e) = sched.step(&mut runner) {
            tracing::error!(error = %e, "scheduler invariant violated");
        }
        steps += 1;
        for event in sched.take_events() {
            match event {
                Event::Token { id, token, logprob } => {
                    let delivered = outputs
                        .get(&id)
                        .is_some_and(|tx| tx.send(Update::Token { token, logprob }).is_ok());
                    if !delivered {
                        // The client went away: free what the request holds.
                        sched.abort(id, "the client disconnected");
                    }
                }
                Event::Finished {
                    id,
                    reason,
                    prompt_tokens,
                    completion_tokens,
                    cached_tokens,
                } => {
                    if let Some(tx) = outputs.remove(&id) {
                        let _ = tx.send(Update::Finished {
                            reason,
                            usage: Usage {
                                prompt_tokens,
                                completion_tokens,
                                cached_tokens,
                            },
                        });
                    }
                }
            }
        }
        if let Ok(mut s) = stats.lock() {
            *s = EngineStats {
                counters: sched.counters(),
                cache: sched.kv().tree().stats(),
                kv: sched.kv().accounting(),
                waiting: sched.num_waiting(),
                running: sched.num_running(),
                steps,
            };
        }
    }
    tracing::info!("scheduler thread stopped");
}

/// Applies one command; returns true on shutdown.
fn handle(
    cmd: Command,
    sched: &mut Scheduler,
    outputs: &mut HashMap<ReqId, Sender<Update>>,
) -> bool {
    match cmd {
        Command::Add { req, out } => {
            let id = req.id;
            let prompt_tokens = req.prompt.len();
            match sched.add_request(*req) {
                Ok(()) => {
                    outputs.insert(id, out);
                }
                Err(e) => {
                    let _ = out.send(Update::Finished {
                        reason: FinishReason::Abort {
                            message: e.to_string(),
                        },
                        usage: Usage {
                            prompt_tokens,
                            ..Usage::default()
                        },
                    });
                }
            }
        }
        Command::Abort { id } => {
            sched.abort(id, "aborted by the client");
        }
        Command::Finish { id, reason } => {
            sched.finish_early(id, reason);
        }
        Command::Flush { reply } => {
            let result = sched.flush_cache().map_err(|e| match e {
                router::RouterError::Busy(n) => EngineError::Busy(n),
                other => EngineError::Config(other.to_string()),
            });
            let _ = reply.send(result);
        }
        Command::Shutdown => return true,
    }
    false
}

/// The output of one request: an iterator of [`StreamEvent`]s ending with
/// [`StreamEvent::Done`]. Dropping it before the end aborts the request.
pub struct GenerationStream {
    id: ReqId,
    updates: Receiver<Update>,
    commands: Sender<Command>,
    tokenizer: Arc<TextTokenizer>,
    skip_special: bool,
    decoder: IncrementalDecoder,
    stops: StopMatcher,
    text: String,
    logprobs: Vec<f32>,
    done: bool,
    stop_sent: bool,
    prompt_tokens: usize,
    submitted: Instant,
    first_token: Option<f64>,
    pending_done: Option<Completion>,
}

impl std::fmt::Debug for GenerationStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GenerationStream")
            .field("id", &self.id)
            .finish()
    }
}

impl GenerationStream {
    /// The engine's id of this request.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Prompt length in tokens.
    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }

    /// Consumes the stream and returns the completion.
    pub fn collect_completion(mut self) -> Result<Completion, EngineError> {
        for event in self.by_ref() {
            if let StreamEvent::Done(c) = event {
                return Ok(c);
            }
        }
        Err(EngineError::Closed)
    }

    fn on_token(&mut self, token: u32, logprob: Option<f32>) -> Option<Delta> {
        if self.first_token.is_none() {
            self.first_token = Some(self.submitted.elapsed().as_secs_f64());
        }
        if self.stops.matched().is_some() {
            return None;
        }
        let tokenizer = Arc::clone(&self.tokenizer);
        let skip = self.skip_special;
        let piece = self
            .decoder
            .push(token, |ids| tokenizer.decode(ids, skip).unwrap_or_default());
        let text = self.stops.push(&piece);
        if let Some(lp) = logprob {
            self.logprobs.push(lp);
        }
        if let Some(stop) = self.stops.matched() {
            if !self.stop_sent {
                self.stop_sent = true;
                let _ = self.commands.send(Command::Finish {
                    id: self.id,
                    reason: FinishReason::Stop {
                        token: None,
                        text: Some(stop.to_string()),
                    },
                });
            }
        }
        self.text.push_str(&text);
        Some(Delta {
            text,
            token_ids: vec![token],
            logprobs: logprob.into_iter().collect(),
        })
    }
}

impl Iterator for GenerationStream {
    type Item = StreamEvent;

    fn next(&mut self) -> Option<StreamEvent> {
        if let Some(done) = self.pending_done.take() {
            return Some(StreamEvent::Done(done));
        }
        if self.done {
            return None;
        }
        loop {
            match self.updates.recv() {
                Ok(Update::Token { token, logprob }) => {
                    if let Some(d) = self.on_token(token, logprob) {
                        return Some(StreamEvent::Delta(d));
                    }
                }
                Ok(Update::Finished { reason, usage }) => {
                    self.done = true;
                    let tokenizer = Arc::clone(&self.tokenizer);
                    let skip = self.skip_special;
                    let mut tail = String::new();
                    if self.stops.matched().is_none() {
                        let rest = self
                            .decoder
                            .flush(|ids| tokenizer.decode(ids, skip).unwrap_or_default());
                        tail = self.stops.push(&rest);
                        if self.stops.matched().is_none() {
                            tail.push_str(&self.stops.finish());
                        }
                    }
                    self.text.push_str(&tail);
                    let token_ids = self.decoder.tokens().to_vec();
                    // A stop string cut generation short: report it as the reason.
                    let finish_reason = match (self.stops.matched(), reason) {
                        (Some(s), FinishReason::Stop { .. } | FinishReason::Length { .. }) => {
                            FinishReason::Stop {
                                token: None,
                                text: Some(s.to_string()),
                            }
                        }
                        (_, r) => r,
                    };
                    let done = Completion {
                        finish_reason,
                        usage,
                        text: std::mem::take(&mut self.text),
                        token_ids,
                        logprobs: std::mem::take(&mut self.logprobs),
                        e2e_latency: self.submitted.elapsed().as_secs_f64(),
                        time_to_first_token: self.first_token,
                    };
                    if tail.is_empty() {
                        return Some(StreamEvent::Done(done));
                    }
                    // Text held back until the end goes out as a last delta, then the end.
                    self.pending_done = Some(done);
                    return Some(StreamEvent::Delta(Delta {
                        text: tail,
                        token_ids: Vec::new(),
                        logprobs: Vec::new(),
                    }));
                }
                Err(_) => {
                    self.done = true;
                    return None;
                }
            }
        }
    }
}

impl Drop for GenerationStream {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.commands.send(Command::Abort { id: self.id });
        }
    }
}
