//! SGLang's native `/generate`.

use super::auth::Caller;
use super::error::ApiError;
use super::jobs;
use super::layers::JsonBody;
use super::logprobs::{self, InputTriple, Triple};
use super::params::{self, DefaultMax, OpenAiSampling, Params, StringOrList, Unknown};
use super::sse;
use super::structured::StructuredFields;
use super::Shared;
use axum::extract::{Extension, State};
use axum::response::{IntoResponse, Response};
use engine::{Completion, Engine, FinishReason, Input, StreamEvent};
use engine::{MAX_LOGPROB_TOKEN_IDS, MAX_TOP_LOGPROBS};
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
    logit_bias: Option<std::collections::BTreeMap<String, f32>>,
    no_stop_trim: Option<bool>,
    #[serde(flatten)]
    structured: StructuredFields,
    #[serde(flatten)]
    unknown: Unknown,
}

impl NativeSampling {
    fn into_openai_with_n(self) -> OpenAiSampling {
        OpenAiSampling {
            n: self.n,
            logit_bias: self.logit_bias,
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
            no_stop_trim: self.no_stop_trim,
            ..OpenAiSampling::default()
        }
    }
}

/// One text or a batch.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum TextInput {
    One(String),
    Batch(Vec<String>),
}

/// One token-id list or a batch.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum IdsInput {
    One(Vec<i64>),
    Batch(Vec<Vec<i64>>),
}

/// One client id or one per batch item.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum RidInput {
    One(String),
    Batch(Vec<String>),
}

/// `/generate` request.
#[derive(Deserialize)]
pub struct GenerateBody {
    text: Option<TextInput>,
    input_ids: Option<IdsInput>,
    rid: Option<RidInput>,
    sampling_params: Option<NativeSampling>,
    stream: Option<bool>,
    return_logprob: Option<bool>,
    top_logprobs_num: Option<usize>,
    token_ids_logprob: Option<Vec<i64>>,
    logprob_start_len: Option<i64>,
    return_text_in_logprobs: Option<bool>,
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
    /// (logprob, token id, token text) triples, SGLang's shape; the text only with
    /// `return_text_in_logprobs`.
    #[serde(skip_serializing_if = "Option::is_none")]
    output_token_logprobs: Option<Vec<Triple>>,
    /// Per position, the `top_logprobs_num` most likely tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    output_top_logprobs: Option<Vec<Vec<Triple>>>,
    /// Per position, the `token_ids_logprob` tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    output_token_ids_logprobs: Option<Vec<Vec<Triple>>>,
    /// Prompt tokens from `logprob_start_len` on: (logprob, id, text) with a `null` logprob for
    /// the first prompt token.
    #[serde(skip_serializing_if = "Option::is_none")]
    input_token_logprobs: Option<Vec<InputTriple>>,
    /// Per prompt position, the most likely tokens (`null` for the first prompt token).
    #[serde(skip_serializing_if = "Option::is_none")]
    input_top_logprobs: Option<Vec<Option<Vec<Triple>>>>,
    /// Per prompt position, the `token_ids_logprob` tokens.
    #[serde(skip_serializing_if = "Option::is_none")]
    input_token_ids_logprobs: Option<Vec<Option<Vec<Triple>>>>,
}

/// A `/generate` response or streamed chunk.
#[derive(Serialize, Debug)]
struct GenerateOwned {
    text: String,
    output_ids: Vec<u32>,
    meta_info: MetaInfo,
    /// The sequence's place in a batch or among `n` samples.
    #[serde(skip_serializing_if = "Option::is_none")]
    index: Option<usize>,
}

/// The request's prompts, and whether it was a batch (then the response is a list).
fn inputs_of(st: &Shared, b: &mut GenerateBody) -> Result<(Vec<Input>, bool), ApiError> {
    let vocab = st.engine.info().vocab_size;
    let ids = |list: &[i64]| -> Result<Input, ApiError> {
        if list.is_empty() {
            return Err(ApiError::bad("input_ids must not be empty").param("input_ids"));
        }
        Ok(Input::Tokens(params::token_ids(list, vocab)?))
    };
    let (inputs, batch) = match (b.text.take(), b.input_ids.take()) {
        (Some(TextInput::One(t)), None) => (vec![Input::Text(t)], false),
        (Some(TextInput::Batch(v)), None) => (v.into_iter().map(Input::Text).collect(), true),
        (None, Some(IdsInput::One(l))) => (vec![ids(&l)?], false),
        (None, Some(IdsInput::Batch(v))) => {
            (v.iter().map(|l| ids(l)).collect::<Result<_, _>>()?, true)
        }
        _ => {
            return Err(ApiError::bad(
                "exactly one of text and input_ids is required",
            ))
        }
    };
    if inputs.is_empty() {
        return Err(ApiError::bad("the batch is empty"));
    }
    Ok((inputs, batch))
}

/// The client ids of the sequences: `rid` for one, `rid_k` for the k-th of `n`, one per item of
/// a batch (SGLang's naming).
fn rids_of(
    rid: Option<RidInput>,
    prompts: usize,
    n: usize,
) -> Result<Vec<Option<String>>, ApiError> {
    let per_prompt: Vec<Option<String>> = match rid {
        None => vec![None; prompts],
        Some(RidInput::One(r)) if prompts == 1 => vec![Some(r)],
        Some(RidInput::Batch(v)) if v.len() == prompts => v.into_iter().map(Some).collect(),
        Some(_) => return Err(ApiError::bad("rid must have one id per prompt").param("rid")),
    };
    Ok(per_prompt
        .into_iter()
        .flat_map(|r| {
            (0..n).map(move |k| match (&r, n) {
                (Some(r), 1) => Some(r.clone()),
                (Some(r), _) => Some(format!("{r}_{k}")),
                (None, _) => None,
            })
        })
        .collect())
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
        output_top_logprobs: None,
        output_token_ids_logprobs: None,
        input_token_logprobs: None,
        input_top_logprobs: None,
        input_token_ids_logprobs: None,
    }
}

/// `POST /generate` (also `PUT`): one prompt or a batch, `n` samples each; a batch or `n > 1`
/// answers with a list (streamed chunks then carry `index`).
pub async fn generate(
    State(st): State<Shared>,
    Extension(caller): Extension<Caller>,
    JsonBody(mut b): JsonBody<GenerateBody>,
) -> Result<Response, ApiError> {
    params::reject_unknown(&b.unknown, "/generate")?;
    let (inputs, batch) = inputs_of(&st, &mut b)?;
    let sp = b.sampling_params.take().unwrap_or_default();
    params::reject_unknown(&sp.unknown, "/generate sampling_params")?;
    let grammar = sp.structured.spec()?;
    let sampling = st.defaults.apply(sp.into_openai_with_n());
    let n = sampling.n()?;
    params::check_sequences(inputs.len(), n)?;
    let rids = rids_of(b.rid.take(), inputs.len(), n)?;
    let want_lp = b.return_logprob.unwrap_or(false);
    let (top, asked) = alternatives_of(&st, &b, want_lp)?;
    let logprob_start = logprob_start_of(&b, want_lp)?;
    let params = Params::from_openai(
        &sampling,
        DefaultMax::Fixed(NATIVE_DEFAULT_MAX_TOKENS),
        want_lp,
    )?
    .with_alternatives(top, asked)
    .with_grammar(grammar)
    .with_logprob_start(logprob_start);
    let tenant = caller.tenant.clone();
    let ns = params::namespace(caller.tenant, b.cache_salt.take().or(b.extra_key.take()))?;
    let mut jobs = jobs::submit(&st.engine, &params, inputs, n, &ns).await?;
    let mut ids = Vec::with_capacity(jobs.len());
    for (job, rid) in jobs.iter_mut().zip(rids) {
        ids.push(
            rid.clone()
                .unwrap_or_else(|| format!("gen-{}", job.stream.id())),
        );
        if let Some(rid) = rid {
            job.rid = Some(st.rids.register(tenant.clone(), rid, job.stream.id())?);
        }
    }
    st.metrics.request_started();
    let list = batch || n > 1;
    let want_text = b.return_text_in_logprobs.unwrap_or(false);
    if b.stream.unwrap_or(false) {
        return Ok(stream(st, jobs, ids, list, want_lp, want_text));
    }
    let texts = want_text.then_some(&*st.engine);
    let mut outs = Vec::with_capacity(jobs.len());
    for f in jobs::complete_all(jobs).await? {
        st.metrics.observe(&f.completion);
        outs.push(whole(&f.completion, &ids[f.index], want_lp, texts));
    }
    jobs::one_or_list(outs, list)
}

/// `top_logprobs_num` and `token_ids_logprob`, which only mean something with
/// `return_logprob`: without it they have no effect, as in SGLang (whose clients send them
/// with `return_logprob: false`).
fn alternatives_of(
    st: &Shared,
    b: &GenerateBody,
    want_lp: bool,
) -> Result<(usize, Vec<u32>), ApiError> {
    if !want_lp {
        return Ok((0, Vec::new()));
    }
    let top = b.top_logprobs_num.unwrap_or(0);
    let asked = b.token_ids_logprob.as_deref().unwrap_or_default();
    if top > MAX_TOP_LOGPROBS {
        return Err(ApiError::bad(format!(
            "top_logprobs_num must be at most {MAX_TOP_LOGPROBS}"
        ))
        .param("top_logprobs_num"));
    }
    if asked.len() > MAX_LOGPROB_TOKEN_IDS {
        return Err(ApiError::bad(format!(
            "token_ids_logprob may name at most {MAX_LOGPROB_TOKEN_IDS} tokens"
        ))
        .param("token_ids_logprob"));
    }
    let ids = params::token_ids(asked, st.engine.info().vocab_size)
        .map_err(|e| e.param("token_ids_logprob"))?;
    Ok((top, ids))
}

/// SGLang's `logprob_start_len`: -1 (the default) scores no prompt token; from a position
/// on, the prompt is scored when `return_logprob` is set (without it, no effect, as in
/// SGLang).
fn logprob_start_of(b: &GenerateBody, want_lp: bool) -> Result<Option<usize>, ApiError> {
    match b.logprob_start_len {
        None | Some(-1) => Ok(None),
        Some(n) if n >= 0 && want_lp => Ok(Some(n as usize)),
        Some(n) if n >= 0 => Ok(None),
        Some(_) => Err(
            ApiError::bad("logprob_start_len must be -1 or a prompt position")
                .param("logprob_start_len"),
        ),
    }
}

/// A finished sequence's response.
/// Writes each logprob triple's token text (SGLang's `return_text_in_logprobs`).
fn fill_texts(m: &mut MetaInfo, engine: &Engine) {
    let text = |id: u32| Some(logprobs::token_text(engine, id));
    let lists = m
        .output_top_logprobs
        .iter_mut()
        .chain(m.output_token_ids_logprobs.iter_mut())
        .flatten()
        .chain(
            m.input_top_logprobs
                .iter_mut()
                .chain(m.input_token_ids_logprobs.iter_mut())
                .flatten()
                .flatten(),
        );
    for t in m
        .output_token_logprobs
        .iter_mut()
        .flatten()
        .chain(lists.flatten())
    {
        t.2 = text(t.1);
    }
    for t in m.input_token_logprobs.iter_mut().flatten() {
        t.2 = text(t.1);
    }
}

fn whole(c: &Completion, rid: &str, want_lp: bool, texts: Option<&Engine>) -> GenerateOwned {
    let mut m = meta(
        rid,
        c.usage.prompt_tokens,
        c.usage.completion_tokens,
        Some(c),
    );
    if want_lp {
        m.output_token_logprobs = Some(
            c.logprobs
                .iter()
                .zip(&c.token_ids)
                .map(|(&lp, &id)| (lp, id, None))
                .collect(),
        );
        let (top, asked) = logprobs::native_alternatives(&c.alternatives);
        let any = |v: &[Vec<Triple>]| v.iter().any(|p| !p.is_empty());
        m.output_top_logprobs = any(&top).then_some(top);
        m.output_token_ids_logprobs = any(&asked).then_some(asked);
        if !c.input_logprobs.is_empty() {
            let input = logprobs::native_input(&c.input_logprobs);
            let any = |v: &[Option<Vec<Triple>>]| v.iter().flatten().any(|p| !p.is_empty());
            m.input_top_logprobs = any(&input.top).then_some(input.top);
            m.input_token_ids_logprobs = any(&input.asked).then_some(input.asked);
            m.input_token_logprobs = Some(input.tokens);
        }
        if let Some(engine) = texts {
            fill_texts(&mut m, engine);
        }
    }
    GenerateOwned {
        text: c.text.clone(),
        output_ids: c.token_ids.clone(),
        meta_info: m,
        index: None,
    }
}

/// A streamed `/generate` response: each chunk carries the sequence's text so far (SGLang's
/// cumulative shape), and `index` when the request has several sequences; the last chunk of a
/// sequence carries its `output_token_logprobs` when asked.
fn stream(
    st: Shared,
    jobs: Vec<jobs::Job>,
    ids: Vec<String>,
    list: bool,
    want_lp: bool,
    want_text: bool,
) -> Response {
    let keep_alive = st.limits.sse_keep_alive;
    let prompt_tokens: Vec<usize> = jobs.iter().map(|j| j.stream.prompt_tokens()).collect();
    let mut sofar: Vec<(String, Vec<u32>)> = vec![(String::new(), Vec::new()); jobs.len()];
    let events = jobs::merged_events(jobs).map(move |(index, _, ev)| {
        let rid = &ids[index];
        let out = match &ev {
            // Not asked for here.
            StreamEvent::Progress(_) => return sse::Item::Data(Vec::new(), (0, 0, 0)),
            StreamEvent::Delta(d) => {
                let (text, out_ids) = &mut sofar[index];
                text.push_str(&d.text);
                out_ids.extend(&d.token_ids);
                GenerateOwned {
                    text: text.clone(),
                    output_ids: out_ids.clone(),
                    meta_info: meta(rid, prompt_tokens[index], out_ids.len(), None),
                    index: list.then_some(index),
                }
            }
            StreamEvent::Done(c) => {
                st.metrics.observe(c);
                GenerateOwned {
                    index: list.then_some(index),
                    ..whole(c, rid, want_lp, want_text.then_some(&*st.engine))
                }
            }
            StreamEvent::Failed(e) => return sse::Item::Fail(ApiError::from(e.clone())),
        };
        sse::Item::Data(
            serde_json::to_string(&out).ok().into_iter().collect(),
            (0, 0, 0),
        )
    });
    sse::response(Vec::new(), events, |_| None, keep_alive)
}

/// `/abort_request` request.
#[derive(Deserialize)]
pub struct AbortBody {
    rid: Option<String>,
    abort_all: Option<bool>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Serialize)]
struct AbortOut {
    /// How many requests were asked to stop.
    aborted: usize,
}

/// `POST /abort_request`: aborts the caller's request with client id `rid` (its stream ends
/// with `finish_reason` abort); `abort_all` aborts every request and needs the admin key when
/// keys are configured. An unknown or finished `rid` aborts nothing (200, `aborted: 0`).
pub async fn abort_request(
    State(st): State<Shared>,
    headers: axum::http::HeaderMap,
    Extension(caller): Extension<Caller>,
    JsonBody(b): JsonBody<AbortBody>,
) -> Result<Response, ApiError> {
    params::reject_unknown(&b.unknown, "/abort_request")?;
    let aborted = match (b.rid, b.abort_all.unwrap_or(false)) {
        (None, true) => {
            st.keys.check(&headers, super::auth::Scope::Admin)?;
            let n = st.engine.in_flight();
            st.engine.abort_all("aborted by /abort_request");
            n
        }
        (Some(rid), false) => match st.rids.find(caller.tenant, &rid) {
            Some(id) => {
                st.engine.abort(id);
                1
            }
            None => 0,
        },
        _ => return Err(ApiError::bad("give either rid or abort_all: true")),
    };
    Ok(axum::Json(AbortOut { aborted }).into_response())
}
