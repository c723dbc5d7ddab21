//! The model zoo: LLM forward passes on MLX, and everything around them.
//!
//! Data flows one way: [`load`] reads a checkpoint (Hugging Face folder, MLX-quantized folder or
//! GGUF file) into a [`Config`](config::ModelConfig) and [`Weights`](weights::Weights); a family
//! in [`families`] builds its layers from [`nn`] pieces; [`text`] turns chat messages into token
//! ids and back; [`runtime`] runs prefill and decode with a KV cache and samplers.
//!
//! The seam that the examples and benchmarks use is [`model::LanguageModel`]: a model you can
//! generate with and score text with, whatever engine stands behind it.
#![warn(missing_docs)]

pub mod baseline;
#[cfg(feature = "cli")]
pub mod cli;
pub mod config;
pub mod error;
pub mod families;
pub mod load;
pub mod model;
pub mod nn;
pub mod parallel;
pub mod runtime;
pub mod text;
pub mod weights;

pub use error::{Error, Result};

/// The crate's README (its package page), compiled and run as a doctest.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
