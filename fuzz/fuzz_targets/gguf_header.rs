//! Fuzz target `gguf_header`: see `fuzz/common/bodies.rs`.
#![no_main]

#[path = "../common/bodies.rs"]
mod bodies;

libfuzzer_sys::fuzz_target!(|data: &[u8]| bodies::gguf_header(data));
