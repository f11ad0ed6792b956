//! `/completion`'s prompts and `logit_bias`, in llama.cpp's shapes.

use super::super::error::ApiError;
use super::super::params;
use super::super::Shared;
use engine::Input;
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Most entries of `logit_bias`, as the OpenAI routes allow.
const MAX_BIASED: usize = 300;

/// One prompt: text, token ids, or text and ids mixed in one sequence.
pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
    /// Pieces concatenated; a text piece is tokenized alone (with the model's BOS only when it
    /// comes first, as llama.cpp does).
    Mixed(Vec<Piece>),
}

/// A piece of a mixed prompt.
pub enum Piece {
    Text(String),
    Token(u32),
}

fn bad(message: impl Into<String>) -> ApiError {
    ApiError::bad(message).param("prompt")
}

/// One prompt from a string, a list of ids (maybe mixed with strings) or llama.cpp's JSON
/// prompt object (`prompt_string`; `multimodal_data` is refused: no multimodal input).
fn one(st: &Shared, v: Value) -> Result<Prompt, ApiError> {
    let vocab = st.engine.info().vocab_size;
    match v {
        Value::String(s) => Ok(Prompt::Text(s)),
        Value::Object(mut o) => {
            if o.contains_key("multimodal_data") {
                return Err(bad(
                    "multimodal_data is not supported: radixserve serves text models",
                ));
            }
            match o.remove("prompt_string") {
                Some(Value::String(s)) if o.is_empty() => Ok(Prompt::Text(s)),
                _ => Err(bad("a prompt object takes one string field, prompt_string")),
            }
        }
        Value::Array(items) if items.is_empty() => Err(bad("a prompt must not be empty")),
        Value::Array(items) => {
            let mut pieces = Vec::with_capacity(items.len());
            for item in items {
                pieces.push(match item {
                    Value::String(s) => Piece::Text(s),
                    Value::Number(n) => {
                        let id = n
                            .as_i64()
                            .ok_or_else(|| bad(format!("invalid token id {n}")))?;
                        Piece::Token(params::token_ids(&[id], vocab)?[0])
                    }
                    other => return Err(bad(format!("a prompt may not contain {other}"))),
                });
            }
            if pieces.iter().all(|p| matches!(p, Piece::Token(_))) {
                let ids = pieces
                    .into_iter()
                    .filter_map(|p| match p {
                        Piece::Token(t) => Some(t),
                        Piece::Text(_) => None,
                    })
                    .collect();
                return Ok(Prompt::Tokens(ids));
            }
            Ok(Prompt::Mixed(pieces))
        }
        other => Err(bad(format!("a prompt cannot be {other}"))),
    }
}

/// The request's prompts, and whether it gave several (the answer is then a list): a list
/// holding only token ids, or ids mixed with strings, is one prompt; any other list (of
/// strings, id lists, prompt objects) is one prompt per item.
pub fn inputs(st: &Shared, v: Value) -> Result<(Vec<Prompt>, bool), ApiError> {
    let Value::Array(items) = v else {
        return Ok((vec![one(st, v)?], false));
    };
    let ids = items.iter().filter(|i| i.is_number()).count();
    let texts = items.iter().filter(|i| i.is_string()).count();
    if ids > 0 && ids + texts == items.len() {
        return Ok((vec![one(st, Value::Array(items))?], false));
    }
    if items.is_empty() {
        return Err(bad("the prompt list is empty"));
    }
    let prompts = items
        .into_iter()
        .map(|i| one(st, i))
        .collect::<Result<Vec<_>, _>>()?;
    Ok((prompts, true))
}

/// Tokenizes the prompts on the runtime's blocking pool.
pub async fn tokenize(st: &Shared, prompts: Vec<Prompt>) -> Result<Vec<Vec<u32>>, ApiError> {
    let engine = Arc::clone(&st.engine);
    tokio::task::spawn_blocking(move || {
        prompts
            .into_iter()
            .map(|p| match p {
                Prompt::Text(t) => engine.tokenize(&Input::Text(t)),
                Prompt::Tokens(ids) => Ok(ids),
                Prompt::Mixed(pieces) => {
                    let mut ids = Vec::new();
                    for (i, piece) in pieces.into_iter().enumerate() {
                        match piece {
                            Piece::Token(t) => ids.push(t),
                            Piece::Text(s) if i == 0 => {
                                ids.extend(engine.tokenize(&Input::Text(s))?)
                            }
                            Piece::Text(s) => {
                                ids.extend(engine.tokenizer().encode(&s, false).map_err(|e| {
                                    engine::EngineError::InvalidRequest(e.to_string())
                                })?)
                            }
                        }
                    }
                    Ok(ids)
                }
            })
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| ApiError::internal(format!("the tokenizer task failed: {e}")))?
    .map_err(ApiError::from)
}

/// llama.cpp's `logit_bias`: a list of `[token, bias]` pairs or an object of them, where a
/// token is an id or a text (every token of the text gets the bias) and a bias of `false` bans
/// the token. As the OpenAI map of token id strings.
pub fn logit_bias(st: &Shared, v: Option<Value>) -> Result<BTreeMap<String, f32>, ApiError> {
    let err = |m: String| ApiError::bad(m).param("logit_bias");
    let pairs: Vec<(Value, Value)> = match v {
        None | Some(Value::Null) => return Ok(BTreeMap::new()),
        Some(Value::Array(items)) => items
            .into_iter()
            .map(|p| match p {
                Value::Array(mut kv) if kv.len() == 2 => {
                    let b = kv.pop().unwrap_or(Value::Null);
                    let k = kv.pop().unwrap_or(Value::Null);
                    Ok((k, b))
                }
                other => Err(err(format!(
                    "a logit_bias entry must be [token, bias], not {other}"
                ))),
            })
            .collect::<Result<_, _>>()?,
        Some(Value::Object(o)) => o.into_iter().map(|(k, b)| (Value::String(k), b)).collect(),
        Some(other) => return Err(err(format!("logit_bias cannot be {other}"))),
    };
    let vocab = st.engine.info().vocab_size;
    let mut out = BTreeMap::new();
    for (token, bias) in pairs {
        let bias = match bias {
            Value::Bool(false) => -100.0,
            Value::Number(n) => n.as_f64().unwrap_or(0.0) as f32,
            other => {
                return Err(err(format!(
                    "a bias must be a number or false, not {other}"
                )))
            }
        };
        let ids = match token {
            Value::Number(n) => params::token_ids(&[n.as_i64().unwrap_or(-1)], vocab)?,
            Value::String(s) => match s.parse::<i64>() {
                Ok(id) => params::token_ids(&[id], vocab)?,
                Err(_) => st
                    .engine
                    .tokenizer()
                    .encode(&s, false)
                    .map_err(|e| err(e.to_string()))?,
            },
            other => {
                return Err(err(format!(
                    "a biased token must be an id or a text, not {other}"
                )))
            }
        };
        for id in ids {
            out.insert(id.to_string(), bias);
        }
        if out.len() > MAX_BIASED {
            return Err(err(format!(
                "logit_bias may name at most {MAX_BIASED} tokens"
            )));
        }
    }
    Ok(out)
}
