//! Request and response bodies of the OpenAI-compatible routes.

use super::llamacpp::extras::ExtraFields;
use super::params::{OpenAiSampling, Unknown};
use super::structured::StructuredFields;
use super::tools::ToolFields;
use serde::{Deserialize, Serialize};

/// `prompt` of `/v1/completions`: text, texts, token ids or lists of token ids.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum PromptInput {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<i64>),
    TokenLists(Vec<Vec<i64>>),
}

/// `/v1/completions` request.
#[derive(Deserialize)]
pub struct CompletionRequest {
    pub model: Option<String>,
    pub prompt: PromptInput,
    pub logprobs: Option<u32>,
    pub echo: Option<bool>,
    #[serde(flatten)]
    pub sampling: OpenAiSampling,
    #[serde(flatten)]
    pub structured: StructuredFields,
    #[serde(flatten)]
    pub extras: ExtraFields,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// A chat message's content: text or a list of parts.
#[derive(Deserialize)]
#[serde(untagged)]
pub enum MessageContent {
    Text(String),
    Parts(Vec<ContentPart>),
}

/// One part of a chat message's content.
#[derive(Deserialize)]
pub struct ContentPart {
    #[serde(rename = "type")]
    pub kind: String,
    pub text: Option<String>,
}

/// A chat message of a request.
#[derive(Deserialize)]
pub struct RequestMessage {
    pub role: String,
    pub content: Option<MessageContent>,
    /// An assistant message's calls.
    pub tool_calls: Option<Vec<ToolCall>>,
    /// A tool message's call (accepted; the result is rendered in the conversation's order).
    pub tool_call_id: Option<String>,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// `/v1/chat/completions` request.
#[derive(Deserialize)]
pub struct ChatRequest {
    pub model: Option<String>,
    pub messages: Vec<RequestMessage>,
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<u32>,
    /// Continue the final (assistant) message instead of starting a new turn.
    pub continue_final_message: Option<bool>,
    #[serde(flatten)]
    pub sampling: OpenAiSampling,
    #[serde(flatten)]
    pub structured: StructuredFields,
    #[serde(flatten)]
    pub tools: ToolFields,
    #[serde(flatten)]
    pub extras: ExtraFields,
    #[serde(flatten)]
    pub unknown: Unknown,
}

/// Token counts of a response.
#[derive(Serialize, Debug, Clone, Copy, Default)]
pub struct UsageBody {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
    pub prompt_tokens_details: PromptDetails,
}

/// Where prompt tokens came from.
#[derive(Serialize, Debug, Clone, Copy, Default)]
pub struct PromptDetails {
    pub cached_tokens: usize,
}

impl UsageBody {
    pub fn new(prompt: usize, completion: usize, cached: usize) -> Self {
        UsageBody {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            prompt_tokens_details: PromptDetails {
                cached_tokens: cached,
            },
        }
    }
}

/// Logprobs of a completions choice.
#[derive(Serialize, Debug, Clone)]
pub struct CompletionLogprobs {
    pub tokens: Vec<String>,
    /// `null` for the first prompt token (with `echo`), which has no logprob.
    pub token_logprobs: Vec<Option<f32>>,
    /// Per position, the most likely tokens' texts and logprobs (when `logprobs` > 0); `null`
    /// for the first prompt token.
    pub top_logprobs: Option<Vec<Option<std::collections::BTreeMap<String, f32>>>>,
}

/// One of the most likely tokens at a chat position.
#[derive(Serialize, Debug, Clone)]
pub struct TopLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
}

/// One token's logprob in a chat choice.
#[derive(Serialize, Debug, Clone)]
pub struct ChatTokenLogprob {
    pub token: String,
    pub logprob: f32,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

/// Logprobs of a chat choice.
#[derive(Serialize, Debug, Clone)]
pub struct ChatLogprobs {
    pub content: Vec<ChatTokenLogprob>,
}

/// A completions choice (whole or a streamed piece).
#[derive(Serialize, Debug)]
pub struct CompletionChoice {
    pub index: usize,
    pub text: String,
    pub logprobs: Option<CompletionLogprobs>,
    pub finish_reason: Option<&'static str>,
}

/// An assistant message of a chat response: its text (`null` when it only calls tools) and
/// its tool calls.
#[derive(Serialize, Debug)]
pub struct AssistantMessage {
    pub role: &'static str,
    pub content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
}

/// A call of a function, as the model made it (or a client sends back in the conversation).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ToolCall {
    #[serde(default)]
    pub id: String,
    #[serde(rename = "type", default = "function_kind")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_kind() -> String {
    "function".into()
}

/// The function and its arguments (a string of JSON, as OpenAI sends it).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FunctionCall {
    pub name: String,
    pub arguments: String,
}

/// A tool call in a streamed delta.
#[derive(Serialize, Debug)]
pub struct StreamToolCall {
    pub index: usize,
    #[serde(flatten)]
    pub call: ToolCall,
}

/// A chat choice.
#[derive(Serialize, Debug)]
pub struct ChatChoice {
    pub index: usize,
    pub message: AssistantMessage,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<&'static str>,
}

/// The new part of a streamed chat message.
#[derive(Serialize, Debug, Default)]
pub struct ChatDelta {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub role: Option<&'static str>,
    /// Absent, `null` (the role-only first chunk, as SGLang and llama.cpp send it) or text.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<Option<String>>,
    /// Always `null`: radixserve runs no reasoning parser (SGLang sends the key in every
    /// delta, and its clients read it).
    pub reasoning_content: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<StreamToolCall>>,
}

/// A streamed chat choice.
#[derive(Serialize, Debug)]
pub struct ChatChunkChoice {
    pub index: usize,
    pub delta: ChatDelta,
    pub logprobs: Option<ChatLogprobs>,
    pub finish_reason: Option<&'static str>,
}

/// A response or streamed chunk of either route: `choices` is one of the choice types above.
#[derive(Serialize, Debug)]
pub struct Envelope<C> {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    /// An opaque build identifier (llama.cpp's clients expect its `b...` build-tag form).
    pub system_fingerprint: &'static str,
    pub choices: Vec<C>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<UsageBody>,
}

/// `/v1/models` entry.
#[derive(Serialize, Debug)]
pub struct ModelCard {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub owned_by: &'static str,
    /// The model the id serves (SGLang and vLLM name it here too).
    pub root: String,
    pub max_model_len: usize,
}

/// `/v1/models` response.
#[derive(Serialize, Debug)]
pub struct ModelList {
    pub object: &'static str,
    pub data: Vec<ModelCard>,
}
