//! Several threads using MLX at once, each with its own arrays (MLX's state and the error
//! handler are process-global; cargo also runs these tests in parallel threads).

use mlx_rs::{eval, Array, Error};
use std::thread;

/// Thread `t`, iteration `i`: A = [[1, 2], [3, 4]] + k, B = [[1, 0], [2, 1]] with k = t + i.
/// A @ B = [[1+k + 2(2+k), 2+k], [3+k + 2(4+k), 4+k]] = [[5+3k, 2+k], [11+3k, 4+k]],
/// whose sum is 22 + 8k.
fn work(t: usize, iterations: usize) -> Result<(), Error> {
    for i in 0..iterations {
        let k = (t * 1000 + i) as f32;
        let a = Array::from_slice(&[1.0 + k, 2.0 + k, 3.0 + k, 4.0 + k], &[2, 2])?;
        let b = Array::from_slice(&[1.0f32, 0.0, 2.0, 1.0], &[2, 2])?;
        let p = a.matmul(&b)?;
        let s = p.sum(.., false)?;
        eval(&[&p, &s])?;
        assert_eq!(
            p.to_vec::<f32>()?,
            vec![5.0 + 3.0 * k, 2.0 + k, 11.0 + 3.0 * k, 4.0 + k],
            "thread {t}, iteration {i}"
        );
        assert_eq!(
            s.item::<f32>()?,
            22.0 + 8.0 * k,
            "thread {t}, iteration {i}"
        );
        // An error on one thread is reported on that thread only.
        if i % 50 == 0 {
            let bad = Array::from_slice(&[1.0f32, 2.0, 3.0], &[3])?;
            assert!(matches!(a.matmul(&bad), Err(Error::Mlx { .. })));
        }
    }
    Ok(())
}

#[test]
fn four_threads_matmul_and_sum() {
    let handles: Vec<_> = (0..4)
        .map(|t| thread::spawn(move || work(t, 200)))
        .collect();
    for h in handles {
        h.join()
            .expect("a worker panicked")
            .expect("a worker failed");
    }
}

#[test]
fn threads_with_errors_alongside() {
    // Runs in parallel with the test above (cargo's test threads).
    let handles: Vec<_> = (4..6)
        .map(|t| thread::spawn(move || work(t, 100)))
        .collect();
    for h in handles {
        h.join()
            .expect("a worker panicked")
            .expect("a worker failed");
    }
}

#[test]
fn arrays_move_between_threads() {
    let a = Array::from_slice(&[1i32, 2, 3], &[3]).unwrap();
    a.eval().unwrap();
    let copies: Vec<Array> = (0..3).map(|_| a.clone()).collect();
    let handles: Vec<_> = copies
        .into_iter()
        .enumerate()
        .map(|(t, c)| thread::spawn(move || (c * (t as i32 + 1)).to_vec::<i32>().unwrap()))
        .collect();
    let results: Vec<Vec<i32>> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    assert_eq!(results, vec![vec![1, 2, 3], vec![2, 4, 6], vec![3, 6, 9]]);
}
