//! The model zoo: LLM forward passes on MLX.
pub use mlx_rs;
