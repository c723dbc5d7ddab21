//! `config.json` parsing and validation on arbitrary text, then the tensor plan of a config
//! that passes: `Ok` or a typed error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlx_models::config::{GenerationConfig, ModelConfig};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = GenerationConfig::from_json(text);
    if let Ok(config) = ModelConfig::from_json(text) {
        let _ = mlx_models::load::check_supported(&config);
        let _ = mlx_models::families::expected_tensors(&config);
        let _ = config.quantization();
    }
});
