//! GBNF (llama.cpp's grammar format, which SGLang's `ebnf` field also takes) rewritten into
//! llguidance's Lark syntax, token by token: the two share their structure (sequences,
//! alternatives, groups, `* + ?` and `{m,n}` repetition), and differ in rule names, `::=`
//! versus `:`, escapes, and character classes, which become regexes.

use std::collections::HashMap;

/// One lexical unit of GBNF.
#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// A rule name.
    Name(String),
    /// `::=`
    Defines,
    /// A literal, unescaped.
    Literal(String),
    /// A character class, as a regex class (`[...]`, already escaped for a regex).
    Class(String),
    /// `.`: any character.
    Any,
    /// `( ) | * + ?` or a `{m,n}` repetition, copied as written.
    Op(String),
}

/// Converts a GBNF grammar (whose start rule is `root`) to Lark. The error names the problem
/// and where it is.
pub fn gbnf_to_lark(src: &str) -> Result<String, String> {
    let toks = lex(src)?;
    let mut names: HashMap<String, String> = HashMap::new();
    let mut lark_name = |gbnf: &str| -> String {
        let n = names.len();
        names
            .entry(gbnf.to_string())
            .or_insert_with(|| {
                let clean: String = gbnf
                    .chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() {
                            c.to_ascii_lowercase()
                        } else {
                            '_'
                        }
                    })
                    .collect();
                format!("r{n}_{clean}")
            })
            .clone()
    };
    let mut out = String::new();
    let mut defined = Vec::new();
    let mut used = Vec::new();
    let mut i = 0;
    while i < toks.len() {
        let starts_rule = matches!(
            (&toks[i], toks.get(i + 1)),
            (Tok::Name(_), Some(Tok::Defines))
        );
        match &toks[i] {
            Tok::Name(n) if starts_rule => {
                if !out.is_empty() {
                    out.push('\n');
                }
                out.push_str(&lark_name(n));
                out.push(':');
                defined.push(n.clone());
                i += 2;
                continue;
            }
            _ if defined.is_empty() => {
                return Err("a GBNF grammar starts with a rule: `name ::= ...`".into());
            }
            Tok::Name(n) => {
                used.push(n.clone());
                out.push(' ');
                out.push_str(&lark_name(n));
            }
            Tok::Defines => return Err("`::=` without a rule name before it".into()),
            Tok::Literal(s) => {
                out.push(' ');
                out.push_str(&serde_json::to_string(s).map_err(|e| e.to_string())?);
            }
            Tok::Class(c) => {
                out.push_str(" /");
                out.push_str(c);
                out.push('/');
            }
            Tok::Any => out.push_str(" /(?s:.)/"),
            Tok::Op(op) => {
                out.push(' ');
                out.push_str(op);
            }
        }
        i += 1;
    }
    if !defined.iter().any(|n| n == "root") {
        return Err("the grammar has no `root` rule".into());
    }
    if let Some(missing) = used.iter().find(|u| !defined.contains(u)) {
        return Err(format!("rule `{missing}` is used but never defined"));
    }
    let root = lark_name("root");
    Ok(format!("start: {root}\n{out}\n"))
}

fn lex(src: &str) -> Result<Vec<Tok>, String> {
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            _ if c.is_whitespace() => i += 1,
            '#' => {
                while i < chars.len() && chars[i] != '\n' {
                    i += 1;
                }
            }
            ':' if chars.get(i + 1) == Some(&':') && chars.get(i + 2) == Some(&'=') => {
                toks.push(Tok::Defines);
                i += 3;
            }
            '"' => {
                let (s, next) = literal(&chars, i + 1)?;
                toks.push(Tok::Literal(s));
                i = next;
            }
            '[' => {
                let (s, next) = class(&chars, i + 1)?;
                toks.push(Tok::Class(s));
                i = next;
            }
            '.' => {
                toks.push(Tok::Any);
                i += 1;
            }
            '(' | ')' | '|' | '*' | '+' | '?' => {
                toks.push(Tok::Op(c.to_string()));
                i += 1;
            }
            '{' => {
                let end = (i..chars.len())
                    .find(|&j| chars[j] == '}')
                    .ok_or("an unclosed `{` repetition")?;
                let inner: String = chars[i + 1..end].iter().collect();
                let inner = inner.replace(char::is_whitespace, "");
                let ok = !inner.is_empty()
                    && inner.chars().all(|c| c.is_ascii_digit() || c == ',')
                    && inner.matches(',').count() <= 1
                    && !inner.starts_with(',');
                if !ok {
                    return Err(format!("a malformed repetition `{{{inner}}}`"));
                }
                toks.push(Tok::Op(format!("{{{inner}}}")));
                i = end + 1;
            }
            _ if c.is_ascii_alphanumeric() || c == '-' || c == '_' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '-' || chars[i] == '_')
                {
                    i += 1;
                }
                toks.push(Tok::Name(chars[start..i].iter().collect()));
            }
            other => {
                let line = chars[..i].iter().filter(|&&c| c == '\n').count() + 1;
                return Err(format!("unexpected `{other}` on line {line}"));
            }
        }
    }
    Ok(toks)
}

/// One possibly escaped character at `i`: the character and the index after it.
fn escaped(chars: &[char], i: usize) -> Result<(char, usize), String> {
    let c = *chars.get(i).ok_or("the grammar ends inside a literal")?;
    if c != '\\' {
        return Ok((c, i + 1));
    }
    let e = *chars.get(i + 1).ok_or("the grammar ends after `\\`")?;
    let hex = |n: usize| -> Result<(char, usize), String> {
        let digits: String = chars
            .get(i + 2..i + 2 + n)
            .ok_or("a short escape")?
            .iter()
            .collect();
        let v = u32::from_str_radix(&digits, 16)
            .map_err(|_| format!("a bad escape `\\{e}{digits}`"))?;
        let c = char::from_u32(v).ok_or(format!("`\\{e}{digits}` is not a character"))?;
        Ok((c, i + 2 + n))
    };
    match e {
        'n' => Ok(('\n', i + 2)),
        't' => Ok(('\t', i + 2)),
        'r' => Ok(('\r', i + 2)),
        'x' => hex(2),
        'u' => hex(4),
        'U' => hex(8),
        '\\' | '"' | '[' | ']' | '-' | '^' => Ok((e, i + 2)),
        other => Err(format!("an unknown escape `\\{other}`")),
    }
}

fn literal(chars: &[char], mut i: usize) -> Result<(String, usize), String> {
    let mut s = String::new();
    loop {
        match chars.get(i) {
            None => return Err("an unclosed string literal".into()),
            Some('"') => return Ok((s, i + 1)),
            Some(_) => {
                let (c, next) = escaped(chars, i)?;
                s.push(c);
                i = next;
            }
        }
    }
}

/// A character as a regex item: letters and digits as they are, anything else as `\x{..}`,
/// which means the character itself inside or outside a class and needs no other escaping.
fn rx_char(c: char) -> String {
    if c.is_ascii_alphanumeric() {
        c.to_string()
    } else {
        format!("\\x{{{:x}}}", c as u32)
    }
}

fn class(chars: &[char], mut i: usize) -> Result<(String, usize), String> {
    let mut out = String::from("[");
    if chars.get(i) == Some(&'^') {
        out.push('^');
        i += 1;
    }
    let mut items = 0;
    loop {
        match chars.get(i) {
            None => return Err("an unclosed character class".into()),
            Some(']') => break,
            Some(_) => {
                let (lo, next) = escaped(chars, i)?;
                i = next;
                out.push_str(&rx_char(lo));
                if chars.get(i) == Some(&'-') && chars.get(i + 1).is_some_and(|&c| c != ']') {
                    let (hi, next) = escaped(chars, i + 1)?;
                    if hi < lo {
                        return Err(format!("the range `{lo}-{hi}` runs backwards"));
                    }
                    out.push('-');
                    out.push_str(&rx_char(hi));
                    i = next;
                }
                items += 1;
            }
        }
    }
    if items == 0 {
        return Err("an empty character class".into());
    }
    out.push(']');
    Ok((out, i + 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_literals_classes_and_repetitions_translate() {
        let g = r#"
            # a comment
            root ::= greeting (" " name){1,3} "!"
            greeting ::= "hi" | "hello\n"
            name ::= [A-Z] [a-z-]* | any-char+
            any-char ::= [^"\\]
        "#;
        let lark = gbnf_to_lark(g).expect("converts");
        assert!(lark.starts_with("start: r0_root\n"), "{lark}");
        assert!(lark.contains(r#""hello\n""#), "{lark}");
        assert!(lark.contains("{1,3}"), "{lark}");
        assert!(lark.contains(r"/[A-Z]/"), "{lark}");
        assert!(lark.contains(r"/[a-z\x{2d}]/"), "{lark}");
        assert!(lark.contains(r"/[^\x{22}\x{5c}]/"), "{lark}");
        assert!(lark.contains("r3_any_char"), "{lark}");
    }

    #[test]
    fn malformed_grammars_are_refused_with_the_reason() {
        for (g, why) in [
            ("", "no `root`"),
            ("start ::= \"a\"", "no `root`"),
            ("root ::= other", "never defined"),
            ("root ::= \"a", "unclosed string"),
            ("root ::= [a-", "unclosed character class"),
            ("root ::= []", "empty character class"),
            ("root ::= [z-a]", "backwards"),
            ("root ::= \"a\"{x}", "malformed repetition"),
            ("root ::= \"\\q\"", "unknown escape"),
            ("root ::= @", "unexpected `@`"),
            ("\"a\" root ::= \"b\"", "starts with a rule"),
        ] {
            let e = gbnf_to_lark(g).expect_err(g);
            assert!(e.contains(why), "{g:?}: {e}");
        }
    }
}
