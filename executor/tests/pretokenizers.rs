//! GGUF byte-level BPE vocabularies with Llama 3's and Qwen2's pre-tokenizers encode exactly as
//! Hugging Face `tokenizers` does with the pre-tokenizer those models declare. The tiny
//! vocabularies were trained with `tokenizers` and written with the `gguf` package by
//! `fixtures/pretok/make_pretok_fixtures.py`. (Qwen2's split makes single digits, so its trained
//! vocabulary has no multi-digit tokens: its fixture tells its split from GPT-2's, while Llama
//! 3's fixture, with digit groups, tells Llama 3's from Qwen2's.)

use executor::{GgufFile, TextTokenizer};
use std::path::Path;

/// The (text, reference ids) pairs of a fixture.
fn cases(path: &Path) -> Vec<(String, Vec<u32>)> {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture reads"))
            .expect("fixture parses");
    expected
        .as_array()
        .expect("a list")
        .iter()
        .map(|case| {
            let ids = case["ids"]
                .as_array()
                .expect("ids")
                .iter()
                .map(|v| v.as_u64().expect("an id") as u32)
                .collect();
            (case["text"].as_str().expect("text").to_string(), ids)
        })
        .collect()
}

fn check(name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pretok");
    let gguf = GgufFile::open(&dir.join(format!("{name}.gguf"))).expect("fixture opens");
    let tk = TextTokenizer::from_gguf(&gguf).expect("a supported pre-tokenizer");
    let cases = cases(&dir.join(format!("{name}.json")));
    assert!(cases.len() >= 300);
    for (text, want) in cases {
        let got = tk.encode_with(&text, false).expect("encodes");
        assert_eq!(got, want, "{name}: {text:?}");
    }
}

#[test]
fn llama3_pre_tokenizer_matches_the_reference() {
    check("llama-bpe");
}

#[test]
fn qwen2_pre_tokenizer_matches_the_reference() {
    check("qwen2");
}

/// A SentencePiece BPE vocabulary with byte fallback (Llama 2's kind), trained with
/// `sentencepiece` and written to GGUF by `fixtures/spm/make_spm_fixture.py`, encodes as
/// `sentencepiece` does, and decodes back to the text.
#[test]
fn sentencepiece_vocabulary_matches_sentencepiece() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/spm");
    let gguf = GgufFile::open(&dir.join("spm.gguf")).expect("fixture opens");
    let tk = TextTokenizer::from_gguf(&gguf).expect("a SentencePiece vocabulary");
    assert!(tk.add_bos, "SentencePiece vocabularies start with BOS");
    for (text, want) in cases(&dir.join("spm.json")) {
        let got = tk.encode_with(&text, false).expect("encodes");
        assert_eq!(got, want, "{text:?}");
        assert_eq!(tk.decode(&got, true).expect("decodes"), text, "round trip");
        let with_bos = tk.encode(&text).expect("encodes");
        assert_eq!(with_bos.first(), Some(&1));
    }
    // Byte fallback pieces spell their byte for structured output.
    let bytes = tk.token_bytes();
    assert_eq!(
        bytes[tk.token_to_id("<0x41>").expect("a byte piece") as usize],
        b"A"
    );
}
