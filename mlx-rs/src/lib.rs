//! A safe, idiomatic Rust API over Apple's MLX (through mlx-c).
pub use mlx_sys as sys;
