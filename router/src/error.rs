//! Errors of the scheduler.

use crate::request::ReqId;

/// Errors returned by the scheduler. A refused request changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouterError {
    /// The request is malformed or cannot be served (empty prompt, too long, bad parameters).
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// Prompt plus `max_new_tokens` do not fit the context length or the KV pool.
    #[error("invalid request: {message}")]
    TooLong {
        /// What does not fit, in words.
        message: String,
        /// Prompt tokens.
        prompt_tokens: usize,
        /// The most tokens (prompt plus output) one request may have.
        limit: usize,
    },
    /// A request with this id is already queued or running.
    #[error("request {0} already exists")]
    DuplicateId(ReqId),
    /// `flush_cache` while requests are queued or running.
    #[error("cannot flush the cache while {0} requests are queued or running")]
    Busy(usize),
    /// A configuration value is out of range.
    #[error("invalid scheduler configuration: {0}")]
    Config(String),
    /// The KV bookkeeping reported an error that the scheduler could not handle.
    #[error(transparent)]
    Kv(#[from] page_manager::KvError),
}
