//! Tool calling on `/v1/chat/completions`: `tools`, `tool_choice` and `parallel_tool_calls`.
//!
//! The tools reach the model in the Hermes format (the one Qwen, Hermes and many fine-tunes are
//! trained on), written into the system message, so every chat template carries them, also the
//! many (SmolLM2's among them) that have no tool syntax of their own. The model answers a call
//! as `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, which is parsed into the
//! response's `tool_calls`; with `tool_choice` `required` or a named function, a grammar makes
//! the output exactly such calls, with arguments that match the function's schema. Earlier
//! assistant calls and `tool` results in the conversation are rendered the same way.

use super::error::ApiError;
use super::openai_types::{FunctionCall, ToolCall};
use engine::{compact_json, GrammarSpec};
use serde::Deserialize;
use serde_json::{json, Value};

const OPEN: &str = "<tool_call>";
const CLOSE: &str = "</tool_call>";
/// Most tools in one request.
pub const MAX_TOOLS: usize = 128;

/// A function the model may call.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct FunctionDef {
    pub name: String,
    pub description: Option<String>,
    pub parameters: Option<Value>,
    /// OpenAI's strict mode: arguments always match the schema. Honoured where a grammar
    /// forces the calls (`required`, a named function); refused with `auto`.
    pub strict: Option<bool>,
}

/// One entry of `tools`.
#[derive(Deserialize, Clone, Debug)]
#[serde(deny_unknown_fields)]
pub struct ToolDef {
    #[serde(rename = "type")]
    pub kind: String,
    pub function: FunctionDef,
}

/// The tool fields of a chat request (flattened into it).
#[derive(Deserialize, Default)]
pub struct ToolFields {
    pub tools: Option<Vec<ToolDef>>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<bool>,
}

/// What `tool_choice` asks.
#[derive(Debug, Clone, PartialEq)]
pub enum Choice {
    /// The model decides; its text is parsed for calls.
    Auto,
    /// At least one call, forced by a grammar.
    Required,
    /// A call of this function, forced by a grammar.
    Named(String),
}

/// The tools of a request, checked.
#[derive(Debug, Clone)]
pub struct ToolSetup {
    functions: Vec<FunctionDef>,
    choice: Choice,
    parallel: bool,
}

fn bad(m: impl Into<String>, param: &'static str) -> ApiError {
    ApiError::bad(m).param(param)
}

impl ToolFields {
    /// The request's tool setup; `None` without tools or with `tool_choice: "none"` (then the
    /// model is not shown the tools, so it cannot call them).
    pub fn setup(&self) -> Result<Option<ToolSetup>, ApiError> {
        let tools = self.tools.as_deref().unwrap_or_default();
        let choice = match &self.tool_choice {
            None if tools.is_empty() => None,
            None => Some(Choice::Auto),
            Some(Value::String(s)) => match s.as_str() {
                "none" => None,
                "auto" => Some(Choice::Auto),
                "required" => Some(Choice::Required),
                other => {
                    return Err(bad(
                        format!("tool_choice {other:?} is not one of none, auto, required"),
                        "tool_choice",
                    ))
                }
            },
            Some(v) => Some(Choice::Named(named_choice(v)?)),
        };
        if self.parallel_tool_calls.is_some() && tools.is_empty() {
            return Err(bad(
                "parallel_tool_calls needs tools",
                "parallel_tool_calls",
            ));
        }
        let Some(choice) = choice else {
            return Ok(None);
        };
        if tools.is_empty() {
            return Err(bad("tool_choice needs tools", "tool_choice"));
        }
        if tools.len() > MAX_TOOLS {
            return Err(bad(format!("at most {MAX_TOOLS} tools"), "tools"));
        }
        let mut functions: Vec<FunctionDef> = Vec::with_capacity(tools.len());
        for t in tools {
            if t.kind != "function" {
                return Err(bad(
                    format!("tool type {:?} is not supported (function)", t.kind),
                    "tools",
                ));
            }
            check_function(&t.function)?;
            if functions.iter().any(|f| f.name == t.function.name) {
                return Err(bad(
                    format!("two tools are named {:?}", t.function.name),
                    "tools",
                ));
            }
            functions.push(t.function.clone());
        }
        if choice == Choice::Auto && functions.iter().any(|f| f.strict == Some(true)) {
            return Err(bad(
                "strict functions need tool_choice \"required\" or a named function \
                 (with \"auto\" the model's calls are parsed, not constrained)",
                "tools",
            ));
        }
        if let Choice::Named(n) = &choice {
            if !functions.iter().any(|f| &f.name == n) {
                return Err(bad(
                    format!("tool_choice names {n:?}, which is not among the tools"),
                    "tool_choice",
                ));
            }
        }
        Ok(Some(ToolSetup {
            functions,
            choice,
            parallel: self.parallel_tool_calls.unwrap_or(true),
        }))
    }
}

/// `{"type": "function", "function": {"name": ...}}`.
fn named_choice(v: &Value) -> Result<String, ApiError> {
    let name = (v.get("type").and_then(Value::as_str) == Some("function"))
        .then(|| v.pointer("/function/name").and_then(Value::as_str))
        .flatten();
    name.map(str::to_string).ok_or_else(|| {
        bad(
            "tool_choice must be none, auto, required or {\"type\": \"function\", \"function\": {\"name\": ...}}",
            "tool_choice",
        )
    })
}

fn check_function(f: &FunctionDef) -> Result<(), ApiError> {
    let ok_name = !f.name.is_empty()
        && f.name.len() <= 64
        && f.name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok_name {
        return Err(bad(
            format!(
                "function name {:?} must be 1-64 letters, digits, _ or -",
                f.name
            ),
            "tools",
        ));
    }
    match &f.parameters {
        None | Some(Value::Object(_)) => Ok(()),
        Some(_) => Err(bad(
            format!("parameters of {:?} must be a JSON schema object", f.name),
            "tools",
        )),
    }
}

impl ToolSetup {
    fn parameters(f: &FunctionDef) -> Value {
        f.parameters
            .clone()
            .unwrap_or_else(|| json!({"type": "object", "properties": {}}))
    }

    /// The system-prompt text that shows the model its tools and how to call them.
    pub fn system_text(&self) -> String {
        let mut s = String::from(
            "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n\
             You are provided with function signatures within <tools></tools> XML tags:\n<tools>",
        );
        for f in &self.functions {
            let mut def = json!({"name": f.name, "parameters": Self::parameters(f)});
            if let Some(d) = &f.description {
                def["description"] = json!(d);
            }
            s.push('\n');
            s.push_str(&json!({"type": "function", "function": def}).to_string());
        }
        s.push_str(
            "\n</tools>\n\nFor each function call, return a json object with function name and \
             arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n\
             {\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call>",
        );
        s
    }

    /// The most calls one answer may make: one when `parallel_tool_calls` is false.
    pub fn max_calls(&self) -> usize {
        if self.parallel {
            usize::MAX
        } else {
            1
        }
    }

    /// The grammar that forces calls (`required`, or a named function); `None` for `auto`.
    pub fn grammar(&self) -> Option<GrammarSpec> {
        let callable: Vec<&FunctionDef> = match &self.choice {
            Choice::Auto => return None,
            Choice::Required => self.functions.iter().collect(),
            Choice::Named(n) => self.functions.iter().filter(|f| &f.name == n).collect(),
        };
        let variants: Vec<Value> = callable
            .iter()
            .map(|f| {
                json!({
                    "type": "object",
                    "properties": {"name": {"const": f.name}, "arguments": Self::parameters(f)},
                    "required": ["name", "arguments"],
                    "additionalProperties": false
                })
            })
            .collect();
        let schema = compact_json(json!({"anyOf": variants}));
        let call = format!(
            "call: {} %json {} {}",
            serde_json::to_string(&format!("{OPEN}\n")).unwrap_or_default(),
            schema,
            serde_json::to_string(&format!("\n{CLOSE}")).unwrap_or_default(),
        );
        let start = if self.parallel && self.choice == Choice::Required {
            "start: call (\"\\n\" call)*"
        } else {
            "start: call"
        };
        Some(GrammarSpec::Lark(format!("{start}\n{call}\n")))
    }
}

/// An assistant message's earlier calls, in the form the model writes them.
pub fn render_calls(calls: &[ToolCall]) -> String {
    calls
        .iter()
        .map(|c| {
            let args: Value = serde_json::from_str(&c.function.arguments)
                .unwrap_or_else(|_| Value::String(c.function.arguments.clone()));
            format!(
                "{OPEN}\n{}\n{CLOSE}",
                json!({"name": c.function.name, "arguments": args})
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A tool's result, in the form the model reads it.
pub fn render_result(content: &str) -> String {
    format!("<tool_response>\n{content}\n</tool_response>")
}

/// Splits a model's text into its content and at most `max` calls. A block that does not
/// parse as a call (`name` and object `arguments`), and any past `max`, stays in the content.
pub fn parse_calls(
    text: &str,
    max: usize,
    ids: &mut impl FnMut() -> String,
) -> (String, Vec<ToolCall>) {
    let mut content = String::new();
    let mut calls = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(OPEN).filter(|_| calls.len() < max) {
        let after = &rest[at + OPEN.len()..];
        let Some(end) = after.find(CLOSE) else {
            break;
        };
        match call_of(&after[..end], ids) {
            Some(call) => {
                content.push_str(&rest[..at]);
                calls.push(call);
            }
            None => content.push_str(&rest[..at + OPEN.len() + end + CLOSE.len()]),
        }
        rest = &after[end + CLOSE.len()..];
    }
    content.push_str(rest);
    let content = if calls.is_empty() {
        content
    } else {
        content.trim().to_string()
    };
    (content, calls)
}

fn call_of(body: &str, ids: &mut impl FnMut() -> String) -> Option<ToolCall> {
    let v: Value = serde_json::from_str(body.trim()).ok()?;
    let name = v.get("name")?.as_str()?.to_string();
    let args = v.get("arguments").or_else(|| v.get("parameters"))?;
    if !args.is_object() {
        return None;
    }
    Some(ToolCall {
        id: ids(),
        kind: "function".into(),
        function: FunctionCall {
            name,
            arguments: args.to_string(),
        },
    })
}

/// Streams a choice's text while holding back what may be a tool call: text before a
/// `<tool_call>` goes out as it comes; from there on it is kept and parsed at the end.
#[derive(Default)]
pub struct Splitter {
    pending: String,
    in_calls: bool,
}

impl Splitter {
    /// The text that can go out now.
    pub fn push(&mut self, text: &str) -> String {
        self.pending.push_str(text);
        if self.in_calls {
            return String::new();
        }
        if let Some(at) = self.pending.find(OPEN) {
            self.in_calls = true;
            let out = self.pending[..at].to_string();
            self.pending.drain(..at);
            return out;
        }
        // Hold back a tail that could still become `<tool_call>`.
        let keep = (1..OPEN.len().min(self.pending.len() + 1))
            .rev()
            .find(|&k| {
                self.pending.is_char_boundary(self.pending.len() - k)
                    && OPEN.starts_with(&self.pending[self.pending.len() - k..])
            })
            .unwrap_or(0);
        let cut = self.pending.len() - keep;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        out
    }

    /// At the end: the held-back text's content and at most `max` calls.
    pub fn finish(
        &mut self,
        max: usize,
        ids: &mut impl FnMut() -> String,
    ) -> (String, Vec<ToolCall>) {
        parse_calls(&std::mem::take(&mut self.pending), max, ids)
    }
}

#[cfg(test)]
mod tests;
