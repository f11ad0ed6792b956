//! Engine tests on a deterministic fake model runner and a small word-level tokenizer: they need
//! no model file and run in milliseconds. They cover the async and blocking stream readers, the
//! in-flight bound, aborts of queued requests, abort-all, and a dead scheduler thread.

#![allow(clippy::unwrap_used)]

use engine::{
    Engine, EngineError, FinishReason, GenerateRequest, Input, ModelInfo, RunnerSetup, StreamEvent,
    TextTokenizer,
};
use router::{ForwardBatch, ModelError, ModelRunner, SampledToken, SchedulerConfig, StepOutput};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WORDS: [&str; 8] = ["<unk>", "a", "b", "c", "d", "e", "f", "<eos>"];

/// A word-level tokenizer over `WORDS`, written as tokenizer.json into a temporary directory.
fn tokenizer() -> TextTokenizer {
    let vocab: serde_json::Map<String, serde_json::Value> = WORDS
        .iter()
        .enumerate()
        .map(|(i, w)| (w.to_string(), i.into()))
        .collect();
    let json = serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": [],
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"},
        "post_processor": null,
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": false},
        "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "<unk>"}
    });
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "radixserve-fake-tok-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tokenizer.json"), json.to_string()).unwrap();
    TextTokenizer::from_hf_dir(&dir).unwrap()
}

/// Samples "the next word" (1..=6 cycling); sleeps per step so requests overlap; panics when
/// `die` is set.
struct Fake {
    step_delay: Duration,
    die: Arc<AtomicBool>,
}

impl ModelRunner for Fake {
    fn forward(&mut self, batch: &ForwardBatch) -> Result<StepOutput, ModelError> {
        assert!(
            !self.die.load(Ordering::Relaxed),
            "injected scheduler-thread failure"
        );
        std::thread::sleep(self.step_delay);
        let tokens = batch
            .seqs
            .iter()
            .map(|s| {
                s.sample.then(|| {
                    let mut token = s.token_ids.last().map_or(1, |&t| t % 6 + 1);
                    if let Some(mask) = &s.sampling.allowed_tokens {
                        // Constrained: the first allowed word at or after its choice.
                        token = (0..WORDS.len() as u32)
                            .map(|k| (token + k) % WORDS.len() as u32)
                            .find(|&t| mask.is_allowed(t))
                            .expect("a non-empty mask");
                    }
                    SampledToken::new(token, None)
                })
            })
            .collect();
        Ok(StepOutput::new(tokens))
    }
}

fn start(
    max_running: usize,
    max_in_flight: usize,
    step_delay: Duration,
) -> (Engine, Arc<AtomicBool>) {
    let die = Arc::new(AtomicBool::new(false));
    let info = ModelInfo {
        model_path: "fake".into(),
        model_name: "fake".into(),
        vocab_size: WORDS.len(),
        context_length: 256,
        kv_capacity_tokens: 1024,
        page_size: 1,
        architecture: "fake".into(),
        quantization: "none".into(),
        kv_cache_dtype: Default::default(),
        eos_token_ids: vec![7],
        has_chat_template: false,
        disk_tier: None,
    };
    let scheduler = SchedulerConfig {
        page_size: 1,
        num_pages: 1024,
        context_length: 256,
        max_running_requests: max_running,
        eos_token_ids: vec![7],
        check_invariants: true,
        ..SchedulerConfig::default()
    };
    let runner = Fake {
        step_delay,
        die: Arc::clone(&die),
    };
    let setup = RunnerSetup {
        info,
        scheduler,
        max_in_flight,
        trust_message_content: false,
    };
    (
        Engine::with_runner(runner, tokenizer(), setup).unwrap(),
        die,
    )
}

fn request(text: &str, max: usize) -> GenerateRequest {
    let mut r = GenerateRequest::new(Input::Text(text.into()));
    r.stop.max_new_tokens = max;
    r
}

#[test]
fn prompt_progress_comes_before_the_first_token_when_asked_for() {
    let (e, _) = start(4, 16, Duration::ZERO);
    let mut r = request("a b c d e f a b", 3);
    r.report_progress = true;
    let events: Vec<StreamEvent> = e.generate(r).unwrap().collect();
    let first_delta = events
        .iter()
        .position(|ev| matches!(ev, StreamEvent::Delta(_)))
        .unwrap();
    let reports: Vec<(usize, &engine::PromptProgress)> = events
        .iter()
        .enumerate()
        .filter_map(|(i, ev)| match ev {
            StreamEvent::Progress(p) => Some((i, p)),
            _ => None,
        })
        .collect();
    assert_eq!(reports.len(), 1, "one chunk: {events:?}");
    let (at, p) = reports[0];
    assert!(at < first_delta);
    assert_eq!((p.total, p.cached, p.processed), (8, 0, 8));
    assert!(p.elapsed >= 0.0);
    assert!(matches!(events.last(), Some(StreamEvent::Done(_))));
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn blocking_and_async_readers_see_the_same_output() {
    let (e, _) = start(4, 8, Duration::ZERO);
    let blocking = e.generate_blocking(request("a b", 5)).unwrap();
    assert_eq!(blocking.token_ids, vec![3, 4, 5, 6, 1]);
    assert_eq!(blocking.text, "c d e f a");
    assert!(matches!(
        blocking.finish_reason,
        FinishReason::Length { length: 5 }
    ));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut stream = e.generate(request("a b", 5)).unwrap();
    let mut deltas = 0;
    let done = rt.block_on(async {
        loop {
            match stream.next_event().await.unwrap() {
                StreamEvent::Delta(_) => deltas += 1,
                StreamEvent::Done(c) => return c,
                StreamEvent::Failed(err) => panic!("{err}"),
                StreamEvent::Progress(p) => panic!("progress not asked for: {p:?}"),
            }
        }
    });
    assert_eq!(deltas, 5);
    assert_eq!(done.token_ids, blocking.token_ids);
    assert!(
        rt.block_on(stream.next_event()).is_none(),
        "nothing after Done"
    );
    wait_until("the in-flight count to drop", || e.in_flight() == 0);
}

#[test]
fn requests_beyond_the_in_flight_bound_are_refused_and_places_come_back() {
    let (e, _) = start(1, 3, Duration::from_millis(2));
    let held: Vec<_> = (0..3)
        .map(|_| e.generate(request("a", 50)).unwrap())
        .collect();
    assert_eq!(e.in_flight(), 3);
    let err = e.generate(request("a", 5)).unwrap_err();
    assert_eq!(err, EngineError::Overloaded { limit: 3 });
    drop(held);
    assert_eq!(
        e.in_flight(),
        0,
        "dropping a stream gives its place back at once"
    );
    e.generate_blocking(request("a", 2)).unwrap();
    wait_until("idle", || {
        let s = e.stats();
        s.waiting == 0 && s.running == 0 && s.kv.private == 0
    });
}

#[test]
fn a_dropped_queued_request_leaves_before_its_prefill() {
    let (e, _) = start(1, 8, Duration::from_millis(5));
    let running = e.generate(request("a", 40)).unwrap();
    wait_until("the first request to run", || e.stats().running == 1);
    let queued = e.generate(request("b c d e f", 5)).unwrap();
    wait_until("the second request to queue", || e.stats().waiting == 1);
    let computed_before = e.stats().counters.tokens_computed;
    drop(queued);
    wait_until("the queue to empty", || e.stats().waiting == 0);
    let c = running.collect_completion().unwrap();
    assert_eq!(c.usage.completion_tokens, 40);
    let s = e.stats();
    // The running request computed its own 1 prompt token and 39 decode inputs; the dropped
    // request's 5 prompt tokens were never computed.
    assert!(
        s.counters.tokens_computed - computed_before <= 40,
        "the dropped request was prefilled: {s:?}"
    );
    assert_eq!(s.counters.aborted, 1);
}

#[test]
fn abort_all_ends_every_stream_with_an_abort() {
    let (e, _) = start(2, 8, Duration::from_millis(2));
    let streams: Vec<_> = (0..4)
        .map(|_| e.generate(request("a", 200)).unwrap())
        .collect();
    wait_until("a request to run", || e.stats().running > 0);
    e.abort_all("the server is shutting down");
    for s in streams {
        let c = s.collect_completion().unwrap();
        match c.finish_reason {
            FinishReason::Abort { message } => assert!(message.contains("shutting down")),
            other => panic!("expected an abort, got {other:?}"),
        }
    }
    assert_eq!(e.in_flight(), 0);
}

#[test]
fn a_dead_scheduler_thread_fails_streams_and_refuses_new_requests() {
    let (e, die) = start(2, 8, Duration::from_millis(2));
    assert!(e.is_alive());
    let mut stream = e.generate(request("a", 100)).unwrap();
    assert!(matches!(stream.next(), Some(StreamEvent::Delta(_))));
    die.store(true, Ordering::Relaxed);
    let last = stream.by_ref().last().unwrap();
    assert_eq!(last, StreamEvent::Failed(EngineError::Closed));
    wait_until("the thread to end", || !e.is_alive());
    assert_eq!(e.in_flight(), 0);
    assert_eq!(
        e.generate(request("a", 1)).unwrap_err(),
        EngineError::Closed
    );
}

#[test]
fn a_stop_string_ends_the_request_and_is_cut_from_the_text() {
    let (e, _) = start(4, 8, Duration::ZERO);
    let mut r = request("a", 20);
    r.stop_strings = vec!["e f".into()];
    let c = e.generate_blocking(r).unwrap();
    // The fake continues a with b c d e f a ...; the text stops before "e f".
    assert_eq!(c.text, "b c d ");
    assert_eq!(
        c.finish_reason,
        FinishReason::Stop {
            token: None,
            text: Some("e f".into())
        }
    );
    assert_eq!(c.token_ids, vec![2, 3, 4, 5, 6]);
    assert_eq!(
        c.usage.completion_tokens, 5,
        "usage counts the tokens through the stop string, however far the scheduler ran: {c:?}"
    );
    wait_until("idle", || {
        let s = e.stats();
        s.running == 0 && s.kv.private == 0 && s.kv.protected == 0
    });
}

#[test]
fn the_eos_token_ends_generation_unless_ignored() {
    let (e, _) = start(4, 8, Duration::ZERO);
    let mut r = request("a", 20);
    r.stop.stop_token_ids = vec![4];
    let c = e.generate_blocking(r.clone()).unwrap();
    assert_eq!(
        c.token_ids,
        vec![2, 3, 4],
        "stops at the stop token, which is kept"
    );
    assert!(matches!(
        c.finish_reason,
        FinishReason::Stop { token: Some(4), .. }
    ));
    r.stop.min_new_tokens = 5;
    let c = e.generate_blocking(r).unwrap();
    assert_eq!(
        c.token_ids.len(),
        9,
        "min_new_tokens passes the first stop: {c:?}"
    );
}

#[test]
fn accounting_is_exact_after_mixed_outcomes_and_shutdown_ends_every_stream() {
    let (e, _) = start(2, 16, Duration::from_millis(1));
    let finished = e.generate_blocking(request("a b c", 6)).unwrap();
    assert_eq!(finished.usage.completion_tokens, 6);
    let dropped = e.generate(request("b c d", 50)).unwrap();
    wait_until("the dropped one to run", || e.stats().running > 0);
    drop(dropped);
    wait_until("idle", || {
        let s = e.stats();
        s.waiting == 0 && s.running == 0
    });
    let s = e.stats();
    assert_eq!(s.kv.private, 0);
    assert_eq!(s.kv.protected, 0);
    assert_eq!(s.kv.available + s.kv.evictable, s.kv.capacity, "{s:?}");
    let streams: Vec<_> = (0..3)
        .map(|_| e.generate(request("c", 200)).unwrap())
        .collect();
    e.shutdown();
    for st in streams {
        match st.collect_completion() {
            Ok(c) => assert!(
                matches!(c.finish_reason, FinishReason::Abort { .. }),
                "{c:?}"
            ),
            Err(err) => assert_eq!(err, EngineError::Closed),
        }
    }
    assert!(!e.is_alive());
    assert_eq!(
        e.generate(request("a", 1)).unwrap_err(),
        EngineError::Closed
    );
}

#[test]
fn a_grammar_constrains_the_output_and_a_bad_one_is_refused_before_queueing() {
    let (e, _) = start(4, 8, Duration::ZERO);
    let mut r = request("f", 10);
    r.grammar = Some(engine::GrammarSpec::Regex("[bc]{3}".into()));
    let done = e.generate_blocking(r).unwrap();
    assert_eq!(done.token_ids.len(), 3, "{:?}", done.token_ids);
    assert!(done.token_ids.iter().all(|t| [2, 3].contains(t)));
    assert!(matches!(done.finish_reason, FinishReason::Stop { .. }));
    // Free requests beside it are untouched.
    assert_eq!(
        e.generate_blocking(request("a b", 3)).unwrap().token_ids,
        vec![3, 4, 5]
    );
    let mut bad = request("a", 3);
    bad.grammar = Some(engine::GrammarSpec::JsonSchema(
        serde_json::json!({"type": 7}),
    ));
    match e.generate(bad) {
        Err(EngineError::InvalidRequest(m)) => assert!(m.contains("json_schema"), "{m}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
    assert_eq!(e.in_flight(), 0);
}
