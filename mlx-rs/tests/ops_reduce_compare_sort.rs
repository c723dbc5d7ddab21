//! Reductions, activations, comparisons and sorting against NumPy results
//! (`scripts/fixtures/ops_reduce.py` writes `tests/fixtures/ops_reduce.json`), plus error paths.

use mlx_rs::half::{bf16, f16};
use mlx_rs::ops::{where_, Axes};
use mlx_rs::{Array, Dtype, Error};
use serde_json::Value;

fn fixture() -> Value {
    serde_json::from_str(include_str!("fixtures/ops_reduce.json")).expect("valid fixture JSON")
}

fn num(v: &Value) -> f64 {
    match v {
        Value::String(s) if s == "nan" => f64::NAN,
        Value::String(s) if s == "inf" => f64::INFINITY,
        Value::String(s) if s == "-inf" => f64::NEG_INFINITY,
        other => other.as_f64().expect("a number"),
    }
}

fn data(v: &Value) -> Vec<f64> {
    v["data"].as_array().unwrap().iter().map(num).collect()
}

fn bools(v: &Value) -> Vec<bool> {
    v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_bool().unwrap())
        .collect()
}

fn shape(v: &Value) -> Vec<i32> {
    v["shape"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d.as_i64().unwrap() as i32)
        .collect()
}

fn f32_array(v: &Value) -> Array {
    let d: Vec<f32> = data(v).iter().map(|&x| x as f32).collect();
    Array::from_slice(&d, &shape(v)).unwrap()
}

fn axes(v: &Value) -> Axes {
    match v {
        Value::Null => Axes::All,
        Value::Array(list) => {
            Axes::These(list.iter().map(|a| a.as_i64().unwrap() as i32).collect())
        }
        other => panic!("bad axes {other}"),
    }
}

fn opt_axis(v: &Value) -> Option<i32> {
    v.as_i64().map(|a| a as i32)
}

/// Asserts `|got - want| <= atol + rtol * |want|` element-wise (NaN matches NaN).
fn assert_close(got: &[f32], want: &[f64], rtol: f64, atol: f64, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let g = g as f64;
        let ok = if w.is_nan() {
            g.is_nan()
        } else if w.is_infinite() {
            g == w
        } else {
            (g - w).abs() <= atol + rtol * w.abs()
        };
        assert!(ok, "{what}: element {i}: got {g}, want {w}");
    }
}

fn f32_values(a: &Array) -> Vec<f32> {
    a.astype(Dtype::Float32).unwrap().to_vec::<f32>().unwrap()
}

#[test]
fn reductions_match_numpy() {
    let fx = fixture();
    let x = f32_array(&fx["x"]);
    let cases = fx["reduce"].as_array().unwrap();
    assert!(cases.len() > 50);
    for case in cases {
        let op = case["op"].as_str().unwrap();
        let ax = axes(&case["axes"]);
        let keep = case["keepdims"].as_bool().unwrap();
        let out = match op {
            "sum" => x.sum(ax.clone(), keep),
            "mean" => x.mean(ax.clone(), keep),
            "max" => x.max(ax.clone(), keep),
            "min" => x.min(ax.clone(), keep),
            "prod" => x.prod(ax.clone(), keep),
            "var" => x.var(ax.clone(), keep, case["ddof"].as_i64().unwrap() as i32),
            "logsumexp" => x.logsumexp(ax.clone(), keep),
            other => panic!("unknown op {other}"),
        }
        .unwrap();
        let what = format!("{op} axes={ax:?} keepdims={keep}");
        assert_eq!(out.shape(), shape(case), "{what}");
        assert_eq!(out.dtype(), Dtype::Float32, "{what}");
        assert_close(
            &out.to_vec::<f32>().unwrap(),
            &data(case),
            1e-5,
            1e-5,
            &what,
        );
    }
}

#[test]
fn all_any_match_numpy() {
    let fx = fixture();
    let b = Array::from_slice(&bools(&fx["bool_x"]), &shape(&fx["bool_x"])).unwrap();
    for case in fx["all_any"].as_array().unwrap() {
        let ax = axes(&case["axes"]);
        let keep = case["keepdims"].as_bool().unwrap();
        let out = match case["op"].as_str().unwrap() {
            "all" => b.all(ax, keep),
            _ => b.any(ax, keep),
        }
        .unwrap();
        assert_eq!(out.shape(), shape(case), "{case}");
        assert_eq!(out.to_vec::<bool>().unwrap(), bools(case), "{case}");
    }
    // Non-bool input: non-zero counts as true.
    let f = Array::from_slice(&[0.0f32, -0.5, 0.0, 0.0], &[2, 2]).unwrap();
    assert_eq!(
        f.any(1, false).unwrap().to_vec::<bool>().unwrap(),
        vec![true, false]
    );
    assert_eq!(
        f.all(0, false).unwrap().to_vec::<bool>().unwrap(),
        vec![false, false]
    );
}

#[test]
fn arg_reductions_match_numpy() {
    let fx = fixture();
    let x = f32_array(&fx["x"]);
    for case in fx["arg"].as_array().unwrap() {
        let axis = opt_axis(&case["axis"]);
        let keep = case["keepdims"].as_bool().unwrap();
        let out = match case["op"].as_str().unwrap() {
            "argmax" => x.argmax(axis, keep),
            _ => x.argmin(axis, keep),
        }
        .unwrap();
        assert_eq!(out.shape(), shape(case), "{case}");
        let got: Vec<f64> = out
            .to_vec::<u32>()
            .unwrap()
            .iter()
            .map(|&i| i as f64)
            .collect();
        assert_eq!(got, data(case), "{case}");
    }
}

#[test]
fn cumsum_matches_numpy() {
    let fx = fixture();
    let x = f32_array(&fx["x"]);
    for case in fx["cumsum"].as_array().unwrap() {
        let axis = opt_axis(&case["axis"]);
        let rev = case["reverse"].as_bool().unwrap();
        let inc = case["inclusive"].as_bool().unwrap();
        let out = x.cumsum(axis, rev, inc).unwrap();
        assert_eq!(out.shape(), shape(case), "{case}");
        let what = format!("cumsum axis={axis:?} reverse={rev} inclusive={inc}");
        assert_close(
            &out.to_vec::<f32>().unwrap(),
            &data(case),
            1e-5,
            1e-5,
            &what,
        );
    }
    // Integers stay exact.
    let i = Array::from_slice(&[1i32, 2, 3, 4], &[4]).unwrap();
    assert_eq!(
        i.cumsum(0, true, false).unwrap().to_vec::<i32>().unwrap(),
        vec![9, 7, 4, 0]
    );
}

/// Runs an activation by name.
fn activation(a: &Array, op: &str) -> Array {
    match op {
        "relu" => a.relu(),
        "silu" => a.silu(),
        "gelu" => a.gelu(),
        "gelu_approx" => a.gelu_approx(),
        other => panic!("unknown activation {other}"),
    }
    .unwrap()
}

#[test]
fn activations_match_numpy_and_keep_dtype() {
    let fx = fixture();
    let x = f32_array(&fx["act_x"]);
    let acts = fx["activation"].as_object().unwrap();
    assert_eq!(acts.len(), 4);
    // (dtype, rtol, atol): inputs are exact in every dtype; outputs carry the dtype's rounding.
    let dtypes = [
        (Dtype::Float32, 1e-5, 1e-6),
        (Dtype::Float16, 4e-3, 2e-3),
        (Dtype::Bfloat16, 2e-2, 1e-2),
    ];
    for (op, want) in acts {
        for (dtype, rtol, atol) in dtypes {
            let out = activation(&x.astype(dtype).unwrap(), op);
            assert_eq!(out.dtype(), dtype, "{op} on {dtype:?}");
            assert_eq!(out.shape(), shape(want));
            assert_close(
                &f32_values(&out),
                &data(want),
                rtol,
                atol,
                &format!("{op} {dtype:?}"),
            );
        }
    }
    // The two GELUs differ (by up to ~5e-4 on these inputs): each matches its own formula.
    let exact = data(&acts["gelu"]);
    let approx = data(&acts["gelu_approx"]);
    assert!(exact.iter().zip(&approx).any(|(e, a)| (e - a).abs() > 1e-4));
}

#[test]
fn softmax_matches_numpy_in_f32_f16_bf16() {
    let fx = fixture();
    let x = f32_array(&fx["act_x"]);
    let dtypes = [
        (Dtype::Float32, 1e-5, 1e-7),
        (Dtype::Float16, 4e-3, 1e-4),
        (Dtype::Bfloat16, 2e-2, 1e-3),
    ];
    for case in fx["softmax"].as_array().unwrap() {
        let ax = axes(&case["axes"]);
        for (dtype, rtol, atol) in dtypes {
            for precise in [false, true] {
                let out = x
                    .astype(dtype)
                    .unwrap()
                    .softmax(ax.clone(), precise)
                    .unwrap();
                let what = format!("softmax {ax:?} {dtype:?} precise={precise}");
                assert_eq!(out.dtype(), dtype, "{what}");
                assert_eq!(out.shape(), shape(case), "{what}");
                assert_close(&f32_values(&out), &data(case), rtol, atol, &what);
            }
        }
    }
    // Reading bf16 / f16 directly (not through a cast) also works.
    let b = Array::from_slice(&[bf16::from_f32(0.0), bf16::from_f32(0.0)], &[2]).unwrap();
    assert_eq!(
        b.softmax(.., true).unwrap().to_vec::<bf16>().unwrap(),
        vec![bf16::from_f32(0.5); 2]
    );
    let h = Array::from_slice(&[f16::from_f32(1.0); 4], &[4]).unwrap();
    assert_eq!(
        h.softmax(0, false).unwrap().to_vec::<f16>().unwrap(),
        vec![f16::from_f32(0.25); 4]
    );
}

#[test]
fn comparisons_match_numpy() {
    let fx = fixture();
    let c = &fx["compare"];
    let a = f32_array(&c["a"]);
    let b = f32_array(&c["b"]);
    let row = f32_array(&c["row"]);
    let cases = c["binary"].as_array().unwrap();
    assert_eq!(cases.len(), 16);
    for case in cases {
        let rhs = if case["rhs"] == "b" { &b } else { &row };
        let op = case["op"].as_str().unwrap();
        let out = match op {
            "equal" => a.equal(rhs),
            "not_equal" => a.not_equal(rhs),
            "less" => a.less(rhs),
            "less_equal" => a.less_equal(rhs),
            "greater" => a.greater(rhs),
            "greater_equal" => a.greater_equal(rhs),
            "logical_and" => a.logical_and(rhs),
            "logical_or" => a.logical_or(rhs),
            other => panic!("unknown op {other}"),
        }
        .unwrap();
        assert_eq!(out.dtype(), Dtype::Bool, "{op}");
        assert_eq!(out.shape(), shape(case), "{op}");
        assert_eq!(
            out.to_vec::<bool>().unwrap(),
            bools(case),
            "{op} vs {}",
            case["rhs"]
        );
    }
    for (op, want) in c["unary"].as_object().unwrap() {
        let out = match op.as_str() {
            "logical_not" => a.logical_not(),
            "isnan" => a.isnan(),
            "isinf" => a.isinf(),
            "isfinite" => a.isfinite(),
            other => panic!("unknown op {other}"),
        }
        .unwrap();
        assert_eq!(out.to_vec::<bool>().unwrap(), bools(want), "{op}");
    }
}

#[test]
fn comparisons_reject_shapes_that_do_not_broadcast() {
    let a = Array::from_slice(&[1.0f32; 8], &[2, 4]).unwrap();
    let b = Array::from_slice(&[1.0f32; 3], &[3]).unwrap();
    let ops: [fn(&Array, &Array) -> mlx_rs::Result<Array>; 8] = [
        Array::equal,
        Array::not_equal,
        Array::less,
        Array::less_equal,
        Array::greater,
        Array::greater_equal,
        Array::logical_and,
        Array::logical_or,
    ];
    for op in ops {
        assert!(matches!(op(&a, &b), Err(Error::Mlx { .. })));
    }
    assert!(matches!(a.allclose(&b, 1e-5, 1e-8), Err(Error::Mlx { .. })));
    let cond = Array::from_slice(&[true, false], &[2]).unwrap();
    assert!(where_(&cond, &a, &a).is_err());
    // The process goes on and the same arrays still work.
    assert!(a
        .equal(&a)
        .unwrap()
        .all(.., false)
        .unwrap()
        .item::<bool>()
        .unwrap());
}

#[test]
fn array_equal_and_allclose() {
    let nan = Array::from_slice(&[1.0f32, f32::NAN, 3.0], &[3]).unwrap();
    assert!(!nan.array_equal(&nan, false).unwrap());
    assert!(nan.array_equal(&nan, true).unwrap());
    let ints = Array::from_slice(&[1i32, 2, 3], &[3]).unwrap();
    let floats = Array::from_slice(&[1.0f32, 2.0, 3.0], &[3]).unwrap();
    assert!(ints.array_equal(&floats, false).unwrap()); // values compared, not dtypes
    assert!(!ints.array_equal(&nan, true).unwrap());
    let reshaped = Array::from_slice(&[1i32, 2, 3], &[3, 1]).unwrap();
    assert!(!ints.array_equal(&reshaped, false).unwrap()); // shapes differ: false, no error

    let fx = fixture();
    let c = &fx["compare"]["allclose"];
    let a = f32_array(&c["a"]);
    let b = f32_array(&c["b"]);
    let cases = c["cases"].as_array().unwrap();
    assert!(cases.iter().any(|k| k["expected"] == true));
    assert!(cases.iter().any(|k| k["expected"] == false));
    for case in cases {
        let rtol = case["rtol"].as_f64().unwrap();
        let atol = case["atol"].as_f64().unwrap();
        assert_eq!(
            a.allclose(&b, rtol, atol).unwrap(),
            case["expected"].as_bool().unwrap(),
            "rtol={rtol} atol={atol}"
        );
    }
    // NaN is never close, even to itself.
    assert!(!nan.allclose(&nan, 1.0, 1.0).unwrap());
}

#[test]
fn where_matches_numpy() {
    let fx = fixture();
    let w = &fx["compare"]["where"];
    let cond = Array::from_slice(&bools(&w["cond"]), &shape(&w["cond"])).unwrap();
    let out = where_(&cond, &f32_array(&w["x"]), &f32_array(&w["y"])).unwrap();
    assert_eq!(out.shape(), shape(&w["out"]));
    assert_close(
        &out.to_vec::<f32>().unwrap(),
        &data(&w["out"]),
        0.0,
        0.0,
        "where",
    );
}

#[test]
fn sort_and_argsort_match_numpy() {
    let fx = fixture();
    let s = f32_array(&fx["sort_x"]);
    for case in fx["sort"].as_array().unwrap() {
        let axis = case["axis"].as_i64().unwrap() as i32;
        let op = case["op"].as_str().unwrap();
        let got: Vec<f32> = if op == "sort" {
            s.sort(axis).unwrap().to_vec::<f32>().unwrap()
        } else {
            let idx = s.argsort(axis).unwrap();
            assert_eq!(idx.dtype(), Dtype::Uint32);
            idx.to_vec::<u32>()
                .unwrap()
                .iter()
                .map(|&i| i as f32)
                .collect()
        };
        assert_close(&got, &data(case), 0.0, 0.0, &format!("{op} axis={axis}"));
    }
}

/// The lanes of a row-major 2-D `data` along `axis` (0 or 1).
fn lanes<T: Copy>(data: &[T], shape: &[i32], axis: usize) -> Vec<Vec<T>> {
    let (rows, cols) = (shape[0] as usize, shape[1] as usize);
    if axis == 1 {
        data.chunks(cols).map(<[T]>::to_vec).collect()
    } else {
        (0..cols)
            .map(|c| (0..rows).map(|r| data[r * cols + c]).collect())
            .collect()
    }
}

/// Checks that `lane` is a partition of `sorted_lane` (the same lane fully sorted) around `kth`.
fn check_partition(lane: &[f32], sorted_lane: &[f64], kth: usize, what: &str) {
    let pivot = sorted_lane[kth] as f32;
    assert_eq!(lane[kth], pivot, "{what}: pivot");
    assert!(lane[..kth].iter().all(|&v| v <= pivot), "{what}: left side");
    assert!(
        lane[kth + 1..].iter().all(|&v| v >= pivot),
        "{what}: right side"
    );
    let mut all = lane.to_vec();
    all.sort_by(f32::total_cmp);
    let want: Vec<f32> = sorted_lane.iter().map(|&v| v as f32).collect();
    assert_eq!(all, want, "{what}: same elements");
}

#[test]
fn partition_and_argpartition_have_the_partition_property() {
    let fx = fixture();
    let sv = &fx["sort_x"];
    let s = f32_array(sv);
    let sh = shape(sv);
    let values: Vec<f32> = data(sv).iter().map(|&v| v as f32).collect();
    for case in fx["partition"].as_array().unwrap() {
        let axis = case["axis"].as_i64().unwrap() as i32;
        let kth = case["kth"].as_i64().unwrap() as i32;
        let ax = axis.rem_euclid(2) as usize;
        let n = sh[ax];
        let k = kth.rem_euclid(n) as usize;
        let sorted = lanes(&data(&fx["sorted"][ax.to_string()]), &sh, ax);
        let what = format!("axis={axis} kth={kth}");

        let p = s.partition(kth, axis).unwrap();
        assert_eq!(p.shape(), sh);
        let p_lanes = lanes(&p.to_vec::<f32>().unwrap(), &sh, ax);
        let idx = s.argpartition(kth, axis).unwrap();
        assert_eq!((idx.shape(), idx.dtype()), (sh.clone(), Dtype::Uint32));
        let idx_lanes = lanes(&idx.to_vec::<u32>().unwrap(), &sh, ax);
        let src_lanes = lanes(&values, &sh, ax);
        for (l, sorted_lane) in sorted.iter().enumerate() {
            check_partition(
                &p_lanes[l],
                sorted_lane,
                k,
                &format!("partition {what} lane {l}"),
            );
            let mut seen = idx_lanes[l].clone();
            seen.sort();
            assert_eq!(
                seen,
                (0..n as u32).collect::<Vec<_>>(),
                "argpartition {what}: permutation"
            );
            let gathered: Vec<f32> = idx_lanes[l]
                .iter()
                .map(|&i| src_lanes[l][i as usize])
                .collect();
            check_partition(
                &gathered,
                sorted_lane,
                k,
                &format!("argpartition {what} lane {l}"),
            );
        }
    }
}

#[test]
fn topk_returns_the_k_largest() {
    let fx = fixture();
    let s = f32_array(&fx["sort_x"]);
    for case in fx["topk"].as_array().unwrap() {
        let axis = case["axis"].as_i64().unwrap() as i32;
        let k = case["k"].as_i64().unwrap() as i32;
        let out = s.topk(k, axis).unwrap();
        let want_shape = shape(case);
        assert_eq!(out.shape(), want_shape, "topk k={k} axis={axis}");
        // Unordered: compare each lane as a sorted set.
        let ax = axis.rem_euclid(2) as usize;
        let got = lanes(&out.to_vec::<f32>().unwrap(), &want_shape, ax);
        let want = lanes(&data(case), &want_shape, ax);
        for (g, w) in got.iter().zip(&want) {
            let mut g = g.clone();
            g.sort_by(f32::total_cmp);
            let w: Vec<f32> = w.iter().map(|&v| v as f32).collect();
            assert_eq!(g, w, "topk k={k} axis={axis}");
        }
    }
}

fn is_invalid(r: mlx_rs::Result<Array>) -> bool {
    matches!(r, Err(Error::InvalidArgument(_)))
}

#[test]
fn bad_axes_and_bounds_are_errors() {
    let x = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3]).unwrap();
    // Out of range, and the same axis twice (0 and -2 of a 2-D array).
    for ax in [vec![2], vec![-3], vec![0, -2], vec![1, 1]] {
        assert!(is_invalid(x.sum(ax.clone(), false)), "sum {ax:?}");
        assert!(is_invalid(x.mean(ax.clone(), true)), "mean {ax:?}");
        assert!(is_invalid(x.max(ax.clone(), false)), "max {ax:?}");
        assert!(is_invalid(x.min(ax.clone(), false)), "min {ax:?}");
        assert!(is_invalid(x.prod(ax.clone(), false)), "prod {ax:?}");
        assert!(is_invalid(x.all(ax.clone(), false)), "all {ax:?}");
        assert!(is_invalid(x.any(ax.clone(), false)), "any {ax:?}");
        assert!(is_invalid(x.var(ax.clone(), false, 0)), "var {ax:?}");
        assert!(
            is_invalid(x.logsumexp(ax.clone(), false)),
            "logsumexp {ax:?}"
        );
        assert!(is_invalid(x.softmax(ax.clone(), false)), "softmax {ax:?}");
    }
    assert!(is_invalid(x.argmax(2, false)));
    assert!(is_invalid(x.argmin(-3, true)));
    assert!(is_invalid(x.cumsum(5, false, true)));
    assert!(is_invalid(x.sort(2)));
    assert!(is_invalid(x.argsort(-3)));
    assert!(is_invalid(x.partition(3, 1)));
    assert!(is_invalid(x.partition(-4, 1)));
    assert!(is_invalid(x.argpartition(2, 0)));
    assert!(is_invalid(x.topk(0, 1)));
    assert!(is_invalid(x.topk(4, 1)));
    assert!(is_invalid(x.topk(1, 2)));
    // A 0-d array has no axis 0, but reduces over `..`.
    let s = Array::scalar(4.0f32);
    assert!(is_invalid(s.sum(0, false)));
    assert_eq!(s.sum(.., false).unwrap().item::<f32>().unwrap(), 4.0);
    // Arg-reductions of an empty array have no answer.
    let empty = Array::zeros(&[0], Dtype::Float32).unwrap();
    assert!(is_invalid(empty.argmax(None, false)));
    assert!(is_invalid(empty.argmin(0, false)));
    // Everything still works afterwards.
    assert_eq!(
        x.sum(-1, false).unwrap().to_vec::<f32>().unwrap(),
        vec![6.0, 15.0]
    );
}
