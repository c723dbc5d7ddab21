//! Pinned PyPI wheels: downloaded with pip, checked against `vendor/pins.toml`, unpacked into a
//! cache folder that survives `cargo clean` of one profile. MLX itself (provision.rs) and the
//! fallback build tools (tools.rs: CMake, libclang) come this way.

use crate::pins::verify_sha256;
use crate::tools::{python, run, PIP_HINT};
use crate::BuildResult;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The file that marks a finished cache entry.
const COMPLETE_MARKER: &str = ".mlx-sys-complete";

/// The cache folder: `MLX_CACHE_DIR`, else `<target dir>/mlx-prebuilt` (outside every profile
/// folder, so `cargo clean --release` keeps it, and inside `target/`, so `cargo run` and
/// `cargo test` find libraries there).
fn cache_root(out_dir: &Path) -> PathBuf {
    if let Some(dir) = std::env::var_os("MLX_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    // OUT_DIR = <target>[/<triple>]/<profile>/build/<pkg>-<hash>/out
    out_dir
        .ancestors()
        .nth(4)
        .map(|target| target.join("mlx-prebuilt"))
        .unwrap_or_else(|| out_dir.join("mlx-prebuilt"))
}

/// Whether cargo was told to stay offline.
fn offline() -> bool {
    std::env::var("CARGO_NET_OFFLINE").as_deref() == Ok("true")
}

/// Downloads the wheel of `dist==version` into `download/` with pip and checks it against
/// `accepted` (wheel file name to sha256). Returns the wheel's path and file name.
fn download_wheel(
    dist: &str,
    version: &str,
    accepted: &BTreeMap<String, String>,
    download: &Path,
) -> BuildResult<(PathBuf, String)> {
    std::fs::create_dir_all(download)
        .map_err(|e| format!("cannot create {}: {e}", download.display()))?;
    run(
        Command::new(python())
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
            .args(["--disable-pip-version-check", "--quiet", "-d"])
            .arg(download)
            .arg(format!("{dist}=={version}")),
        &format!("downloading the {dist}=={version} wheel"),
        PIP_HINT,
    )?;
    let wheel = std::fs::read_dir(download)
        .map_err(|e| format!("cannot list {}: {e}", download.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or_else(|| format!("pip left no wheel in {}", download.display()))?;
    let file_name = wheel
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .to_string();
    let expected = accepted.get(&file_name).ok_or_else(|| {
        format!(
            "pip chose the wheel {file_name}, which vendor/pins.toml does not pin for {dist}; \
             pinned: {:?}",
            accepted.keys().collect::<Vec<_>>()
        )
    })?;
    verify_sha256(&wheel, expected)?;
    Ok((wheel, file_name))
}

/// Unpacks a wheel (a zip archive) into `dest` with Python's `zipfile`.
pub fn unzip(wheel: &Path, dest: &Path) -> BuildResult<()> {
    run(
        Command::new(python())
            .args(["-m", "zipfile", "-e"])
            .arg(wheel)
            .arg(dest),
        "unpacking a wheel",
        PIP_HINT,
    )
    .map(|_| ())
}

/// The cache entry `root/name`, filled once by `fill` (given an empty staging folder of its
/// own, which becomes the entry when `fill` succeeds). Concurrent builds may both fill it; the
/// first rename wins and the other's copy is dropped.
fn cached(
    root: &Path,
    name: &str,
    fill: impl FnOnce(&Path) -> BuildResult<String>,
) -> BuildResult<PathBuf> {
    let dest = root.join(name);
    if dest.join(COMPLETE_MARKER).is_file() {
        return Ok(dest);
    }
    let staging = root.join(format!(".staging-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&staging);
    std::fs::create_dir_all(&staging)
        .map_err(|e| format!("cannot create {}: {e}", staging.display()))?;
    let result = fill(&staging).and_then(|stamp| {
        std::fs::write(staging.join(COMPLETE_MARKER), format!("{stamp}\n"))
            .map_err(|e| format!("cannot write the cache marker: {e}"))
    });
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    let _ = std::fs::remove_dir_all(&dest);
    if let Err(e) = std::fs::rename(&staging, &dest) {
        let _ = std::fs::remove_dir_all(&staging);
        // Another build may have finished the same cache entry first.
        if !dest.join(COMPLETE_MARKER).is_file() {
            return Err(format!("cannot move {name} into {}: {e}", dest.display()));
        }
    }
    Ok(dest)
}

/// The pinned wheel of `dist==version` (`files`: wheel file name to sha256), downloaded once
/// into the cache entry `<cache root>/<dist>-<version>` and unpacked there by `unpack(wheel,
/// entry)`. Offline with nothing cached, the error ends with `hint`.
pub fn fetch_cached(
    out_dir: &Path,
    dist: &str,
    version: &str,
    files: &BTreeMap<String, String>,
    hint: &str,
    unpack: impl FnOnce(&Path, &Path) -> BuildResult<()>,
) -> BuildResult<PathBuf> {
    let root = cache_root(out_dir);
    let name = format!("{dist}-{version}");
    if !root.join(&name).join(COMPLETE_MARKER).is_file() && offline() {
        return Err(format!(
            "offline (CARGO_NET_OFFLINE=true) and {dist} {version} is not cached in {}.\n{hint}",
            root.join(&name).display()
        ));
    }
    cached(&root, &name, |entry| {
        println!(
            "cargo:warning=fetching {dist} {version} (PyPI wheel, pinned by sha256) into {}",
            root.display()
        );
        let download = root.join(format!(".download-{name}-{}", std::process::id()));
        let result = download_wheel(dist, version, files, &download)
            .and_then(|(whl, file_name)| unpack(&whl, entry).map(|()| file_name));
        let _ = std::fs::remove_dir_all(&download);
        result
    })
}
