//! Qwen3 (per-head q/k RMSNorm before RoPE, a head dimension unlike hidden / heads) and
//! Qwen2/2.5 (Q/K/V biases) against llama.cpp: a tiny random model of each as a GGUF and as a
//! Hugging Face checkpoint in BF16 split over two safetensors shards, and the logits llama.cpp
//! computed from the GGUF (`fixtures/make_qwen3_fixtures.py [--arch qwen2 [--dynamic 4]]`), also
//! for dynamic NTK RoPE scaling. Both files load to
//! the same weights and match llama.cpp on burn's forward, the host kernels beside it and the
//! CPU device's host model loaded alone, with the cache on and off.

mod common;

use common::{check_against, check_host_model, load};
use executor::{GgufFile, LlamaWeights};

#[test]
fn qwen3_from_gguf_and_sharded_bf16_safetensors_matches_llama_cpp() {
    let f = load("qwen3");
    let (file, rows) = &f.models[0];
    let gguf = LlamaWeights::from_gguf(&GgufFile::open(&f.dir.join(file)).expect("gguf"))
        .expect("GGUF weights");
    let hf = LlamaWeights::from_hf_dir(&f.dir.join("hf")).expect("safetensors weights");
    assert_eq!(gguf.config, hf.config, "the two files describe one model");
    assert_eq!(gguf.config.head_dim, 16);
    assert!(gguf
        .layers
        .iter()
        .all(|l| l.q_norm.is_some() && l.k_norm.is_some()));
    assert_eq!(
        gguf.layers[1].wq, hf.layers[1].wq,
        "BF16 holds the same values"
    );
    check_against("qwen3.gguf", gguf, &f.tokens, rows, 48);
    check_against("qwen3 safetensors", hf, &f.tokens, rows, 48);
    // The CPU device's model, loaded alone: the BF16 checkpoint's matrices stay BF16.
    check_host_model("qwen3.gguf", &f.dir.join(file), &f.tokens, rows, 48);
    let hf_dir = f.dir.join("hf");
    check_host_model("qwen3 safetensors", &hf_dir, &f.tokens, rows, 48);
    let m = executor::load_host_weights::<executor::CpuBackend>(&hf_dir, &Default::default())
        .expect("loads");
    assert!(
        m.host_layouts().iter().all(|l| l == "bf16"),
        "{:?}",
        m.host_layouts()
    );
}

#[test]
fn qwen2_with_qkv_biases_from_gguf_and_sharded_bf16_safetensors_matches_llama_cpp() {
    let f = load("qwen2");
    let (file, rows) = &f.models[0];
    let gguf = LlamaWeights::from_gguf(&GgufFile::open(&f.dir.join(file)).expect("gguf"))
        .expect("GGUF weights");
    let hf = LlamaWeights::from_hf_dir(&f.dir.join("hf")).expect("safetensors weights");
    assert_eq!(gguf.config, hf.config, "the two files describe one model");
    assert!(gguf
        .layers
        .iter()
        .all(|l| l.bq.is_some() && l.bk.is_some() && l.bv.is_some() && l.q_norm.is_none()));
    assert_eq!(
        gguf.layers[1].bk, hf.layers[1].bk,
        "BF16 holds the same values"
    );
    check_against("qwen2.gguf", gguf, &f.tokens, rows, 48);
    check_against("qwen2 safetensors", hf, &f.tokens, rows, 48);
    check_host_model("qwen2.gguf", &f.dir.join(file), &f.tokens, rows, 48);
    check_host_model("qwen2 safetensors", &f.dir.join("hf"), &f.tokens, rows, 48);
}

#[test]
fn dynamic_ntk_scaling_matches_llama_cpp_at_the_base_sglang_raises_it_to() {
    // The checkpoint asks for dynamic NTK scaling by 4 over an original context of 32; the
    // GGUF llama.cpp computed the reference from carries plain RoPE with the raised base.
    let f = load("qwen2_dynamic");
    let (_, rows) = &f.models[0];
    let hf_dir = f.dir.join("hf");
    let hf = LlamaWeights::from_hf_dir(&hf_dir).expect("safetensors weights");
    assert_eq!(
        hf.config.max_position, 128,
        "the context is 4 times the original"
    );
    assert!(
        f.tokens.len() > 32,
        "positions past the original context are checked"
    );
    check_against("qwen2 dynamic safetensors", hf, &f.tokens, rows, 48);
    check_host_model("qwen2 dynamic safetensors", &hf_dir, &f.tokens, rows, 48);
}
