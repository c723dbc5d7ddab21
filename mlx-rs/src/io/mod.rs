//! Reading and writing arrays: safetensors and GGUF files.

pub mod gguf;
pub mod safetensors;
