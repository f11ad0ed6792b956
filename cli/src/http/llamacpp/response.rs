//! `/completion`'s answers in llama-server's shapes (the caller adds each one's `index`): the whole response, the streamed chunks,
//! `timings`, `completion_probabilities` and the `response_fields` filter.

use super::super::error::ApiError;
use super::super::logprobs;
use super::super::Shared;
use engine::{Completion, Delta, FinishReason, TokenAlternatives};
use serde::Serialize;
use serde_json::{json, Value};

/// `generation_settings`: the request's sampling settings as they were applied.
#[derive(Serialize)]
pub struct Settings {
    pub n_predict: i64,
    pub seed: i64,
    pub temperature: f32,
    pub top_k: i64,
    pub top_p: f32,
    pub min_p: f32,
    pub n_probs: usize,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
    pub stream: bool,
    pub repeat_penalty: f32,
    pub presence_penalty: f32,
    pub frequency_penalty: f32,
    #[serde(skip)]
    pub return_tokens: bool,
}

/// A finished sequence, ready to be written in llama-server's shape.
pub struct Outcome<'a> {
    c: &'a Completion,
    settings: &'a Settings,
    prompt: &'a str,
    stop_type: &'static str,
    stopping_word: String,
}

impl<'a> Outcome<'a> {
    /// An aborted sequence (the server shut down, or the request could not be served) is an
    /// error, as llama-server answers a cancelled task.
    pub fn of(
        c: &'a Completion,
        settings: &'a Settings,
        prompt: &'a str,
    ) -> Result<Self, ApiError> {
        let (stop_type, stopping_word) = match &c.finish_reason {
            FinishReason::Stop { text: Some(w), .. } => ("word", w.clone()),
            FinishReason::Stop { .. } => ("eos", String::new()),
            FinishReason::Length { .. } => ("limit", String::new()),
            FinishReason::Abort { message } => {
                return Err(ApiError::unavailable(format!(
                    "the request was aborted: {message}"
                )))
            }
        };
        Ok(Outcome {
            c,
            settings,
            prompt,
            stop_type,
            stopping_word,
        })
    }

    /// `timings`, from the request's own clock: the prompt phase is submission to the first
    /// token (queueing included), the rest is generation.
    fn timings(&self) -> Value {
        let c = self.c;
        let cached = c.usage.cached_tokens;
        let prompt_n = c.usage.prompt_tokens.saturating_sub(cached);
        let predicted_n = c.usage.completion_tokens;
        let ttft = c.time_to_first_token.unwrap_or(c.e2e_latency);
        let prompt_ms = ttft * 1e3;
        let predicted_ms = (c.e2e_latency - ttft).max(0.0) * 1e3;
        let per = |ms: f64, n: usize| if n > 0 { ms / n as f64 } else { 0.0 };
        let rate = |ms: f64, n: usize| if ms > 0.0 { n as f64 * 1e3 / ms } else { 0.0 };
        json!({
            "cache_n": cached,
            "prompt_n": prompt_n,
            "prompt_ms": prompt_ms,
            "prompt_per_token_ms": per(prompt_ms, prompt_n),
            "prompt_per_second": rate(prompt_ms, prompt_n),
            "predicted_n": predicted_n,
            "predicted_ms": predicted_ms,
            "predicted_per_token_ms": per(predicted_ms, predicted_n),
            "predicted_per_second": rate(predicted_ms, predicted_n),
        })
    }

    /// The whole non-streamed response.
    pub fn to_json(&self, st: &Shared) -> Value {
        let c = self.c;
        let mut out = json!({
            "content": c.text,
            "tokens": if self.settings.return_tokens { c.token_ids.clone() } else { Vec::new() },
            "stop": true,
            "model": st.engine.info().model_name,
            "tokens_predicted": c.usage.completion_tokens,
            "tokens_evaluated": c.usage.prompt_tokens,
            "generation_settings": self.settings,
            "prompt": self.prompt,
            "has_new_line": c.text.contains('\n'),
            "truncated": false,
            "stop_type": self.stop_type,
            "stopping_word": self.stopping_word,
            "tokens_cached": c.usage.cached_tokens,
            "timings": self.timings(),
        });
        if self.settings.n_probs > 0 {
            out["completion_probabilities"] =
                probabilities(st, &c.token_ids, &c.logprobs, &c.alternatives);
        }
        out
    }

    /// The last streamed chunk: the whole response's fields, with the text and tokens already
    /// streamed left out.
    pub fn final_chunk(&self, st: &Shared) -> Value {
        let mut out = self.to_json(st);
        out["content"] = "".into();
        out["tokens"] = json!([]);
        if let Some(o) = out.as_object_mut() {
            o.remove("completion_probabilities");
        }
        out
    }
}

/// A streamed chunk for one delta.
pub fn delta_chunk(
    st: &Shared,
    d: &Delta,
    settings: &Settings,
    prompt_tokens: usize,
    predicted: usize,
) -> Value {
    let mut out = json!({
        "content": d.text,
        "tokens": d.token_ids,
        "stop": false,
        "tokens_predicted": predicted,
        "tokens_evaluated": prompt_tokens,
    });
    if settings.n_probs > 0 {
        out["completion_probabilities"] =
            probabilities(st, &d.token_ids, &d.logprobs, &d.alternatives);
    }
    out
}

/// One token as llama-server names it: id, text, bytes and log-probability.
fn entry(st: &Shared, id: u32, logprob: f32) -> Value {
    let token = logprobs::token_text(&st.engine, id);
    let logprob = if logprob.is_finite() {
        logprob
    } else {
        -9999.0
    };
    json!({"id": id, "token": token, "bytes": token.as_bytes(), "logprob": logprob})
}

/// `completion_probabilities`: per generated token, its log-probability and the `n_probs` most
/// likely tokens at its position.
fn probabilities(
    st: &Shared,
    ids: &[u32],
    lps: &[f32],
    alternatives: &[TokenAlternatives],
) -> Value {
    let items: Vec<Value> = ids
        .iter()
        .zip(lps)
        .enumerate()
        .map(|(i, (&id, &lp))| {
            let top: Vec<Value> = alternatives
                .get(i)
                .map(|a| a.top.iter().map(|&(t, l)| entry(st, t, l)).collect())
                .unwrap_or_default();
            let mut e = entry(st, id, lp);
            e["top_logprobs"] = top.into();
            e
        })
        .collect();
    items.into()
}

/// llama-server's `response_fields`: only the named fields, each under its path (`a/b` for a
/// nested one); fields that do not exist are left out. No fields: the whole response.
pub fn filter(full: Value, fields: &[String]) -> Value {
    if fields.is_empty() {
        return full;
    }
    let mut out = serde_json::Map::new();
    for f in fields {
        let found = f.split('/').try_fold(&full, |v, key| v.get(key));
        if let Some(v) = found {
            out.insert(f.clone(), v.clone());
        }
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_fields_keep_named_paths_only() {
        let full = json!({"content": "x", "prompt": "p", "generation_settings": {"n_predict": 8}});
        let picked = filter(
            full.clone(),
            &[
                "content".into(),
                "generation_settings/n_predict".into(),
                "missing".into(),
            ],
        );
        assert_eq!(
            picked,
            json!({"content": "x", "generation_settings/n_predict": 8})
        );
        assert_eq!(filter(full.clone(), &[]), full);
    }
}
