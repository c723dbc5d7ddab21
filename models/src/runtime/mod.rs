//! Running a model: KV cache, samplers, the generation loop.

pub mod cache;
pub mod generate;
pub mod sample;
