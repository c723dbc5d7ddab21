//! Umbrella package of the workspace: it holds the top-level `examples/` and `benches/` and
//! re-exports the three crates.
pub use mlx_models;
pub use mlx_rs;
pub use mlx_sys;
