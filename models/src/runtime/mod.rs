//! Running a model: KV cache, samplers, the generation loop, the MLX engine and perplexity.

pub mod cache;
pub mod clock;
pub mod constraint;
pub mod engine;
pub mod generate;
pub mod openblas;
pub mod perplexity;
pub mod prefix_cache;
pub mod rss;
pub mod sample;
pub mod scheduler;
pub mod vocab_limit;
