//! A tiny random Llama run through the paged executor vs an independent plain-loop reference.

use executor::{permute_for_interleaved_rope, HostMatrix, LayerWeights};
use executor::{CpuBackend, KvCache, LlamaConfig, LlamaModel, LlamaWeights, RopeStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use router::{ForwardBatch, ForwardMode, SequenceInput};

fn config(style: RopeStyle) -> LlamaConfig {
    LlamaConfig {
        vocab_size: 61,
        hidden_size: 32,
        intermediate_size: 48,
        num_layers: 2,
        num_heads: 4,
        num_kv_heads: 2,
        head_dim: 8,
        rms_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position: 64,
        rope_style: style,
        rope_scaling: Default::default(),
    }
}

fn mat(rng: &mut StdRng, rows: usize, cols: usize, scale: f32) -> HostMatrix {
    let data = (0..rows * cols)
        .map(|_| rng.gen_range(-1.0f32..1.0) * scale)
        .collect();
    HostMatrix::new(rows, cols, data).expect("shape")
}

fn vecr(rng: &mut StdRng, n: usize, base: f32, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|_| base + rng.gen_range(-1.0f32..1.0) * scale)
        .collect()
}

/// Random weights in Hugging Face layout (rotate-half RoPE), with q/k/v biases and an untied head.
fn random_weights(seed: u64, biases: bool, tied: bool) -> LlamaWeights {
    let c = config(RopeStyle::Neox);
    let mut rng = StdRng::seed_from_u64(seed);
    let (d, qo, kvo, ff) = (
        c.hidden_size,
        c.num_heads * c.head_dim,
        c.num_kv_heads * c.head_dim,
        c.intermediate_size,
    );
    let layers = (0..c.num_layers)
        .map(|_| LayerWeights {
            attn_norm: vecr(&mut rng, d, 1.0, 0.2),
            wq: mat(&mut rng, qo, d, 0.4),
            wk: mat(&mut rng, kvo, d, 0.4),
            wv: mat(&mut rng, kvo, d, 0.4),
            bq: biases.then(|| vecr(&mut rng, qo, 0.0, 0.3)),
            bk: biases.then(|| vecr(&mut rng, kvo, 0.0, 0.3)),
            bv: biases.then(|| vecr(&mut rng, kvo, 0.0, 0.3)),
            wo: mat(&mut rng, d, qo, 0.3),
            ffn_norm: vecr(&mut rng, d, 1.0, 0.2),
            w_gate: mat(&mut rng, ff, d, 0.3),
            w_up: mat(&mut rng, ff, d, 0.3),
            w_down: mat(&mut rng, d, ff, 0.3),
            q_norm: None,
            k_norm: None,
        })
        .collect();
    LlamaWeights {
        embedding: mat(&mut rng, c.vocab_size, d, 1.0),
        final_norm: vecr(&mut rng, d, 1.0, 0.2),
        lm_head: (!tied).then(|| mat(&mut rng, c.vocab_size, d, 0.5)),
        layers,
        config: c,
    }
}

// ---------------------------------------------------------------------------------------------
// Independent reference: plain f32 loops, HF conventions (rotate_half RoPE, repeat_kv GQA).

fn matvec(m: &HostMatrix, x: &[f32]) -> Vec<f32> {
    (0..m.rows)
        .map(|r| (0..m.cols).map(|c| m.data[r * m.cols + c] * x[c]).sum())
        .collect()
}

fn rmsnorm(x: &[f32], w: &[f32], eps: f32) -> Vec<f32> {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let inv = 1.0 / (ms + eps).sqrt();
    x.iter().zip(w).map(|(v, g)| v * inv * g).collect()
}

fn rope_rotate_half(x: &mut [f32], n_heads: usize, hd: usize, pos: usize, theta: f32) {
    for h in 0..n_heads {
        let head = &mut x[h * hd..(h + 1) * hd];
        for i in 0..hd / 2 {
            let ang = pos as f64 * (theta as f64).powf(-2.0 * i as f64 / hd as f64);
            let (s, c) = (ang.sin() as f32, ang.cos() as f32);
            let (a, b) = (head[i], head[i + hd / 2]);
            head[i] = a * c - b * s;
            head[i + hd / 2] = a * s + b * c;
        }
    }
}

fn add_bias(x: &mut [f32], b: &Option<Vec<f32>>) {
    if let Some(b) = b {
        for (v, bb) in x.iter_mut().zip(b) {
            *v += bb;
        }
    }
}

/// Logits at every position of `tokens`.
fn reference_forward(w: &LlamaWeights, tokens: &[u32]) -> Vec<Vec<f32>> {
    let c = &w.config;
    let (hd, nh, nkv) = (c.head_dim, c.num_heads, c.num_kv_heads);
    let d = c.hidden_size;
    let mut xs: Vec<Vec<f32>> = tokens
        .iter()
        .map(|&t| w.embedding.data[t as usize * d..(t as usize + 1) * d].to_vec())
        .collect();
    for l in &w.layers {
        let mut ks = Vec::new();
        let mut vs = Vec::new();
        let mut qs = Vec::new();
        for (pos, x) in xs.iter().enumerate() {
            let h = rmsnorm(x, &l.attn_norm, c.rms_eps);
            let mut q = matvec(&l.wq, &h);
            let mut k = matvec(&l.wk, &h);
            let mut v = matvec(&l.wv, &h);
            add_bias(&mut q, &l.bq);
            add_bias(&mut k, &l.bk);
            add_bias(&mut v, &l.bv);
            rope_rotate_half(&mut q, nh, hd, pos, c.rope_theta);
            rope_rotate_half(&mut k, nkv, hd, pos, c.rope_theta);
            qs.push(q);
            ks.push(k);
            vs.push(v);
        }
        for (pos, x) in xs.iter_mut().enumerate() {
            let mut attn = vec![0f32; nh * hd];
            for head in 0..nh {
                let kvh = head / (nh / nkv);
                let q = &qs[pos][head * hd..(head + 1) * hd];
                let scores: Vec<f32> = (0..=pos)
                    .map(|j| {
                        let k = &ks[j][kvh * hd..(kvh + 1) * hd];
                        q.iter().zip(k).map(|(a, b)| a * b).sum::<f32>() / (hd as f32).sqrt()
                    })
                    .collect();
                let m = scores.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = scores.iter().map(|s| (s - m).exp()).collect();
                let z: f32 = e.iter().sum();
                for (j, p) in e.iter().enumerate() {
                    for i in 0..hd {
                        attn[head * hd + i] += p / z * vs[j][kvh * hd + i];
                    }
                }
            }
            let o = matvec(&l.wo, &attn);
            for (a, b) in x.iter_mut().zip(&o) {
                *a += b;
            }
            let h = rmsnorm(x, &l.ffn_norm, c.rms_eps);
            let g = matvec(&l.w_gate, &h);
            let u = matvec(&l.w_up, &h);
            let act: Vec<f32> = g
                .iter()
                .zip(&u)
                .map(|(g, u)| g / (1.0 + (-g).exp()) * u)
                .collect();
            let down = matvec(&l.w_down, &act);
            for (a, b) in x.iter_mut().zip(&down) {
                *a += b;
            }
        }
    }
    let head = w.lm_head.as_ref().unwrap_or(&w.embedding);
    xs.iter()
        .map(|x| matvec(head, &rmsnorm(x, &w.final_norm, c.rms_eps)))
        .collect()
}

// ---------------------------------------------------------------------------------------------

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn model(w: LlamaWeights) -> LlamaModel<CpuBackend> {
    LlamaModel::new(w, &Default::default()).expect("model builds")
}

fn tokens(seed: u64, n: usize) -> Vec<u32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.gen_range(0..61)).collect()
}

fn batch(mode: ForwardMode, seqs: Vec<SequenceInput>) -> ForwardBatch {
    ForwardBatch { mode, seqs }
}

/// Interleaved-layout copy of HF weights, as llama.cpp's converter writes GGUF Llama files.
fn to_gguf_layout(mut w: LlamaWeights) -> LlamaWeights {
    let c = w.config.clone();
    for l in &mut w.layers {
        l.wq = permute_for_interleaved_rope(&l.wq, c.num_heads);
        l.wk = permute_for_interleaved_rope(&l.wk, c.num_kv_heads);
        let perm_bias = |b: &Option<Vec<f32>>, heads: usize| {
            b.as_ref().map(|b| {
                permute_for_interleaved_rope(
                    &HostMatrix::new(b.len(), 1, b.clone()).expect("shape"),
                    heads,
                )
                .data
            })
        };
        l.bq = perm_bias(&l.bq, c.num_heads);
        l.bk = perm_bias(&l.bk, c.num_kv_heads);
    }
    w.config.rope_style = RopeStyle::Interleaved;
    w
}

#[test]
fn single_prefill_matches_reference_for_both_rope_layouts() {
    for (biases, tied) in [(false, true), (true, false)] {
        let w = random_weights(11, biases, tied);
        let toks = tokens(5, 13);
        let reference = reference_forward(&w, &toks);
        // Burn path; host path (host KV pool); burn path with host-kernel projections.
        for (w_model, path) in [w.clone(), to_gguf_layout(w.clone())]
            .into_iter()
            .flat_map(|w| [(w.clone(), 0), (w.clone(), 1), (w, 2)])
        {
            let style = w_model.config.rope_style;
            let m = model(w_model)
                .with_host_kernels(if path == 0 { 0 } else { 64 })
                .expect("host kernels");
            let mut kv = if path == 2 {
                KvCache::new(m.config(), 40, m.device())
            } else {
                m.new_kv_cache(40)
            };
            assert_eq!(kv.is_host(), path == 1);
            let slots: Vec<u32> = (0..13).map(|i| 39 - 2 * i).collect();
            let out = m
                .forward(
                    &batch(
                        ForwardMode::Extend,
                        vec![SequenceInput::new(toks.clone(), &[], &slots, true)],
                    ),
                    &mut kv,
                )
                .expect("forward");
            let got = out[0].as_ref().expect("logits requested");
            let diff = max_diff(got, &reference[12]);
            eprintln!("biases={biases} tied={tied} {style:?} path {path}: max |diff| = {diff:e}");
            assert!(
                diff < 1e-4,
                "{style:?} biases={biases} path {path}: diff {diff}"
            );
        }
    }
}

#[test]
fn prefix_extend_and_decode_match_reference_at_every_position() {
    let w = random_weights(3, true, false);
    let toks = tokens(9, 20);
    let reference = reference_forward(&w, &toks);
    // Burn matmuls only, then the host kernel for projections of up to 8 rows (decode, extend).
    for (w_model, host_rows) in [(w.clone(), 0), (to_gguf_layout(w.clone()), 0), (w, 8)] {
        let m = model(w_model)
            .with_host_kernels(host_rows)
            .expect("host kernels");
        let mut kv = m.new_kv_cache(64);
        // Scattered, non-monotone slots.
        let slots: Vec<u32> = (0..20).map(|i| 1 + (i * 7) % 60).collect();
        // Prefix of 8 (logits at position 7), extend 6 (logits at 13), then decode 6 steps.
        let out = m
            .forward(
                &batch(
                    ForwardMode::Extend,
                    vec![SequenceInput::new(
                        toks[..8].to_vec(),
                        &[],
                        &slots[..8],
                        true,
                    )],
                ),
                &mut kv,
            )
            .expect("prefill");
        assert!(max_diff(out[0].as_ref().expect("logits"), &reference[7]) < 1e-4);
        let out = m
            .forward(
                &batch(
                    ForwardMode::Extend,
                    vec![SequenceInput::new(
                        toks[8..14].to_vec(),
                        &slots[..8],
                        &slots[8..14],
                        true,
                    )],
                ),
                &mut kv,
            )
            .expect("extend");
        let diff = max_diff(out[0].as_ref().expect("logits"), &reference[13]);
        assert!(diff < 1e-4, "extend diff {diff}");
        for p in 14..20 {
            let seq = SequenceInput::new(vec![toks[p]], &slots[..p], &slots[p..=p], true);
            let out = m
                .forward(&batch(ForwardMode::Decode, vec![seq]), &mut kv)
                .expect("decode");
            let diff = max_diff(out[0].as_ref().expect("logits"), &reference[p]);
            assert!(diff < 1e-4, "decode at {p}: diff {diff}");
        }
    }
}

#[test]
fn mixed_batch_of_extends_and_decodes_matches_reference() {
    let w = random_weights(21, false, true);
    let a = tokens(1, 9);
    let b = tokens(2, 15);
    let c = tokens(3, 5);
    let (ra, rb, rc) = (
        reference_forward(&w, &a),
        reference_forward(&w, &b),
        reference_forward(&w, &c),
    );
    for host_rows in [0, 64] {
        let m = model(w.clone())
            .with_host_kernels(host_rows)
            .expect("host kernels");
        let mut kv = m.new_kv_cache(64);
        let sa: Vec<u32> = (1..10).collect();
        let sb: Vec<u32> = (20..35).collect();
        let sc: Vec<u32> = (50..55).collect();
        // Step 1: a fully, b's first 10 tokens (a chunk: no logits), c's first 4.
        let step1 = vec![
            SequenceInput::new(a[..8].to_vec(), &[], &sa[..8], true),
            SequenceInput::new(b[..10].to_vec(), &[], &sb[..10], false),
            SequenceInput::new(c[..4].to_vec(), &[], &sc[..4], true),
        ];
        let out = m
            .forward(&batch(ForwardMode::Extend, step1), &mut kv)
            .expect("step1");
        assert!(out[1].is_none());
        assert!(max_diff(out[0].as_ref().expect("a"), &ra[7]) < 1e-4);
        assert!(max_diff(out[2].as_ref().expect("c"), &rc[3]) < 1e-4);
        // Step 2 (mixed): decode a and c, extend b's remaining 5 tokens.
        let step2 = vec![
            SequenceInput::new(vec![a[8]], &sa[..8], &sa[8..9], true),
            SequenceInput::new(b[10..].to_vec(), &sb[..10], &sb[10..], true),
            SequenceInput::new(vec![c[4]], &sc[..4], &sc[4..5], true),
        ];
        let out = m
            .forward(&batch(ForwardMode::Mixed, step2), &mut kv)
            .expect("step2");
        for (o, r) in out.iter().zip([&ra[8], &rb[14], &rc[4]]) {
            let diff = max_diff(o.as_ref().expect("logits"), r);
            assert!(diff < 1e-4, "mixed diff {diff} (host rows {host_rows})");
        }
    }
}

#[test]
fn shared_prefix_slots_are_read_not_recomputed() {
    // Sequence y reuses x's first 6 slots as its cached prefix: only its tail is computed.
    let w = random_weights(8, false, true);
    let x = tokens(4, 10);
    let mut y = x[..6].to_vec();
    y.extend(tokens(6, 4));
    let ry = reference_forward(&w, &y);
    let m = model(w);
    let mut kv = m.new_kv_cache(32);
    let sx: Vec<u32> = (1..11).collect();
    m.forward(
        &batch(
            ForwardMode::Extend,
            vec![SequenceInput::new(x, &[], &sx, false)],
        ),
        &mut kv,
    )
    .expect("x");
    let out = m
        .forward(
            &batch(
                ForwardMode::Extend,
                vec![SequenceInput::new(
                    y[6..].to_vec(),
                    &sx[..6],
                    &[20, 21, 22, 23],
                    true,
                )],
            ),
            &mut kv,
        )
        .expect("y");
    let diff = max_diff(out[0].as_ref().expect("logits"), &ry[9]);
    assert!(diff < 1e-4, "diff {diff}");
}

#[test]
fn invalid_batches_are_rejected_with_typed_errors() {
    let m = model(random_weights(1, false, true));
    let mut kv = m.new_kv_cache(16);
    let cases = vec![
        SequenceInput::new(vec![1, 2], &[], &[3], true), // slots/tokens mismatch
        SequenceInput::new(vec![1], &[], &[0], true),    // slot 0 reserved
        SequenceInput::new(vec![1], &[], &[16], true),   // outside the pool
        SequenceInput::new(vec![99], &[], &[2], true),   // token outside vocab
        SequenceInput::new(vec![1, 2], &[], &[4, 4], true), // slot written twice
        SequenceInput::new(vec![], &[], &[], true),      // nothing to compute
    ];
    for s in cases {
        let err = m
            .forward(&batch(ForwardMode::Extend, vec![s.clone()]), &mut kv)
            .expect_err("invalid");
        assert!(
            matches!(err, executor::ExecutorError::InvalidBatch(_)),
            "{s:?}: {err}"
        );
    }
    let mut bad_pos = SequenceInput::new(vec![1], &[3], &[4], true);
    bad_pos.positions = vec![0];
    assert!(m
        .forward(&batch(ForwardMode::Decode, vec![bad_pos]), &mut kv)
        .is_err());
}

/// Writes `w` (HF layout) as a Hugging Face directory: config.json, model.safetensors
/// (embedding as F16, the rest F32) and a small tokenizer.json.
fn write_hf_dir(w: &LlamaWeights, dir: &std::path::Path) {
    use safetensors::tensor::TensorView;
    use safetensors::Dtype;
    std::fs::create_dir_all(dir).expect("mkdir");
    let c = &w.config;
    let config = serde_json::json!({
        "model_type": "qwen2",
        "vocab_size": c.vocab_size,
        "hidden_size": c.hidden_size,
        "intermediate_size": c.intermediate_size,
        "num_hidden_layers": c.num_layers,
        "num_attention_heads": c.num_heads,
        "num_key_value_heads": c.num_kv_heads,
        "rms_norm_eps": c.rms_eps,
        "rope_theta": c.rope_theta,
        "max_position_embeddings": c.max_position,
        "tie_word_embeddings": w.lm_head.is_none(),
    });
    std::fs::write(dir.join("config.json"), config.to_string()).expect("config");
    let f32b = |v: &[f32]| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let emb16: Vec<u8> = w
        .embedding
        .data
        .iter()
        .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
        .collect();
    owned.push((
        "model.embed_tokens.weight".into(),
        Dtype::F16,
        vec![c.vocab_size, c.hidden_size],
        emb16,
    ));
    owned.push((
        "model.norm.weight".into(),
        Dtype::F32,
        vec![c.hidden_size],
        f32b(&w.final_norm),
    ));
    if let Some(h) = &w.lm_head {
        owned.push((
            "lm_head.weight".into(),
            Dtype::F32,
            vec![h.rows, h.cols],
            f32b(&h.data),
        ));
    }
    for (i, l) in w.layers.iter().enumerate() {
        let p = |s: &str| format!("model.layers.{i}.{s}");
        let mats = [
            ("self_attn.q_proj.weight", &l.wq),
            ("self_attn.k_proj.weight", &l.wk),
            ("self_attn.v_proj.weight", &l.wv),
            ("self_attn.o_proj.weight", &l.wo),
            ("mlp.gate_proj.weight", &l.w_gate),
            ("mlp.up_proj.weight", &l.w_up),
            ("mlp.down_proj.weight", &l.w_down),
        ];
        for (n, m) in mats {
            owned.push((p(n), Dtype::F32, vec![m.rows, m.cols], f32b(&m.data)));
        }
        let vecs = [
            ("input_layernorm.weight", Some(&l.attn_norm)),
            ("post_attention_layernorm.weight", Some(&l.ffn_norm)),
            ("self_attn.q_proj.bias", l.bq.as_ref()),
            ("self_attn.k_proj.bias", l.bk.as_ref()),
            ("self_attn.v_proj.bias", l.bv.as_ref()),
        ];
        for (n, v) in vecs {
            if let Some(v) = v {
                owned.push((p(n), Dtype::F32, vec![v.len()], f32b(v)));
            }
        }
    }
    let views: Vec<(String, TensorView<'_>)> = owned
        .iter()
        .map(|(n, dt, shape, bytes)| {
            (
                n.clone(),
                TensorView::new(*dt, shape.clone(), bytes).expect("view"),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors"))
        .expect("safetensors");
    // A tiny byte-level-free BPE tokenizer: "a", "b", "ab".
    let vocab: tokenizers::models::bpe::Vocab = [
        ("a".to_string(), 0u32),
        ("b".to_string(), 1),
        ("ab".to_string(), 2),
    ]
    .into_iter()
    .collect();
    let bpe = tokenizers::models::bpe::BPE::builder()
        .vocab_and_merges(vocab, vec![("a".to_string(), "b".to_string())])
        .build()
        .expect("bpe");
    tokenizers::Tokenizer::new(bpe)
        .save(dir.join("tokenizer.json"), false)
        .expect("tokenizer.json");
}

#[test]
fn hugging_face_directory_loads_and_matches_reference() {
    let mut w = random_weights(17, true, false);
    // The file stores the embedding as f16: the reference uses the same rounded values.
    for x in &mut w.embedding.data {
        *x = half::f16::from_f32(*x).to_f32();
    }
    let dir = std::env::temp_dir().join(format!("radixserve-executor-hf-{}", std::process::id()));
    write_hf_dir(&w, &dir);
    let (m, tok) = executor::load_hf_dir::<CpuBackend>(&dir, &Default::default()).expect("loads");
    assert_eq!(m.config().rope_style, RopeStyle::Neox);
    assert_eq!(tok.encode("abab").expect("encodes"), vec![2, 2]);
    let toks = tokens(13, 11);
    let reference = reference_forward(&w, &toks);
    let mut kv = m.new_kv_cache(16);
    let slots: Vec<u32> = (1..12).collect();
    let out = m
        .forward(
            &batch(
                ForwardMode::Extend,
                vec![SequenceInput::new(toks, &[], &slots, true)],
            ),
            &mut kv,
        )
        .expect("forward");
    let diff = max_diff(out[0].as_ref().expect("logits"), &reference[10]);
    eprintln!("HF directory: max |diff| = {diff:e}");
    assert!(diff < 1e-4, "diff {diff}");
    // A directory without weights is a typed error.
    std::fs::remove_file(dir.join("model.safetensors")).expect("rm");
    let err =
        executor::load_hf_dir::<CpuBackend>(&dir, &Default::default()).expect_err("no weights");
    assert!(matches!(err, executor::ExecutorError::NotFound(_)), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gguf_with_unsupported_architecture_is_rejected() {
    use executor::{gguf_writer as writer, GgufFile, GgufValue};
    let img = writer::build(
        &[("general.architecture", GgufValue::String("gpt2".into()))],
        &[],
    );
    let g = GgufFile::parse(img).expect("parses");
    let err = LlamaWeights::from_gguf(&g).expect_err("gpt2 is not llama");
    assert!(
        matches!(err, executor::ExecutorError::UnsupportedArchitecture(ref a) if a == "gpt2"),
        "{err}"
    );
}

#[test]
fn unsupported_rope_scaling_is_refused_by_name() {
    use executor::{gguf_writer as writer, GgufFile, GgufValue};
    let img = writer::build(
        &[
            ("general.architecture", GgufValue::String("llama".into())),
            ("llama.embedding_length", GgufValue::U32(32)),
            ("llama.attention.head_count", GgufValue::U32(4)),
            (
                "llama.rope.scaling.type",
                GgufValue::String("longrope".into()),
            ),
        ],
        &[],
    );
    let g = GgufFile::parse(img).expect("parses");
    let err = LlamaWeights::from_gguf(&g).expect_err("LongRoPE");
    assert!(err.to_string().contains("longrope"), "{err}");
    let dir = std::env::temp_dir().join(format!("radixserve-rope-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    for (scaling, named) in [
        (
            serde_json::json!({"rope_type": "longrope", "factor": 2.0}),
            "longrope",
        ),
        (
            serde_json::json!({"rope_type": "llama3", "factor": 8.0}),
            "low_freq_factor",
        ),
    ] {
        let config = serde_json::json!({"model_type": "llama", "vocab_size": 61,
            "hidden_size": 32, "intermediate_size": 48, "num_hidden_layers": 2,
            "num_attention_heads": 4, "rope_scaling": scaling});
        std::fs::write(dir.join("config.json"), config.to_string()).expect("config");
        let err = LlamaConfig::from_hf_config(&dir.join("config.json")).expect_err("refused");
        assert!(err.to_string().contains(named), "{err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// log softmax(x)[i], in f64.
fn log_softmax_at(x: &[f32], i: usize) -> f32 {
    let m = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let s: f64 = x.iter().map(|&v| ((v - m) as f64).exp()).sum();
    (x[i] - m) - s.ln() as f32
}

#[test]
fn scored_rows_give_the_reference_logprobs_on_every_path() {
    let w = random_weights(21, true, false);
    let toks = tokens(9, 40);
    let reference = reference_forward(&w, &toks);
    for path in 0..3 {
        let m = model(w.clone())
            .with_host_kernels(if path == 0 { 0 } else { 64 })
            .expect("host kernels");
        let mut kv = if path == 2 {
            KvCache::new(m.config(), 48, m.device())
        } else {
            m.new_kv_cache(48)
        };
        let slots: Vec<u32> = (1..=40).collect();
        let mut seq = SequenceInput::new(toks.clone(), &[], &slots, true);
        // Every row scores the token after it (more targets than one block of the head).
        seq.logprob_targets = (0..39).map(|r| (r, toks[r + 1])).collect();
        seq.sampling.top_logprobs = 3;
        let (last, scored) = m
            .forward_scored(&batch(ForwardMode::Extend, vec![seq]), &mut kv)
            .expect("forward");
        assert!(last[0].is_some(), "the last row still samples");
        assert_eq!(scored[0].len(), 39);
        for (r, s) in scored[0].iter().enumerate() {
            assert_eq!(s.token, toks[r + 1]);
            let want = log_softmax_at(&reference[r], toks[r + 1] as usize);
            let got = s.logprob.expect("scored");
            assert!(
                (got - want).abs() < 1e-4,
                "path {path} row {r}: {got} vs {want}"
            );
            let top = &s.alternatives.as_ref().expect("asked").top;
            assert_eq!(top.len(), 3);
            let best =
                reference[r]
                    .iter()
                    .enumerate()
                    .fold(
                        (0, f32::NEG_INFINITY),
                        |b, (i, &v)| if v > b.1 { (i, v) } else { b },
                    );
            assert_eq!(top[0].0 as usize, best.0, "path {path} row {r}");
        }
    }
}
