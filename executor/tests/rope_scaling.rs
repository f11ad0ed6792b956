//! Scaled RoPE against llama.cpp: tiny random Llama GGUFs with plain, linear, Llama 3.1
//! (`rope_freqs.weight`) and YaRN RoPE, and the logits llama.cpp computed for them over 160 positions
//! (past the original context of 64), made by `fixtures/make_rope_fixtures.py`. radixserve
//! matches them on burn's forward and on the host path, computing each position from scratch
//! (cache off) and extending a cached 80-token prefix (cache on). The Hugging Face `llama3`
//! formula gives the divisors the GGUF carries.

mod common;

use common::{check_against, check_host_model, load, max_diff};
use executor::{GgufFile, Llama3Scaling, LlamaConfig, LlamaWeights, RopeScaling};

fn weights(file: &str) -> LlamaWeights {
    let path = load("rope").dir.join(file);
    LlamaWeights::from_gguf(&GgufFile::open(&path).expect("gguf")).expect("weights")
}

#[test]
fn scaled_rope_matches_llama_cpp_with_the_cache_on_and_off() {
    let f = load("rope");
    assert_eq!(f.models.len(), 4);
    for (file, rows) in &f.models {
        check_against(file, weights(file), &f.tokens, rows, 80);
        check_host_model(file, &f.dir.join(file), &f.tokens, rows, 80);
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
