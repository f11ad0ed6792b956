//! Health and information routes: `/health`, `/health_generate`, `/v1/models`,
//! `/get_model_info`, `/get_server_info`, `/get_load`.

use super::error::ApiError;
use super::openai_types::{ModelCard, ModelList};
use super::{now_secs, Shared};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use engine::{GenerateRequest, Input};
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// How long `/health_generate` waits for its one-token generation (SGLang waits 20 s).
const HEALTH_GENERATE_TIMEOUT: Duration = Duration::from_secs(20);

/// `GET /health`: 200 while the engine runs and the server is not draining, else 503.
/// Open without a key, so load balancers can probe it.
pub async fn health(State(st): State<Shared>) -> Result<&'static str, ApiError> {
    if st.draining.load(Ordering::Acquire) {
        return Err(ApiError::unavailable("the server is shutting down"));
    }
    if !st.engine.is_alive() {
        return Err(ApiError::unavailable("the engine has stopped"));
    }
    Ok("OK")
}

/// `GET /health_generate`: generates one token; 503 if that fails or takes over 20 s.
pub async fn health_generate(State(st): State<Shared>) -> Result<&'static str, ApiError> {
    let mut r = GenerateRequest::new(Input::Tokens(vec![0]));
    r.stop.max_new_tokens = 1;
    let stream = st.engine.generate(r)?;
    match tokio::time::timeout(HEALTH_GENERATE_TIMEOUT, stream.completion()).await {
        Ok(Ok(_)) => Ok("OK"),
        Ok(Err(e)) => Err(ApiError::unavailable(format!("generation failed: {e}"))),
        Err(_) => Err(ApiError::unavailable(
            "generation did not finish within 20 s",
        )),
    }
}

fn card(st: &Shared) -> ModelCard {
    let info = st.engine.info();
    ModelCard {
        id: info.model_name.clone(),
        object: "model",
        created: now_secs(),
        owned_by: "radixserve",
        root: info.model_name.clone(),
        max_model_len: info.context_length,
    }
}

/// `GET /v1/models` (also `/models`).
pub async fn models(State(st): State<Shared>) -> Response {
    axum::Json(ModelList {
        object: "list",
        data: vec![card(&st)],
    })
    .into_response()
}

/// `GET /v1/models/{id}`: the served model's card; 404 for any other id.
pub async fn model_card(
    State(st): State<Shared>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    if id != st.engine.info().model_name {
        return Err(ApiError::not_found(format!(
            "the model {id:?} does not exist; this server serves {:?}",
            st.engine.info().model_name
        ))
        .param("model"));
    }
    Ok(axum::Json(card(&st)).into_response())
}

#[derive(Serialize)]
struct ModelInfoBody {
    model_path: String,
    tokenizer_path: String,
    is_generation: bool,
    model_name: String,
    vocab_size: usize,
    context_length: usize,
    architecture: String,
    quantization: String,
    kv_cache_dtype: &'static str,
}

/// `GET /get_model_info` (also `/model_info`).
pub async fn model_info(State(st): State<Shared>) -> Response {
    let info = st.engine.info();
    let path = info.model_path.display().to_string();
    axum::Json(ModelInfoBody {
        tokenizer_path: path.clone(),
        model_path: path,
        is_generation: true,
        model_name: info.model_name.clone(),
        vocab_size: info.vocab_size,
        context_length: info.context_length,
        architecture: info.architecture.clone(),
        quantization: info.quantization.clone(),
        kv_cache_dtype: info.kv_cache_dtype.name(),
    })
    .into_response()
}

#[derive(Serialize)]
struct ServerInfoBody {
    model_path: String,
    served_model_name: String,
    context_length: usize,
    page_size: usize,
    kv_cache_dtype: &'static str,
    max_total_num_tokens: usize,
    max_running_requests_plus_queued: usize,
    dp_size: usize,
    uptime_seconds: f64,
    num_waiting: usize,
    num_running: usize,
    draining: bool,
    version: &'static str,
    /// The disk tier (`--kv-cache-dir`), when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    kv_cache_disk: Option<DiskInfo>,
}

/// The disk tier in `/get_server_info`.
#[derive(Serialize)]
struct DiskInfo {
    dir: String,
    write_policy: String,
    block_tokens: usize,
    capacity_bytes: u64,
    bytes: u64,
    blocks: u64,
    restored_blocks: u64,
}

/// `GET /get_server_info` (also `/server_info`).
pub async fn server_info(State(st): State<Shared>) -> Response {
    let info = st.engine.info();
    let s = st.engine.stats();
    axum::Json(ServerInfoBody {
        model_path: info.model_path.display().to_string(),
        served_model_name: info.model_name.clone(),
        context_length: info.context_length,
        page_size: info.page_size,
        kv_cache_dtype: info.kv_cache_dtype.name(),
        max_total_num_tokens: info.kv_capacity_tokens,
        max_running_requests_plus_queued: st.engine.max_in_flight(),
        dp_size: 1,
        uptime_seconds: st.started.elapsed().as_secs_f64(),
        num_waiting: s.waiting,
        num_running: s.running,
        draining: st.draining.load(Ordering::Acquire),
        version: env!("CARGO_PKG_VERSION"),
        kv_cache_disk: info.disk_tier.as_ref().map(|d| DiskInfo {
            dir: d.dir.display().to_string(),
            write_policy: d.policy.to_string(),
            block_tokens: d.block_tokens,
            capacity_bytes: d.capacity_bytes,
            bytes: s.tier.map_or(0, |t| t.bytes),
            blocks: s.tier.map_or(0, |t| t.blocks),
            restored_blocks: s.tier.map_or(0, |t| t.restored_blocks),
        }),
    })
    .into_response()
}

/// One data-parallel rank's load, in SGLang's shape (`GetLoadReqOutput`).
#[derive(Serialize)]
struct RankLoad {
    dp_rank: usize,
    /// Requests running or waiting.
    num_reqs: usize,
    num_waiting_reqs: usize,
    /// KV slots in use (by running requests and by cached prefixes they lock).
    num_tokens: usize,
}

/// `GET /get_load`: SGLang's list, one entry per data-parallel rank (radixserve has one), which
/// sgl-router's load-aware policies read.
pub async fn get_load(State(st): State<Shared>) -> Response {
    let s = st.engine.stats();
    axum::Json([RankLoad {
        dp_rank: 0,
        num_reqs: s.waiting + s.running,
        num_waiting_reqs: s.waiting,
        num_tokens: s.kv.capacity - s.kv.available - s.kv.evictable,
    }])
    .into_response()
}
