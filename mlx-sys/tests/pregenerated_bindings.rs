//! The committed bindings in `bindings/` (used by docs.rs builds, which cannot fetch mlx-c) must
//! be exactly what this build's bindgen generated from mlx-c's and the kernels' headers.

/// `(file name, freshly generated, committed)` for one output of the build script.
macro_rules! outputs {
    ($($name:literal),*) => {
        [$((
            $name,
            include_str!(concat!(env!("OUT_DIR"), "/", $name)),
            include_str!(concat!("../bindings/", $name)),
        )),*]
    };
}

#[test]
fn committed_bindings_match_the_generated_ones() {
    let files = outputs!(
        "bindings.rs",
        "native_ops.rs",
        "native_qmm.rs",
        "array_host.rs"
    );
    for (name, generated, committed) in files {
        assert!(
            generated == committed,
            "mlx-sys/bindings/{name} is stale: copy {}/{name} over it",
            env!("OUT_DIR")
        );
    }
}
