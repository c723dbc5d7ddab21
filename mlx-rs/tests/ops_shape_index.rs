//! Shape and indexing ops against NumPy results (scripts/fixtures/ops_shape_index.py) and
//! hand-derived values.

use mlx_rs::ops::{self, Ellipsis, NewAxis, SliceIndex};
use mlx_rs::{s, Array, Dtype, Error};
use serde_json::Value;

fn fixture() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/ops_shape_index.json"
    ))
    .expect("fixture file");
    serde_json::from_str(&text).expect("fixture JSON")
}

fn ints(v: &Value) -> Vec<i32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_i64().expect("int") as i32)
        .collect()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("array")
        .iter()
        .map(|x| x.as_f64().expect("number") as f32)
        .collect()
}

fn shape_of(v: &Value) -> Vec<i32> {
    ints(&v["shape"])
}

fn i32_array(v: &Value) -> Array {
    Array::from_slice(&ints(&v["data"]), &shape_of(v)).unwrap()
}

fn f32_array(v: &Value) -> Array {
    Array::from_slice(&floats(&v["data"]), &shape_of(v)).unwrap()
}

fn assert_i32(a: &Array, expected: &Value, what: &str) {
    assert_eq!(a.shape(), shape_of(expected), "{what}: shape");
    assert_eq!(
        a.to_vec::<i32>().unwrap(),
        ints(&expected["data"]),
        "{what}: values"
    );
}

fn assert_f32(a: &Array, expected: &Value, what: &str) {
    assert_eq!(a.shape(), shape_of(expected), "{what}: shape");
    assert_eq!(
        a.to_vec::<f32>().unwrap(),
        floats(&expected["data"]),
        "{what}: values"
    );
}

fn opt(v: &Value) -> Option<i32> {
    v.as_i64().map(|x| x as i32)
}

fn decode_index(v: &Value) -> Vec<SliceIndex> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| match e["kind"].as_str().unwrap() {
            "newaxis" => NewAxis,
            "ellipsis" => Ellipsis,
            "index" => SliceIndex::Index(e["i"].as_i64().unwrap() as i32),
            "range" => SliceIndex::Range {
                start: opt(&e["start"]),
                stop: opt(&e["stop"]),
                step: opt(&e["step"]).unwrap_or(1),
            },
            k => panic!("unknown kind {k}"),
        })
        .collect()
}

fn case<'a>(f: &'a Value, name: &str) -> &'a Value {
    f["slices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name}"))
}

#[test]
fn slices_match_numpy() {
    let f = fixture();
    let base = i32_array(&f["base"]);
    let cases = f["slices"].as_array().unwrap();
    assert!(cases.len() >= 30);
    for c in cases {
        let name = c["name"].as_str().unwrap();
        let index = decode_index(&c["index"]);
        let got = base.slice(&index);
        if c["expected"].is_null() {
            assert!(
                matches!(got, Err(Error::InvalidArgument(_))),
                "{name}: expected an InvalidArgument error, got {got:?}"
            );
        } else {
            assert_i32(&got.unwrap(), &c["expected"], name);
        }
    }
}

#[test]
fn s_macro_matches_numpy() {
    let f = fixture();
    let a = i32_array(&f["base"]);
    let check = |got: Array, name: &str| assert_i32(&got, &case(&f, name)["expected"], name);
    check(a.slice(s![..]).unwrap(), "full");
    check(a.slice(s![]).unwrap(), "empty_tuple");
    check(a.slice(s![-1]).unwrap(), "int_neg");
    check(a.slice(s![1, 2, 3, 4]).unwrap(), "all_ints");
    check(a.slice(s![.., 1..3]).unwrap(), "range");
    check(a.slice(s![.., .., -3..-1]).unwrap(), "range_neg_bounds");
    check(a.slice(s![-100..100, 2..50]).unwrap(), "range_clamped");
    check(a.slice(s![Ellipsis, ..;2]).unwrap(), "step2");
    check(a.slice(s![.., .., 1..;3]).unwrap(), "step3_offset");
    check(a.slice(s![..;-1]).unwrap(), "reverse");
    check(a.slice(s![Ellipsis, 3..0;-1]).unwrap(), "neg_step_bounds");
    check(
        a.slice(s![Ellipsis, -2..-5;-2]).unwrap(),
        "neg_step_neg_bounds",
    );
    check(a.slice(s![.., 10..-10;-1]).unwrap(), "neg_step_clamped");
    check(
        a.slice(s![NewAxis, 0, NewAxis, .., NewAxis]).unwrap(),
        "newaxis_many",
    );
    check(a.slice(s![1, Ellipsis, -1]).unwrap(), "int_ellipsis_int");
    check(a.slice(s![0, Ellipsis, 1..4;2, 0]).unwrap(), "ellipsis_mid");
    check(a.slice(s![.., 1..3, NewAxis, -1]).unwrap(), "mixed");
    check(
        a.slice(s![-1, ..;-1, 1..;2, NewAxis, -4..,]).unwrap(),
        "mixed2",
    );
    // Inclusive ranges and the `.step` helper give the same as their exclusive spellings.
    check(a.slice(s![.., 1..=2]).unwrap(), "range");
    check(
        a.slice(&[Ellipsis, SliceIndex::from(..).step(-2)]).unwrap(),
        "neg_step2",
    );
}

#[test]
fn slice_of_transposed_and_scalar() {
    // Hand-derived: [[0,1,2],[3,4,5]].T = [[0,3],[1,4],[2,5]]; reversed rows, column 1.
    let a = Array::arange(0.0, 6.0, 1.0, Dtype::Int32)
        .unwrap()
        .reshape(&[2, 3])
        .unwrap();
    let t = a.t().unwrap();
    assert_eq!(
        t.slice(s![..;-1, 1]).unwrap().to_vec::<i32>().unwrap(),
        vec![5, 4, 3]
    );
    // 0-d arrays: only NewAxis / Ellipsis apply.
    let z = Array::scalar(7i32);
    assert_eq!(z.slice(s![Ellipsis]).unwrap().shape(), Vec::<i32>::new());
    assert_eq!(z.slice(s![NewAxis, NewAxis]).unwrap().shape(), vec![1, 1]);
    assert!(matches!(z.slice(s![0]), Err(Error::InvalidArgument(_))));
}

#[test]
fn slice_update_at_matches_numpy() {
    let f = fixture();
    let base = i32_array(&f["base"]);
    for c in f["updates"].as_array().unwrap() {
        let name = c["name"].as_str().unwrap();
        let index = decode_index(&c["index"]);
        let update = i32_array(&c["update"]);
        let got = base.slice_update_at(&update, &index).unwrap();
        assert_i32(&got, &c["expected"], name);
    }
    // An update of the wrong shape is an error, and the process goes on.
    let bad = Array::from_slice(&[1i32, 2], &[2]).unwrap();
    assert!(base.slice_update_at(&bad, s![0]).is_err());
    assert!(base.slice_update_at(&bad, s![5]).is_err());
}

#[test]
fn slice_update_raw_kv_cache() {
    // A cache of 2 heads x 4 positions x 1 dim, written at positions 0..2, then 2..3.
    let mut cache = Array::zeros(&[2, 4, 1], Dtype::Float32).unwrap();
    let step1 = Array::from_slice(&[1.0f32, 2.0, 3.0, 4.0], &[2, 2, 1]).unwrap();
    cache = cache
        .slice_update(&step1, &[0, 0, 0], &[2, 2, 1], &[1, 1, 1])
        .unwrap();
    let step2 = Array::from_slice(&[5.0f32, 6.0], &[2, 1, 1]).unwrap();
    cache = cache
        .slice_update(&step2, &[0, 2, 0], &[2, 3, 1], &[1, 1, 1])
        .unwrap();
    assert_eq!(
        cache.to_vec::<f32>().unwrap(),
        vec![1.0, 2.0, 5.0, 0.0, 3.0, 4.0, 6.0, 0.0]
    );
    // Strided: every other position.
    let z = Array::zeros(&[6], Dtype::Int32).unwrap();
    let u = Array::from_slice(&[1i32, 2, 3], &[3]).unwrap();
    let w = z.slice_update(&u, &[1], &[6], &[2]).unwrap();
    assert_eq!(w.to_vec::<i32>().unwrap(), vec![0, 1, 0, 2, 0, 3]);
    assert!(z.slice_update(&u, &[0], &[6], &[0]).is_err());
    assert!(z.slice_update(&u, &[0], &[2], &[1]).is_err()); // 3 values for 2 slots
}

#[test]
fn shape_ops_match_numpy() {
    let f = fixture();
    let o = &f["ops"];
    let m = f32_array(&o["matrix"]);
    let b = f32_array(&o["batch"]);
    assert_f32(
        &m.pad(&[(1, 0), (2, 3)], -1.5f32).unwrap(),
        &o["pad_const"],
        "pad_const",
    );
    assert_f32(
        &m.pad(&[(1, 2)], 0.0f32).unwrap(),
        &o["pad_uniform"],
        "pad_uniform",
    );
    assert_f32(&m.tril(0).unwrap(), &o["tril_0"], "tril_0");
    assert_f32(&m.tril(-1).unwrap(), &o["tril_m1"], "tril_m1");
    assert_f32(&m.triu(1).unwrap(), &o["triu_1"], "triu_1");
    assert_f32(&b.triu(-1).unwrap(), &o["triu_batch_m1"], "triu_batch_m1");
    assert_f32(
        &b.transpose(&[2, 0, 1]).unwrap(),
        &o["transpose_201"],
        "transpose_201",
    );
    assert_f32(
        &b.transpose_all().unwrap(),
        &o["transpose_all"],
        "transpose_all",
    );
    assert_f32(&b.t().unwrap(), &o["transpose_all"], "t");
    assert_f32(&b.swapaxes(0, 2).unwrap(), &o["swapaxes_0_2"], "swapaxes");
    assert_f32(&b.moveaxis(0, -1).unwrap(), &o["moveaxis_0_m1"], "moveaxis");
    assert_f32(&b.flatten(1, 2).unwrap(), &o["flatten_1_2"], "flatten");
    let m2 = m.slice(s![.., ..2]).unwrap() * 10.0f32;
    assert_f32(
        &ops::concatenate(&[&m, &m2], 1).unwrap(),
        &o["concat_axis1"],
        "concatenate",
    );
    assert_f32(
        &m.concatenate(&[&m2], -1).unwrap(),
        &o["concat_axis1"],
        "concatenate method",
    );
    let m10 = &m * 10.0f32;
    assert_f32(
        &ops::stack(&[&m, &m10], 1).unwrap(),
        &o["stack_axis1"],
        "stack",
    );

    let parts = b.split(3, 1).unwrap();
    let expected = o["split3_axis1"].as_array().unwrap();
    assert_eq!(parts.len(), expected.len());
    for (p, e) in parts.iter().zip(expected) {
        assert_f32(p, e, "split");
    }
    let parts = b.split_at(&[1, 3, 10], 2).unwrap();
    let expected = o["split_at_axis2"].as_array().unwrap();
    assert_eq!(parts.len(), expected.len());
    for (p, e) in parts.iter().zip(expected) {
        assert_f32(p, e, "split_at");
    }
}

#[test]
fn gathers_match_numpy() {
    let f = fixture();
    let o = &f["ops"];
    let b = f32_array(&o["batch"]);
    let idx = i32_array(&o["take_idx"]);
    assert_f32(&b.take(&idx, 2).unwrap(), &o["take_axis1"], "take");
    let idx = i32_array(&o["take_along_idx"]);
    assert_f32(
        &b.take_along_axis(&idx, -1).unwrap(),
        &o["take_along"],
        "take_along_axis",
    );
    let idx = i32_array(&o["put_idx"]);
    let minus_one = Array::scalar(-1.0f32);
    assert_f32(
        &b.put_along_axis(&idx, &minus_one, 2).unwrap(),
        &o["put_along"],
        "put_along",
    );
    let vals = f32_array(&o["put_vals"]);
    assert_f32(
        &b.put_along_axis(&idx, &vals, 2).unwrap(),
        &o["put_along_vals"],
        "put_vals",
    );
    assert!(b.take(&idx, 3).is_err());
    assert!(b.take_along_axis(&idx, -4).is_err());
    assert!(b.put_along_axis(&idx, &vals, 5).is_err());
}

#[test]
fn reshape_and_axes_hand_values() {
    let a = Array::arange(0.0, 12.0, 1.0, Dtype::Int32).unwrap();
    let r = a.reshape(&[3, -1]).unwrap();
    assert_eq!(r.shape(), vec![3, 4]);
    // Row 2 of arange(12).reshape(3, 4) is 8..12.
    assert_eq!(
        r.slice(s![2]).unwrap().to_vec::<i32>().unwrap(),
        vec![8, 9, 10, 11]
    );
    assert_eq!(r.expand_dims(&[1, -1]).unwrap().shape(), vec![3, 1, 4, 1]);
    let e = r.expand_dims(&[0]).unwrap();
    assert_eq!(e.squeeze(..).unwrap().shape(), vec![3, 4]);
    assert_eq!(e.squeeze(0).unwrap().shape(), vec![3, 4]);
    let col = Array::from_slice(&[1i32, 2], &[2, 1]).unwrap();
    assert_eq!(
        col.broadcast_to(&[2, 3]).unwrap().to_vec::<i32>().unwrap(),
        vec![1, 1, 1, 2, 2, 2]
    );
    let t = r.t().unwrap();
    assert_eq!(
        t.contiguous().unwrap().to_vec::<i32>().unwrap()[..4],
        [0, 4, 8, 1]
    );
}

#[test]
fn error_paths() {
    let a = Array::arange(0.0, 12.0, 1.0, Dtype::Int32)
        .unwrap()
        .reshape(&[3, 4])
        .unwrap();
    // Bad reshapes.
    assert!(matches!(a.reshape(&[5, 3]), Err(Error::Shape(_))));
    assert!(matches!(a.reshape(&[-1, 5]), Err(Error::Shape(_))));
    assert!(matches!(a.reshape(&[-1, -1]), Err(Error::Shape(_))));
    assert!(matches!(a.reshape(&[-2, -6]), Err(Error::Shape(_))));
    assert!(matches!(
        Array::zeros(&[0, 4], Dtype::Int32)
            .unwrap()
            .reshape(&[0, -1]),
        Err(Error::Shape(_))
    ));
    // Bad axes.
    assert!(matches!(a.squeeze(2), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        a.expand_dims(&[3]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(
        a.expand_dims(&[0, 0]),
        Err(Error::InvalidArgument(_))
    ));
    assert!(a.swapaxes(0, 2).is_err());
    assert!(a.moveaxis(-3, 0).is_err());
    assert!(a.transpose(&[0, 0]).is_err());
    assert!(a.flatten(1, 0).is_err());
    assert!(a.split(2, 2).is_err());
    assert!(a.split_at(&[1], -3).is_err());
    assert!(ops::concatenate(&[&a, &a], 2).is_err());
    assert!(ops::concatenate(&[], 0).is_err());
    assert!(ops::stack(&[&a, &a.t().unwrap()], 0).is_err());
    // Squeezing a dimension that is not 1.
    assert!(matches!(a.squeeze(0), Err(Error::Shape(_))));
    // Other bad input.
    assert!(a.split(3, 1).is_err()); // 4 is not a multiple of 3
    assert!(a.split(0, 1).is_err());
    assert!(a.pad(&[(1, 1), (1, 1), (1, 1)], 0).is_err());
    assert!(a.pad(&[(-1, 0)], 0).is_err());
    assert!(a.broadcast_to(&[2, 4]).is_err());
    assert!(matches!(a.slice(s![0, 4]), Err(Error::InvalidArgument(_))));
    assert!(matches!(a.slice(s![-4]), Err(Error::InvalidArgument(_))));
    let v = Array::from_slice(&[1i32, 2, 3], &[3]).unwrap();
    assert!(v.tril(0).is_err());
    // The array is still usable afterwards.
    assert_eq!(a.slice(s![-1, -1]).unwrap().item::<i32>().unwrap(), 11);
}
