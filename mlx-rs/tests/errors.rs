//! A failing MLX call comes back as `Err` (mlx-c's default handler would print and exit the
//! process), and its message names no file of the machine MLX was built on.

use mlx_rs::{Array, Dtype};

#[test]
fn a_failing_call_is_an_err_without_build_paths() {
    let a = Array::zeros(&[2, 3], Dtype::Float32).unwrap();
    let b = Array::zeros(&[4, 5], Dtype::Float32).unwrap();
    let err = a.matmul(&b).unwrap_err().to_string();
    assert!(err.contains("matmul") || err.contains("shape"), "{err}");
    assert!(!err.contains(".cpp") && !err.contains(".h:"), "{err}");
    let err = a.reshape(&[7]).unwrap_err().to_string();
    assert!(!err.contains(".cpp"), "{err}");
    // The process goes on: the next call works.
    assert_eq!(a.reshape(&[3, 2]).unwrap().shape(), vec![3, 2]);
}
