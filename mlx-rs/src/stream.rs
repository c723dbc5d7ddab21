//! Streams, and the scoped default stream that every operation of this crate runs on.

use crate::device::RawDevice;
use crate::error::{check, init, Result};
use crate::Device;
use mlx_sys as sys;
use std::cell::RefCell;
use std::fmt;

/// A queue of work on one device. Operations record the stream they run on when the graph is
/// built; evaluation runs them there.
///
/// Operations in this crate take no stream argument: they run on the *current* stream, which
/// is the innermost one set with [`with_stream`] or [`with_device`] on this thread, or else
/// MLX's default stream of the default device.
///
/// ```
/// use mlx_rs::{with_stream, Array, Device, Stream};
/// let cpu = Stream::new(Device::cpu())?;
/// let y = with_stream(&cpu, || (Array::scalar(2.0f32) * 3.0f32).to_vec::<f32>())?;
/// assert_eq!(y, vec![6.0]);
/// assert_eq!(cpu.device()?, Device::cpu());
/// # Ok::<(), mlx_rs::Error>(())
/// ```
pub struct Stream {
    raw: sys::mlx_stream,
}

// SAFETY: the handle is a heap pointer to an `mlx::core::Stream` value (device + index).
unsafe impl Send for Stream {}

impl Drop for Stream {
    fn drop(&mut self) {
        // SAFETY: owned handle.
        unsafe { sys::mlx_stream_free(self.raw) };
    }
}

impl Clone for Stream {
    fn clone(&self) -> Self {
        // SAFETY: copies the stream value into a fresh handle.
        unsafe {
            let mut raw = sys::mlx_stream_new();
            sys::mlx_stream_set(&mut raw, self.raw);
            Stream { raw }
        }
    }
}

impl PartialEq for Stream {
    fn eq(&self, other: &Self) -> bool {
        // SAFETY: valid handles.
        unsafe { sys::mlx_stream_equal(self.raw, other.raw) }
    }
}

impl fmt::Debug for Stream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut index = -1;
        // SAFETY: valid handle and out-pointer.
        unsafe { sys::mlx_stream_get_index(&mut index, self.raw) };
        f.debug_struct("Stream")
            .field("device", &self.device().ok())
            .field("index", &index)
            .finish()
    }
}

thread_local! {
    static SCOPED: RefCell<Vec<Stream>> = const { RefCell::new(Vec::new()) };
}

impl Stream {
    /// A new stream on `device`.
    #[track_caller]
    pub fn new(device: Device) -> Result<Stream> {
        let dev = RawDevice::new(device);
        // SAFETY: valid device handle.
        let raw = unsafe { sys::mlx_stream_new_device(dev.0) };
        let stream = Stream { raw };
        stream.device()?;
        Ok(stream)
    }

    /// MLX's default stream of `device`.
    #[track_caller]
    pub fn default_for(device: Device) -> Result<Stream> {
        let dev = RawDevice::new(device);
        // SAFETY: fresh handle, owned by `Stream` from here on.
        let raw = unsafe { sys::mlx_stream_new() };
        let mut stream = Stream { raw };
        // SAFETY: valid handles; mlx-c fills `stream.raw`.
        check(unsafe { sys::mlx_get_default_stream(&mut stream.raw, dev.0) })?;
        Ok(stream)
    }

    /// The stream operations run on now (see the type's docs).
    #[track_caller]
    pub fn current() -> Result<Stream> {
        if let Some(s) = SCOPED.with(|scoped| scoped.borrow().last().cloned()) {
            return Ok(s);
        }
        Stream::default_for(Device::default_device()?)
    }

    /// The device of the stream.
    #[track_caller]
    pub fn device(&self) -> Result<Device> {
        init();
        // SAFETY: fresh device handle filled by mlx-c.
        let mut dev = RawDevice(unsafe { sys::mlx_device_new() });
        // SAFETY: valid handles; mlx-c fills `dev.0`.
        check(unsafe { sys::mlx_stream_get_device(&mut dev.0, self.raw) })?;
        dev.to_device()
    }

    /// Waits until all work queued on the stream has finished.
    #[track_caller]
    pub fn synchronize(&self) -> Result<()> {
        init();
        // SAFETY: valid handle.
        check(unsafe { sys::mlx_synchronize(self.raw) })
    }

    /// The underlying mlx-c handle, still owned by `self`.
    pub fn as_raw(&self) -> sys::mlx_stream {
        self.raw
    }
}

/// Pops the scoped stream even when the closure panics.
struct ScopeGuard;

impl Drop for ScopeGuard {
    fn drop(&mut self) {
        SCOPED.with(|scoped| scoped.borrow_mut().pop());
    }
}

/// Runs `f` with `stream` as this thread's current stream; scopes nest.
///
/// ```
/// use mlx_rs::{with_stream, Device, Stream};
/// let s = Stream::new(Device::cpu())?;
/// with_stream(&s, || assert_eq!(Stream::current().unwrap(), s));
/// # Ok::<(), mlx_rs::Error>(())
/// ```
pub fn with_stream<R>(stream: &Stream, f: impl FnOnce() -> R) -> R {
    SCOPED.with(|scoped| scoped.borrow_mut().push(stream.clone()));
    let _guard = ScopeGuard;
    f()
}

/// Runs `f` on MLX's default stream of `device`.
///
/// ```
/// use mlx_rs::{with_device, Array, Device};
/// let sum = with_device(Device::cpu(), || Array::from_slice(&[1i32, 2, 3], &[3])?.sum(.., false)?.item::<i32>())??;
/// assert_eq!(sum, 6);
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn with_device<R>(device: Device, f: impl FnOnce() -> R) -> Result<R> {
    let stream = Stream::default_for(device)?;
    Ok(with_stream(&stream, f))
}
