//! What each distributed backend needs per rank, as MLX (v0.32) reads it.
//!
//! - ring (`mlx/distributed/ring/ring.cpp`): `MLX_RANK` and `MLX_HOSTFILE`, the path of a
//!   JSON list with one entry per rank, each a list of `"ip:port"` strings to listen on
//!   (one per IP and connection); `MLX_RING_VERBOSE` when set makes it log.
//! - nccl (`mlx/distributed/nccl/nccl.cpp`): `MLX_RANK`, `MLX_WORLD_SIZE`, `NCCL_HOST_IP`
//!   and `NCCL_PORT` (rank 0's rendezvous address); `CUDA_VISIBLE_DEVICES` picks the GPU.
//! - jaccl: `MLX_JACCL_COORDINATOR` (`ip:port` of rank 0), `MLX_IBV_DEVICES` (path of a
//!   JSON matrix of RDMA devices), `MLX_JACCL_RING=1` for `jaccl-ring`.
//! - mpi: a thin wrapper over `mpirun` (see [`mpi_hostfile`] and [`mpi_argv`]).
//!
//! Every rank also gets `MLX_WORLD_SIZE` (the ring and JACCL backends do not read it; it is
//! there for the program's convenience).

use std::collections::HashMap;
use std::net::{IpAddr, TcpListener};

use crate::hostfile::Host;
use crate::remote;
use crate::LaunchError;

/// A distributed backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// MLX's TCP ring (the default).
    Ring,
    /// `mpirun`.
    Mpi,
    /// NCCL (CUDA).
    Nccl,
    /// JACCL (RDMA over Thunderbolt), fully connected.
    Jaccl,
    /// JACCL in ring mode.
    JacclRing,
}

impl Backend {
    /// Parses a backend name as `mlx.launch` spells it (`ring`, `mpi`, `nccl`, `jaccl`,
    /// `jaccl-ring`), e.g. a hostfile's `"backend"`.
    ///
    /// ```
    /// use mlx_launch::backend::Backend;
    /// assert_eq!(Backend::from_name("jaccl-ring").unwrap(), Backend::JacclRing);
    /// assert!(Backend::from_name("gloo").is_err());
    /// ```
    pub fn from_name(name: &str) -> Result<Self, LaunchError> {
        <Self as clap::ValueEnum>::from_str(name, false).map_err(|_| {
            LaunchError::Usage(format!(
                "unknown backend {name:?}; expected one of ring, mpi, nccl, jaccl, jaccl-ring"
            ))
        })
    }
}

/// Launch settings shared by every rank.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// First port of the ring backend on remote hosts (+1 per rank, IP and connection), and
    /// the port of JACCL's coordinator. `mlx.launch`'s default is 32323.
    pub starting_port: u16,
    /// Connections between neighbours per IP (ring backend).
    pub connections_per_ip: usize,
    /// NCCL's rendezvous port on rank 0. `mlx.launch`'s default is 12345.
    pub nccl_port: u16,
    /// Turn on the backend's own logging (`MLX_RING_VERBOSE=1`, `NCCL_DEBUG=INFO`).
    pub verbose: bool,
    /// Environment for every rank, in order (the hostfile's `envs`, then `--env`).
    pub env: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            starting_port: 32323,
            connections_per_ip: 1,
            nccl_port: 12345,
            verbose: false,
            env: Vec::new(),
        }
    }
}

/// A file a rank needs: `var` is set to its path, wherever the rank runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileVar {
    /// The environment variable that receives the file's path.
    pub var: String,
    /// The file's content.
    pub content: String,
}

/// Everything one rank needs besides the command.
#[derive(Debug, Clone, PartialEq)]
pub struct RankPlan {
    /// The rank.
    pub rank: usize,
    /// The host it runs on (the name to ssh to).
    pub host: String,
    /// Whether it runs on this machine (no ssh).
    pub local: bool,
    /// Environment, in order; a later entry for the same variable wins.
    pub env: Vec<(String, String)>,
    /// Files to create; each variable is set to its file's path.
    pub files: Vec<FileVar>,
}

impl RankPlan {
    /// The value the rank sees for `key` among [`RankPlan::env`] (the last one set).
    pub fn env_value(&self, key: &str) -> Option<&str> {
        self.env
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses one `K=V` environment assignment. The name must be a shell variable name
/// (letters, digits and `_`, not starting with a digit), since remote ranks `export` it.
///
/// ```
/// use mlx_launch::backend::parse_env;
/// assert_eq!(parse_env("A_1=x=y").unwrap(), ("A_1".to_string(), "x=y".to_string()));
/// assert_eq!(parse_env("EMPTY=").unwrap().1, "");
/// assert!(parse_env("NOVALUE").is_err());
/// assert!(parse_env("1X=2").is_err());
/// assert!(parse_env("A-B=2").is_err());
/// ```
pub fn parse_env(assignment: &str) -> Result<(String, String), LaunchError> {
    let Some((key, value)) = assignment.split_once('=') else {
        return Err(LaunchError::Usage(format!(
            "environment assignment {assignment:?} is not of the form K=V"
        )));
    };
    let valid = !key.is_empty()
        && !key.starts_with(|c: char| c.is_ascii_digit())
        && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !valid {
        return Err(LaunchError::Usage(format!(
            "{key:?} (in {assignment:?}) is not a valid environment variable name"
        )));
    }
    Ok((key.to_string(), value.to_string()))
}

/// Finds free ports for local ranks by binding `ip:0`; the listeners stay open until the
/// picker is dropped, so that two ranks never get the same port.
#[derive(Debug, Default)]
pub struct PortPicker {
    held: Vec<TcpListener>,
}

impl PortPicker {
    /// A free port on `ip` (an address of this machine), or `None` if `ip` cannot be bound.
    ///
    /// ```
    /// let mut picker = mlx_launch::backend::PortPicker::default();
    /// let a = picker.pick("127.0.0.1").unwrap();
    /// let b = picker.pick("127.0.0.1").unwrap();
    /// assert_ne!(a, b);
    /// assert_eq!(picker.pick("not-an-ip"), None);
    /// ```
    pub fn pick(&mut self, ip: &str) -> Option<u16> {
        let ip: IpAddr = ip.parse().ok()?;
        let listener = TcpListener::bind((ip, 0)).ok()?;
        let port = listener.local_addr().ok()?.port();
        self.held.push(listener);
        Some(port)
    }
}

/// The addresses a rank communicates over: its `ips`, or `127.0.0.1` when it has none and
/// every rank is local (`-n 2`, `--hosts localhost,localhost`).
fn rank_ips(hosts: &[Host], what: &str) -> Result<Vec<Vec<String>>, LaunchError> {
    let all_local = hosts.iter().all(Host::is_local);
    hosts
        .iter()
        .enumerate()
        .map(|(rank, h)| {
            if !h.ips.is_empty() {
                Ok(h.ips.clone())
            } else if all_local {
                Ok(vec!["127.0.0.1".to_string()])
            } else {
                Err(LaunchError::Usage(format!(
                    "{what} needs IP addresses but rank {rank} ({}) has none: give --hosts \
                     as IP addresses or use a hostfile with \"ips\"",
                    h.ssh
                )))
            }
        })
        .collect()
}

/// The ring backend's hostfile: per rank, one `"ip:port"` per IP and connection.
///
/// Ports follow `mlx.launch`: they start at `starting_port` and increase by one per rank,
/// IP and connection. Local ranks instead ask `local_port` for a free port (given the IP)
/// and use the counter's port only when it returns `None`.
///
/// ```
/// use mlx_launch::backend::ring_hostfile;
/// use mlx_launch::hostfile::Hostfile;
/// let hosts = Hostfile::parse(r#"[{"ssh": "a", "ips": ["10.0.0.1", "10.0.1.1"]},
///                                 {"ssh": "b", "ips": ["10.0.0.2", "10.0.1.2"]}]"#)
///     .unwrap()
///     .hosts;
/// let ring = ring_hostfile(&hosts, 5000, 2, &mut |_| None).unwrap();
/// assert_eq!(ring[1], ["10.0.0.2:5004", "10.0.0.2:5005", "10.0.1.2:5006", "10.0.1.2:5007"]);
/// ```
pub fn ring_hostfile(
    hosts: &[Host],
    starting_port: u16,
    connections_per_ip: usize,
    local_port: &mut dyn FnMut(&str) -> Option<u16>,
) -> Result<Vec<Vec<String>>, LaunchError> {
    if connections_per_ip == 0 {
        return Err(LaunchError::Usage(
            "--connections-per-ip must be at least 1".into(),
        ));
    }
    let ips = rank_ips(hosts, "the ring backend")?;
    let mut port = u32::from(starting_port);
    let mut ring = Vec::with_capacity(hosts.len());
    for (h, ips) in hosts.iter().zip(ips) {
        let local = h.is_local();
        let mut node = Vec::new();
        for ip in &ips {
            for _ in 0..connections_per_ip {
                let chosen = if local { local_port(ip) } else { None };
                let p = match chosen {
                    Some(p) => p,
                    None => u16::try_from(port).map_err(|_| {
                        LaunchError::Usage(format!(
                            "ring ports run past 65535 (--starting-port {starting_port})"
                        ))
                    })?,
                };
                node.push(format_addr(ip, p)?);
                port += 1;
            }
        }
        ring.push(node);
    }
    Ok(ring)
}

/// `ip:port` as MLX parses it (at the first `:`, IPv4 sockets only), so IPv6 addresses
/// are refused.
fn format_addr(ip: &str, port: u16) -> Result<String, LaunchError> {
    if ip.contains(':') {
        return Err(LaunchError::Usage(format!(
            "{ip} is an IPv6 address, but MLX's ring and JACCL backends take IPv4 only"
        )));
    }
    Ok(format!("{ip}:{port}"))
}

/// The environment and files of every rank for `backend` (not [`Backend::Mpi`], which
/// `mpirun` starts: see [`mpi_argv`]).
///
/// `local_port` picks free ports for local ring ranks (see [`PortPicker::pick`]).
///
/// ```
/// use mlx_launch::backend::{plan_ranks, Backend, Options};
/// use mlx_launch::hostfile::Hostfile;
/// let hosts = Hostfile::from_list("10.0.0.1,10.0.0.2", 2).unwrap().hosts;
/// let ranks = plan_ranks(Backend::Nccl, &hosts, &Options::default(), &mut |_| None).unwrap();
/// assert_eq!(ranks.len(), 4);
/// assert_eq!(ranks[3].env_value("NCCL_HOST_IP"), Some("10.0.0.1"));
/// assert_eq!(ranks[3].env_value("CUDA_VISIBLE_DEVICES"), Some("1"));
/// ```
pub fn plan_ranks(
    backend: Backend,
    hosts: &[Host],
    opts: &Options,
    local_port: &mut dyn FnMut(&str) -> Option<u16>,
) -> Result<Vec<RankPlan>, LaunchError> {
    if hosts.is_empty() {
        return Err(LaunchError::Usage("no ranks to launch".into()));
    }
    let n = hosts.len();
    let mut common = opts.env.clone();
    let mut files = Vec::new();
    match backend {
        Backend::Ring => {
            let ring = ring_hostfile(
                hosts,
                opts.starting_port,
                opts.connections_per_ip,
                local_port,
            )?;
            // mlx.launch writes an empty hostfile for a single rank.
            let content = if n > 1 {
                serde_json::to_string(&ring).expect("a list of lists of strings serialises")
            } else {
                String::new()
            };
            files.push(FileVar {
                var: "MLX_HOSTFILE".into(),
                content,
            });
            if opts.verbose {
                common.push(("MLX_RING_VERBOSE".into(), "1".into()));
            }
        }
        Backend::Nccl => {
            let master = &rank_ips(&hosts[..1], "the nccl backend (for rank 0)")
                .map_err(|_| no_rank0_ip(&hosts[0]))?[0][0];
            if opts.verbose {
                common.push(("NCCL_DEBUG".into(), "INFO".into()));
            }
            common.push(("NCCL_HOST_IP".into(), master.clone()));
            common.push(("NCCL_PORT".into(), opts.nccl_port.to_string()));
        }
        Backend::Jaccl | Backend::JacclRing => {
            let coordinator = &rank_ips(&hosts[..1], "the jaccl backend (for rank 0)")
                .map_err(|_| no_rank0_ip(&hosts[0]))?[0][0];
            let well_formed = hosts
                .iter()
                .enumerate()
                .all(|(i, h)| h.rdma.len() == n && h.rdma[i].is_null());
            if !well_formed {
                return Err(LaunchError::Usage(
                    "malformed hostfile for the jaccl backend: every host needs \"rdma\" with \
                     one entry per host, null for itself"
                        .into(),
                ));
            }
            common.push((
                "MLX_JACCL_COORDINATOR".into(),
                format_addr(coordinator, opts.starting_port)?,
            ));
            if backend == Backend::JacclRing {
                common.push(("MLX_JACCL_RING".into(), "1".into()));
            }
            let matrix: Vec<_> = hosts.iter().map(|h| h.rdma.clone()).collect();
            files.push(FileVar {
                var: "MLX_IBV_DEVICES".into(),
                content: serde_json::to_string(&matrix).expect("JSON values serialise"),
            });
        }
        Backend::Mpi => {
            return Err(LaunchError::Usage(
                "the mpi backend is started by mpirun, not rank by rank".into(),
            ))
        }
    }

    // Index of each rank among the ranks on the same host (NCCL's GPU).
    let mut seen: HashMap<String, usize> = HashMap::new();
    let plans = hosts
        .iter()
        .enumerate()
        .map(|(rank, h)| {
            let local = h.is_local();
            let key = if local {
                String::new()
            } else {
                h.ssh.to_ascii_lowercase()
            };
            let slot = seen.entry(key).or_insert(0);
            let local_index = *slot;
            *slot += 1;

            let mut env = common.clone();
            env.push(("MLX_WORLD_SIZE".into(), n.to_string()));
            if backend == Backend::Nccl {
                env.push(("CUDA_VISIBLE_DEVICES".into(), local_index.to_string()));
            }
            env.push(("MLX_RANK".into(), rank.to_string()));
            RankPlan {
                rank,
                host: h.ssh.clone(),
                local,
                env,
                files: files.clone(),
            }
        })
        .collect();
    Ok(plans)
}

fn no_rank0_ip(h: &Host) -> LaunchError {
    LaunchError::Usage(format!(
        "rank 0 ({}) needs an IP address reachable from every other rank: give --hosts as \
         IP addresses or use a hostfile with \"ips\"",
        h.ssh
    ))
}

/// The `mpirun` hostfile: one `host slots=N` line per distinct host, in order of first
/// appearance (IPs are not used, as in `mlx.launch`).
///
/// ```
/// use mlx_launch::backend::mpi_hostfile;
/// use mlx_launch::hostfile::Hostfile;
/// let hosts = Hostfile::from_list("a,b,a", 1).unwrap().hosts;
/// assert_eq!(mpi_hostfile(&hosts), "a slots=2\nb slots=1\n");
/// ```
pub fn mpi_hostfile(hosts: &[Host]) -> String {
    let mut order: Vec<(&str, usize)> = Vec::new();
    for h in hosts {
        match order.iter_mut().find(|(name, _)| *name == h.ssh) {
            Some((_, n)) => *n += 1,
            None => order.push((&h.ssh, 1)),
        }
    }
    order
        .iter()
        .map(|(name, n)| format!("{name} slots={n}\n"))
        .collect()
}

/// The major version of Open MPI that `mpirun --version` printed (`mpirun (Open MPI) 4.1.4`),
/// if it is Open MPI.
///
/// ```
/// use mlx_launch::backend::open_mpi_major;
/// assert_eq!(open_mpi_major("mpirun (Open MPI) 4.1.4\n\nReport bugs to ..."), Some(4));
/// assert_eq!(open_mpi_major("mpirun (Open MPI) 5.0.3"), Some(5));
/// assert_eq!(open_mpi_major("HYDRA build details:"), None);
/// ```
pub fn open_mpi_major(version_text: &str) -> Option<u32> {
    let rest = version_text.split("(Open MPI)").nth(1)?;
    rest.trim().split('.').next()?.parse().ok()
}

/// The `mpirun` command line `mlx.launch` builds: raw output (`--output :raw`, when
/// `raw_output`: Open MPI 5 has the flag, 4 refuses it), the hostfile, the working
/// directory, each environment variable exported with `-x`, the `--mpi-arg` words (split
/// like a shell would), then `--` and the command.
///
/// ```
/// use mlx_launch::backend::mpi_argv;
/// let argv = mpi_argv(
///     "/usr/bin/mpirun",
///     true,
///     "/tmp/hosts",
///     None,
///     &[("A".into(), "1".into())],
///     &["--mca btl_tcp_if_include en0".into()],
///     &["python3".into(), "job.py".into()],
/// )
/// .unwrap();
/// assert_eq!(argv.join(" "), "/usr/bin/mpirun --output :raw --hostfile /tmp/hosts -x A=1 \
///                             --mca btl_tcp_if_include en0 -- python3 job.py");
/// ```
pub fn mpi_argv(
    mpirun: &str,
    raw_output: bool,
    hostfile: &str,
    cwd: Option<&str>,
    env: &[(String, String)],
    mpi_args: &[String],
    command: &[String],
) -> Result<Vec<String>, LaunchError> {
    let mut argv = vec![mpirun.to_string()];
    if raw_output {
        argv.extend(["--output".to_string(), ":raw".to_string()]);
    }
    argv.extend(["--hostfile".to_string(), hostfile.to_string()]);
    if let Some(cwd) = cwd {
        argv.extend(["-cwd".to_string(), cwd.to_string()]);
    }
    for (k, v) in env {
        argv.extend(["-x".to_string(), format!("{k}={v}")]);
    }
    for arg in mpi_args {
        argv.extend(
            remote::split_words(arg)
                .map_err(|e| LaunchError::Usage(format!("cannot split --mpi-arg {arg:?}: {e}")))?,
        );
    }
    argv.push("--".into());
    argv.extend(command.iter().cloned());
    Ok(argv)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hostfile::Hostfile;

    fn opts() -> Options {
        Options::default()
    }

    #[test]
    fn ring_local_ranks_use_picked_ports_and_127() {
        let hosts = Hostfile::from_list("127.0.0.1", 3).unwrap().hosts;
        let mut next = 40000;
        let ranks = plan_ranks(Backend::Ring, &hosts, &opts(), &mut |ip| {
            assert_eq!(ip, "127.0.0.1");
            next += 7;
            Some(next)
        })
        .unwrap();
        let expected = r#"[["127.0.0.1:40007"],["127.0.0.1:40014"],["127.0.0.1:40021"]]"#;
        for (r, plan) in ranks.iter().enumerate() {
            assert_eq!(
                plan.files,
                [FileVar {
                    var: "MLX_HOSTFILE".into(),
                    content: expected.into()
                }]
            );
            assert_eq!(plan.env_value("MLX_RANK"), Some(r.to_string().as_str()));
            assert_eq!(plan.env_value("MLX_WORLD_SIZE"), Some("3"));
            assert_eq!(plan.env_value("MLX_RING_VERBOSE"), None);
            assert!(plan.local);
        }
    }

    #[test]
    fn ring_localhost_by_name_gets_loopback_but_remote_names_are_refused() {
        let hosts = Hostfile::from_list("localhost", 2).unwrap().hosts;
        let ring = ring_hostfile(&hosts, 100, 1, &mut |_| None).unwrap();
        assert_eq!(ring, [["127.0.0.1:100"], ["127.0.0.1:101"]]);

        let hosts = Hostfile::from_list("10.0.0.1,node-that-is-not-me", 1)
            .unwrap()
            .hosts;
        let err = ring_hostfile(&hosts, 100, 1, &mut |_| None).unwrap_err();
        assert!(
            err.to_string().contains("rank 1 (node-that-is-not-me)"),
            "{err}"
        );
        // A local name without IPs is refused too once some rank is remote: 127.0.0.1
        // would not be reachable from it.
        let hosts = Hostfile::from_list("localhost,10.0.0.2", 1).unwrap().hosts;
        let err = ring_hostfile(&hosts, 100, 1, &mut |_| None).unwrap_err();
        assert!(err.to_string().contains("rank 0 (localhost)"), "{err}");
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn ring_remote_ports_count_like_mlx_launch_even_past_local_ranks() {
        // Rank 0 local (port picked), rank 1 remote: its port is starting_port + 1, as
        // mlx.launch numbers every rank's slots.
        let hosts = Hostfile::parse(
            r#"[{"ssh": "127.0.0.1", "ips": ["127.0.0.1"]}, {"ssh": "far", "ips": ["10.9.9.9"]}]"#,
        )
        .unwrap()
        .hosts;
        let ring = ring_hostfile(&hosts, 32323, 1, &mut |_| Some(5555)).unwrap();
        assert_eq!(ring, [["127.0.0.1:5555"], ["10.9.9.9:32324"]]);
    }

    #[test]
    fn ring_single_rank_and_verbose() {
        let hosts = Hostfile::from_list("127.0.0.1", 1).unwrap().hosts;
        let o = Options {
            verbose: true,
            ..opts()
        };
        let ranks = plan_ranks(Backend::Ring, &hosts, &o, &mut |_| None).unwrap();
        assert_eq!(ranks[0].files[0].content, "");
        assert_eq!(ranks[0].env_value("MLX_RING_VERBOSE"), Some("1"));
    }

    #[test]
    fn ring_port_overflow_and_zero_connections_are_errors() {
        let hosts = Hostfile::from_list("10.0.0.1,10.0.0.2", 1).unwrap().hosts;
        assert!(ring_hostfile(&hosts, 65535, 1, &mut |_| None).is_err());
        assert!(ring_hostfile(&hosts, 1000, 0, &mut |_| None).is_err());
    }

    #[test]
    fn ring_ipv6_addresses_are_refused() {
        let hosts = Hostfile::from_list("::1", 2).unwrap().hosts;
        let err = ring_hostfile(&hosts, 7000, 1, &mut |_| Some(1)).unwrap_err();
        assert!(err.to_string().contains("IPv4 only"), "{err}");
    }

    #[test]
    fn user_env_comes_first_and_rank_vars_win() {
        let hosts = Hostfile::from_list("127.0.0.1", 2).unwrap().hosts;
        let o = Options {
            env: vec![
                ("MLX_RANK".into(), "99".into()),
                ("FOO".into(), "bar".into()),
            ],
            ..opts()
        };
        let ranks = plan_ranks(Backend::Ring, &hosts, &o, &mut |_| None).unwrap();
        assert_eq!(ranks[1].env[0], ("MLX_RANK".to_string(), "99".to_string()));
        assert_eq!(ranks[1].env_value("MLX_RANK"), Some("1"));
        assert_eq!(ranks[1].env_value("FOO"), Some("bar"));
    }

    #[test]
    fn nccl_env_per_rank() {
        let hosts = Hostfile::from_list("10.0.0.1,10.0.0.2", 2).unwrap().hosts;
        let o = Options {
            nccl_port: 4242,
            verbose: true,
            ..opts()
        };
        let ranks = plan_ranks(Backend::Nccl, &hosts, &o, &mut |_| None).unwrap();
        let gpus: Vec<_> = ranks
            .iter()
            .map(|r| r.env_value("CUDA_VISIBLE_DEVICES").unwrap())
            .collect();
        assert_eq!(gpus, ["0", "1", "0", "1"]);
        for (i, r) in ranks.iter().enumerate() {
            assert_eq!(r.env_value("MLX_RANK"), Some(i.to_string().as_str()));
            assert_eq!(r.env_value("MLX_WORLD_SIZE"), Some("4"));
            assert_eq!(r.env_value("NCCL_HOST_IP"), Some("10.0.0.1"));
            assert_eq!(r.env_value("NCCL_PORT"), Some("4242"));
            assert_eq!(r.env_value("NCCL_DEBUG"), Some("INFO"));
            assert!(r.files.is_empty());
        }
    }

    #[test]
    fn nccl_local_ranks_share_one_gpu_counter_and_loopback_master() {
        let hosts = Hostfile::from_list("localhost,127.0.0.1", 1).unwrap().hosts;
        let ranks = plan_ranks(Backend::Nccl, &hosts, &opts(), &mut |_| None).unwrap();
        assert_eq!(ranks[0].env_value("NCCL_HOST_IP"), Some("127.0.0.1"));
        assert_eq!(ranks[1].env_value("CUDA_VISIBLE_DEVICES"), Some("1"));
    }

    #[test]
    fn nccl_needs_an_ip_for_remote_rank_0() {
        let hosts = Hostfile::from_list("gpu-box-a,gpu-box-b", 1).unwrap().hosts;
        let err = plan_ranks(Backend::Nccl, &hosts, &opts(), &mut |_| None).unwrap_err();
        assert!(err.to_string().contains("rank 0 (gpu-box-a)"), "{err}");
    }

    #[test]
    fn jaccl_env_and_devices_file() {
        let hf = Hostfile::parse(
            r#"[{"ssh": "m1", "ips": ["10.0.0.1"], "rdma": [null, "rdma_en2"]},
                {"ssh": "m2", "ips": ["10.0.0.2"], "rdma": ["rdma_en2", null]}]"#,
        )
        .unwrap();
        let ranks = plan_ranks(Backend::JacclRing, &hf.hosts, &opts(), &mut |_| None).unwrap();
        assert_eq!(
            ranks[1].env_value("MLX_JACCL_COORDINATOR"),
            Some("10.0.0.1:32323")
        );
        assert_eq!(ranks[1].env_value("MLX_JACCL_RING"), Some("1"));
        assert_eq!(ranks[1].files[0].var, "MLX_IBV_DEVICES");
        assert_eq!(
            ranks[1].files[0].content,
            r#"[[null,"rdma_en2"],["rdma_en2",null]]"#
        );

        let plain = plan_ranks(Backend::Jaccl, &hf.hosts, &opts(), &mut |_| None).unwrap();
        assert_eq!(plain[0].env_value("MLX_JACCL_RING"), None);

        let bad =
            Hostfile::parse(r#"[{"ssh": "m1", "ips": ["10.0.0.1"]}, {"ssh": "m2"}]"#).unwrap();
        assert!(plan_ranks(Backend::Jaccl, &bad.hosts, &opts(), &mut |_| None).is_err());
    }

    #[test]
    fn mpi_command_line() {
        let hosts = Hostfile::from_list("a,b", 2).unwrap().hosts;
        assert_eq!(mpi_hostfile(&hosts), "a slots=2\nb slots=2\n");
        let argv = mpi_argv(
            "mpirun",
            true,
            "/tmp/h",
            Some("/work dir"),
            &[("X".into(), "a b".into())],
            &["--mca btl_tcp_links 2".into(), "'--bind-to' none".into()],
            &["prog".into(), "two words".into()],
        )
        .unwrap();
        assert_eq!(
            argv,
            [
                "mpirun",
                "--output",
                ":raw",
                "--hostfile",
                "/tmp/h",
                "-cwd",
                "/work dir",
                "-x",
                "X=a b",
                "--mca",
                "btl_tcp_links",
                "2",
                "--bind-to",
                "none",
                "--",
                "prog",
                "two words"
            ]
        );
        assert!(mpi_argv("mpirun", true, "h", None, &[], &["'unclosed".into()], &[]).is_err());
        // Open MPI 4: no --output flag.
        let plain = mpi_argv("mpirun", false, "/tmp/h", None, &[], &[], &["prog".into()]).unwrap();
        assert_eq!(plain, ["mpirun", "--hostfile", "/tmp/h", "--", "prog"]);
        assert!(plan_ranks(Backend::Mpi, &hosts, &opts(), &mut |_| None).is_err());
    }

    #[test]
    fn backend_names() {
        for (name, b) in [
            ("ring", Backend::Ring),
            ("mpi", Backend::Mpi),
            ("nccl", Backend::Nccl),
            ("jaccl", Backend::Jaccl),
            ("jaccl-ring", Backend::JacclRing),
        ] {
            assert_eq!(Backend::from_name(name).unwrap(), b);
        }
        assert_eq!(Backend::from_name("RING").unwrap_err().exit_code(), 2);
    }
}
