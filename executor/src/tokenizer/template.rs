//! Hugging Face chat templates rendered as `transformers` renders them: Jinja with
//! `trim_blocks` and `lstrip_blocks`, Python's string, list and dict methods
//! (minijinja-contrib's `pycompat`), `tojson` writing JSON as Python's `json.dumps` does,
//! `raise_exception`, `strftime_now`, and `tools` / `documents` passed as `None`.

use crate::error::{ExecutorError, Result};
use crate::tokenizer::ChatMessage;
use minijinja::value::{Kwargs, Value};
use minijinja::{Error, ErrorKind};

/// A Hugging Face style Jinja chat template, compiled once with minijinja.
pub struct ChatTemplate {
    env: minijinja::Environment<'static>,
}

impl std::fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatTemplate").finish_non_exhaustive()
    }
}

impl ChatTemplate {
    /// Compiles `source`; a syntax error is [`ExecutorError::Template`].
    pub fn new(source: &str) -> Result<Self> {
        let mut env = minijinja::Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function(
            "raise_exception",
            |msg: String| -> std::result::Result<String, Error> {
                Err(Error::new(ErrorKind::InvalidOperation, msg))
            },
        );
        env.add_function("strftime_now", |format: String| {
            strftime(&civil_now(), &format).map_err(|m| Error::new(ErrorKind::InvalidOperation, m))
        });
        env.add_filter("tojson", tojson);
        env.add_template_owned("chat", source.to_string())
            .map_err(|e| ExecutorError::Template(e.to_string()))?;
        Ok(ChatTemplate { env })
    }

    /// Renders the template over `messages`.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<String> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| ExecutorError::Template(e.to_string()))?;
        tmpl.render(minijinja::context! {
            messages => messages,
            add_generation_prompt => add_generation_prompt,
            bos_token => bos_token,
            eos_token => eos_token,
            tools => Value::from(()),
            documents => Value::from(()),
        })
        .map_err(|e| ExecutorError::Template(e.to_string()))
    }
}

/// Compiles and renders a chat template in one go (for one-off renders; a tokenizer keeps its
/// template compiled).
pub fn render_chat_template(
    template: &str,
    messages: &[ChatMessage],
    add_generation_prompt: bool,
    bos_token: &str,
    eos_token: &str,
) -> Result<String> {
    ChatTemplate::new(template)?.render(messages, add_generation_prompt, bos_token, eos_token)
}

/// `tojson` as transformers defines it: `json.dumps` without ASCII escaping, with Python's
/// separators (`", "` and `": "`, or `","` and newlines with `indent`), keys in their order.
fn tojson(value: Value, kwargs: Kwargs) -> std::result::Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    kwargs.assert_all_used()?;
    let mut out = String::new();
    write_py_json(&value, indent, 0, &mut out)?;
    Ok(Value::from_safe_string(out))
}

/// Writes `v` as `json.dumps` would, maps in their own key order.
fn write_py_json(
    v: &Value,
    indent: Option<usize>,
    depth: usize,
    out: &mut String,
) -> std::result::Result<(), Error> {
    use minijinja::value::ValueKind;
    let newline = |out: &mut String, depth: usize| {
        if let Some(n) = indent {
            out.push('\n');
            out.push_str(&" ".repeat(n * depth));
        }
    };
    let sep = if indent.is_some() { "," } else { ", " };
    let (open, close) = match v.kind() {
        ValueKind::Seq | ValueKind::Iterable => ('[', ']'),
        ValueKind::Map => ('{', '}'),
        ValueKind::Undefined | ValueKind::None => {
            out.push_str("null");
            return Ok(());
        }
        _ => {
            let json = serde_json::to_value(v)
                .map_err(|e| Error::new(ErrorKind::InvalidOperation, e.to_string()))?;
            match json {
                // Floats as Python writes them (`1.0`, not `1`).
                serde_json::Value::Number(n) if n.is_f64() => {
                    let f = n.as_f64().unwrap_or_default();
                    if f.fract() == 0.0 && f.abs() < 1e16 {
                        out.push_str(&format!("{f:.1}"));
                    } else {
                        out.push_str(&f.to_string());
                    }
                }
                other => out.push_str(&other.to_string()),
            }
            return Ok(());
        }
    };
    let items: Vec<Value> = v.try_iter()?.collect();
    out.push(open);
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push_str(sep);
        }
        newline(out, depth + 1);
        if open == '{' {
            let key = item
                .as_str()
                .map_or_else(|| item.to_string(), str::to_string);
            out.push_str(&serde_json::Value::String(key).to_string());
            out.push_str(": ");
            write_py_json(&v.get_item(item)?, indent, depth + 1, out)?;
        } else {
            write_py_json(item, indent, depth + 1, out)?;
        }
    }
    if !items.is_empty() {
        newline(out, depth);
    }
    out.push(close);
    Ok(())
}

/// A UTC date and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// 0 = Monday.
    weekday: u32,
}

/// Now, in UTC.
fn civil_now() -> Civil {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    civil(secs)
}

/// The civil UTC date of a Unix time (Howard Hinnant's days-to-civil algorithm).
fn civil(secs: i64) -> Civil {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        hour: (rem / 3600) as u32,
        minute: (rem % 3600 / 60) as u32,
        second: (rem % 60) as u32,
        weekday: (days + 3).rem_euclid(7) as u32,
    }
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Python's `strftime` for the directives chat templates use (`%d %m %y %Y %b %B %a %A %H %M
/// %S %%`); any other is an error naming it.
fn strftime(t: &Civil, format: &str) -> std::result::Result<String, String> {
    let mut out = String::new();
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let month = MONTHS[(t.month as usize).saturating_sub(1) % 12];
        let day = DAYS[t.weekday as usize % 7];
        match chars.next() {
            Some('d') => out.push_str(&format!("{:02}", t.day)),
            Some('m') => out.push_str(&format!("{:02}", t.month)),
            Some('y') => out.push_str(&format!("{:02}", t.year.rem_euclid(100))),
            Some('Y') => out.push_str(&t.year.to_string()),
            Some('b') => out.push_str(&month[..3]),
            Some('B') => out.push_str(month),
            Some('a') => out.push_str(&day[..3]),
            Some('A') => out.push_str(day),
            Some('H') => out.push_str(&format!("{:02}", t.hour)),
            Some('M') => out.push_str(&format!("{:02}", t.minute)),
            Some('S') => out.push_str(&format!("{:02}", t.second)),
            Some('%') => out.push('%'),
            other => {
                return Err(format!(
                    "strftime_now: unsupported directive %{}",
                    other.map(String::from).unwrap_or_default()
                ))
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strftime_writes_python_dates() {
        // 2024-07-26 13:25:09 UTC, a Friday.
        let t = civil(1_722_000_309);
        assert_eq!(
            (t.year, t.month, t.day, t.hour, t.minute, t.second, t.weekday),
            (2024, 7, 26, 13, 25, 9, 4)
        );
        assert_eq!(strftime(&t, "%d %b %Y").as_deref(), Ok("26 Jul 2024"));
        assert_eq!(
            strftime(&t, "%A %B %m/%y %%").as_deref(),
            Ok("Friday July 07/24 %")
        );
        assert!(strftime(&t, "%Q").is_err());
        assert_eq!(civil(0).year, 1970);
        assert_eq!(civil(-86_400).day, 31);
    }

    #[test]
    fn tojson_writes_python_json() {
        let mut env = minijinja::Environment::new();
        env.add_filter("tojson", tojson);
        let render = |src: &str| env.render_str(src, ()).unwrap_or_default();
        // Keys keep the order the template wrote them in, as a Python dict does.
        assert_eq!(
            render(r#"{{ {"b": [1, 2.0], "a": "é\"<"} | tojson }}"#),
            r#"{"b": [1, 2.0], "a": "é\"<"}"#
        );
        assert_eq!(
            render("{{ [1, 2.0] | tojson(indent=2) }}"),
            "[\n  1,\n  2.0\n]"
        );
        assert_eq!(render("{{ none | tojson }}|{{ {} | tojson }}"), "null|{}");
    }
}
