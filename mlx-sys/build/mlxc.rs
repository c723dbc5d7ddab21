//! mlx-c: find its source (`MLX_C_DIR`, else the crates.io package `mlx-sys 0.7.0`, which bundles
//! it), check that it pins the MLX we found, and build it as a static library with CMake.

use crate::pins::{verify_sha256, Pins};
use crate::provision::Mlx;
use crate::tools::{cargo, run};
use crate::BuildResult;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Root of an mlx-c source tree (holds `CMakeLists.txt` and `mlx/c/`).
pub fn source(pins: &Pins, out_dir: &Path) -> BuildResult<PathBuf> {
    if let Some(dir) = std::env::var_os("MLX_C_DIR") {
        let dir = PathBuf::from(dir);
        if !dir.join("mlx/c/mlx.h").is_file() {
            return Err(format!("MLX_C_DIR={} holds no mlx/c/mlx.h", dir.display()));
        }
        return Ok(dir);
    }
    from_crates_io(pins, out_dir)
}

/// Fetches the pinned crates.io package with a nested `cargo fetch` on a throwaway manifest and
/// locates it with `cargo metadata`. The registry's own checksum check applies; the `.crate`
/// file is also checked against `vendor/pins.toml`.
fn from_crates_io(pins: &Pins, out_dir: &Path) -> BuildResult<PathBuf> {
    let pin = &pins.mlx_c;
    let dir = out_dir.join("mlx-c-fetch");
    std::fs::create_dir_all(dir.join("src"))
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let manifest = dir.join("Cargo.toml");
    let text = format!(
        "[package]\nname = \"mlx-c-source-fetch\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
         [dependencies]\n{} = {{ version = \"={}\", default-features = false }}\n\n\
         # Not part of the outer workspace.\n[workspace]\n",
        pin.crate_name, pin.crate_version
    );
    std::fs::write(&manifest, text)
        .map_err(|e| format!("cannot write {}: {e}", manifest.display()))?;
    std::fs::write(dir.join("src/lib.rs"), "").map_err(|e| format!("cannot write lib.rs: {e}"))?;

    let nested = |args: &[&str]| {
        let mut cmd = Command::new(cargo());
        cmd.args(args).arg("--manifest-path").arg(&manifest);
        for var in [
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
            "RUSTC_WRAPPER",
            "CARGO_ENCODED_RUSTFLAGS",
            "CARGO_MAKEFLAGS",
        ] {
            cmd.env_remove(var);
        }
        cmd
    };
    let hint = "mlx-c's source comes from the crates.io package mlx-sys 0.7.0. Without network, \
                set MLX_C_DIR to an mlx-c 0.7.0 source tree.";
    // Offline first (the package may be cached), then online unless cargo is told to stay offline.
    let offline_ok = nested(&["fetch", "--quiet", "--offline"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !offline_ok {
        if std::env::var("CARGO_NET_OFFLINE").as_deref() == Ok("true") {
            return Err(format!(
                "offline (CARGO_NET_OFFLINE=true) and {} {} is not in cargo's cache.\n{hint}",
                pin.crate_name, pin.crate_version
            ));
        }
        run(
            &mut nested(&["fetch", "--quiet"]),
            "fetching mlx-c's source",
            hint,
        )?;
    }
    let output = run(
        &mut nested(&["metadata", "--format-version", "1", "--offline"]),
        "locating mlx-c's source",
        hint,
    )?;
    let meta: serde_json::Value = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("cargo metadata printed malformed JSON: {e}"))?;
    let crate_manifest = meta["packages"]
        .as_array()
        .and_then(|pkgs| {
            pkgs.iter().find(|p| {
                p["name"] == pin.crate_name.as_str() && p["version"] == pin.crate_version.as_str()
            })
        })
        .and_then(|p| p["manifest_path"].as_str())
        .map(PathBuf::from)
        .ok_or_else(|| {
            format!(
                "cargo metadata lists no {} {}",
                pin.crate_name, pin.crate_version
            )
        })?;
    let crate_root = crate_manifest
        .parent()
        .ok_or("manifest without a folder")?
        .to_path_buf();
    verify_crate_archive(&crate_root, &pin.crate_sha256)?;
    let src = crate_root.join("src/mlx-c");
    if !src.join("mlx/c/mlx.h").is_file() {
        return Err(format!(
            "{} holds no mlx-c source under src/mlx-c",
            crate_root.display()
        ));
    }
    Ok(src)
}

/// Checks the `.crate` archive that cargo unpacked into `registry/src/<index>/<name-version>`
/// (it sits at `registry/cache/<index>/<name-version>.crate`).
fn verify_crate_archive(crate_root: &Path, sha256: &str) -> BuildResult<()> {
    let name = crate_root
        .file_name()
        .ok_or("crate folder without a name")?;
    let index = crate_root.parent().and_then(|p| p.file_name());
    let registry = crate_root
        .parent()
        .and_then(|p| p.parent())
        .and_then(|p| p.parent());
    let archive = match (registry, index) {
        (Some(registry), Some(index)) => registry
            .join("cache")
            .join(index)
            .join(format!("{}.crate", name.to_string_lossy())),
        _ => PathBuf::new(),
    };
    if archive.is_file() {
        verify_sha256(&archive, sha256)
    } else {
        println!(
            "cargo:warning=could not find the .crate archive of {} to check its sha256 \
             (cargo's own registry checksum still applies)",
            crate_root.display()
        );
        Ok(())
    }
}

/// The MLX version that an mlx-c tree pins (`GIT_TAG vX.Y.Z` in its CMakeLists.txt).
pub fn pinned_mlx_version(mlxc: &Path) -> BuildResult<String> {
    let path = mlxc.join("CMakeLists.txt");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("GIT_TAG v"))
        .map(|v| v.trim_end_matches(')').trim().to_string())
        .ok_or_else(|| format!("{} names no `GIT_TAG v<version>` of MLX", path.display()))
}

pub fn check_pairing(mlxc: &Path, mlx: &Mlx) -> BuildResult<()> {
    let pinned = pinned_mlx_version(mlxc)?;
    if pinned != mlx.version {
        return Err(format!(
            "version mismatch: mlx-c at {} pins MLX {pinned}, but the MLX found at {} is {}.\n\
             Headers, libmlx and mlx-c must come from exactly the same MLX release.",
            mlxc.display(),
            mlx.prefix.display(),
            mlx.version
        ));
    }
    Ok(())
}

/// Builds `libmlxc.a` with CMake (`tools::ensure_cmake` has found one) against the prebuilt MLX
/// and returns the folder holding it.
pub fn build(mlxc: &Path, mlx: &Mlx, vendor: &Path) -> BuildResult<PathBuf> {
    let out_dir = PathBuf::from(crate::env("OUT_DIR")?);
    if !["lib", "lib64"]
        .iter()
        .any(|d| out_dir.join(d).join("libmlxc.a").is_file())
    {
        println!(
            "cargo:warning=building mlx-c from {} with CMake (the first build takes about a \
             minute)",
            mlxc.display()
        );
    }
    let shim = vendor.join("compat/format_shim.h");
    let config_dir = vendor.join("cmake");
    let dst = cmake::Config::new(mlxc)
        .profile("Release")
        .define("MLX_C_USE_SYSTEM_MLX", "ON")
        .define("MLX_C_BUILD_EXAMPLES", "OFF")
        .define("BUILD_SHARED_LIBS", "OFF")
        .define("MLX_DIR", &config_dir)
        .define("MLX_PREFIX", &mlx.prefix)
        .cxxflag(format!("-include {}", shim.display()))
        .build();
    // GNUInstallDirs picks lib64 on some distributions.
    ["lib", "lib64"]
        .iter()
        .map(|d| dst.join(d))
        .find(|lib| lib.join("libmlxc.a").is_file())
        .ok_or_else(|| {
            format!(
                "CMake finished but left no libmlxc.a under {}",
                dst.display()
            )
        })
}
