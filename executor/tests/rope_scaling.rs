//! Scaled RoPE against llama.cpp: tiny random Llama GGUFs with plain, linear and Llama 3.1
//! (`rope_freqs.weight`) RoPE, and the logits llama.cpp computed for them over 160 positions
//! (past the original context of 64), made by `fixtures/make_rope_fixtures.py`. radixserve
//! matches them on burn's forward and on the host path, computing each position from scratch
//! (cache off) and extending a cached 80-token prefix (cache on). The Hugging Face `llama3`
//! formula gives the divisors the GGUF carries.

use executor::{
    CpuBackend, GgufFile, KvDtype, Llama3Scaling, LlamaConfig, LlamaModel, LlamaWeights,
    RopeScaling,
};
use router::{ForwardBatch, ForwardMode, SequenceInput};
use std::path::PathBuf;

/// The largest difference allowed from llama.cpp's logits: both compute in f32 with an f32
/// K/V cache, in different orders.
const TOLERANCE: f32 = 2e-3;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/rope")
}

/// llama.cpp's logits at some positions: (position, logits).
type Rows = Vec<(usize, Vec<f32>)>;

struct Fixture {
    tokens: Vec<u32>,
    /// The positions' logits per model file.
    models: Vec<(String, Rows)>,
}

fn load() -> Fixture {
    let text = std::fs::read_to_string(fixtures().join("logits.json")).expect("fixture");
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
    Fixture { tokens, models }
}

fn weights(file: &str) -> LlamaWeights {
    let g = GgufFile::open(&fixtures().join(file)).expect("gguf");
    LlamaWeights::from_gguf(&g).expect("weights")
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn logits_at(
    m: &LlamaModel<CpuBackend>,
    kv: &mut executor::KvCache<CpuBackend>,
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

#[test]
fn scaled_rope_matches_llama_cpp_with_the_cache_on_and_off() {
    let f = load();
    assert_eq!(f.models.len(), 3);
    for (file, rows) in &f.models {
        let w = weights(file);
        let burn = LlamaModel::<CpuBackend>::new(w, &Default::default()).expect("model");
        let host = burn
            .clone()
            .with_host_kernels(8)
            .expect("host")
            .with_kv_dtype(KvDtype::F32)
            .expect("f32 cache");
        for (name, m) in [("burn", &burn), ("host", &host)] {
            // Cache on: an 80-token prefix computed once, every later position extends it.
            let mut cached_kv = m.new_kv_cache(256);
            logits_at(m, &mut cached_kv, &f.tokens, 0, 79);
            for (p, want) in rows {
                let mut kv = m.new_kv_cache(256);
                let off = logits_at(m, &mut kv, &f.tokens, 0, *p);
                let d = max_diff(&off, want);
                assert!(
                    d < TOLERANCE,
                    "{file} {name} position {p}: cache off differs by {d}"
                );
                if *p > 79 {
                    let on = logits_at(m, &mut cached_kv, &f.tokens, 80, *p);
                    let d = max_diff(&on, want);
                    assert!(
                        d < TOLERANCE,
                        "{file} {name} position {p}: cache on differs by {d}"
                    );
                }
            }
        }
    }
}

#[test]
fn the_llama3_formula_gives_the_divisors_llama3_gguf_files_carry() {
    let w = weights("llama3.gguf");
    let carried = w
        .config
        .rope_scaling
        .freq_factors
        .clone()
        .expect("rope_freqs");
    let computed = RopeScaling::llama3(
        10_000.0,
        8,
        Llama3Scaling {
            factor: 8.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position: 64.0,
        },
    );
    let computed = computed.freq_factors.expect("factors");
    assert!(
        max_diff(&carried, &computed) < 1e-6,
        "{carried:?} vs {computed:?}"
    );
    // And a Hugging Face config with that rope_scaling yields the same scaling.
    let dir = std::env::temp_dir().join(format!("radixserve-llama3-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let config = serde_json::json!({"model_type": "llama", "vocab_size": 64, "hidden_size": 32,
        "intermediate_size": 48, "num_hidden_layers": 2, "num_attention_heads": 4,
        "num_key_value_heads": 2, "rope_theta": 10000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                          "high_freq_factor": 4.0, "original_max_position_embeddings": 64}});
    std::fs::write(dir.join("config.json"), config.to_string()).expect("config");
    let (hf, _) = LlamaConfig::from_hf_config(&dir.join("config.json")).expect("llama3 config");
    let _ = std::fs::remove_dir_all(&dir);
    let hf = hf.rope_scaling.freq_factors.expect("factors");
    assert!(max_diff(&hf, &carried) < 1e-6);
    let linear = weights("linear.gguf").config.rope_scaling;
    assert_eq!(linear, RopeScaling::linear(4.0));
}
