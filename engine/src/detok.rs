//! Incremental detokenization and stop-string matching.

/// Turns a growing token sequence into text deltas without ever splitting a UTF-8 character:
/// a delta is emitted only once the decoded text no longer ends in an incomplete character
/// (U+FFFD), and it is computed by decoding a short window twice (before and after the new
/// token) so that tokenizers which merge spaces across tokens stay exact.
#[derive(Debug, Clone, Default)]
pub struct IncrementalDecoder {
    ids: Vec<u32>,
    prefix_offset: usize,
    read_offset: usize,
}

impl IncrementalDecoder {
    /// An empty decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a token; returns the text it completes (possibly empty).
    pub fn push(&mut self, token: u32, decode: impl Fn(&[u32]) -> String) -> String {
        self.ids.push(token);
        let before = decode(&self.ids[self.prefix_offset..self.read_offset]);
        let after = decode(&self.ids[self.prefix_offset..]);
        if after.ends_with('\u{FFFD}') || after.len() <= before.len() {
            return String::new();
        }
        let delta = match after.strip_prefix(before.as_str()) {
            Some(d) => d.to_string(),
            None => {
                // The window re-decoded differently: emit from the first differing character.
                let common = before
                    .char_indices()
                    .zip(after.chars())
                    .take_while(|((_, a), b)| a == b)
                    .last()
                    .map_or(0, |((i, c), _)| i + c.len_utf8());
                after[common..].to_string()
            }
        };
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        delta
    }

    /// Text of tokens not yet emitted (at the end of generation, even if incomplete).
    pub fn flush(&mut self, decode: impl Fn(&[u32]) -> String) -> String {
        if self.read_offset >= self.ids.len() {
            return String::new();
        }
        let before = decode(&self.ids[self.prefix_offset..self.read_offset]);
        let after = decode(&self.ids[self.prefix_offset..]);
        self.prefix_offset = self.read_offset;
        self.read_offset = self.ids.len();
        after
            .strip_prefix(before.as_str())
            .unwrap_or(&after)
            .to_string()
    }

    /// Tokens pushed so far.
    pub fn tokens(&self) -> &[u32] {
        &self.ids
    }
}

/// Finds stop strings in streamed text, across token boundaries. Text that might be the start
/// of a stop string is held back until it is known not to be; a matched stop string and
/// everything after it are cut from the output (the stop string itself is kept when asked, as
/// SGLang's `no_stop_trim`).
#[derive(Debug, Clone, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
    matched: Option<String>,
    keep_stop: bool,
}

impl StopMatcher {
    /// A matcher for the given stop strings (empty strings are ignored).
    pub fn new(stops: impl IntoIterator<Item = String>) -> Self {
        StopMatcher {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            pending: String::new(),
            matched: None,
            keep_stop: false,
        }
    }

    /// The same matcher, keeping a matched stop string at the end of the text.
    pub fn keeping_stop(mut self, keep: bool) -> Self {
        self.keep_stop = keep;
        self
    }

    /// The stop string that matched, if any.
    pub fn matched(&self) -> Option<&str> {
        self.matched.as_deref()
    }

    /// Feeds a text delta; returns the text that is safe to emit. After a match, returns the text
    /// before it and ignores all further input.
    pub fn push(&mut self, delta: &str) -> String {
        if self.matched.is_some() {
            return String::new();
        }
        self.pending.push_str(delta);
        let first = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()).map(|pos| (pos, s)))
            .min_by_key(|&(pos, s)| (pos, std::cmp::Reverse(s.len())));
        if let Some((pos, s)) = first {
            self.matched = Some(s.clone());
            let end = if self.keep_stop { pos + s.len() } else { pos };
            let out = self.pending[..end].to_string();
            self.pending.clear();
            return out;
        }
        let hold = self
            .stops
            .iter()
            .map(|s| {
                (1..s.len())
                    .rev()
                    .filter(|&k| s.is_char_boundary(k))
                    .find(|&k| self.pending.ends_with(&s[..k]))
                    .unwrap_or(0)
            })
            .max()
            .unwrap_or(0);
        let cut = self.pending.len() - hold;
        let out = self.pending[..cut].to_string();
        self.pending.drain(..cut);
        out
    }

    /// Releases held-back text at the end of generation (nothing after a match).
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy byte-level tokenizer: each token is one byte; decoding is lossy UTF-8.
    fn decode(ids: &[u32]) -> String {
        let bytes: Vec<u8> = ids.iter().map(|&t| t as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn multibyte_characters_are_never_split() {
        let text = "añ€😀b";
        let mut d = IncrementalDecoder::new();
        let mut out = String::new();
        for b in text.bytes() {
            let delta = d.push(b as u32, decode);
            assert!(!delta.contains('\u{FFFD}'), "split a character: {delta:?}");
            out.push_str(&delta);
        }
        out.push_str(&d.flush(decode));
        assert_eq!(out, text);
    }

    #[test]
    fn stop_string_across_deltas_is_trimmed() {
        let mut m = StopMatcher::new(["</end>".to_string()]);
        let mut out = String::new();
        for piece in ["Hello </", "en", "d> world"] {
            out.push_str(&m.push(piece));
        }
        out.push_str(&m.finish());
        assert_eq!(out, "Hello ");
        assert_eq!(m.matched(), Some("</end>"));
    }

    #[test]
    fn held_back_text_is_released_when_no_stop_follows() {
        let mut m = StopMatcher::new(["STOP".to_string()]);
        assert_eq!(m.push("abc ST"), "abc ");
        assert_eq!(m.push("AR"), "STAR");
        assert_eq!(m.push("x S"), "x ");
        assert_eq!(m.finish(), "S");
        assert_eq!(m.matched(), None);
    }

    #[test]
    fn a_kept_stop_string_ends_the_text() {
        let mut m = StopMatcher::new(["END".to_string()]).keeping_stop(true);
        let mut out = m.push("abc E");
        out.push_str(&m.push("ND and more"));
        assert_eq!(out, "abc END");
        assert_eq!(m.matched(), Some("END"));
        assert_eq!(m.push("later"), "");
    }

    #[test]
    fn earliest_stop_wins() {
        let mut m = StopMatcher::new(["b".to_string(), "abc".to_string()]);
        assert_eq!(m.push("xxabc"), "xx");
        assert_eq!(m.matched(), Some("abc"));
        assert_eq!(m.push("more"), "");
    }
}
