//! Operations on arrays, by family. Each is a method of [`Array`](crate::Array) (and, where
//! natural, a free function); all return [`Result`](crate::Result) and run on the current
//! stream (see [`crate::with_stream`]).

mod activation;
mod arithmetic;
mod axes;
mod compare;
mod index;
mod reduce;
mod scalar;
pub(crate) mod shape;
mod sort;

pub use axes::Axes;
pub use compare::where_;
pub use index::{Ellipsis, NewAxis, SliceIndex};
pub use scalar::ScalarOperand;
pub use shape::{concatenate, stack};

/// Defines methods `fn name(&self) -> Result<Array>` over mlx-c unary ops.
macro_rules! unary_ops {
    ($($(#[$doc:meta])* $name:ident => $sys:ident;)*) => {
        impl $crate::Array {$(
            $(#[$doc])*
            #[track_caller]
            pub fn $name(&self) -> $crate::Result<$crate::Array> {
                // SAFETY: `self` is a valid handle for the duration of the call.
                $crate::Array::try_op_stream(|res, s| unsafe { mlx_sys::$sys(res, self.as_raw(), s) })
            }
        )*}
    };
}

/// Defines methods `fn name(&self, other: &Array) -> Result<Array>` over mlx-c binary ops.
macro_rules! binary_ops {
    ($($(#[$doc:meta])* $name:ident => $sys:ident;)*) => {
        impl $crate::Array {$(
            $(#[$doc])*
            #[track_caller]
            pub fn $name(&self, other: &$crate::Array) -> $crate::Result<$crate::Array> {
                // SAFETY: both handles are valid for the duration of the call.
                $crate::Array::try_op_stream(|res, s| unsafe { mlx_sys::$sys(res, self.as_raw(), other.as_raw(), s) })
            }
        )*}
    };
}

pub(crate) use {binary_ops, unary_ops};
