//! MLX's ring backend between real processes on loopback: the collectives give the values
//! computed by hand, and a peer that never starts or dies ends the others with an error in
//! bounded time.
//!
//! The parent tests start this same test binary once per rank, filtered to [`ring_rank`] and
//! with `MLXRS_RING_ROLE` set (that test does nothing otherwise).

use mlx_rs::distributed::{Backend, Group};
use mlx_rs::{Array, Dtype, Error};
use mlx_test_data::ring::{self, RankOutput};
use std::time::{Duration, Instant};

fn check_all(outputs: &[RankOutput]) {
    outputs.iter().for_each(RankOutput::assert_succeeded);
}

/// One rank's body, by role.
#[test]
fn ring_rank() {
    let Ok(role) = std::env::var("MLXRS_RING_ROLE") else {
        return;
    };
    let connect = Duration::from_secs(30);
    match role.as_str() {
        "collectives" => {
            let g = Group::init_with_timeout(Backend::Ring, connect).unwrap();
            let (r, n) = (g.rank(), g.size());
            let v = (r + 1) as f32;
            let x = Array::from_slice(&[v, 2.0 * v, -v], &[3]).unwrap();
            let tri = (n * (n + 1) / 2) as f32;
            assert_eq!(
                g.all_sum(&x).unwrap().to_vec::<f32>().unwrap(),
                vec![tri, 2.0 * tri, -tri]
            );
            let nf = n as f32;
            assert_eq!(
                g.all_max(&x).unwrap().to_vec::<f32>().unwrap(),
                vec![nf, 2.0 * nf, -1.0]
            );
            assert_eq!(
                g.all_min(&x).unwrap().to_vec::<f32>().unwrap(),
                vec![1.0, 2.0, -nf]
            );
            let gathered = g.all_gather(&x.reshape(&[1, 3]).unwrap()).unwrap();
            assert_eq!(gathered.shape(), vec![n, 3]);
            let expect: Vec<f32> = (1..=n)
                .flat_map(|k| [k as f32, 2.0 * k as f32, -(k as f32)])
                .collect();
            assert_eq!(gathered.to_vec::<f32>().unwrap(), expect);
            // Integers too (a pipeline passes token ids this way).
            let ids = Array::from_slice(&[r, 100 * r], &[2]).unwrap();
            let n_sum: i32 = (0..n).sum();
            assert_eq!(
                g.all_sum(&ids).unwrap().to_vec::<i32>().unwrap(),
                vec![n_sum, 100 * n_sum]
            );
            // Around the ring: send to the right, receive from the left.
            let right = (r + 1) % n;
            let left = (r + n - 1) % n;
            let sent = g
                .send(&Array::from_slice(&[10 * r], &[1]).unwrap(), right)
                .unwrap();
            let got = g.recv(&[1], Dtype::Int32, left).unwrap();
            // Each rank sends before it receives (evaluated together, both ranks could start
            // with the receive and wait for each other).
            sent.eval().unwrap();
            assert_eq!(got.to_vec::<i32>().unwrap(), vec![10 * left]);
            if n > 2 {
                // Not a neighbour: the ring backend refuses it as an error, not a crash.
                let far = (r + 2) % n;
                let e = g
                    .send(&Array::from_slice(&[1i32], &[1]).unwrap(), far)
                    .and_then(|t| t.eval());
                assert!(e.is_err(), "rank {r} sent to non-neighbour {far}");
            }
            println!("rank {r} of {n}: ok");
        }
        "alone" => {
            let start = Instant::now();
            let e = Group::init_with_timeout(Backend::Ring, Duration::from_secs(3))
                .expect_err("a ring whose peer never starts must not form");
            assert!(
                matches!(e, Error::Distributed(_) | Error::Mlx { .. }),
                "{e:?}"
            );
            println!("error after {:.1} s: {e}", start.elapsed().as_secs_f64());
        }
        "dies" => {
            let g = Group::init_with_timeout(Backend::Ring, connect).unwrap();
            if g.rank() == 1 {
                // Leave without taking part: the kernel closes this rank's sockets.
                std::process::exit(0);
            }
            let x = Array::ones(&[1 << 16], Dtype::Float32).unwrap();
            let e = g
                .all_sum(&x)
                .and_then(|y| y.to_vec::<f32>())
                .expect_err("an all-reduce with a dead peer must fail");
            println!("error: {e}");
        }
        other => panic!("unknown role {other}"),
    }
}

fn role(name: &str) -> [(&'static str, String); 1] {
    [("MLXRS_RING_ROLE", name.to_string())]
}

#[test]
fn collectives_over_two_and_four_ranks() {
    for n in [2, 4] {
        let outputs = ring::run(
            "ring_rank",
            n,
            &role("collectives"),
            Duration::from_secs(90),
        );
        check_all(&outputs);
        for r in &outputs {
            assert!(
                r.stdout.contains(&format!("rank {} of {n}: ok", r.rank)),
                "{}",
                r.text()
            );
        }
    }
}

#[test]
fn a_peer_that_never_starts_ends_in_an_error() {
    let file = ring::hostfile(2, "alone");
    // Rank 0 accepts first (it would wait for ever); rank 1 connects first (MLX gives up after
    // its retries). Either way: an error, in bounded time.
    for rank in [0, 1] {
        let child = ring::spawn("ring_rank", rank, &file, &role("alone"));
        let outputs = ring::wait_all(vec![child], Duration::from_secs(60));
        check_all(&outputs);
        assert!(
            outputs[0].stdout.contains("error after"),
            "{}",
            outputs[0].text()
        );
        assert!(outputs[0].elapsed < Duration::from_secs(45));
    }
    let _ = std::fs::remove_file(&file);
}

#[test]
fn a_peer_that_dies_ends_the_others_with_an_error() {
    let outputs = ring::run("ring_rank", 2, &role("dies"), Duration::from_secs(60));
    check_all(&outputs);
    assert!(
        outputs[0].stdout.contains("error: "),
        "{}",
        outputs[0].text()
    );
}
