//! External programs the build needs (python3 with pip, cmake, libclang, cargo), with install
//! hints. CMake and libclang come from the system when it has them; otherwise (or when
//! `MLX_SYS_TOOLS_FROM_PYPI=1` says to ignore the system's) from their pinned PyPI wheels,
//! cached beside the MLX wheel. `CMAKE` and `LIBCLANG_PATH` always take precedence.

use crate::pins::Pins;
use crate::{wheel, BuildResult};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The Python interpreter: `$PYTHON`, else `python3`.
pub fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".to_string())
}

/// Runs a command and returns its output, or an error that names the command and shows stderr.
pub fn run(cmd: &mut Command, what: &str, install_hint: &str) -> BuildResult<Output> {
    let shown = format!("{cmd:?}");
    let output = cmd
        .output()
        .map_err(|e| format!("{what}: could not start `{shown}`: {e}\n{install_hint}"))?;
    if !output.status.success() {
        return Err(format!(
            "{what}: `{shown}` failed ({})\n--- stdout ---\n{}\n--- stderr ---\n{}\n{install_hint}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    Ok(output)
}

pub const PIP_HINT: &str =
    "Fetching MLX needs python3 with pip (Debian: `apt-get install python3-pip`), \
or set MLX_DIR to a prebuilt MLX 0.32.2 prefix (lib/, include/, share/cmake/MLX/).";

pub const CMAKE_HINT: &str =
    "Building mlx-c needs CMake >= 3.16. Without one on PATH the build fetches PyPI's `cmake` \
wheel (python3 with pip); or install it: `apt-get install cmake` (Debian/Ubuntu), `brew install \
cmake` (macOS), or set CMAKE=<path to a cmake binary>.";

/// The switch that makes the build ignore the system's CMake and libclang and use the pinned
/// PyPI wheels (CI uses it to exercise the fallback).
pub const FROM_PYPI_SWITCH: &str = "MLX_SYS_TOOLS_FROM_PYPI";

fn from_pypi_forced() -> bool {
    std::env::var(FROM_PYPI_SWITCH).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// Makes sure CMake can be started: `CMAKE` if set, else `cmake` on PATH, else the pinned
/// `cmake` wheel from PyPI, which `CMAKE` then names for the `cmake` crate.
pub fn ensure_cmake(pins: &Pins, out_dir: &Path) -> BuildResult<()> {
    if let Ok(cmake) = std::env::var("CMAKE") {
        return run(
            Command::new(&cmake).arg("--version"),
            "CMAKE names no working cmake",
            CMAKE_HINT,
        )
        .map(|_| ());
    }
    let system = || {
        Command::new("cmake")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !from_pypi_forced() && system() {
        return Ok(());
    }
    let (dir, version) = fetch_tool(pins, "cmake", out_dir, CMAKE_HINT)?;
    let binary = [
        "cmake/data/bin/cmake",
        "cmake/data/CMake.app/Contents/bin/cmake",
    ]
    .iter()
    .map(|p| dir.join(p))
    .find(|p| p.is_file())
    .ok_or_else(|| format!("the cmake wheel in {} holds no cmake binary", dir.display()))?;
    // Python's zipfile does not keep the executable bits.
    make_executable(binary.parent().ok_or("cmake binary without a folder")?)?;
    run(
        Command::new(&binary).arg("--version"),
        "PyPI's cmake does not start",
        CMAKE_HINT,
    )?;
    println!(
        "cargo:warning={}: using CMake {version} from PyPI (pinned wheel, sha256-checked): {}",
        reason("cmake"),
        binary.display()
    );
    std::env::set_var("CMAKE", &binary);
    Ok(())
}

/// Whether bindgen should take libclang from PyPI without trying the system's first.
pub fn libclang_from_pypi_forced() -> bool {
    from_pypi_forced() && std::env::var_os("LIBCLANG_PATH").is_none()
}

/// Whether a libclang that failed to load may be replaced by PyPI's (the user did not name one).
pub fn libclang_fallback_allowed() -> bool {
    std::env::var_os("LIBCLANG_PATH").is_none()
}

/// Fetches the pinned `libclang` wheel, points bindgen at it (`LIBCLANG_PATH`) and returns the
/// clang arguments it needs: the wheel has no compiler headers (`stddef.h`, `stdbool.h`), so
/// those of the C compiler `cc` finds are used (`-isystem $(cc -print-file-name=include)`).
pub fn libclang_from_pypi(pins: &Pins, out_dir: &Path) -> BuildResult<Vec<String>> {
    let hint = "bindgen needs libclang: Debian/Ubuntu `apt-get install libclang-dev`, macOS the \
                Xcode command line tools, or set LIBCLANG_PATH to the folder holding it.";
    let (dir, version) = fetch_tool(pins, "libclang", out_dir, hint)?;
    let library = find_file(&dir, &["libclang.so", "libclang.dylib"])
        .ok_or_else(|| format!("the libclang wheel in {} holds no libclang", dir.display()))?;
    let lib_dir = library.parent().ok_or("libclang without a folder")?;
    let compiler = cc::Build::new()
        .cargo_metadata(false)
        .try_get_compiler()
        .map_err(|e| format!("no C compiler for the compiler headers libclang needs: {e}"))?;
    let output = run(
        Command::new(compiler.path()).arg("-print-file-name=include"),
        "asking the C compiler for its header folder",
        hint,
    )?;
    let include = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    if !include.join("stddef.h").is_file() {
        return Err(format!(
            "{} -print-file-name=include names no folder with stddef.h ({}).\n{hint}",
            compiler.path().display(),
            include.display()
        ));
    }
    println!(
        "cargo:warning={}: using libclang {version} from PyPI (pinned wheel, sha256-checked): {}",
        reason("libclang"),
        library.display()
    );
    std::env::set_var("LIBCLANG_PATH", lib_dir);
    Ok(vec!["-isystem".to_string(), include.display().to_string()])
}

/// Why a tool comes from PyPI, for the one line the build prints.
fn reason(tool: &str) -> String {
    if from_pypi_forced() {
        format!("{FROM_PYPI_SWITCH} is set")
    } else {
        format!("no {tool} on this system")
    }
}

/// The cached, unpacked pinned wheel of build tool `name`, and its version.
fn fetch_tool(
    pins: &Pins,
    name: &str,
    out_dir: &Path,
    hint: &str,
) -> BuildResult<(PathBuf, String)> {
    let pin = pins
        .tools
        .get(name)
        .ok_or_else(|| format!("vendor/pins.toml pins no {name} wheel"))?;
    let dir = wheel::fetch_cached(out_dir, name, &pin.version, &pin.files, hint, |whl, dir| {
        wheel::unzip(whl, dir)
    })?;
    Ok((dir, pin.version.clone()))
}

/// Sets the executable bits of every file in `dir` (not recursive).
fn make_executable(dir: &Path) -> BuildResult<()> {
    #[cfg(unix)]
    for entry in
        std::fs::read_dir(dir).map_err(|e| format!("cannot list {}: {e}", dir.display()))?
    {
        use std::os::unix::fs::PermissionsExt;
        let path = entry.map_err(|e| e.to_string())?.path();
        if path.is_file() {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .map_err(|e| format!("cannot make {} executable: {e}", path.display()))?;
        }
    }
    Ok(())
}

/// The first file under `dir` (recursively) whose name is one of `names`.
fn find_file(dir: &Path, names: &[&str]) -> Option<PathBuf> {
    for entry in std::fs::read_dir(dir).ok()?.flatten() {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, names) {
                return Some(found);
            }
        } else if path
            .file_name()
            .is_some_and(|n| names.iter().any(|w| n == *w))
        {
            return Some(path);
        }
    }
    None
}

/// The cargo that runs this build, for the nested fetch of mlx-c's source.
pub fn cargo() -> PathBuf {
    PathBuf::from(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string()))
}
