//! Devices (CPU, GPU) and the process-wide default device.

use crate::error::{check, init, Result};
use mlx_sys as sys;
use std::fmt;

/// The kind of a [`Device`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceType {
    /// The CPU.
    Cpu,
    /// A GPU (Metal on macOS, CUDA on Linux).
    Gpu,
}

/// A compute device: a [`DeviceType`] and an index.
///
/// ```
/// use mlx_rs::{Device, DeviceType};
/// let cpu = Device::cpu();
/// assert_eq!(cpu.device_type(), DeviceType::Cpu);
/// assert!(cpu.is_available());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Device {
    kind: DeviceType,
    index: i32,
}

impl Device {
    /// A device of the given type and index.
    pub fn new(kind: DeviceType, index: i32) -> Device {
        Device { kind, index }
    }

    /// The CPU.
    pub fn cpu() -> Device {
        Device::new(DeviceType::Cpu, 0)
    }

    /// The first GPU (may be unavailable: see [`Device::is_available`]).
    pub fn gpu() -> Device {
        Device::new(DeviceType::Gpu, 0)
    }

    /// The type of the device.
    pub fn device_type(&self) -> DeviceType {
        self.kind
    }

    /// The index of the device among those of its type.
    pub fn index(&self) -> i32 {
        self.index
    }

    /// Whether this build of MLX can run on the device (false for the GPU with `mlx-cpu`).
    pub fn is_available(&self) -> bool {
        let raw = RawDevice::new(*self);
        let mut available = false;
        // SAFETY: valid handle and out-pointer.
        let status = unsafe { sys::mlx_device_is_available(&mut available, raw.0) };
        status == 0 && available
    }

    /// MLX's default device: the GPU where one is available, else the CPU.
    #[track_caller]
    pub fn default_device() -> Result<Device> {
        init();
        // SAFETY: a fresh handle filled by mlx-c, freed by `RawDevice`.
        let mut raw = RawDevice(unsafe { sys::mlx_device_new() });
        // SAFETY: valid handle and out-pointer.
        check(unsafe { sys::mlx_get_default_device(&mut raw.0) })?;
        raw.to_device()
    }

    /// Makes `device` the process-wide default. Prefer the scoped [`crate::with_device`].
    #[track_caller]
    pub fn set_default(device: Device) -> Result<()> {
        let raw = RawDevice::new(device);
        // SAFETY: valid handle.
        check(unsafe { sys::mlx_set_default_device(raw.0) })
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            DeviceType::Cpu => "cpu",
            DeviceType::Gpu => "gpu",
        };
        write!(f, "{kind}:{}", self.index)
    }
}

/// An owned `mlx_device` handle.
pub(crate) struct RawDevice(pub(crate) sys::mlx_device);

impl RawDevice {
    pub(crate) fn new(device: Device) -> RawDevice {
        init();
        let kind = match device.kind {
            DeviceType::Cpu => sys::MLX_CPU,
            DeviceType::Gpu => sys::MLX_GPU,
        };
        // SAFETY: creating a device handle has no preconditions.
        RawDevice(unsafe { sys::mlx_device_new_type(kind, device.index) })
    }

    #[track_caller]
    pub(crate) fn to_device(&self) -> Result<Device> {
        let mut kind = sys::MLX_CPU;
        // SAFETY: valid handle and out-pointer.
        check(unsafe { sys::mlx_device_get_type(&mut kind, self.0) })?;
        let mut index = 0;
        // SAFETY: valid handle and out-pointer.
        check(unsafe { sys::mlx_device_get_index(&mut index, self.0) })?;
        let kind = if kind == sys::MLX_GPU {
            DeviceType::Gpu
        } else {
            DeviceType::Cpu
        };
        Ok(Device::new(kind, index))
    }
}

impl Drop for RawDevice {
    fn drop(&mut self) {
        // SAFETY: owned handle.
        unsafe { sys::mlx_device_free(self.0) };
    }
}
