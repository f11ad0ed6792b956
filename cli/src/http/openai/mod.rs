//! The OpenAI-compatible routes: `/v1/completions`, `/v1/chat/completions`, `/v1/models`.
//! Requests and whole responses here; streamed responses in [`stream`].

mod stream;

use super::auth::Caller;
use super::error::ApiError;
use super::jobs::{self, Finished, UsageTally};
use super::layers::JsonBody;
use super::llamacpp::extras::{self, Extras};
use super::logprobs;
use super::openai_types::*;
use super::params::{self, DefaultMax, Params};
use super::tools;
use super::{now_secs, response_id, Shared};
use axum::extract::{Extension, State};
use axum::response::Response;
use engine::MAX_TOP_LOGPROBS;
use engine::{ChatMessage, Completion, FinishReason, Input};
use stream::stream;

/// Largest default `max_tokens` of a chat request (the pool and context may leave less).
const CHAT_DEFAULT_MAX_TOKENS: usize = 1024;
/// OpenAI's default `max_tokens` for completions.
const COMPLETIONS_DEFAULT_MAX_TOKENS: usize = 16;

/// Checks a request's `model` against the served one (any name in lenient mode).
pub fn check_model(st: &Shared, model: Option<&str>) -> Result<(), ApiError> {
    match model {
        _ if st.lenient_model_name => Ok(()),
        None | Some("") | Some("default") => Ok(()),
        Some(m) if m == st.engine.info().model_name => Ok(()),
        Some(m) => Err(ApiError::not_found(format!(
            "the model {m:?} does not exist; this server serves {:?}",
            st.engine.info().model_name
        ))
        .param("model")),
    }
}

/// OpenAI's name of a finish reason.
pub fn openai_finish(reason: &FinishReason) -> &'static str {
    match reason {
        FinishReason::Stop { .. } => "stop",
        FinishReason::Length { .. } => "length",
        FinishReason::Abort { .. } => "abort",
    }
}

/// The two response shapes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Api {
    Completions,
    Chat,
}

/// What every response and chunk of one request shares.
#[derive(Clone)]
struct Header {
    api: Api,
    id: String,
    created: u64,
    model: String,
    logprobs: bool,
    /// Completions `logprobs` N > 0: alternatives per position.
    top: bool,
    /// Completions `echo` with `logprobs`: the prompt's logprobs lead each choice's.
    score_prompt: bool,
    /// Chat with tools: the text is parsed for at most this many tool calls.
    tools: Option<usize>,
    /// Completions with `echo`: each prompt's text, put before its choices' text.
    echo: Vec<String>,
    /// llama-server's `timings_per_token` and `return_progress`.
    extras: Extras,
    /// Non-streamed responses carry `__verbose` (`--verbose-responses`).
    verbose: bool,
}

impl Header {
    fn new(st: &Shared, api: Api, logprobs: bool) -> Self {
        Header {
            api,
            id: response_id(if api == Api::Chat {
                "chatcmpl-"
            } else {
                "cmpl-"
            }),
            created: now_secs(),
            model: st.engine.info().model_name.clone(),
            logprobs,
            top: false,
            score_prompt: false,
            tools: None,
            echo: Vec::new(),
            extras: Extras::default(),
            verbose: st.verbose_responses,
        }
    }

    /// The echoed prompt of choice `prompt`'s text (empty without `echo`).
    fn echoed(&self, prompt: usize) -> &str {
        self.echo.get(prompt).map_or("", String::as_str)
    }

    fn envelope<C>(&self, object: &'static str, choices: Vec<C>) -> Envelope<C> {
        Envelope {
            id: self.id.clone(),
            object,
            created: self.created,
            model: self.model.clone(),
            system_fingerprint: SYSTEM_FINGERPRINT,
            choices,
            usage: None,
        }
    }
}

/// `system_fingerprint` of every completion: the build.
const SYSTEM_FINGERPRINT: &str = concat!("b", env!("CARGO_PKG_VERSION"), "-radixserve");

/// `POST /v1/completions`.
pub async fn completions(
    State(st): State<Shared>,
    Extension(caller): Extension<Caller>,
    JsonBody(b): JsonBody<CompletionRequest>,
) -> Result<Response, ApiError> {
    params::reject_unknown(&b.unknown, "/v1/completions")?;
    check_model(&st, b.model.as_deref())?;
    let echo = b.echo.unwrap_or(false);
    // With `echo`, `logprobs` covers the prompt too: its tokens are scored (input logprobs).
    let score_prompt = echo && b.logprobs.is_some();
    // `logprobs: N` returns the chosen tokens' logprobs and, for N > 0, the N most likely
    // tokens at each position.
    let top = b.logprobs.unwrap_or(0) as usize;
    if top > MAX_TOP_LOGPROBS {
        return Err(
            ApiError::bad(format!("logprobs must be at most {MAX_TOP_LOGPROBS}")).param("logprobs"),
        );
    }
    let want_lp = b.logprobs.is_some();
    let params = Params::from_openai(
        &st.defaults.apply(b.sampling.clone()),
        DefaultMax::Fixed(COMPLETIONS_DEFAULT_MAX_TOKENS),
        want_lp,
    )?
    .with_alternatives(top, Vec::new())
    .with_grammar(b.structured.spec()?)
    .with_logprob_start(score_prompt.then_some(0));
    let ext = b.extras.check(b.sampling.stream.unwrap_or(false))?;
    let params = params.with_progress(ext.engine_progress());
    let vocab = st.engine.info().vocab_size;
    let inputs: Vec<Input> = match b.prompt {
        PromptInput::Text(t) => vec![Input::Text(t)],
        PromptInput::Texts(v) => v.into_iter().map(Input::Text).collect(),
        PromptInput::Tokens(ids) => vec![Input::Tokens(params::token_ids(&ids, vocab)?)],
        PromptInput::TokenLists(l) => l
            .iter()
            .map(|ids| params::token_ids(ids, vocab).map(Input::Tokens))
            .collect::<Result<_, _>>()?,
    };
    if inputs.is_empty() {
        return Err(ApiError::bad("prompt must not be empty").param("prompt"));
    }
    let mut header = Header::new(&st, Api::Completions, want_lp);
    header.extras = ext;
    header.top = top > 0;
    header.score_prompt = score_prompt;
    if echo {
        header.echo = inputs
            .iter()
            .map(|input| match input {
                Input::Text(t) => Ok(t.clone()),
                Input::Tokens(ids) => st
                    .engine
                    .tokenizer()
                    .decode(ids, false)
                    .map_err(|e| ApiError::bad(e.to_string())),
                Input::Chat(_) | Input::ChatContinued(_) => Ok(String::new()),
            })
            .collect::<Result<_, _>>()?;
    }
    run(st, header, &b.sampling, &params, inputs, caller).await
}

/// The chat messages of a request, roles and content checked.
pub fn chat_messages(messages: Vec<RequestMessage>) -> Result<Vec<ChatMessage>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::bad("messages must not be empty").param("messages"));
    }
    messages
        .into_iter()
        .map(|m| {
            params::reject_unknown(&m.unknown, "a message")?;
            let role =
                params::chat_role(m.role, &["system", "user", "assistant", "tool"], "messages")?;
            let mut content = match m.content {
                None => String::new(),
                Some(MessageContent::Text(t)) => t,
                Some(MessageContent::Parts(parts)) => {
                    params::join_text_parts(parts, &["text"], "messages")?
                }
            };
            if let Some(calls) = m.tool_calls.filter(|c| !c.is_empty()) {
                if role != "assistant" {
                    return Err(
                        ApiError::bad("only assistant messages carry tool_calls").param("messages")
                    );
                }
                if !content.is_empty() {
                    content.push('\n');
                }
                content.push_str(&tools::render_calls(&calls));
            }
            if m.tool_call_id.is_some() && role != "tool" {
                return Err(
                    ApiError::bad("only tool messages carry tool_call_id").param("messages")
                );
            }
            // Tool results are read as the user's turn, in the Hermes format.
            if role == "tool" {
                return Ok(ChatMessage::new("user", tools::render_result(&content)));
            }
            Ok(ChatMessage::new(role, content))
        })
        .collect()
}

/// `POST /v1/chat/completions`.
pub async fn chat_completions(
    State(st): State<Shared>,
    Extension(caller): Extension<Caller>,
    JsonBody(b): JsonBody<ChatRequest>,
) -> Result<Response, ApiError> {
    params::reject_unknown(&b.unknown, "/v1/chat/completions")?;
    check_model(&st, b.model.as_deref())?;
    let mut messages = chat_messages(b.messages)?;
    let tools = b.tools.setup()?;
    let mut grammar = b.structured.spec()?;
    if let Some(t) = &tools {
        show_tools(&mut messages, t);
        if let Some(g) = t.grammar() {
            if grammar.is_some() {
                return Err(ApiError::bad(
                    "tool_choice required or a named function constrains the output; \
                     it cannot be combined with response_format or another constraint",
                )
                .param("tool_choice"));
            }
            grammar = Some(g);
        }
    }
    let want_lp = b.logprobs.unwrap_or(false);
    let top = b.top_logprobs.unwrap_or(0) as usize;
    if top > 0 && !want_lp {
        return Err(ApiError::bad("top_logprobs needs logprobs: true").param("top_logprobs"));
    }
    if top > MAX_TOP_LOGPROBS {
        return Err(ApiError::bad(format!(
            "top_logprobs must be between 0 and {MAX_TOP_LOGPROBS}"
        ))
        .param("top_logprobs"));
    }
    let params = Params::from_openai(
        &st.defaults.apply(b.sampling.clone()),
        DefaultMax::Room(CHAT_DEFAULT_MAX_TOKENS),
        want_lp,
    )?
    .with_alternatives(top, Vec::new())
    .with_grammar(grammar);
    let ext = b.extras.check(b.sampling.stream.unwrap_or(false))?;
    let params = params.with_progress(ext.engine_progress());
    let mut header = Header::new(&st, Api::Chat, want_lp);
    header.extras = ext;
    header.tools = tools.as_ref().map(tools::ToolSetup::max_calls);
    let input = if b.continue_final_message.unwrap_or(false) {
        if messages.last().is_none_or(|m| m.role != "assistant") {
            return Err(ApiError::bad(
                "continue_final_message needs the last message to be the assistant's",
            )
            .param("continue_final_message"));
        }
        Input::ChatContinued(messages)
    } else {
        Input::Chat(messages)
    };
    run(st, header, &b.sampling, &params, vec![input], caller).await
}

/// Puts the tools' description at the end of the system message (one is added if there is
/// none).
fn show_tools(messages: &mut Vec<ChatMessage>, tools: &tools::ToolSetup) {
    let text = tools.system_text();
    match messages.first_mut() {
        Some(m) if m.role == "system" => {
            m.content.push_str("\n\n");
            m.content.push_str(&text);
        }
        _ => messages.insert(0, ChatMessage::new("system", text)),
    }
}

async fn run(
    st: Shared,
    header: Header,
    sampling: &params::OpenAiSampling,
    params: &Params,
    inputs: Vec<Input>,
    caller: Caller,
) -> Result<Response, ApiError> {
    let n = sampling.n()?;
    params::check_sequences(inputs.len(), n)?;
    let ns = params::namespace(caller.tenant, sampling.cache_salt.clone())?;
    let include_usage = sampling.include_usage()?;
    let streamed = sampling.stream.unwrap_or(false);
    let verbose = (header.verbose && !streamed).then(|| inputs.clone());
    let jobs = jobs::submit(&st.engine, params, inputs, n, &ns).await?;
    st.metrics.request_started();
    if streamed {
        return Ok(stream(st, header, jobs, include_usage));
    }
    let finished = jobs::complete_all(jobs).await?;
    let mut extra = serde_json::Map::new();
    if header.extras.timings {
        if let Some(f) = finished.first() {
            extra.insert("timings".into(), extras::timings_of(&f.completion));
        }
    }
    if let (Some(inputs), Some(f)) = (verbose, finished.first()) {
        let ids = jobs::tokenize_all(&st.engine, vec![inputs[f.prompt].clone()]).await?;
        let prompt = ids
            .first()
            .map(|ids| st.engine.tokenizer().decode(ids, false))
            .transpose()
            .map_err(|e| ApiError::internal(e.to_string()))?
            .unwrap_or_default();
        let v = extras::verbose(&header.model, &prompt, &f.completion);
        extra.insert("__verbose".into(), v);
    }
    Ok(whole(&st, &header, finished, extra))
}

fn tokens_of(c: &Completion) -> logprobs::Tokens<'_> {
    logprobs::Tokens {
        ids: &c.token_ids,
        logprobs: &c.logprobs,
        alternatives: &c.alternatives,
    }
}

/// The non-streamed response, with `extra` fields (llama-server's `timings`, `__verbose`)
/// beside OpenAI's.
fn whole(
    st: &Shared,
    h: &Header,
    finished: Vec<Finished>,
    extra: serde_json::Map<String, serde_json::Value>,
) -> Response {
    let mut tally = UsageTally::default();
    for f in &finished {
        st.metrics.observe(&f.completion);
        tally.add(f.prompt, &f.completion);
    }
    let (p, c, cached) = tally.totals();
    let usage = Some(UsageBody::new(p, c, cached));
    match h.api {
        Api::Completions => {
            let choices = finished
                .into_iter()
                .map(|f| CompletionChoice {
                    index: f.index,
                    logprobs: h.logprobs.then(|| {
                        let t = tokens_of(&f.completion);
                        if f.completion.input_logprobs.is_empty() {
                            logprobs::completion(&st.engine, &t)
                        } else {
                            logprobs::completion_echoed(
                                &st.engine,
                                &f.completion.input_logprobs,
                                &t,
                                h.top,
                            )
                        }
                    }),
                    finish_reason: Some(openai_finish(&f.completion.finish_reason)),
                    text: format!("{}{}", h.echoed(f.prompt), f.completion.text),
                })
                .collect();
            extras::json_with(
                Envelope {
                    usage,
                    ..h.envelope("text_completion", choices)
                },
                extra,
            )
        }
        Api::Chat => {
            let choices = finished
                .into_iter()
                .map(|f| {
                    let mut finish = openai_finish(&f.completion.finish_reason);
                    let (content, calls) = match h.tools {
                        Some(max) => tools::parse_calls(&f.completion.text, max, &mut || {
                            response_id("call_")
                        }),
                        None => (f.completion.text.clone(), Vec::new()),
                    };
                    if !calls.is_empty() && finish == "stop" {
                        finish = "tool_calls";
                    }
                    ChatChoice {
                        index: f.index,
                        logprobs: h
                            .logprobs
                            .then(|| logprobs::chat(&st.engine, &tokens_of(&f.completion))),
                        finish_reason: Some(finish),
                        message: AssistantMessage {
                            role: "assistant",
                            content: (calls.is_empty() || !content.is_empty()).then_some(content),
                            tool_calls: (!calls.is_empty()).then_some(calls),
                        },
                    }
                })
                .collect();
            extras::json_with(
                Envelope {
                    usage,
                    ..h.envelope("chat.completion", choices)
                },
                extra,
            )
        }
    }
}
