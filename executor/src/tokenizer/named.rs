//! Chat templates known by name (`--chat-template NAME`), for models whose file carries none or
//! the wrong one. Each is written as the family's own Jinja template renders it.

/// ChatML (Qwen, SmolLM2, many fine-tunes).
const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' \
    + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}\
    {{ '<|im_start|>assistant\\n' }}{% endif %}";

/// Llama 3 Instruct.
const LLAMA3: &str = "{% for message in messages %}{% set content = '<|start_header_id|>' + \
    message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' %}\
    {% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}\
    {% endfor %}{% if add_generation_prompt %}\
    {{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";

/// Cohere Command R.
const COMMAND_R: &str = "{% for message in messages %}{% if message['role'] == 'system' %}\
    {% set token = '<|SYSTEM_TOKEN|>' %}{% elif message['role'] == 'user' %}\
    {% set token = '<|USER_TOKEN|>' %}{% else %}{% set token = '<|CHATBOT_TOKEN|>' %}{% endif %}\
    {{ '<|START_OF_TURN_TOKEN|>' + token + message['content'] | trim + '<|END_OF_TURN_TOKEN|>' }}\
    {% endfor %}{% if add_generation_prompt %}{{ '<|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>' }}\
    {% endif %}";

/// Zephyr.
const ZEPHYR: &str = "{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + \
    message['content'] + eos_token + '\\n' }}{% endfor %}{% if add_generation_prompt %}\
    {{ '<|assistant|>\\n' }}{% endif %}";

/// The names `--chat-template` knows.
pub const NAMES: &[&str] = &["chatml", "llama3", "command-r", "zephyr"];

/// The Jinja source of a named template.
pub fn named_chat_template(name: &str) -> Option<&'static str> {
    match name {
        "chatml" => Some(CHATML),
        "llama3" => Some(LLAMA3),
        "command-r" => Some(COMMAND_R),
        "zephyr" => Some(ZEPHYR),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tokenizer::render_chat_template;
    use crate::ChatMessage;

    fn chat() -> Vec<ChatMessage> {
        vec![
            ChatMessage::new("system", "You are a test."),
            ChatMessage::new("user", "Hi there"),
        ]
    }

    #[test]
    fn named_templates_render_their_families_formats() {
        let render = |name: &str| {
            let src = named_chat_template(name).unwrap_or_default();
            render_chat_template(src, &chat(), true, "<BOS>", "</s>").unwrap_or_default()
        };
        assert_eq!(
            render("command-r"),
            "<|START_OF_TURN_TOKEN|><|SYSTEM_TOKEN|>You are a test.<|END_OF_TURN_TOKEN|>\
             <|START_OF_TURN_TOKEN|><|USER_TOKEN|>Hi there<|END_OF_TURN_TOKEN|>\
             <|START_OF_TURN_TOKEN|><|CHATBOT_TOKEN|>"
        );
        assert_eq!(
            render("chatml"),
            "<|im_start|>system\nYou are a test.<|im_end|>\n<|im_start|>user\nHi there<|im_end|>\n\
             <|im_start|>assistant\n"
        );
        assert_eq!(
            render("llama3"),
            "<BOS><|start_header_id|>system<|end_header_id|>\n\nYou are a test.<|eot_id|>\
             <|start_header_id|>user<|end_header_id|>\n\nHi there<|eot_id|>\
             <|start_header_id|>assistant<|end_header_id|>\n\n"
        );
        assert_eq!(
            render("zephyr"),
            "<|system|>\nYou are a test.</s>\n<|user|>\nHi there</s>\n<|assistant|>\n"
        );
        assert!(NAMES.iter().all(|n| named_chat_template(n).is_some()));
        assert_eq!(named_chat_template("nope"), None);
    }
}
