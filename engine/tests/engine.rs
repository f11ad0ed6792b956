//! Engine tests on the real default model (SmolLM2-135M-Instruct): streaming equals
//! non-streaming, stop strings, aborts free memory, concurrent requests complete, and the cache
//! changes nothing in the output. `#[ignore]`d in a plain `cargo test` (they need the model file);
//! `cargo xtask test-all` fetches the model and runs them.

#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_idle_accounting, model_path};

use engine::{
    ChatMessage, Engine, EngineConfig, FinishReason, GenerateRequest, Input, Namespace,
    SamplingParams, StreamEvent,
};
use std::sync::{Arc, OnceLock};

fn config(model: std::path::PathBuf, disable_cache: bool) -> EngineConfig {
    EngineConfig {
        model,
        disable_radix_cache: disable_cache,
        kv_cache_memory: 96 << 20,
        max_running_requests: 8,
        chunked_prefill_size: Some(256),
        check_invariants: true,
        ..EngineConfig::default()
    }
}

/// One engine with the cache on, shared by the tests of this file.
fn engine() -> Arc<Engine> {
    static E: OnceLock<Arc<Engine>> = OnceLock::new();
    E.get_or_init(|| Arc::new(Engine::new(config(model_path(), false)).unwrap()))
        .clone()
}

fn greedy(input: Input, max: usize) -> GenerateRequest {
    let mut r = GenerateRequest::new(input);
    r.sampling = SamplingParams::greedy();
    r.stop.max_new_tokens = max;
    r
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn streaming_equals_non_streaming() {
    let e = engine();
    let input = Input::Text("The capital of France is".into());
    let full = e.generate_blocking(greedy(input.clone(), 16)).unwrap();
    let mut text = String::new();
    let mut ids = Vec::new();
    let mut done = None;
    for ev in e.generate(greedy(input, 16)).unwrap() {
        match ev {
            StreamEvent::Delta(d) => {
                text.push_str(&d.text);
                ids.extend(d.token_ids);
            }
            StreamEvent::Done(c) => done = Some(c),
            StreamEvent::Failed(e) => panic!("{e}"),
            StreamEvent::Progress(p) => panic!("progress not asked for: {p:?}"),
        }
    }
    let done = done.unwrap();
    assert_eq!(ids, full.token_ids);
    assert_eq!(text, full.text);
    assert_eq!(done.text, full.text);
    assert!(
        done.usage.cached_tokens > 0,
        "the second run reuses the prompt"
    );
    assert_idle_accounting(&e);
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn chat_template_and_cache_reuse_across_turns() {
    let e = engine();
    let mut messages = vec![
        ChatMessage::new("system", "You are a helpful assistant."),
        ChatMessage::new("user", "Name a color."),
    ];
    let first = e
        .generate_blocking(greedy(Input::Chat(messages.clone()), 8))
        .unwrap();
    assert!(first.usage.prompt_tokens > 10);
    messages.push(ChatMessage::new("assistant", first.text.clone()));
    messages.push(ChatMessage::new("user", "Another one."));
    let second = e
        .generate_blocking(greedy(Input::Chat(messages), 8))
        .unwrap();
    assert!(
        second.usage.cached_tokens >= first.usage.prompt_tokens - 1,
        "turn 2 reuses turn 1's prompt: {:?} vs {:?}",
        second.usage,
        first.usage
    );
    assert_idle_accounting(&e);
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn stop_strings_end_generation_and_are_trimmed() {
    let e = engine();
    let input = Input::Text("Count: 1, 2, 3, 4, 5,".into());
    let free = e.generate_blocking(greedy(input.clone(), 24)).unwrap();
    // Stop at a piece of text that the free run produces after its first few characters.
    let cut = free
        .text
        .char_indices()
        .map(|(i, _)| i)
        .find(|&i| i >= 3)
        .expect("the model generated some text");
    let stop: String = free.text[cut..].chars().take(3).collect();
    assert!(!stop.is_empty());
    let mut r = greedy(input, 24);
    r.stop_strings = vec![stop.clone()];
    let stopped = e.generate_blocking(r).unwrap();
    let expect = &free.text[..free.text.find(&stop).unwrap()];
    assert_eq!(stopped.text, expect, "stop {stop:?} in {:?}", free.text);
    assert!(matches!(stopped.finish_reason, FinishReason::Stop { .. }));
    assert_idle_accounting(&e);
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn dropping_a_stream_aborts_and_frees_everything() {
    let e = engine();
    let mut r = greedy(
        Input::Text("Write a long story about a dragon.".into()),
        200,
    );
    r.stop.ignore_eos = true;
    let mut stream = e.generate(r).unwrap();
    // Read a couple of tokens, then walk away.
    let mut got = 0;
    for ev in stream.by_ref() {
        if let StreamEvent::Delta(d) = ev {
            got += d.token_ids.len();
            if got >= 2 {
                break;
            }
        }
    }
    drop(stream);
    assert_idle_accounting(&e);
    assert!(e.stats().counters.aborted >= 1);
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn concurrent_requests_all_complete_and_match_sequential_runs() {
    let e = engine();
    let prompts: Vec<String> = (0..6)
        .map(|i| format!("Question {i}: what is {i} plus {i}? Answer:"))
        .collect();
    let sequential: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            e.generate_blocking(greedy(Input::Text(p.clone()), 8))
                .unwrap()
                .token_ids
        })
        .collect();
    let handles: Vec<_> = prompts
        .iter()
        .map(|p| {
            let e = e.clone();
            let p = p.clone();
            std::thread::spawn(move || e.generate_blocking(greedy(Input::Text(p), 8)).unwrap())
        })
        .collect();
    for (h, seq) in handles.into_iter().zip(&sequential) {
        let c = h.join().unwrap();
        assert_eq!(
            &c.token_ids, seq,
            "batched output differs from the sequential run"
        );
    }
    assert_idle_accounting(&e);
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn cache_on_and_off_give_identical_greedy_outputs() {
    let path = model_path();
    let off = Engine::new(config(path, true)).unwrap();
    let on = engine();
    let system = "You are a concise assistant that answers in one sentence.";
    for q in [
        "What is rust?",
        "What is a radix tree?",
        "Why cache prefixes?",
    ] {
        let input = Input::Chat(vec![
            ChatMessage::new("system", system),
            ChatMessage::new("user", q),
        ]);
        let a = on.generate_blocking(greedy(input.clone(), 16)).unwrap();
        let b = off.generate_blocking(greedy(input, 16)).unwrap();
        assert_eq!(a.token_ids, b.token_ids, "cache on vs off differ for {q:?}");
        assert_eq!(b.usage.cached_tokens, 0);
    }
    off.shutdown();
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn bad_requests_are_refused_with_a_reason() {
    let e = engine();
    let long = Input::Tokens(vec![1; e.info().context_length + 1]);
    let limit = e.token_limit().max_total();
    assert!(matches!(
        e.generate(greedy(long, 4)),
        Err(engine::EngineError::TooLong { prompt_tokens, limit: l, .. })
            if prompt_tokens == e.info().context_length + 1 && l == limit
    ));
    let bad_id = Input::Tokens(vec![u32::MAX]);
    assert!(matches!(
        e.generate(greedy(bad_id, 4)),
        Err(engine::EngineError::InvalidRequest(_))
    ));
    let mut bad = greedy(Input::Text("hi".into()), 4);
    bad.sampling.temperature = -1.0;
    assert!(matches!(
        e.generate(bad),
        Err(engine::EngineError::InvalidRequest(_))
    ));
    assert!(matches!(
        e.generate(greedy(Input::Chat(vec![]), 4)),
        Err(engine::EngineError::InvalidRequest(_))
    ));
    // Salted requests do not see the shared cache.
    let p = Input::Text("Salted prompts live apart from everyone else's.".into());
    e.generate_blocking(greedy(p.clone(), 2)).unwrap();
    let mut salted = greedy(p, 2);
    salted.namespace = Namespace::salted("tenant-x");
    assert_eq!(e.generate_blocking(salted).unwrap().usage.cached_tokens, 0);
    assert_idle_accounting(&e);
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn burn_device_serves_end_to_end_like_the_host_path() {
    // `Device::BurnCpu` runs burn's generic forward (the code the CUDA device runs) with an
    // f32 cache; the host path quantises activations and keeps an f16 cache. Both serve the
    // same request, and their greedy outputs start alike on a prompt with a clear answer.
    let burn = Engine::new(EngineConfig {
        device: engine::Device::BurnCpu,
        ..config(model_path(), false)
    })
    .unwrap();
    assert_eq!(burn.info().kv_cache_dtype, engine::KvDtype::F32);
    assert_eq!(engine().info().kv_cache_dtype, engine::KvDtype::F16);
    let input = Input::Text("The capital of France is".into());
    let a = burn.generate_blocking(greedy(input.clone(), 4)).unwrap();
    let b = engine()
        .generate_blocking(greedy(input.clone(), 4))
        .unwrap();
    assert_eq!(a.token_ids.len(), 4);
    assert_eq!(a.token_ids[..2], b.token_ids[..2], "{a:?} vs {b:?}");
    // The prefix is cached on the burn device too, and reusing it changes nothing.
    let again = burn.generate_blocking(greedy(input, 4)).unwrap();
    assert_eq!(again.token_ids, a.token_ids);
    assert!(again.usage.cached_tokens > 0, "{again:?}");
    assert_idle_accounting(&burn);
    // A typed cache on a burn device is refused with a clear error, not ignored.
    let err = Engine::new(EngineConfig {
        device: engine::Device::BurnCpu,
        kv_cache_dtype: Some(engine::KvDtype::F16),
        ..config(model_path(), false)
    })
    .err()
    .unwrap();
    let source = std::error::Error::source(&err).map(ToString::to_string);
    assert!(
        source.as_deref().is_some_and(|s| s.contains("burn path")),
        "{err}: {source:?}"
    );
}

#[cfg(not(feature = "cuda"))]
#[test]
fn cuda_device_is_refused_by_a_build_without_cuda() {
    let err = Engine::new(EngineConfig {
        device: engine::Device::Cuda,
        ..EngineConfig::default()
    })
    .err()
    .unwrap();
    let text = err.to_string();
    assert!(
        text.contains("CUDA") || text.contains("does not exist"),
        "{text}"
    );
}
