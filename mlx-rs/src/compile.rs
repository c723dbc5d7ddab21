//! Graph compilation: [`compile`] turns a Rust function of arrays into a [`CompiledFn`] that MLX
//! traces once per input signature and then replays as an optimised (fused) graph.
//!
//! # Purity
//!
//! A compiled function must be a pure function of its inputs. MLX runs the Rust closure only
//! while *tracing* (on the first call, and again when the input shapes or dtypes change, unless
//! `shapeless`); later calls replay the recorded graph without running the closure. So:
//! - arrays captured by the closure are baked in as constants at trace time;
//! - side effects (printing, counters, reading values with `item`/`to_vec`) happen only when
//!   tracing, and reading values of the traced inputs is an error;
//! - control flow may depend on shapes and dtypes, never on values.
//!
//! ```
//! use mlx_rs::{compile::compile, Array};
//! let f = compile(|x: &[Array]| Ok(vec![&x[0] * &x[1] + 1.0f32]), false)?;
//! let a = Array::from_slice(&[1.0f32, 2.0], &[2])?;
//! let b = Array::from_slice(&[3.0f32, 4.0], &[2])?;
//! assert_eq!(f.call(&[&a, &b])?[0].to_vec::<f32>()?, vec![4.0, 9.0]);
//! # Ok::<(), mlx_rs::Error>(())
//! ```

use crate::error::{check, init, Error, Result};
use crate::vector::VectorArray;
use crate::Array;
use mlx_sys as sys;
use std::any::Any;
use std::cell::{Cell, RefCell};
use std::ffi::{c_int, c_void};
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe, Location};

/// The boxed Rust function behind an mlx closure.
type Payload = Box<dyn Fn(&[Array]) -> Result<Vec<Array>>>;

/// Why the last Rust closure called by MLX on this thread failed.
enum Failure {
    Error(Error),
    Panic(String),
}

thread_local! {
    static FAILURE: RefCell<Option<Failure>> = const { RefCell::new(None) };
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "(a panic payload that is not a string)".to_string()
    }
}

/// Called by mlx-c (on the thread that applies the closure) with the inputs; writes the outputs.
unsafe extern "C" fn trampoline(
    res: *mut sys::mlx_vector_array,
    input: sys::mlx_vector_array,
    payload: *mut c_void,
) -> c_int {
    let outcome = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `payload` is the `Box<Payload>` given to `mlx_closure_new_func_payload`; it
        // lives until the destructor runs, which cannot happen during a call.
        let f = unsafe { &*(payload as *const Payload) };
        // SAFETY: `input` is a valid vector owned by mlx-c for the call; `get` copies handles.
        let n = unsafe { sys::mlx_vector_array_size(input) };
        let inputs = (0..n)
            .map(|i| {
                // SAFETY: `i < n`; `out` is a fresh handle owned by the new `Array`.
                Array::try_op(|out| unsafe { sys::mlx_vector_array_get(out, input, i) })
            })
            .collect::<Result<Vec<_>>>()?;
        f(&inputs)
    }));
    let failure = match outcome {
        Ok(Ok(outputs)) => {
            let raws: Vec<sys::mlx_array> = outputs.iter().map(|a| a.as_raw()).collect();
            // SAFETY: `res` points to a valid vector owned by mlx-c; `set_data` copies the
            // handles, so our `outputs` may be dropped afterwards.
            return unsafe { sys::mlx_vector_array_set_data(res, raws.as_ptr(), raws.len()) };
        }
        Ok(Err(e)) => Failure::Error(e),
        Err(panic) => Failure::Panic(panic_message(panic.as_ref())),
    };
    FAILURE.with(|slot| *slot.borrow_mut() = Some(failure));
    1
}

/// Frees the payload when MLX drops its last reference to the closure.
unsafe extern "C" fn drop_payload(payload: *mut c_void) {
    // A panic in the closure's own destructor must not unwind into C++.
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `payload` came from `Box::into_raw(Box<Payload>)`, and mlx-c calls the
        // destructor exactly once.
        drop(unsafe { Box::from_raw(payload as *mut Payload) });
    }));
}

/// An owned `mlx_closure`.
struct Closure(sys::mlx_closure);

impl Drop for Closure {
    fn drop(&mut self) {
        // SAFETY: owned handle, not used afterwards.
        unsafe { sys::mlx_closure_free(self.0) };
    }
}

/// A function compiled by [`compile`]. Dropping it releases the compiled graphs and (once MLX
/// holds no more references) the Rust closure and everything it captured.
///
/// It is not `Send`: the closure it wraps need not be.
pub struct CompiledFn {
    /// The uncompiled closure around the Rust function.
    base: Closure,
    /// `mlx_compile(base)`; replaced after a failed call (see [`CompiledFn::call`]).
    compiled: RefCell<Closure>,
    shapeless: bool,
    depth: Cell<usize>,
}

impl fmt::Debug for CompiledFn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompiledFn")
            .field("shapeless", &self.shapeless)
            .finish_non_exhaustive()
    }
}

#[track_caller]
fn compile_closure(base: &Closure, shapeless: bool) -> Result<Closure> {
    // SAFETY: fresh handle, owned by the returned `Closure` on every path.
    let mut out = Closure(unsafe { sys::mlx_closure_new() });
    // SAFETY: valid closure handles.
    check(unsafe { sys::mlx_compile(&mut out.0, base.0, shapeless) })?;
    Ok(out)
}

/// Compiles `f` (see the [module docs](self) for the purity rules).
///
/// With `shapeless == false`, MLX re-traces `f` for each new combination of input shapes and
/// dtypes; with `shapeless == true` it traces once per combination of dtypes and numbers of
/// dimensions and reuses the graph for other sizes (only valid when `f`'s graph does not depend
/// on the sizes).
///
/// Errors returned by `f` while tracing come back unchanged from [`CompiledFn::call`]; a panic
/// in `f` is caught and returned as [`Error::Mlx`] naming the panic message.
///
/// ```
/// use mlx_rs::{compile::compile, Array};
/// // x * sigmoid(1.702 x), a GELU approximation
/// let gelu = compile(|x: &[Array]| Ok(vec![&x[0] * (&x[0] * 1.702f32).sigmoid()?]), true)?;
/// let x = Array::from_slice(&[0.0f32, 1.0], &[2])?;
/// let y = gelu.call(&[&x])?[0].to_vec::<f32>()?;
/// assert_eq!(y[0], 0.0);
/// assert!((y[1] - 1.0 / (1.0 + (-1.702f32).exp())).abs() < 1e-6);
/// # Ok::<(), mlx_rs::Error>(())
/// ```
#[track_caller]
pub fn compile<F>(f: F, shapeless: bool) -> Result<CompiledFn>
where
    F: Fn(&[Array]) -> Result<Vec<Array>> + 'static,
{
    init();
    let payload: Box<Payload> = Box::new(Box::new(f));
    let payload = Box::into_raw(payload) as *mut c_void;
    // SAFETY: `trampoline` reads `payload` as a `Payload`; from here mlx-c owns it and calls
    // `drop_payload` once when the last copy of the closure is freed (also if creation fails).
    let raw =
        unsafe { sys::mlx_closure_new_func_payload(Some(trampoline), payload, Some(drop_payload)) };
    let base = Closure(raw);
    if raw.ctx.is_null() {
        return Err(check(1).unwrap_err());
    }
    let compiled = compile_closure(&base, shapeless)?;
    Ok(CompiledFn {
        base,
        compiled: RefCell::new(compiled),
        shapeless,
        depth: Cell::new(0),
    })
}

impl CompiledFn {
    /// Applies the compiled function to `inputs`.
    ///
    /// If the call fails (the closure returned an error or panicked, or MLX rejected the
    /// graph), the compiled graph is discarded and rebuilt from the closure, so a later call
    /// traces afresh.
    ///
    /// ```
    /// use mlx_rs::{compile::compile, Array, Error};
    /// let f = compile(|x: &[Array]| {
    ///     if x.len() != 1 {
    ///         return Err(Error::InvalidArgument("one input expected".into()));
    ///     }
    ///     Ok(vec![x[0].exp()?])
    /// }, false)?;
    /// let a = Array::from_slice(&[0.0f32], &[1])?;
    /// assert!(matches!(f.call(&[&a, &a]), Err(Error::InvalidArgument(_))));
    /// assert_eq!(f.call(&[&a])?[0].to_vec::<f32>()?, vec![1.0]);
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    #[track_caller]
    pub fn call(&self, inputs: &[&Array]) -> Result<Vec<Array>> {
        let input = VectorArray::from_arrays(inputs);
        let mut output = VectorArray::new();
        let closure = self.compiled.borrow().0;
        FAILURE.with(|slot| slot.borrow_mut().take());
        self.depth.set(self.depth.get() + 1);
        // SAFETY: valid handles; `closure` stays alive during the call (it is only replaced
        // below, when no call is running).
        let status =
            unsafe { sys::mlx_closure_apply(output.as_mut_ptr(), closure, input.as_raw()) };
        self.depth.set(self.depth.get() - 1);
        if status == 0 {
            return output.into_arrays();
        }
        let mlx_error = check(status).unwrap_err();
        let failure = FAILURE.with(|slot| slot.borrow_mut().take());
        if self.depth.get() == 0 {
            // A failed trace can leave a half-filled entry in MLX's compile cache; start over
            // with a fresh compiled closure (freeing the old one erases its cache entries).
            let fresh = compile_closure(&self.base, self.shapeless)?;
            *self.compiled.borrow_mut() = fresh;
        }
        Err(match failure {
            Some(Failure::Error(e)) => e,
            Some(Failure::Panic(message)) => Error::Mlx {
                message: format!("the compiled function panicked: {message}"),
                location: Location::caller(),
            },
            None => mlx_error,
        })
    }
}
