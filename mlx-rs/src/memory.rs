//! MLX's memory accounting and limits (process-wide, for the default device's allocator).
//!
//! - *active* memory: bytes held by live arrays (buffers MLX has handed out);
//! - *cache* memory: freed buffers MLX keeps for reuse instead of returning them to the system;
//! - *peak* memory: the highest active memory since start or [`reset_peak_memory`].
//!
//! ```
//! use mlx_rs::{memory, Array, Dtype};
//! let before = memory::active_memory()?;
//! let a = Array::zeros(&[1024, 256], Dtype::Float32)?;   // 1 MiB
//! a.eval()?;
//! assert!(memory::active_memory()? >= before + 1024 * 256 * 4);
//! assert!(memory::peak_memory()? >= 1024 * 256 * 4);
//! # Ok::<(), mlx_rs::Error>(())
//! ```

use crate::error::{check, init, Result};
use mlx_sys as sys;
use std::ffi::c_int;

#[track_caller]
fn get(f: unsafe extern "C" fn(*mut usize) -> c_int) -> Result<usize> {
    init();
    let mut out = 0usize;
    // SAFETY: `f` is one of mlx-c's getters, writing one `size_t` into a valid pointer.
    check(unsafe { f(&mut out) })?;
    Ok(out)
}

#[track_caller]
fn set(f: unsafe extern "C" fn(*mut usize, usize) -> c_int, limit: usize) -> Result<usize> {
    init();
    let mut previous = 0usize;
    // SAFETY: `f` is one of mlx-c's setters, writing the previous limit into a valid pointer.
    check(unsafe { f(&mut previous, limit) })?;
    Ok(previous)
}

/// Bytes currently held by live arrays.
///
/// ```
/// assert!(mlx_rs::memory::active_memory().is_ok());
/// ```
#[track_caller]
pub fn active_memory() -> Result<usize> {
    get(sys::mlx_get_active_memory)
}

/// The highest [`active_memory`] since the process started or the last [`reset_peak_memory`].
///
/// ```
/// use mlx_rs::memory;
/// assert!(memory::peak_memory()? >= memory::active_memory()?);
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn peak_memory() -> Result<usize> {
    get(sys::mlx_get_peak_memory)
}

/// Bytes of freed buffers that MLX keeps cached for reuse.
///
/// ```
/// use mlx_rs::memory;
/// memory::clear_cache()?;
/// assert_eq!(memory::cache_memory()?, 0);
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn cache_memory() -> Result<usize> {
    get(sys::mlx_get_cache_memory)
}

/// Resets [`peak_memory`] to the current active memory.
///
/// ```
/// use mlx_rs::memory;
/// memory::reset_peak_memory()?;
/// assert!(memory::peak_memory()? <= memory::active_memory()? + (1 << 20));
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn reset_peak_memory() -> Result<()> {
    init();
    // SAFETY: no arguments.
    check(unsafe { sys::mlx_reset_peak_memory() })
}

/// The current memory limit in bytes (see [`set_memory_limit`]).
///
/// ```
/// assert!(mlx_rs::memory::memory_limit()? > 0);
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn memory_limit() -> Result<usize> {
    get(sys::mlx_get_memory_limit)
}

/// Sets the memory limit (a guideline for the largest total of allocations: when it is
/// exceeded, MLX first frees its cache and waits for pending work before allocating more) and
/// returns the previous limit.
///
/// ```
/// use mlx_rs::memory;
/// let previous = memory::set_memory_limit(1 << 30)?;
/// assert_eq!(memory::set_memory_limit(previous)?, 1 << 30);
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn set_memory_limit(limit: usize) -> Result<usize> {
    set(sys::mlx_set_memory_limit, limit)
}

/// Sets the largest size of the buffer cache (0 disables caching) and returns the previous one.
/// The cache is trimmed at the next allocation or free.
///
/// ```
/// use mlx_rs::memory;
/// let previous = memory::set_cache_limit(1 << 20)?;
/// assert_eq!(memory::set_cache_limit(previous)?, 1 << 20);
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn set_cache_limit(limit: usize) -> Result<usize> {
    set(sys::mlx_set_cache_limit, limit)
}

/// Sets the wired (page-locked) memory limit and returns the previous one.
///
/// Only meaningful for Metal on macOS 15+; elsewhere MLX records nothing and returns 0. On
/// Metal, a limit larger than the system's maximum working-set size is an error.
///
/// ```
/// use mlx_rs::memory;
/// let previous = memory::set_wired_limit(0)?;
/// memory::set_wired_limit(previous)?;
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn set_wired_limit(limit: usize) -> Result<usize> {
    set(sys::mlx_set_wired_limit, limit)
}

/// Returns all cached buffers to the system.
///
/// ```
/// use mlx_rs::memory;
/// memory::clear_cache()?;
/// assert_eq!(memory::cache_memory()?, 0);
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn clear_cache() -> Result<()> {
    init();
    // SAFETY: no arguments.
    check(unsafe { sys::mlx_clear_cache() })
}

/// Hands freed memory back to the operating system, for a process that goes idle after a
/// load: MLX's buffer cache ([`clear_cache`]) and then, with glibc, the C heap's free pages
/// (`malloc_trim(0)`). Returns the bytes MLX's cache held.
///
/// MLX's CPU buffers come from `malloc`; large ones are mapped and unmapped whole, but the
/// many small and middling ones of a step (tokens, logits, per-sequence state) are carved from
/// glibc's arenas, whose free pages stay resident until trimmed. A server that has just
/// decoded for many clients thus keeps its peak RSS while idle unless it calls this. The cost
/// is fresh page faults for the next allocations: call it when idle, not between steps. Live
/// arrays are untouched. Where the C library is not glibc, only MLX's cache is cleared.
///
/// ```
/// use mlx_rs::{memory, Array, Dtype};
/// let a = Array::zeros(&[1024, 256], Dtype::Float32)?;
/// a.eval()?;
/// drop(a); // its buffer goes to MLX's cache
/// memory::release_to_system()?;
/// assert_eq!(memory::cache_memory()?, 0);
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn release_to_system() -> Result<usize> {
    let cached = cache_memory()?;
    clear_cache()?;
    trim_heap();
    Ok(cached)
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim_heap() {
    // SAFETY: malloc_trim only returns free heap pages to the system; it takes the arenas'
    // own locks and touches no memory that is in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim_heap() {}

/// What [`advise_huge_pages`] did, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HugePageAdvice {
    /// Bytes of the arrays' buffers in whole, aligned 2 MiB spans that the kernel accepted
    /// `MADV_HUGEPAGE` for (0 where transparent huge pages are off, or off Linux).
    pub advised: usize,
    /// Of those, bytes the kernel moved into huge pages at once (`MADV_COLLAPSE`, Linux 6.1
    /// and later); the rest is left to `khugepaged`, or to the next allocation.
    pub collapsed: usize,
}

/// The size of a transparent huge page on x86-64 and most AArch64 kernels.
pub const HUGE_PAGE_BYTES: usize = 2 << 20;

/// The kernel's transparent-huge-page mode (`always`, `madvise` or `never`, from
/// /sys/kernel/mm/transparent_hugepage/enabled); `None` where there is no such file (off
/// Linux). Under `madvise`, only what [`advise_huge_pages`] advises gets huge pages.
///
/// ```
/// let mode = mlx_rs::memory::transparent_huge_pages_mode();
/// assert!(mode.is_none() || matches!(mode.as_deref(), Some("always" | "madvise" | "never")));
/// ```
pub fn transparent_huge_pages_mode() -> Option<String> {
    let s = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled").ok()?;
    let start = s.find('[')? + 1;
    let end = s[start..].find(']')? + start;
    Some(s[start..end].to_string())
}

/// Asks the operating system to back the host buffers of `arrays` with transparent huge pages
/// (`madvise(MADV_HUGEPAGE)`, then `MADV_COLLAPSE` to do it at once), for the whole 2 MiB
/// spans inside each buffer. Evaluates the arrays first.
///
/// Weights that are streamed once per token (decode on the CPU) then cost one TLB entry per
/// 2 MiB instead of per 4 KiB. The advice changes no byte of the arrays, and only pages lying
/// entirely inside an array's own buffer are touched; a kernel that refuses (THP disabled,
/// no memory to compact) is not an error: the result says how much was taken. On other
/// systems than Linux this does nothing. Meant for the CPU device, whose buffers are plain
/// host memory.
///
/// ```
/// use mlx_rs::{memory, Array, Dtype};
/// let w = Array::zeros(&[4096, 1024], Dtype::Float32)?; // 16 MiB
/// let advice = memory::advise_huge_pages(&[&w])?;
/// assert!(advice.collapsed <= advice.advised);
/// assert!(advice.advised <= w.nbytes());
/// # Ok::<(), mlx_rs::Error>(())
/// ```
pub fn advise_huge_pages(arrays: &[&crate::Array]) -> Result<HugePageAdvice> {
    let mut total = HugePageAdvice::default();
    for a in arrays {
        a.eval()?;
        let (ptr, row_contiguous) = a.host_data()?;
        if ptr.is_null() || !row_contiguous {
            continue;
        }
        let begin = ptr as usize;
        let start = begin.next_multiple_of(HUGE_PAGE_BYTES);
        let end = (begin + a.nbytes()) / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES;
        if end > start {
            let (advised, collapsed) = advise_span(start, end - start);
            total.advised += advised;
            total.collapsed += collapsed;
        }
    }
    Ok(total)
}

/// [`advise_huge_pages`] for a host buffer that is not an array (a probe's, a reader's): the
/// whole 2 MiB spans inside `data` are advised, and collapsed where the kernel can. Best
/// called before the buffer is first written, so that the kernel backs it with huge pages
/// from the start.
///
/// ```
/// let buffer = vec![0u64; 4 << 20]; // 32 MiB, not yet touched
/// let advice = mlx_rs::memory::advise_huge_pages_host(&buffer);
/// assert!(advice.collapsed <= advice.advised && advice.advised <= 32 << 20);
/// ```
pub fn advise_huge_pages_host<T>(data: &[T]) -> HugePageAdvice {
    let begin = data.as_ptr() as usize;
    let start = begin.next_multiple_of(HUGE_PAGE_BYTES);
    let end = (begin + std::mem::size_of_val(data)) / HUGE_PAGE_BYTES * HUGE_PAGE_BYTES;
    if end <= start {
        return HugePageAdvice::default();
    }
    let (advised, collapsed) = advise_span(start, end - start);
    HugePageAdvice { advised, collapsed }
}

#[cfg(target_os = "linux")]
fn advise_span(start: usize, len: usize) -> (usize, usize) {
    // SAFETY: [start, start + len) lies inside one live buffer (an MLX array's or a borrowed
    // slice's, aligned inward); both advices leave its contents unchanged and fail with an
    // error code, never a fault.
    let advised = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_HUGEPAGE) };
    if advised != 0 {
        return (0, 0);
    }
    // SAFETY: as above.
    let collapsed = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_COLLAPSE) };
    (len, if collapsed == 0 { len } else { 0 })
}

#[cfg(not(target_os = "linux"))]
fn advise_span(_start: usize, _len: usize) -> (usize, usize) {
    (0, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Array;

    /// `AnonHugePages` of the mapping of /proc/self/smaps that contains `addr`, in bytes.
    fn anon_huge_bytes_at(addr: usize) -> Option<usize> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some((lo, hi)) = first.split_once('-') {
                if let (Ok(lo), Ok(hi)) =
                    (usize::from_str_radix(lo, 16), usize::from_str_radix(hi, 16))
                {
                    inside = lo <= addr && addr < hi;
                    continue;
                }
            }
            if inside {
                if let Some(kb) = line.strip_prefix("AnonHugePages:") {
                    return kb
                        .trim()
                        .trim_end_matches("kB")
                        .trim()
                        .parse::<usize>()
                        .ok()
                        .map(|k| k * 1024);
                }
            }
        }
        None
    }

    #[test]
    fn huge_page_advice_keeps_values_and_is_taken_where_thp_allows() {
        // 24 MiB of distinct values: at least 10 whole aligned 2 MiB spans inside.
        let n = 6 << 20;
        let values: Vec<f32> = (0..n).map(|i| (i % 65_521) as f32).collect();
        let a = Array::from_slice(&values, &[n]).unwrap();
        let small = Array::from_slice(&[1.0f32, 2.0], &[2]).unwrap();
        let advice = advise_huge_pages(&[&a, &small]).unwrap();
        assert!(advice.collapsed <= advice.advised && advice.advised <= a.nbytes());
        assert_eq!(advice.advised % HUGE_PAGE_BYTES, 0);
        assert_eq!(a.to_vec::<f32>().unwrap(), values);
        assert_eq!(small.to_vec::<f32>().unwrap(), vec![1.0, 2.0]);
        let mode = transparent_huge_pages_mode();
        if cfg!(target_os = "linux") && matches!(mode.as_deref(), Some("always" | "madvise")) {
            assert!(
                advice.advised >= a.nbytes() - 2 * HUGE_PAGE_BYTES,
                "{advice:?}"
            );
            if advice.collapsed > 0 {
                // The advice splits the mapping: look at the first whole span.
                let (ptr, _) = a.host_data().unwrap();
                let span = (ptr as usize).next_multiple_of(HUGE_PAGE_BYTES);
                let huge = anon_huge_bytes_at(span).unwrap_or(0);
                assert!(
                    huge >= HUGE_PAGE_BYTES,
                    "collapsed {advice:?} but smaps shows {huge} B"
                );
            }
        } else {
            eprintln!("transparent huge pages {mode:?}: advice {advice:?}");
        }
    }
}
