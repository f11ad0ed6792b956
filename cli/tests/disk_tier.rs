//! The disk tier through the real server: a restart comes back warm with identical greedy
//! output, the tier shows in `/get_server_info` and `/metrics`, `/flush_cache` empties it,
//! and `kill -9` at any moment of the shutdown snapshot leaves a directory that the next start
//! restores consistently (or discards), serving correctly with exact accounting.

#![allow(clippy::unwrap_used)]

mod common;

use common::{get, metric, post, start, wait_idle_and_check_accounting, Server, NEEDS_MODEL};
use serde_json::{json, Value};
use std::time::Duration;

fn prompt(topic: usize, lines: usize) -> String {
    let rules: Vec<String> = (0..lines)
        .map(|i| {
            format!(
                "Clause {i} of contract {topic}: payment is due in {} days.",
                topic + i
            )
        })
        .collect();
    format!(
        "{}\nQuestion: when is payment due?\nAnswer:",
        rules.join(" ")
    )
}

fn generate(s: &Server, text: &str) -> (String, u64) {
    let body = json!({
        "text": text,
        "sampling_params": {"max_new_tokens": 8, "temperature": 0}
    });
    let (status, v) = post(&s.base, "/generate", &body.to_string());
    assert_eq!(status, 200, "{v}");
    let cached = v["meta_info"]["cached_tokens"].as_u64().unwrap();
    (v["text"].as_str().unwrap().to_string(), cached)
}

fn with_tier(dir: &std::path::Path, policy: &str) -> Server {
    start(&[
        "--kv-cache-dir",
        dir.to_str().unwrap(),
        "--kv-cache-write-policy",
        policy,
    ])
}

fn block_files(dir: &std::path::Path) -> usize {
    std::fs::read_dir(dir.join("blocks")).map_or(0, |d| d.count())
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn a_restart_comes_back_warm_with_identical_output() {
    let _ = NEEDS_MODEL;
    let dir = tempfile::tempdir().unwrap();
    let texts: Vec<String> = (0..2).map(|t| prompt(t, 30)).collect();
    let reference: Vec<String> = {
        let s = start(&["--disable-radix-cache"]);
        texts.iter().map(|t| generate(&s, t).0).collect()
    };
    {
        let mut s = with_tier(dir.path(), "write_back");
        for (t, want) in texts.iter().zip(&reference) {
            assert_eq!(&generate(&s, t).0, want);
        }
        let (_, info) = get(&s.base, "/get_server_info");
        assert_eq!(info["kv_cache_disk"]["write_policy"], "write_back");
        assert_eq!(info["kv_cache_disk"]["restored_blocks"], 0);
        wait_idle_and_check_accounting(&s.base);
        s.assert_clean_log();
        s.signal("TERM");
        assert_eq!(s.wait_exit(Duration::from_secs(60)), Some(0));
    }
    assert!(
        block_files(dir.path()) > 0,
        "nothing was written at shutdown"
    );
    let s = with_tier(dir.path(), "write_back");
    let (_, info) = get(&s.base, "/get_server_info");
    assert!(
        info["kv_cache_disk"]["restored_blocks"].as_u64().unwrap() > 0,
        "{info}"
    );
    for (t, want) in texts.iter().zip(&reference) {
        let (text, cached) = generate(&s, t);
        assert_eq!(&text, want, "after the restart");
        assert!(
            cached >= 64,
            "the restored prefix was not reused ({cached} cached)"
        );
    }
    assert!(metric(&s.base, "disk_hit_tokens_total") > 0.0);
    assert!(metric(&s.base, "disk_loads_total") > 0.0);
    wait_idle_and_check_accounting(&s.base);
    let (status, _) = post(&s.base, "/flush_cache", "");
    assert_eq!(status, 200);
    assert_eq!(metric(&s.base, "disk_blocks"), 0.0);
    assert_eq!(block_files(dir.path()), 0, "/flush_cache left block files");
    s.assert_clean_log();
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn sigkill_during_the_snapshot_never_breaks_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let probe = prompt(100, 30);
    let want = {
        let s = start(&["--disable-radix-cache"]);
        generate(&s, &probe).0
    };
    // Killed at several moments after SIGTERM: before, during and after the snapshot (which
    // writes some 40 blocks of 1.5 MB here). Each start must serve correctly whatever it finds.
    let mut counts = Vec::new();
    for (round, delay_ms) in [0u64, 15, 30, 45, 90, 300].into_iter().enumerate() {
        let mut s = with_tier(dir.path(), "write_back");
        assert_eq!(generate(&s, &probe).0, want, "round {round}: wrong output");
        for k in 0..4 {
            generate(&s, &prompt(round * 10 + k, 25));
        }
        wait_idle_and_check_accounting(&s.base);
        s.assert_clean_log();
        s.signal("TERM");
        std::thread::sleep(Duration::from_millis(delay_ms));
        s.child.kill().unwrap();
        s.child.wait().unwrap();
        counts.push(block_files(dir.path()));
    }
    let s = with_tier(dir.path(), "write_back");
    let (text, _) = generate(&s, &probe);
    assert_eq!(text, want, "after the last kill");
    wait_idle_and_check_accounting(&s.base);
    assert_eq!(metric(&s.base, "disk_write_queue_bytes"), 0.0);
    let (_, info): (u16, Value) = get(&s.base, "/get_server_info");
    eprintln!(
        "block files after each kill: {counts:?}; restored {}",
        info["kv_cache_disk"]["restored_blocks"]
    );
    s.assert_clean_log();
}
