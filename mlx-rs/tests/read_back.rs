//! Reading values back (`to_vec`, `item`): every memory layout MLX hands out reads in logical
//! order (hand-derived values), and reading an array waits for that array only, not for work
//! queued on its stream after it (the decode pipeline: `async_eval` of step n + 1, then
//! `item` of step n).

use mlx_rs::{async_eval, s, Array, Dtype};

fn iota(rows: i32, cols: i32) -> Array {
    let v: Vec<f32> = (0..rows * cols).map(|i| i as f32).collect();
    Array::from_slice(&v, &[rows, cols]).unwrap()
}

#[test]
fn layouts_read_in_logical_order() {
    // [[0, 1, 2], [3, 4, 5], [6, 7, 8], [9, 10, 11]]
    let a = iota(4, 3);
    // Rows 1..3: row-major, at an offset into the buffer.
    assert_eq!(
        a.slice(s![1..3, ..]).unwrap().to_vec::<f32>().unwrap(),
        vec![3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    );
    // Column 1: strided.
    assert_eq!(
        a.slice(s![.., 1]).unwrap().to_vec::<f32>().unwrap(),
        vec![1.0, 4.0, 7.0, 10.0]
    );
    // Transposed.
    assert_eq!(
        a.t().unwrap().to_vec::<f32>().unwrap(),
        vec![0.0, 3.0, 6.0, 9.0, 1.0, 4.0, 7.0, 10.0, 2.0, 5.0, 8.0, 11.0]
    );
    // Broadcast (stride 0).
    let row = Array::from_slice(&[1.0f32, 2.0], &[1, 2]).unwrap();
    assert_eq!(
        row.broadcast_to(&[3, 2]).unwrap().to_vec::<f32>().unwrap(),
        vec![1.0, 2.0, 1.0, 2.0, 1.0, 2.0]
    );
    // One element of a slice, half precision, booleans, empty.
    assert_eq!(a.slice(s![2, 1]).unwrap().item::<f32>().unwrap(), 7.0);
    let h = a
        .slice(s![.., 2])
        .unwrap()
        .astype(Dtype::Float16)
        .unwrap()
        .to_vec::<half::f16>()
        .unwrap();
    assert_eq!(
        h.iter().map(|x| x.to_f32()).collect::<Vec<_>>(),
        vec![2.0, 5.0, 8.0, 11.0]
    );
    let b = Array::from_slice(&[true, false, true], &[3]).unwrap();
    assert_eq!(
        b.slice(s![1..]).unwrap().to_vec::<bool>().unwrap(),
        vec![false, true]
    );
    let empty = a.slice(s![2..2, ..]).unwrap();
    assert!(empty.to_vec::<f32>().unwrap().is_empty());
}

#[test]
fn reading_waits_for_the_array_not_for_later_work() {
    // x = 3 · 2 = 6, evaluated asynchronously; then a long chain that depends on x is queued
    // behind it on the same stream (about 0.1–0.3 s of matrix products on a small machine).
    let x = Array::from_slice(&[3.0f32], &[1])
        .unwrap()
        .multiply(&Array::from_slice(&[2.0f32], &[1]).unwrap())
        .unwrap();
    async_eval(&[&x]).unwrap();
    let m = Array::full(&[384, 384], 1.0f32 / 384.0, Dtype::Float32).unwrap();
    let mut chain = x.broadcast_to(&[384, 384]).unwrap();
    for _ in 0..48 {
        chain = chain.matmul(&m).unwrap();
    }
    async_eval(&[&chain]).unwrap();
    // Reading x must not wait for the chain: a read that evaluates an op on x (a copy, a view)
    // would be queued behind the chain and return only once the chain is done.
    assert_eq!(x.item::<f32>().unwrap(), 6.0);
    assert!(
        !chain.is_available(),
        "reading x waited for the work queued after it"
    );
    // The chain itself: every product of an all-6 matrix with the averaging matrix is all 6.
    let v = chain.slice(s![0, ..4]).unwrap().to_vec::<f32>().unwrap();
    for e in v {
        assert!((e - 6.0).abs() < 1e-3, "{e}");
    }
}
