//! Reference fixtures from llama.cpp: tiny random GGUFs and the logits llama.cpp computed for
//! them (`fixtures/make_*_fixtures.py`), and running radixserve's forward to compare.

#![allow(dead_code)]

use executor::{CpuBackend, KvCache, KvDtype, LlamaModel, LlamaWeights};
use router::{ForwardBatch, ForwardMode, SequenceInput};
use std::path::PathBuf;

/// The largest difference allowed from llama.cpp's logits: both compute in f32 with an f32
/// K/V cache, in different orders.
pub const TOLERANCE: f32 = 2e-3;

/// llama.cpp's logits at some positions: (position, logits).
pub type Rows = Vec<(usize, Vec<f32>)>;

/// One fixture file: the token ids and, per model file, llama.cpp's logits.
pub struct Fixture {
    pub dir: PathBuf,
    pub tokens: Vec<u32>,
    pub models: Vec<(String, Rows)>,
}

/// Loads `tests/fixtures/<dir>/logits.json`.
pub fn load(dir: &str) -> Fixture {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(dir);
    let text = std::fs::read_to_string(dir.join("logits.json")).expect("fixture");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let tokens = v["tokens"]
        .as_array()
        .expect("tokens")
        .iter()
        .map(|t| t.as_u64().expect("id") as u32)
        .collect();
    let models = v["models"]
        .as_object()
        .expect("models")
        .values()
        .map(|m| {
            let mut rows: Rows = m["logits"]
                .as_object()
                .expect("logits")
                .iter()
                .map(|(p, l)| {
                    let row = l.as_array().expect("row");
                    let row = row.iter().map(|x| x.as_f64().expect("f") as f32).collect();
                    (p.parse().expect("position"), row)
                })
                .collect();
            rows.sort_by_key(|r| r.0);
            (m["file"].as_str().expect("file").to_string(), rows)
        })
        .collect();
    Fixture {
        dir,
        tokens,
        models,
    }
}

pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The logits at position `p`, computing `tokens[cached..=p]` on top of the `cached` positions
/// already in `kv` (slot `i + 1` holds position `i`).
pub fn logits_at(
    m: &LlamaModel<CpuBackend>,
    kv: &mut KvCache<CpuBackend>,
    tokens: &[u32],
    cached: usize,
    p: usize,
) -> Vec<f32> {
    let slots: Vec<u32> = (1..=p as u32 + 1).collect();
    let seq = SequenceInput::new(
        tokens[cached..=p].to_vec(),
        &slots[..cached],
        &slots[cached..=p],
        true,
    );
    let batch = ForwardBatch {
        mode: ForwardMode::Extend,
        seqs: vec![seq],
    };
    m.forward(&batch, kv).expect("forward")[0]
        .clone()
        .expect("logits")
}

/// Checks `w` against llama.cpp's `rows` on burn's forward and on the host path (f32 K/V),
/// each position computed from scratch (cache off) and, past `prefix`, on top of a cached
/// prefix of that many positions (cache on).
pub fn check_against(label: &str, w: LlamaWeights, tokens: &[u32], rows: &Rows, prefix: usize) {
    let burn = LlamaModel::<CpuBackend>::new(w, &Default::default()).expect("model");
    let host = burn
        .clone()
        .with_host_kernels(8)
        .expect("host")
        .with_kv_dtype(KvDtype::F32)
        .expect("f32 cache");
    check_model(&format!("{label} burn"), &burn, tokens, rows, prefix);
    check_model(&format!("{label} host"), &host, tokens, rows, prefix);
}

/// Checks the CPU device's model of `path` (the host model loaded alone, f32 K/V) against
/// llama.cpp's `rows`, as [`check_against`] does.
pub fn check_host_model(
    label: &str,
    path: &std::path::Path,
    tokens: &[u32],
    rows: &Rows,
    prefix: usize,
) {
    let m = executor::load_host_weights::<CpuBackend>(path, &Default::default())
        .expect("host model loads")
        .with_kv_dtype(KvDtype::F32)
        .expect("f32 cache");
    check_model(&format!("{label} host model"), &m, tokens, rows, prefix);
}

/// `m` against llama.cpp's `rows`: each position from scratch (cache off) and, past
/// `prefix`, on top of a cached prefix of that many positions (cache on).
pub fn check_model(
    label: &str,
    m: &LlamaModel<CpuBackend>,
    tokens: &[u32],
    rows: &Rows,
    prefix: usize,
) {
    let mut cached_kv = m.new_kv_cache(tokens.len() + 1);
    logits_at(m, &mut cached_kv, tokens, 0, prefix - 1);
    for (p, want) in rows {
        let mut kv = m.new_kv_cache(tokens.len() + 1);
        let d = max_diff(&logits_at(m, &mut kv, tokens, 0, *p), want);
        assert!(
            d < TOLERANCE,
            "{label} position {p}: cache off differs by {d}"
        );
        if *p >= prefix {
            let d = max_diff(&logits_at(m, &mut cached_kv, tokens, prefix, *p), want);
            assert!(
                d < TOLERANCE,
                "{label} position {p}: cache on differs by {d}"
            );
        }
    }
}
