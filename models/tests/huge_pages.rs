//! The loader backs the weights with transparent huge pages on the CPU (`LoadOptions::
//! huge_pages`), measured from the kernel's own accounting (/proc/self/smaps_rollup), and
//! leaves them alone when asked to. One test in its own process, so that no other test's
//! allocations move the count.

mod common;

use mlx_models::load::{load, LoadOptions};
use mlx_rs::memory::transparent_huge_pages_mode as thp_mode;
use mlx_rs::Device;

/// `AnonHugePages` of this process, in bytes (None off Linux).
fn anon_huge_pages() -> Option<u64> {
    let rollup = std::fs::read_to_string("/proc/self/smaps_rollup").ok()?;
    let line = rollup.lines().find(|l| l.starts_with("AnonHugePages:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[test]
fn weights_sit_on_huge_pages_unless_turned_off() {
    let Some(path) = common::test_data("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    if thp_mode().as_deref() != Some("madvise") {
        // Under `always` every large buffer may get huge pages anyway; under `never` none.
        eprintln!(
            "skipped: transparent huge pages are {:?}, not madvise",
            thp_mode()
        );
        return;
    }
    // MADV_COLLAPSE can fail where memory is too fragmented to find free 2 MiB pages: check
    // that this machine collapses at all before judging the loader.
    let probe = mlx_rs::Array::zeros(&[4 << 20], mlx_rs::Dtype::Float32).expect("probe");
    if mlx_rs::memory::advise_huge_pages(&[&probe])
        .expect("advice")
        .collapsed
        == 0
    {
        eprintln!("skipped: the kernel collapses no huge page here (memory too fragmented?)");
        return;
    }
    drop(probe);
    mlx_rs::memory::clear_cache().expect("clear the probe's buffer");
    let path = path.to_str().expect("utf-8 path");
    let before = anon_huge_pages().expect("smaps_rollup");
    let plain = LoadOptions {
        device: Device::cpu(),
        huge_pages: false,
        ..LoadOptions::default()
    };
    let small_pages = load(path, &plain).expect("load");
    let without = anon_huge_pages().unwrap() - before.min(anon_huge_pages().unwrap());
    drop(small_pages);
    let huge = load(
        path,
        &LoadOptions {
            huge_pages: true,
            ..plain
        },
    )
    .expect("load");
    let with = anon_huge_pages().unwrap().saturating_sub(before);
    // Only whole 2 MiB spans inside one buffer can be advised: of SmolLM2's weights that is
    // mostly the 49152 x 576 embedding (14 MB of 4-bit codes; each layer matrix is under
    // 2 MiB), measured at 26 MiB on dev-cpu-2.
    assert!(
        without < 4 << 20,
        "{without} B on huge pages without the advice"
    );
    assert!(
        with >= 12 << 20,
        "only {with} B on huge pages with the advice"
    );
    drop(huge);
}
