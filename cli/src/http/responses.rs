//! OpenAI's Responses API (`POST /v1/responses`): text in and out, streamed or not. A response
//! is kept in memory (bounded) so that a later request naming it in `previous_response_id`
//! continues the conversation: its prompt then starts with the earlier turns, which are a
//! prefix-cache hit.

use super::auth::Caller;
use super::error::ApiError;
use super::jobs;
use super::layers::JsonBody;
use super::openai::{check_model, openai_finish};
use super::openai_types::ContentPart;
use super::params::{self, DefaultMax, OpenAiSampling, Params, Unknown};
use super::structured;
use super::{now_secs, response_id, Shared};
use axum::extract::{Extension, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use engine::{ChatMessage, Completion, Input, StreamEvent};
use futures_util::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Mutex;

/// Largest default `max_output_tokens` (the pool and context may leave less).
const DEFAULT_MAX_OUTPUT_TOKENS: usize = 1024;
/// Most stored responses.
const MAX_STORED: usize = 1024;
/// Most bytes of stored conversation text.
const MAX_STORED_BYTES: usize = 64 << 20;

/// An input message's content.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum InputContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One input item (a message).
#[derive(Deserialize)]
pub struct InputItem {
    #[serde(rename = "type")]
    kind: Option<String>,
    role: String,
    content: InputContent,
    #[serde(flatten)]
    unknown: Unknown,
}

/// `input`: a text (one user message) or a list of messages.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum ResponseInput {
    Text(String),
    Items(Vec<InputItem>),
}

/// `POST /v1/responses` request.
#[derive(Deserialize)]
pub struct ResponsesRequest {
    model: Option<String>,
    input: ResponseInput,
    instructions: Option<String>,
    previous_response_id: Option<String>,
    max_output_tokens: Option<i64>,
    temperature: Option<f32>,
    top_p: Option<f32>,
    stream: Option<bool>,
    store: Option<bool>,
    /// `{"format": ...}`: structured output.
    text: Option<serde_json::Value>,
    frequency_penalty: Option<f32>,
    presence_penalty: Option<f32>,
    /// Inert without `tools` (which this endpoint does not take): only `"auto"` and `"none"`.
    tool_choice: Option<serde_json::Value>,
    /// Inert without `tools` (which this endpoint does not take): accepted, never read.
    #[serde(rename = "parallel_tool_calls")]
    _parallel_tool_calls: Option<bool>,
    /// Only `"disabled"` (the default): a conversation too long is refused, never cut.
    truncation: Option<String>,
    /// `include_usage: true` only: the final response always carries `usage`.
    stream_options: Option<params::StreamOptions>,
    #[serde(flatten)]
    unknown: Unknown,
}

impl ResponsesRequest {
    /// Refuses the values of the tool and truncation fields this endpoint cannot honour.
    fn check_inert_fields(&self) -> Result<(), ApiError> {
        if let Some(choice) = &self.tool_choice {
            if !matches!(choice.as_str(), Some("auto" | "none")) {
                return Err(ApiError::bad(
                    "tool_choice other than \"auto\" or \"none\" needs tools, which /v1/responses does not take",
                )
                .param("tool_choice"));
            }
        }
        if self.truncation.as_deref().is_some_and(|t| t != "disabled") {
            return Err(ApiError::bad(
                "truncation \"disabled\" only: radixserve refuses a conversation too long rather than cutting it",
            )
            .param("truncation"));
        }
        if let Some(o) = &self.stream_options {
            params::reject_unknown(&o.unknown, "/v1/responses stream_options")?;
            if o.include_usage == Some(false) {
                return Err(ApiError::bad(
                    "include_usage: false cannot be honoured: a response always carries its usage",
                )
                .param("stream_options"));
            }
        }
        Ok(())
    }
}

#[derive(Serialize, Clone)]
struct OutputText {
    #[serde(rename = "type")]
    kind: &'static str,
    text: String,
    annotations: Vec<()>,
}

#[derive(Serialize, Clone)]
struct OutputMessage {
    #[serde(rename = "type")]
    kind: &'static str,
    id: String,
    status: &'static str,
    role: &'static str,
    content: Vec<OutputText>,
}

#[derive(Serialize, Clone, Copy, Default)]
struct InputDetails {
    cached_tokens: usize,
}

#[derive(Serialize, Clone, Copy, Default)]
struct ResponseUsage {
    input_tokens: usize,
    output_tokens: usize,
    total_tokens: usize,
    input_tokens_details: InputDetails,
    /// SGLang's names for the same counts, which its clients read.
    prompt_tokens: usize,
    completion_tokens: usize,
}

#[derive(Serialize, Clone)]
struct IncompleteDetails {
    reason: &'static str,
}

/// A response object.
#[derive(Serialize, Clone)]
struct ResponseObject {
    id: String,
    object: &'static str,
    created_at: u64,
    status: &'static str,
    model: String,
    output: Vec<OutputMessage>,
    previous_response_id: Option<String>,
    incomplete_details: Option<IncompleteDetails>,
    usage: Option<ResponseUsage>,
}

/// Stored conversations, bounded in count and bytes (oldest first out).
#[derive(Default)]
pub struct Store {
    inner: Mutex<StoreInner>,
}

#[derive(Default)]
struct StoreInner {
    order: VecDeque<String>,
    items: HashMap<String, (Option<String>, Vec<ChatMessage>, usize)>,
    bytes: usize,
}

impl Store {
    fn get(&self, tenant: &Option<String>, id: &str) -> Option<Vec<ChatMessage>> {
        let inner = self.inner.lock().ok()?;
        let (owner, messages, _) = inner.items.get(id)?;
        (owner == tenant).then(|| messages.clone())
    }

    fn put(&self, tenant: Option<String>, id: String, messages: Vec<ChatMessage>) {
        let size: usize = messages
            .iter()
            .map(|m| m.content.len() + m.role.len())
            .sum();
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        if size > MAX_STORED_BYTES {
            return; // Too large to keep: later requests naming it get a 404.
        }
        inner.bytes += size;
        inner.order.push_back(id.clone());
        inner.items.insert(id, (tenant, messages, size));
        while inner.order.len() > MAX_STORED || inner.bytes > MAX_STORED_BYTES {
            let Some(old) = inner.order.pop_front() else {
                break;
            };
            if let Some((_, _, n)) = inner.items.remove(&old) {
                inner.bytes -= n;
            }
        }
    }
}

fn input_messages(input: ResponseInput) -> Result<Vec<ChatMessage>, ApiError> {
    let items = match input {
        ResponseInput::Text(t) => return Ok(vec![ChatMessage::new("user", t)]),
        ResponseInput::Items(items) => items,
    };
    items
        .into_iter()
        .map(|item| {
            params::reject_unknown(&item.unknown, "an input item")?;
            if item.kind.as_deref().is_some_and(|k| k != "message") {
                return Err(
                    ApiError::bad("only input items of type \"message\" are supported")
                        .param("input"),
                );
            }
            let role = params::chat_role(item.role, &["system", "user", "assistant"], "input")?;
            let content = match item.content {
                InputContent::Text(t) => t,
                InputContent::Parts(parts) => {
                    params::join_text_parts(parts, &["input_text", "output_text"], "input")?
                }
            };
            Ok(ChatMessage::new(role, content))
        })
        .collect()
}

fn object(
    id: &str,
    msg_id: &str,
    model: &str,
    previous: &Option<String>,
    c: Option<&Completion>,
) -> ResponseObject {
    let (status, incomplete) = match c.map(|c| openai_finish(&c.finish_reason)) {
        None => ("in_progress", None),
        Some("length") => (
            "incomplete",
            Some(IncompleteDetails {
                reason: "max_output_tokens",
            }),
        ),
        Some("abort") => ("failed", None),
        Some(_) => ("completed", None),
    };
    ResponseObject {
        id: id.to_string(),
        object: "response",
        created_at: now_secs(),
        status,
        model: model.to_string(),
        output: c
            .map(|c| {
                vec![OutputMessage {
                    kind: "message",
                    id: msg_id.to_string(),
                    status: "completed",
                    role: "assistant",
                    content: vec![OutputText {
                        kind: "output_text",
                        text: c.text.clone(),
                        annotations: Vec::new(),
                    }],
                }]
            })
            .unwrap_or_default(),
        previous_response_id: previous.clone(),
        incomplete_details: incomplete,
        usage: c.map(|c| ResponseUsage {
            input_tokens: c.usage.prompt_tokens,
            output_tokens: c.usage.completion_tokens,
            total_tokens: c.usage.prompt_tokens + c.usage.completion_tokens,
            input_tokens_details: InputDetails {
                cached_tokens: c.usage.cached_tokens,
            },
            prompt_tokens: c.usage.prompt_tokens,
            completion_tokens: c.usage.completion_tokens,
        }),
    }
}

/// `POST /v1/responses`.
pub async fn create(
    State(st): State<Shared>,
    Extension(caller): Extension<Caller>,
    JsonBody(b): JsonBody<ResponsesRequest>,
) -> Result<Response, ApiError> {
    params::reject_unknown(&b.unknown, "/v1/responses")?;
    check_model(&st, b.model.as_deref())?;
    b.check_inert_fields()?;
    // The conversation so far (stored without instructions: as in OpenAI's API, a response's
    // instructions are not carried over to the next one).
    let mut messages = match &b.previous_response_id {
        None => Vec::new(),
        Some(prev) if !prev.starts_with("resp_") => {
            return Err(ApiError::bad(format!(
                "previous_response_id {prev:?} is not a response id (they start with \"resp_\")"
            ))
            .param("previous_response_id"))
        }
        Some(prev) => st.responses.get(&caller.tenant, prev).ok_or_else(|| {
            ApiError::not_found(format!("no stored response {prev:?}"))
                .param("previous_response_id")
        })?,
    };
    messages.extend(input_messages(b.input)?);
    let prompt: Vec<ChatMessage> = b
        .instructions
        .map(|i| ChatMessage::new("system", i))
        .into_iter()
        .chain(messages.iter().cloned())
        .collect();
    let sampling = OpenAiSampling {
        max_tokens: b.max_output_tokens,
        temperature: b.temperature,
        top_p: b.top_p,
        frequency_penalty: b.frequency_penalty,
        presence_penalty: b.presence_penalty,
        ..OpenAiSampling::default()
    };
    let grammar = b
        .text
        .as_ref()
        .map(structured::responses_text_format)
        .transpose()?
        .flatten();
    let params = Params::from_openai(
        &st.defaults.apply(sampling),
        DefaultMax::Room(DEFAULT_MAX_OUTPUT_TOKENS),
        false,
    )?
    .with_grammar(grammar);
    let ns = params::namespace(caller.tenant.clone(), None)?;
    let mut jobs = jobs::submit(&st.engine, &params, vec![Input::Chat(prompt)], 1, &ns).await?;
    let job = jobs
        .pop()
        .ok_or_else(|| ApiError::internal("no sequence was started"))?;
    st.metrics.request_started();
    let ids = ResponseIds {
        id: response_id("resp_"),
        msg_id: response_id("msg_"),
        model: st.engine.info().model_name.clone(),
        previous: b.previous_response_id,
    };
    let store = b.store.unwrap_or(true).then(|| Saver {
        tenant: caller.tenant,
        id: ids.id.clone(),
        messages,
    });
    if !b.stream.unwrap_or(false) {
        let c = job.stream.completion().await?;
        st.metrics.observe(&c);
        let out = ids.object(Some(&c));
        if let Some(saver) = store {
            saver.save(&st, &c);
        }
        return Ok(axum::Json(out).into_response());
    }
    Ok(stream(st, job, ids, store))
}

/// The ids and names one response carries.
struct ResponseIds {
    id: String,
    msg_id: String,
    model: String,
    previous: Option<String>,
}

impl ResponseIds {
    fn object(&self, c: Option<&Completion>) -> ResponseObject {
        object(&self.id, &self.msg_id, &self.model, &self.previous, c)
    }

    fn item(&self, status: &'static str, text: Option<&str>) -> OutputMessage {
        OutputMessage {
            kind: "message",
            id: self.msg_id.clone(),
            status,
            role: "assistant",
            content: text.map(part).into_iter().collect(),
        }
    }
}

fn part(text: &str) -> OutputText {
    OutputText {
        kind: "output_text",
        text: text.to_string(),
        annotations: Vec::new(),
    }
}

/// Keeps a finished conversation for `previous_response_id`.
struct Saver {
    tenant: Option<String>,
    id: String,
    messages: Vec<ChatMessage>,
}

impl Saver {
    fn save(self, st: &Shared, c: &Completion) {
        let mut conversation = self.messages;
        conversation.push(ChatMessage::new("assistant", c.text.clone()));
        st.responses.put(self.tenant, self.id, conversation);
    }
}

/// The payload of one streamed event; `type` names the event.
#[derive(Serialize)]
struct StreamOut {
    #[serde(rename = "type")]
    kind: &'static str,
    sequence_number: u64,
    #[serde(flatten)]
    body: StreamBody,
}

#[derive(Serialize)]
#[serde(untagged)]
enum StreamBody {
    Response {
        response: ResponseObject,
    },
    Item {
        output_index: usize,
        item: OutputMessage,
    },
    Part {
        item_id: String,
        output_index: usize,
        content_index: usize,
        part: OutputText,
    },
    Delta {
        item_id: String,
        output_index: usize,
        content_index: usize,
        delta: String,
    },
    TextDone {
        item_id: String,
        output_index: usize,
        content_index: usize,
        text: String,
    },
    Error {
        message: String,
        code: u16,
    },
}

/// Numbers the events of one stream.
struct Sequencer(u64);

impl Sequencer {
    fn event(&mut self, kind: &'static str, body: StreamBody) -> Event {
        let out = StreamOut {
            kind,
            sequence_number: self.0,
            body,
        };
        self.0 += 1;
        Event::default()
            .event(kind)
            .data(serde_json::to_string(&out).unwrap_or_default())
    }
}

fn opening(seq: &mut Sequencer, ids: &ResponseIds) -> Vec<Event> {
    vec![
        seq.event(
            "response.created",
            StreamBody::Response {
                response: ids.object(None),
            },
        ),
        seq.event(
            "response.in_progress",
            StreamBody::Response {
                response: ids.object(None),
            },
        ),
        seq.event(
            "response.output_item.added",
            StreamBody::Item {
                output_index: 0,
                item: ids.item("in_progress", None),
            },
        ),
        seq.event(
            "response.content_part.added",
            StreamBody::Part {
                item_id: ids.msg_id.clone(),
                output_index: 0,
                content_index: 0,
                part: part(""),
            },
        ),
    ]
}

fn closing(seq: &mut Sequencer, ids: &ResponseIds, c: &Completion) -> Vec<Event> {
    let response = ids.object(Some(c));
    let last = match response.status {
        "incomplete" => "response.incomplete",
        "failed" => "response.failed",
        _ => "response.completed",
    };
    vec![
        seq.event(
            "response.output_text.done",
            StreamBody::TextDone {
                item_id: ids.msg_id.clone(),
                output_index: 0,
                content_index: 0,
                text: c.text.clone(),
            },
        ),
        seq.event(
            "response.content_part.done",
            StreamBody::Part {
                item_id: ids.msg_id.clone(),
                output_index: 0,
                content_index: 0,
                part: part(&c.text),
            },
        ),
        seq.event(
            "response.output_item.done",
            StreamBody::Item {
                output_index: 0,
                item: ids.item("completed", Some(&c.text)),
            },
        ),
        seq.event(last, StreamBody::Response { response }),
    ]
}

/// The streamed form: OpenAI's named events, ending with `response.completed` (or
/// `response.incomplete` / `response.failed`), or `error` if the engine failed; no `[DONE]`.
fn stream(st: Shared, job: jobs::Job, ids: ResponseIds, store: Option<Saver>) -> Response {
    let keep_alive = st.limits.sse_keep_alive;
    let mut seq = Sequencer(0);
    let head = opening(&mut seq, &ids);
    let state = (job, seq, ids, store, st, false);
    let rest = stream::unfold(
        state,
        |(mut job, mut seq, ids, mut store, st, done)| async move {
            if done {
                return None;
            }
            let events = match job.stream.next_event().await? {
                // Progress is not asked for here.
                StreamEvent::Delta(d) if d.text.is_empty() => Vec::new(),
                StreamEvent::Progress(_) => Vec::new(),
                StreamEvent::Delta(d) => vec![seq.event(
                    "response.output_text.delta",
                    StreamBody::Delta {
                        item_id: ids.msg_id.clone(),
                        output_index: 0,
                        content_index: 0,
                        delta: d.text,
                    },
                )],
                StreamEvent::Done(c) => {
                    st.metrics.observe(&c);
                    if let Some(saver) = store.take() {
                        saver.save(&st, &c);
                    }
                    let out = closing(&mut seq, &ids, &c);
                    return Some((stream::iter(out), (job, seq, ids, store, st, true)));
                }
                StreamEvent::Failed(e) => {
                    let e = ApiError::from(e);
                    let out = vec![seq.event(
                        "error",
                        StreamBody::Error {
                            message: e.message().to_string(),
                            code: e.status().as_u16(),
                        },
                    )];
                    return Some((stream::iter(out), (job, seq, ids, store, st, true)));
                }
            };
            Some((stream::iter(events), (job, seq, ids, store, st, false)))
        },
    )
    .flatten();
    let all = stream::iter(head).chain(rest).map(Ok::<_, Infallible>);
    Sse::new(all)
        .keep_alive(KeepAlive::new().interval(keep_alive))
        .into_response()
}
