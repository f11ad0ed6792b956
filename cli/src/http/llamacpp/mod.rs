//! llama.cpp's native API: `POST /completion` (its request and response shapes, streamed or
//! not, one prompt or several), `GET /slots` and `POST /apply-template`.
//!
//! The request is turned into the same engine request as every other route (so it shares the
//! prefix cache with them); the answer is shaped as llama-server's: `content`, `tokens`,
//! `stop_type`, `timings`, `generation_settings`, `completion_probabilities` with `n_probs`,
//! filtered by `response_fields`. llama.cpp's sampler knobs that radixserve does not have are
//! accepted only at their no-op defaults (what its clients send when nobody set them), and
//! refused by name otherwise.

pub(super) mod extras;
mod prompt;
mod response;

use super::auth::Caller;
use super::error::ApiError;
use super::jobs;
use super::layers::JsonBody;
use super::params::{self, DefaultMax, OpenAiSampling, Params, StringOrList, Unknown};
use super::sse;
use super::structured::StructuredFields;
use super::Shared;
use axum::extract::{Extension, Query, State};
use axum::response::{IntoResponse, Response};
use engine::{Input, StreamEvent};
use futures_util::stream::StreamExt;
use response::{Outcome, Settings};
use serde::Deserialize;
use std::sync::Arc;

/// What `n_predict: -1` (llama.cpp's default: until the end of the text) is capped at, besides
/// the context: the chat routes' default.
const UNBOUNDED_CAP: usize = 1024;

/// Most alternatives per position (`n_probs`), as the OpenAI routes allow.
const MAX_N_PROBS: usize = engine::MAX_TOP_LOGPROBS;

/// `POST /completion` request.
#[derive(Deserialize)]
pub struct CompletionBody {
    prompt: serde_json::Value,
    n_predict: Option<i64>,
    temperature: Option<f32>,
    top_k: Option<i64>,
    top_p: Option<f32>,
    min_p: Option<f32>,
    seed: Option<i64>,
    stop: Option<Vec<String>>,
    stream: Option<bool>,
    n_probs: Option<usize>,
    post_sampling_probs: Option<bool>,
    return_tokens: Option<bool>,
    response_fields: Option<Vec<String>>,
    cache_prompt: Option<bool>,
    logit_bias: Option<serde_json::Value>,
    ignore_eos: Option<bool>,
    repeat_penalty: Option<f32>,
    presence_penalty: Option<f32>,
    frequency_penalty: Option<f32>,
    #[serde(flatten)]
    structured: StructuredFields,
    #[serde(flatten)]
    extras: extras::ExtraFields,
    #[serde(flatten)]
    unknown: Unknown,
}

/// llama.cpp's sampler and slot knobs radixserve does not have, with the value that makes each
/// a no-op (llama.cpp's default): sent at that value they are accepted, otherwise refused.
const NO_OP_DEFAULTS: &[(&str, f64)] = &[
    ("id_slot", -1.0),
    ("n_keep", 0.0),
    ("n_discard", 0.0),
    ("n_indent", 0.0),
    ("min_keep", 0.0),
    ("typical_p", 1.0),
    ("mirostat", 0.0),
    ("dry_multiplier", 0.0),
    ("xtc_probability", 0.0),
    ("top_n_sigma", -1.0),
    ("t_max_predict_ms", 0.0),
];

/// Refuses the fields `/completion` does not honour, keeping the no-op defaults.
fn check_unknown(unknown: &Unknown) -> Result<(), ApiError> {
    let rest: Unknown = unknown
        .iter()
        .filter(|(k, v)| {
            !NO_OP_DEFAULTS
                .iter()
                .any(|(name, d)| name == k && v.as_f64() == Some(*d))
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    params::reject_unknown(&rest, "/completion")
}

/// The engine settings of a `/completion` request (its prompts are read separately).
fn settings(st: &Shared, b: &mut CompletionBody) -> Result<(Params, Settings), ApiError> {
    let post_sampling = b.post_sampling_probs.unwrap_or(false);
    let stream = b.stream.unwrap_or(false);
    let extras = b.extras.check(stream)?;
    let n_probs = b.n_probs.unwrap_or(0);
    if n_probs > MAX_N_PROBS {
        return Err(
            ApiError::bad(format!("n_probs must be at most {MAX_N_PROBS}")).param("n_probs"),
        );
    }
    let seed = match b.seed {
        None | Some(-1) => None,
        Some(s) if s >= 0 => Some(s as u64),
        Some(_) => return Err(ApiError::bad("seed must be -1 or non-negative").param("seed")),
    };
    let max_tokens = match b.n_predict {
        None | Some(-1) => None,
        Some(n) if n >= 0 => Some(n),
        Some(_) => {
            return Err(ApiError::bad("n_predict must be -1 or non-negative").param("n_predict"))
        }
    };
    let bias = prompt::logit_bias(st, b.logit_bias.take())?;
    let sampling = OpenAiSampling {
        max_tokens,
        temperature: b.temperature,
        top_p: b.top_p,
        top_k: b.top_k,
        min_p: b.min_p,
        stop: b.stop.take().map(StringOrList::Many),
        seed,
        presence_penalty: b.presence_penalty,
        frequency_penalty: b.frequency_penalty,
        repetition_penalty: b.repeat_penalty,
        ignore_eos: b.ignore_eos,
        logit_bias: Some(bias),
        ..OpenAiSampling::default()
    };
    let sampling = st.defaults.apply(sampling);
    let mut params = Params::from_openai(&sampling, DefaultMax::Room(UNBOUNDED_CAP), n_probs > 0)?
        .with_alternatives(n_probs, Vec::new())
        .with_grammar(b.structured.spec()?)
        .with_progress(extras.engine_progress());
    params.sampling.post_sampling_probs = post_sampling;
    let settings = Settings {
        n_predict: sampling.max_tokens.unwrap_or(-1),
        seed: sampling.seed.map_or(-1, |s| s as i64),
        temperature: params.sampling.temperature,
        top_k: params.sampling.top_k as i64,
        top_p: params.sampling.top_p,
        min_p: params.sampling.min_p,
        n_probs,
        stop: params.stop_strings.clone(),
        ignore_eos: params.stop.ignore_eos,
        stream,
        repeat_penalty: params.sampling.repetition_penalty,
        presence_penalty: params.sampling.presence_penalty,
        frequency_penalty: params.sampling.frequency_penalty,
        return_tokens: b.return_tokens.unwrap_or(false),
        post_sampling_probs: post_sampling,
        extras,
    };
    Ok((params, settings))
}

/// `POST /completion`: one prompt (a string, token ids, or both mixed) or several (a list of
/// them: the answer is then a list).
pub async fn completion(
    State(st): State<Shared>,
    Extension(caller): Extension<Caller>,
    JsonBody(mut b): JsonBody<CompletionBody>,
) -> Result<Response, ApiError> {
    check_unknown(&b.unknown)?;
    let (params, settings) = settings(&st, &mut b)?;
    let fields = b.response_fields.take().unwrap_or_default();
    let (inputs, list) = prompt::inputs(&st, b.prompt.take())?;
    params::check_sequences(inputs.len(), 1)?;
    let prompts = prompt::tokenize(&st, inputs).await?;
    // `cache_prompt: false` computes the whole prompt: a namespace of its own shares nothing.
    let salt =
        (!b.cache_prompt.unwrap_or(true)).then(|| format!("cache_prompt:false:{}", uuid_like()));
    let ns = params::namespace(caller.tenant, salt)?;
    let texts: Vec<String> = prompts
        .iter()
        .map(|ids| st.engine.tokenizer().decode(ids, false).unwrap_or_default())
        .collect();
    let inputs: Vec<Input> = prompts.into_iter().map(Input::Tokens).collect();
    let jobs = jobs::submit(&st.engine, &params, inputs, 1, &ns).await?;
    st.metrics.request_started();
    let settings = Arc::new(settings);
    if settings.stream {
        return Ok(stream(st, jobs, settings, texts));
    }
    let mut outs = Vec::with_capacity(jobs.len());
    for f in jobs::complete_all(jobs).await? {
        st.metrics.observe(&f.completion);
        let outcome = Outcome::of(&f.completion, &settings, &texts[f.index])?;
        let mut out = outcome.to_json(&st);
        out["index"] = f.index.into();
        outs.push(response::filter(out, &fields));
    }
    jobs::one_or_list(outs, list)
}

/// A fresh identifier for a private namespace.
fn uuid_like() -> String {
    use std::hash::{BuildHasher, Hasher};
    let h = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{h:016x}")
}

/// A streamed `/completion`: one chunk per delta (its text, its token ids, and its
/// `completion_probabilities` with `n_probs`), then the final chunk with `stop: true` and the
/// whole response's fields. Every chunk carries its prompt's `index`.
fn stream(
    st: Shared,
    jobs: Vec<jobs::Job>,
    settings: Arc<Settings>,
    texts: Vec<String>,
) -> Response {
    let keep_alive = st.limits.sse_keep_alive;
    let prompt_tokens: Vec<usize> = jobs.iter().map(|j| j.stream.prompt_tokens()).collect();
    let mut predicted = vec![0usize; jobs.len()];
    let mut clocks: Vec<extras::Clock> = jobs.iter().map(|_| extras::Clock::new()).collect();
    let events = jobs::merged_events(jobs).map(move |(index, _, ev)| {
        clocks[index].observe(&ev);
        let mut chunk = match &ev {
            StreamEvent::Progress(p) if settings.extras.progress => {
                response::progress_chunk(p, prompt_tokens[index])
            }
            // Only deltas with tokens: llama-server's chunks each carry at least one.
            StreamEvent::Progress(_) => return sse::Item::Data(Vec::new(), (0, 0, 0)),
            StreamEvent::Delta(d) if d.token_ids.is_empty() => {
                return sse::Item::Data(Vec::new(), (0, 0, 0))
            }
            StreamEvent::Delta(d) => {
                predicted[index] += d.token_ids.len();
                let mut c = response::delta_chunk(
                    &st,
                    d,
                    &settings,
                    prompt_tokens[index],
                    predicted[index],
                );
                if settings.extras.timings {
                    c["timings"] = clocks[index].timings();
                }
                c
            }
            StreamEvent::Done(c) => {
                st.metrics.observe(c);
                match Outcome::of(c, &settings, &texts[index]) {
                    Ok(o) => o.final_chunk(&st),
                    Err(e) => return sse::Item::Fail(e),
                }
            }
            StreamEvent::Failed(e) => return sse::Item::Fail(ApiError::from(e.clone())),
        };
        chunk["index"] = index.into();
        sse::Item::Data(vec![chunk.to_string()], (0, 0, 0))
    });
    sse::events_only(events, keep_alive)
}

/// `GET /slots` query: llama-server's `fail_on_no_slot`.
#[derive(Deserialize)]
pub struct SlotsQuery {
    fail_on_no_slot: Option<String>,
}

/// `GET /slots`: one entry per request the server runs at once (`--max-running-requests`,
/// llama-server's slots), the first ones `is_processing` while that many requests run. With
/// `fail_on_no_slot=1`, a 503 when none is free.
pub async fn slots(
    State(st): State<Shared>,
    Query(q): Query<SlotsQuery>,
) -> Result<Response, ApiError> {
    let n = st.engine.max_running_requests();
    let busy = st.engine.stats().running.min(n);
    if q.fail_on_no_slot
        .as_deref()
        .is_some_and(|v| v == "1" || v == "true")
        && busy == n
    {
        return Err(ApiError::unavailable("no slot available"));
    }
    let ctx = st.engine.info().context_length;
    let slots: Vec<serde_json::Value> = (0..n)
        .map(|id| serde_json::json!({"id": id, "n_ctx": ctx, "is_processing": id < busy}))
        .collect();
    Ok(axum::Json(slots).into_response())
}

/// `POST /apply-template` request.
#[derive(Deserialize)]
pub struct ApplyTemplateBody {
    messages: Vec<super::openai_types::RequestMessage>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// `POST /apply-template`: the chat template applied to `messages` (with the generation
/// prompt), as text: what a chat request would compute, without running it.
pub async fn apply_template(
    State(st): State<Shared>,
    JsonBody(b): JsonBody<ApplyTemplateBody>,
) -> Result<Response, ApiError> {
    params::reject_unknown(&b.unknown, "/apply-template")?;
    let messages = super::openai::chat_messages(b.messages)?;
    let prompt = st.engine.render_chat(&messages)?;
    Ok(axum::Json(serde_json::json!({ "prompt": prompt })).into_response())
}
