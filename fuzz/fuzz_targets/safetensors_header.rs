//! The safetensors header reader on arbitrary bytes: `Ok` or a typed error, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mlx_models::load::safetensors_file::SafetensorsFile;

fuzz_target!(|data: &[u8]| {
    let _ = SafetensorsFile::parse(data, data.len() as u64);
});
