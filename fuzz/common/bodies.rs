//! The bodies of the fuzz targets, shared by `fuzz/fuzz_targets/*` (libFuzzer) and by
//! `models/tests/fuzz_corpus.rs`, which replays the committed corpora in the ordinary test
//! suite. Each takes arbitrary bytes and must return without panicking, whatever they hold.
#![allow(dead_code)] // each includer uses a part

use mlx_models::config::{GenerationConfig, ModelConfig};
use mlx_models::load::gguf::{config_from_gguf, declared_tensors};
use mlx_models::load::gguf_file::{GgufFile, GgufLimits};
use mlx_models::load::safetensors_file::SafetensorsFile;
use mlx_models::text::chat::{ChatMessage, ChatTemplate};
use mlx_models::text::Tokenizer;
use std::path::Path;

/// The GGUF header reader, the config derived from it, and the tensor plan.
pub fn gguf_header(data: &[u8]) {
    let Ok(gguf) = GgufFile::parse(data, data.len() as u64, &GgufLimits::default()) else {
        return;
    };
    if let Ok(config) = config_from_gguf(Path::new("fuzz.gguf"), &gguf) {
        let _ = declared_tensors(&gguf, &config);
        let _ = mlx_models::families::expected_tensors(&config);
    }
}

/// The safetensors header reader.
pub fn safetensors_header(data: &[u8]) {
    let _ = SafetensorsFile::parse(data, data.len() as u64);
}

/// `config.json` and `generation_config.json` parsing, then the plan of a valid config.
pub fn config_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = GenerationConfig::from_json(text);
    if let Ok(config) = ModelConfig::from_json(text) {
        let _ = mlx_models::load::check_supported(&config);
        let _ = mlx_models::families::expected_tensors(&config);
        let _ = config.quantization();
    }
}

/// The tokenizer built from GGUF metadata; one that builds encodes and decodes a text.
pub fn gguf_tokenizer(data: &[u8]) {
    let Ok(gguf) = GgufFile::parse(data, data.len() as u64, &GgufLimits::default()) else {
        return;
    };
    let Ok(tokenizer) = Tokenizer::from_gguf(&gguf) else {
        return;
    };
    if let Ok(ids) = tokenizer.encode("Hello <|im_end|> wörld 123", true) {
        let _ = tokenizer.decode(&ids, false);
    }
}

/// Chat template compilation and rendering of a fixed conversation.
pub fn chat_template(data: &[u8]) {
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
}
