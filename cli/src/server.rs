//! The HTTP server: OpenAI-compatible and SGLang-native endpoints over one engine.

use anyhow::{Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use engine::{
    ChatMessage, Completion, Engine, EngineError, FinishReason, GenerateRequest, Input, Namespace,
    SamplingParams, StopConditions, StreamEvent,
};
use serde::Deserialize;
use serde_json::{json, Value};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;

/// Listening and access settings.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// Address to bind.
    pub host: String,
    /// Port to bind (0 picks a free one).
    pub port: u16,
    /// Accepted API keys; empty means no authentication.
    pub api_keys: Vec<String>,
    /// Largest request body.
    pub max_body_bytes: usize,
}

struct AppState {
    engine: Arc<Engine>,
    api_keys: Vec<String>,
    metrics: Metrics,
    started: Instant,
    max_body_bytes: usize,
}

type Shared = Arc<AppState>;

/// Serves until Ctrl-C.
pub async fn serve(engine: Arc<Engine>, opts: ServerOptions) -> Result<()> {
    let addr = format!("{}:{}", opts.host, opts.port);
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("binding {addr}"))?;
    let local = listener.local_addr()?;
    let app = router(engine.clone(), &opts);
    eprintln!("radixserve listening on http://{local}");
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .context("serving")?;
    engine.shutdown();
    Ok(())
}

/// The application's routes.
pub fn router(engine: Arc<Engine>, opts: &ServerOptions) -> Router {
    let state = Arc::new(AppState {
        engine,
        api_keys: opts.api_keys.clone(),
        metrics: Metrics::default(),
        started: Instant::now(),
        max_body_bytes: opts.max_body_bytes,
    });
    Router::new()
        .route("/v1/models", get(models))
        .route("/v1/completions", post(completions))
        .route("/v1/chat/completions", post(chat_completions))
        .route("/generate", post(generate_native).put(generate_native))
        .route("/health", get(health))
        .route("/health_generate", get(health_generate))
        .route("/get_model_info", get(model_info))
        .route("/get_server_info", get(server_info))
        .route("/flush_cache", get(flush_cache).post(flush_cache))
        .route("/get_load", get(get_load))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        // Bodies are read by the handlers with their own limit and a JSON error.
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

// ----- errors -----

/// An API error, rendered as OpenAI-style JSON.
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
    param: Option<&'static str>,
}

impl ApiError {
    fn bad(message: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "invalid_request_error",
            message: message.into(),
            param: None,
        }
    }

    fn param(mut self, p: &'static str) -> Self {
        self.param = Some(p);
        self
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::InvalidRequest(m) => ApiError::bad(m),
            EngineError::Busy(_) => ApiError::bad(e.to_string()),
            other => ApiError {
                status: StatusCode::INTERNAL_SERVER_ERROR,
                kind: "server_error",
                message: other.to_string(),
                param: None,
            },
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": {
                "message": self.message,
                "type": self.kind,
                "param": self.param,
                "code": self.status.as_u16(),
            }
        });
        (self.status, axum::Json(body)).into_response()
    }
}

async fn not_found() -> ApiError {
    ApiError {
        status: StatusCode::NOT_FOUND,
        kind: "not_found_error",
        message: "no such endpoint".into(),
        param: None,
    }
}

/// Checks the API key and returns the tenant it names (`None` without authentication).
fn authorize(st: &AppState, headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    if st.api_keys.is_empty() {
        return Ok(None);
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    match given {
        Some(k) if st.api_keys.iter().any(|a| a == k) => {
            let mut h = std::collections::hash_map::DefaultHasher::new();
            k.hash(&mut h);
            Ok(Some(format!("{:016x}", h.finish())))
        }
        _ => Err(ApiError {
            status: StatusCode::UNAUTHORIZED,
            kind: "authentication_error",
            message: "a valid API key is required (Authorization: Bearer <key>)".into(),
            param: None,
        }),
    }
}

fn parse_body<T: for<'de> Deserialize<'de>>(st: &AppState, body: &Bytes) -> Result<T, ApiError> {
    if body.len() > st.max_body_bytes {
        return Err(ApiError {
            status: StatusCode::PAYLOAD_TOO_LARGE,
            kind: "invalid_request_error",
            message: format!("the request body exceeds {} bytes", st.max_body_bytes),
            param: None,
        });
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad(format!("invalid JSON body: {e}")))
}

fn namespace(tenant: Option<String>, salt: Option<String>) -> Namespace {
    let mut ns = Namespace::shared();
    if let Some(t) = tenant {
        ns = ns.with_tenant(t);
    }
    if let Some(s) = salt.filter(|s| !s.is_empty()) {
        ns = ns.with_salt(s);
    }
    ns
}

// ----- request bodies -----

#[derive(Deserialize)]
#[serde(untagged)]
enum StringOrList {
    One(String),
    Many(Vec<String>),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum PromptInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<i64>),
    TokenLists(Vec<Vec<i64>>),
}

#[derive(Deserialize, Default)]
struct StreamOptions {
    include_usage: Option<bool>,
}

/// Sampling fields shared by the OpenAI endpoints.
#[derive(Deserialize, Default)]
struct OpenAiSampling {
    max_tokens: Option<i64>,
    max_completion_tokens: Option<i64>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<i64>,
    min_p: Option<f32>,
    stop: Option<StringOrList>,
    stop_token_ids: Option<Vec<u32>>,
    seed: Option<u64>,
    n: Option<i64>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    repetition_penalty: Option<f32>,
    min_tokens: Option<usize>,
    ignore_eos: Option<bool>,
    skip_special_tokens: Option<bool>,
    stream: Option<bool>,
    stream_options: Option<StreamOptions>,
    cache_salt: Option<String>,
}

#[derive(Deserialize)]
struct CompletionBody {
    model: Option<String>,
    prompt: PromptInput,
    logprobs: Option<u32>,
    echo: Option<bool>,
    #[serde(flatten)]
    s: OpenAiSampling,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

#[derive(Deserialize)]
struct ContentPart {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
}

#[derive(Deserialize)]
struct MessageBody {
    role: String,
    content: Option<MessageContent>,
}

#[derive(Deserialize)]
struct ChatBody {
    model: Option<String>,
    messages: Vec<MessageBody>,
    logprobs: Option<bool>,
    #[serde(flatten)]
    s: OpenAiSampling,
}

fn check_model(st: &AppState, model: Option<&str>) -> Result<(), ApiError> {
    match model {
        None | Some("") | Some("default") => Ok(()),
        Some(m) if m == st.engine.info().model_name => Ok(()),
        Some(m) => Err(ApiError {
            status: StatusCode::NOT_FOUND,
            kind: "invalid_request_error",
            message: format!(
                "the model {m:?} does not exist; this server serves {:?}",
                st.engine.info().model_name
            ),
            param: Some("model"),
        }),
    }
}

/// The validated generation settings of one HTTP request.
struct Params {
    sampling: SamplingParams,
    stop: StopConditions,
    stop_strings: Vec<String>,
    skip_special_tokens: bool,
}

impl Params {
    /// An engine request for `input` with these settings.
    fn request(&self, input: Input, namespace: &Namespace) -> GenerateRequest {
        let mut r = GenerateRequest::new(input);
        r.sampling = self.sampling.clone();
        r.stop = self.stop.clone();
        r.stop_strings = self.stop_strings.clone();
        r.namespace = namespace.clone();
        r.skip_special_tokens = self.skip_special_tokens;
        r
    }
}

impl OpenAiSampling {
    fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }
}

/// Builds the sampling and stop settings of an OpenAI request.
fn openai_params(
    s: &OpenAiSampling,
    default_max: usize,
    want_logprobs: bool,
) -> Result<Params, ApiError> {
    let max = s.max_completion_tokens.or(s.max_tokens);
    let max_new = match max {
        None => default_max,
        Some(m) if m >= 0 => m as usize,
        Some(_) => return Err(ApiError::bad("max_tokens must be >= 0").param("max_tokens")),
    };
    let top_k = match s.top_k {
        None | Some(-1) | Some(0) => 0,
        Some(k) if k > 0 => k as usize,
        Some(_) => return Err(ApiError::bad("top_k must be -1 or positive").param("top_k")),
    };
    let sampling = SamplingParams {
        temperature: s.temperature.unwrap_or(1.0),
        top_p: s.top_p.unwrap_or(1.0),
        top_k,
        min_p: s.min_p.unwrap_or(0.0),
        repetition_penalty: s.repetition_penalty.unwrap_or(1.0),
        frequency_penalty: s.frequency_penalty.unwrap_or(0.0),
        presence_penalty: s.presence_penalty.unwrap_or(0.0),
        seed: s.seed,
        return_logprob: want_logprobs,
    };
    sampling.validate().map_err(ApiError::bad)?;
    let stop = StopConditions {
        max_new_tokens: max_new,
        min_new_tokens: s.min_tokens.unwrap_or(0),
        stop_token_ids: s.stop_token_ids.clone().unwrap_or_default(),
        ignore_eos: s.ignore_eos.unwrap_or(false),
    };
    let stop_strings = match &s.stop {
        None => Vec::new(),
        Some(StringOrList::One(x)) => vec![x.clone()],
        Some(StringOrList::Many(v)) => v.clone(),
    };
    if stop_strings.len() > 16 {
        return Err(ApiError::bad("at most 16 stop strings").param("stop"));
    }
    Ok(Params {
        sampling,
        stop,
        stop_strings,
        skip_special_tokens: s.skip_special_tokens.unwrap_or(true),
    })
}

fn n_of(s: &OpenAiSampling) -> Result<usize, ApiError> {
    match s.n {
        None => Ok(1),
        Some(n) if (1..=16).contains(&n) => Ok(n as usize),
        Some(_) => Err(ApiError::bad("n must be between 1 and 16").param("n")),
    }
}

fn token_ids(list: &[i64], vocab: usize) -> Result<Vec<u32>, ApiError> {
    list.iter()
        .map(|&t| {
            u32::try_from(t)
                .ok()
                .filter(|&t| (t as usize) < vocab)
                .ok_or_else(|| {
                    ApiError::bad(format!("invalid token id {t} (vocabulary size {vocab})"))
                })
        })
        .collect()
}

// ----- running generations -----

/// Submits a request and forwards its events to an async channel from a blocking thread;
/// when the receiver goes away (the client disconnected), the stream is dropped, which aborts
/// the request and frees what it held.
fn spawn_generation(
    engine: &Arc<Engine>,
    req: GenerateRequest,
) -> Result<(mpsc::Receiver<StreamEvent>, usize), ApiError> {
    let stream = engine.generate(req)?;
    let prompt_tokens = stream.prompt_tokens();
    let (tx, rx) = mpsc::channel(256);
    tokio::task::spawn_blocking(move || {
        for ev in stream {
            if tx.blocking_send(ev).is_err() {
                break;
            }
        }
    });
    Ok((rx, prompt_tokens))
}

/// Waits for the end of a generation; returns the completion.
async fn finish(mut rx: mpsc::Receiver<StreamEvent>) -> Result<Completion, ApiError> {
    while let Some(ev) = rx.recv().await {
        if let StreamEvent::Done(c) = ev {
            return Ok(c);
        }
    }
    Err(ApiError::from(EngineError::Closed))
}

fn openai_finish(reason: &FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop { .. } => "stop",
        FinishReason::Length { .. } => "length",
        FinishReason::Abort { .. } => "abort",
    }
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn usage_json(prompt: usize, completion: usize, cached: usize) -> Value {
    json!({
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": { "cached_tokens": cached },
    })
}

fn sse_response(rx: mpsc::Receiver<Result<String, std::convert::Infallible>>) -> Response {
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx);
    Response::builder()
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn sse(v: &Value) -> Result<String, std::convert::Infallible> {
    Ok(format!("data: {v}\n\n"))
}

fn request_id(prefix: &str) -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    format!(
        "{prefix}-{}",
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// One OpenAI choice's inputs.
struct Job {
    index: usize,
    rx: mpsc::Receiver<StreamEvent>,
    prompt_tokens: usize,
}

/// The shape of an OpenAI response: completions or chat.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    Completions,
    Chat,
}

async fn run_openai(
    st: Shared,
    api: Api,
    requests: Vec<GenerateRequest>,
    stream: bool,
    include_usage: bool,
    logprobs: bool,
) -> Result<Response, ApiError> {
    let id = request_id(if api == Api::Chat { "chatcmpl" } else { "cmpl" });
    let model = st.engine.info().model_name.clone();
    let created = now_secs();
    let mut jobs = Vec::with_capacity(requests.len());
    for (index, r) in requests.into_iter().enumerate() {
        let (rx, prompt_tokens) = spawn_generation(&st.engine, r)?;
        jobs.push(Job {
            index,
            rx,
            prompt_tokens,
        });
    }
    st.metrics.request_started();
    let started = Instant::now();
    if !stream {
        let mut choices = Vec::new();
        let (mut prompt, mut completion, mut cached) = (0, 0, 0);
        for job in jobs {
            let c = finish(job.rx).await?;
            st.metrics.observe(&c);
            prompt += c.usage.prompt_tokens;
            completion += c.usage.completion_tokens;
            cached += c.usage.cached_tokens;
            let lp = logprobs.then(|| logprob_json(api, &st.engine, &c.token_ids, &c.logprobs));
            choices.push(match api {
                Api::Completions => json!({
                    "index": job.index, "text": c.text, "logprobs": lp,
                    "finish_reason": openai_finish(&c.finish_reason),
                }),
                Api::Chat => json!({
                    "index": job.index,
                    "message": {"role": "assistant", "content": c.text},
                    "logprobs": lp,
                    "finish_reason": openai_finish(&c.finish_reason),
                }),
            });
        }
        let object = if api == Api::Chat {
            "chat.completion"
        } else {
            "text_completion"
        };
        return Ok(axum::Json(json!({
            "id": id, "object": object, "created": created, "model": model,
            "choices": choices, "usage": usage_json(prompt, completion, cached),
        }))
        .into_response());
    }
    // Streaming: merge the choices' events into one SSE stream.
    let (tx, rx) = mpsc::channel(256);
    let object = if api == Api::Chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    tokio::spawn(async move {
        let (merged_tx, mut merged) = mpsc::channel::<(usize, usize, StreamEvent)>(256);
        for job in jobs {
            let mtx = merged_tx.clone();
            tokio::spawn(async move {
                let mut rx = job.rx;
                while let Some(ev) = rx.recv().await {
                    if mtx.send((job.index, job.prompt_tokens, ev)).await.is_err() {
                        break;
                    }
                }
            });
        }
        drop(merged_tx);
        let (mut prompt, mut completion, mut cached) = (0, 0, 0);
        let mut started_roles = std::collections::HashSet::new();
        while let Some((index, _prompt_tokens, ev)) = merged.recv().await {
            let chunk = match ev {
                StreamEvent::Delta(d) => {
                    let role_pending = api == Api::Chat && !started_roles.contains(&index);
                    if d.text.is_empty() && !role_pending {
                        continue;
                    }
                    let lp = (logprobs && !d.token_ids.is_empty())
                        .then(|| logprob_json(api, &st.engine, &d.token_ids, &d.logprobs));
                    match api {
                        Api::Completions => {
                            json!({"index": index, "text": d.text, "logprobs": lp, "finish_reason": null})
                        }
                        Api::Chat => {
                            let mut delta = json!({"content": d.text});
                            if started_roles.insert(index) {
                                delta["role"] = json!("assistant");
                            }
                            json!({"index": index, "delta": delta, "logprobs": lp, "finish_reason": null})
                        }
                    }
                }
                StreamEvent::Done(c) => {
                    st.metrics.observe(&c);
                    prompt += c.usage.prompt_tokens;
                    completion += c.usage.completion_tokens;
                    cached += c.usage.cached_tokens;
                    let reason = openai_finish(&c.finish_reason);
                    match api {
                        Api::Completions => {
                            json!({"index": index, "text": "", "logprobs": null, "finish_reason": reason})
                        }
                        Api::Chat => {
                            json!({"index": index, "delta": {}, "logprobs": null, "finish_reason": reason})
                        }
                    }
                }
            };
            let v = json!({"id": id, "object": object, "created": created, "model": model, "choices": [chunk]});
            if tx.send(sse(&v)).await.is_err() {
                return; // client gone: dropping the receivers aborts the requests
            }
        }
        if include_usage {
            let v = json!({"id": id, "object": object, "created": created, "model": model,
                "choices": [], "usage": usage_json(prompt, completion, cached)});
            let _ = tx.send(sse(&v)).await;
        }
        let _ = tx.send(Ok("data: [DONE]\n\n".to_string())).await;
        let _ = started;
    });
    Ok(sse_response(rx))
}

fn logprob_json(api: Api, engine: &Engine, ids: &[u32], lps: &[f32]) -> Value {
    let tokens: Vec<String> = ids
        .iter()
        .map(|&t| engine.tokenizer().decode(&[t], false).unwrap_or_default())
        .collect();
    match api {
        Api::Completions => json!({"tokens": tokens, "token_logprobs": lps, "top_logprobs": null}),
        Api::Chat => json!({"content": tokens.iter().zip(lps).map(|(t, l)| json!({
            "token": t, "logprob": l, "bytes": t.as_bytes(), "top_logprobs": []
        })).collect::<Vec<_>>()}),
    }
}

async fn completions(
    State(st): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let tenant = authorize(&st, &headers)?;
    let b: CompletionBody = parse_body(&st, &body)?;
    check_model(&st, b.model.as_deref())?;
    if b.echo == Some(true) {
        return Err(ApiError::bad("echo is not supported").param("echo"));
    }
    let want_lp = b.logprobs.is_some_and(|n| n > 0);
    let params = openai_params(&b.s, 16, want_lp)?;
    let vocab = st.engine.info().vocab_size;
    let inputs: Vec<Input> = match b.prompt {
        PromptInput::Text(t) => vec![Input::Text(t)],
        PromptInput::Texts(v) => v.into_iter().map(Input::Text).collect(),
        PromptInput::Tokens(ids) => vec![Input::Tokens(token_ids(&ids, vocab)?)],
        PromptInput::TokenLists(l) => l
            .iter()
            .map(|ids| token_ids(ids, vocab).map(Input::Tokens))
            .collect::<Result<_, _>>()?,
    };
    if inputs.is_empty() {
        return Err(ApiError::bad("prompt must not be empty").param("prompt"));
    }
    let n = n_of(&b.s)?;
    let ns = namespace(tenant, b.s.cache_salt.clone());
    let mut requests = Vec::new();
    for input in inputs {
        for _ in 0..n {
            requests.push(params.request(input.clone(), &ns));
        }
    }
    let include_usage = b.s.include_usage();
    run_openai(
        st,
        Api::Completions,
        requests,
        b.s.stream.unwrap_or(false),
        include_usage,
        want_lp,
    )
    .await
}

async fn chat_completions(
    State(st): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let tenant = authorize(&st, &headers)?;
    let b: ChatBody = parse_body(&st, &body)?;
    check_model(&st, b.model.as_deref())?;
    if b.messages.is_empty() {
        return Err(ApiError::bad("messages must not be empty").param("messages"));
    }
    let mut messages = Vec::with_capacity(b.messages.len());
    for m in b.messages {
        if !matches!(
            m.role.as_str(),
            "system" | "user" | "assistant" | "developer" | "tool"
        ) {
            return Err(
                ApiError::bad(format!("unknown message role {:?}", m.role)).param("messages")
            );
        }
        let content = match m.content {
            None => String::new(),
            Some(MessageContent::Text(t)) => t,
            Some(MessageContent::Parts(parts)) => {
                let mut s = String::new();
                for p in parts {
                    if p.kind != "text" {
                        return Err(ApiError::bad(format!(
                            "content part type {:?} is not supported",
                            p.kind
                        )));
                    }
                    s.push_str(&p.text.unwrap_or_default());
                }
                s
            }
        };
        let role = if m.role == "developer" {
            "system".to_string()
        } else {
            m.role
        };
        messages.push(ChatMessage::new(role, content));
    }
    let want_lp = b.logprobs.unwrap_or(false);
    let mut params = openai_params(&b.s, usize::MAX, want_lp)?;
    let input = Input::Chat(messages);
    if params.stop.max_new_tokens == usize::MAX {
        // No max_tokens: up to 1,024 tokens, within what the context leaves.
        let prompt = st.engine.tokenize(&input)?.len();
        let info = st.engine.info();
        let room = info
            .context_length
            .min(info.kv_capacity_tokens)
            .saturating_sub(prompt);
        params.stop.max_new_tokens = room.min(1024);
    }
    let n = n_of(&b.s)?;
    let ns = namespace(tenant, b.s.cache_salt.clone());
    let requests = (0..n).map(|_| params.request(input.clone(), &ns)).collect();
    let include_usage = b.s.include_usage();
    run_openai(
        st,
        Api::Chat,
        requests,
        b.s.stream.unwrap_or(false),
        include_usage,
        want_lp,
    )
    .await
}

// ----- SGLang native -----

#[derive(Deserialize, Default)]
struct NativeSampling {
    max_new_tokens: Option<i64>,
    min_new_tokens: Option<usize>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    top_k: Option<i64>,
    min_p: Option<f32>,
    frequency_penalty: Option<f32>,
    presence_penalty: Option<f32>,
    repetition_penalty: Option<f32>,
    stop: Option<StringOrList>,
    stop_token_ids: Option<Vec<u32>>,
    ignore_eos: Option<bool>,
    skip_special_tokens: Option<bool>,
    sampling_seed: Option<u64>,
    n: Option<i64>,
}

#[derive(Deserialize)]
struct NativeBody {
    text: Option<String>,
    input_ids: Option<Vec<i64>>,
    sampling_params: Option<NativeSampling>,
    stream: Option<bool>,
    return_logprob: Option<bool>,
    extra_key: Option<String>,
    cache_salt: Option<String>,
}

async fn generate_native(
    State(st): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let tenant = authorize(&st, &headers)?;
    let b: NativeBody = parse_body(&st, &body)?;
    let input = match (b.text, b.input_ids) {
        (Some(t), None) => Input::Text(t),
        (None, Some(ids)) => {
            if ids.is_empty() {
                return Err(ApiError::bad("input_ids must not be empty").param("input_ids"));
            }
            Input::Tokens(token_ids(&ids, st.engine.info().vocab_size)?)
        }
        _ => {
            return Err(ApiError::bad(
                "exactly one of text and input_ids is required",
            ))
        }
    };
    let sp = b.sampling_params.unwrap_or_default();
    if sp.n.is_some_and(|n| n != 1) {
        return Err(ApiError::bad(
            "n > 1 is not supported on /generate; use /v1/completions",
        ));
    }
    let s = OpenAiSampling {
        max_tokens: Some(sp.max_new_tokens.unwrap_or(128)),
        temperature: sp.temperature,
        top_p: sp.top_p,
        top_k: sp.top_k,
        min_p: sp.min_p,
        stop: sp.stop,
        stop_token_ids: sp.stop_token_ids,
        seed: sp.sampling_seed,
        presence_penalty: sp.presence_penalty,
        frequency_penalty: sp.frequency_penalty,
        repetition_penalty: sp.repetition_penalty,
        min_tokens: sp.min_new_tokens,
        ignore_eos: sp.ignore_eos,
        skip_special_tokens: sp.skip_special_tokens,
        ..OpenAiSampling::default()
    };
    let want_lp = b.return_logprob.unwrap_or(false);
    let params = openai_params(&s, 128, want_lp)?;
    let r = params.request(input, &namespace(tenant, b.cache_salt.or(b.extra_key)));
    let (mut rx, prompt_tokens) = spawn_generation(&st.engine, r)?;
    st.metrics.request_started();
    let rid = request_id("gen");
    let meta = move |c: Option<&Completion>, completion_tokens: usize| {
        let mut m = json!({
            "id": rid, "prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "cached_tokens": c.map_or(0, |c| c.usage.cached_tokens),
            "finish_reason": c.map(|c| native_finish(&c.finish_reason)),
        });
        if let Some(c) = c {
            m["e2e_latency"] = json!(c.e2e_latency);
        }
        m
    };
    if !b.stream.unwrap_or(false) {
        let c = finish(rx).await?;
        st.metrics.observe(&c);
        let mut v = json!({"text": c.text, "output_ids": c.token_ids, "meta_info": meta(Some(&c), c.usage.completion_tokens)});
        if want_lp {
            let triples: Vec<Value> = c
                .logprobs
                .iter()
                .zip(&c.token_ids)
                .map(|(lp, id)| json!([lp, id, null]))
                .collect();
            v["meta_info"]["output_token_logprobs"] = json!(triples);
        }
        return Ok(axum::Json(v).into_response());
    }
    let (tx, out) = mpsc::channel(256);
    tokio::spawn(async move {
        let mut text = String::new();
        let mut ids: Vec<u32> = Vec::new();
        while let Some(ev) = rx.recv().await {
            let v = match ev {
                StreamEvent::Delta(d) => {
                    text.push_str(&d.text);
                    ids.extend(&d.token_ids);
                    json!({"text": text, "output_ids": ids, "meta_info": meta(None, ids.len())})
                }
                StreamEvent::Done(c) => {
                    st.metrics.observe(&c);
                    json!({"text": c.text, "output_ids": c.token_ids, "meta_info": meta(Some(&c), c.usage.completion_tokens)})
                }
            };
            if tx.send(sse(&v)).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Ok("data: [DONE]\n\n".to_string())).await;
    });
    Ok(sse_response(out))
}

fn native_finish(reason: &FinishReason) -> Value {
    match reason {
        FinishReason::Stop { token: Some(t), .. } => json!({"type": "stop", "matched": t}),
        FinishReason::Stop { text, .. } => json!({"type": "stop", "matched": text}),
        FinishReason::Length { length } => json!({"type": "length", "length": length}),
        FinishReason::Abort { message } => json!({"type": "abort", "message": message}),
    }
}

// ----- service endpoints -----

async fn models(State(st): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&st, &headers)?;
    let info = st.engine.info();
    Ok(axum::Json(json!({
        "object": "list",
        "data": [{"id": info.model_name, "object": "model", "created": now_secs(), "owned_by": "radixserve",
                  "max_model_len": info.context_length}],
    }))
    .into_response())
}

async fn health() -> &'static str {
    "OK"
}

async fn health_generate(State(st): State<Shared>) -> Result<Response, ApiError> {
    let mut r = GenerateRequest::new(Input::Tokens(vec![0]));
    r.stop.max_new_tokens = 1;
    let (rx, _) = spawn_generation(&st.engine, r)?;
    finish(rx).await?;
    Ok("OK".into_response())
}

async fn model_info(State(st): State<Shared>) -> Response {
    let info = st.engine.info();
    axum::Json(json!({
        "model_path": info.model_path.display().to_string(),
        "tokenizer_path": info.model_path.display().to_string(),
        "is_generation": true,
        "model_name": info.model_name,
        "vocab_size": info.vocab_size,
        "context_length": info.context_length,
    }))
    .into_response()
}

async fn server_info(State(st): State<Shared>) -> Response {
    let info = st.engine.info();
    let s = st.engine.stats();
    axum::Json(json!({
        "model_path": info.model_path.display().to_string(),
        "context_length": info.context_length,
        "page_size": info.page_size,
        "max_total_num_tokens": info.kv_capacity_tokens,
        "dp_size": 1,
        "uptime_seconds": st.started.elapsed().as_secs_f64(),
        "num_waiting": s.waiting,
        "num_running": s.running,
        "version": env!("CARGO_PKG_VERSION"),
    }))
    .into_response()
}

async fn flush_cache(State(st): State<Shared>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&st, &headers)?;
    let engine = st.engine.clone();
    let result = tokio::task::spawn_blocking(move || engine.flush_cache())
        .await
        .map_err(|e| ApiError::from(EngineError::Config(e.to_string())))?;
    match result {
        Ok(()) => Ok("Cache flushed.\n".into_response()),
        Err(EngineError::Busy(n)) => Err(ApiError::bad(format!(
            "cannot flush the cache while {n} requests are queued or running"
        ))),
        Err(e) => Err(e.into()),
    }
}

async fn get_load(State(st): State<Shared>) -> Response {
    let s = st.engine.stats();
    axum::Json(json!({
        "load": s.waiting + s.running,
        "num_waiting_reqs": s.waiting,
        "num_running_reqs": s.running,
        "kv_used_tokens": s.kv.capacity - s.kv.available - s.kv.evictable,
    }))
    .into_response()
}

async fn metrics(State(st): State<Shared>) -> Response {
    let s = st.engine.stats();
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, v: u64| {
        out.push_str(&format!("# HELP radixserve_{name} {help}\n# TYPE radixserve_{name} counter\nradixserve_{name} {v}\n"));
    };
    counter(
        "prefix_cache_query_tokens_total",
        "Prompt tokens looked up in the prefix cache at admission.",
        s.counters.prefix_query_tokens,
    );
    counter(
        "prefix_cache_hit_tokens_total",
        "Prompt tokens found in the prefix cache at admission.",
        s.counters.prefix_hit_tokens,
    );
    counter(
        "requests_total",
        "Requests accepted by the scheduler.",
        s.counters.requests,
    );
    counter(
        "requests_finished_total",
        "Requests finished for any reason.",
        s.counters.finished,
    );
    counter(
        "requests_aborted_total",
        "Requests aborted.",
        s.counters.aborted,
    );
    counter(
        "generated_tokens_total",
        "Tokens generated.",
        s.counters.tokens_generated,
    );
    counter(
        "computed_tokens_total",
        "Tokens computed by the model.",
        s.counters.tokens_computed,
    );
    counter(
        "retractions_total",
        "Requests retracted under memory pressure.",
        s.counters.retractions,
    );
    counter(
        "evicted_tokens_total",
        "Cached tokens evicted.",
        s.cache.tokens_evicted,
    );
    let mut gauge = |name: &str, help: &str, v: usize| {
        out.push_str(&format!("# HELP radixserve_{name} {help}\n# TYPE radixserve_{name} gauge\nradixserve_{name} {v}\n"));
    };
    gauge("num_waiting_requests", "Requests waiting.", s.waiting);
    gauge("num_running_requests", "Requests admitted.", s.running);
    gauge("kv_capacity_tokens", "KV slots in the pool.", s.kv.capacity);
    gauge("kv_free_tokens", "KV slots free.", s.kv.available);
    gauge(
        "kv_cached_evictable_tokens",
        "KV slots holding evictable cached prefixes.",
        s.kv.evictable,
    );
    gauge(
        "kv_cached_locked_tokens",
        "KV slots holding cached prefixes in use.",
        s.kv.protected,
    );
    gauge(
        "kv_private_tokens",
        "KV slots owned by running requests.",
        s.kv.private,
    );
    st.metrics.render(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

// ----- latency histograms -----

const BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        for (c, b) in self.counts.iter_mut().zip(BUCKETS) {
            if v <= b {
                *c += 1;
            }
        }
        self.count += 1;
        self.sum += v;
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        out.push_str(&format!(
            "# HELP radixserve_{name} {help}\n# TYPE radixserve_{name} histogram\n"
        ));
        for (c, b) in self.counts.iter().zip(BUCKETS) {
            out.push_str(&format!("radixserve_{name}_bucket{{le=\"{b}\"}} {c}\n"));
        }
        out.push_str(&format!(
            "radixserve_{name}_bucket{{le=\"+Inf\"}} {}\nradixserve_{name}_sum {}\nradixserve_{name}_count {}\n",
            self.count, self.sum, self.count
        ));
    }
}

#[derive(Default)]
struct Metrics {
    inner: Mutex<MetricsInner>,
}

#[derive(Default)]
struct MetricsInner {
    http_requests: u64,
    ttft: Histogram,
    e2e: Histogram,
    prompt_tokens: u64,
    cached_tokens: u64,
}

impl Metrics {
    fn request_started(&self) {
        if let Ok(mut m) = self.inner.lock() {
            m.http_requests += 1;
        }
    }

    fn observe(&self, c: &Completion) {
        if let Ok(mut m) = self.inner.lock() {
            if let Some(t) = c.time_to_first_token {
                m.ttft.observe(t);
            }
            m.e2e.observe(c.e2e_latency);
            m.prompt_tokens += c.usage.prompt_tokens as u64;
            m.cached_tokens += c.usage.cached_tokens as u64;
        }
    }

    fn render(&self, out: &mut String) {
        if let Ok(m) = self.inner.lock() {
            out.push_str(&format!(
                "# HELP radixserve_http_generation_requests_total Generation requests served over HTTP.\n# TYPE radixserve_http_generation_requests_total counter\nradixserve_http_generation_requests_total {}\n",
                m.http_requests
            ));
            out.push_str(&format!(
                "# HELP radixserve_prompt_tokens_total Prompt tokens of finished requests.\n# TYPE radixserve_prompt_tokens_total counter\nradixserve_prompt_tokens_total {}\n# HELP radixserve_cached_prompt_tokens_total Cached prompt tokens of finished requests.\n# TYPE radixserve_cached_prompt_tokens_total counter\nradixserve_cached_prompt_tokens_total {}\n",
                m.prompt_tokens, m.cached_tokens
            ));
            m.ttft
                .render("time_to_first_token_seconds", "Time to first token.", out);
            m.e2e.render(
                "e2e_request_latency_seconds",
                "End-to-end request latency.",
                out,
            );
        }
    }
}
