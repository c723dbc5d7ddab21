//! Build script shared by the workspace crates that link `mlx-sys` (mlx-rs, mlx-models and the
//! umbrella package): when `libmlx` comes from a prefix we do not modify (`MLX_DIR`, a Python
//! install, macOS), give this crate's binaries an rpath to it. With the default cached wheel the
//! library is already linked by absolute path and this only adds a harmless duplicate.
//!
//! A downstream crate that sets `MLX_DIR` can do the same in its own build script: it depends on
//! `mlx-sys` and reads `DEP_MLXC_LIBDIR`.
//!
//! With the `ggml-baseline` feature (mlx-models, the umbrella package), llama.cpp is linked
//! statically into the same binaries as `libmlx`, and both define a C function `gguf_get_key`
//! (libmlx's bundled gguflib, ggml's GGUF reader; different signatures). An ELF executable
//! exports its definition of a name that a linked shared library uses, so libmlx's calls would
//! land in ggml's (an abort in `mlx_rs::io::gguf::load_gguf`). `--exclude-libs,ALL` keeps the
//! symbols of static archives out of the dynamic symbol table. A downstream binary that links
//! both needs the same flag in its own build script.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_MLXC_LIBDIR");
    if let Ok(dir) = std::env::var("DEP_MLXC_LIBDIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if std::env::var_os("CARGO_FEATURE_GGML_BASELINE").is_some() && os != "macos" {
        println!("cargo:rustc-link-arg=-Wl,--exclude-libs,ALL");
    }
}
