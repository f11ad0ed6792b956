//! API shapes clients rely on, against the real server: path aliases, model ids, `n` with a
//! seed, usage with `n`, and the role-only first chat chunk.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn the_served_model_name_is_the_id_everywhere_and_aliases_answer() {
    let s = start(&["--served-model-name", "smol"]);
    let (_, models) = get(&s.base, "/v1/models");
    assert_eq!(models["data"][0]["id"], "smol");
    assert_eq!(get(&s.base, "/models").1["data"][0]["id"], "smol");
    let (st, card) = get(&s.base, "/v1/models/smol");
    assert_eq!(st, 200, "{card}");
    assert_eq!(card["id"], "smol");
    assert_eq!(get(&s.base, "/v1/models/other").0, 404);
    for path in ["/get_server_info", "/server_info"] {
        let (st, v) = get(&s.base, path);
        assert_eq!(st, 200);
        assert_eq!(v["served_model_name"], "smol", "{path}");
    }
    for path in ["/get_model_info", "/model_info"] {
        let (st, v) = get(&s.base, path);
        assert_eq!((st, &v["model_name"]), (200, &json!("smol")), "{path}");
    }
    let body = json!({"model": "smol", "prompt": "Hi", "max_tokens": 1}).to_string();
    for path in ["/v1/completions", "/completions"] {
        let (st, v) = post(&s.base, path, &body);
        assert_eq!(st, 200, "{path}: {v}");
        assert_eq!(v["model"], "smol");
    }
    let chat =
        json!({"model": "smol", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1})
            .to_string();
    assert_eq!(post(&s.base, "/chat/completions", &chat).0, 200);
    let other = json!({"model": "gpt-4o", "prompt": "Hi", "max_tokens": 1}).to_string();
    assert_eq!(
        post(&s.base, "/v1/completions", &other).0,
        404,
        "strict by default"
    );
    let lenient = start(&["--lenient-model-name"]);
    assert_eq!(
        post(&lenient.base, "/v1/completions", &other).0,
        200,
        "lenient: any name"
    );
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn seeded_choices_differ_from_each_other_and_repeat_across_calls() {
    let s = server();
    let body = json!({"prompt": "Once upon a time", "n": 4, "seed": 7, "temperature": 1.0,
        "max_tokens": 12, "cache_salt": "n-seed"})
    .to_string();
    let (st, a) = post(&s.base, "/v1/completions", &body);
    assert_eq!(st, 200, "{a}");
    let texts = |v: &Value| -> Vec<String> {
        v["choices"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["text"].as_str().unwrap().to_string())
            .collect()
    };
    let first = texts(&a);
    let distinct: std::collections::BTreeSet<_> = first.iter().collect();
    assert!(
        distinct.len() >= 3,
        "seeded choices should differ: {first:?}"
    );
    let (_, b) = post(&s.base, "/v1/completions", &body);
    assert_eq!(texts(&b), first, "the same seed gives the same choices");
    // The prompt is counted once however many choices continue it.
    let (_, one) = post(
        &s.base,
        "/v1/completions",
        &json!({"prompt": "Once upon a time", "max_tokens": 1, "cache_salt": "n-seed"}).to_string(),
    );
    assert_eq!(
        a["usage"]["prompt_tokens"], one["usage"]["prompt_tokens"],
        "{a}"
    );
    assert_eq!(a["usage"]["completion_tokens"].as_u64().unwrap(), 4 * 12);
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn a_streamed_chat_begins_with_a_role_only_chunk() {
    let s = server();
    let body = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "stream": true, "n": 2}).to_string();
    let resp = agent()
        .post(&format!("{}/v1/chat/completions", s.base))
        .set("Content-Type", "application/json")
        .send_string(&body)
        .unwrap();
    let text = resp.into_string().unwrap();
    let chunks: Vec<Value> = text
        .split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    for index in 0..2 {
        let first = chunks
            .iter()
            .find(|c| c["choices"][0]["index"] == index)
            .unwrap();
        assert_eq!(
            first["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""}),
            "{first}"
        );
    }
}
