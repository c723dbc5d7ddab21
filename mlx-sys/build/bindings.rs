//! bindgen over mlx-c's public header `mlx/c/mlx.h` (plain C), and over the C interfaces of
//! the project's own kernels (`kernels/ops.h`, `kernels/qmm.h` with `kernels/raw.h`,
//! `kernels/array_host.h`), each into the file its module of `src/lib.rs` includes.

use crate::BuildResult;
use bindgen::callbacks::{DeriveTrait, ImplementsTrait, ParseCallbacks};
use std::path::Path;

/// Tells bindgen that mlx-c's types, left out of the kernels' outputs (they come from
/// `bindings.rs`), have the traits `bindings.rs` derives for them (handles: `Debug`, `Copy`,
/// `Default`), so that the kernels' structs holding them derive those too.
#[derive(Debug)]
struct MlxcTypes;

impl ParseCallbacks for MlxcTypes {
    fn blocklisted_type_implements_trait(
        &self,
        name: &str,
        derive_trait: DeriveTrait,
    ) -> Option<ImplementsTrait> {
        let ours = matches!(
            derive_trait,
            DeriveTrait::Copy | DeriveTrait::Debug | DeriveTrait::Default
        );
        (name.starts_with("mlx_") && ours).then_some(ImplementsTrait::Yes)
    }
}

/// Whether bindgen can load a libclang (the system's, or the one `LIBCLANG_PATH` names).
pub fn libclang_loads() -> bool {
    let quiet = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {}));
    let loaded = std::panic::catch_unwind(|| {
        bindgen::Builder::default()
            .header_contents("probe.h", "int mlx_sys_probe;")
            .generate()
    })
    .is_ok();
    std::panic::set_hook(quiet);
    loaded
}

/// A builder with the settings every header here shares.
fn builder(header: &Path, mlxc: &Path, clang_args: &[String]) -> bindgen::Builder {
    bindgen::Builder::default()
        .header(header.to_string_lossy())
        .clang_args(clang_args)
        .clang_arg(format!("-I{}", mlxc.display()))
        // `MLX_FLOAT32` rather than `mlx_dtype__MLX_FLOAT32`; constants, not Rust enums, so a
        // value the C side adds later is never undefined behaviour.
        .prepend_enum_name(false)
        .derive_default(true)
        .layout_tests(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
}

/// Runs `builder` and writes its output to `out_dir/name`.
fn write(builder: bindgen::Builder, header: &Path, out_dir: &Path, name: &str) -> BuildResult<()> {
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
    let path = out_dir.join(name);
    generated
        .write_to_file(&path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Bindings of mlx-c (`bindings.rs`); `clang_args` come first (compiler headers for PyPI's
/// libclang).
pub fn generate(mlxc: &Path, out_dir: &Path, clang_args: &[String]) -> BuildResult<()> {
    let header = mlxc.join("mlx/c/mlx.h");
    let b = builder(&header, mlxc, clang_args)
        .allowlist_function("mlx_.*")
        .allowlist_type("mlx_.*")
        .allowlist_var("MLX_.*");
    write(b, &header, out_dir, "bindings.rs")
}

/// The kernels' headers: `(header, other headers whose declarations join it, output file)`.
/// Each output holds only what those headers declare (mlx-c's types come from `bindings.rs`
/// through the including module's `use super::*`).
const KERNEL_HEADERS: [(&str, &[&str], &str); 3] = [
    ("ops.h", &[], "native_ops.rs"),
    ("qmm.h", &["raw.h"], "native_qmm.rs"),
    ("array_host.h", &[], "array_host.rs"),
];

pub fn generate_kernels(
    mlxc: &Path,
    kernels: &Path,
    out_dir: &Path,
    clang_args: &[String],
) -> BuildResult<()> {
    for (name, also, out) in KERNEL_HEADERS {
        let header = kernels.join(name);
        let mut b = builder(&header, mlxc, clang_args)
            .clang_arg(format!("-I{}", kernels.display()))
            .blocklist_type("mlx_.*")
            .parse_callbacks(Box::new(MlxcTypes));
        for file in std::iter::once(name).chain(also.iter().copied()) {
            // Anchored on the folder so that mlx-c's own headers never match.
            b = b.allowlist_file(format!(".*[/\\\\]kernels[/\\\\]{}", regex_escape(file)));
        }
        write(b, &header, out_dir, out)?;
    }
    Ok(())
}

/// `s` with the regex metacharacters it may hold (file names: `.`) escaped.
fn regex_escape(s: &str) -> String {
    s.replace('.', "\\.")
}

/// Every file bindgen writes, in `OUT_DIR` and, committed, in `bindings/`.
pub const OUTPUTS: [&str; 4] = [
    "bindings.rs",
    "native_ops.rs",
    "native_qmm.rs",
    "array_host.rs",
];

/// Copies the committed bindings (`bindings/`, checked against fresh ones by
/// `tests/pregenerated_bindings.rs`) into `out_dir`: the docs.rs build, which has no network
/// to fetch mlx-c and needs no library.
pub fn use_pregenerated(manifest_dir: &Path, out_dir: &Path) -> BuildResult<()> {
    for name in OUTPUTS {
        let from = manifest_dir.join("bindings").join(name);
        std::fs::copy(&from, out_dir.join(name))
            .map_err(|e| format!("cannot copy {}: {e}", from.display()))?;
    }
    Ok(())
}
