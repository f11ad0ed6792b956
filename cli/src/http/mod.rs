//! The HTTP server: OpenAI-compatible and SGLang-native routes over one engine, behind the
//! limits that make it safe to expose (see docs/operations.md).
//!
//! One file per concern: [`layers`] (limits, drain guard, keys, the JSON body extractor),
//! [`auth`], [`error`], [`openai`] and [`native`] (generation routes), [`service`] (health and
//! information), [`admin`], [`metrics`], [`sse`] and [`jobs`] (streaming without a thread per
//! stream), and [`shutdown`] (signals and the drain).

mod admin;
mod auth;
mod defaults;
mod error;
mod jobs;
mod layers;
mod llamacpp;
mod logprobs;
mod metrics;
mod native;
mod openai;
mod openai_types;
mod params;
mod responses;
mod rids;
mod score;
mod service;
mod shutdown;
mod sse;
mod structured;
mod tokenize;
mod tools;

use anyhow::{Context, Result};
use axum::middleware::from_fn_with_state;
use axum::routing::{get, post};
use axum::Router;
pub use defaults::GenerationDefaults;
use engine::Engine;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use error::ApiError;

/// The server's limits; docs/operations.md lists each with its flag and default.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest request body (`--max-request-bytes`); larger is 413.
    pub max_request_bytes: usize,
    /// Time to receive a request's headers, counted from when the connection waits for one, so
    /// it also closes idle keep-alive connections (`--header-timeout`).
    pub header_timeout: Duration,
    /// Time to receive a request's body (`--request-timeout`); slower is 408.
    pub request_timeout: Duration,
    /// Requests handled at once (`--max-concurrent-requests`); more is 503.
    pub max_concurrent_requests: usize,
    /// Open connections (`--max-connections`); more wait in the listen backlog.
    pub max_connections: usize,
    /// Time in-flight requests get to finish after SIGTERM/SIGINT (`--shutdown-timeout`).
    pub shutdown_timeout: Duration,
    /// Interval of SSE keep-alive comments on a quiet stream.
    pub sse_keep_alive: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_request_bytes: 4 << 20,
            header_timeout: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            max_concurrent_requests: 1024,
            max_connections: 2048,
            shutdown_timeout: Duration::from_secs(30),
            sse_keep_alive: Duration::from_secs(15),
        }
    }
}

/// Listening and access settings.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Address to bind.
    pub host: String,
    /// Port to bind (0 picks a free one).
    pub port: u16,
    /// Tenant API keys; empty (and no admin key) means no authentication.
    pub api_keys: Vec<String>,
    /// The key of the admin routes (`/flush_cache`).
    pub admin_api_key: Option<String>,
    /// Accept any `model` name in requests.
    pub lenient_model_name: bool,
    /// Non-streamed OpenAI responses carry llama-server's `__verbose` object.
    pub verbose_responses: bool,
    /// Sampling defaults for fields requests leave out (`--override-generation-config`).
    pub generation_defaults: GenerationDefaults,
    /// Limits.
    pub limits: Limits,
}

/// What every handler shares.
pub struct AppState {
    engine: Arc<Engine>,
    keys: auth::Keys,
    limits: Limits,
    metrics: metrics::Metrics,
    started: Instant,
    /// Set by the first shutdown signal: every new request is 503.
    draining: AtomicBool,
    /// Accept any `model` name in requests.
    lenient_model_name: bool,
    /// Non-streamed OpenAI responses carry llama-server's `__verbose` object.
    verbose_responses: bool,
    /// Sampling defaults for fields requests leave out.
    defaults: GenerationDefaults,
    /// Client ids of the `/generate` requests in flight.
    rids: Arc<rids::Rids>,
    /// Stored Responses-API conversations.
    responses: responses::Store,
}

type Shared = Arc<AppState>;

/// Seconds since the Unix epoch (the `created` fields of responses).
fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A response id unique within this process: `{prefix}{n}` (prefixes as OpenAI's: `chatcmpl-`,
/// `resp_`, `call_`, ...).
fn response_id(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    format!(
        "{prefix}{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

async fn method_not_allowed() -> ApiError {
    ApiError::method_not_allowed()
}

/// The routes and the per-request layers (the concurrency limit wraps this in [`serve`]).
fn app(st: Shared) -> Router {
    let open = Router::new().route("/health", get(service::health));
    let tenant = Router::new()
        .route("/v1/models", get(service::models))
        // `{*id}`: model ids may contain `/` (Hugging Face repository names).
        .route("/v1/models/{*id}", get(service::model_card))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/responses", post(responses::create))
        .route("/v1/score", post(score::score))
        // The paths llama.cpp's clients use.
        .route("/models", get(service::models))
        .route("/completions", post(openai::completions))
        .route("/chat/completions", post(openai::chat_completions))
        .route("/generate", post(native::generate).put(native::generate))
        .route("/completion", post(llamacpp::completion))
        .route("/slots", get(llamacpp::slots))
        .route("/apply-template", post(llamacpp::apply_template))
        .route("/abort_request", post(native::abort_request))
        .route("/tokenize", post(tokenize::tokenize))
        .route("/detokenize", post(tokenize::detokenize))
        .route("/v1/tokenize", post(tokenize::tokenize))
        .route("/v1/detokenize", post(tokenize::detokenize))
        .route("/health_generate", get(service::health_generate))
        .route("/get_model_info", get(service::model_info))
        .route("/get_server_info", get(service::server_info))
        // SGLang's current names.
        .route("/model_info", get(service::model_info))
        .route("/server_info", get(service::server_info))
        .route("/get_load", get(service::get_load))
        .route("/metrics", get(metrics::metrics))
        .route_layer(from_fn_with_state(st.clone(), layers::require_key));
    let admin = Router::new()
        .route("/flush_cache", post(admin::flush_cache))
        .route_layer(from_fn_with_state(st.clone(), layers::require_admin));
    Router::new()
        .merge(open)
        .merge(tenant)
        .merge(admin)
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(
            st.clone(),
            layers::check_declared_length,
        ))
        .layer(from_fn_with_state(
            st.clone(),
            layers::refuse_while_draining,
        ))
        .layer(from_fn_with_state(st.clone(), layers::count_refusals))
        .with_state(st)
}

/// Serves until SIGTERM or SIGINT, then drains (see [`shutdown`]) and returns.
pub async fn serve(engine: Arc<Engine>, opts: ServerOptions) -> Result<()> {
    let addr = format!("{}:{}", opts.host, opts.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    let st = Arc::new(AppState {
        engine: engine.clone(),
        keys: auth::Keys::new(&opts.api_keys, opts.admin_api_key.as_deref()),
        limits: opts.limits.clone(),
        metrics: metrics::Metrics::default(),
        started: Instant::now(),
        draining: AtomicBool::new(false),
        lenient_model_name: opts.lenient_model_name,
        verbose_responses: opts.verbose_responses,
        defaults: opts.generation_defaults.clone(),
        rids: Arc::default(),
        responses: responses::Store::default(),
    });
    let service = layers::concurrency_limit(app(st.clone()), opts.limits.max_concurrent_requests);
    let signals = shutdown::Signals::install()?;
    eprintln!("radixserve listening on http://{local}");
    shutdown::run(listener, service, st, signals).await;
    engine.shutdown();
    Ok(())
}
