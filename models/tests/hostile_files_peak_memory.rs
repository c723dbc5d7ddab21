//! Peak memory of refusing the oversized hostile files (issue 10): the process's peak resident
//! set (VmHWM, reset through /proc/self/clear_refs) may grow by less than twice the file's real
//! size (its allocated blocks: the files are sparse) plus a fixed allowance for the loader's
//! own buffers. One test in its own binary, so that no other test allocates meanwhile.

mod common;

use mlx_models::load::{load, LoadOptions, MemoryBudget};
use mlx_rs::Device;
use std::path::{Path, PathBuf};

/// Fixed allowance: the header read buffer (64 KiB), the parsed tables, and allocator slack.
const ALLOWANCE: u64 = 4 << 20;

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = s.lines().find(|l| l.starts_with(field)).unwrap();
    line.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// Resets the peak and returns the resident set now, in bytes.
fn reset_peak() -> u64 {
    std::fs::write("/proc/self/clear_refs", "5").unwrap();
    status_kib("VmRSS:") * 1024
}

/// Bytes allocated on disk by `path` (a file, or the files of a folder).
fn real_size(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    if path.is_dir() {
        return std::fs::read_dir(path)
            .unwrap()
            .map(|e| real_size(&e.unwrap().path()))
            .sum();
    }
    std::fs::metadata(path).unwrap().blocks() * 512
}

#[test]
fn refusing_oversized_files_stays_under_twice_their_real_size() {
    if !Path::new("/proc/self/clear_refs").exists() {
        eprintln!("skipping: no /proc/self/clear_refs");
        return;
    }
    let dir = std::env::temp_dir().join(format!("mlx_zoo_peak_{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let options = LoadOptions {
        device: Device::cpu(),
        memory_budget: MemoryBudget::Bytes(16 << 30),
        ..Default::default()
    };
    // Warm up (first-use initialization is not the file's cost).
    let warm = common::stage_hostile(&dir, "overlap.gguf");
    assert!(load(warm.to_str().unwrap(), &options).is_err());

    let mut cases: Vec<PathBuf> = [
        "q4_0_2p33.gguf",
        "q4_0_2p32.gguf",
        "f32_36gib.gguf",
        "contradicting.gguf",
    ]
    .iter()
    .map(|f| common::stage_hostile(&dir, f))
    .collect();
    for f in [
        "hf_contradicting/config.json",
        "hf_contradicting/model.safetensors",
    ] {
        common::stage_hostile(&dir, f);
    }
    cases.push(dir.join("hf_contradicting"));
    for path in cases {
        let declared = if path.is_dir() {
            0
        } else {
            std::fs::metadata(&path).unwrap().len()
        };
        let real = real_size(&path);
        let before = reset_peak();
        let result = load(path.to_str().unwrap(), &options);
        let peak = status_kib("VmHWM:") * 1024;
        let grown = peak.saturating_sub(before);
        eprintln!(
            "{}: {declared} bytes declared, {real} real; peak grew {grown} bytes",
            path.file_name().unwrap().to_string_lossy()
        );
        assert!(result.is_err(), "{} loaded", path.display());
        assert!(
            grown < 2 * real + ALLOWANCE,
            "{}: peak grew {grown} bytes for a file of {real} real bytes",
            path.display()
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}
