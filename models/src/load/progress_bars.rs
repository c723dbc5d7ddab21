//! Progress bars for model loading (downloads from the Hub, tensors read), drawn with
//! `indicatif` on stderr and only when stderr is a terminal: [`terminal_progress`]. The
//! examples and `mlx-server` use it; feature `progress-bars` (default on; indicatif is already
//! in the tree through hf-hub).

use super::progress::{ProgressEvent, ProgressHook};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressFinish, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::sync::Mutex;

/// A hook for [`LoadOptions::progress`](super::LoadOptions::progress) that draws progress bars
/// on stderr (one per file downloaded from the Hub, left on screen; one for the tensors read,
/// cleared when done) when stderr is a terminal, else `None`: piped or redirected output (a
/// service's log, a test) gets nothing more.
///
/// The check is explicit rather than left to indicatif (whose stderr target also hides itself
/// off a terminal) so that a piped run does no drawing work at all.
///
/// ```
/// use mlx_models::load::{terminal_progress, LoadOptions};
/// let options = LoadOptions { progress: terminal_progress(), ..LoadOptions::default() };
/// # let _ = options;
/// ```
pub fn terminal_progress() -> Option<ProgressHook> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let bars = Bars::default();
    Some(ProgressHook::new(move |event| bars.on(event)))
}

/// The bars in use: one download at a time (hf-hub fetches files one after another), each
/// left on its own line when done, then the tensors read, cleared when done.
#[derive(Default)]
struct Bars {
    download: Mutex<Option<ProgressBar>>,
    read: Mutex<Option<ProgressBar>>,
}

impl Bars {
    fn on(&self, event: &ProgressEvent) {
        match event {
            ProgressEvent::DownloadStart { file, total_bytes } => {
                // Left where it stopped if the download fails (the bar is dropped unfinished).
                let bar = bar(*total_bytes, ProgressFinish::Abandon);
                bar.set_message(format!("downloading {file}"));
                replace(&self.download, bar);
            }
            ProgressEvent::DownloadProgress { done_bytes, .. } => {
                if let Some(bar) = lock(&self.download).as_ref() {
                    bar.set_position(*done_bytes);
                }
            }
            ProgressEvent::DownloadDone { .. } => {
                if let Some(bar) = lock(&self.download).take() {
                    bar.finish();
                    end_line();
                }
            }
            ProgressEvent::ReadStart {
                total_tensors,
                total_bytes,
            } => {
                let bar = bar(*total_bytes, ProgressFinish::AndClear);
                bar.set_message(format!("loading tensors 0/{total_tensors}"));
                replace(&self.read, bar);
            }
            ProgressEvent::ReadProgress {
                done_tensors,
                total_tensors,
                done_bytes,
                ..
            } => {
                if let Some(bar) = lock(&self.read).as_ref() {
                    bar.set_message(format!("loading tensors {done_tensors}/{total_tensors}"));
                    bar.set_position(*done_bytes);
                }
            }
            // The caller prints its "loaded ..." line next.
            ProgressEvent::ReadDone { .. } => {
                if let Some(bar) = lock(&self.read).take() {
                    bar.finish_and_clear();
                }
            }
        }
    }
}

impl Drop for Bars {
    /// A download that failed leaves its bar where it stopped, and the line ended so that the
    /// error message starts on its own.
    fn drop(&mut self) {
        if let Some(bar) = lock(&self.download).take() {
            bar.abandon();
            end_line();
        }
    }
}

/// Moves stderr's cursor past a bar left on the screen (indicatif leaves it at the line's end).
fn end_line() {
    let _ = std::io::stderr().write_all(b"\n");
}

/// A byte-counting bar of `len` bytes on stderr.
fn bar(len: u64, on_finish: ProgressFinish) -> ProgressBar {
    let style = ProgressStyle::with_template(
        "{msg} [{wide_bar}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr())
        .with_style(style)
        .with_finish(on_finish)
}

fn lock<T>(slot: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    slot.lock().unwrap_or_else(|e| e.into_inner())
}

/// Puts `bar` in `slot`, clearing a bar still there.
fn replace(slot: &Mutex<Option<ProgressBar>>, bar: ProgressBar) {
    if let Some(old) = lock(slot).replace(bar) {
        old.finish_and_clear();
    }
}
