//! Streamed OpenAI responses: a role-only first chunk per chat choice (or the echoed prompt),
//! one chunk per event, tool calls parsed at a choice's end, and the usage chunk.

use super::super::error::ApiError;
use super::super::jobs::{self, Job, UsageTally};
use super::super::llamacpp::extras;
use super::super::logprobs;
use super::super::openai_types::*;
use super::super::sse;
use super::super::tools;
use super::super::{response_id, Shared};
use super::{openai_finish, Api, Header};
use axum::response::Response;
use engine::StreamEvent;
use futures_util::stream::StreamExt;
use std::collections::{HashMap, HashSet};

/// One streamed chunk for a choice's event; `None` when there is nothing to send.
fn chunk(st: &Shared, h: &Header, index: usize, ev: &StreamEvent) -> Option<String> {
    chunk_finishing(st, h, index, ev, None)
}

/// [`chunk`], with `finish` as the finish reason of a delta's chunk (its choice's last).
fn chunk_finishing(
    st: &Shared,
    h: &Header,
    index: usize,
    ev: &StreamEvent,
    finish: Option<&'static str>,
) -> Option<String> {
    let none = logprobs::Tokens {
        ids: &[],
        logprobs: &[],
        alternatives: &[],
    };
    let (text, toks, finish) = match ev {
        // Text held back (a possible stop string, half a character) still reports its
        // tokens' logprobs when asked; otherwise there is nothing to send yet.
        StreamEvent::Delta(d) if d.text.is_empty() && (!h.logprobs || d.token_ids.is_empty()) => {
            return None
        }
        StreamEvent::Delta(d) => (
            Some(d.text.clone()),
            logprobs::Tokens {
                ids: &d.token_ids,
                logprobs: &d.logprobs,
                alternatives: &d.alternatives,
            },
            finish,
        ),
        StreamEvent::Done(c) => (None, none, Some(openai_finish(&c.finish_reason))),
        StreamEvent::Failed(_) | StreamEvent::Progress(_) => return None,
    };
    let with_lp = h.logprobs && !toks.ids.is_empty();
    let json = match h.api {
        Api::Completions => serde_json::to_string(&h.envelope(
            "text_completion",
            vec![CompletionChoice {
                index,
                text: text.unwrap_or_default(),
                logprobs: with_lp.then(|| logprobs::completion(&st.engine, &toks)),
                finish_reason: finish,
            }],
        )),
        Api::Chat => serde_json::to_string(&h.envelope(
            "chat.completion.chunk",
            vec![ChatChunkChoice {
                index,
                delta: ChatDelta {
                    content: text.map(Some),
                    ..ChatDelta::default()
                },
                logprobs: with_lp.then(|| logprobs::chat(&st.engine, &toks)),
                finish_reason: finish,
            }],
        )),
    };
    json.ok()
}

/// A streamed chat choice's chunks when it may call tools: text before a call streams as
/// usual; the calls go out parsed, as one delta, when the choice ends.
fn tool_chunks(
    st: &Shared,
    h: &Header,
    index: usize,
    ev: &StreamEvent,
    splitter: &mut tools::Splitter,
) -> Vec<String> {
    match ev {
        StreamEvent::Delta(d) => {
            let shown = engine::Delta {
                text: splitter.push(&d.text),
                ..d.clone()
            };
            chunk(st, h, index, &StreamEvent::Delta(shown))
                .into_iter()
                .collect()
        }
        StreamEvent::Done(c) => {
            let max = h.tools.unwrap_or(usize::MAX);
            let (content, calls) = splitter.finish(max, &mut || response_id("call_"));
            let mut finish = openai_finish(&c.finish_reason);
            if !calls.is_empty() && finish == "stop" {
                finish = "tool_calls";
            }
            let delta = |delta: ChatDelta, finish: Option<&'static str>| {
                serde_json::to_string(&h.envelope(
                    "chat.completion.chunk",
                    vec![ChatChunkChoice {
                        index,
                        delta,
                        logprobs: None,
                        finish_reason: finish,
                    }],
                ))
                .ok()
            };
            let mut out = Vec::new();
            if !content.is_empty() {
                out.extend(delta(
                    ChatDelta {
                        content: Some(Some(content)),
                        ..ChatDelta::default()
                    },
                    None,
                ));
            }
            if !calls.is_empty() {
                let calls = calls
                    .into_iter()
                    .enumerate()
                    .map(|(index, call)| StreamToolCall { index, call })
                    .collect();
                out.extend(delta(
                    ChatDelta {
                        tool_calls: Some(calls),
                        ..ChatDelta::default()
                    },
                    None,
                ));
            }
            out.extend(delta(ChatDelta::default(), Some(finish)));
            out
        }
        StreamEvent::Failed(_) | StreamEvent::Progress(_) => Vec::new(),
    }
}

/// Completions streamed with `logprobs`: each choice's last token chunk carries its finish
/// reason, so that every chunk has logprobs (SGLang's shape; its clients read them from every
/// chunk). Each token chunk therefore waits for the choice's next event.
fn finish_on_last_token(
    st: &Shared,
    h: &Header,
    index: usize,
    ev: StreamEvent,
    held: &mut HashMap<usize, StreamEvent>,
) -> Vec<String> {
    match ev {
        StreamEvent::Delta(_) => held
            .insert(index, ev)
            .and_then(|prev| chunk(st, h, index, &prev))
            .into_iter()
            .collect(),
        StreamEvent::Done(ref c) => {
            let finish = openai_finish(&c.finish_reason);
            held.remove(&index)
                .and_then(|last| chunk_finishing(st, h, index, &last, Some(finish)))
                .or_else(|| chunk(st, h, index, &ev))
                .into_iter()
                .collect()
        }
        StreamEvent::Failed(_) | StreamEvent::Progress(_) => Vec::new(),
    }
}

/// The role-only first chunk of each streamed chat choice (as OpenAI, vLLM and SGLang send).
fn role_chunks(h: &Header, jobs: &[Job]) -> Vec<String> {
    if h.api != Api::Chat {
        return echo_chunks(h, jobs);
    }
    jobs.iter()
        .filter_map(|j| {
            serde_json::to_string(&h.envelope(
                "chat.completion.chunk",
                vec![ChatChunkChoice {
                    index: j.index,
                    delta: ChatDelta {
                        role: Some("assistant"),
                        content: Some(None),
                        ..ChatDelta::default()
                    },
                    logprobs: None,
                    finish_reason: None,
                }],
            ))
            .ok()
        })
        .collect()
}

/// A streamed completion choice's first chunk with `echo` and `logprobs`: the prompt's text
/// with its logprobs (which come with the choice's first event), then what the event adds.
fn echo_with_logprobs(
    st: &Shared,
    h: &Header,
    index: usize,
    prompt: usize,
    ev: &StreamEvent,
) -> Vec<String> {
    let (text, scored, toks) = match ev {
        StreamEvent::Delta(d) => (
            d.text.as_str(),
            &d.input_logprobs,
            logprobs::Tokens {
                ids: &d.token_ids,
                logprobs: &d.logprobs,
                alternatives: &d.alternatives,
            },
        ),
        StreamEvent::Done(c) => (
            "",
            &c.input_logprobs,
            logprobs::Tokens {
                ids: &[],
                logprobs: &[],
                alternatives: &[],
            },
        ),
        StreamEvent::Failed(_) | StreamEvent::Progress(_) => return Vec::new(),
    };
    let first = serde_json::to_string(&h.envelope(
        "text_completion",
        vec![CompletionChoice {
            index,
            text: format!("{}{text}", h.echoed(prompt)),
            logprobs: Some(logprobs::completion_echoed(
                &st.engine, scored, &toks, h.top,
            )),
            finish_reason: None,
        }],
    ));
    let mut out: Vec<String> = first.ok().into_iter().collect();
    if let StreamEvent::Done(_) = ev {
        out.extend(chunk(st, h, index, ev));
    }
    out
}

/// With `echo`, the first chunk of each streamed completion choice is its prompt (with
/// `logprobs`, it comes with the choice's first event instead, carrying the prompt's).
fn echo_chunks(h: &Header, jobs: &[Job]) -> Vec<String> {
    if h.score_prompt {
        return Vec::new();
    }
    jobs.iter()
        .filter(|j| !h.echoed(j.prompt).is_empty())
        .filter_map(|j| {
            serde_json::to_string(&h.envelope(
                "text_completion",
                vec![CompletionChoice {
                    index: j.index,
                    text: h.echoed(j.prompt).to_string(),
                    logprobs: None,
                    finish_reason: None,
                }],
            ))
            .ok()
        })
        .collect()
}

pub(super) fn stream(st: Shared, h: Header, jobs: Vec<Job>, include_usage: bool) -> Response {
    let first = role_chunks(&h, &jobs);
    let object = if h.api == Api::Chat {
        "chat.completion.chunk"
    } else {
        "text_completion"
    };
    let mut tally = UsageTally::default();
    let st2 = st.clone();
    let h2 = h.clone();
    let mut splitters: HashMap<usize, tools::Splitter> = HashMap::new();
    let mut echoed: HashSet<usize> = HashSet::new();
    let mut held: HashMap<usize, StreamEvent> = HashMap::new();
    let clock = extras::SharedClock::default();
    let clock2 = clock.clone();
    let events = jobs::merged_events(jobs).map(move |(index, prompt, ev)| {
        if let StreamEvent::Done(c) = &ev {
            st2.metrics.observe(c);
            tally.add(prompt, c);
        }
        let timings = clock2.observe(&ev, h2.extras.timings);
        let totals = tally.totals();
        let item = match ev {
            StreamEvent::Failed(e) => sse::Item::Fail(ApiError::from(e)),
            StreamEvent::Progress(p) => {
                let asked = h2.extras.progress;
                let env = h2.envelope::<CompletionChoice>(object, Vec::new());
                let chunk = asked.then(|| extras::progress_chunk(env, &p)).flatten();
                sse::Item::Data(chunk.into_iter().collect(), totals)
            }
            ev if h2.score_prompt && echoed.insert(index) => {
                sse::Item::Data(echo_with_logprobs(&st2, &h2, index, prompt, &ev), totals)
            }
            ev if h2.api == Api::Completions && h2.logprobs => sse::Item::Data(
                finish_on_last_token(&st2, &h2, index, ev, &mut held),
                totals,
            ),
            ev if h2.tools.is_some() => {
                let splitter = splitters.entry(index).or_default();
                sse::Item::Data(tool_chunks(&st2, &h2, index, &ev, splitter), totals)
            }
            ev => sse::Item::Data(chunk(&st2, &h2, index, &ev).into_iter().collect(), totals),
        };
        extras::with_timings(item, timings)
    });
    let usage = move |(p, c, cached): (usize, usize, usize)| {
        if !include_usage {
            return None;
        }
        let chunk = serde_json::to_string(&Envelope::<CompletionChoice> {
            usage: Some(UsageBody::new(p, c, cached)),
            ..h.envelope(object, Vec::new())
        })
        .ok()?;
        Some(extras::add_timings(
            chunk,
            clock.now(h.extras.timings).as_ref(),
        ))
    };
    sse::response(first, events, usage, st.limits.sse_keep_alive)
}
