//! Engine errors.

/// Errors of the engine. `InvalidRequest` is the caller's mistake (HTTP 4xx); the others are
/// the server's.
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
    /// The engine has shut down.
    #[error("the engine is shut down")]
    Closed,
    /// A configuration value is out of range.
    #[error("invalid configuration: {0}")]
    Config(String),
}
