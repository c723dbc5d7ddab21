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
