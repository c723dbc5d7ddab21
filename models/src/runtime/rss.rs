//! The process's resident set: the memory figure that compares engines.
//!
//! Each engine reports its own peak (MLX: its allocator's; llama.cpp has none), and the two
//! are different quantities. What both pay for is resident memory: weights (read or
//! memory-mapped and touched), KV cache, scratch buffers and the runtime itself. On Linux the
//! kernel keeps a high-water mark (`VmHWM` in `/proc/self/status`) that writing `5` to
//! `/proc/self/clear_refs` resets (proc(5), Linux ≥ 4.0), so a peak can be measured over one
//! call. Elsewhere the peak is `getrusage`'s `ru_maxrss`, which cannot be reset.

/// Resets the peak so that [`peak_bytes`] measures from now; `false` when the OS cannot (the
/// peak then covers the whole process life).
pub fn reset_peak() -> bool {
    cfg!(target_os = "linux") && std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The peak resident set since the last [`reset_peak`] (or process start), in bytes; `None`
/// when the OS does not say.
///
/// ```
/// use mlx_models::runtime::rss;
/// let block = vec![1u8; 64 << 20]; // 64 MiB, touched
/// if let (Some(now), Some(peak)) = (rss::current_bytes(), rss::peak_bytes()) {
///     assert!(peak >= now && now >= 64 << 20);
/// }
/// # drop(block);
/// ```
pub fn peak_bytes() -> Option<u64> {
    if cfg!(target_os = "linux") {
        status_bytes("VmHWM:")
    } else {
        max_rss_bytes()
    }
}

/// The resident set now, in bytes (Linux; `None` elsewhere).
pub fn current_bytes() -> Option<u64> {
    status_bytes("VmRSS:")
}

/// A `kB` line of `/proc/self/status`.
fn status_bytes(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line[key.len()..]
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// `getrusage(RUSAGE_SELF).ru_maxrss` in bytes (kilobytes on Linux and the BSDs, bytes on
/// macOS).
fn max_rss_bytes() -> Option<u64> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is a valid, writable `rusage`; getrusage writes it or fails.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: getrusage succeeded, so it initialised the struct (and it was zeroed before).
    let max = u64::try_from(unsafe { usage.assume_init() }.ru_maxrss).ok()?;
    Some(if cfg!(target_os = "macos") {
        max
    } else {
        max * 1024
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_os = "linux")]
    fn the_peak_follows_a_touched_block_and_resets() {
        let before = current_bytes().unwrap();
        assert!(reset_peak());
        // black_box: an optimised build would otherwise drop the unused allocation.
        let block = std::hint::black_box(vec![7u8; 256 << 20]);
        let peak = peak_bytes().unwrap();
        assert!(
            peak >= before + (200 << 20),
            "peak {peak} after touching 256 MiB on top of {before}"
        );
        drop(block);
        assert!(reset_peak());
        let after = peak_bytes().unwrap();
        assert!(
            after < peak - (128 << 20),
            "after a reset the peak ({after}) must forget the freed block (was {peak})"
        );
    }

    #[test]
    fn max_rss_is_at_least_the_current_set() {
        let max = max_rss_bytes().unwrap();
        if let Some(now) = current_bytes() {
            assert!(max >= now, "ru_maxrss {max} below VmRSS {now}");
        }
        assert!(max > 1 << 20);
    }
}
