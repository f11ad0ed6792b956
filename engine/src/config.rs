//! How to build an [`crate::Engine`].

use radix_tree::EvictionPolicy;
use router::Policy;
use std::path::PathBuf;

/// How to build an [`crate::Engine`]; the names mirror SGLang's server arguments.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// A GGUF file or a Hugging Face directory.
    pub model: PathBuf,
    /// The model's id in the API (`--served-model-name`); `None` takes the file or directory
    /// name.
    pub served_model_name: Option<String>,
    /// Tokens per KV page (`--page-size`).
    pub page_size: usize,
    /// Turn prefix caching off (`--disable-radix-cache`).
    pub disable_radix_cache: bool,
    /// Pass a waiting request over for a round when the prefill batch already computes its
    /// uncached prompt prefix (off: `--disable-prefill-deferral`, SGLang's admission); see
    /// [`router::SchedulerConfig::defer_shared_prefill`].
    pub defer_shared_prefill: bool,
    /// Prefill steps also compute the running requests' next tokens (SGLang's
    /// `--enable-mixed-chunk`; on by default here, `--disable-mixed-chunk` turns it off).
    pub enable_mixed_chunk: bool,
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
    /// Requests that may wait beyond the running ones (`--max-queued-requests`): at most
    /// `max_running_requests + max_queued_requests` requests are in flight, and
    /// [`crate::Engine::generate`] refuses more with [`crate::EngineError::Overloaded`].
    pub max_queued_requests: usize,
    /// Bytes of K/V cache (`--kv-cache-memory`).
    pub kv_cache_memory: usize,
    /// Element type of the K/V cache (`--kv-cache-dtype`); `None` takes the device's default
    /// (f16 on the CPU host path, f32 on burn devices, whose caches are f32 only).
    pub kv_cache_dtype: Option<executor::KvDtype>,
    /// Where the model runs (`--device`).
    pub device: crate::Device,
    /// Longest prompt plus output; `None` takes the model's.
    pub context_length: Option<usize>,
    /// Check the full KV accounting after every scheduler step.
    pub check_invariants: bool,
    /// A chat template (Jinja source) that replaces the model's own (`--chat-template`).
    pub chat_template: Option<String>,
    /// The disk tier's directory (`--kv-cache-dir`): evicted prefixes go there instead of
    /// being dropped, and the cache is written there at shutdown and restored at start.
    /// `None` keeps the cache in memory only.
    pub kv_cache_dir: Option<PathBuf>,
    /// The disk tier's size bound in bytes (`--kv-cache-disk-gb`).
    pub kv_cache_disk_bytes: u64,
    /// When cached prefixes are written to the disk tier (`--kv-cache-write-policy`).
    pub kv_cache_write_policy: page_manager::tier::WritePolicy,
    /// Let special-token spellings in chat message content act as control tokens (what other
    /// servers do). Off by default: only the chat template's own markup yields control tokens.
    pub trust_message_content: bool,
}

impl EngineConfig {
    /// The K/V cache element type this configuration runs with.
    pub fn kv_dtype(&self) -> executor::KvDtype {
        self.kv_cache_dtype.unwrap_or(match self.device {
            crate::Device::Cpu => executor::KvDtype::F16,
            crate::Device::BurnCpu | crate::Device::Cuda => executor::KvDtype::F32,
        })
    }

    /// The same configuration with the per-step accounting check on or off.
    pub fn with_check_invariants(mut self, on: bool) -> Self {
        self.check_invariants = on;
        self
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            model: executor::default_model_path(),
            served_model_name: None,
            page_size: 1,
            disable_radix_cache: false,
            defer_shared_prefill: true,
            enable_mixed_chunk: true,
            schedule_policy: Policy::Lpm,
            eviction_policy: EvictionPolicy::Lru,
            chunked_prefill_size: Some(2048),
            max_prefill_tokens: 16_384,
            max_running_requests: 32,
            max_queued_requests: 256,
            kv_cache_memory: 512 << 20,
            kv_cache_dtype: None,
            device: crate::Device::Cpu,
            context_length: None,
            check_invariants: cfg!(debug_assertions),
            trust_message_content: false,
            chat_template: None,
            kv_cache_dir: None,
            kv_cache_disk_bytes: 16_000_000_000,
            kv_cache_write_policy: page_manager::tier::WritePolicy::WriteThrough,
        }
    }
}
