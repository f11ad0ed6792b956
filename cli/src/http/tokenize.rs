//! `/tokenize` and `/detokenize` (also under `/v1/`), in SGLang's shapes and vLLM's.

use super::error::ApiError;
use super::layers::JsonBody;
use super::openai::{chat_messages, check_model};
use super::openai_types::RequestMessage;
use super::params::{self, Unknown};
use super::Shared;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use engine::Input;
use serde::{Deserialize, Serialize};

/// A prompt to tokenize: one text or several.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum TokenizePrompt {
    One(String),
    Many(Vec<String>),
}

/// `/tokenize` request: SGLang's (`prompt`, one or several), vLLM's chat form (`messages`), or
/// llama.cpp's (`content`, `add_special`).
#[derive(Deserialize)]
pub struct TokenizeRequest {
    model: Option<String>,
    #[serde(alias = "content")]
    prompt: Option<TokenizePrompt>,
    messages: Option<Vec<RequestMessage>>,
    #[serde(alias = "add_special")]
    add_special_tokens: Option<bool>,
    add_generation_prompt: Option<bool>,
    continue_final_message: Option<bool>,
    return_token_strs: Option<bool>,
    #[serde(flatten)]
    unknown: Unknown,
}

/// One value or one per prompt, following the request's shape.
#[derive(Serialize)]
#[serde(untagged)]
enum OneOrMany<T> {
    One(T),
    Many(Vec<T>),
}

#[derive(Serialize)]
struct TokenizeResponse {
    tokens: OneOrMany<Vec<u32>>,
    count: OneOrMany<usize>,
    max_model_len: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    token_strs: Option<Vec<String>>,
}

/// `POST /tokenize`.
pub async fn tokenize(
    State(st): State<Shared>,
    JsonBody(b): JsonBody<TokenizeRequest>,
) -> Result<Response, ApiError> {
    params::reject_unknown(&b.unknown, "/tokenize")?;
    check_model(&st, b.model.as_deref())?;
    let special = b.add_special_tokens.unwrap_or(true);
    let tokenizer = st.engine.tokenizer();
    let bad = |e: engine::ExecutorError| ApiError::bad(e.to_string());
    let (tokens, count, first) =
        match (b.prompt, b.messages) {
            (Some(TokenizePrompt::One(text)), None) => {
                let ids = tokenizer.encode(&text, special).map_err(bad)?;
                let n = ids.len();
                (OneOrMany::One(ids.clone()), OneOrMany::One(n), ids)
            }
            (Some(TokenizePrompt::Many(_)), None) if b.return_token_strs == Some(true) => {
                return Err(ApiError::bad("return_token_strs takes a single prompt")
                    .param("return_token_strs"))
            }
            (Some(TokenizePrompt::Many(texts)), None) => {
                let lists = texts
                    .iter()
                    .map(|t| tokenizer.encode(t, special))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(bad)?;
                let counts = lists.iter().map(Vec::len).collect();
                (OneOrMany::Many(lists), OneOrMany::Many(counts), Vec::new())
            }
            (None, Some(messages)) => {
                if b.add_special_tokens.is_some() {
                    return Err(ApiError::bad(
                    "add_special_tokens applies to prompt; a chat is tokenized as its template \
                     writes it",
                )
                .param("add_special_tokens"));
                }
                let messages = chat_messages(messages)?;
                // vLLM: continuing the final message leaves out the generation prompt.
                let input =
                    match (b.continue_final_message, b.add_generation_prompt) {
                        (Some(true), Some(true)) => return Err(ApiError::bad(
                            "continue_final_message and add_generation_prompt exclude each other",
                        )
                        .param("continue_final_message")),
                        (Some(true), _) => Input::ChatContinued(messages),
                        (_, Some(false)) => {
                            return Err(ApiError::bad(
                                "add_generation_prompt: false is only supported with \
                         continue_final_message: true",
                            )
                            .param("add_generation_prompt"))
                        }
                        _ => Input::Chat(messages),
                    };
                let ids = st.engine.tokenize(&input)?;
                let n = ids.len();
                (OneOrMany::One(ids.clone()), OneOrMany::One(n), ids)
            }
            _ => {
                return Err(ApiError::bad(
                    "exactly one of prompt and messages is required",
                ))
            }
        };
    let token_strs = b.return_token_strs.unwrap_or(false).then(|| {
        first
            .iter()
            .map(|&t| tokenizer.decode(&[t], false).unwrap_or_default())
            .collect()
    });
    Ok(axum::Json(TokenizeResponse {
        tokens,
        count,
        max_model_len: st.engine.info().context_length,
        token_strs,
    })
    .into_response())
}

/// Token ids to decode: one list or several.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum DetokenizeTokens {
    One(Vec<i64>),
    Many(Vec<Vec<i64>>),
}

/// `/detokenize` request (SGLang's and vLLM's share it).
#[derive(Deserialize)]
pub struct DetokenizeRequest {
    model: Option<String>,
    tokens: DetokenizeTokens,
    skip_special_tokens: Option<bool>,
    #[serde(flatten)]
    unknown: Unknown,
}

#[derive(Serialize)]
struct DetokenizeResponse {
    /// SGLang's field.
    text: OneOrMany<String>,
    /// vLLM's field (single lists only).
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt: Option<String>,
}

/// `POST /detokenize`.
pub async fn detokenize(
    State(st): State<Shared>,
    JsonBody(b): JsonBody<DetokenizeRequest>,
) -> Result<Response, ApiError> {
    params::reject_unknown(&b.unknown, "/detokenize")?;
    check_model(&st, b.model.as_deref())?;
    let skip = b.skip_special_tokens.unwrap_or(true);
    let vocab = st.engine.info().vocab_size;
    let decode = |ids: &[i64]| -> Result<String, ApiError> {
        let ids = params::token_ids(ids, vocab)?;
        st.engine
            .tokenizer()
            .decode(&ids, skip)
            .map_err(|e| ApiError::bad(e.to_string()))
    };
    let response = match b.tokens {
        DetokenizeTokens::One(ids) => {
            let text = decode(&ids)?;
            DetokenizeResponse {
                prompt: Some(text.clone()),
                text: OneOrMany::One(text),
            }
        }
        DetokenizeTokens::Many(lists) => DetokenizeResponse {
            text: OneOrMany::Many(
                lists
                    .iter()
                    .map(|ids| decode(ids))
                    .collect::<Result<_, _>>()?,
            ),
            prompt: None,
        },
    };
    Ok(axum::Json(response).into_response())
}
