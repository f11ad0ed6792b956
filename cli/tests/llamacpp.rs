//! llama.cpp's native API over HTTP: `POST /completion` in its request and response shapes
//! (streamed and not, token and mixed prompts, batches, `n_probs`, `response_fields`,
//! `logit_bias`, `cache_prompt`) and `GET /slots`.

#![allow(clippy::unwrap_used)]

mod common;

use common::{agent, get, post, server, wait_idle_and_check_accounting, NEEDS_MODEL};
use serde_json::{json, Value};

const PROMPT: &str = "I believe the meaning of life is";

fn completion(base: &str, body: Value) -> Value {
    let (status, v) = post(base, "/completion", &body.to_string());
    assert_eq!(status, 200, "{v}");
    v
}

/// The `data:` chunks of a stream, which has no `[DONE]` (llama.cpp's native shape).
fn stream(base: &str, body: Value) -> Vec<Value> {
    let text = agent()
        .post(&format!("{base}/completion"))
        .set("Content-Type", "application/json")
        .send_string(&body.to_string())
        .unwrap()
        .into_string()
        .unwrap();
    assert!(!text.contains("[DONE]"), "{text}");
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn completion_answers_in_llama_cpp_shapes() {
    let _ = NEEDS_MODEL;
    let s = server();
    let whole = completion(
        &s.base,
        json!({"prompt": PROMPT, "n_predict": 8, "temperature": 0,
        "return_tokens": true}),
    );
    assert_eq!(whole["stop"], true);
    assert_eq!(whole["stop_type"], "limit");
    assert_eq!(whole["tokens_predicted"], 8);
    assert_eq!(whole["tokens"].as_array().unwrap().len(), 8);
    assert_eq!(whole["timings"]["predicted_n"], 8);
    let evaluated = whole["tokens_evaluated"].as_u64().unwrap();
    let t = &whole["timings"];
    assert_eq!(
        t["prompt_n"].as_u64().unwrap() + t["cache_n"].as_u64().unwrap(),
        evaluated
    );
    assert_eq!(whole["generation_settings"]["n_predict"], 8);
    assert!(whole["has_new_line"].is_boolean() && whole["truncated"] == false);
    assert!(whole["prompt"].as_str().unwrap().contains(PROMPT));
    let content = whole["content"].as_str().unwrap().to_string();
    assert!(!content.is_empty());
    // Without return_tokens the list is empty; the same prompt again is a cache hit.
    let again = completion(
        &s.base,
        json!({"prompt": PROMPT, "n_predict": 8, "temperature": 0}),
    );
    assert_eq!(again["tokens"], json!([]));
    assert_eq!(again["content"], content.as_str());
    assert!(again["timings"]["cache_n"].as_u64().unwrap() > 0);
    // cache_prompt: false computes the whole prompt.
    let nocache = completion(
        &s.base,
        json!({"prompt": PROMPT, "n_predict": 8, "temperature": 0,
        "cache_prompt": false}),
    );
    assert_eq!(nocache["timings"]["cache_n"], 0);
    assert_eq!(nocache["content"], content.as_str());

    // Streamed: chunks with tokens, then a last chunk with stop: true; same text.
    let chunks = stream(
        &s.base,
        json!({"prompt": PROMPT, "n_predict": 8, "temperature": 0,
        "stream": true}),
    );
    let (last, deltas) = chunks.split_last().unwrap();
    assert_eq!(last["stop"], true);
    assert_eq!(last["stop_type"], "limit");
    assert!(deltas
        .iter()
        .all(|c| c["stop"] == false && !c["tokens"].as_array().unwrap().is_empty()));
    let streamed: String = deltas
        .iter()
        .map(|c| c["content"].as_str().unwrap())
        .collect();
    assert_eq!(streamed, content);

    // Token ids, a batch (answered with a list), ids mixed with text, a prompt object.
    let (_, tok) = post(
        &s.base,
        "/tokenize",
        &json!({"content": PROMPT, "add_special": true}).to_string(),
    );
    let ids = tok["tokens"].clone();
    let by_ids = completion(
        &s.base,
        json!({"prompt": ids, "n_predict": 8, "temperature": 0}),
    );
    assert_eq!(by_ids["content"], content.as_str());
    let batch = completion(
        &s.base,
        json!({"prompt": [ids, PROMPT, {"prompt_string": PROMPT}],
        "n_predict": 8, "temperature": 0}),
    );
    let batch = batch.as_array().unwrap();
    assert_eq!(batch.len(), 3);
    assert!(batch.iter().all(|r| r["content"] == content.as_str()));
    let indexes: Vec<&Value> = batch.iter().map(|r| &r["index"]).collect();
    assert_eq!(indexes, [&json!(0), &json!(1), &json!(2)]);
    let mixed = completion(
        &s.base,
        json!({"prompt": [1, 2, PROMPT, 3], "n_predict": 2}),
    );
    assert!(mixed["content"].is_string());
    wait_idle_and_check_accounting(&s.base);
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn completion_extensions_and_refusals() {
    let s = server();
    // n_probs: every generated token with its n most likely alternatives.
    let r = completion(
        &s.base,
        json!({"prompt": PROMPT, "n_predict": 5, "n_probs": 10,
        "temperature": 0}),
    );
    let probs = r["completion_probabilities"].as_array().unwrap();
    assert_eq!(probs.len(), 5);
    for p in probs {
        assert!(p["logprob"].as_f64().unwrap() <= 0.0 && p["bytes"].is_array());
        let top = p["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 10);
        // Greedy: the chosen token is the most likely one.
        assert_eq!(top[0]["id"], p["id"]);
    }
    // response_fields picks paths.
    let r = completion(
        &s.base,
        json!({"prompt": PROMPT, "n_predict": 4,
        "response_fields": ["content", "generation_settings/n_predict"]}),
    );
    assert_eq!(r.as_object().unwrap().len(), 2, "{r}");
    assert_eq!(r["generation_settings/n_predict"], 4);
    // logit_bias in llama.cpp's pair list: a banned token never appears.
    let free = completion(
        &s.base,
        json!({"prompt": PROMPT, "n_predict": 6, "temperature": 0,
        "return_tokens": true}),
    );
    let first = free["tokens"][0].clone();
    let banned = completion(
        &s.base,
        json!({"prompt": PROMPT, "n_predict": 6, "temperature": 0,
        "return_tokens": true, "logit_bias": [[first, false]]}),
    );
    assert!(
        !banned["tokens"].as_array().unwrap().contains(&first),
        "{banned}"
    );
    // Knobs radixserve lacks pass at their no-op defaults and are refused otherwise.
    completion(
        &s.base,
        json!({"prompt": PROMPT, "n_predict": 2, "typical_p": 1.0,
        "mirostat": 0, "id_slot": -1}),
    );
    for (field, value) in [("mirostat", json!(2)), ("typical_p", json!(0.5))] {
        let (status, v) = post(
            &s.base,
            "/completion",
            &json!({"prompt": PROMPT, field: value}).to_string(),
        );
        assert_eq!(status, 400, "{field}: {v}");
        assert!(v.to_string().contains(field), "{v}");
    }
    let (status, _) = post(
        &s.base,
        "/completion",
        &json!({"prompt":
        {"prompt_string": "x <__media__>", "multimodal_data": "AAAA"}})
        .to_string(),
    );
    assert_eq!(status, 400);
    // /slots: one per running request, none busy when idle.
    wait_idle_and_check_accounting(&s.base);
    let (status, slots) = get(&s.base, "/slots");
    assert_eq!(status, 200);
    let slots = slots.as_array().unwrap();
    assert_eq!(slots.len(), 8, "--max-running-requests 8");
    assert!(slots.iter().all(|s| s["is_processing"] == false));
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn chat_template_override_and_apply_template() {
    let messages = json!({"messages": [
        {"role": "system", "content": "You are a test."},
        {"role": "user", "content": "Hi there"}]});
    // The model's own template (SmolLM2's ChatML).
    let s = server();
    let (status, v) = post(&s.base, "/apply-template", &messages.to_string());
    assert_eq!(status, 200, "{v}");
    assert!(
        v["prompt"]
            .as_str()
            .unwrap()
            .ends_with("<|im_start|>assistant\n"),
        "{v}"
    );
    drop(s);
    // A named template replaces it, for /apply-template and for chat requests alike.
    let s = common::start(&["--chat-template", "command-r"]);
    let (_, v) = post(&s.base, "/apply-template", &messages.to_string());
    assert_eq!(
        v["prompt"],
        "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>You are a test.<|END_OF_TURN_TOKEN|>\
         <|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hi there<|END_OF_TURN_TOKEN|>\
         <|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"
    );
    let mut chat = messages.clone();
    chat["max_tokens"] = 2.into();
    let (status, v) = post(&s.base, "/v1/chat/completions", &chat.to_string());
    assert_eq!(status, 200, "{v}");
    let (status, _) = post(
        &s.base,
        "/apply-template",
        &json!({"messages": []}).to_string(),
    );
    assert_eq!(status, 400);
    drop(s);
    // An unknown name is refused at start, naming the known ones.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_radixserve"))
        .args(["serve", "--chat-template", "no-such-template", "--model"])
        .arg(common::model_path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no-such-template") && err.contains("chatml"),
        "{err}"
    );
}
