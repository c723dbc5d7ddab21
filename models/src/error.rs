//! Errors of the model zoo.

use std::path::PathBuf;

/// Everything that can go wrong between a model path and generated text.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An MLX operation failed (shapes, dtypes, ...).
    #[error(transparent)]
    Mlx(#[from] mlx_rs::Error),
    /// A file could not be read.
    #[error("cannot read {path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// `config.json` (or GGUF metadata) is malformed or inconsistent.
    #[error("invalid model config: {0}")]
    Config(String),
    /// The checkpoint's `model_type` (or GGUF architecture) is not one this crate implements.
    #[error("unsupported model type `{model_type}`; supported: {}", supported.join(", "))]
    UnsupportedModel {
        /// The type found.
        model_type: String,
        /// The types this crate supports.
        supported: Vec<&'static str>,
    },
    /// A tensor the architecture needs is not in the checkpoint.
    #[error("missing tensor `{0}`")]
    MissingTensor(String),
    /// The checkpoint holds tensors the architecture does not use.
    #[error("unexpected tensors in the checkpoint: {}", .0.join(", "))]
    UnexpectedTensors(Vec<String>),
    /// A tensor has the wrong shape.
    #[error("tensor `{name}` has shape {found:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The tensor.
        name: String,
        /// The shape the architecture needs.
        expected: Vec<i32>,
        /// The shape in the checkpoint.
        found: Vec<i32>,
    },
    /// A GGUF file is malformed, or holds a tensor type we cannot load.
    #[error("GGUF: {0}")]
    Gguf(String),
    /// Tokenizer or chat template problem.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Chat template rendering failed (including the template's own `raise_exception`).
    #[error("chat template: {0}")]
    ChatTemplate(String),
    /// Downloading from the Hugging Face Hub failed, or offline with nothing cached.
    #[error("model hub: {0}")]
    Hub(String),
    /// The prompt (plus the requested tokens) does not fit the model's context.
    #[error("prompt of {prompt} tokens plus {requested} new tokens exceeds the context length {context}")]
    ContextOverflow {
        /// Prompt tokens.
        prompt: usize,
        /// Tokens requested.
        requested: usize,
        /// The model's limit.
        context: usize,
    },
    /// An argument is out of range (sampling parameters, window sizes, ...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// Shorthand for `std::result::Result<T, mlx_models::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, err: impl std::fmt::Display) -> Error {
        Error::Io {
            path: path.into(),
            message: err.to_string(),
        }
    }
}
