//! Running the sequences of one HTTP request on the engine and reading their events from async
//! code: no thread and no task per stream. Dropping what this returns drops the engine streams,
//! which aborts their requests (a queued one leaves the queue before its prefill).

use super::error::ApiError;
use super::params::Params;
use engine::{Completion, Engine, GenerationStream, Input, Namespace, StreamEvent};
use futures_util::stream::{self, BoxStream, StreamExt};
use std::sync::Arc;

/// One sequence of a request: which choice it is, and of which prompt.
pub struct Job {
    /// The choice's index in the response.
    pub index: usize,
    /// The prompt it continues (prompt tokens are counted once per prompt, not per choice).
    pub prompt: usize,
    /// Its engine stream.
    pub stream: GenerationStream,
    /// The client's id for it, held while it runs (`/generate` with `rid`).
    pub rid: Option<super::rids::RidGuard>,
}

/// Tokenizes on the runtime's bounded blocking pool, so a long prompt does not stall the
/// threads that serve other connections.
pub async fn tokenize_all(
    engine: &Arc<Engine>,
    inputs: Vec<Input>,
) -> Result<Vec<Vec<u32>>, ApiError> {
    let engine = Arc::clone(engine);
    tokio::task::spawn_blocking(move || {
        inputs
            .iter()
            .map(|input| engine.tokenize(input))
            .collect::<Result<Vec<_>, _>>()
    })
    .await
    .map_err(|e| ApiError::internal(format!("the tokenizer task failed: {e}")))?
    .map_err(ApiError::from)
}

/// Submits `n` sequences for each input; choice `i * n + k` continues input `i`.
pub async fn submit(
    engine: &Arc<Engine>,
    params: &Params,
    inputs: Vec<Input>,
    n: usize,
    namespace: &Namespace,
) -> Result<Vec<Job>, ApiError> {
    let mut jobs = Vec::with_capacity(inputs.len() * n);
    for (prompt_index, prompt) in tokenize_all(engine, inputs).await?.into_iter().enumerate() {
        for choice in 0..n {
            let mut req = params.request(Input::Tokens(Vec::new()), namespace);
            req.sampling.seed = req.sampling.seed.map(|s| choice_seed(s, choice));
            if let Some(cap) = params.max_from_room {
                req.stop.max_new_tokens = cap.min(engine.token_limit().room_after(prompt.len()));
            }
            let stream = engine.generate_tokens(prompt.clone(), req)?;
            jobs.push(Job {
                index: jobs.len(),
                prompt: prompt_index,
                stream,
                rid: None,
            });
        }
    }
    Ok(jobs)
}

/// The seed of choice `k` of a seeded request: choice 0 keeps the request's seed (so `n = 1`
/// samples exactly as before), the others get distinct seeds derived from it, so `n` seeded
/// choices differ from each other and are the same on every call.
fn choice_seed(seed: u64, k: usize) -> u64 {
    if k == 0 {
        return seed;
    }
    // SplitMix64 of seed + k: well spread, and distinct for distinct k.
    let mut z = seed.wrapping_add((k as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A finished choice.
pub struct Finished {
    pub index: usize,
    pub prompt: usize,
    pub completion: Completion,
}

/// Waits for every job's completion, in choice order.
pub async fn complete_all(jobs: Vec<Job>) -> Result<Vec<Finished>, ApiError> {
    let mut out = Vec::with_capacity(jobs.len());
    for job in jobs {
        let completion = job.stream.completion().await?;
        out.push(Finished {
            index: job.index,
            prompt: job.prompt,
            completion,
        });
    }
    Ok(out)
}

/// Every job's events, merged as they come: `(choice index, prompt index, event)`.
pub fn merged_events(jobs: Vec<Job>) -> BoxStream<'static, (usize, usize, StreamEvent)> {
    let streams = jobs.into_iter().map(|job| {
        stream::unfold(job, |mut job| async move {
            let ev = job.stream.next_event().await?;
            Some(((job.index, job.prompt, ev), job))
        })
        .boxed()
    });
    stream::select_all(streams).boxed()
}

/// Token counts of a whole request, each prompt counted once however many choices continue it.
#[derive(Debug, Default)]
pub struct UsageTally {
    prompts: std::collections::BTreeMap<usize, (usize, usize)>,
    completion: usize,
}

impl UsageTally {
    /// Adds one finished choice.
    pub fn add(&mut self, prompt: usize, c: &Completion) {
        let entry = self.prompts.entry(prompt).or_default();
        entry.0 = c.usage.prompt_tokens;
        entry.1 = entry.1.max(c.usage.cached_tokens);
        self.completion += c.usage.completion_tokens;
    }

    /// (prompt, completion, cached) tokens.
    pub fn totals(&self) -> (usize, usize, usize) {
        let prompt = self.prompts.values().map(|p| p.0).sum();
        let cached = self.prompts.values().map(|p| p.1).sum();
        (prompt, self.completion, cached)
    }
}

/// A response body of finished sequences: the list when the request asked for several (a batch,
/// or `n` > 1), else its one sequence.
pub fn one_or_list<T: serde::Serialize>(
    mut outs: Vec<T>,
    list: bool,
) -> Result<axum::response::Response, ApiError> {
    use axum::response::IntoResponse;
    if list {
        return Ok(axum::Json(outs).into_response());
    }
    let one = outs
        .pop()
        .ok_or_else(|| ApiError::internal("no sequence was started"))?;
    Ok(axum::Json(one).into_response())
}

#[cfg(test)]
mod tests {
    use super::choice_seed;

    #[test]
    fn choice_seeds_keep_the_first_and_differ_for_the_rest() {
        assert_eq!(choice_seed(7, 0), 7);
        let seeds: std::collections::BTreeSet<u64> = (0..16).map(|k| choice_seed(7, k)).collect();
        assert_eq!(seeds.len(), 16);
        assert_eq!(choice_seed(7, 3), choice_seed(7, 3));
    }
}
