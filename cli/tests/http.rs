//! End-to-end HTTP tests: the real `radixserve serve` binary on 127.0.0.1 with the real default
//! model, driven by a real HTTP client.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn service_endpoints_answer() {
    let s = server();
    let (st, v) = get(&s.base, "/health");
    assert_eq!((st, v.as_str()), (200, Some("OK")));
    let (st, v) = get(&s.base, "/v1/models");
    assert_eq!(st, 200);
    assert_eq!(v["object"], "list");
    assert!(v["data"][0]["id"].as_str().unwrap().ends_with(".gguf"));
    let (st, v) = get(&s.base, "/get_model_info");
    assert_eq!(st, 200);
    assert_eq!(v["is_generation"], true);
    assert_eq!(
        (&v["architecture"], &v["quantization"], &v["kv_cache_dtype"]),
        (&json!("llama"), &json!("Q4_1"), &json!("f16")),
        "{v}"
    );
    assert_eq!(v["context_length"], 8192);
    let (st, v) = get(&s.base, "/get_server_info");
    assert_eq!(st, 200);
    assert!(v["max_total_num_tokens"].as_u64().unwrap() > 1000);
    let (st, v) = get(&s.base, "/get_load");
    assert_eq!(st, 200);
    assert!(v[0]["num_reqs"].is_u64());
    assert_eq!(v[0]["dp_rank"], 0);
    assert!(v[0]["num_tokens"].is_u64() && v[0]["num_waiting_reqs"].is_u64());
    let (st, _) = get(&s.base, "/health_generate");
    assert_eq!(st, 200);
    let (st, v) = get(&s.base, "/metrics");
    assert_eq!(st, 200);
    let text = v.as_str().unwrap();
    for m in [
        "prefix_cache_query_tokens_total",
        "prefix_cache_hit_tokens_total",
        "time_to_first_token_seconds_bucket",
        "e2e_request_latency_seconds_count",
        "kv_capacity_tokens",
    ] {
        assert!(text.contains(&format!("radixserve_{m}")), "missing {m}");
    }
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn completions_report_cached_tokens_on_a_repeated_prefix() {
    let s = server();
    let body = json!({"prompt": "A radix tree stores prefixes so that", "max_tokens": 4, "temperature": 0, "cache_salt": "completions-test"}).to_string();
    let (st, a) = post(&s.base, "/v1/completions", &body);
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["object"], "text_completion");
    assert_eq!(a["usage"]["completion_tokens"], 4);
    let (_, b) = post(&s.base, "/v1/completions", &body);
    let prompt = b["usage"]["prompt_tokens"].as_u64().unwrap();
    assert_eq!(
        b["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap(),
        prompt - 1
    );
    assert_eq!(
        a["choices"][0]["text"], b["choices"][0]["text"],
        "greedy output is deterministic"
    );
    let with_lp =
        json!({"prompt": "Logprobs please:", "max_tokens": 3, "temperature": 0, "logprobs": 0})
            .to_string();
    let (st, c) = post(&s.base, "/v1/completions", &with_lp);
    assert_eq!(st, 200, "{c}");
    let lps = c["choices"][0]["logprobs"]["token_logprobs"]
        .as_array()
        .unwrap();
    assert_eq!(lps.len(), 3);
    assert!(lps.iter().all(|l| l.as_f64().unwrap() <= 0.0), "{lps:?}");
    let native = json!({"text": "Logprobs please:", "sampling_params": {"max_new_tokens": 2, "temperature": 0}, "return_logprob": true}).to_string();
    let (_, n) = post(&s.base, "/generate", &native);
    assert_eq!(
        n["meta_info"]["output_token_logprobs"]
            .as_array()
            .unwrap()
            .len(),
        2,
        "{n}"
    );
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn chat_completions_work_and_salts_isolate_tenants() {
    let s = server();
    let msg = |salt: &str| {
        json!({"model": "default", "messages": [{"role": "user", "content": "Say hello."}], "max_tokens": 3, "temperature": 0, "cache_salt": salt}).to_string()
    };
    let (st, a) = post(&s.base, "/v1/chat/completions", &msg("salt-a"));
    assert_eq!(st, 200, "{a}");
    assert_eq!(a["object"], "chat.completion");
    assert_eq!(a["choices"][0]["message"]["role"], "assistant");
    let (_, again) = post(&s.base, "/v1/chat/completions", &msg("salt-a"));
    assert!(
        again["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    let (_, other) = post(&s.base, "/v1/chat/completions", &msg("salt-b"));
    assert_eq!(
        other["usage"]["prompt_tokens_details"]["cached_tokens"], 0,
        "another salt shares nothing"
    );
}

/// Reads an SSE response's `data:` payloads.
fn sse_events(base: &str, path: &str, body: &str) -> Vec<String> {
    let resp = agent()
        .post(&format!("{base}{path}"))
        .set("Content-Type", "application/json")
        .send_string(body)
        .unwrap();
    assert_eq!(resp.header("content-type"), Some("text/event-stream"));
    let mut text = String::new();
    resp.into_reader().read_to_string(&mut text).unwrap();
    assert!(
        text.ends_with("data: [DONE]\n\n"),
        "stream must end with [DONE]: {text:?}"
    );
    text.split("\n\n")
        .filter(|c| !c.is_empty() && !c.starts_with(':'))
        .map(|c| {
            c.strip_prefix("data: ")
                .expect("every event is a data line")
                .to_string()
        })
        .collect()
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn sse_streams_are_framed_and_match_non_streaming() {
    let s = server();
    let base = json!({"prompt": "The quick brown fox", "max_tokens": 6, "temperature": 0, "cache_salt": "sse"});
    let (_, full) = post(&s.base, "/v1/completions", &base.to_string());
    let mut stream_body = base.clone();
    stream_body["stream"] = json!(true);
    stream_body["stream_options"] = json!({"include_usage": true});
    let events = sse_events(&s.base, "/v1/completions", &stream_body.to_string());
    assert_eq!(events.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str(e).unwrap())
        .collect();
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0))
        .map(|c| c["text"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(text, full["choices"][0]["text"].as_str().unwrap());
    let usage = &chunks.last().unwrap()["usage"];
    assert_eq!(usage["completion_tokens"], 6);
    assert!(chunks.iter().any(|c| c["choices"]
        .get(0)
        .is_some_and(|c| c["finish_reason"] == "length")));
    // Chat streaming: role first, then content deltas.
    let chat = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "temperature": 0, "stream": true}).to_string();
    let events = sse_events(&s.base, "/v1/chat/completions", &chat);
    let first: Value = serde_json::from_str(&events[0]).unwrap();
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    // Native streaming.
    let native = json!({"text": "Hello", "sampling_params": {"max_new_tokens": 3, "temperature": 0}, "stream": true}).to_string();
    let events = sse_events(&s.base, "/generate", &native);
    let last: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(last["meta_info"]["finish_reason"]["type"], "length");
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn native_generate_reports_length_and_cached_tokens() {
    let s = server();
    let body = json!({"input_ids": [1, 504, 3458, 282, 4098, 314, 253, 1345], "sampling_params": {"max_new_tokens": 1, "temperature": 0}, "extra_key": "native"}).to_string();
    let (st, a) = post(&s.base, "/generate", &body);
    assert_eq!(st, 200, "{a}");
    assert_eq!(
        a["meta_info"]["finish_reason"],
        json!({"type": "length", "length": 1})
    );
    assert_eq!(a["meta_info"]["completion_tokens"], 1);
    assert!(a["meta_info"]["e2e_latency"].as_f64().unwrap() > 0.0);
    let (_, b) = post(&s.base, "/generate", &body);
    assert_eq!(
        b["meta_info"]["cached_tokens"], 7,
        "prompt_tokens - 1 with page size 1"
    );
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn bad_inputs_get_4xx_and_the_server_stays_healthy() {
    let s = server();
    let cases: Vec<(&str, String, u16)> = vec![
        ("/v1/completions", "{not json".into(), 400),
        ("/v1/completions", json!({"prompt": 5}).to_string(), 400),
        (
            "/v1/completions",
            json!({"prompt": "hi", "temperature": "hot"}).to_string(),
            400,
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "temperature": -1}).to_string(),
            400,
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "top_p": 0}).to_string(),
            400,
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "max_tokens": -5}).to_string(),
            400,
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "n": 0}).to_string(),
            400,
        ),
        (
            "/v1/completions",
            json!({"prompt": "hi", "model": "gpt-9"}).to_string(),
            404,
        ),
        (
            "/v1/completions",
            json!({"prompt": [1, -3, 2]}).to_string(),
            400,
        ),
        (
            "/v1/completions",
            json!({"prompt": [999999999]}).to_string(),
            400,
        ),
        (
            "/v1/completions",
            json!({"prompt": "word ".repeat(9000)}).to_string(),
            400,
        ),
        (
            "/v1/completions",
            json!({"prompt": "x".repeat(70_000)}).to_string(),
            413,
        ),
        (
            "/v1/chat/completions",
            json!({"messages": []}).to_string(),
            400,
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "wizard", "content": "hi"}]}).to_string(),
            400,
        ),
        ("/generate", json!({"sampling_params": {}}).to_string(), 400),
        (
            "/generate",
            json!({"text": "hi", "input_ids": [1]}).to_string(),
            400,
        ),
        ("/generate", json!({"input_ids": []}).to_string(), 400),
    ];
    for (path, body, want) in cases {
        let (st, v) = post(&s.base, path, &body);
        assert_eq!(st, want, "{path} {}: {v}", &body[..body.len().min(80)]);
        assert!(
            v["error"]["message"].is_string(),
            "OpenAI-style error body: {v}"
        );
    }
    let (st, _) = get(&s.base, "/no/such/thing");
    assert_eq!(st, 404);
    let (st, v) = post(
        &s.base,
        "/v1/completions",
        &json!({"prompt": "Still alive?", "max_tokens": 2, "temperature": 0}).to_string(),
    );
    assert_eq!(st, 200, "{v}");
    wait_idle_and_check_accounting(&s.base);
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn flush_is_refused_while_busy_and_clears_the_cache_when_idle() {
    // A server of its own, so that other tests' requests do not interfere.
    let s = start(&[]);
    let base = s.base.clone();
    let body = json!({"prompt": "Tell me a long story.", "max_tokens": 400, "temperature": 0, "ignore_eos": true}).to_string();
    let b2 = base.clone();
    let long = std::thread::spawn(move || post(&b2, "/v1/completions", &body));
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(&base, "/get_load").1[0]["num_reqs"] == 0 {
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    }
    let (st, v) = post(&base, "/flush_cache", "");
    assert_eq!(st, 400, "{v}");
    let (st, _) = long.join().unwrap();
    assert_eq!(st, 200);
    wait_idle_and_check_accounting(&base);
    let (st, _) = post(&base, "/flush_cache", "");
    assert_eq!(st, 200);
    let (_, v) = post(
        &base,
        "/v1/completions",
        &json!({"prompt": "Tell me a long story.", "max_tokens": 1, "temperature": 0}).to_string(),
    );
    assert_eq!(v["usage"]["prompt_tokens_details"]["cached_tokens"], 0);
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn a_client_disconnect_mid_stream_aborts_the_request() {
    let s = start(&[]);
    let addr = s.base.trim_start_matches("http://").to_string();
    let before = metric(&s.base, "requests_aborted_total");
    let body = json!({"prompt": "Write an endless poem.", "max_tokens": 500, "temperature": 0, "ignore_eos": true, "stream": true}).to_string();
    let mut conn = TcpStream::connect(&addr).unwrap();
    write!(conn, "POST /v1/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}", body.len()).unwrap();
    let mut buf = [0u8; 2048];
    let n = conn.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).contains("200 OK"));
    let _ = conn.read(&mut buf); // at least one event
    drop(conn);
    wait_idle_and_check_accounting(&s.base);
    assert!(metric(&s.base, "requests_aborted_total") > before);
    assert!(
        metric(&s.base, "generated_tokens_total") < 500.0,
        "the request stopped early"
    );
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn sixteen_concurrent_clients_complete_without_error() {
    let s = server();
    let base = s.base.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    let handles: Vec<_> = (0..16)
        .map(|i| {
            let base = base.clone();
            std::thread::spawn(move || {
                let mut done = 0;
                while done < 2 && Instant::now() < deadline {
                    let body = if i % 2 == 0 {
                        json!({"prompt": format!("Client {i} asks about prefix caching, round {done}."), "max_tokens": 3, "temperature": 0})
                    } else {
                        json!({"messages": [{"role": "system", "content": "You are terse."}, {"role": "user", "content": format!("Client {i}, round {done}")}], "max_tokens": 3, "temperature": 0.8, "seed": i})
                    };
                    let path = if i % 2 == 0 { "/v1/completions" } else { "/v1/chat/completions" };
                    let (st, v) = post(&base, path, &body.to_string());
                    assert_eq!(st, 200, "{v}");
                    done += 1;
                }
                done
            })
        })
        .collect();
    let total: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(total >= 16, "only {total} requests completed");
    wait_idle_and_check_accounting(&base);
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn api_keys_are_required_and_isolate_tenants() {
    let s = start(&["--api-key", "key-one,key-two"]);
    let body = json!({"prompt": "Shared words between tenants", "max_tokens": 1, "temperature": 0})
        .to_string();
    let (st, _) = post(&s.base, "/v1/completions", &body);
    assert_eq!(st, 401);
    let call = |key: &str| {
        into(
            agent()
                .post(&format!("{}/v1/completions", s.base))
                .set("Authorization", &format!("Bearer {key}"))
                .set("Content-Type", "application/json")
                .send_string(&body),
        )
    };
    assert_eq!(call("wrong").0, 401);
    let (st, _) = call("key-one");
    assert_eq!(st, 200);
    let (_, again) = call("key-one");
    assert!(
        again["usage"]["prompt_tokens_details"]["cached_tokens"]
            .as_u64()
            .unwrap()
            > 0
    );
    let (_, other) = call("key-two");
    assert_eq!(
        other["usage"]["prompt_tokens_details"]["cached_tokens"], 0,
        "tenants are isolated"
    );
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn the_openai_python_client_works_against_the_server() {
    let s = server();
    let check = Command::new("python3")
        .args(["-c", "import openai"])
        .status();
    assert!(
        matches!(check, Ok(st) if st.success()),
        "the `openai` Python package is not installed (pip install openai; .ci/run installs it)"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/openai_smoke.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(format!("{}/v1", s.base))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "openai smoke test failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
