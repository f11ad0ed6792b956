//! Engine errors.

/// Errors of the engine. `InvalidRequest` is the caller's mistake (HTTP 4xx); `Overloaded`
/// and `Closed` mean "try again later or elsewhere" (HTTP 503); the others are the server's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The request is malformed or cannot be served (too long, bad parameters, bad token ids).
    #[error("{0}")]
    InvalidRequest(String),
    /// The model could not be loaded.
    #[error("could not load the model: {0}")]
    Load(String),
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
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl From<router::RouterError> for EngineError {
    fn from(e: router::RouterError) -> Self {
        match e {
            router::RouterError::Busy(n) => EngineError::Busy(n),
            router::RouterError::InvalidRequest(m) => EngineError::InvalidRequest(m),
            other => EngineError::Config(other.to_string()),
        }
    }
}
