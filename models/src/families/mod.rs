//! Model families, one per file, and the registry by `model_type`.
//!
//! [`llama`] is the baseline decoder; [`qwen2`] and [`qwen3`] build the same block with their
//! differences in attention (biases, per-head norms), all from the layers in [`crate::nn`].

pub mod llama;
pub mod qwen2;
pub mod qwen3;

use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::model::CausalLm;
use crate::weights::Weights;

/// How a family builds its layers (defined with the loader, which prepares it).
pub use crate::load::BuildOptions;

/// The `model_type`s [`build`] implements.
pub const SUPPORTED: &[&str] = &["llama", "qwen2", "qwen3"];

/// The tensors the family of `config.model_type` takes, with their dense shapes (see
/// [`crate::load::plan`]); [`Error::UnsupportedModel`] for an unknown `model_type`.
pub fn expected_tensors(config: &ModelConfig) -> Result<Vec<crate::load::plan::ExpectedTensor>> {
    match config.model_type.as_str() {
        "llama" => llama::expected_tensors(
            config,
            llama::attention_spec(config),
            config.mlp_bias.unwrap_or(false),
        ),
        "qwen2" => llama::expected_tensors(config, qwen2::ATTENTION, false),
        "qwen3" => llama::expected_tensors(config, qwen3::ATTENTION, false),
        other => Err(Error::UnsupportedModel {
            model_type: other.to_string(),
            supported: SUPPORTED.to_vec(),
        }),
    }
}

/// Builds the family of `config.model_type` from `weights`, consuming every tensor by its
/// Hugging Face name: a missing tensor is [`Error::MissingTensor`], a mis-shaped one
/// [`Error::ShapeMismatch`], a left-over one [`Error::UnexpectedTensors`], and an unknown
/// `model_type` [`Error::UnsupportedModel`].
///
/// ```
/// use mlx_models::config::ModelConfig;
/// use mlx_models::families::{build, BuildOptions};
/// use mlx_models::{weights::Weights, Error};
/// let config = ModelConfig::from_json(r#"{"model_type":"gpt2","hidden_size":8,
///     "num_hidden_layers":1,"intermediate_size":8,"num_attention_heads":2,"vocab_size":4}"#)?;
/// let options = BuildOptions { dtype: mlx_rs::Dtype::Float32, quantization: None };
/// let r = build(&config, Weights::default(), &options);
/// assert!(matches!(r, Err(Error::UnsupportedModel { .. })));
/// # Ok::<(), mlx_models::Error>(())
/// ```
pub fn build(
    config: &ModelConfig,
    weights: Weights,
    options: &BuildOptions,
) -> Result<Box<dyn CausalLm>> {
    match config.model_type.as_str() {
        "llama" => Ok(Box::new(llama::build(config, weights, options)?)),
        "qwen2" => Ok(Box::new(qwen2::build(config, weights, options)?)),
        "qwen3" => Ok(Box::new(qwen3::build(config, weights, options)?)),
        other => Err(Error::UnsupportedModel {
            model_type: other.to_string(),
            supported: SUPPORTED.to_vec(),
        }),
    }
}
