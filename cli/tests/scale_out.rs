//! Two replicas behind SGLang's own router (`pip install sglang-router`, cache-aware policy), on
//! loopback: each prefix group stays on one replica, a client that uses the router's model id
//! is served, and a killed replica is routed around.

#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use serde_json::{json, Value};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The router process; killed when dropped.
struct Router {
    child: Child,
    base: String,
}

impl Drop for Router {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn launch_router(workers: &[&str]) -> Router {
    let has_router = Command::new("python3")
        .args(["-c", "import sglang_router"])
        .status()
        .is_ok_and(|s| s.success());
    assert!(
        has_router,
        "the `sglang-router` Python package is not installed (pip install sglang-router==0.3.2; \
         .ci/run installs it)"
    );
    let port = free_port().to_string();
    let metrics_port = free_port().to_string();
    let log = std::env::temp_dir().join(format!(
        "radixserve-router-{}-{port}.log",
        std::process::id()
    ));
    let mut cmd = Command::new("python3");
    cmd.args([
        "-m",
        "sglang_router.launch_router",
        "--host",
        "127.0.0.1",
        "--port",
        &port,
    ])
    .arg("--worker-urls")
    .args(workers)
    .args([
        "--policy",
        "cache_aware",
        "--health-check-interval-secs",
        "1",
        "--health-failure-threshold",
        "1",
        "--prometheus-host",
        "127.0.0.1",
        "--prometheus-port",
        &metrics_port,
        "--log-level",
        "warn",
    ])
    .stdout(Stdio::null())
    .stderr(std::fs::File::create(&log).unwrap());
    let router = Router {
        child: cmd.spawn().unwrap(),
        base: format!("http://127.0.0.1:{port}"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // Connection refused until it listens; an error status until it has seen a worker.
        if let Ok(r) = agent().get(&format!("{}/v1/models", router.base)).call() {
            let v: Value =
                serde_json::from_str(&r.into_string().unwrap_or_default()).unwrap_or_default();
            if v["data"][0]["id"].is_string() {
                return router;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the router did not come up: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// A long system prompt per group, so groups differ from their first tokens on.
fn system_prompt(group: usize) -> String {
    let topics = [
        "astronomy",
        "gardening",
        "chess openings",
        "medieval history",
    ];
    format!(
        "You are an expert on {}. {}",
        topics[group],
        format!(
            "Answer questions about {} carefully and briefly. ",
            topics[group]
        )
        .repeat(12)
    )
}

fn ask(base: &str, model: &str, group: usize, q: usize) -> (u16, Value) {
    let body = json!({
        "model": model, "max_tokens": 2, "temperature": 0,
        "messages": [{"role": "system", "content": system_prompt(group)},
                     {"role": "user", "content": format!("Question number {q}?")}]
    });
    post(base, "/v1/chat/completions", &body.to_string())
}

#[test]
#[ignore = "needs the default model: run `cargo xtask fetch-model`"]
fn two_replicas_behind_sglang_router_keep_prefix_groups_and_survive_a_killed_replica() {
    let a = start(&["--served-model-name", "smol"]);
    let b = start(&["--served-model-name", "smol"]);
    let router = launch_router(&[&a.base, &b.base]);
    let (_, models) = get(&router.base, "/v1/models");
    let model = models["data"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        model, "smol",
        "the router names the model by the replicas' served name"
    );
    let count = |s: &Server| metric(&s.base, "requests_total");
    for group in 0..4 {
        let before = (count(&a), count(&b));
        for q in 0..4 {
            let (st, v) = ask(&router.base, &model, group, q);
            assert_eq!(st, 200, "group {group} question {q}: {v}");
        }
        let after = (count(&a), count(&b));
        let served = (after.0 - before.0, after.1 - before.1);
        assert!(
            served == (4.0, 0.0) || served == (0.0, 4.0),
            "group {group} was split across replicas: {served:?}"
        );
    }
    // The later requests of a group found its prefix cached on its replica.
    let hits = metric(&a.base, "prefix_cache_hit_tokens_total")
        + metric(&b.base, "prefix_cache_hit_tokens_total");
    assert!(
        hits > 4.0 * 3.0 * 100.0,
        "prefix hits through the router: {hits}"
    );
    // The other routes pass through the router too (it re-sends requests with SGLang's
    // extension fields at their defaults, which radixserve accepts).
    for (path, body) in [
        (
            "/v1/completions",
            json!({"model": model, "prompt": "Hello", "max_tokens": 2}),
        ),
        (
            "/generate",
            json!({"text": "Hello", "sampling_params": {"max_new_tokens": 2}}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": model, "messages": [{"role": "user", "content": "Hi"}],
                "max_tokens": 2, "stream": true}),
        ),
    ] {
        let r = agent()
            .post(&format!("{}{path}", router.base))
            .set("Content-Type", "application/json")
            .send_string(&body.to_string());
        let status = r.as_ref().map_or_else(
            |e| match e {
                ureq::Error::Status(code, _) => *code,
                ureq::Error::Transport(_) => 0,
            },
            |r| r.status(),
        );
        let text = r
            .map(|r| r.into_string().unwrap_or_default())
            .unwrap_or_else(|e| match e {
                ureq::Error::Status(_, r) => r.into_string().unwrap_or_default(),
                ureq::Error::Transport(t) => t.to_string(),
            });
        assert_eq!(status, 200, "{path} through the router: {text}");
    }
    // A killed replica is routed around.
    drop(b);
    std::thread::sleep(Duration::from_secs(3));
    for q in 0..4 {
        let (st, v) = ask(&router.base, &model, q % 4, 10 + q);
        assert_eq!(st, 200, "after the kill: {v}");
    }
    wait_idle_and_check_accounting(&a.base);
}
