//! External programs the build needs (python3 with pip, cmake, cargo), with install hints.

use crate::BuildResult;
use std::path::PathBuf;
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
    "Building mlx-c needs CMake >= 3.16: `apt-get install cmake` (Debian/Ubuntu), \
`brew install cmake` (macOS), or `pip install cmake` and set CMAKE=<path to its cmake binary>.";

/// Checks that CMake can be started, so its absence is reported by name.
pub fn check_cmake() -> BuildResult<()> {
    let cmake = std::env::var("CMAKE").unwrap_or_else(|_| "cmake".to_string());
    run(
        Command::new(&cmake).arg("--version"),
        "CMake is required",
        CMAKE_HINT,
    )
    .map(|_| ())
}

/// The cargo that runs this build, for the nested fetch of mlx-c's source.
pub fn cargo() -> PathBuf {
    PathBuf::from(std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string()))
}
