//! Umbrella package of the workspace: it holds the top-level `examples/` and `benches/`.
pub use mlx_sys;
