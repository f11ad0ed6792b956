//! Server-side sampling defaults (`--override-generation-config`, vLLM's flag): values a
//! request gets for the sampling fields it leaves out. A field the request sets always wins.

use super::params::OpenAiSampling;
use serde::Deserialize;

/// The defaults; every field is optional, and unknown keys are refused when the flag is read.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationDefaults {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<i64>,
    pub min_p: Option<f32>,
    pub repetition_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    pub frequency_penalty: Option<f32>,
    /// Output tokens of a request that names no limit.
    pub max_new_tokens: Option<i64>,
    /// The seed of a request that names none (llama-server's `--seed`): unseeded requests
    /// then sample reproducibly.
    pub seed: Option<u64>,
}

impl GenerationDefaults {
    /// Parses the flag's JSON object, naming what is wrong.
    pub fn parse(json: &str) -> Result<Self, String> {
        let d: GenerationDefaults =
            serde_json::from_str(json).map_err(|e| format!("--override-generation-config: {e}"))?;
        if d.max_new_tokens.is_some_and(|m| m < 0) {
            return Err("--override-generation-config: max_new_tokens must be >= 0".into());
        }
        Ok(d)
    }

    /// `s` with the defaults filled into the fields it leaves out.
    pub fn apply(&self, mut s: OpenAiSampling) -> OpenAiSampling {
        fn fill<T: Copy>(slot: &mut Option<T>, default: Option<T>) {
            if slot.is_none() {
                *slot = default;
            }
        }
        fill(&mut s.temperature, self.temperature);
        fill(&mut s.top_p, self.top_p);
        fill(&mut s.top_k, self.top_k);
        fill(&mut s.min_p, self.min_p);
        fill(&mut s.repetition_penalty, self.repetition_penalty);
        fill(&mut s.presence_penalty, self.presence_penalty);
        fill(&mut s.frequency_penalty, self.frequency_penalty);
        fill(&mut s.seed, self.seed);
        if s.max_tokens.is_none() && s.max_completion_tokens.is_none() {
            s.max_tokens = self.max_new_tokens;
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fill_only_what_a_request_leaves_out() {
        let d =
            GenerationDefaults::parse(r#"{"temperature": 0.2, "seed": 7, "max_new_tokens": 9}"#)
                .expect("valid");
        let s = d.apply(OpenAiSampling {
            temperature: Some(1.0),
            ..OpenAiSampling::default()
        });
        assert_eq!(
            (s.temperature, s.seed, s.max_tokens),
            (Some(1.0), Some(7), Some(9))
        );
        let s = d.apply(OpenAiSampling {
            max_completion_tokens: Some(3),
            ..OpenAiSampling::default()
        });
        assert_eq!((s.max_tokens, s.max_completion_tokens), (None, Some(3)));
        let e = GenerationDefaults::parse(r#"{"temprature": 1}"#).expect_err("typo");
        assert!(e.contains("temprature"), "{e}");
        assert!(GenerationDefaults::parse(r#"{"max_new_tokens": -1}"#).is_err());
    }
}
