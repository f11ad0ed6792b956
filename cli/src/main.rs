//! `radixserve`: generate, chat, serve and bench on a radix-cached LLM engine.

mod bench;
mod http;

use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};
use engine::{
    ChatMessage, Engine, EngineConfig, EvictionPolicy, GenerateRequest, Input, Policy,
    SamplingParams, StopConditions, StreamEvent,
};
use std::io::{BufRead, Write};
use std::path::PathBuf;

/// radixserve: an LLM serving engine with SGLang's RadixAttention prefix cache.
#[derive(Parser, Debug)]
#[command(name = "radixserve", version, about, long_about = None, args_override_self = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Generate a completion for one prompt and print it.
    Generate(GenerateArgs),
    /// Chat interactively; later turns reuse the cached conversation.
    Chat(ChatArgs),
    /// Serve the OpenAI-compatible and SGLang-native HTTP APIs.
    Serve(ServeArgs),
    /// Run shared-prefix workloads with the cache on and off and report the difference.
    Bench(bench::BenchArgs),
}

/// Engine settings shared by every subcommand; names follow SGLang's server arguments.
#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// Model: a GGUF file or a Hugging Face directory (config.json, *.safetensors,
    /// tokenizer.json). Default: SmolLM2-135M-Instruct as fetched by `cargo xtask fetch-model`
    /// (or $RADIXSERVE_MODEL).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Tokens per KV page; prefixes are cached and matched in whole pages.
    #[arg(long, default_value_t = 1)]
    pub page_size: usize,
    /// Turn off prefix caching (every request computes its whole prompt).
    #[arg(long)]
    pub disable_radix_cache: bool,
    /// Waiting-queue order: lpm (longest cached prefix first), dfs-weight, fcfs, lof, random.
    #[arg(long, default_value = "lpm")]
    pub schedule_policy: Policy,
    /// Which cached prefixes to evict first: lru, lfu, fifo, mru, filo, priority.
    #[arg(long, default_value = "lru")]
    pub radix_eviction_policy: EvictionPolicy,
    /// Split prompts into chunks of at most this many tokens; -1 disables chunking.
    #[arg(long, default_value_t = 2048, allow_negative_numbers = true)]
    pub chunked_prefill_size: i64,
    /// Most prompt tokens computed in one prefill batch (the first request may exceed it).
    #[arg(long, default_value_t = 16_384)]
    pub max_prefill_tokens: usize,
    /// Most requests decoding at once.
    #[arg(long, default_value_t = 32)]
    pub max_running_requests: usize,
    /// Most requests waiting beyond the running ones; more are refused (HTTP 503) rather than
    /// queued without bound.
    #[arg(long, default_value_t = 256)]
    pub max_queued_requests: usize,
    /// Memory for the KV cache, in MiB; decides how many tokens can be cached.
    #[arg(long, default_value_t = 512)]
    pub kv_cache_memory: usize,
    /// Longest prompt plus output (default: the model's).
    #[arg(long)]
    pub context_length: Option<usize>,
    /// Check the complete KV accounting after every scheduler step (slower; for debugging).
    #[arg(long)]
    pub check_invariants: bool,
    /// Let special tokens spelled inside chat message content (`<|im_end|>`) act as control
    /// tokens, as other servers do. Only for trusted callers: by default message content is
    /// always plain text, so no user can forge a system or assistant turn.
    #[arg(long)]
    pub trust_message_content: bool,
}

impl EngineArgs {
    /// The engine configuration these flags describe.
    pub fn config(&self) -> Result<EngineConfig> {
        if self.page_size == 0 {
            bail!("--page-size must be at least 1");
        }
        if self.max_running_requests == 0 {
            bail!("--max-running-requests must be at least 1");
        }
        let chunk = match self.chunked_prefill_size {
            -1 => None,
            n if n > 0 => Some(n as usize),
            n => bail!("--chunked-prefill-size must be positive or -1, not {n}"),
        };
        Ok(EngineConfig {
            model: self.model.clone().unwrap_or_else(executor_default_model),
            page_size: self.page_size,
            disable_radix_cache: self.disable_radix_cache,
            schedule_policy: self.schedule_policy,
            eviction_policy: self.radix_eviction_policy,
            chunked_prefill_size: chunk,
            max_prefill_tokens: self.max_prefill_tokens,
            max_running_requests: self.max_running_requests,
            max_queued_requests: self.max_queued_requests,
            kv_cache_memory: self.kv_cache_memory << 20,
            context_length: self.context_length,
            check_invariants: self.check_invariants,
            trust_message_content: self.trust_message_content,
        })
    }

    /// Loads the engine.
    pub fn engine(&self) -> Result<Engine> {
        let cfg = self.config()?;
        eprintln!("loading {} ...", cfg.model.display());
        let started = std::time::Instant::now();
        let engine = Engine::new(cfg).context("starting the engine")?;
        eprintln!(
            "loaded in {:.1}s: {} tokens of KV cache, context {}",
            started.elapsed().as_secs_f64(),
            engine.info().kv_capacity_tokens,
            engine.info().context_length
        );
        Ok(engine)
    }
}

fn executor_default_model() -> PathBuf {
    EngineConfig::default().model
}

/// Sampling flags for generate and chat.
#[derive(Args, Debug, Clone)]
struct SamplingArgs {
    /// Tokens to generate at most.
    #[arg(long, default_value_t = 128)]
    max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// Sample among the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    /// Seed for reproducible sampling.
    #[arg(long)]
    seed: Option<u64>,
    /// Stop generating at this string (repeatable).
    #[arg(long)]
    stop: Vec<String>,
}

impl SamplingArgs {
    fn request(&self, input: Input) -> GenerateRequest {
        let mut r = GenerateRequest::new(input);
        r.sampling = SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            seed: self.seed,
            ..SamplingParams::greedy()
        };
        r.stop = StopConditions {
            max_new_tokens: self.max_tokens,
            ..StopConditions::default()
        };
        r.stop_strings = self.stop.clone();
        r
    }
}

#[derive(Args, Debug)]
struct GenerateArgs {
    /// The prompt.
    prompt: String,
    /// Send the prompt as a user chat message through the model's chat template.
    #[arg(long)]
    chat: bool,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args, Debug)]
struct ChatArgs {
    /// A system prompt for the conversation.
    #[arg(long)]
    system: Option<String>,
    #[command(flatten)]
    sampling: SamplingArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 30000)]
    port: u16,
    /// Require `Authorization: Bearer <key>` on every route but /health; repeat or separate
    /// with commas for several tenants. Each key gets its own cache namespace.
    #[arg(long, value_delimiter = ',')]
    api_key: Vec<String>,
    /// The key of the admin routes (/flush_cache). With tenant keys set and no admin key, the
    /// admin routes are closed.
    #[arg(long)]
    admin_api_key: Option<String>,
    /// Largest request body accepted, in bytes (413 beyond; checked before authentication).
    #[arg(long, alias = "max-body-bytes", default_value_t = 4 << 20)]
    max_request_bytes: usize,
    /// Seconds a connection may take to send a request's headers, counted from when it waits
    /// for one (so idle keep-alive connections close after it too).
    #[arg(long, default_value_t = 30.0)]
    header_timeout: f64,
    /// Seconds a request may take to send its body after its headers (408 beyond).
    #[arg(long, default_value_t = 30.0)]
    request_timeout: f64,
    /// Requests handled at once; more are answered 503 with Retry-After.
    #[arg(long, default_value_t = 1024)]
    max_concurrent_requests: usize,
    /// Open connections at once; more wait in the listen backlog.
    #[arg(long, default_value_t = 2048)]
    max_connections: usize,
    /// Seconds in-flight requests may run on after SIGTERM/SIGINT before they are aborted.
    #[arg(long, default_value_t = 30.0)]
    shutdown_timeout: f64,
    #[command(flatten)]
    engine: EngineArgs,
}

impl ServeArgs {
    fn options(&self) -> Result<http::ServerOptions> {
        let secs = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 && v < 1e7 {
                Ok(std::time::Duration::from_secs_f64(v))
            } else {
                bail!("--{name} must be a positive number of seconds, not {v}")
            }
        };
        Ok(http::ServerOptions {
            host: self.host.clone(),
            port: self.port,
            api_keys: self
                .api_key
                .iter()
                .filter(|k| !k.is_empty())
                .cloned()
                .collect(),
            admin_api_key: self.admin_api_key.clone().filter(|k| !k.is_empty()),
            limits: http::Limits {
                max_request_bytes: self.max_request_bytes,
                header_timeout: secs("header-timeout", self.header_timeout)?,
                request_timeout: secs("request-timeout", self.request_timeout)?,
                max_concurrent_requests: self.max_concurrent_requests,
                max_connections: self.max_connections,
                shutdown_timeout: secs("shutdown-timeout", self.shutdown_timeout)?,
                ..http::Limits::default()
            },
        })
    }
}

fn main() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,radixserve=info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Generate(a) => generate(a),
        Command::Chat(a) => chat(a),
        Command::Serve(a) => serve(a),
        Command::Bench(a) => bench::run(a),
    };
    if let Err(e) = result {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn generate(a: GenerateArgs) -> Result<()> {
    let engine = a.engine.engine()?;
    let input = if a.chat {
        Input::Chat(vec![ChatMessage::new("user", a.prompt.clone())])
    } else {
        Input::Text(a.prompt.clone())
    };
    let stream = engine.generate(a.sampling.request(input))?;
    let mut out = std::io::stdout().lock();
    for event in stream {
        match event {
            StreamEvent::Delta(d) => {
                write!(out, "{}", d.text)?;
                out.flush()?;
            }
            StreamEvent::Failed(e) => bail!("generation failed: {e}"),
            StreamEvent::Done(c) => {
                writeln!(out)?;
                eprintln!(
                    "[{} prompt tokens ({} cached), {} generated, finish: {}, {:.2}s]",
                    c.usage.prompt_tokens,
                    c.usage.cached_tokens,
                    c.usage.completion_tokens,
                    c.finish_reason.kind(),
                    c.e2e_latency
                );
            }
        }
    }
    Ok(())
}

fn chat(a: ChatArgs) -> Result<()> {
    let engine = a.engine.engine()?;
    let mut messages: Vec<ChatMessage> = Vec::new();
    if let Some(s) = &a.system {
        messages.push(ChatMessage::new("system", s.clone()));
    }
    eprintln!("chat: type a message and press enter; an empty line or end of input quits.");
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    loop {
        write!(out, "> ")?;
        out.flush()?;
        let mut line = String::new();
        if stdin.lock().read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        messages.push(ChatMessage::new("user", line.trim_end().to_string()));
        let stream = engine.generate(a.sampling.request(Input::Chat(messages.clone())))?;
        let mut reply = String::new();
        for event in stream {
            match event {
                StreamEvent::Delta(d) => {
                    write!(out, "{}", d.text)?;
                    out.flush()?;
                    reply.push_str(&d.text);
                }
                StreamEvent::Failed(e) => bail!("generation failed: {e}"),
                StreamEvent::Done(c) => {
                    writeln!(out)?;
                    eprintln!(
                        "[turn: {} prompt tokens, {} cached, {} generated]",
                        c.usage.prompt_tokens, c.usage.cached_tokens, c.usage.completion_tokens
                    );
                }
            }
        }
        messages.push(ChatMessage::new("assistant", reply));
    }
    Ok(())
}

fn serve(a: ServeArgs) -> Result<()> {
    let options = a.options()?;
    let engine = a.engine.engine()?;
    // Blocking work (tokenizing prompts, waiting for a flush) runs on a bounded pool.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(16)
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(http::serve(std::sync::Arc::new(engine), options))
}
