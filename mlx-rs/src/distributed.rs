//! MLX's distributed layer: a [`Group`] of processes (ranks) and the collective operations
//! between them (`all_sum`, `all_gather`, `all_max`, `all_min`, `sum_scatter`, `send`, `recv`).
//!
//! The operations are lazy like every other: they return arrays that communicate when they are
//! evaluated, on every rank of the group in the same order.
//!
//! # Backends
//!
//! | [`Backend`] | transport | environment it reads |
//! |---|---|---|
//! | `Ring` | TCP sockets, each rank connected to its two neighbours | `MLX_RANK` (this rank), `MLX_HOSTFILE` (a JSON list with one entry per rank, each a list of `"ip:port"` strings the rank listens on), `MLX_RING_VERBOSE` (any value: log the connection steps) |
//! | `Mpi` | MPI (needs `libmpi` at run time; start with `mpirun`) | MPI's own |
//! | `Nccl` | NCCL on CUDA GPUs | `MLX_RANK`, `MLX_WORLD_SIZE`, `NCCL_HOST_IP`, `NCCL_PORT` |
//! | `Jaccl` | RDMA over Thunderbolt (macOS) | see MLX's documentation |
//!
//! The Linux CPU wheel of MLX 0.32.2 carries the ring backend (and MPI when `libmpi` is found).
//! The ring backend supports `all_sum`, `all_max`, `all_min`, `all_gather`, and `send`/`recv`
//! between neighbours (rank `r` and `r ± 1` modulo the size); not `sum_scatter` nor
//! [`Group::split`] (MLX reports an error).
//!
//! The workspace's `mlx-launch` binary starts one process per rank and sets this environment.
//!
//! # Failures
//!
//! - A peer that never starts: the ring backend waits in `accept(2)` for ever;
//!   [`Group::init_with_timeout`] bounds that wait and returns [`Error::Distributed`].
//! - A peer that dies: its sockets close and the pending transfer fails. When that transfer was
//!   the last of an evaluation, the evaluation returns [`Error::Mlx`] (`[ring] connection to a
//!   peer was lost`); but a transfer queued after the failure (a later collective of the same
//!   graph) waits for ever inside MLX 0.32's ring backend, and MLX's streams belong to their
//!   thread (an evaluation cannot be moved to a thread that could be abandoned). A program
//!   must therefore bound its steps itself and end the process past the bound, as
//!   `mlx_models::parallel` does.
//!
//! # Example
//!
//! Without the environment of a launch, [`Group::init`] (not strict) gives the group of this
//! process alone, where every collective is the identity:
//!
//! ```
//! use mlx_rs::distributed::{Backend, Group};
//! use mlx_rs::Array;
//! # if std::env::var_os("MLX_HOSTFILE").is_some() { return Ok(()); }
//! let group = Group::init(Backend::Any, false)?;
//! assert_eq!((group.rank(), group.size()), (0, 1));
//! let x = Array::from_slice(&[1.0f32, 2.0], &[2])?;
//! assert_eq!(group.all_sum(&x)?.to_vec::<f32>()?, vec![1.0, 2.0]);
//! assert_eq!(group.all_gather(&x)?.shape(), vec![2]);
//! # Ok::<(), mlx_rs::Error>(())
//! ```

use crate::error::{check, init, Error, Result};
use crate::{Array, Dtype};
use mlx_sys as sys;
use std::ffi::CString;
use std::fmt;
use std::sync::mpsc;
use std::time::Duration;

/// A communication backend of MLX's distributed layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// The first that initializes: NCCL (on CUDA), ring, MPI, JACCL.
    Any,
    /// MLX's own ring over TCP.
    Ring,
    /// MPI.
    Mpi,
    /// NCCL (CUDA GPUs).
    Nccl,
    /// JACCL (RDMA over Thunderbolt, macOS).
    Jaccl,
}

impl Backend {
    /// MLX's name of the backend (`"any"`, `"ring"`, `"mpi"`, `"nccl"`, `"jaccl"`).
    pub fn name(self) -> &'static str {
        match self {
            Backend::Any => "any",
            Backend::Ring => "ring",
            Backend::Mpi => "mpi",
            Backend::Nccl => "nccl",
            Backend::Jaccl => "jaccl",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Backend {
    type Err = Error;

    /// Parses MLX's name of a backend.
    ///
    /// ```
    /// use mlx_rs::distributed::Backend;
    /// assert_eq!("ring".parse::<Backend>()?, Backend::Ring);
    /// assert!("tcp".parse::<Backend>().is_err());
    /// # Ok::<(), mlx_rs::Error>(())
    /// ```
    fn from_str(s: &str) -> Result<Backend> {
        [
            Backend::Any,
            Backend::Ring,
            Backend::Mpi,
            Backend::Nccl,
            Backend::Jaccl,
        ]
        .into_iter()
        .find(|b| b.name() == s)
        .ok_or_else(|| {
            Error::InvalidArgument(format!(
                "unknown distributed backend `{s}` (any, ring, mpi, nccl, jaccl)"
            ))
        })
    }
}

/// Whether MLX was built with `backend` (for [`Backend::Any`]: with any of them). The ring
/// backend is always built; MPI and NCCL also need their libraries at run time.
///
/// ```
/// use mlx_rs::distributed::{is_available, Backend};
/// assert!(is_available(Backend::Ring));
/// ```
pub fn is_available(backend: Backend) -> bool {
    init();
    let name = CString::new(backend.name()).expect("backend names have no NUL");
    // SAFETY: a valid NUL-terminated string for the duration of the call.
    unsafe { sys::mlx_distributed_is_available(name.as_ptr()) }
}

/// mlx-c's signature of a collective: `op(res, x, group, stream)`.
type Collective = unsafe extern "C" fn(
    *mut sys::mlx_array,
    sys::mlx_array,
    sys::mlx_distributed_group,
    sys::mlx_stream,
) -> std::ffi::c_int;

/// A group of ranks that communicate; every collective runs over one.
pub struct Group {
    raw: sys::mlx_distributed_group,
    rank: i32,
    size: i32,
}

// SAFETY: the handle owns a `mlx::core::distributed::Group` (a shared pointer to the backend's
// implementation). Building an operation only copies that pointer into the graph; the
// transfers run when the graph is evaluated, on MLX's stream threads, which is how MLX itself
// uses a group from any thread.
unsafe impl Send for Group {}
// SAFETY: as above; `&Group` only reads the handle.
unsafe impl Sync for Group {}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: owned handle, freed once.
        unsafe { sys::mlx_distributed_group_free(self.raw) };
    }
}

impl fmt::Debug for Group {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Group")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .finish()
    }
}

impl Group {
    /// Initializes `backend` from the environment (see the [module docs](self)) and returns the
    /// group of every rank. The first call per backend connects; later calls return the same
    /// group. With `strict == false`, a backend that cannot start (no environment) gives the
    /// group of this process alone instead of an error.
    ///
    /// The ring backend blocks until every peer has connected; see
    /// [`Group::init_with_timeout`] to bound that.
    ///
    /// Errors: [`Error::Mlx`] (a strict backend that cannot start, a bad hostfile).
    #[track_caller]
    pub fn init(backend: Backend, strict: bool) -> Result<Group> {
        init();
        let name = CString::new(backend.name()).expect("backend names have no NUL");
        // SAFETY: a fresh empty handle, owned by `Group` (freed on every path).
        let mut raw = unsafe { sys::mlx_distributed_group_new() };
        // SAFETY: valid out-parameter and string for the duration of the call.
        let status = unsafe { sys::mlx_distributed_init(&mut raw, strict, name.as_ptr()) };
        if let Err(e) = check(status) {
            // SAFETY: the handle is owned here and not used again.
            unsafe { sys::mlx_distributed_group_free(raw) };
            return Err(e);
        }
        Ok(Group::wrap(raw))
    }

    /// [`Group::init`] (strict) that gives up after `timeout` with [`Error::Distributed`]
    /// naming the backend and this process's `MLX_RANK`: the ring backend otherwise waits for
    /// ever for a peer that never starts.
    ///
    /// The connecting thread cannot be interrupted inside MLX: after a timeout it stays
    /// blocked, and the process should end (every rank of a failed launch does).
    pub fn init_with_timeout(backend: Backend, timeout: Duration) -> Result<Group> {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name(format!("mlx-distributed-init-{backend}"))
            .spawn(move || {
                let _ = tx.send(Group::init(backend, true));
            })
            .map_err(|e| Error::Distributed(format!("cannot start the connecting thread: {e}")))?;
        match rx.recv_timeout(timeout) {
            Ok(group) => group,
            Err(_) => Err(Error::Distributed(format!(
                "the {backend} backend did not connect every rank within {:.1} s (this is rank {}; \
                 a peer did not start or cannot be reached)",
                timeout.as_secs_f64(),
                std::env::var("MLX_RANK").unwrap_or_else(|_| "?".into())
            ))),
        }
    }

    fn wrap(raw: sys::mlx_distributed_group) -> Group {
        // SAFETY: a valid group handle.
        let (rank, size) = unsafe {
            (
                sys::mlx_distributed_group_rank(raw),
                sys::mlx_distributed_group_size(raw),
            )
        };
        Group { raw, rank, size }
    }

    /// This process's rank, `0..size`.
    pub fn rank(&self) -> i32 {
        self.rank
    }

    /// The number of ranks.
    pub fn size(&self) -> i32 {
        self.size
    }

    /// Splits the group: ranks with the same `color` form a subgroup, ordered by `key`
    /// (`None`: by rank). Not supported by the ring backend.
    #[track_caller]
    pub fn split(&self, color: i32, key: Option<i32>) -> Result<Group> {
        init();
        // SAFETY: a fresh empty handle, owned by the result (or freed on error).
        let mut raw = unsafe { sys::mlx_distributed_group_new() };
        // SAFETY: valid handles for the duration of the call.
        let status = unsafe {
            sys::mlx_distributed_group_split(&mut raw, self.raw, color, key.unwrap_or(-1))
        };
        if let Err(e) = check(status) {
            // SAFETY: owned here, not used again.
            unsafe { sys::mlx_distributed_group_free(raw) };
            return Err(e);
        }
        Ok(Group::wrap(raw))
    }

    /// The element-wise sum of `x` over every rank (each rank passes an array of the same
    /// shape and dtype, and gets the sum).
    #[track_caller]
    pub fn all_sum(&self, x: &Array) -> Result<Array> {
        self.collective(x, sys::mlx_distributed_all_sum)
    }

    /// The element-wise maximum of `x` over every rank.
    #[track_caller]
    pub fn all_max(&self, x: &Array) -> Result<Array> {
        self.collective(x, sys::mlx_distributed_all_max)
    }

    /// The element-wise minimum of `x` over every rank.
    #[track_caller]
    pub fn all_min(&self, x: &Array) -> Result<Array> {
        self.collective(x, sys::mlx_distributed_all_min)
    }

    /// Every rank's `x` concatenated along the first axis, in rank order (`[size·d0, …]`).
    #[track_caller]
    pub fn all_gather(&self, x: &Array) -> Result<Array> {
        self.collective(x, sys::mlx_distributed_all_gather)
    }

    /// The sum over ranks, scattered: rank `r` gets the `r`-th of `size` equal parts of the
    /// first axis. Not supported by the ring backend.
    #[track_caller]
    pub fn sum_scatter(&self, x: &Array) -> Result<Array> {
        self.collective(x, sys::mlx_distributed_sum_scatter)
    }

    /// Sends `x` to rank `dst`; evaluate the returned array to send (the ring backend sends to
    /// neighbours only).
    #[track_caller]
    pub fn send(&self, x: &Array, dst: i32) -> Result<Array> {
        self.check_peer(dst)?;
        // SAFETY: valid handles for the duration of the call.
        Array::try_op_stream(|res, s| unsafe {
            sys::mlx_distributed_send(res, x.as_raw(), dst, self.raw, s)
        })
    }

    /// Receives an array of `shape` and `dtype` from rank `src`.
    #[track_caller]
    pub fn recv(&self, shape: &[i32], dtype: Dtype, src: i32) -> Result<Array> {
        self.check_peer(src)?;
        // SAFETY: `shape` outlives the call; valid handles.
        Array::try_op_stream(|res, s| unsafe {
            sys::mlx_distributed_recv(
                res,
                shape.as_ptr(),
                shape.len(),
                dtype.to_sys(),
                src,
                self.raw,
                s,
            )
        })
    }

    /// Receives from rank `src` an array shaped and typed like `like`.
    #[track_caller]
    pub fn recv_like(&self, like: &Array, src: i32) -> Result<Array> {
        self.check_peer(src)?;
        // SAFETY: valid handles for the duration of the call.
        Array::try_op_stream(|res, s| unsafe {
            sys::mlx_distributed_recv_like(res, like.as_raw(), src, self.raw, s)
        })
    }

    /// Runs one of mlx-c's collectives of the form `op(res, x, group, stream)`.
    #[track_caller]
    fn collective(&self, x: &Array, op: Collective) -> Result<Array> {
        // SAFETY: `op` is one of mlx-c's collectives; valid handles for the duration of the
        // call.
        Array::try_op_stream(|res, s| unsafe { op(res, x.as_raw(), self.raw, s) })
    }

    fn check_peer(&self, peer: i32) -> Result<()> {
        if (0..self.size).contains(&peer) && peer != self.rank {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "rank {} of {} cannot exchange with rank {peer}",
                self.rank, self.size
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_outside_the_group_is_refused() {
        if std::env::var_os("MLX_HOSTFILE").is_some() {
            return;
        }
        let g = Group::init(Backend::Any, false).unwrap();
        let x = Array::from_slice(&[1.0f32], &[1]).unwrap();
        // A group of one has no peer at all.
        assert!(matches!(g.send(&x, 0), Err(Error::InvalidArgument(_))));
        assert!(matches!(
            g.recv(&[1], Dtype::Float32, 1),
            Err(Error::InvalidArgument(_))
        ));
    }

    #[test]
    fn backend_names_round_trip() {
        for b in [
            Backend::Any,
            Backend::Ring,
            Backend::Mpi,
            Backend::Nccl,
            Backend::Jaccl,
        ] {
            assert_eq!(b.name().parse::<Backend>().unwrap(), b);
        }
    }
}
