//! Engine errors: [`StartError`] when an engine cannot be built, [`EngineError`] for what a
//! running engine refuses or reports.

/// Why an engine could not start. Each variant keeps its source.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The model path does not exist.
    #[error("{0} does not exist (run `cargo xtask fetch-model` for the default model)")]
    ModelNotFound(std::path::PathBuf),
    /// The model could not be loaded.
    #[error("could not load the model")]
    Load(#[from] executor::ExecutorError),
    /// The KV pool could not be sized from the configuration.
    #[error("invalid KV cache configuration")]
    Kv(#[from] page_manager::KvError),
    /// The scheduler refused its configuration.
    #[error("invalid scheduler configuration")]
    Scheduler(#[from] router::RouterError),
    /// The scheduler thread could not be started.
    #[error("could not start the scheduler thread")]
    Thread(#[from] std::io::Error),
    /// The disk tier could not be opened.
    #[error("could not open the disk tier")]
    Tier(#[from] page_manager::tier::TierError),
    /// The requested device cannot be used here.
    #[error("device unavailable: {0}")]
    Device(String),
}

/// What a running engine refuses or reports. `InvalidRequest` is the caller's mistake (HTTP
/// 4xx); `Overloaded` and `Closed` mean "try again later or elsewhere" (HTTP 503); `Busy` is a
/// flush refused while requests run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The request is malformed or cannot be served (too long, bad parameters, bad token ids).
    #[error("{0}")]
    InvalidRequest(String),
    /// Prompt plus output do not fit the context length or the KV pool.
    #[error("{message}")]
    TooLong {
        /// What does not fit, in words.
        message: String,
        /// Prompt tokens.
        prompt_tokens: usize,
        /// The most tokens (prompt plus output) one request may have.
        limit: usize,
    },
    /// The cache cannot be flushed while requests run.
    #[error("cannot flush the cache while {0} requests are queued or running")]
    Busy(usize),
    /// As many requests as the engine accepts are in flight (running plus queued).
    #[error("the server is overloaded: {limit} requests are running or queued; retry later")]
    Overloaded {
        /// The bound that was reached.
        limit: usize,
    },
    /// The engine has shut down (or its scheduler thread died).
    #[error("the engine is shut down")]
    Closed,
}

impl From<router::RouterError> for EngineError {
    /// The scheduler's refusals of a request or a flush. Other router errors cannot reach a
    /// request: the engine validates requests with the scheduler's own checks first.
    fn from(e: router::RouterError) -> Self {
        match e {
            router::RouterError::Busy(n) => EngineError::Busy(n),
            router::RouterError::TooLong {
                message,
                prompt_tokens,
                limit,
            } => EngineError::TooLong {
                message,
                prompt_tokens,
                limit,
            },
            other => EngineError::InvalidRequest(other.to_string()),
        }
    }
}
