//! The committed bindings in `bindings/` (used by docs.rs builds, which cannot fetch mlx-c) must
//! be exactly what this build's bindgen generated from mlx-c's and the kernels' headers.

/// (file name, freshly generated, committed)
const FILES: [(&str, &str, &str); 4] = [
    (
        "bindings.rs",
        include_str!(concat!(env!("OUT_DIR"), "/bindings.rs")),
        include_str!("../bindings/bindings.rs"),
    ),
    (
        "native_ops.rs",
        include_str!(concat!(env!("OUT_DIR"), "/native_ops.rs")),
        include_str!("../bindings/native_ops.rs"),
    ),
    (
        "native_qmm.rs",
        include_str!(concat!(env!("OUT_DIR"), "/native_qmm.rs")),
        include_str!("../bindings/native_qmm.rs"),
    ),
    (
        "array_host.rs",
        include_str!(concat!(env!("OUT_DIR"), "/array_host.rs")),
        include_str!("../bindings/array_host.rs"),
    ),
];

#[test]
fn committed_bindings_match_the_generated_ones() {
    for (name, generated, committed) in FILES {
        assert!(
            generated == committed,
            "mlx-sys/bindings/{name} is stale: copy {}/{name} over it",
            env!("OUT_DIR")
        );
    }
}
