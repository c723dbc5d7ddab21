//! Loading checkpoints: Hugging Face folders (sharded safetensors, MLX-quantized), GGUF files,
//! and model ids resolved through the Hugging Face Hub cache.

pub mod gguf;
pub mod hf;
pub mod hub;
