//! Chat prompts that users cannot forge: only the chat template's own markup becomes control
//! tokens; text that a message's content spells like a special token (`<|im_end|>`) is encoded
//! as plain text.
//!
//! The template is rendered with every special-token spelling inside message content wrapped in
//! markers that carry a per-call random nonce. The markers are then removed, remembering where
//! the wrapped spellings lie; the rendered prompt is split at the special tokens that lie outside
//! those places (the template's markup), and the text between them is encoded with special-token
//! matching off. Prompts whose content spells no special token take the ordinary path and are
//! encoded exactly as before.

use std::hash::{BuildHasher, Hasher};
use std::ops::Range;

use aho_corasick::{AhoCorasick, MatchKind};
use tokenizers::Tokenizer;

use super::{tk_err, ChatMessage, TextTokenizer};
use crate::error::{ExecutorError, Result};

/// What the safe encoder needs from the vocabulary: the special tokens' spellings and ids, and a
/// copy of the tokenizer that reads those spellings as plain text.
pub(super) struct SpecialText {
    matcher: Option<AhoCorasick>,
    ids: Vec<u32>,
    literal: Tokenizer,
}

impl SpecialText {
    pub(super) fn new(inner: &Tokenizer) -> Result<Self> {
        let mut pairs: Vec<(String, u32)> = inner
            .get_added_tokens_decoder()
            .into_iter()
            .filter(|(_, t)| t.special && !t.content.is_empty())
            .map(|(id, t)| (t.content, id))
            .collect();
        pairs.sort();
        let matcher = if pairs.is_empty() {
            None
        } else {
            Some(
                AhoCorasick::builder()
                    .match_kind(MatchKind::LeftmostLongest)
                    .build(pairs.iter().map(|(s, _)| s.as_str()))
                    .map_err(tk_err)?,
            )
        };
        let mut literal = inner.clone();
        literal.set_encode_special_tokens(true);
        Ok(SpecialText {
            matcher,
            ids: pairs.into_iter().map(|(_, id)| id).collect(),
            literal,
        })
    }
}

/// A rendered prompt with the byte ranges that came from message content spelling special tokens.
struct Defused {
    text: String,
    literal: Vec<Range<usize>>,
}

impl TextTokenizer {
    /// Renders `messages` with the chat template and encodes the result.
    ///
    /// With `trust_content` false (what a server exposed to users wants), special-token spellings
    /// inside message content are encoded as plain text, so no message can close its own turn or
    /// open a system or assistant turn; with `trust_content` true, they are control tokens, as in
    /// other servers. A BOS id is prepended only when the model asks for it.
    pub fn encode_chat(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        trust_content: bool,
    ) -> Result<Vec<u32>> {
        self.encode_rendered(messages, trust_content, |m| {
            self.apply_chat_template(m, add_generation_prompt)
        })
    }

    /// Like [`TextTokenizer::encode_chat`], but the final message (an assistant's) is left open
    /// for the model to continue: the prompt ends with its content, without the template's
    /// end of turn (`continue_final_message` in Hugging Face's `apply_chat_template`).
    pub fn encode_chat_continuing(
        &self,
        messages: &[ChatMessage],
        trust_content: bool,
    ) -> Result<Vec<u32>> {
        self.encode_rendered(messages, trust_content, |m| self.render_continuing(m))
    }

    /// Renders with the final message's content followed by a unique sentinel, and cuts the
    /// text at the sentinel: whatever the template writes after the content is dropped.
    fn render_continuing(&self, messages: &[ChatMessage]) -> Result<String> {
        let bad = |m: &str| ExecutorError::Template(m.to_string());
        let nonce = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let sentinel = format!("\u{E004}{nonce:016x}\u{E005}");
        let mut msgs = messages.to_vec();
        let last = msgs
            .last_mut()
            .filter(|m| m.role == "assistant")
            .ok_or_else(|| bad("continuing a final message needs one from the assistant"))?;
        last.content.push_str(&sentinel);
        let text = self.apply_chat_template(&msgs, false)?;
        let cut = text
            .rfind(&sentinel)
            .ok_or_else(|| bad("the chat template does not render the final message"))?;
        Ok(text[..cut].to_string())
    }

    /// Renders `messages` with `render` and encodes the text, keeping special-token spellings in
    /// content as text unless `trust_content`.
    fn encode_rendered(
        &self,
        messages: &[ChatMessage],
        trust_content: bool,
        render: impl Fn(&[ChatMessage]) -> Result<String>,
    ) -> Result<Vec<u32>> {
        let special = self.special_text()?;
        let matcher = match &special.matcher {
            Some(m) if !trust_content && messages.iter().any(|msg| m.is_match(&msg.content)) => m,
            _ => {
                let text = render(messages)?;
                return self.encode(&text);
            }
        };
        let nonce = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let open = format!("\u{E000}{nonce:016x}\u{E001}");
        let close = format!("\u{E002}{nonce:016x}\u{E003}");
        let wrapped: Vec<ChatMessage> = messages
            .iter()
            .map(|msg| {
                let mut content = String::with_capacity(msg.content.len());
                matcher.replace_all_with(&msg.content, &mut content, |_, s, out| {
                    out.push_str(&open);
                    out.push_str(s);
                    out.push_str(&close);
                    true
                });
                ChatMessage {
                    role: msg.role.clone(),
                    content,
                }
            })
            .collect();
        let rendered = render(&wrapped)?;
        let defused = unwrap_markers(&rendered, &open, &close);
        let mut ids = Vec::new();
        if self.add_bos {
            ids.extend(self.bos_token_id);
        }
        let mut last = 0;
        for m in matcher.find_iter(&defused.text) {
            let inside_content = defused
                .literal
                .iter()
                .any(|r| r.start < m.end() && m.start() < r.end);
            if inside_content {
                continue;
            }
            self.encode_literal(&special.literal, &defused.text[last..m.start()], &mut ids)?;
            ids.push(special.ids[m.pattern().as_usize()]);
            last = m.end();
        }
        self.encode_literal(&special.literal, &defused.text[last..], &mut ids)?;
        Ok(ids)
    }

    fn encode_literal(&self, literal: &Tokenizer, text: &str, ids: &mut Vec<u32>) -> Result<()> {
        if !text.is_empty() {
            let enc = literal.encode(text, false).map_err(tk_err)?;
            ids.extend_from_slice(enc.get_ids());
        }
        Ok(())
    }
}

/// Removes the markers, returning the text and where the wrapped spellings now lie. A marker
/// whose partner is missing (a template that cut the content) is dropped; its text stays text.
fn unwrap_markers(rendered: &str, open: &str, close: &str) -> Defused {
    let mut text = String::with_capacity(rendered.len());
    let mut literal = Vec::new();
    let mut rest = rendered;
    while let Some(start) = rest.find(open) {
        text.push_str(&rest[..start]);
        rest = &rest[start + open.len()..];
        let end = rest.find(close).unwrap_or(rest.len());
        let from = text.len();
        text.push_str(&rest[..end]);
        literal.push(from..text.len());
        rest = rest.get(end + close.len()..).unwrap_or("");
    }
    text.push_str(&rest.replace(close, ""));
    Defused { text, literal }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_removed_and_their_ranges_kept() {
        let d = unwrap_markers("a<O><|x|><C>b<O><|y|><C>", "<O>", "<C>");
        assert_eq!(d.text, "a<|x|>b<|y|>");
        assert_eq!(d.literal, vec![1..6, 7..12]);
        let d = unwrap_markers("no markers <C>", "<O>", "<C>");
        assert_eq!(d.text, "no markers ");
        assert!(d.literal.is_empty());
    }
}
