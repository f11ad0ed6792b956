//! `POST /v1/score` (SGLang's scoring API): for each item, the probabilities of the label
//! tokens as the next token after `query + item` (or `item + query`).
//!
//! Each item runs as a one-token generation that reports the logprobs of the label tokens at
//! its first output position, so items share the query's prefix through the cache.

use super::auth::Caller;
use super::error::ApiError;
use super::jobs;
use super::layers::JsonBody;
use super::openai::check_model;
use super::params::{self, DefaultMax, OpenAiSampling, Params, Unknown};
use super::Shared;
use axum::extract::{Extension, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use engine::{Input, MAX_LOGPROB_TOKEN_IDS};
use serde::{Deserialize, Serialize};

/// Text, or token ids.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum ScoreText {
    Text(String),
    Ids(Vec<i64>),
}

/// The items: one text, several texts, or several id lists.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum ScoreItems {
    One(String),
    Texts(Vec<String>),
    Ids(Vec<Vec<i64>>),
}

/// `/v1/score` request.
#[derive(Deserialize)]
pub struct ScoreRequest {
    model: Option<String>,
    query: ScoreText,
    items: ScoreItems,
    label_token_ids: Vec<i64>,
    apply_softmax: Option<bool>,
    item_first: Option<bool>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Serialize)]
struct ScoreUsage {
    prompt_tokens: usize,
    completion_tokens: usize,
    total_tokens: usize,
}

#[derive(Serialize)]
struct ScoreResponse {
    object: &'static str,
    model: String,
    scores: Vec<Vec<f64>>,
    usage: ScoreUsage,
}

/// SGLang's error body for this route: the fields at the top level (its clients read
/// `type` and `message` there), with OpenAI's `error` object beside them.
fn flat_error(e: ApiError) -> Response {
    let status = e.status();
    let kind = if status == StatusCode::BAD_REQUEST {
        "BadRequestError"
    } else {
        "InternalServerError"
    };
    let body = serde_json::json!({
        "object": "error",
        "type": kind,
        "message": e.message(),
        "code": status.as_u16(),
        "error": e.detail(),
    });
    (status, axum::Json(body)).into_response()
}

/// The prompts to score, one per item.
fn prompts(b: &ScoreRequest, vocab: usize) -> Result<Vec<Input>, ApiError> {
    let item_first = b.item_first.unwrap_or(false);
    let join = |a: String, c: String| if item_first { c + &a } else { a + &c };
    let out = match (&b.query, &b.items) {
        (ScoreText::Text(q), ScoreItems::One(item)) => {
            vec![Input::Text(join(q.clone(), item.clone()))]
        }
        (ScoreText::Text(q), ScoreItems::Texts(items)) => items
            .iter()
            .map(|i| Input::Text(join(q.clone(), i.clone())))
            .collect(),
        (ScoreText::Ids(q), ScoreItems::Ids(items)) => {
            let q = params::token_ids(q, vocab).map_err(|e| e.param("query"))?;
            items
                .iter()
                .map(|i| {
                    let i = params::token_ids(i, vocab).map_err(|e| e.param("items"))?;
                    let (a, c) = if item_first { (&i, &q) } else { (&q, &i) };
                    Ok(Input::Tokens(a.iter().chain(c).copied().collect()))
                })
                .collect::<Result<_, ApiError>>()?
        }
        _ => {
            return Err(
                ApiError::bad("query and items must both be text or both be token ids")
                    .param("items"),
            )
        }
    };
    if out.is_empty() {
        return Err(ApiError::bad("items is empty").param("items"));
    }
    Ok(out)
}

/// The label tokens, checked against the vocabulary (SGLang's message).
fn labels(ids: &[i64], vocab: usize) -> Result<Vec<u32>, ApiError> {
    if ids.is_empty() || ids.len() > MAX_LOGPROB_TOKEN_IDS {
        return Err(ApiError::bad(format!(
            "label_token_ids must name 1 to {MAX_LOGPROB_TOKEN_IDS} tokens"
        ))
        .param("label_token_ids"));
    }
    ids.iter()
        .map(|&t| {
            u32::try_from(t)
                .ok()
                .filter(|&t| (t as usize) < vocab)
                .ok_or_else(|| {
                    ApiError::bad(format!(
                        "Token ID {t} is out of vocabulary (vocab size: {vocab})"
                    ))
                    .param("label_token_ids")
                })
        })
        .collect()
}

/// A row of scores from the label tokens' logprobs: probabilities, or with `softmax` a
/// distribution over the labels alone (a softmax of logprobs equals one of the logits).
fn row(logprobs: &[f32], softmax: bool) -> Vec<f64> {
    let lp: Vec<f64> = logprobs.iter().map(|&l| f64::from(l)).collect();
    if !softmax {
        return lp.iter().map(|l| l.exp()).collect();
    }
    let max = lp.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let exps: Vec<f64> = lp.iter().map(|l| (l - max).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}

/// `POST /v1/score`.
pub async fn score(
    State(st): State<Shared>,
    Extension(caller): Extension<Caller>,
    JsonBody(b): JsonBody<ScoreRequest>,
) -> Response {
    match run(st, caller, b).await {
        Ok(r) => r,
        Err(e) => flat_error(e),
    }
}

async fn run(st: Shared, caller: Caller, b: ScoreRequest) -> Result<Response, ApiError> {
    params::reject_unknown(&b.unknown, "/v1/score")?;
    check_model(&st, b.model.as_deref())?;
    let vocab = st.engine.info().vocab_size;
    let labels = labels(&b.label_token_ids, vocab)?;
    let inputs = prompts(&b, vocab)?;
    params::check_sequences(inputs.len(), 1)?;
    let sampling = OpenAiSampling {
        temperature: Some(0.0),
        ..OpenAiSampling::default()
    };
    let params = Params::from_openai(&sampling, DefaultMax::Fixed(1), true)?
        .with_alternatives(0, labels.clone());
    let ns = params::namespace(caller.tenant, None)?;
    let jobs = jobs::submit(&st.engine, &params, inputs, 1, &ns).await?;
    st.metrics.request_started();
    let softmax = b.apply_softmax.unwrap_or(false);
    let mut scores = Vec::with_capacity(jobs.len());
    let mut prompt_tokens = 0;
    for f in jobs::complete_all(jobs).await? {
        st.metrics.observe(&f.completion);
        prompt_tokens += f.completion.usage.prompt_tokens;
        let asked = f
            .completion
            .alternatives
            .first()
            .map(|a| a.requested.as_slice())
            .unwrap_or_default();
        let lps: Vec<f32> = labels
            .iter()
            .map(|id| {
                asked
                    .iter()
                    .find(|(t, _)| t == id)
                    .map_or(f32::NEG_INFINITY, |&(_, lp)| lp)
            })
            .collect();
        scores.push(row(&lps, softmax));
    }
    Ok(axum::Json(ScoreResponse {
        object: "scoring",
        model: st.engine.info().model_name.clone(),
        scores,
        usage: ScoreUsage {
            prompt_tokens,
            completion_tokens: 0,
            total_tokens: prompt_tokens,
        },
    })
    .into_response())
}
