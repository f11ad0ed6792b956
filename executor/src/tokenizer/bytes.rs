//! The bytes each token stands for: what a structured-output engine needs to match tokens
//! against a grammar byte by byte.
//!
//! Byte-level BPE vocabularies (GPT-2, SmolLM2, Llama 3, Qwen) spell each byte as one printable
//! character; SentencePiece-style ones spell a space as `▁` and unknown bytes as `<0xNN>`.
//! Special added tokens are marked with a leading 0xFF byte (llguidance's convention), so a
//! grammar never matches them as text.

use std::collections::HashMap;

use tokenizers::{DecoderWrapper, Tokenizer};

/// Leading byte of a special token's entry.
pub const SPECIAL_TOKEN_MARKER: u8 = 0xFF;

/// GPT-2's byte-to-character table, inverted: the character that spells each byte.
fn byte_level_chars() -> HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 256u32;
    let mut map = HashMap::with_capacity(256);
    for b in 0..=255u8 {
        let c = if printable(b) {
            char::from(b)
        } else {
            let c = char::from_u32(next).unwrap_or(char::REPLACEMENT_CHARACTER);
            next += 1;
            c
        };
        map.insert(c, b);
    }
    map
}

fn is_byte_level(d: Option<&DecoderWrapper>) -> bool {
    match d {
        Some(DecoderWrapper::ByteLevel(_)) => true,
        Some(DecoderWrapper::Sequence(s)) => {
            s.get_decoders().iter().any(|d| is_byte_level(Some(d)))
        }
        _ => false,
    }
}

/// `<0xNN>`, SentencePiece's byte-fallback spelling of one byte.
fn fallback_byte(token: &str) -> Option<u8> {
    let hex = token.strip_prefix("<0x")?.strip_suffix('>')?;
    (hex.len() == 2).then(|| u8::from_str_radix(hex, 16).ok())?
}

/// The bytes of every token id below the vocabulary size (added tokens included). An id with
/// no token (a hole in the vocabulary) gets an empty entry, which matches nothing.
pub fn token_bytes(tk: &Tokenizer) -> Vec<Vec<u8>> {
    let n = tk.get_vocab_size(true);
    let added = tk.get_added_tokens_decoder();
    let byte_level = is_byte_level(tk.get_decoder());
    let chars = byte_level.then(byte_level_chars);
    (0..n as u32)
        .map(|id| {
            if let Some(a) = added.get(&id) {
                if a.special {
                    let mut b = vec![SPECIAL_TOKEN_MARKER];
                    b.extend_from_slice(a.content.as_bytes());
                    return b;
                }
                return a.content.as_bytes().to_vec();
            }
            let Some(token) = tk.id_to_token(id) else {
                return Vec::new();
            };
            match &chars {
                Some(chars) => token
                    .chars()
                    .map(|c| chars.get(&c).copied())
                    .collect::<Option<Vec<u8>>>()
                    // Not byte-level spelled after all: take it as text.
                    .unwrap_or_else(|| token.into_bytes()),
                None => match fallback_byte(&token) {
                    Some(b) => vec![b],
                    None => token.replace('\u{2581}', " ").into_bytes(),
                },
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_level_table_is_a_bijection_over_all_bytes() {
        let m = byte_level_chars();
        assert_eq!(m.len(), 256);
        let mut bytes: Vec<u8> = m.values().copied().collect();
        bytes.sort_unstable();
        bytes.dedup();
        assert_eq!(bytes.len(), 256);
        assert_eq!(m[&'Ġ'], b' ');
        assert_eq!(m[&'Ċ'], b'\n');
        assert_eq!(m[&'a'], b'a');
    }

    #[test]
    fn fallback_bytes_parse_only_their_exact_form() {
        assert_eq!(fallback_byte("<0x0A>"), Some(b'\n'));
        assert_eq!(fallback_byte("<0xFF>"), Some(0xFF));
        assert_eq!(fallback_byte("<0x0>"), None);
        assert_eq!(fallback_byte("<0xZZ>"), None);
        assert_eq!(fallback_byte("0x0A"), None);
    }
}
