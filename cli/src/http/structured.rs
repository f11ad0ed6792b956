//! Structured-output fields, in every spelling clients use, read into one [`GrammarSpec`]:
//! OpenAI's `response_format` (with llama.cpp's `schema` beside the type), SGLang's `regex`,
//! `ebnf` and `json_schema`, vLLM's `guided_*` fields and llama.cpp's `grammar`. A request
//! names at most one.

use super::error::ApiError;
use engine::GrammarSpec;
use serde::Deserialize;
use serde_json::Value;

/// The structured-output fields of a request (flattened into the request's own fields).
#[derive(Deserialize, Default)]
pub struct StructuredFields {
    /// OpenAI: `{"type": "text" | "json_object" | "json_schema", ...}`.
    pub response_format: Option<Value>,
    /// SGLang: the output matches this regex.
    pub regex: Option<String>,
    /// SGLang: the output matches this GBNF grammar.
    pub ebnf: Option<String>,
    /// SGLang native: a JSON schema (as a string of JSON, or the object itself).
    pub json_schema: Option<Value>,
    /// vLLM: a JSON schema.
    pub guided_json: Option<Value>,
    /// vLLM: a regex.
    pub guided_regex: Option<String>,
    /// vLLM: one of these strings.
    pub guided_choice: Option<Vec<String>>,
    /// vLLM: a GBNF grammar.
    pub guided_grammar: Option<String>,
    /// llama.cpp: a GBNF grammar.
    pub grammar: Option<String>,
}

impl StructuredFields {
    /// The one spec the request asks for, if any.
    pub fn spec(&self) -> Result<Option<GrammarSpec>, ApiError> {
        let mut found: Vec<(&'static str, GrammarSpec)> = Vec::new();
        if let Some(rf) = &self.response_format {
            if let Some(spec) = response_format(rf)? {
                found.push(("response_format", spec));
            }
        }
        if let Some(r) = &self.regex {
            found.push(("regex", GrammarSpec::Regex(r.clone())));
        }
        if let Some(g) = &self.ebnf {
            found.push(("ebnf", GrammarSpec::Ebnf(g.clone())));
        }
        if let Some(s) = &self.json_schema {
            found.push(("json_schema", schema_value(s, "json_schema")?));
        }
        if let Some(s) = &self.guided_json {
            found.push(("guided_json", schema_value(s, "guided_json")?));
        }
        if let Some(r) = &self.guided_regex {
            found.push(("guided_regex", GrammarSpec::Regex(r.clone())));
        }
        if let Some(c) = &self.guided_choice {
            found.push(("guided_choice", GrammarSpec::Choice(c.clone())));
        }
        if let Some(g) = &self.guided_grammar {
            found.push(("guided_grammar", GrammarSpec::Ebnf(g.clone())));
        }
        if let Some(g) = &self.grammar {
            found.push(("grammar", GrammarSpec::Ebnf(g.clone())));
        }
        match found.len() {
            0 | 1 => Ok(found.pop().map(|(_, s)| s)),
            _ => {
                let names: Vec<&str> = found.iter().map(|(n, _)| *n).collect();
                Err(ApiError::bad(format!(
                    "at most one structured-output constraint per request; this one has {}",
                    names.join(", ")
                ))
                .param("response_format"))
            }
        }
    }
}

/// The Responses API's `text` (`{"format": {"type": "text" | "json_object" | "json_schema",
/// ...}}`, the schema's fields beside the type).
pub fn responses_text_format(text: &Value) -> Result<Option<GrammarSpec>, ApiError> {
    let bad = |m: String| ApiError::bad(m).param("text");
    let obj = text
        .as_object()
        .ok_or_else(|| bad("text must be an object".into()))?;
    if let Some(extra) = obj.keys().find(|k| k.as_str() != "format") {
        return Err(bad(format!("text.{extra} is not supported")));
    }
    let Some(format) = obj.get("format") else {
        return Ok(None);
    };
    let f = format
        .as_object()
        .ok_or_else(|| bad("text.format must be an object".into()))?;
    let kind = f.get("type").and_then(Value::as_str).unwrap_or_default();
    let known: &[&str] = match kind {
        "text" | "json_object" => &["type"],
        "json_schema" => &["type", "name", "schema", "strict", "description"],
        other => {
            return Err(bad(format!(
                "text.format type {other:?} is not supported (text, json_object, json_schema)"
            )))
        }
    };
    if let Some(extra) = f.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(bad(format!("text.format.{extra} is not supported")));
    }
    match (kind, f.get("schema")) {
        ("text", _) => Ok(None),
        ("json_object", _) => Ok(Some(GrammarSpec::JsonObject)),
        (_, Some(s @ (Value::Object(_) | Value::Bool(_)))) => {
            Ok(Some(GrammarSpec::JsonSchema(s.clone())))
        }
        _ => Err(bad("text.format.schema must be a JSON schema object".into())),
    }
}

/// A schema given as an object, or as a string of JSON (SGLang's native `json_schema`).
fn schema_value(v: &Value, param: &'static str) -> Result<GrammarSpec, ApiError> {
    match v {
        Value::String(s) => serde_json::from_str(s)
            .map(GrammarSpec::JsonSchema)
            .map_err(|e| ApiError::bad(format!("{param} is not valid JSON: {e}")).param(param)),
        Value::Object(_) | Value::Bool(_) => Ok(GrammarSpec::JsonSchema(v.clone())),
        _ => Err(ApiError::bad(format!("{param} must be a JSON schema object")).param(param)),
    }
}

/// OpenAI's `response_format`. `text` constrains nothing; `json_object` is any object, or the
/// `schema` beside it (llama.cpp's form); `json_schema` takes `json_schema.schema` (or a
/// `schema` beside the type). Other types, and fields that would be ignored, are refused.
fn response_format(rf: &Value) -> Result<Option<GrammarSpec>, ApiError> {
    let bad = |m: String| ApiError::bad(m).param("response_format");
    let obj = rf
        .as_object()
        .ok_or_else(|| bad("response_format must be an object".into()))?;
    let kind = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("response_format.type is required".into()))?;
    let known: &[&str] = match kind {
        "text" => &["type"],
        "json_object" => &["type", "schema"],
        "json_schema" => &["type", "json_schema", "schema"],
        other => {
            return Err(bad(format!(
                "response_format type {other:?} is not supported (text, json_object, json_schema)"
            )))
        }
    };
    if let Some(extra) = obj.keys().find(|k| !known.contains(&k.as_str())) {
        return Err(bad(format!(
            "response_format.{extra} is not supported with type {kind:?}"
        )));
    }
    let schema = |v: &Value| match v {
        Value::Object(_) | Value::Bool(_) => Ok(GrammarSpec::JsonSchema(v.clone())),
        _ => Err(bad(
            "response_format schema must be a JSON schema object".into()
        )),
    };
    match kind {
        "text" => Ok(None),
        "json_object" => obj
            .get("schema")
            .map_or(Ok(GrammarSpec::JsonObject), schema)
            .map(Some),
        _ => {
            if let Some(s) = obj.get("schema") {
                return schema(s).map(Some);
            }
            let js = obj
                .get("json_schema")
                .and_then(Value::as_object)
                .ok_or_else(|| bad("response_format.json_schema must be an object".into()))?;
            let allowed = ["name", "schema", "strict", "description"];
            if let Some(extra) = js.keys().find(|k| !allowed.contains(&k.as_str())) {
                return Err(bad(format!(
                    "response_format.json_schema.{extra} is not supported"
                )));
            }
            // Without a schema, OpenAI's json_schema constrains to any JSON object.
            js.get("schema")
                .map_or(Ok(GrammarSpec::JsonObject), schema)
                .map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields(v: Value) -> StructuredFields {
        serde_json::from_value(v).expect("fields")
    }

    #[test]
    fn every_spelling_reads_into_its_spec() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        for (body, want) in [
            (json!({}), None),
            (json!({"response_format": {"type": "text"}}), None),
            (
                json!({"response_format": {"type": "json_object"}}),
                Some(GrammarSpec::JsonObject),
            ),
            (
                json!({"response_format": {"type": "json_object", "schema": schema}}),
                Some(GrammarSpec::JsonSchema(schema.clone())),
            ),
            (
                json!({"response_format": {"type": "json_schema",
                    "json_schema": {"name": "x", "schema": schema, "strict": true}}}),
                Some(GrammarSpec::JsonSchema(schema.clone())),
            ),
            (
                json!({"json_schema": schema.to_string()}),
                Some(GrammarSpec::JsonSchema(schema.clone())),
            ),
            (
                json!({"guided_json": schema}),
                Some(GrammarSpec::JsonSchema(schema.clone())),
            ),
            (
                json!({"regex": "a+"}),
                Some(GrammarSpec::Regex("a+".into())),
            ),
            (
                json!({"guided_regex": "a+"}),
                Some(GrammarSpec::Regex("a+".into())),
            ),
            (
                json!({"ebnf": "root ::= \"x\""}),
                Some(GrammarSpec::Ebnf("root ::= \"x\"".into())),
            ),
            (
                json!({"guided_choice": ["a", "b"]}),
                Some(GrammarSpec::Choice(vec!["a".into(), "b".into()])),
            ),
        ] {
            assert_eq!(
                fields(body.clone()).spec().expect("accepted"),
                want,
                "{body}"
            );
        }
    }

    #[test]
    fn the_responses_text_format_reads_and_refuses_like_response_format() {
        let schema = json!({"type": "object"});
        assert_eq!(responses_text_format(&json!({})).expect("ok"), None);
        assert_eq!(
            responses_text_format(&json!({"format": {"type": "text"}})).expect("ok"),
            None
        );
        assert_eq!(
            responses_text_format(&json!({"format": {"type": "json_object"}})).expect("ok"),
            Some(GrammarSpec::JsonObject)
        );
        assert_eq!(
            responses_text_format(
                &json!({"format": {"type": "json_schema", "name": "x", "schema": schema, "strict": true}})
            )
            .expect("ok"),
            Some(GrammarSpec::JsonSchema(schema.clone()))
        );
        for bad in [
            json!("json"),
            json!({"verbosity": "low"}),
            json!({"format": {"type": "json_schema", "name": "x"}}),
            json!({"format": {"type": "json_schema", "schema": schema, "extra": 1}}),
            json!({"format": {"type": "grammar"}}),
        ] {
            assert!(responses_text_format(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_types_extra_fields_and_two_constraints_are_refused() {
        for body in [
            json!({"response_format": {"type": "sound"}}),
            json!({"response_format": "json"}),
            json!({"response_format": {}}),
            json!({"response_format": {"type": "json_object", "schema": 123}}),
            json!({"response_format": {"type": "text", "schema": {}}}),
            json!({"response_format": {"type": "json_schema", "json_schema": {"schema": {}, "x": 1}}}),
            json!({"response_format": {"type": "json_schema"}}),
            json!({"json_schema": "{not json"}),
            json!({"json_schema": 5}),
            json!({"regex": "a", "guided_choice": ["a"]}),
            json!({"response_format": {"type": "json_object"}, "ebnf": "root ::= \"a\""}),
        ] {
            assert!(fields(body.clone()).spec().is_err(), "{body}");
        }
    }
}
