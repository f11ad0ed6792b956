//! Admin routes: they act on every tenant at once, so they need the admin key
//! (`--admin-api-key`) whenever keys are configured.

use super::error::ApiError;
use super::Shared;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use engine::EngineError;

/// `POST /flush_cache`: empties the prefix cache of every tenant and frees every namespace;
/// 400 while requests are queued or running.
pub async fn flush_cache(State(st): State<Shared>) -> Result<Response, ApiError> {
    let engine = st.engine.clone();
    let result = tokio::task::spawn_blocking(move || engine.flush_cache())
        .await
        .map_err(|e| ApiError::internal(format!("the flush task failed: {e}")))?;
    match result {
        Ok(()) => Ok("Cache flushed.\n".into_response()),
        Err(e @ EngineError::Busy(_)) => Err(ApiError::bad(e.to_string())),
        Err(e) => Err(e.into()),
    }
}
