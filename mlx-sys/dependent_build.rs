//! Build script shared by the workspace crates that link `mlx-sys` (mlx-rs, mlx-models and the
//! umbrella package): when `libmlx` comes from a prefix we do not modify (`MLX_DIR`, a Python
//! install, macOS), give this crate's binaries an rpath to it. With the default cached wheel the
//! library is already linked by absolute path and this only adds a harmless duplicate.
//!
//! A downstream crate that sets `MLX_DIR` can do the same in its own build script: it depends on
//! `mlx-sys` and reads `DEP_MLXC_LIBDIR`.
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_MLXC_LIBDIR");
    if let Ok(dir) = std::env::var("DEP_MLXC_LIBDIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
    }
}
