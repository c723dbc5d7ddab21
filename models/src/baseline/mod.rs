//! Baseline engines: other implementations of [`crate::model::LanguageModel`] that run the same
//! files, so the MLX path can be measured against them with the same tools.
//!
//! The one baseline is ggml through llama.cpp (module `ggml`, cargo feature `ggml-baseline`): the
//! engine Ollama used before it moved to MLX. On a Mac it is llama.cpp's Metal backend; on
//! Linux its CPU backend, or CUDA with the `cuda` feature. It is kept apart from the MLX
//! forward passes: it shares the file checks, the tokenizer and the sampling code, nothing else.
//!
//! [`BASELINE_AVAILABLE`] says whether this build has it, so tools can refuse `--backend ggml`
//! with a clear message instead of failing to compile.

#[cfg(feature = "ggml-baseline")]
pub mod ggml;

/// Whether this build of `mlx-models` has the ggml baseline (feature `ggml-baseline`).
pub const BASELINE_AVAILABLE: bool = cfg!(feature = "ggml-baseline");

/// The error for a tool asked to run the ggml baseline in a build without it.
///
/// ```
/// let e = mlx_models::baseline::not_built();
/// assert!(e.to_string().contains("--features ggml-baseline"));
/// ```
pub fn not_built() -> crate::Error {
    crate::Error::Ggml(
        "this build has no ggml baseline: rebuild with `--features ggml-baseline` \
         (it compiles llama.cpp, which needs cmake and libclang)"
            .into(),
    )
}
