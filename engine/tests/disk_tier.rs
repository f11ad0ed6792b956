//! The disk tier on the real default model: greedy outputs are identical with the cache off,
//! in memory, loaded back from disk after eviction, and after a restart that restored the
//! cache; a directory written under another layout is discarded, never read.
//! `#[ignore]`d in a plain `cargo test` (they need the model file); `cargo xtask test-all`
//! fetches the model and runs them.

#![allow(clippy::unwrap_used)]

mod common;

use common::{assert_idle_accounting, model_path};

use engine::{
    ChatMessage, Engine, EngineConfig, GenerateRequest, Input, SamplingParams, WritePolicy,
};
use std::path::Path;

/// A pool of about 700 tokens (f16 K/V of this model is 23,040 bytes per token), so that a
/// few long prompts evict each other.
fn config(dir: Option<&Path>, policy: WritePolicy, disable_cache: bool) -> EngineConfig {
    EngineConfig {
        model: model_path(),
        disable_radix_cache: disable_cache,
        kv_cache_memory: 16 << 20,
        max_running_requests: 4,
        chunked_prefill_size: Some(256),
        check_invariants: true,
        kv_cache_dir: dir.map(Path::to_path_buf),
        kv_cache_write_policy: policy,
        ..EngineConfig::default()
    }
}

fn system_prompt(topic: usize) -> String {
    (0..24)
        .map(|i| {
            format!(
                "Guideline {i} for desk {topic}: reply briefly, name the form {}.",
                topic * 31 + i
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Real prompts: chats over three long system prompts and a long plain-text prompt.
fn prompts() -> Vec<Input> {
    let mut out: Vec<Input> = (0..3)
        .map(|t| {
            Input::Chat(vec![
                ChatMessage::new("system", system_prompt(t)),
                ChatMessage::new("user", format!("Which form do I need for request {t}?")),
            ])
        })
        .collect();
    out.push(Input::Text(format!(
        "{}\nIn one sentence, the most important guideline is",
        system_prompt(9)
    )));
    out
}

fn greedy_tokens(e: &Engine, input: &Input) -> Vec<u32> {
    let mut r = GenerateRequest::new(input.clone());
    r.sampling = SamplingParams::greedy();
    r.stop.max_new_tokens = 12;
    e.generate_blocking(r).unwrap().token_ids
}

fn disk_hits(e: &Engine) -> u64 {
    assert_idle_accounting(e).tier.unwrap().hit_tokens
}

fn check_tier(policy: WritePolicy) {
    let dir = tempfile::tempdir().unwrap();
    let prompts = prompts();
    let reference: Vec<Vec<u32>> = {
        let off = Engine::new(config(None, policy, true)).unwrap();
        prompts.iter().map(|p| greedy_tokens(&off, p)).collect()
    };
    {
        let e = Engine::new(config(Some(dir.path()), policy, false)).unwrap();
        assert_eq!(e.info().disk_tier.as_ref().unwrap().restored_blocks, 0);
        // Cold, then again: each prompt's second run follows the other three, which evicted it
        // from the small pool, so it comes back from disk.
        for round in 0..2 {
            for (p, want) in prompts.iter().zip(&reference) {
                assert_eq!(&greedy_tokens(&e, p), want, "round {round}: {p:?}");
            }
        }
        assert!(disk_hits(&e) > 0, "nothing was loaded from disk");
        let s = assert_idle_accounting(&e).tier.unwrap();
        assert_eq!(s.corrupt_blocks, 0);
        // Dropping the engine writes the cache out for the next start.
    }
    let e = Engine::new(config(Some(dir.path()), policy, false)).unwrap();
    assert!(e.info().disk_tier.as_ref().unwrap().restored_blocks > 0);
    for (p, want) in prompts.iter().zip(&reference).rev() {
        assert_eq!(&greedy_tokens(&e, p), want, "after restart: {p:?}");
    }
    assert!(disk_hits(&e) > 0, "the restored cache was not used");
    // A flush empties every tier.
    e.flush_cache().unwrap();
    let s = assert_idle_accounting(&e).tier.unwrap();
    assert_eq!((s.blocks, s.bytes), (0, 0));
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn greedy_outputs_identical_in_memory_from_disk_and_after_restore_write_through() {
    check_tier(WritePolicy::WriteThrough);
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn greedy_outputs_identical_in_memory_from_disk_and_after_restore_write_back() {
    check_tier(WritePolicy::WriteBack);
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn a_directory_from_another_layout_is_discarded() {
    let dir = tempfile::tempdir().unwrap();
    let prompt = &prompts()[0];
    let want = {
        let e = Engine::new(config(Some(dir.path()), WritePolicy::WriteThrough, false)).unwrap();
        greedy_tokens(&e, prompt)
    };
    let other = EngineConfig {
        page_size: 4,
        ..config(Some(dir.path()), WritePolicy::WriteThrough, false)
    };
    let e = Engine::new(other).unwrap();
    assert_eq!(e.info().disk_tier.as_ref().unwrap().restored_blocks, 0);
    let s = assert_idle_accounting(&e).tier.unwrap();
    assert!(
        s.corrupt_blocks > 0,
        "the foreign blocks were not discarded"
    );
    assert_eq!(greedy_tokens(&e, prompt), want);
    assert_eq!(disk_hits(&e), 0);
}
