//! The tokenizer built from a GGUF header's `tokenizer.ggml.*` metadata, on arbitrary bytes;
//! a tokenizer that builds then encodes and decodes a fixed text. `Ok` or a typed error, never
//! a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlx_models::load::gguf_file::{GgufFile, GgufLimits};
use mlx_models::text::Tokenizer;

fuzz_target!(|data: &[u8]| {
    let Ok(gguf) = GgufFile::parse(data, data.len() as u64, &GgufLimits::default()) else {
        return;
    };
    let Ok(tokenizer) = Tokenizer::from_gguf(&gguf) else {
        return;
    };
    if let Ok(ids) = tokenizer.encode("Hello <|im_end|> wörld 123", true) {
        let _ = tokenizer.decode(&ids, false);
    }
});
