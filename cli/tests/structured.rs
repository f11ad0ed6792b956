//! Structured outputs against the real server and model: whatever the model would say, the text
//! matches the schema, regex, grammar or choice list; bad specs are 400s naming the problem;
//! requests without a constraint are untouched beside constrained ones; the cache still hits.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};

fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "minLength": 1, "maxLength": 12, "pattern": "^[A-Za-z ]+$"},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "city": {"enum": ["Paris", "Lagos", "Lima", "Osaka"]},
            "pets": {"type": "array", "items": {"type": "string", "maxLength": 8}, "maxItems": 3}
        },
        "required": ["name", "age", "city"],
        "additionalProperties": false
    })
}

/// Checks a text against `person_schema` by hand, so the test depends on no validator.
fn check_person(text: &str) {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    let o = v
        .as_object()
        .unwrap_or_else(|| panic!("not an object: {text}"));
    let name = o["name"].as_str().unwrap();
    assert!((1..=12).contains(&name.chars().count()), "{text}");
    assert!(
        name.chars().all(|c| c.is_ascii_alphabetic() || c == ' '),
        "{text}"
    );
    let age = o["age"].as_i64().unwrap_or_else(|| panic!("age: {text}"));
    assert!((0..=120).contains(&age), "{text}");
    assert!(["Paris", "Lagos", "Lima", "Osaka"].contains(&o["city"].as_str().unwrap()));
    if let Some(p) = o.get("pets") {
        let p = p.as_array().unwrap();
        assert!(p.len() <= 3 && p.iter().all(|x| x.as_str().unwrap().chars().count() <= 8));
    }
    assert!(o
        .keys()
        .all(|k| ["name", "age", "city", "pets"].contains(&k.as_str())));
}

fn chat(content: &str, extra: Value) -> Value {
    let mut body = json!({"messages": [{"role": "user", "content": content}], "max_tokens": 96});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

fn texts(v: &Value) -> Vec<String> {
    v["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            c["message"]["content"]
                .as_str()
                .or(c["text"].as_str())
                .unwrap()
                .to_string()
        })
        .collect()
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn fifty_sampled_json_schema_outputs_are_all_valid() {
    let s = server();
    let mut outputs = Vec::new();
    // Sampled at temperature 1 with different seeds, through both spellings of a schema.
    for (i, format) in [
        json!({"response_format": {"type": "json_schema", "json_schema": {"name": "person", "schema": person_schema(), "strict": true}}}),
        json!({"response_format": {"type": "json_object", "schema": person_schema()}}),
        json!({"guided_json": person_schema()}),
        json!({"response_format": {"type": "json_schema", "schema": person_schema()}}),
    ]
    .into_iter()
    .enumerate()
    {
        let mut extra = format;
        extra["n"] = json!(if i < 2 { 13 } else { 12 });
        extra["temperature"] = json!(1.0);
        extra["seed"] = json!(100 + i);
        let body = chat("Invent a person and describe them.", extra);
        let (st, v) = post(&s.base, "/v1/chat/completions", &body.to_string());
        assert_eq!(st, 200, "{v}");
        for c in v["choices"].as_array().unwrap() {
            assert_eq!(c["finish_reason"], "stop", "{c}");
        }
        outputs.extend(texts(&v));
    }
    assert_eq!(outputs.len(), 50);
    for text in &outputs {
        check_person(text);
    }
    let distinct: std::collections::HashSet<&String> = outputs.iter().collect();
    assert!(distinct.len() > 10, "sampling should vary: {distinct:?}");
    wait_idle_and_check_accounting(&s.base);
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn regexes_grammars_choices_and_json_objects_hold_on_every_route() {
    let s = server();
    // SGLang native: regex and ebnf in sampling_params, n samples each.
    let (st, v) = post(
        &s.base,
        "/generate",
        &json!({"text": "The answer is", "sampling_params": {"regex": "(yes|no), [0-9]{3}", "n": 8, "temperature": 1.0, "max_new_tokens": 20}}).to_string(),
    );
    assert_eq!(st, 200, "{v}");
    for item in v.as_array().unwrap() {
        let t = item["text"].as_str().unwrap();
        let (word, digits) = t.split_once(", ").unwrap_or_else(|| panic!("{t:?}"));
        assert!(word == "yes" || word == "no", "{t:?}");
        assert!(
            digits.len() == 3 && digits.chars().all(|c| c.is_ascii_digit()),
            "{t:?}"
        );
        assert_eq!(item["meta_info"]["finish_reason"]["type"], "stop", "{item}");
    }
    let gbnf = r#"root ::= greeting " " name
greeting ::= "Hello" | "Hi"
name ::= [A-Z] [a-z]{1,6}"#;
    let (st, v) = post(
        &s.base,
        "/generate",
        &json!({"text": "Say hello:", "sampling_params": {"ebnf": gbnf, "n": 6, "temperature": 1.0, "max_new_tokens": 20}}).to_string(),
    );
    assert_eq!(st, 200, "{v}");
    for item in v.as_array().unwrap() {
        let t = item["text"].as_str().unwrap();
        let (g, name) = t.split_once(' ').unwrap_or_else(|| panic!("{t:?}"));
        assert!(g == "Hello" || g == "Hi", "{t:?}");
        let mut cs = name.chars();
        assert!(cs.next().unwrap().is_ascii_uppercase(), "{t:?}");
        assert!((1..=6).contains(&cs.clone().count()), "{t:?}");
        assert!(cs.all(|c| c.is_ascii_lowercase()), "{t:?}");
    }
    // vLLM's guided_choice on completions, SGLang's json_schema string in native params.
    let options = ["positive", "negative", "neutral"];
    let (st, v) = post(
        &s.base,
        "/v1/completions",
        &json!({"prompt": "Sentiment of 'great movie':", "guided_choice": options, "n": 4, "temperature": 1.0, "max_tokens": 10}).to_string(),
    );
    assert_eq!(st, 200, "{v}");
    for t in texts(&v) {
        assert!(options.contains(&t.as_str()), "{t:?}");
    }
    let (st, v) = post(
        &s.base,
        "/generate",
        &json!({"text": "A person:", "sampling_params": {"json_schema": person_schema().to_string(), "max_new_tokens": 96}}).to_string(),
    );
    assert_eq!(st, 200, "{v}");
    check_person(v["text"].as_str().unwrap());
    // llama.cpp's GBNF `grammar` on chat.
    let (st, v) = post(
        &s.base,
        "/v1/chat/completions",
        &chat(
            "Say a.",
            json!({"grammar": "root ::= \"a\"{5,5}", "max_tokens": 6}),
        )
        .to_string(),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(texts(&v)[0], "aaaaa");
    assert!(
        v["system_fingerprint"].as_str().unwrap().starts_with('b'),
        "{v}"
    );
    // Any JSON object.
    let (st, v) = post(
        &s.base,
        "/v1/chat/completions",
        &chat(
            "Give me a JSON object about cats.",
            json!({"response_format": {"type": "json_object"}, "max_tokens": 200}),
        )
        .to_string(),
    );
    assert_eq!(st, 200, "{v}");
    if v["choices"][0]["finish_reason"] == "stop" {
        let o: Value = serde_json::from_str(&texts(&v)[0]).unwrap();
        assert!(o.is_object());
    } else {
        // Cut by max_tokens: still a prefix of an object.
        assert!(texts(&v)[0].starts_with('{'), "{v}");
    }
    wait_idle_and_check_accounting(&s.base);
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn a_streamed_constrained_chat_concatenates_to_valid_json() {
    let s = server();
    let mut body = chat(
        "Invent a person.",
        json!({"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": person_schema()}}}),
    );
    body["stream"] = json!(true);
    let content: String = stream_chunks(&s.base, "/v1/chat/completions", &body)
        .into_iter()
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(String::from)
        })
        .collect();
    check_person(&content);
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn constraints_leave_free_requests_and_the_cache_alone() {
    let s = server();
    let free = json!({"prompt": "The capital of France is", "max_tokens": 24, "temperature": 0})
        .to_string();
    let (_, alone) = post(&s.base, "/v1/completions", &free);
    let alone = texts(&alone)[0].clone();
    // The same free request while constrained ones run beside it.
    let constrained = chat(
        "Invent a person.",
        json!({"guided_json": person_schema(), "n": 4, "temperature": 1.0}),
    )
    .to_string();
    let base = s.base.clone();
    let busy = std::thread::spawn(move || post(&base, "/v1/chat/completions", &constrained));
    let (_, beside) = post(&s.base, "/v1/completions", &free);
    let (st, v) = busy.join().unwrap();
    assert_eq!(st, 200, "{v}");
    assert_eq!(
        texts(&beside)[0],
        alone,
        "greedy output is unchanged beside constraints"
    );
    // A greedy constrained request twice: identical, and the second reuses the prompt's cache.
    let greedy = chat(
        "Invent a person.",
        json!({"response_format": {"type": "json_schema", "json_schema": {"name": "p", "schema": person_schema()}}, "temperature": 0}),
    )
    .to_string();
    let (_, a) = post(&s.base, "/v1/chat/completions", &greedy);
    let (_, b) = post(&s.base, "/v1/chat/completions", &greedy);
    check_person(&texts(&a)[0]);
    assert_eq!(texts(&a), texts(&b));
    assert!(
        b["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
            > 0,
        "{b}"
    );
    wait_idle_and_check_accounting(&s.base);
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn invalid_specs_are_400s_that_name_the_problem() {
    let s = server();
    let msgs = json!([{"role": "user", "content": "hi"}]);
    for (path, body, needle) in [
        (
            "/v1/chat/completions",
            json!({"messages": msgs, "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "hiccup"}}}}),
            "json_schema",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": msgs, "response_format": {"type": "sound"}}),
            "sound",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": msgs, "response_format": {"type": "json_object", "schema": 123}}),
            "schema",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "regex": "(unclosed"}),
            "regex",
        ),
        (
            "/generate",
            json!({"text": "x", "sampling_params": {"ebnf": "root ::= missing"}}),
            "ebnf",
        ),
        (
            "/generate",
            json!({"text": "x", "sampling_params": {"json_schema": "{not json"}}),
            "json_schema",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "regex": "a", "guided_choice": ["a"]}),
            "at most one",
        ),
        (
            "/generate",
            json!({"text": "x", "sampling_params": {"structural_tag": "{}"}}),
            "structural_tag",
        ),
    ] {
        let (st, v) = post(&s.base, path, &body.to_string());
        assert_eq!(st, 400, "{body}: {v}");
        let m = v["error"]["message"].as_str().unwrap();
        assert!(m.contains(needle), "{body}: {m}");
    }
    wait_idle_and_check_accounting(&s.base);
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn the_responses_api_takes_a_text_format() {
    let s = server();
    let body = json!({"input": "Invent a person.", "max_output_tokens": 96,
        "text": {"format": {"type": "json_schema", "name": "person", "schema": person_schema(), "strict": true}}});
    let (st, v) = post(&s.base, "/v1/responses", &body.to_string());
    assert_eq!(st, 200, "{v}");
    check_person(v["output"][0]["content"][0]["text"].as_str().unwrap());
    let bad = json!({"input": "x", "text": {"format": {"type": "json_schema", "name": "p"}}});
    let (st, v) = post(&s.base, "/v1/responses", &bad.to_string());
    assert_eq!((st, &v["error"]["param"]), (400, &json!("text")), "{v}");
}
