//! Linking: static `mlxc`, dynamic `mlx`, the C++ runtime, optionally OpenBLAS; and how binaries
//! of this and of dependent crates find `libmlx` at run time.

use crate::provision::{Mlx, Origin};
use crate::BuildResult;
use std::path::{Path, PathBuf};

pub fn emit(mlx: &Mlx, mlxc_lib: &Path, out_dir: &Path) -> BuildResult<()> {
    println!("cargo:rustc-link-search=native={}", mlxc_lib.display());
    println!("cargo:rustc-link-lib=static=mlxc");

    let lib_dir = mlx.lib_dir();
    if mlx.origin == Origin::Cache && mlx.flavor.library_file().ends_with(".so") {
        // Our cached libmlx has no DT_SONAME (see elf.rs): a linker script naming it by absolute
        // path makes every binary that links it record that path, so dependents' tests,
        // examples and applications load it with no rpath and no LD_LIBRARY_PATH.
        let script_dir = out_dir.join("link");
        std::fs::create_dir_all(&script_dir)
            .map_err(|e| format!("cannot create {}: {e}", script_dir.display()))?;
        std::fs::write(
            script_dir.join("libmlx.so"),
            format!("INPUT({})\n", mlx.library().display()),
        )
        .map_err(|e| format!("cannot write the libmlx linker script: {e}"))?;
        println!("cargo:rustc-link-search=native={}", script_dir.display());
    } else {
        // A prefix we do not own (MLX_DIR, Python) or macOS (absolute install name): search path
        // plus rpath. The rpath reaches only this crate's own targets; dependents read
        // DEP_MLXC_LIBDIR (below) and add it to theirs.
        println!("cargo:rustc-link-search=native={}", lib_dir.display());
    }
    println!("cargo:rustc-link-lib=dylib=mlx");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib_dir.display());
    println!("cargo:libdir={}", lib_dir.display());
    println!("cargo:include={}", mlx.include_dir().display());
    println!("cargo:version={}", mlx.version);

    match crate::env("CARGO_CFG_TARGET_OS")?.as_str() {
        "macos" => println!("cargo:rustc-link-lib=dylib=c++"),
        _ => println!("cargo:rustc-link-lib=dylib=stdc++"),
    }

    if std::env::var_os("CARGO_FEATURE_OPENBLAS").is_some()
        && crate::env("CARGO_CFG_TARGET_OS")? == "linux"
    {
        match find_openblas() {
            Some(path) => {
                let dir = path.parent().ok_or("OpenBLAS path without a folder")?;
                let file = path
                    .file_name()
                    .ok_or("OpenBLAS path without a file name")?;
                println!("cargo:rustc-link-search=native={}", dir.display());
                println!(
                    "cargo:rustc-link-lib=dylib:+verbatim={}",
                    file.to_string_lossy()
                );
                println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
                println!("cargo:openblas={}", path.display());
                // lib.rs keeps a reference to an OpenBLAS symbol under this cfg, so that
                // `--as-needed` keeps the DT_NEEDED entry that makes OpenBLAS interpose.
                println!("cargo:rustc-cfg=mlx_openblas");
            }
            None => {
                println!(
                    "cargo:warning=OpenBLAS (libopenblas.so.0) not found: MLX keeps the wheel's \
                     reference BLAS, and f32 matmul runs about 30x slower. Debian/Ubuntu: \
                     `apt-get install libopenblas0-pthread`, or set MLX_BLAS_LIB to a \
                     libopenblas.so.0."
                );
                // Without this, a build made before OpenBLAS was installed keeps the reference
                // BLAS until `cargo clean` (the script's outputs are cached): the folder the
                // package installs into is watched instead, so the next build after the
                // install finds it.
                if let Some(dir) = openblas_install_dir() {
                    println!("cargo:rerun-if-changed={}", dir.display());
                }
            }
        }
    }
    Ok(())
}

/// Debian's and Ubuntu's multiarch library folder, where their OpenBLAS packages install
/// `libopenblas.so.0`.
fn debian_lib_dir() -> PathBuf {
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    PathBuf::from(format!("/usr/lib/{arch}-linux-gnu"))
}

/// [`debian_lib_dir`] where it exists (other systems: none is watched).
fn openblas_install_dir() -> Option<PathBuf> {
    let dir = debian_lib_dir();
    dir.is_dir().then_some(dir)
}

/// `MLX_BLAS_LIB`, else `libopenblas.so.0` in the usual library folders.
fn find_openblas() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("MLX_BLAS_LIB") {
        let path = PathBuf::from(path);
        return path.is_file().then_some(path);
    }
    let arch = std::env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_default();
    [
        debian_lib_dir()
            .join("libopenblas.so.0")
            .to_string_lossy()
            .into_owned(),
        format!("/lib/{arch}-linux-gnu/libopenblas.so.0"),
        "/usr/lib64/libopenblas.so.0".to_string(),
        "/usr/lib/libopenblas.so.0".to_string(),
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.is_file())
}
