//! Tests of the raw bindings: the linked MLX is the pinned one, arithmetic gives hand-computed
//! values, and an invalid operation reaches an installed error handler instead of exiting.

use mlx_sys::*;
use std::ffi::{c_char, c_void, CStr};
use std::sync::Mutex;

/// mlx-c's error handler is process-global; tests that install one take turns.
static HANDLER: Mutex<()> = Mutex::new(());

unsafe extern "C" fn record_error(msg: *const c_char, data: *mut c_void) {
    // SAFETY: `data` is the `Mutex<Vec<String>>` passed at installation.
    let sink = unsafe { &*(data as *const Mutex<Vec<String>>) };
    // SAFETY: mlx-c passes a NUL-terminated message.
    let text = unsafe { CStr::from_ptr(msg) }
        .to_string_lossy()
        .into_owned();
    sink.lock().unwrap().push(text);
}

/// mlx-c keeps the handler's data pointer only when a destructor comes with it.
unsafe extern "C" fn keep_static(_: *mut c_void) {}

fn install_recorder(sink: &'static Mutex<Vec<String>>) {
    // SAFETY: the handler and its data live for the whole process.
    unsafe {
        mlx_set_error_handler(
            Some(record_error),
            sink as *const _ as *mut c_void,
            Some(keep_static),
        );
    }
}

fn array_f32(data: &[f32], shape: &[i32]) -> mlx_array {
    // SAFETY: `data` holds the product of `shape` elements; mlx copies them.
    unsafe {
        mlx_array_new_data(
            data.as_ptr().cast(),
            shape.as_ptr(),
            shape.len() as i32,
            MLX_FLOAT32,
        )
    }
}

#[test]
fn version_is_the_pinned_release() {
    // SAFETY: plain calls with handles we create and free.
    unsafe {
        let mut s = mlx_string_new();
        assert_eq!(mlx_version(&mut s), 0);
        let v = CStr::from_ptr(mlx_string_data(s))
            .to_str()
            .unwrap()
            .to_owned();
        mlx_string_free(s);
        assert_eq!(v, "0.32.2");
        assert_eq!(v, MLX_VERSION);
    }
}

#[test]
fn matmul_matches_hand_computed_values() {
    let _guard = HANDLER.lock().unwrap();
    static ERRORS: Mutex<Vec<String>> = Mutex::new(Vec::new());
    install_recorder(&ERRORS);
    // [[1,2,3],[4,5,6]] @ [[1,0],[0,1],[1,1]] = [[1+3, 2+3], [4+6, 5+6]] = [[4,5],[10,11]]
    let a = array_f32(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
    let b = array_f32(&[1., 0., 0., 1., 1., 1.], &[3, 2]);
    // SAFETY: handles created above, freed below; the data pointer is read while `c` lives.
    unsafe {
        let stream = mlx_default_cpu_stream_new();
        let mut c = mlx_array_new();
        assert_eq!(mlx_matmul(&mut c, a, b, stream), 0);
        assert_eq!(mlx_array_eval(c), 0);
        assert_eq!(mlx_array_ndim(c), 2);
        let shape = std::slice::from_raw_parts(mlx_array_shape(c), 2);
        assert_eq!(shape, &[2, 2]);
        let data = std::slice::from_raw_parts(mlx_array_data_float32(c), 4);
        assert_eq!(data, &[4., 5., 10., 11.]);
        for h in [a, b, c] {
            mlx_array_free(h);
        }
        mlx_stream_free(stream);
    }
    assert!(ERRORS.lock().unwrap().is_empty());
}

#[test]
fn invalid_matmul_reaches_the_error_handler_and_the_process_goes_on() {
    let _guard = HANDLER.lock().unwrap();
    static ERRORS: Mutex<Vec<String>> = Mutex::new(Vec::new());
    install_recorder(&ERRORS);
    let a = array_f32(&[1., 2., 3., 4., 5., 6.], &[2, 3]);
    let b = array_f32(&[1., 2., 3., 4.], &[2, 2]); // inner dimensions 3 and 2 differ
                                                   // SAFETY: handles created above and freed below.
    unsafe {
        let stream = mlx_default_cpu_stream_new();
        let mut c = mlx_array_new();
        assert_ne!(mlx_matmul(&mut c, a, b, stream), 0);
        // The process is still alive and MLX still works.
        let mut ok = mlx_array_new();
        assert_eq!(
            mlx_matmul(&mut ok, a, array_f32(&[1.; 3], &[3, 1]), stream),
            0
        );
        assert_eq!(mlx_array_eval(ok), 0);
        assert_eq!(
            std::slice::from_raw_parts(mlx_array_data_float32(ok), 2),
            &[6., 15.]
        );
        for h in [a, b, c, ok] {
            mlx_array_free(h);
        }
        mlx_stream_free(stream);
    }
    let errors = ERRORS.lock().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("matmul"), "{}", errors[0]);
}
