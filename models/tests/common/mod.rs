//! Shared helpers of the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// A file under `test-data/` (fetched by `scripts/fetch_test_data.sh`; `MLX_ZOO_TEST_DATA`
/// moves it). `None` means "skip": the data is absent on a developer machine. In CI
/// (`CI=true`) absence is a failure, so these tests cannot silently stop running there.
pub fn test_data(relative: &str) -> Option<PathBuf> {
    let root = std::env::var_os("MLX_ZOO_TEST_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../test-data"));
    let path = root.join(relative);
    if path.exists() {
        return Some(path);
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "{} is missing: run scripts/fetch_test_data.sh",
            path.display()
        );
    }
    eprintln!(
        "skipping: {} not found (run scripts/fetch_test_data.sh)",
        path.display()
    );
    None
}

/// A committed fixture under `models/tests/fixtures/`.
pub fn fixture(relative: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(relative)
}
