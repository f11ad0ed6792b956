//! llama-server's extensions, served on its own `/completion` and on the OpenAI routes, as
//! llama.cpp's clients use them there:
//! - `timings_per_token`: llama-server's `timings` object on every streamed chunk (and on the
//!   usage chunk, or the whole response when not streamed);
//! - `return_progress`: while the prompt is computed, one chunk per computed prompt chunk with
//!   `prompt_progress` (`total`, `cache`, `processed`, `time_ms`);
//! - `--verbose-responses` (llama-server's `--verbose`): a `__verbose` object on non-streamed
//!   OpenAI responses with the prompt as the model saw it (special tokens written out) and the
//!   first choice in llama-server's native shape.

use super::super::error::ApiError;
use super::super::sse;
use axum::response::{IntoResponse, Response};
use engine::{Completion, FinishReason, PromptProgress, StreamEvent};
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Instant;

/// The request fields.
#[derive(Deserialize, Default, Clone)]
pub struct ExtraFields {
    /// Timings on every chunk.
    pub timings_per_token: Option<bool>,
    /// Prompt progress chunks (streaming only).
    pub return_progress: Option<bool>,
}

/// What a request asked for, checked.
#[derive(Clone, Copy, Default, Debug)]
pub struct Extras {
    /// Add `timings`.
    pub timings: bool,
    /// Send `prompt_progress` chunks.
    pub progress: bool,
}

impl ExtraFields {
    /// The extensions asked for; progress without streaming (nothing to send it in) is refused.
    pub fn check(&self, stream: bool) -> Result<Extras, ApiError> {
        let progress = self.return_progress.unwrap_or(false);
        if progress && !stream {
            return Err(
                ApiError::bad("return_progress is only allowed with stream: true")
                    .param("return_progress"),
            );
        }
        Ok(Extras {
            timings: self.timings_per_token.unwrap_or(false),
            progress,
        })
    }
}

impl Extras {
    /// Whether the engine must report prompt progress: for the progress chunks, and for the
    /// cached count that mid-stream timings show.
    pub fn engine_progress(&self) -> bool {
        self.timings || self.progress
    }
}

/// A request's clock while it streams: what llama-server's `timings` report so far. The prompt
/// phase runs from submission to the first token (queueing included); choices of one request
/// are counted together.
#[derive(Debug)]
pub struct Clock {
    started: Instant,
    first_token: Option<Instant>,
    prompt: usize,
    cached: usize,
    predicted: usize,
}

impl Clock {
    /// A clock started now, at submission.
    pub fn new() -> Self {
        Clock {
            started: Instant::now(),
            first_token: None,
            prompt: 0,
            cached: 0,
            predicted: 0,
        }
    }

    /// Takes what an event tells about the request's progress.
    pub fn observe(&mut self, ev: &StreamEvent) {
        match ev {
            StreamEvent::Progress(p) => {
                self.prompt = p.total;
                self.cached = p.cached;
            }
            StreamEvent::Delta(d) if !d.token_ids.is_empty() => {
                self.first_token.get_or_insert_with(Instant::now);
                self.predicted += d.token_ids.len();
            }
            StreamEvent::Done(c) => {
                self.prompt = c.usage.prompt_tokens;
                self.cached = c.usage.cached_tokens;
            }
            StreamEvent::Delta(_) | StreamEvent::Failed(_) => {}
        }
    }

    /// `timings` as of now.
    pub fn timings(&self) -> Value {
        let now = Instant::now();
        let first = self.first_token.unwrap_or(now);
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        timings(
            self.cached,
            self.prompt.saturating_sub(self.cached),
            ms(first.duration_since(self.started)),
            self.predicted,
            ms(now.duration_since(first)),
        )
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// A [`Clock`] shared by a stream's chunks and its usage chunk.
#[derive(Clone, Default)]
pub struct SharedClock(std::sync::Arc<std::sync::Mutex<Clock>>);

impl SharedClock {
    /// When `want` (the request asked for timings; nothing is locked otherwise): observes
    /// `ev` and gives the timings as of now.
    pub fn observe(&self, ev: &StreamEvent, want: bool) -> Option<Value> {
        if !want {
            return None;
        }
        let mut clock = self.0.lock().unwrap_or_else(|e| e.into_inner());
        clock.observe(ev);
        Some(clock.timings())
    }

    /// The timings as of now, when `want`.
    pub fn now(&self, want: bool) -> Option<Value> {
        want.then(|| self.0.lock().unwrap_or_else(|e| e.into_inner()).timings())
    }
}

/// A stream item with `timings` on each of its chunks, when there are timings.
pub fn with_timings(item: sse::Item, timings: Option<Value>) -> sse::Item {
    match (item, timings) {
        (sse::Item::Data(chunks, totals), Some(t)) => {
            sse::Item::Data(with_field(chunks, "timings", &t), totals)
        }
        (item, _) => item,
    }
}

/// One chunk with `timings` added, when there are timings.
pub fn add_timings(chunk: String, timings: Option<&Value>) -> String {
    match timings {
        Some(t) => with_field(vec![chunk], "timings", t).remove(0),
        None => chunk,
    }
}

/// A chunk reporting the prompt's progress: `envelope` (the route's chunk with no choices)
/// with `prompt_progress`.
pub fn progress_chunk(envelope: impl serde::Serialize, p: &PromptProgress) -> Option<String> {
    let mut v = serde_json::to_value(envelope).ok()?;
    v.as_object_mut()?
        .insert("prompt_progress".into(), progress(p));
    Some(v.to_string())
}

/// `timings` of a finished sequence, from its own clock.
pub fn timings_of(c: &Completion) -> Value {
    let ttft = c.time_to_first_token.unwrap_or(c.e2e_latency);
    timings(
        c.usage.cached_tokens,
        c.usage.prompt_tokens.saturating_sub(c.usage.cached_tokens),
        ttft * 1e3,
        c.usage.completion_tokens,
        (c.e2e_latency - ttft).max(0.0) * 1e3,
    )
}

/// llama-server's `timings` object: prompt tokens computed (`cache_n` served from the cache)
/// and tokens generated, with their times and rates.
fn timings(
    cached: usize,
    prompt_n: usize,
    prompt_ms: f64,
    predicted_n: usize,
    predicted_ms: f64,
) -> Value {
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

/// llama-server's `prompt_progress` object.
pub fn progress(p: &PromptProgress) -> Value {
    json!({
        "total": p.total,
        "cache": p.cached,
        "processed": p.processed,
        "time_ms": p.elapsed * 1e3,
    })
}

/// Adds `key: value` to each JSON object chunk (chunks that are not objects pass unchanged).
pub fn with_field(chunks: Vec<String>, key: &str, value: &Value) -> Vec<String> {
    chunks
        .into_iter()
        .map(|c| match serde_json::from_str::<Value>(&c) {
            Ok(Value::Object(mut o)) => {
                o.insert(key.to_string(), value.clone());
                Value::Object(o).to_string()
            }
            _ => c,
        })
        .collect()
}

/// `body` as a JSON response, with `extra` fields beside its own.
pub fn json_with(body: impl serde::Serialize, extra: serde_json::Map<String, Value>) -> Response {
    if extra.is_empty() {
        return axum::Json(body).into_response();
    }
    match serde_json::to_value(body) {
        Ok(Value::Object(mut o)) => {
            o.extend(extra);
            axum::Json(Value::Object(o)).into_response()
        }
        Ok(other) => axum::Json(other).into_response(),
        Err(e) => ApiError::internal(format!("serialising the response: {e}")).into_response(),
    }
}

/// llama-server's name of why a sequence stopped (`stop_type`).
pub fn stop_type(reason: &FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop { text: Some(_), .. } => "word",
        FinishReason::Stop { .. } => "eos",
        FinishReason::Length { .. } => "limit",
        FinishReason::Abort { .. } => "none",
    }
}

/// The `__verbose` object of a non-streamed OpenAI response: its first choice as
/// llama-server's native result, with the prompt as computed (`prompt`, special tokens
/// written out).
pub fn verbose(model: &str, prompt: &str, c: &Completion) -> Value {
    json!({
        "content": c.text,
        "tokens": c.token_ids,
        "stop": true,
        "model": model,
        "prompt": prompt,
        "tokens_predicted": c.usage.completion_tokens,
        "tokens_evaluated": c.usage.prompt_tokens,
        "tokens_cached": c.usage.cached_tokens,
        "stop_type": stop_type(&c.finish_reason),
        "timings": timings_of(c),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_without_streaming_is_refused_and_timings_need_the_engine() {
        let fields = ExtraFields {
            timings_per_token: None,
            return_progress: Some(true),
        };
        assert!(fields.check(false).is_err());
        assert!(fields.check(true).is_ok_and(|e| e.progress));
        let timings = ExtraFields {
            timings_per_token: Some(true),
            return_progress: None,
        };
        let e = timings.check(false).expect("allowed");
        assert!(e.timings && !e.progress && e.engine_progress());
        assert!(!Extras::default().engine_progress());
    }

    #[test]
    fn fields_are_added_to_object_chunks_only() {
        let out = with_field(
            vec![r#"{"a":1}"#.into(), "[DONE]".into()],
            "timings",
            &json!({"predicted_n": 2}),
        );
        assert_eq!(out[0], r#"{"a":1,"timings":{"predicted_n":2}}"#);
        assert_eq!(out[1], "[DONE]");
    }
}
