//! Build script of `mlx-sys`: provision MLX, build mlx-c, generate bindings, link.
//!
//! Each step lives in its own file:
//! - [`pins`]: the versions and checksums in `vendor/pins.toml`;
//! - [`provision`]: find or fetch the prebuilt MLX (headers + `libmlx`);
//! - [`mlxc`]: find or fetch mlx-c's source and build it with CMake;
//! - [`bindings`]: bindgen over `mlx/c/mlx.h` and the kernels' C headers;
//! - [`link`]: libraries, the loader path of dependents, OpenBLAS.
//!
//! Every failure ends the build with a message that says what is missing and how to get it.

mod bindings;
mod elf;
mod kernels;
mod link;
mod mlxc;
mod pins;
mod provision;
mod tools;

use std::path::PathBuf;

/// A build failure: a message for the person running `cargo build`.
pub type BuildResult<T> = Result<T, String>;

fn main() {
    if let Err(message) = run() {
        eprintln!("\nerror: mlx-sys build failed\n\n{message}\n");
        std::process::exit(1);
    }
}

fn run() -> BuildResult<()> {
    for var in [
        "MLX_DIR",
        "MLX_C_DIR",
        "MLX_CACHE_DIR",
        "MLX_BLAS_LIB",
        "PYTHON",
        "CMAKE",
        "LIBCLANG_PATH",
        "BINDGEN_EXTRA_CLANG_ARGS",
        "CARGO_NET_OFFLINE",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env("OUT_DIR")?);
    let vendor = manifest_dir.join("../vendor");
    println!("cargo:rerun-if-changed={}", vendor.display());
    println!("cargo:rerun-if-changed=build");

    let pins = pins::Pins::load(&vendor.join("pins.toml"))?;
    let flavor = provision::Flavor::for_target()?;
    let mlx = provision::provision(&pins, flavor, &out_dir)?;
    let mlxc_src = mlxc::source(&pins, &out_dir)?;
    mlxc::check_pairing(&mlxc_src, &mlx)?;
    let mlxc_lib = mlxc::build(&mlxc_src, &mlx, &vendor)?;
    bindings::generate(&mlxc_src, &out_dir)?;
    bindings::generate_kernels(&mlxc_src, &manifest_dir.join("kernels"), &out_dir)?;
    kernels::build(&manifest_dir, &mlx, &mlxc_src)?;
    link::emit(&mlx, &mlxc_lib, &out_dir)?;
    Ok(())
}

/// A variable cargo always sets for build scripts.
pub fn env(name: &str) -> BuildResult<String> {
    std::env::var(name).map_err(|_| format!("cargo did not set {name}"))
}
