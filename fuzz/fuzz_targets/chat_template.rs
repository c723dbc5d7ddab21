//! Chat template compilation and rendering on arbitrary template sources, with a fixed
//! conversation: `Ok` or a typed error (including a bound reached), never a panic, a stack
//! overflow, an unbounded allocation or a hang.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlx_models::text::chat::{ChatMessage, ChatTemplate};

fuzz_target!(|data: &[u8]| {
    let Ok(source) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(template) = ChatTemplate::new(source) else {
        return;
    };
    let messages = [
        ChatMessage::new("system", "You are helpful."),
        ChatMessage::new("user", "Hi <|im_end|> there"),
        ChatMessage::new("assistant", "Hello!"),
    ];
    let extra = serde_json::json!({"tools": [{"name": "f", "parameters": {"a": [1, 2.5, null]}}]});
    let _ = template.render(&messages, true, Some("<s>"), Some("</s>"), &extra);
});
