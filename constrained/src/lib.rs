//! Structured outputs for radixserve (SGLang's `constrained` module): JSON schemas, JSON
//! objects, regexes, grammars and choice lists compiled with [llguidance] into per-request
//! [`TokenConstraint`]s that the scheduler drives one token at a time.
//!
//! A [`Compiler`] is built once per tokenizer from the bytes of every token (see
//! [`Vocabulary`]); [`Compiler::compile`] turns a [`GrammarSpec`] into a constraint, or a
//! [`GrammarError`] that names what is wrong with it (an invalid schema or regex is the
//! client's error). Compiling is bounded by llguidance's parser limits, and so is every mask.

mod gbnf;

use std::fmt;
use std::sync::{Arc, Mutex};

use llguidance::api::TopLevelGrammar;
use llguidance::{Matcher, ParserFactory};
use router::{ConstraintError, ConstraintState, Token, TokenConstraint, TokenMask};
use serde_json::{json, Value};
use toktrie::{TokEnv, TokRxInfo, TokTrie, TokenizerEnv};

pub use gbnf::gbnf_to_lark;

/// Why a grammar could not be compiled or a vocabulary not used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrammarError {
    /// The client's schema, regex or grammar is invalid or too large.
    #[error("invalid {kind}: {message}")]
    Invalid {
        /// What was being compiled (`json_schema`, `regex`, ...).
        kind: &'static str,
        /// llguidance's (or the converter's) explanation.
        message: String,
    },
    /// The tokenizer's vocabulary cannot drive constrained decoding.
    #[error("the vocabulary cannot be used for structured output: {0}")]
    Vocabulary(String),
}

/// What the output must match.
#[derive(Debug, Clone, PartialEq)]
pub enum GrammarSpec {
    /// Any JSON object (OpenAI's `json_object`).
    JsonObject,
    /// A JSON schema (OpenAI's `json_schema`, SGLang's `json_schema`).
    JsonSchema(Value),
    /// A regular expression the whole output matches (SGLang's `regex`).
    Regex(String),
    /// A grammar in llguidance's Lark syntax.
    Lark(String),
    /// A grammar in GBNF, the EBNF dialect of llama.cpp and SGLang's `ebnf`.
    Ebnf(String),
    /// Exactly one of these strings (vLLM's `guided_choice`).
    Choice(Vec<String>),
}

impl GrammarSpec {
    /// The request field's name for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            GrammarSpec::JsonObject => "json_object",
            GrammarSpec::JsonSchema(_) => "json_schema",
            GrammarSpec::Regex(_) => "regex",
            GrammarSpec::Lark(_) => "lark grammar",
            GrammarSpec::Ebnf(_) => "ebnf",
            GrammarSpec::Choice(_) => "choice",
        }
    }

    fn to_grammar(&self) -> Result<TopLevelGrammar, GrammarError> {
        let invalid = |message: String| GrammarError::Invalid {
            kind: self.kind(),
            message,
        };
        Ok(match self {
            GrammarSpec::JsonObject => json_grammar(json!({"type": "object"})),
            GrammarSpec::JsonSchema(schema) => {
                if !schema.is_object() && !schema.is_boolean() {
                    return Err(invalid("a schema is a JSON object".into()));
                }
                json_grammar(schema.clone())
            }
            GrammarSpec::Regex(rx) => TopLevelGrammar::from_regex(rx),
            GrammarSpec::Lark(g) => TopLevelGrammar::from_lark(g.clone()),
            GrammarSpec::Ebnf(g) => TopLevelGrammar::from_lark(gbnf_to_lark(g).map_err(invalid)?),
            GrammarSpec::Choice(options) => {
                if options.is_empty() {
                    return Err(invalid("the list of choices is empty".into()));
                }
                let alternatives: Vec<String> = options
                    .iter()
                    .map(|o| serde_json::to_string(o).map_err(|e| invalid(e.to_string())))
                    .collect::<Result<_, _>>()?;
                TopLevelGrammar::from_lark(format!("start: {}", alternatives.join(" | ")))
            }
        })
    }
}

/// The schema, asking for JSON the way people write it (`", "` and `": "` between items, no
/// other whitespace) unless it says otherwise with llguidance's `x-guidance` options: flexible
/// whitespace lets a small model pad forever and never close the object. Also for schemas
/// embedded in Lark grammars (`%json`).
pub fn compact_json(mut schema: Value) -> Value {
    if let Value::Object(map) = &mut schema {
        map.entry("x-guidance").or_insert_with(
            || json!({"whitespace_flexible": false, "item_separator": ", ", "key_separator": ": "}),
        );
    }
    schema
}

fn json_grammar(schema: Value) -> TopLevelGrammar {
    TopLevelGrammar::from_json_schema(compact_json(schema))
}

/// Encodes text to token ids, as the model's tokenizer does (no special tokens added).
pub type TokenizeFn = Arc<dyn Fn(&[u8]) -> Vec<Token> + Send + Sync>;

/// A tokenizer's vocabulary, as a grammar engine sees it.
pub struct Vocabulary {
    /// The bytes of each token id; special tokens start with 0xFF (they never match text).
    pub token_bytes: Vec<Vec<u8>>,
    /// The ids that end generation; a complete grammar allows exactly these.
    pub eos_token_ids: Vec<Token>,
    /// The tokenizer's encoder.
    pub tokenize: TokenizeFn,
}

struct Env {
    trie: TokTrie,
    tokenize: TokenizeFn,
}

impl TokenizerEnv for Env {
    fn tok_trie(&self) -> &TokTrie {
        &self.trie
    }

    fn tokenize_bytes(&self, s: &[u8]) -> Vec<Token> {
        (self.tokenize)(s)
    }
}

/// Compiles grammars for one tokenizer. Cheap to share; compiling is the expensive part and
/// runs on the caller's thread.
pub struct Compiler {
    factory: ParserFactory,
    vocab_size: usize,
    /// The last spec compiled and its fresh constraint: the `n` choices of one request (and
    /// repeated requests) compile once and take copies.
    last: Mutex<Option<(GrammarSpec, Box<dyn TokenConstraint>)>>,
}

impl fmt::Debug for Compiler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Compiler")
            .field("vocab_size", &self.vocab_size)
            .finish()
    }
}

impl Compiler {
    /// Builds the token trie and llguidance's parser factory for a vocabulary.
    pub fn new(vocab: Vocabulary) -> Result<Self, GrammarError> {
        let n = vocab.token_bytes.len();
        let vocab_size =
            u32::try_from(n).map_err(|_| GrammarError::Vocabulary("too many tokens".into()))?;
        let Some(&first_eos) = vocab.eos_token_ids.first() else {
            return Err(GrammarError::Vocabulary("no end-of-sequence token".into()));
        };
        if let Some(bad) = vocab.eos_token_ids.iter().find(|&&t| t >= vocab_size) {
            return Err(GrammarError::Vocabulary(format!(
                "end-of-sequence id {bad} is outside the vocabulary of {n}"
            )));
        }
        let info = TokRxInfo::new(vocab_size, first_eos);
        let trie = TokTrie::from(&info, &vocab.token_bytes).with_eos_tokens(&vocab.eos_token_ids);
        let env: TokEnv = Arc::new(Env {
            trie,
            tokenize: vocab.tokenize,
        });
        let mut factory =
            ParserFactory::new_simple(&env).map_err(|e| GrammarError::Vocabulary(e.to_string()))?;
        factory.quiet();
        Ok(Compiler {
            factory,
            vocab_size: n,
            last: Mutex::new(None),
        })
    }

    /// The number of token ids the constraints' masks range over.
    pub fn vocab_size(&self) -> usize {
        self.vocab_size
    }

    /// Compiles a spec into a fresh constraint for one request (a copy of the last one when the
    /// spec is the same).
    pub fn compile(&self, spec: &GrammarSpec) -> Result<Box<dyn TokenConstraint>, GrammarError> {
        if let Ok(last) = self.last.lock() {
            if let Some((s, c)) = last.as_ref().filter(|(s, _)| s == spec) {
                tracing::debug!(
                    kind = s.kind(),
                    "structured output: reusing a compiled grammar"
                );
                return Ok(c.boxed_clone());
            }
        }
        let fresh = self.compile_fresh(spec)?;
        if let Ok(mut last) = self.last.lock() {
            *last = Some((spec.clone(), fresh.boxed_clone()));
        }
        Ok(fresh)
    }

    fn compile_fresh(&self, spec: &GrammarSpec) -> Result<Box<dyn TokenConstraint>, GrammarError> {
        let grammar = spec.to_grammar()?;
        let parser = self
            .factory
            .create_parser(grammar)
            .map_err(|e| GrammarError::Invalid {
                kind: spec.kind(),
                message: first_line(&e.to_string()),
            })?;
        let matcher = Matcher::new(Ok(parser));
        if let Some(e) = matcher.get_error() {
            return Err(GrammarError::Invalid {
                kind: spec.kind(),
                message: first_line(&e),
            });
        }
        Ok(Box::new(GrammarConstraint {
            matcher,
            vocab_size: self.vocab_size,
        }))
    }
}

/// llguidance's messages can carry the whole grammar after the first line; a client needs the
/// reason, bounded.
fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or(s);
    line.chars().take(500).collect()
}

/// One request's grammar state.
struct GrammarConstraint {
    matcher: Matcher,
    vocab_size: usize,
}

impl fmt::Debug for GrammarConstraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrammarConstraint")
            .field("stopped", &self.matcher.is_stopped())
            .finish()
    }
}

impl TokenConstraint for GrammarConstraint {
    fn allowed(&mut self) -> Result<TokenMask, ConstraintError> {
        let mask = self
            .matcher
            .compute_mask()
            .map_err(|e| ConstraintError(first_line(&e.to_string())))?;
        Ok(TokenMask::from_words(
            mask.as_slice().to_vec(),
            self.vocab_size,
        ))
    }

    fn commit(&mut self, token: Token) -> Result<ConstraintState, ConstraintError> {
        self.matcher
            .consume_token(token)
            .map_err(|e| ConstraintError(first_line(&e.to_string())))?;
        Ok(if self.matcher.is_stopped() {
            ConstraintState::Done
        } else {
            ConstraintState::Open
        })
    }

    fn boxed_clone(&self) -> Box<dyn TokenConstraint> {
        Box::new(GrammarConstraint {
            matcher: self.matcher.deep_clone(),
            vocab_size: self.vocab_size,
        })
    }
}

#[cfg(test)]
mod tests;
