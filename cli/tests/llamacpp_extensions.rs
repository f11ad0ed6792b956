//! llama-server's extensions over HTTP: `post_sampling_probs` (probabilities of the
//! distribution sampled), `return_progress` (prompt progress chunks), `timings_per_token`
//! (timings on streamed chunks), on `/completion` and on the OpenAI routes,
//! `--verbose-responses` (the `__verbose` object), and the context-overflow error's shape.

#![allow(clippy::unwrap_used)]

mod common;

use common::{agent, post, start, wait_idle_and_check_accounting, NEEDS_MODEL};
use serde_json::{json, Value};

const PROMPT: &str = "I believe the meaning of life is";

/// The JSON `data:` chunks of a stream (`[DONE]` left out).
fn chunks(base: &str, path: &str, body: Value) -> Vec<Value> {
    let text = agent()
        .post(&format!("{base}{path}"))
        .set("Content-Type", "application/json")
        .send_string(&body.to_string())
        .unwrap()
        .into_string()
        .unwrap();
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}

/// Checks a stream's `prompt_progress` reports: at least `min` of them, all before any
/// generated text, with the same total and cached counts, growing to the whole prompt.
fn check_progress(chunks: &[Value], text_of: impl Fn(&Value) -> bool, min: usize) -> Value {
    let first_text = chunks.iter().position(&text_of).unwrap();
    let reports: Vec<(usize, &Value)> = chunks
        .iter()
        .enumerate()
        .filter_map(|(i, c)| c.get("prompt_progress").map(|p| (i, p)))
        .collect();
    assert!(reports.len() >= min, "{chunks:?}");
    let mut last = 0;
    for (i, p) in &reports {
        assert!(*i < first_text, "progress before the text");
        assert_eq!(p["total"], reports[0].1["total"]);
        assert_eq!(p["cache"], reports[0].1["cache"]);
        let processed = p["processed"].as_u64().unwrap();
        assert!(processed > last && p["time_ms"].as_f64().unwrap() >= 0.0);
        last = processed;
    }
    let final_report = reports.last().unwrap().1.clone();
    assert_eq!(final_report["processed"], final_report["total"]);
    final_report
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn post_sampling_probs_report_the_distribution_sampled() {
    let _ = NEEDS_MODEL;
    let s = start(&[]);
    let body = |temperature: f64, extra: Value| {
        let mut b = json!({"prompt": PROMPT, "n_predict": 5, "n_probs": 10,
            "temperature": temperature, "post_sampling_probs": true, "seed": 3});
        b.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        b
    };
    let (status, greedy) = post(&s.base, "/completion", &body(0.0, json!({})).to_string());
    assert_eq!(status, 200, "{greedy}");
    assert_eq!(greedy["generation_settings"]["post_sampling_probs"], true);
    let probs = greedy["completion_probabilities"].as_array().unwrap();
    assert_eq!(probs.len(), 5);
    for p in probs {
        // Greedy samples the best token for certain.
        assert_eq!(p["prob"], 1.0, "{p}");
        assert!(p.get("logprob").is_none() && p["bytes"].is_array());
        let top = p["top_probs"].as_array().unwrap();
        assert_eq!(top.len(), 10);
        assert_eq!((&top[0]["id"], &top[0]["prob"]), (&p["id"], &json!(1.0)));
        assert!(top[1..].iter().all(|t| t["prob"] == 0.0), "{p}");
    }
    // Top-k 3 at temperature 1: three tokens share all the mass, the chosen one among them.
    let (status, sampled) = post(
        &s.base,
        "/completion",
        &body(1.0, json!({"top_k": 3})).to_string(),
    );
    assert_eq!(status, 200, "{sampled}");
    for p in sampled["completion_probabilities"].as_array().unwrap() {
        let top = p["top_probs"].as_array().unwrap();
        let mass: f64 = top.iter().map(|t| t["prob"].as_f64().unwrap()).sum();
        assert!((mass - 1.0).abs() < 1e-4, "{p}");
        assert!(top[3..].iter().all(|t| t["prob"] == 0.0), "{p}");
        let chosen = top.iter().position(|t| t["id"] == p["id"]).unwrap();
        assert!(chosen < 3 && top[chosen]["prob"] == p["prob"], "{p}");
    }
    wait_idle_and_check_accounting(&s.base);
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn prompt_progress_and_timings_stream_on_every_route() {
    let s = start(&["--chunked-prefill-size", "16"]);
    let long = PROMPT.repeat(8);
    // /completion: one report per 16-token chunk, then tokens with their timings.
    let out = chunks(
        &s.base,
        "/completion",
        json!({"prompt": long, "n_predict": 4, "stream": true, "return_progress": true,
            "timings_per_token": true}),
    );
    let text = |c: &Value| c["content"].as_str().is_some_and(|t| !t.is_empty());
    let report = check_progress(&out, text, 3);
    let evaluated = out.last().unwrap()["tokens_evaluated"].clone();
    assert_eq!(report["total"], evaluated);
    assert_eq!(report["cache"], 0);
    let tokens: Vec<&Value> = out.iter().filter(|c| text(c)).collect();
    assert!(tokens
        .iter()
        .all(|c| c["timings"]["predicted_n"].as_u64() > Some(0)));
    // Chat on both paths llama.cpp clients use: reports, then the role chunk's answer with
    // timings on every token chunk and on the usage chunk.
    for path in ["/v1/chat/completions", "/chat/completions"] {
        let out = chunks(
            &s.base,
            path,
            json!({"messages": [{"role": "user", "content": long}], "max_tokens": 5,
                "stream": true, "stream_options": {"include_usage": true},
                "return_progress": true, "timings_per_token": true}),
        );
        let content = |c: &Value| c["choices"][0]["delta"]["content"].is_string();
        let report = check_progress(&out, content, 1);
        let usage = out.last().unwrap();
        assert_eq!(report["total"], usage["usage"]["prompt_tokens"]);
        assert_eq!(
            report["cache"],
            usage["usage"]["prompt_tokens_details"]["cached_tokens"]
        );
        let role = out
            .iter()
            .find(|c| c["choices"][0]["delta"]["role"] == "assistant");
        assert!(role.unwrap().get("timings").is_none());
        assert!(out
            .iter()
            .filter(|c| content(c))
            .all(|c| c["timings"]["predicted_n"].as_u64() > Some(0)));
        let t = &usage["timings"];
        assert_eq!(
            t["predicted_n"], usage["usage"]["completion_tokens"],
            "{usage}"
        );
        assert!(t["prompt_per_second"].is_number() && t["predicted_per_second"].is_number());
    }
    // A second, cached request: its one report shows the cached part.
    let out = chunks(
        &s.base,
        "/v1/completions",
        json!({"prompt": long, "max_tokens": 2, "stream": true, "return_progress": true}),
    );
    let report = check_progress(&out, |c| c["choices"][0]["text"].is_string(), 1);
    assert!(report["cache"].as_u64().unwrap() > 0, "{report}");
    // Non-streamed: timings on request; progress has nothing to go in and is refused.
    let (status, v) = post(
        &s.base,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
            "timings_per_token": true})
        .to_string(),
    );
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["timings"]["predicted_n"], v["usage"]["completion_tokens"]);
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3,
                "return_progress": true}),
        ),
        (
            "/completion",
            json!({"prompt": "hi", "n_predict": 3, "return_progress": true}),
        ),
    ] {
        let (status, v) = post(&s.base, path, &body.to_string());
        assert_eq!(status, 400, "{path}: {v}");
        assert!(v.to_string().contains("return_progress"), "{v}");
    }
    wait_idle_and_check_accounting(&s.base);
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn verbose_responses_show_the_prompt_as_computed() {
    let messages = json!([{"role": "system", "content": "Book"},
        {"role": "user", "content": "What is the best book"}]);
    let s = start(&[
        "--verbose-responses",
        "--chat-template",
        "llama3",
        "--context-length",
        "512",
    ]);
    let (_, rendered) = post(
        &s.base,
        "/apply-template",
        &json!({ "messages": messages }).to_string(),
    );
    let (status, v) = post(
        &s.base,
        "/chat/completions",
        &json!({"messages": messages, "max_tokens": 8}).to_string(),
    );
    assert_eq!(status, 200, "{v}");
    let verbose = &v["__verbose"];
    assert_eq!(verbose["prompt"], rendered["prompt"], "{v}");
    let prompt = verbose["prompt"].as_str().unwrap();
    assert!(prompt.contains("<|start_header_id|>system<|end_header_id|>\n\nBook<|eot_id|>"));
    assert!(prompt.ends_with("<|start_header_id|>assistant<|end_header_id|>\n\n"));
    assert_eq!(verbose["content"], v["choices"][0]["message"]["content"]);
    assert_eq!(verbose["tokens_predicted"], v["usage"]["completion_tokens"]);
    assert_eq!(verbose["stop_type"], "limit");
    // Streamed responses do not carry it.
    let out = chunks(
        &s.base,
        "/v1/chat/completions",
        json!({"messages": messages, "max_tokens": 2, "stream": true}),
    );
    assert!(out.iter().all(|c| c.get("__verbose").is_none()));
    // A prompt over the context: llama-server's error type and fields, streamed or not.
    let long: Vec<Value> = (0..100)
        .flat_map(|_| messages.as_array().unwrap().clone())
        .collect();
    for stream in [false, true] {
        let (status, v) = post(
            &s.base,
            "/chat/completions",
            &json!({"messages": long, "stream": stream}).to_string(),
        );
        assert_eq!(status, 400, "{v}");
        let e = &v["error"];
        assert_eq!(e["type"], "exceed_context_size_error", "{v}");
        assert!(e["n_prompt_tokens"].as_u64().unwrap() > 512, "{v}");
        assert_eq!(e["n_ctx"], 512, "{v}");
    }
    drop(s);
    // Off by default.
    let s = start(&[]);
    let (_, v) = post(
        &s.base,
        "/v1/completions",
        &json!({"prompt": PROMPT, "max_tokens": 2}).to_string(),
    );
    assert!(v.get("__verbose").is_none(), "{v}");
}
