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
mod wheel;

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
        tools::FROM_PYPI_SWITCH,
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-env-changed=DOCS_RS");
    println!("cargo:rustc-check-cfg=cfg(mlx_openblas)");
    let manifest_dir = PathBuf::from(env("CARGO_MANIFEST_DIR")?);
    let out_dir = PathBuf::from(env("OUT_DIR")?);
    if std::env::var_os("DOCS_RS").is_some() {
        // docs.rs builds without network: documentation only, from the committed bindings.
        return bindings::use_pregenerated(&manifest_dir, &out_dir);
    }
    // A symbolic link to the workspace's `vendor/`, so that the packaged crate carries it.
    let vendor = manifest_dir.join("vendor");
    println!("cargo:rerun-if-changed={}", vendor.display());
    println!("cargo:rerun-if-changed=build");

    let pins = pins::Pins::load(&vendor.join("pins.toml"))?;
    let flavor = provision::Flavor::for_target()?;
    let mlx = provision::provision(&pins, flavor, &out_dir)?;
    let mlxc_src = mlxc::source(&pins, &out_dir)?;
    mlxc::check_pairing(&mlxc_src, &mlx)?;
    tools::ensure_cmake(&pins, &out_dir)?;
    let mlxc_lib = mlxc::build(&mlxc_src, &mlx, &vendor)?;
    let clang_args = if tools::libclang_from_pypi_forced()
        || (!bindings::libclang_loads() && tools::libclang_fallback_allowed())
    {
        tools::libclang_from_pypi(&pins, &out_dir)?
    } else {
        Vec::new()
    };
    bindings::generate(&mlxc_src, &out_dir, &clang_args)?;
    bindings::generate_kernels(
        &mlxc_src,
        &manifest_dir.join("kernels"),
        &out_dir,
        &clang_args,
    )?;
    kernels::build(&manifest_dir, &mlx, &mlxc_src)?;
    link::emit(&mlx, &mlxc_lib, &out_dir)?;
    Ok(())
}

/// A variable cargo always sets for build scripts.
pub fn env(name: &str) -> BuildResult<String> {
    std::env::var(name).map_err(|_| format!("cargo did not set {name}"))
}
