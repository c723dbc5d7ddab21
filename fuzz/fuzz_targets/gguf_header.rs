//! The GGUF header reader on arbitrary bytes: parsing, deriving the config, and listing the
//! declared tensors must return `Ok` or a typed error, never panic or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlx_models::load::gguf::{config_from_gguf, declared_tensors};
use mlx_models::load::gguf_file::{GgufFile, GgufLimits};
use std::path::Path;

fuzz_target!(|data: &[u8]| {
    let Ok(gguf) = GgufFile::parse(data, data.len() as u64, &GgufLimits::default()) else {
        return;
    };
    let _ = declared_tensors(&gguf);
    if let Ok(config) = config_from_gguf(Path::new("fuzz.gguf"), &gguf) {
        let _ = mlx_models::families::expected_tensors(&config);
    }
});
