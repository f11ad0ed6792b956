//! What the real-model engine tests share.

#![allow(dead_code, clippy::unwrap_used)]

use engine::{Engine, EngineConfig};
use std::time::{Duration, Instant};

/// The default model; panics (failing the test) when it is absent.
pub fn model_path() -> std::path::PathBuf {
    let p = EngineConfig::default().model;
    assert!(
        p.exists(),
        "{} not found: run `cargo xtask fetch-model` (cargo xtask test-all does)",
        p.display()
    );
    p
}

/// Waits until no request is queued or running, and returns the stats then.
pub fn wait_idle(e: &Engine) -> engine::EngineStats {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let s = e.stats();
        if s.waiting == 0 && s.running == 0 && s.kv.active_rows == 0 {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "engine did not become idle: {s:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until idle and checks that every slot is free or cached, none locked or private.
pub fn assert_idle_accounting(e: &Engine) -> engine::EngineStats {
    let s = wait_idle(e);
    assert_eq!(s.kv.protected, 0);
    assert_eq!(s.kv.private, 0);
    assert_eq!(s.kv.available + s.kv.evictable, s.kv.capacity, "{s:?}");
    s
}
