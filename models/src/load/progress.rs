//! Progress of [`load`](super::load): a callback ([`ProgressHook`], set in
//! [`LoadOptions::progress`](super::LoadOptions::progress)) that receives [`ProgressEvent`]s
//! while files download from the Hugging Face Hub and while tensor data is read.
//!
//! The library draws nothing itself: an application turns the events into progress bars, log
//! lines or a UI (the examples and `mlx-server` draw `indicatif` bars on a terminal's stderr).
//! Without a hook, loading reports nothing.
//!
//! Events come in order on the thread that calls [`load`](super::load):
//!
//! - per file downloaded (none when the file is already in the Hub cache):
//!   [`DownloadStart`](ProgressEvent::DownloadStart), any number of
//!   [`DownloadProgress`](ProgressEvent::DownloadProgress),
//!   [`DownloadDone`](ProgressEvent::DownloadDone);
//! - once, when the checks have passed and tensor data is read:
//!   [`ReadStart`](ProgressEvent::ReadStart), one
//!   [`ReadProgress`](ProgressEvent::ReadProgress) per tensor stored in the weight files (in
//!   file order), [`ReadDone`](ProgressEvent::ReadDone). Converting the weights to the compute
//!   dtype and building the layers follow `ReadDone` and are not counted.
//!
//! ```
//! use mlx_models::load::{LoadOptions, ProgressEvent, ProgressHook};
//!
//! let hook = ProgressHook::new(|event: &ProgressEvent| match event {
//!     ProgressEvent::DownloadProgress { file, done_bytes, total_bytes } => {
//!         eprintln!("{file}: {done_bytes} / {total_bytes} bytes")
//!     }
//!     ProgressEvent::ReadProgress { done_tensors, total_tensors, .. } => {
//!         eprintln!("tensor {done_tensors} / {total_tensors}")
//!     }
//!     _ => {}
//! });
//! let options = LoadOptions { progress: Some(hook), ..LoadOptions::default() };
//! # let _ = options;
//! ```

use std::sync::Arc;

/// One step of [`load`](super::load)'s progress (see the [module docs](self) for the order).
///
/// Byte counts of downloads are the file's size on the Hub; byte counts of reads are the
/// tensors' stored (on-disk) sizes, before any conversion. New kinds of events may be added:
/// match with a wildcard arm.
///
/// ```
/// use mlx_models::load::ProgressEvent;
/// /// The fraction of the current step done, for a progress bar.
/// fn fraction(event: &ProgressEvent) -> Option<f64> {
///     match *event {
///         ProgressEvent::DownloadProgress { done_bytes, total_bytes, .. }
///         | ProgressEvent::ReadProgress { done_bytes, total_bytes, .. } => {
///             Some(done_bytes as f64 / total_bytes.max(1) as f64)
///         }
///         _ => None,
///     }
/// }
/// let halfway = ProgressEvent::ReadProgress {
///     done_tensors: 1,
///     total_tensors: 2,
///     done_bytes: 512,
///     total_bytes: 1024,
/// };
/// assert_eq!(fraction(&halfway), Some(0.5));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProgressEvent {
    /// A download from the Hugging Face Hub starts: `file` is its name in the repository.
    DownloadStart {
        /// The file's name in the repository (e.g. `model.safetensors`).
        file: String,
        /// Its size in bytes.
        total_bytes: u64,
    },
    /// `done_bytes` of `file` have been downloaded. Non-decreasing, except that a transfer
    /// resumed after a dropped connection restarts from the bytes already on disk.
    DownloadProgress {
        /// The file's name in the repository.
        file: String,
        /// Bytes downloaded so far.
        done_bytes: u64,
        /// Its size in bytes.
        total_bytes: u64,
    },
    /// `file` is complete (in the Hub cache).
    DownloadDone {
        /// The file's name in the repository.
        file: String,
        /// Its size in bytes.
        total_bytes: u64,
    },
    /// Reading tensor data starts: the counts over every weight file (all shards of a
    /// Hugging Face folder, or the GGUF file).
    ReadStart {
        /// Tensors stored in the weight files.
        total_tensors: u64,
        /// Their stored bytes.
        total_bytes: u64,
    },
    /// One more tensor was read (and, for GGUF, decoded): `done_tensors` goes up by one per
    /// event, `done_bytes` by that tensor's stored bytes.
    ReadProgress {
        /// Tensors read so far.
        done_tensors: u64,
        /// As in [`ReadStart`](Self::ReadStart).
        total_tensors: u64,
        /// Stored bytes of the tensors read so far.
        done_bytes: u64,
        /// As in [`ReadStart`](Self::ReadStart).
        total_bytes: u64,
    },
    /// Every tensor was read.
    ReadDone {
        /// As in [`ReadStart`](Self::ReadStart).
        total_tensors: u64,
        /// As in [`ReadStart`](Self::ReadStart).
        total_bytes: u64,
    },
}

/// The callback of [`LoadOptions::progress`](super::LoadOptions::progress): a shared
/// `Fn(&ProgressEvent)`, cheap to clone. It runs on the loading thread, between steps of the
/// load, so it should return quickly (hand slow work to another thread).
///
/// ```
/// use mlx_models::load::{ProgressEvent, ProgressHook};
/// use std::sync::{Arc, Mutex};
///
/// let seen = Arc::new(Mutex::new(Vec::new()));
/// let sink = Arc::clone(&seen);
/// let hook = ProgressHook::new(move |e: &ProgressEvent| sink.lock().unwrap().push(e.clone()));
/// hook.report(&ProgressEvent::ReadDone { total_tensors: 3, total_bytes: 96 });
/// assert_eq!(seen.lock().unwrap().len(), 1);
/// ```
#[derive(Clone)]
pub struct ProgressHook(Arc<dyn Fn(&ProgressEvent) + Send + Sync>);

impl ProgressHook {
    /// A hook that calls `f` with each event.
    pub fn new(f: impl Fn(&ProgressEvent) + Send + Sync + 'static) -> Self {
        ProgressHook(Arc::new(f))
    }

    /// Passes `event` to the callback.
    pub fn report(&self, event: &ProgressEvent) {
        (self.0)(event)
    }
}

impl From<Arc<dyn Fn(&ProgressEvent) + Send + Sync>> for ProgressHook {
    fn from(f: Arc<dyn Fn(&ProgressEvent) + Send + Sync>) -> Self {
        ProgressHook(f)
    }
}

impl std::fmt::Debug for ProgressHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ProgressHook(..)")
    }
}

/// Counts the tensors a loader reads against their totals and reports each one.
pub(crate) struct ReadCounter<'a> {
    hook: Option<&'a ProgressHook>,
    done_tensors: u64,
    total_tensors: u64,
    done_bytes: u64,
    total_bytes: u64,
}

impl<'a> ReadCounter<'a> {
    /// Reports [`ProgressEvent::ReadStart`] for `sizes` (each tensor's stored bytes).
    pub(crate) fn start(hook: Option<&'a ProgressHook>, sizes: impl Iterator<Item = u64>) -> Self {
        let (mut total_tensors, mut total_bytes) = (0u64, 0u64);
        for n in sizes {
            total_tensors += 1;
            total_bytes = total_bytes.saturating_add(n);
        }
        let counter = ReadCounter {
            hook,
            done_tensors: 0,
            total_tensors,
            done_bytes: 0,
            total_bytes,
        };
        counter.report(ProgressEvent::ReadStart {
            total_tensors,
            total_bytes,
        });
        counter
    }

    /// Reports one more tensor of `n_bytes` stored bytes read.
    pub(crate) fn tensor(&mut self, n_bytes: u64) {
        self.done_tensors += 1;
        self.done_bytes = self.done_bytes.saturating_add(n_bytes);
        self.report(ProgressEvent::ReadProgress {
            done_tensors: self.done_tensors,
            total_tensors: self.total_tensors,
            done_bytes: self.done_bytes,
            total_bytes: self.total_bytes,
        });
    }

    /// Reports [`ProgressEvent::ReadDone`].
    pub(crate) fn done(self) {
        self.report(ProgressEvent::ReadDone {
            total_tensors: self.total_tensors,
            total_bytes: self.total_bytes,
        });
    }

    fn report(&self, event: ProgressEvent) {
        if let Some(hook) = self.hook {
            hook.report(&event);
        }
    }
}
