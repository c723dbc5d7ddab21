//! The crate's one error type, and the bridge from mlx-c's error handler to `Result`.
//!
//! mlx-c reports a failure by calling a process-global error handler and returning a non-zero
//! status. Its default handler prints the message and **exits the process**. This crate installs
//! its own handler before its first call into MLX (see [`init`]); the handler stores the message
//! in a thread-local slot (it runs synchronously on the thread that made the failing call), and
//! the wrapper that saw the non-zero status turns it into [`Error::Mlx`] with the Rust call site.

use std::cell::RefCell;
use std::ffi::{c_char, c_void, CStr};
use std::panic::Location;
use std::path::PathBuf;
use std::sync::Once;

use crate::Dtype;

/// Errors of this crate.
///
/// # Example
/// ```
/// use mlx_rs::{Array, Error};
/// let a = Array::from_slice(&[1.0f32, 2.0, 3.0], &[3])?;
/// let b = Array::from_slice(&[1.0f32, 2.0], &[2])?;
/// match a.matmul(&b) {
///     Err(Error::Mlx { message, .. }) => assert!(message.contains("matmul")),
///     other => panic!("expected an MLX error, got {other:?}"),
/// }
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// MLX rejected an operation (a C++ exception caught by mlx-c).
    #[error("MLX error: {message} (called from {location})")]
    Mlx {
        /// MLX's own message.
        message: String,
        /// The Rust call site that issued the operation.
        location: &'static Location<'static>,
    },
    /// An array's dtype is not the one an operation needs.
    #[error("dtype mismatch: expected {expected}, found {found}")]
    DtypeMismatch {
        /// The dtype required.
        expected: Dtype,
        /// The dtype of the array given.
        found: Dtype,
    },
    /// Data and shape disagree, or a shape is invalid.
    #[error("shape error: {0}")]
    Shape(String),
    /// An argument is out of its valid range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A file could not be read or written.
    #[error("I/O error on {path}: {message}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// A distributed group could not form or lost a peer in a way MLX does not report itself
    /// (see [`crate::distributed`]).
    #[error("distributed: {0}")]
    Distributed(String),
}

/// Shorthand for `std::result::Result<T, mlx_rs::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

thread_local! {
    static LAST_ERROR: RefCell<Option<String>> = const { RefCell::new(None) };
}

unsafe extern "C" fn store_error(msg: *const c_char, _data: *mut c_void) {
    let text = if msg.is_null() {
        "unknown MLX error".to_string()
    } else {
        // SAFETY: mlx-c passes a NUL-terminated message that lives for the call.
        unsafe { CStr::from_ptr(msg) }
            .to_string_lossy()
            .into_owned()
    };
    LAST_ERROR.with(|slot| *slot.borrow_mut() = Some(strip_source_location(text)));
}

/// mlx-c appends ` at <source file of the machine it was built on>:<line>` to every
/// message; that path means nothing to a user and leaks the build machine's layout.
fn strip_source_location(mut text: String) -> String {
    if let Some(at) = text.rfind(" at ") {
        let location = &text[at + 4..];
        let is_location = location.rsplit_once(':').is_some_and(|(file, line)| {
            (file.contains('/') || file.contains('\\'))
                && !line.is_empty()
                && line.bytes().all(|b| b.is_ascii_digit())
        });
        if is_location {
            text.truncate(at);
        }
    }
    text
}

static INSTALL: Once = Once::new();

/// Installs this crate's error handler in mlx-c (once per process). Every wrapper calls it
/// before calling MLX; it is public for code that calls `mlx_sys` directly next to this crate.
pub fn init() {
    INSTALL.call_once(|| {
        // SAFETY: `store_error` is a valid handler for the whole process; it uses no data.
        unsafe { mlx_sys::mlx_set_error_handler(Some(store_error), std::ptr::null_mut(), None) };
    });
}

/// Turns an mlx-c status code into a `Result`, taking the message the handler stored.
#[track_caller]
pub(crate) fn check(status: std::ffi::c_int) -> Result<()> {
    if status == 0 {
        // A message left by a call that reported success would be stale; drop it.
        return Ok(());
    }
    let message = LAST_ERROR
        .with(|slot| slot.borrow_mut().take())
        .unwrap_or_else(|| format!("mlx-c returned status {status} without a message"));
    Err(Error::Mlx {
        message,
        location: Location::caller(),
    })
}

#[cfg(test)]
mod tests {
    use super::strip_source_location as strip;

    #[test]
    fn source_locations_are_stripped() {
        assert_eq!(
            strip("[matmul] bad shapes. at /root/x/mlx-c/mlx/c/ops.cpp:2291".into()),
            "[matmul] bad shapes."
        );
        // Text that only looks similar is kept.
        assert_eq!(strip("look at me: 12".into()), "look at me: 12");
        assert_eq!(strip("no location".into()), "no location");
    }
}
