//! bindgen over mlx-c's public header `mlx/c/mlx.h` (plain C).

use crate::BuildResult;
use std::path::Path;

pub fn generate(mlxc: &Path, out_dir: &Path) -> BuildResult<()> {
    let header = mlxc.join("mlx/c/mlx.h");
    let builder = bindgen::Builder::default()
        .header(header.to_string_lossy())
        .clang_arg(format!("-I{}", mlxc.display()))
        .allowlist_function("mlx_.*")
        .allowlist_type("mlx_.*")
        .allowlist_var("MLX_.*")
        // `MLX_FLOAT32` rather than `mlx_dtype__MLX_FLOAT32`; constants, not Rust enums, so a
        // value the C side adds later is never undefined behaviour.
        .prepend_enum_name(false)
        .derive_default(true)
        .layout_tests(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()));
    // bindgen panics when it cannot load libclang; report that as a missing prerequisite.
    let generated = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.generate()))
        .map_err(|_| {
            "bindgen could not load libclang. Install it (Debian/Ubuntu: `apt-get install \
             libclang-dev`; macOS: Xcode command line tools), or set LIBCLANG_PATH to the folder \
             holding libclang.so (PyPI's `libclang` also needs BINDGEN_EXTRA_CLANG_ARGS=\"-isystem \
             $(gcc -print-file-name=include)\")."
                .to_string()
        })?
        .map_err(|e| format!("bindgen failed on {}: {e}", header.display()))?;
    let path = out_dir.join("bindings.rs");
    generated
        .write_to_file(&path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
