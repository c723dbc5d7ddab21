//! `vendor/pins.toml`: the versions and sha256 checksums of every third-party input.

use crate::BuildResult;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Deserialize)]
pub struct Pins {
    pub mlx: MlxPins,
    pub mlx_c: MlxCPins,
    /// Build tools fetched when the system lacks them, by PyPI distribution name (`cmake`,
    /// `libclang`).
    pub tools: BTreeMap<String, ToolPins>,
}

/// A build tool's pinned wheels.
#[derive(Debug, Deserialize)]
pub struct ToolPins {
    pub version: String,
    /// Wheel file name to sha256 (lower-case hex), one per platform.
    pub files: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
pub struct MlxPins {
    pub version: String,
    /// Distribution name (`mlx-cpu`, ...) to its accepted wheel files.
    pub wheels: BTreeMap<String, WheelPins>,
}

#[derive(Debug, Deserialize)]
pub struct WheelPins {
    /// Wheel file name to sha256 (lower-case hex).
    pub files: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
pub struct MlxCPins {
    pub version: String,
    #[serde(rename = "crate")]
    pub crate_name: String,
    pub crate_version: String,
    pub crate_sha256: String,
}

impl Pins {
    pub fn load(path: &Path) -> BuildResult<Pins> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read the pins file {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{} is malformed: {e}", path.display()))
    }
}

/// The sha256 of a file, as lower-case hex.
pub fn sha256_file(path: &Path) -> BuildResult<String> {
    let mut file = std::fs::File::open(path)
        .map_err(|e| format!("cannot open {} to checksum it: {e}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

/// Checks `path` against an expected sha256.
pub fn verify_sha256(path: &Path, expected: &str) -> BuildResult<()> {
    let actual = sha256_file(path)?;
    if actual != expected {
        return Err(format!(
            "checksum mismatch for {}\n  expected sha256 {expected}\n  found    sha256 {actual}\n\
             The file is not the pinned one (vendor/pins.toml). Delete it and build again.",
            path.display()
        ));
    }
    Ok(())
}
