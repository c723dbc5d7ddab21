//! `mlx-launch`: start a distributed MLX program on one or more hosts.
//!
//! The Rust counterpart of MLX's `mlx.launch`: it reads the same hostfile, gives every rank
//! the environment MLX's distributed backends read (`MLX_RANK`, `MLX_HOSTFILE`,
//! `NCCL_HOST_IP`, ...), starts the ranks locally or through `ssh`, streams their output
//! and stops every rank as soon as one fails.
//!
//! The pieces, by concept:
//! - [`hostfile`]: `mlx.launch`'s JSON hostfile, `--hosts` and `-n`;
//! - [`backend`]: what each backend needs per rank (environment, configuration files) and
//!   the `mpirun` command line;
//! - [`remote`]: POSIX shell quoting and the `ssh` command lines for remote ranks;
//! - [`supervise`]: spawning, output streaming and teardown;
//! - [`cli`]: the command-line front end the `mlx-launch` binary calls.
//!
//! ```
//! use mlx_launch::backend::{plan_ranks, Backend, Options};
//! use mlx_launch::hostfile::Hostfile;
//!
//! let hosts = Hostfile::from_list("10.0.0.1,10.0.0.2", 1).unwrap().hosts;
//! let ranks = plan_ranks(Backend::Ring, &hosts, &Options::default(), &mut |_| None).unwrap();
//! assert_eq!(ranks[1].env_value("MLX_RANK"), Some("1"));
//! assert_eq!(ranks[1].files[0].content, r#"[["10.0.0.1:32323"],["10.0.0.2:32324"]]"#);
//! ```

pub mod backend;
pub mod cli;
pub mod hostfile;
pub mod remote;
pub mod supervise;

/// Why a launch could not go ahead.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// Bad input: flags, hostfile, environment assignments (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// The launch could not be carried out (temporary files, spawning; exit code 1).
    #[error("{0}")]
    Failed(String),
}

impl LaunchError {
    /// The process exit code this error maps to: 2 for [`LaunchError::Usage`], 1 otherwise.
    ///
    /// ```
    /// assert_eq!(mlx_launch::LaunchError::Usage("x".into()).exit_code(), 2);
    /// ```
    pub fn exit_code(&self) -> i32 {
        match self {
            LaunchError::Usage(_) => 2,
            LaunchError::Failed(_) => 1,
        }
    }
}
