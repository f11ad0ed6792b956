//! Tokenizer (from GGUF metadata or `tokenizer.json`) and the Jinja chat template.

mod bytes;
mod chat;
mod named;
mod spm;
mod template;

pub use bytes::SPECIAL_TOKEN_MARKER;
pub use named::{named_chat_template, NAMES as CHAT_TEMPLATE_NAMES};
pub use template::{render_chat_template, ChatTemplate};

use std::path::Path;
use std::sync::OnceLock;

use serde::Serialize;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::SplitDelimiterBehavior;
use tokenizers::{AddedToken, Tokenizer};

use crate::error::{ExecutorError, Result};
use crate::gguf::{GgufFile, GgufValue};

/// One chat message handed to the template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ChatMessage {
    /// "system", "user" or "assistant".
    pub role: String,
    /// Message text.
    pub content: String,
}

impl ChatMessage {
    /// Convenience constructor.
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

/// Text <-> token ids, plus the model's chat template and special ids.
pub struct TextTokenizer {
    inner: Tokenizer,
    /// Beginning-of-sequence id, when the model has one.
    pub bos_token_id: Option<u32>,
    /// End-of-sequence id (generation stop), when known.
    pub eos_token_id: Option<u32>,
    /// Whether a BOS id must be prepended to encoded prompts.
    pub add_bos: bool,
    /// Jinja chat template text, when the model ships one (compiled on first use: set it
    /// before rendering).
    pub chat_template: Option<String>,
    /// Built on first use by [`TextTokenizer::encode_chat`].
    special_text: OnceLock<chat::SpecialText>,
    /// The chat template, compiled on first use (or the compile error's message).
    compiled_template: OnceLock<std::result::Result<ChatTemplate, String>>,
}

impl std::fmt::Debug for TextTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextTokenizer")
            .field("vocab", &self.inner.get_vocab_size(true))
            .field("bos_token_id", &self.bos_token_id)
            .field("eos_token_id", &self.eos_token_id)
            .field("add_bos", &self.add_bos)
            .finish()
    }
}

fn tk_err(e: impl std::fmt::Display) -> ExecutorError {
    ExecutorError::Tokenizer(e.to_string())
}

impl TextTokenizer {
    /// Builds the tokenizer of a GGUF file from its `tokenizer.ggml.*` metadata: byte-level BPE
    /// (model `gpt2`, with the pre-tokenizer `tokenizer.ggml.pre` names) or SentencePiece BPE
    /// with byte fallback (model `llama`: Llama 2, TinyLlama, Mistral).
    pub fn from_gguf(gguf: &GgufFile) -> Result<Self> {
        let model = gguf.get_str("tokenizer.ggml.model")?;
        let tokens = gguf.get_str_array("tokenizer.ggml.tokens")?;
        let types: Vec<u64> = gguf
            .get("tokenizer.ggml.token_type")
            .and_then(GgufValue::as_array)
            .map(|a| a.iter().map(|v| v.as_u64().unwrap_or(1)).collect())
            .unwrap_or_default();
        // llama.cpp's defaults: SentencePiece vocabularies start with BOS, BPE ones do not.
        let (mut tk, default_bos) = match model {
            "gpt2" => (byte_level_bpe(gguf, &tokens)?, false),
            "llama" => (spm::sentencepiece_bpe(gguf, &tokens, &types)?, true),
            other => {
                return Err(ExecutorError::Tokenizer(format!(
                    "GGUF tokenizer model {other:?} is not supported (byte-level BPE \"gpt2\" and \
                     SentencePiece \"llama\" are); use a Hugging Face directory with \
                     tokenizer.json instead"
                )))
            }
        };
        // token_type 3 = control, 4 = user-defined: both are matched verbatim in text.
        let specials: Vec<AddedToken> = types
            .iter()
            .enumerate()
            .filter(|(_, &t)| t == 3 || t == 4)
            .filter_map(|(i, _)| tokens.get(i))
            .map(|s| AddedToken::from(s.to_string(), true))
            .collect();
        tk.add_special_tokens(specials).map_err(tk_err)?;
        let id = |k: &str| {
            gguf.get(k)
                .and_then(GgufValue::as_u64)
                .and_then(|v| u32::try_from(v).ok())
        };
        Ok(Self {
            inner: tk,
            bos_token_id: id("tokenizer.ggml.bos_token_id"),
            eos_token_id: id("tokenizer.ggml.eos_token_id"),
            add_bos: gguf
                .get("tokenizer.ggml.add_bos_token")
                .and_then(GgufValue::as_bool)
                .unwrap_or(default_bos),
            chat_template: gguf
                .get("tokenizer.chat_template")
                .and_then(GgufValue::as_str)
                .map(str::to_string),
            special_text: OnceLock::new(),
            compiled_template: OnceLock::new(),
        })
    }

    /// Loads `tokenizer.json` (and, when present, `tokenizer_config.json` for the chat template
    /// and special ids) from a Hugging Face model directory.
    pub fn from_hf_dir(dir: &Path) -> Result<Self> {
        let path = dir.join("tokenizer.json");
        if !path.exists() {
            return Err(ExecutorError::NotFound(path));
        }
        let inner = Tokenizer::from_file(&path).map_err(tk_err)?;
        let mut out = Self {
            inner,
            bos_token_id: None,
            eos_token_id: None,
            add_bos: false,
            chat_template: None,
            special_text: OnceLock::new(),
            compiled_template: OnceLock::new(),
        };
        let cfg_path = dir.join("tokenizer_config.json");
        if let Ok(text) = std::fs::read_to_string(&cfg_path) {
            let cfg: serde_json::Value =
                serde_json::from_str(&text).map_err(|e| ExecutorError::Json {
                    path: cfg_path.clone(),
                    message: e.to_string(),
                })?;
            let tok_id = |key: &str| -> Option<u32> {
                let v = cfg.get(key)?;
                let s = v.as_str().or_else(|| v.get("content")?.as_str())?;
                out.inner.token_to_id(s)
            };
            let bos = tok_id("bos_token");
            let eos = tok_id("eos_token");
            out.bos_token_id = bos;
            out.eos_token_id = eos;
            out.add_bos = cfg
                .get("add_bos_token")
                .and_then(serde_json::Value::as_bool)
                .unwrap_or(false);
            out.chat_template = cfg
                .get("chat_template")
                .and_then(serde_json::Value::as_str)
                .map(str::to_string);
        }
        Ok(out)
    }

    /// Encodes text; special tokens written in the text (e.g. `<|im_start|>`) are recognised.
    /// A BOS id is prepended only when the model asks for it.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        self.encode_with(text, true)
    }

    /// Encodes text; with `add_special_tokens` false no BOS id is prepended even where the model
    /// asks for one (what `/tokenize` with `add_special_tokens: false` wants).
    pub fn encode_with(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(tk_err)?;
        let mut ids = Vec::with_capacity(enc.len() + 1);
        if self.add_bos && add_special_tokens {
            if let Some(b) = self.bos_token_id {
                ids.push(b);
            }
        }
        ids.extend_from_slice(enc.get_ids());
        Ok(ids)
    }

    fn special_text(&self) -> Result<&chat::SpecialText> {
        if let Some(s) = self.special_text.get() {
            return Ok(s);
        }
        let built = chat::SpecialText::new(&self.inner)?;
        Ok(self.special_text.get_or_init(|| built))
    }

    /// Decodes ids to text (special tokens kept unless `skip_special`).
    pub fn decode(&self, ids: &[u32], skip_special: bool) -> Result<String> {
        self.inner.decode(ids, skip_special).map_err(tk_err)
    }

    /// Number of tokens, added tokens included.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The bytes every token id stands for (special tokens marked with a leading
    /// [`SPECIAL_TOKEN_MARKER`]): the vocabulary a structured-output engine matches against.
    pub fn token_bytes(&self) -> Vec<Vec<u8>> {
        bytes::token_bytes(&self.inner)
    }

    /// Id of a token string, if it is in the vocabulary.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// The underlying `tokenizers` object (for incremental detokenisation by callers).
    pub fn inner(&self) -> &Tokenizer {
        &self.inner
    }

    /// The same tokenizer with another chat template (`--chat-template`): it replaces the one
    /// the model file carries.
    pub fn with_chat_template(mut self, source: String) -> Self {
        self.chat_template = Some(source);
        self.compiled_template = OnceLock::new();
        self
    }

    /// Renders the model's chat template over `messages` (compiled once, on first use).
    pub fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String> {
        let source = self
            .chat_template
            .as_deref()
            .ok_or_else(|| ExecutorError::Template("the model has no chat template".into()))?;
        let compiled = self
            .compiled_template
            .get_or_init(|| {
                ChatTemplate::new(source).map_err(|e| match e {
                    ExecutorError::Template(m) => m,
                    other => other.to_string(),
                })
            })
            .as_ref()
            .map_err(|e| ExecutorError::Template(e.clone()))?;
        let tok_str = |id: Option<u32>| {
            id.and_then(|i| self.inner.id_to_token(i))
                .unwrap_or_default()
        };
        compiled.render(
            messages,
            add_generation_prompt,
            &tok_str(self.bos_token_id),
            &tok_str(self.eos_token_id),
        )
    }
}

/// A byte-level BPE tokenizer from `tokenizer.ggml.merges` and `tokenizer.ggml.pre`.
fn byte_level_bpe(gguf: &GgufFile, tokens: &[&str]) -> Result<Tokenizer> {
    let pre = gguf
        .get("tokenizer.ggml.pre")
        .and_then(GgufValue::as_str)
        .unwrap_or("default");
    let merges = gguf.get_str_array("tokenizer.ggml.merges")?;
    let vocab: Vocab = tokens
        .iter()
        .enumerate()
        .map(|(i, t)| (t.to_string(), i as u32))
        .collect();
    let merges: Vec<(String, String)> = merges
        .iter()
        .map(|m| {
            m.split_once(' ')
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .ok_or_else(|| tk_err(format!("malformed merge {m:?}")))
        })
        .collect::<Result<_>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .build()
        .map_err(tk_err)?;
    let mut tk = Tokenizer::new(bpe);
    tk.with_pre_tokenizer(Some(gguf_pre_tokenizer(pre)?));
    tk.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(tk)
}

/// Llama 3's split (also DBRX's and Smaug's), as its tokenizer.json writes it.
const LLAMA3_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split (also StableLM 2's): single digits.
const QWEN2_SPLIT: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The pre-tokenizer of a GGUF byte-level BPE vocabulary, from `tokenizer.ggml.pre` (the names
/// llama.cpp's converter writes), as the model's tokenizer.json declares it.
fn gguf_pre_tokenizer(pre: &str) -> Result<PreTokenizerWrapper> {
    let byte_level =
        |use_regex: bool| -> PreTokenizerWrapper { ByteLevel::new(false, true, use_regex).into() };
    let split = |pattern: &str| -> Result<PreTokenizerWrapper> {
        let split = Split::new(
            SplitPattern::Regex(pattern.to_string()),
            SplitDelimiterBehavior::Isolated,
            false,
        )
        .map_err(tk_err)?;
        Ok(Sequence::new(vec![split.into(), byte_level(false)]).into())
    };
    match pre {
        // llama.cpp splits these the same way: each digit, then the GPT-2 regex.
        "smollm" | "starcoder" | "refact" | "command-r" | "codeshell" | "exaone" => {
            Ok(Sequence::new(vec![Digits::new(true).into(), byte_level(true)]).into())
        }
        // And these with the GPT-2 regex alone.
        "default" | "gpt2" | "gpt-2" | "mpt" | "olmo" | "jais" => Ok(byte_level(true)),
        "llama-bpe" | "llama3" | "dbrx" | "smaug-bpe" => split(LLAMA3_SPLIT),
        "qwen2" | "stablelm2" => split(QWEN2_SPLIT),
        other => Err(ExecutorError::Tokenizer(format!(
            "GGUF pre-tokenizer {other:?} is not supported (supported: default, gpt2, mpt, \
             olmo, jais, smollm, starcoder, refact, command-r, codeshell, exaone, llama-bpe, \
             llama3, dbrx, smaug-bpe, qwen2, stablelm2)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nDefault<|im_end|>\\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    #[test]
    fn chatml_template_inserts_default_system_and_generation_prompt() {
        let out = render_chat_template(CHATML, &[ChatMessage::new("user", "Hi")], true, "", "")
            .expect("renders");
        assert_eq!(
            out,
            "<|im_start|>system\nDefault<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
        );
        let out = render_chat_template(
            CHATML,
            &[
                ChatMessage::new("system", "S"),
                ChatMessage::new("user", "Hi"),
            ],
            false,
            "",
            "",
        )
        .expect("renders");
        assert_eq!(
            out,
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
        );
    }

    #[test]
    fn template_errors_are_typed() {
        let err = render_chat_template("{% for %}", &[], true, "", "").expect_err("bad syntax");
        assert!(matches!(err, ExecutorError::Template(_)));
        let err = render_chat_template("{{ raise_exception('no') }}", &[], true, "", "")
            .expect_err("raises");
        assert!(err.to_string().contains("no"));
    }
}
