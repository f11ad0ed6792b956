//! Prometheus `/metrics`: the engine's counters and gauges, the HTTP layer's latency histograms,
//! and the server's own limits at work (refusals, in-flight requests, namespaces).

use super::Shared;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use engine::Completion;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// `GET /metrics`.
pub async fn metrics(State(st): State<Shared>) -> Response {
    let s = st.engine.stats();
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, v: u64| {
        out.push_str(&format!("# HELP radixserve_{name} {help}\n# TYPE radixserve_{name} counter\nradixserve_{name} {v}\n"));
    };
    counter(
        "prefix_cache_query_tokens_total",
        "Prompt tokens looked up in the prefix cache at admission.",
        s.counters.prefix_query_tokens,
    );
    counter(
        "prefix_cache_hit_tokens_total",
        "Prompt tokens found in the prefix cache at admission.",
        s.counters.prefix_hit_tokens,
    );
    counter(
        "requests_total",
        "Requests accepted by the scheduler.",
        s.counters.requests,
    );
    counter(
        "requests_finished_total",
        "Requests finished for any reason.",
        s.counters.finished,
    );
    counter(
        "requests_aborted_total",
        "Requests aborted.",
        s.counters.aborted,
    );
    counter(
        "generated_tokens_total",
        "Tokens generated.",
        s.counters.tokens_generated,
    );
    counter(
        "computed_tokens_total",
        "Tokens computed by the model.",
        s.counters.tokens_computed,
    );
    counter(
        "retractions_total",
        "Requests retracted under memory pressure.",
        s.counters.retractions,
    );
    counter(
        "evicted_tokens_total",
        "Cached tokens evicted.",
        s.cache.tokens_evicted,
    );
    let mut gauge = |name: &str, help: &str, v: usize| {
        out.push_str(&format!("# HELP radixserve_{name} {help}\n# TYPE radixserve_{name} gauge\nradixserve_{name} {v}\n"));
    };
    gauge("num_waiting_requests", "Requests waiting.", s.waiting);
    gauge("num_running_requests", "Requests admitted.", s.running);
    gauge("kv_capacity_tokens", "KV slots in the pool.", s.kv.capacity);
    gauge("kv_free_tokens", "KV slots free.", s.kv.available);
    gauge(
        "kv_cached_evictable_tokens",
        "KV slots holding evictable cached prefixes.",
        s.kv.evictable,
    );
    gauge(
        "kv_cached_locked_tokens",
        "KV slots holding cached prefixes in use.",
        s.kv.protected,
    );
    gauge(
        "kv_private_tokens",
        "KV slots owned by running requests.",
        s.kv.private,
    );
    gauge(
        "cache_namespaces",
        "Cache namespaces alive in the radix tree (the shared one included).",
        s.namespaces,
    );
    gauge(
        "requests_in_flight",
        "Engine requests submitted and not yet ended.",
        st.engine.in_flight(),
    );
    gauge(
        "requests_in_flight_limit",
        "Most engine requests in flight (running plus queued).",
        st.engine.max_in_flight(),
    );
    if let Some(t) = s.tier {
        render_tier(&t, &mut out);
    }
    st.metrics.render(&mut out);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out).into_response()
}

/// The disk tier's counters and gauges (only with `--kv-cache-dir`). Prompt tokens it served
/// are part of `prefix_cache_hit_tokens_total` too: that counts hits in every tier.
fn render_tier(t: &engine::TierStats, out: &mut String) {
    let metrics = [
        (
            "counter",
            "disk_hit_tokens_total",
            "Prompt tokens loaded from the disk tier at admission.",
            t.hit_tokens.to_string(),
        ),
        (
            "counter",
            "disk_loads_total",
            "Prefixes loaded from the disk tier.",
            t.loads.to_string(),
        ),
        (
            "counter",
            "disk_load_seconds_total",
            "Seconds spent loading prefixes from the disk tier (read, check, copy into the pool).",
            t.load_seconds.to_string(),
        ),
        (
            "counter",
            "disk_blocks_written_total",
            "K/V blocks written to the disk tier.",
            t.blocks_written.to_string(),
        ),
        (
            "counter",
            "disk_bytes_written_total",
            "Bytes written to the disk tier.",
            t.bytes_written.to_string(),
        ),
        (
            "counter",
            "disk_blocks_read_total",
            "K/V blocks read from the disk tier.",
            t.blocks_read.to_string(),
        ),
        (
            "counter",
            "disk_bytes_read_total",
            "Bytes read from the disk tier.",
            t.bytes_read.to_string(),
        ),
        (
            "counter",
            "disk_writes_dropped_total",
            "K/V blocks not written: the write queue was full or the write failed.",
            t.writes_dropped.to_string(),
        ),
        (
            "counter",
            "disk_blocks_evicted_total",
            "K/V blocks deleted to keep the disk tier within its bound.",
            t.blocks_evicted.to_string(),
        ),
        (
            "counter",
            "disk_corrupt_blocks_total",
            "Block files found damaged, half-written or foreign, and deleted.",
            t.corrupt_blocks.to_string(),
        ),
        (
            "gauge",
            "disk_blocks",
            "K/V blocks on disk.",
            t.blocks.to_string(),
        ),
        (
            "gauge",
            "disk_bytes",
            "Bytes of K/V blocks on disk.",
            t.bytes.to_string(),
        ),
        (
            "gauge",
            "disk_capacity_bytes",
            "The disk tier's size bound.",
            t.capacity_bytes.to_string(),
        ),
        (
            "gauge",
            "disk_restored_blocks",
            "Blocks found on disk at start.",
            t.restored_blocks.to_string(),
        ),
        (
            "gauge",
            "disk_write_queue_bytes",
            "Bytes waiting to be written.",
            t.pending_bytes.to_string(),
        ),
    ];
    for (kind, name, help, v) in metrics {
        out.push_str(&format!(
            "# HELP radixserve_{name} {help}\n# TYPE radixserve_{name} {kind}\nradixserve_{name} {v}\n"
        ));
    }
}

const BUCKETS: [f64; 12] = [
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Default)]
struct Histogram {
    counts: [u64; BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Histogram {
    fn observe(&mut self, v: f64) {
        for (c, b) in self.counts.iter_mut().zip(BUCKETS) {
            if v <= b {
                *c += 1;
            }
        }
        self.count += 1;
        self.sum += v;
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        out.push_str(&format!(
            "# HELP radixserve_{name} {help}\n# TYPE radixserve_{name} histogram\n"
        ));
        for (c, b) in self.counts.iter().zip(BUCKETS) {
            out.push_str(&format!("radixserve_{name}_bucket{{le=\"{b}\"}} {c}\n"));
        }
        out.push_str(&format!(
            "radixserve_{name}_bucket{{le=\"+Inf\"}} {}\nradixserve_{name}_sum {}\nradixserve_{name}_count {}\n",
            self.count, self.sum, self.count
        ));
    }
}

/// The HTTP layer's own metrics.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<MetricsInner>,
    refused: AtomicU64,
}

#[derive(Default)]
struct MetricsInner {
    http_requests: u64,
    ttft: Histogram,
    e2e: Histogram,
    prompt_tokens: u64,
    cached_tokens: u64,
}

impl Metrics {
    /// Counts a request refused by a limit.
    pub fn refused(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a generation request.
    pub fn request_started(&self) {
        if let Ok(mut m) = self.inner.lock() {
            m.http_requests += 1;
        }
    }

    /// Records a finished choice's latencies and tokens.
    pub fn observe(&self, c: &Completion) {
        if let Ok(mut m) = self.inner.lock() {
            if let Some(t) = c.time_to_first_token {
                m.ttft.observe(t);
            }
            m.e2e.observe(c.e2e_latency);
            m.prompt_tokens += c.usage.prompt_tokens as u64;
            m.cached_tokens += c.usage.cached_tokens as u64;
        }
    }

    fn render(&self, out: &mut String) {
        out.push_str(&format!(
            "# HELP radixserve_http_refused_total Requests refused by a limit (413, 408, 415, 503).\n# TYPE radixserve_http_refused_total counter\nradixserve_http_refused_total {}\n",
            self.refused.load(Ordering::Relaxed)
        ));
        if let Ok(m) = self.inner.lock() {
            out.push_str(&format!(
                "# HELP radixserve_http_generation_requests_total Generation requests served over HTTP.\n# TYPE radixserve_http_generation_requests_total counter\nradixserve_http_generation_requests_total {}\n",
                m.http_requests
            ));
            out.push_str(&format!(
                "# HELP radixserve_prompt_tokens_total Prompt tokens of finished requests.\n# TYPE radixserve_prompt_tokens_total counter\nradixserve_prompt_tokens_total {}\n# HELP radixserve_cached_prompt_tokens_total Cached prompt tokens of finished requests.\n# TYPE radixserve_cached_prompt_tokens_total counter\nradixserve_cached_prompt_tokens_total {}\n",
                m.prompt_tokens, m.cached_tokens
            ));
            m.ttft
                .render("time_to_first_token_seconds", "Time to first token.", out);
            m.e2e.render(
                "e2e_request_latency_seconds",
                "End-to-end request latency.",
                out,
            );
        }
    }
}
