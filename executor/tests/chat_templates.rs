//! Chat templates rendered as Hugging Face transformers renders them: SmolLM2's, Qwen2.5's, a
//! Llama 3.2 style template that relies on `trim_blocks` / `lstrip_blocks`, and one using
//! Python string methods, `namespace()`, loop controls and `tojson(indent=...)`, over several
//! conversations, against jinja2's output with transformers' settings
//! (`fixtures/make_template_fixtures.py`). A template that raises must raise here too.

use executor::{render_chat_template, ChatMessage};

#[test]
fn templates_render_exactly_as_transformers_does() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/templates/cases.json");
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("json");
    let conversations: Vec<Vec<ChatMessage>> = fixture["conversations"]
        .as_array()
        .expect("conversations")
        .iter()
        .map(|c| {
            c.as_array()
                .expect("messages")
                .iter()
                .map(|m| {
                    ChatMessage::new(
                        m["role"].as_str().expect("role"),
                        m["content"].as_str().expect("content"),
                    )
                })
                .collect()
        })
        .collect();
    let cases = fixture["cases"].as_array().expect("cases");
    assert!(cases.len() >= 32);
    let mut errors = 0;
    for case in cases {
        let name = case["template"].as_str().expect("name");
        let source = fixture["templates"][name].as_str().expect("template");
        let messages = &conversations[case["conversation"].as_u64().expect("index") as usize];
        let agp = case["add_generation_prompt"].as_bool().expect("flag");
        let got = render_chat_template(source, messages, agp, "<BOS>", "<EOS>");
        match case.get("text").and_then(|t| t.as_str()) {
            Some(want) => assert_eq!(
                got.as_deref().unwrap_or("<error>"),
                want,
                "{name}, conversation {}, add_generation_prompt {agp}: {got:?}",
                case["conversation"]
            ),
            None => {
                errors += 1;
                let err = got.expect_err("transformers raises here");
                let want = case["error"].as_str().expect("error");
                assert!(err.to_string().contains(want), "{err} vs {want}");
            }
        }
    }
    assert!(errors > 0, "no raising case was checked");
}
