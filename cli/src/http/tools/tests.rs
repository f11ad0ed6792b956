use super::*;

fn fields(v: Value) -> ToolFields {
    serde_json::from_value(v).expect("tool fields")
}

fn weather() -> Value {
    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather now",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
        {"type": "function", "function": {"name": "get_time"}}])
}

fn ids() -> impl FnMut() -> String {
    let mut n = 0;
    move || {
        n += 1;
        format!("call-{n}")
    }
}

#[test]
fn choices_read_as_openai_defines_them() {
    assert!(fields(json!({})).setup().expect("ok").is_none());
    assert!(fields(json!({"tools": weather(), "tool_choice": "none"}))
        .setup()
        .expect("ok")
        .is_none());
    let auto = fields(json!({"tools": weather()}))
        .setup()
        .expect("ok")
        .expect("tools");
    assert_eq!(auto.choice, Choice::Auto);
    assert!(auto.grammar().is_none());
    let named = fields(json!({"tools": weather(),
        "tool_choice": {"type": "function", "function": {"name": "get_time"}}}))
    .setup()
    .expect("ok")
    .expect("tools");
    assert_eq!(named.choice, Choice::Named("get_time".into()));
    let Some(GrammarSpec::Lark(g)) = named.grammar() else {
        panic!("a grammar")
    };
    assert!(g.contains("get_time") && !g.contains("get_weather"), "{g}");
    assert!(g.starts_with("start: call\n"), "{g}");
    let required = fields(json!({"tools": weather(), "tool_choice": "required"}))
        .setup()
        .expect("ok")
        .expect("tools");
    let Some(GrammarSpec::Lark(g)) = required.grammar() else {
        panic!("a grammar")
    };
    assert!(g.contains("get_time") && g.contains("get_weather") && g.contains("call)*"));
    let single = fields(
        json!({"tools": weather(), "tool_choice": "required", "parallel_tool_calls": false}),
    )
    .setup()
    .expect("ok")
    .expect("tools");
    let Some(GrammarSpec::Lark(g)) = single.grammar() else {
        panic!("a grammar")
    };
    assert!(g.starts_with("start: call\n"));
    let text = required.system_text();
    assert!(
        text.contains("<tools>") && text.contains("\"name\":\"get_weather\""),
        "{text}"
    );
    assert!(text.contains("Weather now"));
}

#[test]
fn bad_tool_requests_are_refused() {
    for body in [
        json!({"tool_choice": "auto"}),
        json!({"tools": weather(), "tool_choice": "sometimes"}),
        json!({"tools": weather(), "tool_choice": {"type": "function", "function": {"name": "nope"}}}),
        json!({"tools": weather(), "tool_choice": {"type": "function"}}),
        json!({"tools": [{"type": "retrieval", "function": {"name": "x"}}]}),
        json!({"tools": [{"type": "function", "function": {"name": "has space"}}]}),
        json!({"tools": [{"type": "function", "function": {"name": "x", "parameters": 3}}]}),
        json!({"tools": [{"type": "function", "function": {"name": "x"}}, {"type": "function", "function": {"name": "x"}}]}),
        json!({"tools": [{"type": "function", "function": {"name": "x", "strict": true}}]}),
        json!({"parallel_tool_calls": true}),
    ] {
        assert!(fields(body.clone()).setup().is_err(), "{body}");
    }
    // Unknown fields inside a tool are refused by name at parse time.
    assert!(serde_json::from_value::<ToolFields>(
        json!({"tools": [{"type": "function", "function": {"name": "x", "extra": 1}}]})
    )
    .is_err());
}

#[test]
fn calls_are_parsed_out_of_the_text_and_broken_ones_stay_text() {
    let text = "Let me check.\n<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>\n<tool_call>\n{\"name\": \"get_time\", \"arguments\": {}}\n</tool_call>";
    let (content, calls) = parse_calls(text, usize::MAX, &mut ids());
    assert_eq!(content, "Let me check.");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].function.name, "get_weather");
    assert_eq!(calls[0].id, "call-1");
    let args: Value = serde_json::from_str(&calls[0].function.arguments).expect("json");
    assert_eq!(args, json!({"city": "Paris"}));
    let broken = "<tool_call>{not json}</tool_call> and <tool_call>{\"name\": \"x\", \"arguments\": 3}</tool_call>";
    let (content, calls) = parse_calls(broken, usize::MAX, &mut ids());
    assert!(calls.is_empty());
    assert_eq!(content, broken);
    let (content, calls) = parse_calls("no calls <tool_call> unclosed", usize::MAX, &mut ids());
    assert!(calls.is_empty());
    assert_eq!(content, "no calls <tool_call> unclosed");
}

#[test]
fn without_parallel_calls_only_the_first_is_a_call() {
    let text = "<tool_call>{\"name\": \"a\", \"arguments\": {}}</tool_call>\n<tool_call>{\"name\": \"b\", \"arguments\": {}}</tool_call>";
    let (content, calls) = parse_calls(text, 1, &mut ids());
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].function.name, "a");
    assert!(content.contains("\"b\""), "the rest stays text: {content}");
    let single = fields(json!({"tools": weather(), "parallel_tool_calls": false}))
        .setup()
        .expect("ok")
        .expect("tools");
    assert_eq!(single.max_calls(), 1);
}

#[test]
fn earlier_calls_and_results_render_as_the_model_writes_and_reads_them() {
    let calls = vec![ToolCall {
        id: "a".into(),
        kind: "function".into(),
        function: FunctionCall {
            name: "get_time".into(),
            arguments: "{\"tz\":\"UTC\"}".into(),
        },
    }];
    let r = render_calls(&calls);
    let (_, back) = parse_calls(&r, usize::MAX, &mut ids());
    assert_eq!(back[0].function.name, "get_time");
    assert_eq!(back[0].function.arguments, "{\"tz\":\"UTC\"}");
    assert_eq!(
        render_result("12:00"),
        "<tool_response>\n12:00\n</tool_response>"
    );
}

#[test]
fn the_splitter_streams_text_and_holds_back_calls() {
    let mut s = Splitter::default();
    let mut shown = String::new();
    for piece in [
        "Sure",
        ", one sec <",
        "tool",
        "_call>\n{\"name\": \"get_time\", ",
        "\"arguments\": {}}\n</tool_call>",
    ] {
        shown.push_str(&s.push(piece));
    }
    assert_eq!(shown, "Sure, one sec ");
    let (rest, calls) = s.finish(usize::MAX, &mut ids());
    assert_eq!(rest, "");
    assert_eq!(calls.len(), 1);
    // A `<` that does not become a call is released.
    let mut s = Splitter::default();
    let mut shown = s.push("a <b");
    shown.push_str(&s.push(" c <tool"));
    assert_eq!(shown, "a <b c ");
    let (rest, calls) = s.finish(usize::MAX, &mut ids());
    assert_eq!((rest.as_str(), calls.len()), ("<tool", 0));
    // Multi-byte text right before a held-back tail is cut on a character boundary.
    let mut s = Splitter::default();
    assert_eq!(s.push("héllo <"), "héllo ");
}
