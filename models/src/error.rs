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
    /// Too much work is queued already: try again later.
    #[error("busy: {0}")]
    Busy(String),
    /// A forward pass shared by several sequences failed; each of them gets this copy of it.
    #[error("the batched step failed: {0}")]
    StepFailed(String),
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
    /// A config field holds a value no model can run with (a NaN or negative RoPE base, a zero
    /// epsilon, ...).
    #[error("invalid model config: `{field}` = {value} ({expected})")]
    ConfigValue {
        /// The field, as named in `config.json` (or the GGUF metadata key).
        field: String,
        /// The value found.
        value: String,
        /// What the field must be.
        expected: &'static str,
    },
    /// A safetensors file is malformed (header, dtype, shape, offsets).
    #[error("safetensors: {0}")]
    Safetensors(String),
    /// A model file is not a regular file (a FIFO, a device such as `/dev/zero`, a folder).
    #[error("{path} is not a regular file")]
    NotRegularFile {
        /// The file.
        path: PathBuf,
    },
    /// A file is larger than anything of its kind can legitimately be.
    #[error("{path} is {size} bytes, over the {limit}-byte limit for this kind of file")]
    FileTooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit for its kind.
        limit: u64,
    },
    /// Loading would need more memory than the machine has available.
    #[error(
        "the model needs about {needed} bytes (weights and the KV cache of its context) but only \
         {available} bytes of memory are available; pass a shorter context or override the check"
    )]
    MemoryBudget {
        /// Bytes the weights and KV cache need.
        needed: u64,
        /// Bytes available (or the budget given).
        available: u64,
    },
    /// A chat template exceeded one of the bounds that keep untrusted templates from hanging or
    /// exhausting memory.
    #[error("chat template exceeds its {bound} bound ({limit})")]
    TemplateLimit {
        /// The bound (`fuel`, `nesting depth`, `output length`, ...).
        bound: &'static str,
        /// Its value.
        limit: u64,
    },
    /// A JSON schema, grammar or tool definition that cannot constrain decoding (malformed,
    /// unsupported, or naming what the vocabulary lacks): a fault of the request.
    #[error("invalid schema or grammar: {0}")]
    InvalidSchema(String),
    /// Constrained decoding went wrong while generating: a token the constraint did not allow,
    /// or an error of the grammar engine.
    #[error("constrained decoding: {0}")]
    Constraint(String),
    /// llama.cpp, behind the ggml baseline engine, failed (loading the model, creating a
    /// context, decoding a batch), or the baseline is not in this build.
    #[error("ggml baseline (llama.cpp): {0}")]
    Ggml(String),
    /// An input (a line of user text, a prompt) is longer than the limit in force.
    #[error("input of {length} bytes exceeds the {limit}-byte limit")]
    InputTooLong {
        /// Its length in bytes.
        length: u64,
        /// The limit.
        limit: u64,
    },
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
