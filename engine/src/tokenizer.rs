//! What the engine needs from a tokenizer, as a trait: the model's [`TextTokenizer`] implements
//! it, and tests can use a small stand-in without any file.

use executor::{ChatMessage, ExecutorError, TextTokenizer};

/// Encoding prompts and chats, decoding output. Implementations must be cheap to call from
/// several threads at once.
pub trait Tokenizer: Send + Sync {
    /// Encodes text; special tokens written in it are recognised. With `add_special_tokens`,
    /// a BOS id is prepended where the model asks for one.
    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, ExecutorError>;

    /// Renders chat messages with the model's template and encodes them; unless
    /// `trust_content`, special-token spellings inside message content stay text.
    fn encode_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        trust_content: bool,
    ) -> Result<Vec<u32>, ExecutorError>;

    /// Like `encode_chat`, but the final (assistant) message is left open for the model to
    /// continue: no end of turn after it, no generation prompt. The default refuses.
    fn encode_chat_continuing(
        &self,
        messages: &[ChatMessage],
        trust_content: bool,
    ) -> Result<Vec<u32>, ExecutorError> {
        let _ = (messages, trust_content);
        Err(ExecutorError::Template(
            "this tokenizer cannot continue a final message".into(),
        ))
    }

    /// Decodes ids to text, leaving special tokens out when `skip_special_tokens`.
    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, ExecutorError>;

    /// Renders chat messages with the chat template, as text (llama.cpp's `/apply-template`).
    /// The default refuses.
    fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ExecutorError> {
        let _ = (messages, add_generation_prompt);
        Err(ExecutorError::Template(
            "this tokenizer has no chat template".into(),
        ))
    }

    /// The bytes each token id stands for, special tokens marked with a leading 0xFF: what
    /// structured output matches grammars against. `None` (the default) when the tokenizer
    /// cannot say, and then requests for structured output are refused.
    fn token_bytes(&self) -> Option<Vec<Vec<u8>>> {
        None
    }
}

impl Tokenizer for TextTokenizer {
    fn encode(&self, text: &str, add_special_tokens: bool) -> Result<Vec<u32>, ExecutorError> {
        self.encode_with(text, add_special_tokens)
    }

    fn encode_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        trust_content: bool,
    ) -> Result<Vec<u32>, ExecutorError> {
        TextTokenizer::encode_chat(self, messages, add_generation_prompt, trust_content)
    }

    fn encode_chat_continuing(
        &self,
        messages: &[ChatMessage],
        trust_content: bool,
    ) -> Result<Vec<u32>, ExecutorError> {
        TextTokenizer::encode_chat_continuing(self, messages, trust_content)
    }

    fn decode(&self, ids: &[u32], skip_special_tokens: bool) -> Result<String, ExecutorError> {
        TextTokenizer::decode(self, ids, skip_special_tokens)
    }

    fn apply_chat_template(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
    ) -> Result<String, ExecutorError> {
        TextTokenizer::apply_chat_template(self, messages, add_generation_prompt)
    }

    fn token_bytes(&self) -> Option<Vec<Vec<u8>>> {
        Some(TextTokenizer::token_bytes(self))
    }
}
