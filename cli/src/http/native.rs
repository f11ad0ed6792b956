//! SGLang's native `/generate`.

use super::auth::Caller;
use super::error::ApiError;
use super::jobs;
use super::layers::JsonBody;
use super::params::{self, DefaultMax, OpenAiSampling, Params, StringOrList, Unknown};
use super::sse;
use super::Shared;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use engine::{Completion, FinishReason, Input, StreamEvent};
use futures_util::stream::StreamExt;
use serde::{Deserialize, Serialize};

/// SGLang's default `max_new_tokens`.
const NATIVE_DEFAULT_MAX_TOKENS: usize = 128;

/// `sampling_params` of `/generate`.
#[derive(Deserialize, Default)]
pub struct NativeSampling {
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
    #[serde(flatten)]
    unknown: Unknown,
}

impl NativeSampling {
    fn into_openai(self) -> OpenAiSampling {
        OpenAiSampling {
            max_tokens: self.max_new_tokens,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            min_p: self.min_p,
            stop: self.stop,
            stop_token_ids: self.stop_token_ids,
            seed: self.sampling_seed,
            presence_penalty: self.presence_penalty,
            frequency_penalty: self.frequency_penalty,
            repetition_penalty: self.repetition_penalty,
            min_tokens: self.min_new_tokens,
            ignore_eos: self.ignore_eos,
            skip_special_tokens: self.skip_special_tokens,
            ..OpenAiSampling::default()
        }
    }
}

/// `/generate` request.
#[derive(Deserialize)]
pub struct GenerateBody {
    text: Option<String>,
    input_ids: Option<Vec<i64>>,
    sampling_params: Option<NativeSampling>,
    stream: Option<bool>,
    return_logprob: Option<bool>,
    extra_key: Option<String>,
    cache_salt: Option<String>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// `meta_info.finish_reason`.
#[derive(Serialize, Debug)]
#[serde(tag = "type", rename_all = "lowercase")]
enum NativeFinish {
    Stop { matched: Option<serde_json::Value> },
    Length { length: usize },
    Abort { message: String },
}

fn native_finish(reason: &FinishReason) -> NativeFinish {
    match reason {
        FinishReason::Stop { token: Some(t), .. } => NativeFinish::Stop {
            matched: Some((*t).into()),
        },
        FinishReason::Stop { text, .. } => NativeFinish::Stop {
            matched: text.clone().map(Into::into),
        },
        FinishReason::Length { length } => NativeFinish::Length { length: *length },
        FinishReason::Abort { message } => NativeFinish::Abort {
            message: message.clone(),
        },
    }
}

/// `meta_info` of a `/generate` response.
#[derive(Serialize, Debug)]
struct MetaInfo {
    id: String,
    prompt_tokens: usize,
    completion_tokens: usize,
    cached_tokens: usize,
    finish_reason: Option<NativeFinish>,
    #[serde(skip_serializing_if = "Option::is_none")]
    e2e_latency: Option<f64>,
    /// (logprob, token id, token text) triples, SGLang's shape; the text is not returned.
    #[serde(skip_serializing_if = "Option::is_none")]
    output_token_logprobs: Option<Vec<(f32, u32, Option<String>)>>,
}

/// A `/generate` response or streamed chunk.
#[derive(Serialize, Debug)]
struct GenerateOut<'a> {
    text: &'a str,
    output_ids: &'a [u32],
    meta_info: MetaInfo,
}

fn input_of(st: &Shared, b: &mut GenerateBody) -> Result<Input, ApiError> {
    match (b.text.take(), b.input_ids.take()) {
        (Some(t), None) => Ok(Input::Text(t)),
        (None, Some(ids)) if ids.is_empty() => {
            Err(ApiError::bad("input_ids must not be empty").param("input_ids"))
        }
        (None, Some(ids)) => Ok(Input::Tokens(params::token_ids(
            &ids,
            st.engine.info().vocab_size,
        )?)),
        _ => Err(ApiError::bad(
            "exactly one of text and input_ids is required",
        )),
    }
}

fn meta(
    rid: &str,
    prompt_tokens: usize,
    completion_tokens: usize,
    c: Option<&Completion>,
) -> MetaInfo {
    MetaInfo {
        id: rid.to_string(),
        prompt_tokens,
        completion_tokens,
        cached_tokens: c.map_or(0, |c| c.usage.cached_tokens),
        finish_reason: c.map(|c| native_finish(&c.finish_reason)),
        e2e_latency: c.map(|c| c.e2e_latency),
        output_token_logprobs: None,
    }
}

/// `POST /generate` (also `PUT`).
pub async fn generate(
    State(st): State<Shared>,
    Extension(caller): Extension<Caller>,
    JsonBody(mut b): JsonBody<GenerateBody>,
) -> Result<Response, ApiError> {
    params::reject_unknown(&b.unknown, "/generate")?;
    let input = input_of(&st, &mut b)?;
    let sp = b.sampling_params.take().unwrap_or_default();
    params::reject_unknown(&sp.unknown, "/generate sampling_params")?;
    if sp.n.is_some_and(|n| n != 1) {
        return Err(
            ApiError::bad("n > 1 is not supported on /generate; use /v1/completions").param("n"),
        );
    }
    let want_lp = b.return_logprob.unwrap_or(false);
    let params = Params::from_openai(
        &sp.into_openai(),
        DefaultMax::Fixed(NATIVE_DEFAULT_MAX_TOKENS),
        want_lp,
    )?;
    let ns = params::namespace(caller.tenant, b.cache_salt.take().or(b.extra_key.take()))?;
    let mut jobs = jobs::submit(&st.engine, &params, vec![input], 1, &ns).await?;
    let job = jobs
        .pop()
        .ok_or_else(|| ApiError::internal("no sequence was started"))?;
    st.metrics.request_started();
    let rid = format!("gen-{}", job.stream.id());
    let prompt_tokens = job.stream.prompt_tokens();
    if !b.stream.unwrap_or(false) {
        let c = job.stream.completion().await?;
        st.metrics.observe(&c);
        let mut m = meta(&rid, prompt_tokens, c.usage.completion_tokens, Some(&c));
        if want_lp {
            m.output_token_logprobs = Some(
                c.logprobs
                    .iter()
                    .zip(&c.token_ids)
                    .map(|(&lp, &id)| (lp, id, None))
                    .collect(),
            );
        }
        let out = GenerateOut {
            text: &c.text,
            output_ids: &c.token_ids,
            meta_info: m,
        };
        return Ok(axum::Json(out).into_response());
    }
    let keep_alive = st.limits.sse_keep_alive;
    let mut text = String::new();
    let mut ids: Vec<u32> = Vec::new();
    let events = jobs::merged_events(vec![job]).map(move |(_, _, ev)| {
        let chunk = match &ev {
            StreamEvent::Delta(d) => {
                text.push_str(&d.text);
                ids.extend(&d.token_ids);
                serde_json::to_string(&GenerateOut {
                    text: &text,
                    output_ids: &ids,
                    meta_info: meta(&rid, prompt_tokens, ids.len(), None),
                })
            }
            StreamEvent::Done(c) => {
                st.metrics.observe(c);
                serde_json::to_string(&GenerateOut {
                    text: &c.text,
                    output_ids: &c.token_ids,
                    meta_info: meta(&rid, prompt_tokens, c.usage.completion_tokens, Some(c)),
                })
            }
            StreamEvent::Failed(e) => return sse::Item::Fail(ApiError::from(e.clone())),
        };
        sse::Item::Data(chunk.ok(), (0, 0, 0))
    });
    Ok(sse::response(Vec::new(), events, |_| None, keep_alive))
}
