//! Prints the MLX build in use and checks a matrix product on every available device.
//!
//! ```text
//! cargo run --release --example device_info
//! ```
use mlx_rs::{with_device, Array, Device};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!(
        "MLX {} (mlx-sys built against {})",
        mlx_version()?,
        mlx_rs::sys::MLX_VERSION
    );
    println!("default device: {}", Device::default_device()?);
    // [[1,2,3],[4,5,6]] @ [[1,0],[0,1],[1,1]] = [[4,5],[10,11]]
    let expected = [4.0f32, 5.0, 10.0, 11.0];
    for device in [Device::cpu(), Device::gpu()] {
        if !device.is_available() {
            println!("{device}: not available in this build");
            continue;
        }
        let got = with_device(device, || -> mlx_rs::Result<Vec<f32>> {
            let a = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
            let b = Array::from_slice(&[1.0f32, 0.0, 0.0, 1.0, 1.0, 1.0], &[3, 2])?;
            a.matmul(&b)?.to_vec::<f32>()
        })??;
        let verdict = if got == expected { "ok" } else { "WRONG" };
        println!("{device}: matmul {got:?} {verdict}");
        if got != expected {
            return Err(format!("{device} computed {got:?}, expected {expected:?}").into());
        }
    }
    Ok(())
}

fn mlx_version() -> Result<String, Box<dyn std::error::Error>> {
    mlx_rs::error::init();
    // SAFETY: a fresh string handle, read then freed.
    unsafe {
        let mut s = mlx_rs::sys::mlx_string_new();
        if mlx_rs::sys::mlx_version(&mut s) != 0 {
            return Err("mlx_version failed".into());
        }
        let v = std::ffi::CStr::from_ptr(mlx_rs::sys::mlx_string_data(s))
            .to_string_lossy()
            .into_owned();
        mlx_rs::sys::mlx_string_free(s);
        Ok(v)
    }
}
