//! The engine: a scheduler thread fed by a channel, and per-request output streams.

use crate::config::EngineConfig;
use crate::device::Device;
use crate::error::{EngineError, StartError};
use crate::stream::{GenerationStream, InFlight, StreamParts};
use crate::tokenizer::Tokenizer;
use crate::types::{Completion, DiskTierInfo, EngineStats, GenerateRequest, Input, ModelInfo};
use crate::worker::{Command, Worker};
use constrained::{Compiler, GrammarSpec, Vocabulary};
use crossbeam_channel::{unbounded, Sender};
use page_manager::tier::DiskTier;
use page_manager::{KvCapacity, KvDims};
use router::{ModelRunner, Req, Scheduler, SchedulerConfig, TokenLimit};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::Instant;

/// The engine. Cheap to share behind an `Arc`; every method takes `&self`.
pub struct Engine {
    commands: Sender<Command>,
    thread: Mutex<Option<JoinHandle<()>>>,
    tokenizer: Arc<dyn Tokenizer>,
    info: ModelInfo,
    limit: TokenLimit,
    stats: Arc<Mutex<EngineStats>>,
    next_id: AtomicU64,
    in_flight: Arc<AtomicUsize>,
    max_in_flight: usize,
    max_running: usize,
    trust_message_content: bool,
    /// Compiles structured-output grammars; built on the first request that needs it.
    grammars: OnceLock<Result<Compiler, String>>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine").field("info", &self.info).finish()
    }
}

/// What [`Engine::with_runner`] needs besides the runner and the tokenizer.
#[derive(Debug, Clone)]
pub struct RunnerSetup {
    /// What the engine reports it serves.
    pub info: ModelInfo,
    /// The scheduler's configuration (its pool must match the runner's).
    pub scheduler: SchedulerConfig,
    /// In-flight bound: running plus queued requests.
    pub max_in_flight: usize,
    /// See [`EngineConfig::trust_message_content`].
    pub trust_message_content: bool,
}

impl Engine {
    /// Loads the model on `config.device`, sizes the KV pool and starts the scheduler thread.
    pub fn new(config: EngineConfig) -> Result<Self, StartError> {
        if !config.model.exists() {
            return Err(StartError::ModelNotFound(config.model.clone()));
        }
        match config.device {
            Device::Cpu | Device::BurnCpu => {
                Self::on_backend::<executor::CpuBackend>(config, Default::default())
            }
            #[cfg(feature = "cuda")]
            Device::Cuda => {
                crate::device::probe_cuda()?;
                Self::on_backend::<executor::CudaBackend>(config, Default::default())
            }
            #[cfg(not(feature = "cuda"))]
            Device::Cuda => Err(StartError::Device(
                "this build has no CUDA support (build with `--features cuda`)".into(),
            )),
        }
    }

    /// [`Engine::new`] on burn backend `B`: the host forward for [`Device::Cpu`], burn's own
    /// forward otherwise.
    fn on_backend<B: executor::burn::tensor::backend::Backend>(
        config: EngineConfig,
        device: B::Device,
    ) -> Result<Self, StartError>
    where
        executor::Executor<B>: Send + 'static,
    {
        let started = Instant::now();
        tracing::info!(model = %config.model.display(), device = %config.device, "loading model");
        // The CPU device runs the host model alone (built straight from the file); the other
        // devices run burn's forward.
        let (model, mut tokenizer) = if config.device == Device::Cpu {
            executor::load_host_model::<B>(&config.model, &device)?
        } else {
            executor::load_model::<B>(&config.model, &device)?
        };
        if let Some(template) = &config.chat_template {
            tokenizer = tokenizer.with_chat_template(template.clone());
        }
        let dtype = config.kv_dtype();
        let model = model.with_kv_dtype(dtype)?;
        let mc = model.config().clone();
        let dims = KvDims {
            layers: mc.num_layers,
            kv_heads: mc.num_kv_heads,
            head_dim: mc.head_dim,
            dtype_bytes: dtype.bytes(),
        };
        let capacity = KvCapacity::plan(dims, config.kv_cache_memory, config.page_size)?;
        let context_length = config
            .context_length
            .unwrap_or(mc.max_position)
            .min(mc.max_position);
        let eos: Vec<u32> = tokenizer.eos_token_id.into_iter().collect();
        let info = ModelInfo {
            model_name: config.served_model_name.clone().unwrap_or_else(|| {
                config
                    .model
                    .file_name()
                    .map_or_else(|| "model".into(), |n| n.to_string_lossy().into_owned())
            }),
            model_path: config.model.clone(),
            vocab_size: mc.vocab_size,
            context_length,
            kv_capacity_tokens: capacity.num_slots,
            page_size: config.page_size,
            architecture: model.format().architecture.clone(),
            quantization: model.format().quantization.clone(),
            kv_cache_dtype: dtype,
            eos_token_ids: eos.clone(),
            has_chat_template: tokenizer.chat_template.is_some(),
            disk_tier: None,
        };
        let scheduler = SchedulerConfig {
            page_size: config.page_size,
            num_pages: capacity.num_pages,
            context_length,
            max_running_requests: config.max_running_requests,
            max_prefill_tokens: config.max_prefill_tokens,
            chunked_prefill_size: config.chunked_prefill_size,
            policy: config.schedule_policy,
            eviction: config.eviction_policy,
            disable_radix_cache: config.disable_radix_cache,
            defer_shared_prefill: if config.defer_shared_prefill {
                SchedulerConfig::default().defer_shared_prefill
            } else {
                None
            },
            enable_mixed_chunk: config.enable_mixed_chunk,
            eos_token_ids: eos,
            check_invariants: config.check_invariants,
            ..SchedulerConfig::default()
        };
        let runner = executor::Executor::new(model, capacity.storage_slots);
        let layout = crate::disk::Layout {
            architecture: &info.architecture,
            dims,
            dtype: dtype.name(),
            page_size: config.page_size,
            block_tokens: 0,
        };
        let bytes_per_token = router::KvTransfer::kv_bytes_per_token(&runner);
        let tier = crate::disk::open_tier(&config, layout, bytes_per_token)?;
        let info = ModelInfo {
            disk_tier: tier.as_ref().map(|t| DiskTierInfo {
                dir: t.config().dir.clone(),
                policy: t.config().policy,
                block_tokens: t.config().block_tokens,
                capacity_bytes: t.config().capacity_bytes,
                restored_blocks: t.stats().restored_blocks,
            }),
            ..info
        };
        tracing::info!(
            seconds = started.elapsed().as_secs_f64(),
            kv_tokens = capacity.num_slots,
            kv_mib = capacity.bytes >> 20,
            kv_dtype = %dtype,
            "model loaded"
        );
        let setup = RunnerSetup {
            info,
            scheduler,
            max_in_flight: config
                .max_running_requests
                .saturating_add(config.max_queued_requests),
            trust_message_content: config.trust_message_content,
        };
        Self::with_runner_and_tier(runner, tokenizer, setup, tier)
    }

    /// Starts an engine over any runner: the executor, or a deterministic fake in tests.
    pub fn with_runner<R: ModelRunner + Send + 'static>(
        runner: R,
        tokenizer: impl Tokenizer + 'static,
        setup: RunnerSetup,
    ) -> Result<Self, StartError> {
        Self::with_runner_and_tier(runner, tokenizer, setup, None)
    }

    /// [`Engine::with_runner`] with a disk tier below the KV pool; the runner must copy its
    /// K/V ([`ModelRunner::kv_transfer`]) in the layout the tier was opened for.
    pub fn with_runner_and_tier<R: ModelRunner + Send + 'static>(
        mut runner: R,
        tokenizer: impl Tokenizer + 'static,
        setup: RunnerSetup,
        tier: Option<DiskTier>,
    ) -> Result<Self, StartError> {
        let max_running = setup.scheduler.max_running_requests;
        let mut scheduler = Scheduler::new(setup.scheduler)?;
        if let Some(tier) = tier {
            let want = tier.config().bytes_per_token;
            match runner.kv_transfer().map(|x| x.kv_bytes_per_token()) {
                Some(have) if have == want => scheduler.attach_disk_tier(tier)?,
                Some(have) => {
                    return Err(StartError::Device(format!(
                        "the disk tier stores {want} bytes of K/V per token, the runner {have}"
                    )))
                }
                None => {
                    return Err(StartError::Device(
                        "this runner cannot copy its K/V, so it cannot use a disk tier".into(),
                    ))
                }
            }
        }
        let limit = scheduler.token_limit();
        let (tx, rx) = unbounded();
        let stats = Arc::new(Mutex::new(EngineStats::default()));
        let worker = Worker::new(scheduler, runner, Arc::clone(&stats));
        // Stats describe the engine from the moment it exists, not from the thread's start.
        worker.publish_stats();
        let thread = std::thread::Builder::new()
            .name("radixserve-scheduler".into())
            .spawn(move || worker.run(rx))?;
        Ok(Engine {
            commands: tx,
            thread: Mutex::new(Some(thread)),
            tokenizer: Arc::new(tokenizer),
            info: setup.info,
            limit,
            stats,
            next_id: AtomicU64::new(1),
            in_flight: Arc::new(AtomicUsize::new(0)),
            max_in_flight: setup.max_in_flight.max(1),
            max_running,
            trust_message_content: setup.trust_message_content,
            grammars: OnceLock::new(),
        })
    }

    /// What the engine serves.
    pub fn info(&self) -> &ModelInfo {
        &self.info
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> &dyn Tokenizer {
        self.tokenizer.as_ref()
    }

    /// The token budget of one request (prompt plus output), as the scheduler checks it.
    pub fn token_limit(&self) -> TokenLimit {
        self.limit
    }

    /// Counters and accounting as of the last scheduler step.
    pub fn stats(&self) -> EngineStats {
        self.stats.lock().map(|s| *s).unwrap_or_default()
    }

    /// Requests submitted and not yet ended.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// The most requests that run at once (`--max-running-requests`).
    pub fn max_running_requests(&self) -> usize {
        self.max_running
    }

    /// The most requests in flight at once (running plus queued).
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Whether the scheduler thread is running (false after shutdown or if it died).
    pub fn is_alive(&self) -> bool {
        self.thread
            .lock()
            .map(|t| t.as_ref().is_some_and(|h| !h.is_finished()))
            .unwrap_or(false)
    }

    /// Renders chat messages with the chat template, as text, with the generation prompt.
    pub fn render_chat(&self, messages: &[executor::ChatMessage]) -> Result<String, EngineError> {
        if messages.is_empty() {
            return Err(EngineError::InvalidRequest(
                "messages must not be empty".into(),
            ));
        }
        self.tokenizer
            .apply_chat_template(messages, true)
            .map_err(|e| EngineError::InvalidRequest(e.to_string()))
    }

    /// Tokenizes a request's input (chat messages through the chat template).
    pub fn tokenize(&self, input: &Input) -> Result<Vec<u32>, EngineError> {
        let bad = |e: executor::ExecutorError| EngineError::InvalidRequest(e.to_string());
        match input {
            Input::Text(t) => self.tokenizer.encode(t, true).map_err(bad),
            Input::Tokens(ids) => Ok(ids.clone()),
            Input::Chat(messages) | Input::ChatContinued(messages) if messages.is_empty() => Err(
                EngineError::InvalidRequest("messages must not be empty".into()),
            ),
            Input::Chat(messages) => self
                .tokenizer
                .encode_chat(messages, true, self.trust_message_content)
                .map_err(bad),
            Input::ChatContinued(messages) => self
                .tokenizer
                .encode_chat_continuing(messages, self.trust_message_content)
                .map_err(bad),
        }
    }

    /// Submits a request; returns its output stream. Refuses bad requests with
    /// [`EngineError::InvalidRequest`] and requests beyond the in-flight bound with
    /// [`EngineError::Overloaded`], before anything is queued.
    pub fn generate(&self, request: GenerateRequest) -> Result<GenerationStream, EngineError> {
        let prompt = self.tokenize(&request.input)?;
        self.generate_tokens(prompt, request)
    }

    /// [`Engine::generate`] for a prompt the caller already tokenized (`request.input` is
    /// not read).
    pub fn generate_tokens(
        &self,
        prompt: Vec<u32>,
        request: GenerateRequest,
    ) -> Result<GenerationStream, EngineError> {
        let biased = request.sampling.logit_bias.iter().map(|(t, _)| t);
        let asked = request.sampling.logprob_token_ids.iter();
        if let Some(&bad) = prompt
            .iter()
            .chain(biased)
            .chain(asked)
            .find(|&&t| t as usize >= self.info.vocab_size)
        {
            return Err(EngineError::InvalidRequest(format!(
                "token id {bad} is outside the vocabulary (size {})",
                self.info.vocab_size
            )));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let prompt_tokens = prompt.len();
        let mut req =
            Req::new(id, prompt, request.sampling, request.stop).with_namespace(request.namespace);
        req.logprob_start = request.logprob_start;
        req.report_progress = request.report_progress;
        req.validate(self.limit)?;
        if let Some(spec) = &request.grammar {
            req = req.with_constraint(self.compile(spec)?);
        }
        let in_flight = InFlight::acquire(&self.in_flight, self.max_in_flight)?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        self.commands
            .send(Command::Add {
                req: Box::new(req),
                out: tx,
            })
            .map_err(|_| EngineError::Closed)?;
        Ok(GenerationStream::new(StreamParts {
            id,
            updates: rx,
            commands: self.commands.clone(),
            tokenizer: Arc::clone(&self.tokenizer),
            skip_special: request.skip_special_tokens,
            stop_strings: request.stop_strings,
            no_stop_trim: request.no_stop_trim,
            prompt_tokens,
            in_flight,
        }))
    }

    /// Compiles a structured-output spec into a request's constraint (on the caller's thread:
    /// a large schema costs its compile time there, not in the scheduler).
    fn compile(&self, spec: &GrammarSpec) -> Result<Box<dyn router::TokenConstraint>, EngineError> {
        let compiler = self
            .grammars
            .get_or_init(|| self.grammar_compiler())
            .as_ref()
            .map_err(|e| EngineError::InvalidRequest(format!("structured output: {e}")))?;
        compiler
            .compile(spec)
            .map_err(|e| EngineError::InvalidRequest(e.to_string()))
    }

    fn grammar_compiler(&self) -> Result<Compiler, String> {
        let token_bytes = self
            .tokenizer
            .token_bytes()
            .ok_or("the tokenizer does not expose its token bytes")?;
        let tokenizer = Arc::clone(&self.tokenizer);
        let started = Instant::now();
        let compiler = Compiler::new(Vocabulary {
            token_bytes,
            eos_token_ids: self.info.eos_token_ids.clone(),
            tokenize: Arc::new(move |bytes| {
                tokenizer
                    .encode(&String::from_utf8_lossy(bytes), false)
                    .unwrap_or_default()
            }),
        })
        .map_err(|e| e.to_string())?;
        tracing::info!(elapsed = ?started.elapsed(), "structured output ready");
        Ok(compiler)
    }

    /// Runs a request to the end and returns its completion.
    pub fn generate_blocking(&self, request: GenerateRequest) -> Result<Completion, EngineError> {
        self.generate(request)?.collect_completion()
    }

    /// Empties the prefix cache (and frees every cache namespace); refused with
    /// [`EngineError::Busy`] while requests run.
    pub fn flush_cache(&self) -> Result<(), EngineError> {
        let (tx, rx) = unbounded();
        self.commands
            .send(Command::Flush { reply: tx })
            .map_err(|_| EngineError::Closed)?;
        rx.recv().map_err(|_| EngineError::Closed)?
    }

    /// Aborts one request by its id ([`GenerationStream::id`]); its stream ends with a `Done`
    /// event whose finish reason is an abort. An id that already ended is ignored.
    pub fn abort(&self, id: u64) {
        // If the engine is gone, its streams have already ended.
        let _ = self.commands.send(Command::Abort { id });
    }

    /// Aborts every request in flight; each stream ends with a `Done` event whose finish reason
    /// is an abort carrying `message`. Used to end a drain that ran out of time.
    pub fn abort_all(&self, message: &str) {
        // If the engine is gone, its streams have already ended.
        let _ = self.commands.send(Command::AbortAll {
            message: message.to_string(),
        });
    }

    /// Aborts in-flight requests and stops the scheduler thread.
    pub fn shutdown(&self) {
        // If the thread is gone already, there is nothing to stop.
        let _ = self.commands.send(Command::Shutdown);
        if let Ok(mut t) = self.thread.lock() {
            if let Some(handle) = t.take() {
                if handle.join().is_err() {
                    tracing::error!("the scheduler thread had panicked");
                }
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown();
    }
}
