//! The native argmax along the last axis (float32, CPU) against MLX's own CPU argmax (the
//! native ops switched off in the same process) and against hand-derived indices: ties, NaN
//! anywhere (MLX's scan passes over it unless it comes first), infinities, views, keepdims,
//! vocabulary-sized rows, and the cases that keep MLX's op (other axes, other dtypes).
mod common;

use common::rand_vec;
use mlx_rs::native::set_native_ops;
use mlx_rs::{Array, Dtype};
use std::sync::{Mutex, MutexGuard};

static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// (native, MLX) argmax of `x` along `axis`.
fn both(x: &Array, axis: i32, keepdims: bool) -> (Array, Array) {
    set_native_ops(true);
    let native = x.argmax(axis, keepdims).unwrap();
    native.eval().unwrap();
    set_native_ops(false);
    let mlx = x.argmax(axis, keepdims).unwrap();
    mlx.eval().unwrap();
    set_native_ops(true);
    (native, mlx)
}

#[test]
fn hand_derived_indices() {
    let _g = lock();
    let nan = f32::NAN;
    let inf = f32::INFINITY;
    let rows: [(&[f32], u32); 8] = [
        (&[1.0, 9.0, 3.0, 9.0], 1), // ties: the first
        (&[1.0, nan, 3.0, nan], 2), // NaN passed over
        (&[nan, 1.0, 7.0], 0),      // NaN first: 0
        (&[-inf, -inf, -inf], 0),   // all equal
        (&[1.0, inf, nan, inf], 1), // infinity wins, first one
        (&[-0.0, 0.0], 0),          // -0 == 0: the first
        (&[-5.0, -3.0, -4.0], 1),   // negatives
        (&[2.5], 0),                // one element
    ];
    for (v, want) in rows {
        let x = Array::from_slice(v, &[v.len() as i32]).unwrap();
        let (native, mlx) = both(&x, -1, false);
        assert_eq!(native.item::<u32>().unwrap(), want, "{v:?}");
        assert_eq!(mlx.item::<u32>().unwrap(), want, "MLX, {v:?}");
    }
}

#[test]
fn random_rows_match_mlx() {
    let _g = lock();
    for (i, &(rows, n)) in [(1usize, 49152usize), (3, 1000), (7, 17), (2, 1)]
        .iter()
        .enumerate()
    {
        let mut v = rand_vec(rows * n, 40 + i as u64);
        // Plant NaNs and a repeated maximum in some rows.
        for r in 0..rows {
            if r % 2 == 1 && n > 3 {
                v[r * n + n / 3] = f32::NAN;
                v[r * n + n / 2] = 2.0;
                v[r * n + n - 1] = 2.0;
            }
        }
        let x = Array::from_slice(&v, &[rows as i32, n as i32]).unwrap();
        for keepdims in [false, true] {
            let (native, mlx) = both(&x, 1, keepdims);
            assert_eq!(native.shape(), mlx.shape());
            assert_eq!(native.dtype(), Dtype::Uint32);
            assert_eq!(
                native.to_vec::<u32>().unwrap(),
                mlx.to_vec::<u32>().unwrap(),
                "{rows}x{n}"
            );
        }
        // The same through a negative axis and a 3-D view (transposed back and forth).
        let x3 = x.reshape(&[1, rows as i32, n as i32]).unwrap();
        let view = x3
            .transpose(&[0, 2, 1])
            .unwrap()
            .transpose(&[0, 2, 1])
            .unwrap();
        let (native, mlx) = both(&view, -1, false);
        assert_eq!(
            native.to_vec::<u32>().unwrap(),
            mlx.to_vec::<u32>().unwrap()
        );
    }
}

#[test]
fn a_strided_view_reads_its_own_elements() {
    let _g = lock();
    // Rows of the transpose of [[0, 5, 1], [4, 2, 3]]: [0, 4], [5, 2], [1, 3] -> 1, 0, 1.
    let x = Array::from_slice(&[0.0f32, 5.0, 1.0, 4.0, 2.0, 3.0], &[2, 3]).unwrap();
    let t = x.transpose(&[1, 0]).unwrap();
    let (native, mlx) = both(&t, -1, false);
    assert_eq!(native.to_vec::<u32>().unwrap(), vec![1, 0, 1]);
    assert_eq!(mlx.to_vec::<u32>().unwrap(), vec![1, 0, 1]);
}

#[test]
fn other_axes_and_dtypes_keep_mlx_semantics() {
    let _g = lock();
    let x = Array::from_slice(&[1.0f32, 9.0, 3.0, 8.0, 2.0, 8.0], &[2, 3]).unwrap();
    assert_eq!(
        x.argmax(0, false).unwrap().to_vec::<u32>().unwrap(),
        vec![1, 0, 1]
    );
    assert_eq!(x.argmax(None, false).unwrap().item::<u32>().unwrap(), 1);
    let h = x.astype(Dtype::Float16).unwrap();
    assert_eq!(
        h.argmax(-1, false).unwrap().to_vec::<u32>().unwrap(),
        vec![1, 0]
    );
    assert!(Array::zeros(&[2, 0], Dtype::Float32)
        .unwrap()
        .argmax(-1, false)
        .is_err());
    assert!(x.argmax(2, false).is_err());
}
