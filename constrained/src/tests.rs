//! Constraints over a toy vocabulary (every byte, a few multi-byte tokens, one special end
//! token), walked by a "model" that picks any allowed token at random: whatever it picks, the
//! output matches the spec.

use super::*;
use proptest::prelude::*;
use rand_like::Lcg;

/// A tiny deterministic generator (no extra dependency for tests).
mod rand_like {
    pub struct Lcg(pub u64);
    impl Lcg {
        pub fn below(&mut self, n: usize) -> usize {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((self.0 >> 33) % n as u64) as usize
        }
    }
}

const EOS: Token = 256;
const MULTI: [&str; 8] = ["{\"", "\": ", "true", "false", "hello", ", ", "\"}", "12"];

fn vocabulary() -> Vocabulary {
    let mut token_bytes: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    let mut eos = vec![0xFF];
    eos.extend_from_slice(b"<eos>");
    token_bytes.push(eos);
    token_bytes.extend(MULTI.iter().map(|s| s.as_bytes().to_vec()));
    Vocabulary {
        token_bytes,
        eos_token_ids: vec![EOS],
        tokenize: Arc::new(|s: &[u8]| s.iter().map(|&b| Token::from(b)).collect()),
    }
}

fn compiler() -> Compiler {
    Compiler::new(vocabulary()).expect("a usable vocabulary")
}

fn spell(t: Token) -> Vec<u8> {
    match t {
        0..=255 => vec![t as u8],
        EOS => Vec::new(),
        _ => MULTI[(t - 257) as usize].as_bytes().to_vec(),
    }
}

/// Walks the constraint with random allowed tokens until it is done; returns the text and
/// whether it ended with the end token.
fn walk(c: &mut dyn TokenConstraint, seed: u64, max_steps: usize) -> (String, bool) {
    let mut rng = Lcg(seed);
    let mut out = Vec::new();
    for _ in 0..max_steps {
        let mask = c.allowed().expect("a mask");
        let allowed: Vec<Token> = mask.iter().collect();
        assert!(!allowed.is_empty(), "an empty mask after {out:?}");
        // Prefer continuing over ending, so walks explore the grammar.
        let pick = if allowed.len() > 1 && allowed.contains(&EOS) && rng.below(4) != 0 {
            let rest: Vec<Token> = allowed.iter().copied().filter(|&t| t != EOS).collect();
            rest[rng.below(rest.len())]
        } else {
            allowed[rng.below(allowed.len())]
        };
        out.extend(spell(pick));
        if c.commit(pick).expect("an allowed token commits") == ConstraintState::Done {
            return (String::from_utf8(out).expect("utf-8"), pick == EOS);
        }
    }
    panic!(
        "no end after {max_steps} steps: {:?}",
        String::from_utf8_lossy(&out)
    );
}

fn person_schema() -> Value {
    json!({
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 6, "pattern": "^[a-z]+$"},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "ok": {"type": "boolean"},
            "tags": {"type": "array", "items": {"enum": ["a", "b"]}, "maxItems": 3}
        },
        "required": ["name", "age", "ok"],
        "additionalProperties": false
    })
}

fn check_person(text: &str) {
    let v: Value = serde_json::from_str(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
    let o = v.as_object().expect("an object");
    let name = o["name"].as_str().expect("a string name");
    assert!(name.len() <= 6 && name.chars().all(|c| c.is_ascii_lowercase()) && !name.is_empty());
    let age = o["age"].as_i64().expect("an integer age");
    assert!((0..=120).contains(&age), "{age}");
    assert!(o["ok"].is_boolean());
    if let Some(tags) = o.get("tags") {
        let tags = tags.as_array().expect("an array");
        assert!(tags.len() <= 3);
        assert!(tags.iter().all(|t| t == "a" || t == "b"));
    }
    assert!(o
        .keys()
        .all(|k| ["name", "age", "ok", "tags"].contains(&k.as_str())));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_walk_of_a_json_schema_is_valid_json_for_it(seed in any::<u64>()) {
        let c = compiler();
        let mut k = c.compile(&GrammarSpec::JsonSchema(person_schema())).expect("compiles");
        let (text, _) = walk(k.as_mut(), seed, 400);
        check_person(&text);
    }

    #[test]
    fn any_walk_of_a_regex_matches_it(seed in any::<u64>()) {
        let c = compiler();
        let mut k = c.compile(&GrammarSpec::Regex("[a-c]{2,4}-(x|yz)".into())).expect("compiles");
        let (text, _) = walk(k.as_mut(), seed, 50);
        let (head, tail) = text.split_once('-').expect("a dash");
        prop_assert!((2..=4).contains(&head.len()) && head.chars().all(|c| "abc".contains(c)), "{}", text);
        prop_assert!(tail == "x" || tail == "yz", "{}", text);
    }
}

#[test]
fn json_object_walks_are_objects() {
    let c = compiler();
    for seed in 0..20 {
        let mut k = c.compile(&GrammarSpec::JsonObject).expect("compiles");
        let (text, _) = walk(k.as_mut(), seed, 2000);
        // Syntax only: random walks write numbers past f64's range, which is valid JSON.
        let parsed: Result<serde::de::IgnoredAny, _> = serde_json::from_str(&text);
        assert!(
            parsed.is_ok() && text.starts_with('{'),
            "{text:?}: {parsed:?}"
        );
    }
}

#[test]
fn choices_and_gbnf_give_one_of_their_strings() {
    let c = compiler();
    let options = vec![
        "yes".to_string(),
        "no \"way\"".to_string(),
        "maybe\n".to_string(),
    ];
    let gbnf = r#"root ::= "yes" | "no \"way\"" | "maybe\n""#;
    for spec in [
        GrammarSpec::Choice(options.clone()),
        GrammarSpec::Ebnf(gbnf.into()),
    ] {
        let mut seen = std::collections::HashSet::new();
        for seed in 0..40 {
            let mut k = c.compile(&spec).expect("compiles");
            let (text, _) = walk(k.as_mut(), seed, 20);
            assert!(options.contains(&text), "{spec:?}: {text:?}");
            seen.insert(text);
        }
        assert!(seen.len() > 1, "{spec:?} always gave {seen:?}");
    }
}

#[test]
fn a_clone_goes_on_independently_and_a_complete_grammar_is_done_without_an_end_token() {
    let c = compiler();
    let mut k = c
        .compile(&GrammarSpec::Choice(vec!["ab".into(), "ac".into()]))
        .expect("compiles");
    assert_eq!(k.commit(Token::from(b'a')), Ok(ConstraintState::Open));
    let mut other = k.clone();
    assert_eq!(k.commit(Token::from(b'b')), Ok(ConstraintState::Done));
    let m = other.allowed().expect("a mask");
    assert!(m.is_allowed(Token::from(b'b')) && m.is_allowed(Token::from(b'c')));
    assert!(!m.is_allowed(EOS));
    assert_eq!(other.commit(Token::from(b'c')), Ok(ConstraintState::Done));
    // A grammar that may go on or end allows the end token beside the rest.
    let mut open = c
        .compile(&GrammarSpec::Regex("a+".into()))
        .expect("compiles");
    assert_eq!(open.commit(Token::from(b'a')), Ok(ConstraintState::Open));
    let m = open.allowed().expect("a mask");
    assert!(m.is_allowed(EOS) && m.is_allowed(Token::from(b'a')));
    assert_eq!(open.commit(EOS), Ok(ConstraintState::Done));
}

#[test]
fn a_repeated_spec_gives_independent_fresh_constraints() {
    let c = compiler();
    let spec = GrammarSpec::Choice(vec!["ab".into(), "ac".into()]);
    let mut first = c.compile(&spec).expect("compiles");
    assert_eq!(first.commit(Token::from(b'a')), Ok(ConstraintState::Open));
    // The second copy starts fresh, whatever the first went through.
    let mut second = c.compile(&spec).expect("compiles");
    let m = second.allowed().expect("a mask");
    assert!(m.is_allowed(Token::from(b'a')) && !m.is_allowed(Token::from(b'b')));
    assert_eq!(first.commit(Token::from(b'b')), Ok(ConstraintState::Done));
    assert_eq!(second.commit(Token::from(b'a')), Ok(ConstraintState::Open));
    // A different spec is compiled anew.
    let mut other = c
        .compile(&GrammarSpec::Regex("z".into()))
        .expect("compiles");
    assert!(other
        .allowed()
        .expect("a mask")
        .is_allowed(Token::from(b'z')));
}

#[test]
fn a_token_outside_the_mask_is_an_error_not_a_panic() {
    let c = compiler();
    let mut k = c
        .compile(&GrammarSpec::Regex("ab".into()))
        .expect("compiles");
    assert!(k.commit(Token::from(b'z')).is_err());
}

#[test]
fn invalid_specs_are_refused_with_their_kind_and_reason() {
    let c = compiler();
    for (spec, kind) in [
        (
            GrammarSpec::JsonSchema(json!({"type": "nonsense"})),
            "json_schema",
        ),
        (GrammarSpec::JsonSchema(json!([1, 2])), "json_schema"),
        (GrammarSpec::Regex("(unclosed".into()), "regex"),
        (
            GrammarSpec::Lark("start: undefined_rule".into()),
            "lark grammar",
        ),
        (GrammarSpec::Ebnf("root ::= nothing".into()), "ebnf"),
        (GrammarSpec::Choice(vec![]), "choice"),
    ] {
        match c.compile(&spec) {
            Err(GrammarError::Invalid { kind: k, message }) => {
                assert_eq!(k, kind, "{spec:?}");
                assert!(!message.is_empty() && message.len() <= 500, "{message}");
            }
            other => panic!("{spec:?}: {other:?}"),
        }
    }
}

#[test]
fn a_vocabulary_without_a_usable_end_is_refused() {
    let mut v = vocabulary();
    v.eos_token_ids.clear();
    assert!(matches!(Compiler::new(v), Err(GrammarError::Vocabulary(_))));
    let mut v = vocabulary();
    v.eos_token_ids = vec![100_000];
    assert!(matches!(Compiler::new(v), Err(GrammarError::Vocabulary(_))));
}
