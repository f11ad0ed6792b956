//! Sampling and stop settings of an HTTP request, validated once for every route, with the caps
//! that keep one request's cost bounded.

use super::error::ApiError;
use engine::{GenerateRequest, GrammarSpec, Input, Namespace, SamplingParams, StopConditions};
use serde::Deserialize;
use std::collections::BTreeMap;

/// Fields a request body carried that no struct field took.
pub type Unknown = BTreeMap<String, serde_json::Value>;

/// Most stop strings in one request.
pub const MAX_STOP_STRINGS: usize = 16;
/// Longest stop string, in bytes (stop matching holds back this much text).
pub const MAX_STOP_BYTES: usize = 256;
/// Longest `cache_salt`, in bytes (salts live in the cache's namespace table).
pub const MAX_SALT_BYTES: usize = 256;
/// Most sequences (prompts times `n`) one request may start.
pub const MAX_SEQUENCES: usize = 64;
/// Largest `n`.
pub const MAX_N: i64 = 16;

/// One string or a list of them.
#[derive(Deserialize, Clone)]
#[serde(untagged)]
pub enum StringOrList {
    /// One.
    One(String),
    /// Several.
    Many(Vec<String>),
}

/// `stream_options` of the OpenAI API.
#[derive(Deserialize, Default, Clone)]
pub struct StreamOptions {
    /// Send a last chunk with the usage of the whole request.
    pub include_usage: Option<bool>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// Sampling fields shared by the OpenAI endpoints (and filled in by the native one).
#[derive(Deserialize, Default, Clone)]
pub struct OpenAiSampling {
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub stop: Option<StringOrList>,
    pub stop_token_ids: Option<Vec<u32>>,
    pub seed: Option<u64>,
    pub n: Option<i64>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub min_tokens: Option<usize>,
    pub ignore_eos: Option<bool>,
    pub skip_special_tokens: Option<bool>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    pub cache_salt: Option<String>,
    /// SGLang: keep a matched stop string at the end of the text.
    pub no_stop_trim: Option<bool>,
    /// Token id (as a string key, OpenAI's shape) to a bias added to its logit.
    pub logit_bias: Option<std::collections::BTreeMap<String, f32>>,
}

impl OpenAiSampling {
    /// Whether a streamed response ends with a usage chunk; `stream_options` without `stream`
    /// (which has nothing to apply it to) and unknown options are refused.
    pub fn include_usage(&self) -> Result<bool, ApiError> {
        let Some(options) = &self.stream_options else {
            return Ok(false);
        };
        if !self.stream.unwrap_or(false) {
            return Err(
                ApiError::bad("stream_options is only allowed with stream: true")
                    .param("stream_options"),
            );
        }
        reject_unknown(&options.unknown, "stream_options")?;
        Ok(options.include_usage.unwrap_or(false))
    }

    /// `n`, within 1..=16.
    pub fn n(&self) -> Result<usize, ApiError> {
        match self.n {
            None => Ok(1),
            Some(n) if (1..=MAX_N).contains(&n) => Ok(n as usize),
            Some(_) => Err(ApiError::bad(format!("n must be between 1 and {MAX_N}")).param("n")),
        }
    }
}

/// How many output tokens a request gets when it names none.
#[derive(Debug, Clone, Copy)]
pub enum DefaultMax {
    /// A fixed number (OpenAI completions: 16; SGLang native: 128).
    Fixed(usize),
    /// As many as the context and the KV pool leave after the prompt, at most this many.
    Room(usize),
}

/// The validated generation settings of one HTTP request.
pub struct Params {
    pub sampling: SamplingParams,
    pub stop: StopConditions,
    pub stop_strings: Vec<String>,
    pub no_stop_trim: bool,
    pub skip_special_tokens: bool,
    /// `max_tokens` was not given and is sized per prompt ([`DefaultMax::Room`]).
    pub max_from_room: Option<usize>,
    /// Structured output: what the text must match.
    pub grammar: Option<GrammarSpec>,
    /// Input logprobs from this prompt position on.
    pub logprob_start: Option<usize>,
    /// Report the prompt's progress ([`engine::StreamEvent::Progress`]).
    pub report_progress: bool,
}

impl Params {
    /// Builds the settings of an OpenAI-shaped request.
    pub fn from_openai(
        s: &OpenAiSampling,
        default_max: DefaultMax,
        want_logprobs: bool,
    ) -> Result<Params, ApiError> {
        let (max_new, max_from_room) = match (s.max_completion_tokens.or(s.max_tokens), default_max)
        {
            (Some(m), _) if m >= 0 => (m as usize, None),
            (Some(_), _) => {
                return Err(ApiError::bad("max_tokens must be >= 0").param("max_tokens"))
            }
            (None, DefaultMax::Fixed(m)) => (m, None),
            (None, DefaultMax::Room(cap)) => (0, Some(cap)),
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
            logit_bias: logit_bias(s.logit_bias.as_ref())?,
            banned_tokens: Vec::new(),
            allowed_tokens: None,
            top_logprobs: 0,
            logprob_token_ids: Vec::new(),
            post_sampling_probs: false,
        };
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
        check_stop_strings(&stop_strings)?;
        if stop.stop_token_ids.len() > MAX_STOP_STRINGS * 4 {
            return Err(
                ApiError::bad(format!("at most {} stop_token_ids", MAX_STOP_STRINGS * 4))
                    .param("stop_token_ids"),
            );
        }
        Ok(Params {
            sampling,
            stop,
            stop_strings,
            no_stop_trim: s.no_stop_trim.unwrap_or(false),
            skip_special_tokens: s.skip_special_tokens.unwrap_or(true),
            max_from_room,
            grammar: None,
            logprob_start: None,
            report_progress: false,
        })
    }

    /// The same settings, also reporting the `top` most likely tokens and the `ids` tokens'
    /// log-probabilities at every position.
    pub fn with_alternatives(mut self, top: usize, ids: Vec<u32>) -> Self {
        self.sampling.top_logprobs = top;
        self.sampling.logprob_token_ids = ids;
        self
    }

    /// The same settings, scoring the prompt from `start` on (input logprobs).
    pub fn with_logprob_start(mut self, start: Option<usize>) -> Self {
        self.logprob_start = start;
        self
    }

    /// The same settings, reporting the prompt's progress when `on`.
    pub fn with_progress(mut self, on: bool) -> Self {
        self.report_progress = on;
        self
    }

    /// The same settings with a structured-output constraint.
    pub fn with_grammar(mut self, grammar: Option<GrammarSpec>) -> Self {
        self.grammar = grammar;
        self
    }

    /// An engine request for `input` with these settings.
    pub fn request(&self, input: Input, namespace: &Namespace) -> GenerateRequest {
        let mut r = GenerateRequest::new(input);
        r.sampling = self.sampling.clone();
        r.stop = self.stop.clone();
        r.stop_strings = self.stop_strings.clone();
        r.no_stop_trim = self.no_stop_trim;
        r.namespace = namespace.clone();
        r.skip_special_tokens = self.skip_special_tokens;
        r.grammar = self.grammar.clone();
        r.logprob_start = self.logprob_start;
        r.report_progress = self.report_progress;
        r
    }
}

fn check_stop_strings(stops: &[String]) -> Result<(), ApiError> {
    if stops.len() > MAX_STOP_STRINGS {
        return Err(
            ApiError::bad(format!("at most {MAX_STOP_STRINGS} stop strings")).param("stop"),
        );
    }
    if stops.iter().any(|s| s.len() > MAX_STOP_BYTES) {
        return Err(ApiError::bad(format!(
            "a stop string may be at most {MAX_STOP_BYTES} bytes"
        ))
        .param("stop"));
    }
    if stops.iter().any(String::is_empty) {
        return Err(ApiError::bad("stop strings must not be empty").param("stop"));
    }
    Ok(())
}

/// Refuses requests that would start more than [`MAX_SEQUENCES`] sequences.
pub fn check_sequences(prompts: usize, n: usize) -> Result<(), ApiError> {
    if prompts.saturating_mul(n) > MAX_SEQUENCES {
        return Err(ApiError::bad(format!(
            "{prompts} prompts times n={n} exceeds the {MAX_SEQUENCES} sequences one request may start"
        ))
        .param("n"));
    }
    Ok(())
}

/// The cache namespace of a request: its tenant (from the API key) and its salt.
pub fn namespace(tenant: Option<String>, salt: Option<String>) -> Result<Namespace, ApiError> {
    let mut ns = Namespace::shared();
    if let Some(t) = tenant {
        ns = ns.with_tenant(t);
    }
    if let Some(s) = salt.filter(|s| !s.is_empty()) {
        if s.len() > MAX_SALT_BYTES {
            return Err(
                ApiError::bad(format!("cache_salt may be at most {MAX_SALT_BYTES} bytes"))
                    .param("cache_salt"),
            );
        }
        ns = ns.with_salt(s);
    }
    Ok(ns)
}

/// Token ids from a request, checked against the vocabulary.
pub fn token_ids(list: &[i64], vocab: usize) -> Result<Vec<u32>, ApiError> {
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

/// Fields accepted and deliberately without effect (docs/operations.md lists them).
const ACCEPTED_NO_OPS: &[&str] = &["user"];

/// SGLang's extension fields, accepted with the values that ask for what radixserve does anyway
/// (SGLang's router re-sends every request with them set to their defaults); any other value is
/// refused like an unknown field. `separate_reasoning` and `stream_reasoning` act only with a
/// reasoning parser, which radixserve (like SGLang without `--reasoning-parser`) does not run.
fn is_default_extension(name: &str, value: &serde_json::Value) -> bool {
    use serde_json::Value;
    match name {
        "continue_final_message"
        | "no_stop_trim"
        | "return_hidden_states"
        | "return_text_in_logprobs"
        | "return_entropy"
        | "return_bytes"
        | "background"
        | "no_logs" => matches!(value, Value::Bool(false) | Value::Null),
        // Metrics are always recorded.
        "log_metrics" => matches!(value, Value::Bool(true) | Value::Null),
        "separate_reasoning" | "stream_reasoning" => matches!(value, Value::Bool(_) | Value::Null),
        // `/generate`'s model name, which SGLang's router sends as null.
        "model" => value.is_null(),
        _ => false,
    }
}

/// Refuses a request that carries fields the server does not honour, naming them: a field is
/// either applied or a 400, never silently dropped.
pub fn reject_unknown(unknown: &Unknown, place: &str) -> Result<(), ApiError> {
    let names: Vec<&str> = unknown
        .iter()
        .filter(|(k, v)| !ACCEPTED_NO_OPS.contains(&k.as_str()) && !is_default_extension(k, v))
        .map(|(k, _)| k.as_str())
        .collect();
    if names.is_empty() {
        return Ok(());
    }
    Err(ApiError::bad(format!(
        "{place}: unsupported field{} {}; radixserve does not honour {}",
        if names.len() > 1 { "s" } else { "" },
        names.join(", "),
        if names.len() > 1 { "them" } else { "it" }
    )))
}

/// A message role as chat templates know it: `developer` becomes `system`; any other role must
/// be one of `allowed`.
pub fn chat_role(role: String, allowed: &[&str], param: &'static str) -> Result<String, ApiError> {
    if role == "developer" {
        return Ok("system".to_string());
    }
    if allowed.contains(&role.as_str()) {
        return Ok(role);
    }
    Err(ApiError::bad(format!("unknown message role {role:?}")).param(param))
}

/// The text of a message given as parts; a part whose type is not one of `text_kinds` (an image,
/// a file) is refused.
pub fn join_text_parts(
    parts: Vec<super::openai_types::ContentPart>,
    text_kinds: &[&str],
    param: &'static str,
) -> Result<String, ApiError> {
    let mut text = String::new();
    for p in parts {
        if !text_kinds.contains(&p.kind.as_str()) {
            return Err(
                ApiError::bad(format!("content part type {:?} is not supported", p.kind))
                    .param(param),
            );
        }
        text.push_str(&p.text.unwrap_or_default());
    }
    Ok(text)
}

/// OpenAI's `logit_bias` map (token id strings to biases) as token ids; ids are checked against
/// the vocabulary and biases against [-100, 100] by the engine.
fn logit_bias(
    map: Option<&std::collections::BTreeMap<String, f32>>,
) -> Result<Vec<(u32, f32)>, ApiError> {
    let Some(map) = map else {
        return Ok(Vec::new());
    };
    if map.len() > 300 {
        return Err(ApiError::bad("logit_bias may name at most 300 tokens").param("logit_bias"));
    }
    map.iter()
        .map(|(k, &b)| {
            k.parse::<u32>().map(|t| (t, b)).map_err(|_| {
                ApiError::bad(format!("logit_bias key {k:?} is not a token id")).param("logit_bias")
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn unknown(v: serde_json::Value) -> Unknown {
        serde_json::from_value(v).expect("a map")
    }

    #[test]
    fn sglang_extension_fields_pass_only_at_their_no_op_values() {
        // What SGLang's router adds to every request it forwards.
        let forwarded = json!({"no_stop_trim": false, "continue_final_message": false,
            "separate_reasoning": true, "stream_reasoning": true, "return_hidden_states": false,
            "model": null, "return_text_in_logprobs": false, "log_metrics": true,
            "background": false, "no_logs": false, "return_bytes": false, "return_entropy": false,
            "user": "u"});
        assert!(reject_unknown(&unknown(forwarded), "x").is_ok());
        for (k, v) in [
            ("no_stop_trim", json!(true)),
            ("continue_final_message", json!(true)),
            ("return_hidden_states", json!(true)),
            ("log_metrics", json!(false)),
            ("model", json!("other")),
            ("separate_reasoning", json!("yes")),
            ("best_of", json!(2)),
        ] {
            let e = reject_unknown(&unknown(json!({ k: v })), "x").expect_err(k);
            assert!(e.message().contains(k), "{}", e.message());
        }
    }
}
