//! Tool calling against the real server and model: forced calls parse and match their schema,
//! streamed or not; a conversation carrying earlier calls and their results renders; bad tool
//! requests are 400s naming the field.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};

fn tools() -> Value {
    json!([
        {"type": "function", "function": {"name": "get_weather", "description": "Current weather in a city",
            "parameters": {"type": "object", "properties": {
                "city": {"enum": ["Paris", "Tokyo", "Lima"]},
                "unit": {"enum": ["celsius", "fahrenheit"]}},
                "required": ["city", "unit"], "additionalProperties": false}}},
        {"type": "function", "function": {"name": "get_time", "description": "Current time in a timezone",
            "parameters": {"type": "object", "properties": {"tz": {"type": "string", "maxLength": 20}},
                "required": ["tz"], "additionalProperties": false}}}
    ])
}

fn ask(extra: Value) -> Value {
    let mut body = json!({
        "messages": [{"role": "user", "content": "What is the weather in Paris?"}],
        "tools": tools(), "max_tokens": 80
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn check_call(call: &Value) -> String {
    assert_eq!(call["type"], "function", "{call}");
    assert!(call["id"].as_str().unwrap().starts_with("call"), "{call}");
    let name = call["function"]["name"].as_str().unwrap().to_string();
    let args: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    match name.as_str() {
        "get_weather" => {
            assert!(["Paris", "Tokyo", "Lima"].contains(&args["city"].as_str().unwrap()));
            assert!(["celsius", "fahrenheit"].contains(&args["unit"].as_str().unwrap()));
            assert_eq!(args.as_object().unwrap().len(), 2);
        }
        "get_time" => assert!(args["tz"].as_str().unwrap().chars().count() <= 20),
        other => panic!("unknown function {other}"),
    }
    name
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn required_and_named_tool_choices_give_calls_that_match_their_schema() {
    let s = server();
    let (st, v) = post(
        &s.base,
        "/v1/chat/completions",
        &ask(
            json!({"tool_choice": "required", "parallel_tool_calls": false, "n": 4,
            "temperature": 1.0, "seed": 3}),
        )
        .to_string(),
    );
    assert_eq!(st, 200, "{v}");
    for c in v["choices"].as_array().unwrap() {
        assert_eq!(c["finish_reason"], "tool_calls", "{c}");
        assert!(c["message"]["content"].is_null(), "{c}");
        let calls = c["message"]["tool_calls"].as_array().unwrap();
        assert_eq!(calls.len(), 1, "{c}");
        check_call(&calls[0]);
    }
    // Parallel calls: as many as the model makes (it may go on until max_tokens cuts it).
    let (st, v) = post(
        &s.base,
        "/v1/chat/completions",
        &ask(json!({"tool_choice": "required", "temperature": 0})).to_string(),
    );
    assert_eq!(st, 200, "{v}");
    let c = &v["choices"][0];
    assert!(
        ["tool_calls", "length"].contains(&c["finish_reason"].as_str().unwrap()),
        "{c}"
    );
    let calls = c["message"]["tool_calls"].as_array().unwrap();
    calls.iter().for_each(|call| {
        check_call(call);
    });
    let named = json!({"tool_choice": {"type": "function", "function": {"name": "get_time"}},
        "parallel_tool_calls": false, "temperature": 0});
    let (st, v) = post(&s.base, "/v1/chat/completions", &ask(named).to_string());
    assert_eq!(st, 200, "{v}");
    let calls = v["choices"][0]["message"]["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(check_call(&calls[0]), "get_time");
    // Auto: the model decides; whatever it says is a valid response.
    let (st, v) = post(&s.base, "/v1/chat/completions", &ask(json!({})).to_string());
    assert_eq!(st, 200, "{v}");
    let m = &v["choices"][0]["message"];
    assert!(
        m["content"].is_string() || m["tool_calls"].is_array(),
        "{v}"
    );
    wait_idle_and_check_accounting(&s.base);
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn a_streamed_forced_call_arrives_as_a_tool_call_delta() {
    let s = server();
    let mut body =
        ask(json!({"tool_choice": "required", "parallel_tool_calls": false, "temperature": 0}));
    body["stream"] = json!(true);
    let chunks = stream_chunks(&s.base, "/v1/chat/completions", &body);
    let calls: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["tool_calls"].as_array())
        .flatten()
        .collect();
    assert!(!calls.is_empty(), "{chunks:?}");
    for (i, call) in calls.iter().enumerate() {
        assert_eq!(call["index"], i);
        check_call(call);
    }
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "tool_calls", "{last}");
    // No call markup leaks into streamed content.
    let content: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert!(!content.contains("<tool_call>"), "{content:?}");
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn a_conversation_with_earlier_calls_and_results_continues() {
    let s = server();
    let body = json!({
        "tools": tools(), "max_tokens": 16, "temperature": 0,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call-1", "type": "function",
                "function": {"name": "get_weather", "arguments": "{\"city\": \"Paris\", \"unit\": \"celsius\"}"}}]},
            {"role": "tool", "tool_call_id": "call-1", "content": "{\"temperature\": 21}"}
        ]
    });
    let (st, v) = post(&s.base, "/v1/chat/completions", &body.to_string());
    assert_eq!(st, 200, "{v}");
    assert!(
        v["usage"]["prompt_tokens"].as_u64().unwrap() > 100,
        "the tools are in the prompt"
    );
    // The same without tools is far shorter: the descriptions were really shown.
    let mut plain = body.clone();
    plain.as_object_mut().unwrap().remove("tools");
    let (st, w) = post(&s.base, "/v1/chat/completions", &plain.to_string());
    assert_eq!(st, 200, "{w}");
    assert!(
        w["usage"]["prompt_tokens"].as_u64().unwrap() + 100
            < v["usage"]["prompt_tokens"].as_u64().unwrap()
    );
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn bad_tool_requests_are_400s_naming_the_field() {
    let s = server();
    for (body, param) in [
        (
            ask(json!({"tool_choice": {"type": "function", "function": {"name": "nope"}}})),
            "tool_choice",
        ),
        (
            ask(json!({"tool_choice": "required", "response_format": {"type": "json_object"}})),
            "tool_choice",
        ),
        (ask(json!({"tool_choice": "always"})), "tool_choice"),
        (
            json!({"messages": [{"role": "user", "content": "x", "tool_calls": [{"id": "1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]}]}),
            "messages",
        ),
        (
            json!({"messages": [{"role": "user", "content": "x", "tool_call_id": "1"}]}),
            "messages",
        ),
    ] {
        let (st, v) = post(&s.base, "/v1/chat/completions", &body.to_string());
        assert_eq!(st, 400, "{body}: {v}");
        assert_eq!(v["error"]["param"], param, "{v}");
    }
}
