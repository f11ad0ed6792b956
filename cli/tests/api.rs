//! API shapes clients rely on, against the real server: path aliases, model ids, `n` with a
//! seed, usage with `n`, and the role-only first chat chunk.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn the_served_model_name_is_the_id_everywhere_and_aliases_answer() {
    let s = start(&["--served-model-name", "org/smol"]);
    let (_, models) = get(&s.base, "/v1/models");
    assert_eq!(models["data"][0]["id"], "org/smol");
    assert_eq!(get(&s.base, "/models").1["data"][0]["id"], "org/smol");
    let (st, card) = get(&s.base, "/v1/models/org/smol");
    assert_eq!(st, 200, "{card}");
    assert_eq!(card["id"], "org/smol");
    assert_eq!(card["root"], "org/smol");
    assert_eq!(get(&s.base, "/v1/models/other").0, 404);
    for path in ["/get_server_info", "/server_info"] {
        let (st, v) = get(&s.base, path);
        assert_eq!(st, 200);
        assert_eq!(v["served_model_name"], "org/smol", "{path}");
    }
    for path in ["/get_model_info", "/model_info"] {
        let (st, v) = get(&s.base, path);
        assert_eq!((st, &v["model_name"]), (200, &json!("org/smol")), "{path}");
    }
    let body = json!({"model": "org/smol", "prompt": "Hi", "max_tokens": 1}).to_string();
    for path in ["/v1/completions", "/completions"] {
        let (st, v) = post(&s.base, path, &body);
        assert_eq!(st, 200, "{path}: {v}");
        assert_eq!(v["model"], "org/smol");
    }
    let chat =
        json!({"model": "org/smol", "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1})
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
    let body = json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 3, "stream": true, "n": 2});
    let chunks = stream_chunks(&s.base, "/v1/chat/completions", &body);
    for index in 0..2 {
        let first = chunks
            .iter()
            .find(|c| c["choices"][0]["index"] == index)
            .unwrap();
        assert_eq!(
            first["choices"][0]["delta"],
            json!({"role": "assistant", "content": null, "reasoning_content": null}),
            "{first}"
        );
        // The finishing chunk has no content key (llama.cpp's clients check), and
        // `reasoning_content` is null in every delta (SGLang's clients read it).
        let last = chunks
            .iter()
            .rfind(|c| c["choices"][0]["index"] == index)
            .unwrap();
        assert!(last["choices"][0]["finish_reason"].is_string(), "{last}");
        assert_eq!(
            last["choices"][0]["delta"],
            json!({"reasoning_content": null}),
            "{last}"
        );
    }
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn streamed_completion_logprobs_ride_on_every_chunk() {
    // SGLang's shape: the finish reason comes with the last token, so no chunk lacks logprobs.
    let s = server();
    let body = json!({"prompt": "The capital of France is", "max_tokens": 5, "logprobs": 2, "stream": true, "temperature": 0});
    let chunks = stream_chunks(&s.base, "/v1/completions", &body);
    let choices: Vec<&Value> = chunks.iter().filter_map(|c| c["choices"].get(0)).collect();
    assert!(!choices.is_empty());
    for c in &choices {
        assert!(c["logprobs"]["tokens"][0].is_string(), "{c}");
        assert!(c["logprobs"]["top_logprobs"][0].is_object(), "{c}");
    }
    let finishes = choices
        .iter()
        .filter(|c| c["finish_reason"].is_string())
        .count();
    assert_eq!(finishes, 1);
    assert_eq!(choices.last().unwrap()["finish_reason"], "length");
    let tokens: usize = choices
        .iter()
        .map(|c| c["logprobs"]["tokens"].as_array().unwrap().len())
        .sum();
    assert_eq!(tokens, 5);
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn tokenize_and_detokenize_round_trip_in_sglang_and_vllm_shapes() {
    let s = server();
    let (st, one) = post(
        &s.base,
        "/tokenize",
        &json!({"prompt": "Hello world"}).to_string(),
    );
    assert_eq!(st, 200, "{one}");
    let ids = one["tokens"].as_array().unwrap().clone();
    assert_eq!(one["count"], ids.len());
    assert!(one["max_model_len"].as_u64().unwrap() > 0);
    let (_, many) = post(
        &s.base,
        "/v1/tokenize",
        &json!({"prompt": ["Hello world", "Hi"]}).to_string(),
    );
    assert_eq!(many["tokens"][0], json!(ids));
    assert_eq!(many["count"].as_array().unwrap().len(), 2);
    // llama.cpp's shape.
    let (st, llama) = post(
        &s.base,
        "/tokenize",
        &json!({"content": "Hello world", "add_special": true}).to_string(),
    );
    assert_eq!((st, &llama["tokens"]), (200, &json!(ids)), "{llama}");
    let (_, strs) = post(
        &s.base,
        "/tokenize",
        &json!({"prompt": "Hello world", "return_token_strs": true}).to_string(),
    );
    assert_eq!(strs["token_strs"].as_array().unwrap().len(), ids.len());
    // The chat form counts what a chat request's prompt would be.
    let (_, chat_tok) = post(
        &s.base,
        "/tokenize",
        &json!({"messages": [{"role": "user", "content": "Hi"}]}).to_string(),
    );
    let (_, chat) = post(
        &s.base,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}).to_string(),
    );
    assert_eq!(chat_tok["count"], chat["usage"]["prompt_tokens"]);
    let (st, text) = post(&s.base, "/detokenize", &json!({"tokens": ids}).to_string());
    assert_eq!(st, 200, "{text}");
    assert_eq!(text["text"], "Hello world");
    assert_eq!(text["prompt"], "Hello world", "vLLM's field");
    let (_, texts) = post(
        &s.base,
        "/v1/detokenize",
        &json!({"tokens": [ids, []]}).to_string(),
    );
    assert_eq!(texts["text"], json!(["Hello world", ""]));
    assert_eq!(
        post(
            &s.base,
            "/detokenize",
            &json!({"tokens": [99999999]}).to_string()
        )
        .0,
        400
    );
    assert_eq!(
        post(&s.base, "/tokenize", &json!({"text": "x"}).to_string()).0,
        400
    );
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn get_load_is_sglangs_per_rank_list() {
    let s = server();
    let (st, v) = get(&s.base, "/get_load");
    assert_eq!(st, 200);
    let ranks = v.as_array().unwrap();
    assert_eq!(ranks.len(), 1);
    for key in ["dp_rank", "num_reqs", "num_waiting_reqs", "num_tokens"] {
        assert!(ranks[0][key].is_u64(), "{key} in {v}");
    }
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn generate_takes_batches_and_n_and_answers_with_a_list() {
    let s = server();
    let (st, v) = post(&s.base, "/generate", &json!({"text": ["The sky is", "Water is"], "sampling_params": {"max_new_tokens": 3, "temperature": 0}}).to_string());
    assert_eq!(st, 200, "{v}");
    let outs = v.as_array().unwrap();
    assert_eq!(outs.len(), 2);
    let (_, single) = post(
        &s.base,
        "/generate",
        &json!({"text": "Water is", "sampling_params": {"max_new_tokens": 3, "temperature": 0}})
            .to_string(),
    );
    assert_eq!(
        outs[1]["text"], single["text"],
        "batch items match single requests"
    );
    let (_, ids) = post(
        &s.base,
        "/generate",
        &json!({"input_ids": [[504, 3458], [504]], "sampling_params": {"max_new_tokens": 2}})
            .to_string(),
    );
    assert_eq!(ids.as_array().unwrap().len(), 2, "{ids}");
    let (_, n) = post(&s.base, "/generate", &json!({"text": "Once", "rid": "many", "sampling_params": {"max_new_tokens": 4, "n": 3, "temperature": 1.0, "sampling_seed": 3}}).to_string());
    let n = n.as_array().unwrap();
    assert_eq!(n.len(), 3);
    assert_eq!(n[2]["meta_info"]["id"], "many_2");
    // Streaming a batch: chunks carry their index, and the stream ends with [DONE].
    let indices: std::collections::BTreeSet<u64> = stream_chunks(
        &s.base,
        "/generate",
        &json!({"text": ["A", "B"], "stream": true, "sampling_params": {"max_new_tokens": 2}}),
    )
    .iter()
    .map(|c| c["index"].as_u64().unwrap())
    .collect();
    assert_eq!(indices.into_iter().collect::<Vec<_>>(), vec![0, 1]);
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn abort_request_stops_a_request_by_its_client_id() {
    let s = start(&["--api-key", "k1,k2", "--admin-api-key", "root"]);
    let base = s.base.clone();
    let long = std::thread::spawn(move || {
        post_with_key(&base, "/generate", "k1", &json!({"text": "Count:", "rid": "job-1", "sampling_params": {"max_new_tokens": 400, "ignore_eos": true}}).to_string())
    });
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while metric_with_key(&s.base, "k1", "generated_tokens_total") < 1.0 {
        assert!(std::time::Instant::now() < deadline);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // Another tenant cannot see it.
    let (_, other) = post_with_key(
        &s.base,
        "/abort_request",
        "k2",
        &json!({"rid": "job-1"}).to_string(),
    );
    assert_eq!(other["aborted"], 0);
    let (st, v) = post_with_key(
        &s.base,
        "/abort_request",
        "k1",
        &json!({"rid": "job-1"}).to_string(),
    );
    assert_eq!((st, &v["aborted"]), (200, &json!(1)), "{v}");
    let (st, done) = long.join().unwrap();
    assert_eq!(st, 200);
    assert_eq!(
        done["meta_info"]["finish_reason"]["type"], "abort",
        "{done}"
    );
    assert!(done["meta_info"]["completion_tokens"].as_u64().unwrap() < 400);
    // abort_all is the admin's.
    assert_eq!(
        post_with_key(
            &s.base,
            "/abort_request",
            "k1",
            &json!({"abort_all": true}).to_string()
        )
        .0,
        403
    );
    assert_eq!(
        post_with_key(
            &s.base,
            "/abort_request",
            "root",
            &json!({"abort_all": true}).to_string()
        )
        .0,
        200
    );
}

fn metric_with_key(base: &str, key: &str, name: &str) -> f64 {
    let (_, v) = get_with_key(base, "/metrics", key);
    v.as_str()
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(&format!("radixserve_{name} ")))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn responses_api_answers_streams_and_continues_a_conversation_from_the_cache() {
    let s = server();
    let (st, first) = post(&s.base, "/v1/responses", &json!({"input": "Name a colour.", "instructions": "Be brief.", "max_output_tokens": 6, "temperature": 0}).to_string());
    assert_eq!(st, 200, "{first}");
    assert_eq!(first["object"], "response");
    assert!(
        matches!(first["status"].as_str(), Some("completed" | "incomplete")),
        "{first}"
    );
    let text = first["output"][0]["content"][0]["text"].as_str().unwrap();
    assert_eq!(first["output"][0]["content"][0]["type"], "output_text");
    assert!(first["usage"]["input_tokens"].as_u64().unwrap() > 0);
    assert_eq!(
        first["usage"]["prompt_tokens"],
        first["usage"]["input_tokens"]
    );
    assert_eq!(
        first["usage"]["completion_tokens"],
        first["usage"]["output_tokens"]
    );
    let id = first["id"].as_str().unwrap();
    assert!(id.starts_with("resp_"), "{id}");
    let (st, next) = post(&s.base, "/v1/responses", &json!({"input": "Another one.", "instructions": "Be brief.", "previous_response_id": id, "max_output_tokens": 4, "temperature": 0}).to_string());
    assert_eq!(st, 200, "{next}");
    let cached = next["usage"]["input_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    let earlier = first["usage"]["input_tokens"].as_u64().unwrap();
    assert!(
        cached >= earlier - 1,
        "the earlier turn is a cache hit: {cached} of {earlier} ({text:?})"
    );
    assert_eq!(
        post(
            &s.base,
            "/v1/responses",
            &json!({"input": "x", "previous_response_id": "resp_none"}).to_string()
        )
        .0,
        404
    );
    // Not a response id at all: a bad request, as in SGLang.
    let (st, v) = post(
        &s.base,
        "/v1/responses",
        &json!({"input": "x", "previous_response_id": "bad"}).to_string(),
    );
    assert_eq!(
        (st, &v["error"]["param"]),
        (400, &json!("previous_response_id"))
    );
    // What the openai SDK sends by default is accepted; values that need tools or truncation
    // are refused by name.
    let sdk = json!({"input": "Hi", "max_output_tokens": 2, "parallel_tool_calls": true, "tool_choice": "auto", "truncation": "disabled", "store": true, "frequency_penalty": 0.5, "presence_penalty": 0.1});
    assert_eq!(post(&s.base, "/v1/responses", &sdk.to_string()).0, 200);
    for (field, value) in [
        ("tool_choice", json!("required")),
        ("truncation", json!("auto")),
        ("stream_options", json!({"include_usage": false})),
    ] {
        let mut bad = sdk.clone();
        bad[field] = value;
        let (st, v) = post(&s.base, "/v1/responses", &bad.to_string());
        assert_eq!((st, &v["error"]["param"]), (400, &json!(field)), "{v}");
    }
    // Streaming: named events, deltas that add up to the final text, no [DONE].
    let resp = agent()
        .post(&format!("{}/v1/responses", s.base))
        .set("Content-Type", "application/json")
        .send_string(&json!({"input": "Name a colour.", "instructions": "Be brief.", "max_output_tokens": 6, "temperature": 0, "stream": true}).to_string())
        .unwrap();
    let body = resp.into_string().unwrap();
    assert!(!body.contains("[DONE]"));
    let events: Vec<(String, Value)> = body
        .split("\n\n")
        .filter(|e| !e.is_empty() && !e.starts_with(':'))
        .map(|e| {
            let name = e
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap()
                .to_string();
            let data = e.lines().find_map(|l| l.strip_prefix("data: ")).unwrap();
            (name, serde_json::from_str(data).unwrap())
        })
        .collect();
    assert_eq!(events[0].0, "response.created");
    assert_eq!(events[1].0, "response.in_progress");
    let deltas: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, v)| v["delta"].as_str().unwrap())
        .collect();
    let (last_name, last) = events.last().unwrap();
    assert!(
        last_name == "response.completed" || last_name == "response.incomplete",
        "{last_name}"
    );
    assert_eq!(last["response"]["output"][0]["content"][0]["text"], deltas);
    assert_eq!(
        deltas, text,
        "greedy: the same text as the non-streamed response"
    );
    let seq: Vec<u64> = events
        .iter()
        .map(|(_, v)| v["sequence_number"].as_u64().unwrap())
        .collect();
    assert!(seq.windows(2).all(|w| w[1] == w[0] + 1), "{seq:?}");
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn logit_bias_bans_and_forces_tokens() {
    let s = server();
    let body = |bias: Value| {
        json!({"prompt": "The capital of France is", "max_tokens": 3, "temperature": 0, "logit_bias": bias}).to_string()
    };
    let (_, plain) = post(&s.base, "/v1/completions", &body(json!({})));
    let (_, ids) = post(
        &s.base,
        "/tokenize",
        &json!({"prompt": plain["choices"][0]["text"]}).to_string(),
    );
    let first = ids["tokens"][0].as_u64().unwrap();
    let (st, banned) = post(
        &s.base,
        "/v1/completions",
        &body(json!({first.to_string(): -100})),
    );
    assert_eq!(st, 200, "{banned}");
    assert_ne!(
        banned["choices"][0]["text"], plain["choices"][0]["text"],
        "the greedy first token is banned"
    );
    let (_, forced) = post(&s.base, "/generate", &json!({"text": "The capital of France is", "sampling_params": {"max_new_tokens": 3, "temperature": 0, "logit_bias": {"504": 100}}}).to_string());
    assert_eq!(forced["output_ids"], json!([504, 504, 504]), "{forced}");
    for bad in [json!({"x": 1}), json!({"504": 101}), json!({"99999999": 1})] {
        let (st, v) = post(&s.base, "/v1/completions", &body(bad.clone()));
        assert_eq!(st, 400, "{bad}: {v}");
    }
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn min_new_tokens_keeps_eos_from_being_sampled() {
    let s = server();
    let (_, eos) = post(
        &s.base,
        "/tokenize",
        &json!({"prompt": "<|im_end|>", "add_special_tokens": false}).to_string(),
    );
    let eos = eos["tokens"][0].clone();
    let prompt = "<|im_start|>user\nSay yes.<|im_end|>\n<|im_start|>assistant\n";
    let body = |min: u64| {
        json!({"text": prompt, "sampling_params": {"max_new_tokens": 32, "min_new_tokens": min, "temperature": 0, "skip_special_tokens": false}}).to_string()
    };
    let (_, free) = post(&s.base, "/generate", &body(0));
    let free_ids = free["output_ids"].as_array().unwrap().clone();
    assert!(
        free_ids.contains(&eos) && free_ids.len() < 20,
        "the model stops early on its own: {free}"
    );
    let (st, held) = post(&s.base, "/generate", &body(20));
    assert_eq!(st, 200, "{held}");
    let ids = held["output_ids"].as_array().unwrap();
    assert!(ids.len() >= 12, "{held}");
    assert!(
        !ids[..12].contains(&eos),
        "EOS was sampled before min_new_tokens: {held}"
    );
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn echo_puts_the_prompt_before_the_completion() {
    let s = server();
    let body = |echo: bool, stream: bool| {
        json!({"prompt": "The sky is", "max_tokens": 3, "temperature": 0, "echo": echo, "stream": stream}).to_string()
    };
    let (_, plain) = post(&s.base, "/v1/completions", &body(false, false));
    let (st, echoed) = post(&s.base, "/v1/completions", &body(true, false));
    assert_eq!(st, 200, "{echoed}");
    let completion = plain["choices"][0]["text"].as_str().unwrap();
    assert_eq!(
        echoed["choices"][0]["text"],
        format!("The sky is{completion}")
    );
    let streamed: Value = serde_json::from_str(&body(true, true)).unwrap();
    let text: String = stream_chunks(&s.base, "/v1/completions", &streamed)
        .iter()
        .map(|c| c["choices"][0]["text"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(text, format!("The sky is{completion}"));
    let with_lp = json!({"prompt": "x", "echo": true, "logprobs": 0}).to_string();
    // With logprobs the prompt is scored too (input_logprobs_score_the_prompt_... checks them).
    assert_eq!(post(&s.base, "/v1/completions", &with_lp).0, 200);
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn a_streamed_native_generation_returns_its_logprobs_at_the_end() {
    let s = server();
    let chunks = stream_chunks(
        &s.base,
        "/generate",
        &json!({"text": "Hello", "stream": true, "return_logprob": true, "sampling_params": {"max_new_tokens": 3, "temperature": 0}}),
    );
    let last = chunks.last().unwrap();
    assert_eq!(
        last["meta_info"]["output_token_logprobs"]
            .as_array()
            .unwrap()
            .len(),
        3,
        "{last}"
    );
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn top_logprobs_come_back_in_every_shape_and_agree_with_the_greedy_choice() {
    let s = server();
    // Chat: logprobs + top_logprobs, greedy so the first alternative is the chosen token.
    let body = json!({"messages": [{"role": "user", "content": "Name a colour."}], "max_tokens": 6,
        "temperature": 0, "logprobs": true, "top_logprobs": 3});
    let (st, v) = post(&s.base, "/v1/chat/completions", &body.to_string());
    assert_eq!(st, 200, "{v}");
    let content = v["choices"][0]["logprobs"]["content"].as_array().unwrap();
    assert_eq!(content.len(), 6, "{v}");
    for item in content {
        let top = item["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 3, "{item}");
        assert_eq!(top[0]["token"], item["token"], "{item}");
        let lp = |x: &Value| x["logprob"].as_f64().unwrap();
        assert!((lp(&top[0]) - lp(item)).abs() < 1e-4, "{item}");
        assert!(
            lp(&top[0]) >= lp(&top[1]) && lp(&top[1]) >= lp(&top[2]),
            "{item}"
        );
        assert!(top.iter().all(|t| t["bytes"].is_array()));
    }
    // Streamed, each chunk's tokens carry theirs.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let items: Vec<Value> = stream_chunks(&s.base, "/v1/chat/completions", &streamed)
        .into_iter()
        .filter_map(|c| c["choices"][0]["logprobs"]["content"].as_array().cloned())
        .flatten()
        .collect();
    assert_eq!(items.len(), 6);
    assert!(items
        .iter()
        .all(|i| i["top_logprobs"].as_array().unwrap().len() == 3));
    // Completions: `logprobs: N` gives one map per position.
    let (st, v) = post(
        &s.base,
        "/v1/completions",
        &json!({"prompt": "One, two,", "max_tokens": 4, "temperature": 0, "logprobs": 2})
            .to_string(),
    );
    assert_eq!(st, 200, "{v}");
    let lp = &v["choices"][0]["logprobs"];
    let tops = lp["top_logprobs"].as_array().unwrap();
    assert_eq!(tops.len(), 4);
    for (i, top) in tops.iter().enumerate() {
        let m = top.as_object().unwrap();
        assert!(!m.is_empty() && m.len() <= 2, "{top}");
        let best = m
            .values()
            .map(|x| x.as_f64().unwrap())
            .fold(f64::MIN, f64::max);
        let chosen = lp["token_logprobs"][i].as_f64().unwrap();
        assert!((best - chosen).abs() < 1e-4, "{v}");
    }
    // Native: top_logprobs_num and token_ids_logprob beside return_logprob.
    let (st, v) = post(
        &s.base,
        "/generate",
        &json!({"text": "One, two,", "sampling_params": {"max_new_tokens": 3, "temperature": 0},
            "return_logprob": true, "top_logprobs_num": 2, "token_ids_logprob": [11, 12]})
        .to_string(),
    );
    assert_eq!(st, 200, "{v}");
    let m = &v["meta_info"];
    let out_ids = v["output_ids"].as_array().unwrap();
    for i in 0..3 {
        let top = m["output_top_logprobs"][i].as_array().unwrap();
        assert_eq!(top.len(), 2);
        assert_eq!(top[0][1], out_ids[i], "{m}");
        let asked = m["output_token_ids_logprobs"][i].as_array().unwrap();
        assert_eq!(
            (asked[0][1].as_u64(), asked[1][1].as_u64()),
            (Some(11), Some(12))
        );
        assert!(asked[0][0].as_f64().unwrap() <= top[0][0].as_f64().unwrap());
    }
    // With return_text_in_logprobs every triple carries its token's text.
    let (st, v) = post(
        &s.base,
        "/generate",
        &json!({"text": "One, two,", "sampling_params": {"max_new_tokens": 3, "temperature": 0},
            "return_logprob": true, "top_logprobs_num": 2, "logprob_start_len": 0,
            "return_text_in_logprobs": true})
        .to_string(),
    );
    assert_eq!(st, 200, "{v}");
    let m = &v["meta_info"];
    let spelled: String = m["output_token_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t[2].as_str().unwrap())
        .collect();
    assert_eq!(spelled, v["text"].as_str().unwrap(), "{m}");
    assert!(m["output_top_logprobs"][0][0][2].is_string(), "{m}");
    let prompt: String = m["input_token_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t[2].as_str().unwrap())
        .collect();
    assert_eq!(prompt, "One, two,");
    // Without return_logprob the logprob fields have no effect (as in SGLang).
    let (st, v) = post(
        &s.base,
        "/generate",
        &json!({"text": "x", "sampling_params": {"max_new_tokens": 1}, "return_logprob": false,
            "top_logprobs_num": 2, "logprob_start_len": 0})
        .to_string(),
    );
    assert_eq!(st, 200, "{v}");
    assert!(v["meta_info"].get("output_token_logprobs").is_none(), "{v}");
    // Asked for wrongly: a 400 that names the field.
    for (path, body, param) in [
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "top_logprobs": 2}),
            "top_logprobs",
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "x"}], "logprobs": true, "top_logprobs": 21}),
            "top_logprobs",
        ),
        (
            "/v1/completions",
            json!({"prompt": "x", "logprobs": 21}),
            "logprobs",
        ),
        (
            "/generate",
            json!({"text": "x", "return_logprob": true, "token_ids_logprob": [999999]}),
            "token_ids_logprob",
        ),
    ] {
        let (st, v) = post(&s.base, path, &body.to_string());
        assert_eq!(st, 400, "{body}: {v}");
        assert!(
            v["error"]["message"].as_str().unwrap().contains(param) || v["error"]["param"] == param,
            "{v}"
        );
    }
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn input_logprobs_score_the_prompt_as_generation_scored_it() {
    let s = server();
    // Generate greedily with the chosen tokens' logprobs.
    let prompt = "The capital of France is";
    let (st, g) = post(
        &s.base,
        "/generate",
        &json!({"text": prompt, "sampling_params": {"max_new_tokens": 6, "temperature": 0},
            "return_logprob": true})
        .to_string(),
    );
    assert_eq!(st, 200, "{g}");
    let out_ids: Vec<u64> = g["output_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    let out_lps: Vec<f64> = g["meta_info"]["output_token_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t[0].as_f64().unwrap())
        .collect();
    // Score prompt + generation from the prompt's end: the same tokens, the same logprobs.
    let (_, tok) = post(&s.base, "/tokenize", &json!({"prompt": prompt}).to_string());
    let prompt_ids: Vec<u64> = tok["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    let mut ids = prompt_ids.clone();
    ids.extend(&out_ids);
    let body = |start: usize| {
        json!({"input_ids": ids, "sampling_params": {"max_new_tokens": 1, "temperature": 0},
            "return_logprob": true, "logprob_start_len": start, "top_logprobs_num": 2})
        .to_string()
    };
    let (st, v) = post(&s.base, "/generate", &body(prompt_ids.len()));
    assert_eq!(st, 200, "{v}");
    let m = &v["meta_info"];
    let input = m["input_token_logprobs"].as_array().unwrap();
    assert_eq!(input.len(), out_ids.len(), "{m}");
    for (i, t) in input.iter().enumerate() {
        assert_eq!(t[1].as_u64().unwrap(), out_ids[i]);
        let lp = t[0].as_f64().unwrap();
        assert!(
            (lp - out_lps[i]).abs() < 2e-2,
            "position {i}: {lp} vs {}",
            out_lps[i]
        );
        // Greedy: the scored token is the most likely one.
        let top = m["input_top_logprobs"][i].as_array().unwrap();
        assert_eq!(top.len(), 2);
        assert_eq!(top[0][1].as_u64().unwrap(), out_ids[i], "{top:?}");
    }
    // From position 0: the whole input, the first token without a logprob; the cache stops
    // before the scored positions even on a repeat.
    for _ in 0..2 {
        let (st, v) = post(&s.base, "/generate", &body(0));
        assert_eq!(st, 200, "{v}");
        let m = &v["meta_info"];
        let input = m["input_token_logprobs"].as_array().unwrap();
        assert_eq!(input.len(), ids.len());
        assert!(input[0][0].is_null());
        assert!(m["input_top_logprobs"][0].is_null());
        assert!(input[1..].iter().all(|t| t[0].as_f64().unwrap() <= 0.0));
        assert_eq!(m["cached_tokens"], 0, "{m}");
    }
    // Completions `echo` with `logprobs`: the prompt's tokens lead, the first with null.
    let (st, v) = post(
        &s.base,
        "/v1/completions",
        &json!({"prompt": prompt, "echo": true, "logprobs": 2, "max_tokens": 0}).to_string(),
    );
    assert_eq!(st, 200, "{v}");
    let lp = &v["choices"][0]["logprobs"];
    assert_eq!(
        lp["tokens"].as_array().unwrap().len(),
        prompt_ids.len(),
        "{v}"
    );
    assert!(lp["token_logprobs"][0].is_null() && lp["top_logprobs"][0].is_null());
    assert!(lp["token_logprobs"][1].as_f64().unwrap() <= 0.0);
    assert!(lp["top_logprobs"][1].as_object().unwrap().len() <= 2);
    assert_eq!(v["choices"][0]["text"], prompt);
    // Misuse is refused by name (without return_logprob the field has no effect, as in SGLang).
    let body = json!({"text": "x", "return_logprob": true, "logprob_start_len": -3});
    let (st, v) = post(&s.base, "/generate", &body.to_string());
    assert_eq!(
        (st, &v["error"]["param"]),
        (400, &json!("logprob_start_len")),
        "{v}"
    );
    let (st, v) = post(
        &s.base,
        "/generate",
        &json!({"text": "Hi", "return_logprob": true, "logprob_start_len": 99}).to_string(),
    );
    assert_eq!(st, 400, "{v}");
    // Streamed, each choice's first chunk is the prompt with its logprobs, then its first
    // token's; later chunks carry their own tokens'.
    for max_tokens in [0, 4] {
        let chunks = stream_chunks(
            &s.base,
            "/v1/completions",
            &json!({"prompt": prompt, "echo": true, "logprobs": 2, "max_tokens": max_tokens,
                "n": 2, "stream": true, "temperature": 0}),
        );
        for index in 0..2 {
            let mine: Vec<&Value> = chunks
                .iter()
                .filter(|c| c["choices"][0]["index"] == index)
                .collect();
            let first = &mine[0]["choices"][0];
            assert!(
                first["text"].as_str().unwrap().starts_with(prompt),
                "{first}"
            );
            let lp = &first["logprobs"];
            let n = lp["tokens"].as_array().unwrap().len();
            assert_eq!(n, prompt_ids.len() + usize::from(max_tokens > 0), "{first}");
            assert!(lp["token_logprobs"][0].is_null(), "{first}");
            assert!(lp["top_logprobs"][1].is_object(), "{first}");
            let last = &mine.last().unwrap()["choices"][0];
            assert_eq!(last["finish_reason"], "length", "{last}");
        }
    }
    wait_idle_and_check_accounting(&s.base);
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn no_stop_trim_keeps_the_stop_string_and_a_final_message_can_be_continued() {
    let s = server();
    let body = |keep: bool| {
        json!({"prompt": "Paris is in France. Berlin is in Germany. Rome is in", "max_tokens": 24,
            "temperature": 0, "stop": ["."], "no_stop_trim": keep})
        .to_string()
    };
    let (_, trimmed) = post(&s.base, "/v1/completions", &body(false));
    let (_, kept) = post(&s.base, "/v1/completions", &body(true));
    assert_eq!(trimmed["choices"][0]["finish_reason"], "stop", "{trimmed}");
    let t = trimmed["choices"][0]["text"].as_str().unwrap();
    assert_eq!(
        kept["choices"][0]["text"].as_str().unwrap(),
        format!("{t}.")
    );
    // Native too.
    let (_, v) = post(
        &s.base,
        "/generate",
        &json!({"text": "Paris is in France. Berlin is in Germany. Rome is in",
            "sampling_params": {"max_new_tokens": 24, "temperature": 0, "stop": ["."], "no_stop_trim": true}})
        .to_string(),
    );
    assert_eq!(v["text"].as_str().unwrap(), format!("{t}."));
    // continue_final_message: the prompt ends with the assistant's words, and the model goes on
    // from them exactly as from that prompt given as token ids.
    let messages = json!([{"role": "user", "content": "Introduce yourself."},
        {"role": "assistant", "content": "Hello, my name"}]);
    let (st, tok) = post(
        &s.base,
        "/tokenize",
        &json!({"messages": messages, "continue_final_message": true, "add_generation_prompt": false})
            .to_string(),
    );
    assert_eq!(st, 200, "{tok}");
    let (_, text) = post(
        &s.base,
        "/detokenize",
        &json!({"tokens": tok["tokens"]}).to_string(),
    );
    assert!(
        text["text"]
            .as_str()
            .unwrap()
            .ends_with("assistant\nHello, my name"),
        "{text}"
    );
    let (st, chat) = post(
        &s.base,
        "/v1/chat/completions",
        &json!({"messages": messages, "continue_final_message": true, "max_tokens": 8, "temperature": 0})
            .to_string(),
    );
    assert_eq!(st, 200, "{chat}");
    let (_, raw) = post(
        &s.base,
        "/generate",
        &json!({"input_ids": tok["tokens"], "sampling_params": {"max_new_tokens": 8, "temperature": 0}})
            .to_string(),
    );
    assert_eq!(chat["choices"][0]["message"]["content"], raw["text"]);
    // It needs a final assistant message.
    let (st, v) = post(
        &s.base,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "x"}], "continue_final_message": true})
            .to_string(),
    );
    assert_eq!(
        (st, &v["error"]["param"]),
        (400, &json!("continue_final_message")),
        "{v}"
    );
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn streamed_logprobs_cover_every_token_even_when_its_text_is_held_back() {
    let s = server();
    // A stop string makes the stream hold back text that could start it: " Italy" is held
    // (it may begin " Italy, the"), so its delta carries no text, only its token.
    let chunks = stream_chunks(
        &s.base,
        "/v1/completions",
        &json!({"prompt": "Paris is in France. Berlin is in Germany. Rome is", "max_tokens": 24,
            "temperature": 0, "stop": [" Italy, the"], "logprobs": 1, "stream": true,
            "stream_options": {"include_usage": true}}),
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["text"].as_str())
        .collect();
    assert!(
        text.contains(" Italy"),
        "the model's answer changed: {text:?}"
    );
    assert!(
        chunks.iter().any(|c| c["choices"][0]["text"] == ""
            && c["choices"][0]["logprobs"]["tokens"]
                .as_array()
                .is_some_and(|t| !t.is_empty())),
        "a chunk with held-back text still reports its token: {chunks:?}"
    );
    let scored: usize = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["logprobs"]["tokens"].as_array())
        .map(Vec::len)
        .sum();
    let usage = chunks.last().unwrap()["usage"]["completion_tokens"]
        .as_u64()
        .unwrap() as usize;
    assert_eq!(scored, usage, "{chunks:?}");
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn score_gives_label_probabilities_per_item() {
    let s = server();
    let (_, tok) = post(
        &s.base,
        "/tokenize",
        &json!({"prompt": [" Yes", " No"], "add_special_tokens": false}).to_string(),
    );
    let labels: Vec<u64> = (0..2)
        .map(|i| tok["tokens"][i][0].as_u64().unwrap())
        .collect();
    let body = |softmax: bool| {
        json!({"query": "Is Paris the capital of France? Answer:", "items": ["", " Think, then answer:"],
            "label_token_ids": labels, "apply_softmax": softmax})
        .to_string()
    };
    let (st, raw) = post(&s.base, "/v1/score", &body(false));
    assert_eq!(st, 200, "{raw}");
    let (st, soft) = post(&s.base, "/v1/score", &body(true));
    assert_eq!(st, 200, "{soft}");
    assert_eq!(raw["object"], "scoring");
    for i in 0..2 {
        let p: Vec<f64> = (0..2)
            .map(|j| raw["scores"][i][j].as_f64().unwrap())
            .collect();
        let q: Vec<f64> = (0..2)
            .map(|j| soft["scores"][i][j].as_f64().unwrap())
            .collect();
        assert!(p.iter().all(|&x| x > 0.0 && x <= 1.0), "{raw}");
        assert!((q.iter().sum::<f64>() - 1.0).abs() < 1e-6, "{soft}");
        // The softmax over the labels is the probabilities renormalised.
        let total: f64 = p.iter().sum();
        for j in 0..2 {
            assert!((q[j] - p[j] / total).abs() < 1e-6, "{raw} {soft}");
        }
    }
    // The same through token ids, item first.
    let (_, ids) = post(
        &s.base,
        "/tokenize",
        &json!({"prompt": ["Answer:", " Is Paris the capital of France?"], "add_special_tokens": false}).to_string(),
    );
    let (st, v) = post(
        &s.base,
        "/v1/score",
        &json!({"query": ids["tokens"][0], "items": [ids["tokens"][1]], "item_first": true,
            "label_token_ids": labels})
        .to_string(),
    );
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["scores"][0].as_array().unwrap().len(), 2);
    // An out-of-vocabulary label: a 400 with SGLang's flat error body.
    let (st, v) = post(
        &s.base,
        "/v1/score",
        &json!({"query": "x", "items": ["y"], "label_token_ids": [999999]}).to_string(),
    );
    assert_eq!(st, 400);
    assert_eq!(v["type"], "BadRequestError");
    assert!(v["message"].as_str().unwrap().contains("999999"), "{v}");
    assert_eq!(v["error"]["param"], "label_token_ids");
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn server_side_generation_defaults_fill_what_requests_leave_out() {
    let s = start(&[
        "--override-generation-config",
        r#"{"temperature": 1.0, "seed": 5, "max_new_tokens": 3}"#,
    ]);
    let ask = |body: Value| -> Value {
        let (status, v) = post(&s.base, "/v1/completions", &body.to_string());
        assert_eq!(status, 200, "{v}");
        v
    };
    let a = ask(json!({"prompt": "Once upon a time"}));
    let b = ask(json!({"prompt": "Once upon a time"}));
    assert_eq!(a["usage"]["completion_tokens"], 3, "{a}");
    assert_eq!(
        a["choices"][0]["text"], b["choices"][0]["text"],
        "the default seed"
    );
    let longer = ask(json!({"prompt": "Once upon a time", "max_tokens": 5, "temperature": 0}));
    assert_eq!(longer["usage"]["completion_tokens"], 5, "the request wins");
    drop(s);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_radixserve"))
        .args([
            "serve",
            "--override-generation-config",
            r#"{"temprature": 1}"#,
            "--model",
        ])
        .arg(model_path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("temprature"));
}
