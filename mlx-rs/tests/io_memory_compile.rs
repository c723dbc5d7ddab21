//! safetensors / GGUF files written by independent Python packages (scripts/fixtures/io.py),
//! evaluation, the memory API, and compilation (results, errors, leaks).

use mlx_rs::compile::compile;
use mlx_rs::io::gguf::{load_gguf, save_gguf, Gguf, GgufValue};
use mlx_rs::io::safetensors::{load_safetensors, save_safetensors};
use mlx_rs::{async_eval, eval, memory, quant, Array, Dtype, Error};
use serde_json::Value;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

/// The leak tests measure process-wide memory: they run alone (write lock), the other tests
/// of this file run in parallel with each other (read lock).
static MEMORY: RwLock<()> = RwLock::new(());

fn shared() -> RwLockReadGuard<'static, ()> {
    MEMORY.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> RwLockWriteGuard<'static, ()> {
    MEMORY.write().unwrap_or_else(|e| e.into_inner())
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn expected() -> Value {
    let text = std::fs::read_to_string(fixture("io.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn f64s(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

/// Float expectations, as f32 (every expected value is an f32, f16 or bf16 value; serde_json's
/// default parser may be one f64 ulp off, which rounding to f32 removes).
fn f32s(v: &Value) -> Vec<f32> {
    f64s(v).iter().map(|&x| x as f32).collect()
}

fn shape(v: &Value) -> Vec<i32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap() as i32)
        .collect()
}

/// A unique temporary path (tests run in parallel).
fn temp(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("mlx_rs_iotest_{}_{n}_{name}", std::process::id()))
}

fn write_temp(name: &str, bytes: &[u8]) -> PathBuf {
    let p = temp(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

/// Deterministic pseudo-random bytes (xorshift), no extra dependency.
fn noise(n: usize, mut seed: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed >> 24) as u8
        })
        .collect()
}

// ------------------------------------------------------------------------------ safetensors

#[test]
fn safetensors_fixture_every_value() {
    let _g = shared();
    let exp = expected();
    let (arrays, metadata) = load_safetensors(fixture("io_tiny.safetensors")).unwrap();
    assert_eq!(arrays.len(), 5);
    let want_meta: HashMap<String, String> =
        serde_json::from_value(exp["safetensors"]["metadata"].clone()).unwrap();
    assert_eq!(metadata, want_meta);
    for (name, t) in exp["safetensors"]["tensors"].as_object().unwrap() {
        let a = &arrays[name];
        assert_eq!(a.shape(), shape(&t["shape"]), "{name}");
        let want = f64s(&t["values"]);
        let want32 = f32s(&t["values"]);
        let got: Vec<f64> = match t["dtype"].as_str().unwrap() {
            "float32" => {
                assert_eq!(a.dtype(), Dtype::Float32);
                assert_eq!(a.to_vec::<f32>().unwrap(), want32, "{name}");
                continue;
            }
            "float16" => {
                assert_eq!(a.dtype(), Dtype::Float16);
                let got: Vec<f32> = a
                    .to_vec::<half::f16>()
                    .unwrap()
                    .iter()
                    .map(|x| x.to_f32())
                    .collect();
                assert_eq!(got, want32, "{name}");
                continue;
            }
            "bfloat16" => {
                assert_eq!(a.dtype(), Dtype::Bfloat16);
                let got: Vec<f32> = a
                    .to_vec::<half::bf16>()
                    .unwrap()
                    .iter()
                    .map(|x| x.to_f32())
                    .collect();
                assert_eq!(got, want32, "{name}");
                continue;
            }
            "int32" => {
                assert_eq!(a.dtype(), Dtype::Int32);
                a.to_vec::<i32>()
                    .unwrap()
                    .iter()
                    .map(|&x| x as f64)
                    .collect()
            }
            "uint8" => {
                assert_eq!(a.dtype(), Dtype::Uint8);
                a.to_vec::<u8>()
                    .unwrap()
                    .iter()
                    .map(|&x| x as f64)
                    .collect()
            }
            other => panic!("unexpected dtype {other}"),
        };
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn safetensors_round_trip() {
    let _g = shared();
    let path = temp("rt.safetensors");
    let a = Array::from_slice(&[1.5f32, -2.0, 0.25, 8.0, 9.0, -0.5], &[3, 2]).unwrap();
    let b = Array::from_slice(&[true, false, true], &[3]).unwrap();
    let c = Array::from_slice(&[-5i64, 1 << 40], &[2]).unwrap();
    let h = Array::from_slice(&[half::bf16::from_f32(-0.75)], &[1, 1]).unwrap();
    save_safetensors(
        &path,
        [("a", &a), ("b", &b), ("c", &c), ("h", &h)],
        [("k", "v"), ("empty", "")],
    )
    .unwrap();
    let (arrays, metadata) = load_safetensors(&path).unwrap();
    assert_eq!(arrays["a"].shape(), vec![3, 2]);
    assert_eq!(
        arrays["a"].to_vec::<f32>().unwrap(),
        vec![1.5, -2.0, 0.25, 8.0, 9.0, -0.5]
    );
    assert_eq!(
        arrays["b"].to_vec::<bool>().unwrap(),
        vec![true, false, true]
    );
    assert_eq!(arrays["c"].to_vec::<i64>().unwrap(), vec![-5, 1 << 40]);
    assert_eq!(
        arrays["h"].to_vec::<half::bf16>().unwrap()[0].to_f32(),
        -0.75
    );
    assert_eq!(metadata.len(), 2);
    assert_eq!(
        (metadata["k"].as_str(), metadata["empty"].as_str()),
        ("v", "")
    );
    std::fs::remove_file(&path).unwrap();
    // MLX appends the extension when it is missing (as documented).
    let bare = temp("bare");
    save_safetensors(&bare, [("a", &a)], [("k", "v")]).unwrap();
    let with_ext = PathBuf::from(format!("{}.safetensors", bare.display()));
    assert!(!bare.exists() && with_ext.exists());
    std::fs::remove_file(&with_ext).unwrap();
}

#[test]
fn safetensors_errors() {
    let _g = shared();
    // Missing file: an I/O error naming the path.
    match load_safetensors("/definitely/not/here.safetensors") {
        Err(Error::Io { path, .. }) => {
            assert_eq!(path, PathBuf::from("/definitely/not/here.safetensors"))
        }
        other => panic!("expected Error::Io, got {other:?}"),
    }
    // A directory is not a file.
    assert!(matches!(
        load_safetensors(std::env::temp_dir()),
        Err(Error::Io { .. })
    ));
    let good = std::fs::read(fixture("io_tiny.safetensors")).unwrap();
    let header = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    let mut bad_files = vec![
        ("empty", Vec::new()),
        ("short", good[..5].to_vec()),
        ("half header", good[..8 + header / 2].to_vec()),
        ("no data", good[..8 + header].to_vec()),
        ("data cut", good[..good.len() - 3].to_vec()),
        ("random", noise(512, 0x9e37_79b9_7f4a_7c15)),
    ];
    // The header claims more bytes than the file has.
    let mut claims = good.clone();
    claims[..8].copy_from_slice(&(good.len() as u64 * 4).to_le_bytes());
    bad_files.push(("claims more", claims));
    // A header that is not JSON.
    let mut not_json = good.clone();
    not_json[8] = b'#';
    bad_files.push(("not json", not_json));
    // Offsets pointing past the end of the file (with sizes that still add up).
    let text = std::str::from_utf8(&good[8..8 + header]).unwrap();
    let shifted = text.replace("\"data_offsets\":[0,24]", "\"data_offsets\":[4000,4024]");
    assert_ne!(shifted, text);
    let mut far = (shifted.len() as u64).to_le_bytes().to_vec();
    far.extend_from_slice(shifted.as_bytes());
    far.extend_from_slice(&good[8 + header..]);
    bad_files.push(("offsets past the end", far));
    for (what, bytes) in bad_files {
        let p = write_temp("bad.safetensors", &bytes);
        let r = load_safetensors(&p);
        assert!(r.is_err(), "{what}: expected an error, got {r:?}");
        std::fs::remove_file(&p).unwrap();
    }
    // Saving into a missing directory fails; so does a tensor name with a NUL.
    let a = Array::scalar(1.0f32);
    assert!(matches!(
        save_safetensors("/no/such/dir/x.safetensors", [("a", &a)], [("k", "v")]),
        Err(Error::Io { .. })
    ));
    let p = temp("nul.safetensors");
    assert!(matches!(
        save_safetensors(&p, [("a\0b", &a)], [("k", "v")]),
        Err(Error::InvalidArgument(_))
    ));
    // The process goes on: MLX still works.
    assert_eq!((a + 1.0f32).item::<f32>().unwrap(), 2.0);
}

// ------------------------------------------------------------------------------ gguf

#[test]
fn gguf_fixture_values_and_quantized_blocks() {
    let _g = shared();
    let exp = &expected()["gguf"];
    let g = load_gguf(fixture("io_tiny.gguf")).unwrap();

    let f32a = &g.arrays["f32.weight"];
    assert_eq!(
        (f32a.dtype(), f32a.shape()),
        (Dtype::Float32, shape(&exp["f32"]["shape"]))
    );
    assert_eq!(f32a.to_vec::<f32>().unwrap(), f32s(&exp["f32"]["values"]));

    let f16a = &g.arrays["f16.weight"];
    assert_eq!(
        (f16a.dtype(), f16a.shape()),
        (Dtype::Float16, shape(&exp["f16"]["shape"]))
    );
    let got: Vec<f32> = f16a
        .to_vec::<half::f16>()
        .unwrap()
        .iter()
        .map(|x| x.to_f32())
        .collect();
    assert_eq!(got, f32s(&exp["f16"]["values"]));

    for (name, bits) in [("q8", 8), ("q4", 4)] {
        let want_shape = shape(&exp[name]["shape"]);
        let (rows, cols) = (want_shape[0], want_shape[1]);
        let w = &g.arrays[&format!("{name}.weight")];
        let scales = &g.arrays[&format!("{name}.scales")];
        let biases = &g.arrays[&format!("{name}.biases")];
        assert_eq!(
            (w.dtype(), w.shape()),
            (Dtype::Uint32, vec![rows, cols * bits / 32])
        );
        assert_eq!(
            (scales.dtype(), scales.shape()),
            (Dtype::Float16, vec![rows, cols / 32])
        );
        assert_eq!(biases.shape(), scales.shape());
        // In f32, scale * q + bias is exact for these block formats.
        let s32 = scales.astype(Dtype::Float32).unwrap();
        let b32 = biases.astype(Dtype::Float32).unwrap();
        let deq = quant::dequantize(w, &s32, &b32, 32, bits).unwrap();
        assert_eq!(deq.shape(), want_shape);
        assert_eq!(
            deq.to_vec::<f32>().unwrap(),
            f32s(&exp[name]["values"]),
            "{name}"
        );
    }
    assert_eq!(g.arrays.len(), 2 + 2 * 3);

    let md = &g.metadata;
    assert!(matches!(&md["general.architecture"], GgufValue::String(s) if s == "tiny"));
    assert!(matches!(&md["tiny.name"], GgufValue::String(s) if s == "io fixture"));
    match &md["tiny.words"] {
        GgufValue::Strings(v) => assert_eq!(v, &["alpha", "beta", "gamma"]),
        other => panic!("{other:?}"),
    }
    match &md["tiny.count"] {
        GgufValue::Array(a) => {
            assert_eq!((a.ndim(), a.dtype()), (0, Dtype::Uint32));
            assert_eq!(a.item::<u32>().unwrap(), 7);
        }
        other => panic!("{other:?}"),
    }
    match &md["tiny.eps"] {
        GgufValue::Array(a) => assert_eq!(a.item::<f32>().unwrap(), 0.25),
        other => panic!("{other:?}"),
    }
    match &md["tiny.ints"] {
        GgufValue::Array(a) => {
            assert_eq!(a.shape(), vec![5]);
            let v = a.astype(Dtype::Int64).unwrap().to_vec::<i64>().unwrap();
            assert_eq!(v, vec![3, 1, 4, 1, 5]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn gguf_round_trip() {
    let _g = shared();
    let path = temp("rt.gguf");
    let mut g = Gguf::default();
    let w = Array::from_slice(&[0.5f32, -1.0, 2.0, 4.0, 8.0, 16.0], &[2, 3]).unwrap();
    let h = Array::from_slice(
        &[half::f16::from_f32(-2.5), half::f16::from_f32(0.125)],
        &[2],
    )
    .unwrap();
    g.arrays.insert("w".into(), w);
    g.arrays.insert("h".into(), h);
    g.metadata.insert(
        "v".into(),
        GgufValue::Array(Array::from_slice(&[1.5f32, 2.5], &[2]).unwrap()),
    );
    g.metadata
        .insert("s".into(), GgufValue::String("hello".into()));
    save_gguf(&path, &g).unwrap();
    let back = load_gguf(&path).unwrap();
    assert_eq!(back.arrays["w"].shape(), vec![2, 3]);
    assert_eq!(
        back.arrays["w"].to_vec::<f32>().unwrap(),
        vec![0.5, -1.0, 2.0, 4.0, 8.0, 16.0]
    );
    let hv = back.arrays["h"].to_vec::<half::f16>().unwrap();
    assert_eq!((hv[0].to_f32(), hv[1].to_f32()), (-2.5, 0.125));
    assert!(
        matches!(&back.metadata["v"], GgufValue::Array(a) if a.to_vec::<f32>().unwrap() == [1.5, 2.5])
    );
    assert!(matches!(&back.metadata["s"], GgufValue::String(s) if s == "hello"));
    // Metadata arrays must be at most 1-D.
    g.metadata.insert(
        "m".into(),
        GgufValue::Array(Array::zeros(&[2, 2], Dtype::Float32).unwrap()),
    );
    assert!(matches!(
        save_gguf(temp("m.gguf"), &g),
        Err(Error::Shape(_))
    ));
    // MLX appends the extension when it is missing (as documented).
    g.metadata.remove("m");
    let bare = temp("bare");
    save_gguf(&bare, &g).unwrap();
    let with_ext = PathBuf::from(format!("{}.gguf", bare.display()));
    assert!(!bare.exists() && with_ext.exists());
    std::fs::remove_file(&with_ext).unwrap();
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn gguf_errors() {
    let _g = shared();
    assert!(matches!(
        load_gguf("/no/such/file.gguf"),
        Err(Error::Io { .. })
    ));
    let good = std::fs::read(fixture("io_tiny.gguf")).unwrap();
    let mut bad_files: Vec<(String, Vec<u8>)> = vec![
        ("random".into(), noise(768, 12345)),
        (
            "random after magic".into(),
            [b"GGUF".as_slice(), &noise(400, 99)].concat(),
        ),
    ];
    // Cut the file at many points: inside the header, the metadata, the tensor table, the data.
    // (The last 10 bytes are padding: cut 32 to reach into the last tensor's data.)
    for cut in [0, 3, 10, 23, 40, 100, 200, 300, 400, 500, good.len() - 32] {
        bad_files.push((format!("cut at {cut}"), good[..cut].to_vec()));
    }
    let mut magic = good.clone();
    magic[0] = b'X';
    bad_files.push(("bad magic".into(), magic));
    let mut version = good.clone();
    version[4..8].copy_from_slice(&77u32.to_le_bytes());
    bad_files.push(("bad version".into(), version));
    let mut many = good.clone();
    many[8..16].copy_from_slice(&u64::MAX.to_le_bytes()); // tensor count
    bad_files.push(("huge tensor count".into(), many));
    for (what, bytes) in bad_files {
        let p = write_temp("bad.gguf", &bytes);
        let r = load_gguf(&p);
        assert!(r.is_err(), "{what}: expected an error, got {r:?}");
        std::fs::remove_file(&p).unwrap();
    }
    assert!(matches!(
        save_gguf("/no/such/dir/x.gguf", &Gguf::default()),
        Err(Error::Io { .. })
    ));
}

// ------------------------------------------------------------------------------ eval

#[test]
fn eval_and_async_eval() {
    let _g = shared();
    let x = Array::from_slice(&[1.0f32, 2.0, 3.0], &[3]).unwrap();
    let a = &x * &x;
    let b = a.sum(.., false).unwrap();
    eval(&[&a, &b]).unwrap();
    assert_eq!(a.to_vec::<f32>().unwrap(), vec![1.0, 4.0, 9.0]);
    assert_eq!(b.item::<f32>().unwrap(), 14.0);
    let c = &b * 2.0f32;
    async_eval(&[&c]).unwrap();
    assert_eq!(c.item::<f32>().unwrap(), 28.0);
    eval(&[]).unwrap();
    // A failing graph: evaluation reports MLX's error (the graph itself is built lazily).
    let bad = Array::from_slice(&[1.0f32, 2.0], &[2]).unwrap();
    assert!(bad.reshape(&[3]).is_err());
}

// ------------------------------------------------------------------------------ memory

#[test]
fn memory_api() {
    let _g = exclusive();
    memory::clear_cache().unwrap();
    assert_eq!(memory::cache_memory().unwrap(), 0);
    let base = memory::active_memory().unwrap();
    memory::reset_peak_memory().unwrap();
    let a = Array::zeros(&[256, 1024], Dtype::Float32).unwrap();
    a.eval().unwrap();
    let one_mib = 256 * 1024 * 4;
    assert!(memory::active_memory().unwrap() >= base + one_mib);
    assert!(memory::peak_memory().unwrap() >= base + one_mib);
    drop(a);
    assert!(memory::active_memory().unwrap() < base + one_mib);
    // The freed buffer is cached (default cache limit), until the cache is cleared.
    assert!(memory::cache_memory().unwrap() >= one_mib);
    memory::clear_cache().unwrap();
    assert_eq!(memory::cache_memory().unwrap(), 0);
    assert!(memory::peak_memory().unwrap() >= base + one_mib);
    // The setters return the previous value.
    let prev = memory::set_cache_limit(12345).unwrap();
    assert_eq!(memory::set_cache_limit(prev).unwrap(), 12345);
    let prev = memory::set_memory_limit(1 << 33).unwrap();
    assert_eq!(memory::memory_limit().unwrap(), 1 << 33);
    assert_eq!(memory::set_memory_limit(prev).unwrap(), 1 << 33);
    let prev = memory::set_wired_limit(0).unwrap();
    memory::set_wired_limit(prev).unwrap();
}

const LEAK_TOLERANCE: usize = 64 * 1024;

fn assert_flat(before: usize, what: &str) {
    memory::clear_cache().unwrap();
    let after = memory::active_memory().unwrap();
    assert!(
        after <= before + LEAK_TOLERANCE,
        "{what}: active memory grew from {before} to {after}"
    );
}

#[test]
fn no_leak_creating_and_evaluating_arrays() {
    let _g = exclusive();
    // Warm up (first-use allocations of MLX itself), then measure.
    for i in 0..100 {
        (Array::scalar(i as f32) + 1.0f32).eval().unwrap();
    }
    memory::clear_cache().unwrap();
    let before = memory::active_memory().unwrap();
    let mut check = 0.0f64;
    for i in 0..100_000 {
        let a = Array::from_slice(&[i as f32, 1.0, 2.0, 3.0], &[4]).unwrap();
        let b = (&a * 2.0f32).sum(.., false).unwrap();
        b.eval().unwrap();
        if i % 10_000 == 0 {
            check += b.item::<f32>().unwrap() as f64;
        }
    }
    // sum(2 * [i, 1, 2, 3]) = 2i + 12 for i = 0, 10000, ..., 90000.
    assert_eq!(
        check,
        (0..10)
            .map(|k| 2.0 * (k * 10_000) as f64 + 12.0)
            .sum::<f64>()
    );
    assert_flat(before, "100k arrays");
}

#[test]
fn no_leak_compiled_calls_and_closures() {
    let _g = exclusive();
    let token = Arc::new(());
    let captured = Array::from_slice(&[10.0f32, 20.0], &[2]).unwrap();
    let t = token.clone();
    let f = compile(
        move |x: &[Array]| {
            let _keep = &t;
            Ok(vec![&x[0] * 3.0f32 + &captured])
        },
        false,
    )
    .unwrap();
    let x = Array::from_slice(&[1.0f32, 2.0], &[2]).unwrap();
    assert_eq!(
        f.call(&[&x]).unwrap()[0].to_vec::<f32>().unwrap(),
        vec![13.0, 26.0]
    );
    memory::clear_cache().unwrap();
    let before = memory::active_memory().unwrap();
    for i in 0..1000 {
        let y = f.call(&[&x]).unwrap();
        y[0].eval().unwrap();
        if i == 999 {
            assert_eq!(y[0].to_vec::<f32>().unwrap(), vec![13.0, 26.0]);
        }
    }
    assert_flat(before, "1000 compiled calls");
    assert_eq!(Arc::strong_count(&token), 2);
    drop(f);
    assert_eq!(Arc::strong_count(&token), 1, "the closure was not dropped");

    // Creating and dropping compiled functions releases their closures.
    let before = memory::active_memory().unwrap();
    for i in 0..1000 {
        let t = token.clone();
        let g = compile(
            move |x: &[Array]| {
                let _keep = &t;
                Ok(vec![&x[0] + 1.0f32])
            },
            i % 2 == 0,
        )
        .unwrap();
        if i % 100 == 0 {
            assert_eq!(
                g.call(&[&x]).unwrap()[0].to_vec::<f32>().unwrap(),
                vec![2.0, 3.0]
            );
        }
    }
    assert_eq!(Arc::strong_count(&token), 1, "compiled closures leaked");
    assert_flat(before, "1000 compiled functions");
}

// ------------------------------------------------------------------------------ compile

/// The tanh approximation of GELU, written out element-wise.
fn gelu_chain(x: &Array) -> mlx_rs::Result<Array> {
    let inner = (x + &(x * x * x * 0.044715f32)) * (2.0f32 / std::f32::consts::PI).sqrt();
    Ok(x * 0.5f32 * (inner.tanh()? + 1.0f32))
}

fn gelu_ref(x: f32) -> f32 {
    let x = x as f64;
    (0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh()))
        as f32
}

#[test]
fn compiled_matches_uncompiled() {
    let _g = shared();
    let data: Vec<f32> = (0..64).map(|i| (i as f32 - 32.0) / 8.0).collect();
    let x = Array::from_slice(&data, &[8, 8]).unwrap();
    let f = compile(|xs: &[Array]| Ok(vec![gelu_chain(&xs[0])?]), false).unwrap();
    let compiled = f.call(&[&x]).unwrap()[0].to_vec::<f32>().unwrap();
    let plain = gelu_chain(&x).unwrap().to_vec::<f32>().unwrap();
    for ((c, p), &v) in compiled.iter().zip(&plain).zip(&data) {
        assert!((c - p).abs() <= 1e-6, "{c} vs {p}");
        assert!((c - gelu_ref(v)).abs() <= 1e-5, "{c} vs {}", gelu_ref(v));
    }
    // Two inputs, two outputs.
    let g = compile(
        |xs: &[Array]| Ok(vec![&xs[0] + &xs[1], (&xs[0] * &xs[1]).sum(.., false)?]),
        false,
    )
    .unwrap();
    let a = Array::from_slice(&[1.0f32, 2.0], &[2]).unwrap();
    let b = Array::from_slice(&[3.0f32, 5.0], &[2]).unwrap();
    let out = g.call(&[&a, &b]).unwrap();
    assert_eq!(out.len(), 2);
    assert_eq!(out[0].to_vec::<f32>().unwrap(), vec![4.0, 7.0]);
    assert_eq!(out[1].item::<f32>().unwrap(), 13.0);
}

#[test]
fn shapeless_compile_handles_new_shapes() {
    let _g = shared();
    let traces = Arc::new(AtomicUsize::new(0));
    let t = traces.clone();
    let f = compile(
        move |xs: &[Array]| {
            t.fetch_add(1, Ordering::SeqCst);
            Ok(vec![gelu_chain(&xs[0])?])
        },
        true,
    )
    .unwrap();
    let a = Array::from_slice(&[-1.0f32, 0.5, 2.0], &[3]).unwrap();
    let b = Array::from_slice(&[0.25f32, -3.0, 1.0, 4.0, -0.5, 0.0], &[6]).unwrap();
    let ya = f.call(&[&a]).unwrap()[0].to_vec::<f32>().unwrap();
    let yb = f.call(&[&b]).unwrap()[0].to_vec::<f32>().unwrap();
    assert_eq!(f.call(&[&b]).unwrap()[0].shape(), vec![6]);
    for (y, v) in ya.iter().zip([-1.0f32, 0.5, 2.0]) {
        assert!((y - gelu_ref(v)).abs() <= 1e-5);
    }
    for (y, v) in yb.iter().zip([0.25f32, -3.0, 1.0, 4.0, -0.5, 0.0]) {
        assert!((y - gelu_ref(v)).abs() <= 1e-5);
    }
    assert_eq!(
        traces.load(Ordering::SeqCst),
        1,
        "shapeless should trace once"
    );
    // A different number of dimensions traces again, and gives the right shape.
    let m = Array::from_slice(&[0.25f32, -3.0, 1.0, 4.0, -0.5, 0.0], &[2, 3]).unwrap();
    let ym = f.call(&[&m]).unwrap();
    assert_eq!(ym[0].shape(), vec![2, 3]);
    assert_eq!(ym[0].to_vec::<f32>().unwrap(), yb);

    // Not shapeless: a new shape traces again.
    let traces = Arc::new(AtomicUsize::new(0));
    let t = traces.clone();
    let g = compile(
        move |xs: &[Array]| {
            t.fetch_add(1, Ordering::SeqCst);
            Ok(vec![&xs[0] * 2.0f32])
        },
        false,
    )
    .unwrap();
    g.call(&[&a]).unwrap();
    g.call(&[&a]).unwrap();
    assert_eq!(g.call(&[&b]).unwrap()[0].to_vec::<f32>().unwrap()[5], 0.0);
    assert_eq!(traces.load(Ordering::SeqCst), 2);
}

#[test]
fn compile_errors_and_panics_come_back() {
    let _g = shared();
    // The closure's own error, unchanged, and the function still works afterwards.
    let f = compile(
        |xs: &[Array]| {
            if xs[0].shape() == [3] {
                return Err(Error::InvalidArgument("no length 3".into()));
            }
            Ok(vec![&xs[0] + 1.0f32])
        },
        false,
    )
    .unwrap();
    let three = Array::from_slice(&[1.0f32, 2.0, 3.0], &[3]).unwrap();
    let two = Array::from_slice(&[1.0f32, 2.0], &[2]).unwrap();
    for _ in 0..2 {
        match f.call(&[&three]) {
            Err(Error::InvalidArgument(m)) => assert_eq!(m, "no length 3"),
            other => panic!("expected the closure's error, got {other:?}"),
        }
    }
    assert_eq!(
        f.call(&[&two]).unwrap()[0].to_vec::<f32>().unwrap(),
        vec![2.0, 3.0]
    );

    // An MLX error inside the closure (matmul of mismatched shapes).
    let g = compile(|xs: &[Array]| Ok(vec![xs[0].matmul(&xs[1])?]), false).unwrap();
    assert!(matches!(g.call(&[&three, &two]), Err(Error::Mlx { .. })));
    let m = Array::from_slice(&[1.0f32, 0.0, 0.0, 1.0], &[2, 2]).unwrap();
    assert_eq!(
        g.call(&[&two, &m]).unwrap()[0].to_vec::<f32>().unwrap(),
        vec![1.0, 2.0]
    );

    // Indexing past the inputs panics in the closure: caught, returned as an error.
    let h = compile(|xs: &[Array]| Ok(vec![xs[5].clone()]), false).unwrap();
    match h.call(&[&two]) {
        Err(Error::Mlx { message, .. }) => assert!(message.contains("panicked"), "{message}"),
        other => panic!("expected a panic error, got {other:?}"),
    }
    // Reading values while tracing is an error, not a crash.
    let r = compile(
        |xs: &[Array]| Ok(vec![Array::scalar(xs[0].item::<f32>()?)]),
        false,
    )
    .unwrap();
    assert!(r.call(&[&Array::scalar(1.0f32)]).is_err());
    // MLX is still usable.
    assert_eq!((two + 1.0f32).to_vec::<f32>().unwrap(), vec![2.0, 3.0]);
}
