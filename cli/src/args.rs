//! Command-line flags. Every default is taken from the one place that states it:
//! [`EngineConfig::default`] for the engine and [`http::Limits::default`] for the server.

use crate::http;
use anyhow::{bail, Context, Result};
use clap::Args;
use engine::{
    Engine, EngineConfig, EvictionPolicy, GenerateRequest, Input, Policy, SamplingParams,
    StopConditions,
};
use std::path::PathBuf;
use std::time::Duration;

fn engine_defaults() -> EngineConfig {
    EngineConfig::default()
}

fn limit_defaults() -> http::Limits {
    http::Limits::default()
}

/// Engine settings shared by every subcommand; names follow SGLang's server arguments.
#[derive(Args, Debug, Clone)]
pub struct EngineArgs {
    /// Model: a GGUF file or a Hugging Face directory (config.json, *.safetensors,
    /// tokenizer.json). Default: SmolLM2-135M-Instruct as fetched by `cargo xtask fetch-model`
    /// (or $RADIXSERVE_MODEL).
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// The model's id in the API (`model` in requests and responses, `/v1/models`); default:
    /// the file or directory name.
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Tokens per KV page; prefixes are cached and matched in whole pages.
    #[arg(long, default_value_t = engine_defaults().page_size)]
    pub page_size: usize,
    /// Turn off prefix caching (every request computes its whole prompt).
    #[arg(long)]
    pub disable_radix_cache: bool,
    /// Admit requests as SGLang does: several waiting requests on one uncached prompt prefix
    /// all compute it in the same prefill batch. By default only the first does, and the
    /// others follow a round later with the prefix cached.
    #[arg(long)]
    pub disable_prefill_deferral: bool,
    /// Prefill steps also compute one decode token of every running request (MIXED batches),
    /// so that running requests do not stall while a prompt is computed. On by default (it
    /// needs chunked prefill); SGLang's spelling is accepted.
    #[arg(long)]
    pub enable_mixed_chunk: bool,
    /// Run prefill steps alone, as SGLang does by default: running requests wait for them.
    #[arg(long, conflicts_with = "enable_mixed_chunk")]
    pub disable_mixed_chunk: bool,
    /// Waiting-queue order: lpm (longest cached prefix first; the default), dfs-weight, fcfs,
    /// lof, random.
    #[arg(long)]
    pub schedule_policy: Option<Policy>,
    /// Which cached prefixes to evict first: lru (the default), lfu, fifo, mru, filo, priority.
    #[arg(long)]
    pub radix_eviction_policy: Option<EvictionPolicy>,
    /// Split prompts into chunks of at most this many tokens; -1 disables chunking.
    #[arg(long, default_value_t = engine_defaults().chunked_prefill_size.map_or(-1, |n| n as i64), allow_negative_numbers = true)]
    pub chunked_prefill_size: i64,
    /// Most prompt tokens computed in one prefill batch (the first request may exceed it).
    #[arg(long, default_value_t = engine_defaults().max_prefill_tokens)]
    pub max_prefill_tokens: usize,
    /// Most requests decoding at once.
    #[arg(long, default_value_t = engine_defaults().max_running_requests)]
    pub max_running_requests: usize,
    /// Most requests waiting beyond the running ones; more are refused (HTTP 503) rather than
    /// queued without bound.
    #[arg(long, default_value_t = engine_defaults().max_queued_requests)]
    pub max_queued_requests: usize,
    /// Memory for the KV cache, in MiB; decides how many tokens can be cached.
    #[arg(long, default_value_t = engine_defaults().kv_cache_memory >> 20)]
    pub kv_cache_memory: usize,
    /// Element type of the KV cache: auto (f16 on `--device cpu`, f32 on burn devices), f16,
    /// bf16 or f32. f16 and bf16 hold twice the tokens in the same memory and round attention
    /// as llama.cpp's f16 cache; burn devices take f32 only.
    #[arg(long, default_value = "auto")]
    pub kv_cache_dtype: String,
    /// Where the model runs: cpu (the host path: integer kernels on the quantised weights),
    /// cuda (builds with the `cuda` feature; probes for the driver), or burn-cpu (burn's f32
    /// forward on the CPU, the reference).
    #[arg(long, default_value_t = engine_defaults().device)]
    pub device: engine::Device,
    /// Longest prompt plus output (default: the model's).
    #[arg(long)]
    pub context_length: Option<usize>,
    /// Check the complete KV accounting after every scheduler step (slower; for debugging).
    #[arg(long)]
    pub check_invariants: bool,
    /// A chat template replacing the model's own: a Jinja file, Jinja text, or a name
    /// (chatml, llama3, command-r, zephyr).
    #[arg(long)]
    pub chat_template: Option<String>,
    /// A directory for the disk tier of the KV cache: prefixes evicted from memory are written
    /// there (in the background) and loaded back when a request needs them, and the whole
    /// cache is written there at shutdown and restored at the next start. Off by default.
    #[arg(long)]
    pub kv_cache_dir: Option<PathBuf>,
    /// Size bound of the disk tier, in GB (10^9 bytes); least recently used blocks go first.
    /// Needs `--kv-cache-dir`.
    #[arg(long, requires = "kv_cache_dir", default_value_t = engine_defaults().kv_cache_disk_bytes as f64 / 1e9)]
    pub kv_cache_disk_gb: f64,
    /// When cached prefixes go to the disk tier: write_through (as soon as they are cached;
    /// the default) or write_back (when evicted from memory, and all at shutdown). Needs
    /// `--kv-cache-dir`.
    #[arg(long, alias = "hicache-write-policy", requires = "kv_cache_dir", default_value_t = engine_defaults().kv_cache_write_policy)]
    pub kv_cache_write_policy: engine::WritePolicy,
    /// Let special tokens spelled inside chat message content (`<|im_end|>`) act as control
    /// tokens, as other servers do. Only for trusted callers: by default message content is
    /// always plain text, so no user can forge a system or assistant turn.
    #[arg(long)]
    pub trust_message_content: bool,
}

/// `--chat-template`'s Jinja source: a file's contents, a known name's template, or the
/// argument itself when it is Jinja text.
fn chat_template(value: &str) -> Result<String> {
    let path = std::path::Path::new(value);
    if path.is_file() {
        return std::fs::read_to_string(path)
            .with_context(|| format!("--chat-template: reading {}", path.display()));
    }
    if let Some(src) = engine::named_chat_template(value) {
        return Ok(src.to_string());
    }
    if value.contains("{{") || value.contains("{%") {
        return Ok(value.to_string());
    }
    bail!(
        "--chat-template {value:?} is not a file, Jinja text or a known template ({})",
        engine::CHAT_TEMPLATE_NAMES.join(", ")
    )
}

/// `--kv-cache-disk-gb` in bytes.
fn disk_bytes(gb: f64) -> Result<u64> {
    if !gb.is_finite() || gb <= 0.0 || gb > 1e6 {
        bail!("--kv-cache-disk-gb must be a positive number of GB, not {gb}");
    }
    Ok((gb * 1e9) as u64)
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
        if self.enable_mixed_chunk && chunk.is_none() {
            bail!("--enable-mixed-chunk needs chunked prefill (--chunked-prefill-size -1 turns it off)");
        }
        let defaults = engine_defaults();
        Ok(EngineConfig {
            model: self.model.clone().unwrap_or(defaults.model),
            served_model_name: self.served_model_name.clone(),
            page_size: self.page_size,
            disable_radix_cache: self.disable_radix_cache,
            defer_shared_prefill: !self.disable_prefill_deferral,
            enable_mixed_chunk: !self.disable_mixed_chunk,
            schedule_policy: self.schedule_policy.unwrap_or(defaults.schedule_policy),
            eviction_policy: self
                .radix_eviction_policy
                .unwrap_or(defaults.eviction_policy),
            chunked_prefill_size: chunk,
            max_prefill_tokens: self.max_prefill_tokens,
            max_running_requests: self.max_running_requests,
            max_queued_requests: self.max_queued_requests,
            kv_cache_memory: self.kv_cache_memory << 20,
            kv_cache_dtype: match self.kv_cache_dtype.as_str() {
                "auto" => None,
                other => Some(
                    other
                        .parse()
                        .map_err(|e| anyhow::anyhow!("--kv-cache-dtype: {e}"))?,
                ),
            },
            device: self.device,
            context_length: self.context_length,
            check_invariants: self.check_invariants,
            trust_message_content: self.trust_message_content,
            chat_template: self
                .chat_template
                .as_deref()
                .map(chat_template)
                .transpose()?,
            kv_cache_dir: self.kv_cache_dir.clone(),
            kv_cache_disk_bytes: disk_bytes(self.kv_cache_disk_gb)?,
            kv_cache_write_policy: self.kv_cache_write_policy,
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
        if let Some(d) = &engine.info().disk_tier {
            eprintln!(
                "disk tier {}: {} blocks of {} tokens restored, bound {:.1} GB, {}",
                d.dir.display(),
                d.restored_blocks,
                d.block_tokens,
                d.capacity_bytes as f64 / 1e9,
                d.policy
            );
        }
        Ok(engine)
    }
}

/// Sampling flags for generate and chat.
#[derive(Args, Debug, Clone)]
pub struct SamplingArgs {
    /// Tokens to generate at most.
    #[arg(long, default_value_t = 128)]
    pub max_tokens: usize,
    /// Sampling temperature; 0 is greedy.
    #[arg(long, default_value_t = 0.0)]
    pub temperature: f32,
    /// Nucleus sampling threshold.
    #[arg(long, default_value_t = 1.0)]
    pub top_p: f32,
    /// Sample among the k most likely tokens (0: all).
    #[arg(long, default_value_t = 0)]
    pub top_k: usize,
    /// Seed for reproducible sampling.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Stop generating at this string (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
}

impl SamplingArgs {
    /// A request for `input` with these settings.
    pub fn request(&self, input: Input) -> GenerateRequest {
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
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 30000)]
    pub port: u16,
    /// Require `Authorization: Bearer <key>` on every route but /health; repeat or separate
    /// with commas for several tenants. Each key gets its own cache namespace.
    #[arg(long, value_delimiter = ',')]
    pub api_key: Vec<String>,
    /// The key of the admin routes (/flush_cache). With tenant keys set and no admin key, the
    /// admin routes are closed.
    #[arg(long)]
    pub admin_api_key: Option<String>,
    /// Largest request body accepted, in bytes (413 beyond; checked before authentication).
    #[arg(long, alias = "max-body-bytes", default_value_t = limit_defaults().max_request_bytes)]
    pub max_request_bytes: usize,
    /// Seconds a connection may take to send a request's headers, counted from when it waits
    /// for one (so idle keep-alive connections close after it too).
    #[arg(long, default_value_t = limit_defaults().header_timeout.as_secs_f64())]
    pub header_timeout: f64,
    /// Seconds a request may take to send its body after its headers (408 beyond).
    #[arg(long, default_value_t = limit_defaults().request_timeout.as_secs_f64())]
    pub request_timeout: f64,
    /// Requests handled at once; more are answered 503 with Retry-After.
    #[arg(long, default_value_t = limit_defaults().max_concurrent_requests)]
    pub max_concurrent_requests: usize,
    /// Open connections at once; more wait in the listen backlog.
    #[arg(long, default_value_t = limit_defaults().max_connections)]
    pub max_connections: usize,
    /// Accept any `model` name in requests, as SGLang does (by default a name other than the
    /// served one, "default" or an empty one is a 404).
    #[arg(long)]
    pub lenient_model_name: bool,
    /// Add llama-server's `__verbose` object to non-streamed OpenAI responses (what its
    /// `--verbose` adds): the prompt as the model saw it, special tokens written out, and the
    /// first choice in llama-server's native shape. For debugging templates: it shows the
    /// rendered prompt to every client.
    #[arg(long)]
    pub verbose_responses: bool,
    /// Sampling defaults for requests that leave fields out, as a JSON object (vLLM's flag):
    /// temperature, top_p, top_k, min_p, repetition_penalty, presence_penalty,
    /// frequency_penalty, max_new_tokens, seed. What a request sets always wins.
    #[arg(long)]
    pub override_generation_config: Option<String>,
    /// Seconds in-flight requests may run on after SIGTERM/SIGINT before they are aborted.
    #[arg(long, default_value_t = limit_defaults().shutdown_timeout.as_secs_f64())]
    pub shutdown_timeout: f64,
    #[command(flatten)]
    pub engine: EngineArgs,
}

impl ServeArgs {
    /// The server's settings.
    pub fn options(&self) -> Result<http::ServerOptions> {
        let secs = |name: &str, v: f64| {
            if v.is_finite() && v > 0.0 && v < 1e7 {
                Ok(Duration::from_secs_f64(v))
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
            lenient_model_name: self.lenient_model_name,
            verbose_responses: self.verbose_responses,
            generation_defaults: match &self.override_generation_config {
                None => http::GenerationDefaults::default(),
                Some(json) => http::GenerationDefaults::parse(json).map_err(anyhow::Error::msg)?,
            },
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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct ServeOnly {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn flags_default_to_the_engine_and_server_defaults() {
        let parsed = ServeOnly::try_parse_from(["radixserve"]).expect("parses");
        let engine = parsed.serve.engine.config().expect("valid");
        assert_eq!(engine, EngineConfig::default().with_check_invariants(false));
        let options = parsed.serve.options().expect("valid");
        let limits = limit_defaults();
        assert_eq!(options.limits.max_request_bytes, limits.max_request_bytes);
        assert_eq!(options.limits.header_timeout, limits.header_timeout);
        assert_eq!(options.limits.request_timeout, limits.request_timeout);
        assert_eq!(
            options.limits.max_concurrent_requests,
            limits.max_concurrent_requests
        );
        assert_eq!(options.limits.max_connections, limits.max_connections);
        assert_eq!(options.limits.shutdown_timeout, limits.shutdown_timeout);
    }

    #[test]
    fn disk_tier_settings_without_a_directory_are_refused() {
        for flags in [
            ["--kv-cache-disk-gb", "2"],
            ["--kv-cache-write-policy", "write_back"],
            ["--hicache-write-policy", "write_back"],
        ] {
            let err = ServeOnly::try_parse_from(["radixserve", flags[0], flags[1]])
                .err()
                .expect("refused without --kv-cache-dir");
            assert!(err.to_string().contains("--kv-cache-dir"), "{err}");
        }
        let parsed = ServeOnly::try_parse_from([
            "radixserve",
            "--kv-cache-dir",
            "/tmp/x",
            "--kv-cache-disk-gb",
            "2",
            "--kv-cache-write-policy",
            "write_back",
        ])
        .expect("parses");
        let cfg = parsed.serve.engine.config().expect("valid");
        assert_eq!(cfg.kv_cache_disk_bytes, 2_000_000_000);
        assert_eq!(cfg.kv_cache_write_policy, engine::WritePolicy::WriteBack);
    }

    #[test]
    fn mixed_chunk_flags_are_honoured_or_refused() {
        let config = |flags: &[&str]| {
            let args = std::iter::once("radixserve").chain(flags.iter().copied());
            ServeOnly::try_parse_from(args)
                .expect("parses")
                .serve
                .engine
                .config()
        };
        assert!(
            config(&[]).expect("valid").enable_mixed_chunk,
            "on by default"
        );
        assert!(
            config(&["--enable-mixed-chunk"])
                .expect("valid")
                .enable_mixed_chunk
        );
        assert!(
            !config(&["--disable-mixed-chunk"])
                .expect("valid")
                .enable_mixed_chunk
        );
        let err = config(&["--enable-mixed-chunk", "--chunked-prefill-size", "-1"])
            .expect_err("mixing needs chunked prefill");
        assert!(err.to_string().contains("--enable-mixed-chunk"), "{err}");
        assert!(ServeOnly::try_parse_from([
            "radixserve",
            "--enable-mixed-chunk",
            "--disable-mixed-chunk"
        ])
        .is_err());
        let deferral = config(&["--disable-prefill-deferral"]).expect("valid");
        assert!(!deferral.defer_shared_prefill);
    }
}
