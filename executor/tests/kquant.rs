//! The formats people download, as llama.cpp writes them: a tiny random Llama quantised by
//! llama.cpp's own quantizer to Q4_K_M, Q5_K_M, Q3_K_M, Q6_K, Q5_1, IQ4_NL and Q2_K, and the
//! logits llama.cpp computes for each file (`fixtures/make_kquant_fixtures.py`).
//!
//! The CPU device's host model, loaded straight from each file's blocks, runs every projection
//! on the integer kernels and matches llama.cpp with the cache on and off; burn's forward on the
//! dequantised weights matches it too.

mod common;

use common::{load, logits_at, max_diff};
use executor::{load_host_weights, CpuBackend, KvDtype, LlamaModel, LlamaWeights};

/// The largest difference allowed from llama.cpp's logits (which reach 5.8 here, standard
/// deviation 1.6): llama.cpp quantises activations to 8 bits for its quantised products (per
/// 256 values for K-quants), radixserve per 32 values, and burn not at all. Burn's exact f32
/// products differ from llama.cpp's by up to 0.1 on these files: llama.cpp's own rounding.
const TOLERANCE: f32 = 0.15;
/// Where llama.cpp's best logit leads the next by more than this, the argmax must agree.
const CLEAR_LEAD: f32 = 0.3;

fn argmax(x: &[f32]) -> usize {
    (0..x.len()).fold(0, |best, i| if x[i] > x[best] { i } else { best })
}

/// Each position from scratch and, past `prefix`, on top of a cached prefix.
fn check(
    label: &str,
    m: &LlamaModel<CpuBackend>,
    tokens: &[u32],
    rows: &common::Rows,
    tol: f32,
) -> f32 {
    let prefix = 20;
    let mut worst = 0f32;
    let mut cached = m.new_kv_cache(tokens.len() + 1);
    logits_at(m, &mut cached, tokens, 0, prefix - 1);
    for (p, want) in rows {
        let mut kv = m.new_kv_cache(tokens.len() + 1);
        let got = logits_at(m, &mut kv, tokens, 0, *p);
        let d = max_diff(&got, want);
        assert!(d < tol, "{label} position {p}: cache off differs by {d}");
        worst = worst.max(d);
        let mut order: Vec<usize> = (0..want.len()).collect();
        order.sort_by(|&a, &b| want[b].total_cmp(&want[a]));
        if want[order[0]] - want[order[1]] > CLEAR_LEAD {
            assert_eq!(argmax(&got), order[0], "{label} position {p}: greedy token");
        }
        if *p >= prefix {
            let d = max_diff(&logits_at(m, &mut cached, tokens, prefix, *p), want);
            assert!(d < tol, "{label} position {p}: cache on differs by {d}");
            worst = worst.max(d);
        }
    }
    worst
}

#[test]
fn quantised_files_run_on_the_integer_kernels_and_match_llama_cpp() {
    let f = load("kquant");
    assert_eq!(f.models.len(), 7);
    for (file, rows) in &f.models {
        let path = f.dir.join(file);
        let host = load_host_weights::<CpuBackend>(&path, &Default::default()).expect("loads");
        let host = host.with_kv_dtype(KvDtype::F32).expect("f32 cache");
        let layouts = host.host_layouts();
        assert!(
            layouts.iter().all(|l| !l.contains("f32")),
            "{file}: {layouts:?}"
        );
        let worst = check(&format!("{file} host"), &host, &f.tokens, rows, TOLERANCE);
        let g = executor::GgufFile::open(&path).expect("opens");
        let weights = LlamaWeights::from_gguf(&g).expect("loads");
        let burn = LlamaModel::<CpuBackend>::new(weights, &Default::default()).expect("model");
        let worst_burn = check(&format!("{file} burn"), &burn, &f.tokens, rows, TOLERANCE);
        eprintln!("{file}: {layouts:?}; worst |Δlogit| host {worst:.4}, burn {worst_burn:.4}");
    }
}
