//! The command line of `mlx-launch` and the launch it drives.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use clap::Parser;

use crate::backend::{self, Backend, Options, PortPicker, RankPlan};
use crate::hostfile::{is_local_name, Hostfile};
use crate::remote::{self, Cwd};
use crate::supervise::{self, Job, Output, Settings};
use crate::LaunchError;

/// Launch a distributed MLX program: one process per rank, locally or over ssh, with the
/// environment MLX's distributed backends read (the Rust counterpart of `mlx.launch`).
///
/// Exit status: 0 when every rank exits 0; the first failing rank's exit code (1 if it was
/// killed by a signal); 2 for bad input; 124 after --timeout; 128+N on signal N.
#[derive(Debug, Parser)]
#[command(name = "mlx-launch", version)]
pub struct Args {
    /// Comma-separated hosts, one rank each (repeats allowed); default 127.0.0.1.
    #[arg(long, value_name = "HOST,...", conflicts_with = "hostfile")]
    pub hosts: Option<String>,

    /// JSON hostfile in mlx.launch's format.
    #[arg(long, value_name = "FILE")]
    pub hostfile: Option<PathBuf>,

    /// Ranks per host in --hosts (so `-n 4` alone is 4 local ranks).
    #[arg(
        short = 'n',
        long = "repeat-hosts",
        value_name = "N",
        conflicts_with = "hostfile"
    )]
    pub repeat_hosts: Option<usize>,

    /// Distributed backend [default: the hostfile's "backend", else ring].
    #[arg(long, value_enum)]
    pub backend: Option<Backend>,

    /// Ring: first port on remote hosts (+1 per rank, IP and connection); JACCL: the
    /// coordinator's port. Local ranks get free ports instead.
    #[arg(short = 'p', long, value_name = "PORT", default_value_t = 32323)]
    pub starting_port: u16,

    /// Ring: connections between neighbours per IP.
    #[arg(long, value_name = "K", default_value_t = 1)]
    pub connections_per_ip: usize,

    /// NCCL: rendezvous port on rank 0.
    #[arg(long, value_name = "PORT", default_value_t = 12345)]
    pub nccl_port: u16,

    /// Environment variable for every rank (repeatable).
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,

    /// MPI: extra mpirun arguments, split like a shell would (repeatable).
    #[arg(long = "mpi-arg", value_name = "ARGS", allow_hyphen_values = true)]
    pub mpi_args: Vec<String>,

    /// Working directory of every rank [default: the current one, where it exists].
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<PathBuf>,

    /// Log what is launched, turn on the backend's logging and show other ranks' stdout.
    #[arg(long)]
    pub verbose: bool,

    /// Stop every rank and fail after this many seconds.
    #[arg(long, value_name = "SECONDS")]
    pub timeout: Option<f64>,

    /// Seconds between SIGTERM and SIGKILL when stopping ranks.
    #[arg(long, value_name = "SECONDS", default_value_t = 5.0)]
    pub grace_period: f64,

    /// The command each rank runs (after `--`).
    #[arg(
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "COMMAND"
    )]
    pub command: Vec<String>,
}

/// Parses the process arguments, launches and returns the exit code (printing errors).
pub fn main() -> i32 {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    match launch(&args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mlx-launch: {e}");
            e.exit_code()
        }
    }
}

fn seconds(flag: &str, s: f64) -> Result<Duration, LaunchError> {
    Duration::try_from_secs_f64(s)
        .ok()
        .filter(|_| s.is_finite())
        .ok_or_else(|| LaunchError::Usage(format!("{flag} {s} is not a number of seconds")))
}

/// Launches as `args` say and returns the exit code.
pub fn launch(args: &Args) -> Result<i32, LaunchError> {
    let hostfile = match &args.hostfile {
        Some(path) => Hostfile::from_path(path)?,
        None => Hostfile::from_list(
            args.hosts.as_deref().unwrap_or("127.0.0.1"),
            args.repeat_hosts.unwrap_or(1),
        )?,
    };
    let backend = match (args.backend, &hostfile.backend) {
        (Some(b), _) => b,
        (None, Some(name)) => Backend::from_name(name)?,
        (None, None) => Backend::Ring,
    };
    let mut env = Vec::new();
    for assignment in hostfile.envs.iter().chain(&args.env) {
        env.push(backend::parse_env(assignment)?);
    }
    let timeout = args.timeout.map(|t| seconds("--timeout", t)).transpose()?;
    if timeout == Some(Duration::ZERO) {
        return Err(LaunchError::Usage("--timeout must be more than 0".into()));
    }
    let settings = Settings {
        grace: seconds("--grace-period", args.grace_period)?,
        timeout,
    };
    if args.command.is_empty() || args.command[0].is_empty() {
        return Err(LaunchError::Usage("no command to run".into()));
    }
    let any_local = hostfile.hosts.iter().any(|h| is_local_name(&h.ssh));
    let cwd = match &args.cwd {
        Some(dir) => {
            if any_local && !dir.is_dir() {
                return Err(LaunchError::Usage(format!(
                    "--cwd {}: not a directory",
                    dir.display()
                )));
            }
            // Remote ranks resolve a relative --cwd against their login directory; make
            // it mean the same everywhere.
            let dir = if dir.is_relative() {
                std::env::current_dir()
                    .map(|c| c.join(dir))
                    .unwrap_or_else(|_| dir.clone())
            } else {
                dir.clone()
            };
            Cwd::Required(path_str(&dir)?)
        }
        None => Cwd::IfExists(
            std::env::current_dir()
                .ok()
                .and_then(|d| d.to_str().map(str::to_string))
                .unwrap_or_else(|| ".".into()),
        ),
    };

    // Installed before any rank starts, so that no signal can leave ranks behind.
    let interrupted = supervise::catch_signals()?;

    let jobs;
    let _temp; // removes the launcher's temporary files once the ranks are done
    if backend == Backend::Mpi {
        let mpirun = find_in_path("mpirun").ok_or_else(|| {
            LaunchError::Usage(
                "the mpi backend needs mpirun, which is not on PATH (install Open MPI or \
                 choose another --backend)"
                    .into(),
            )
        })?;
        let temp = TempDir::new()?;
        let hostfile_path = temp.write("mpi-hostfile", &backend::mpi_hostfile(&hostfile.hosts))?;
        let cwd_arg = match &cwd {
            Cwd::Required(d) => Some(d.as_str()),
            Cwd::IfExists(_) => None,
        };
        // Open MPI 5's `--output :raw` (what mlx.launch passes) is an unknown option to 4.
        let raw_output = Command::new(&mpirun)
            .arg("--version")
            .output()
            .ok()
            .and_then(|o| backend::open_mpi_major(&String::from_utf8_lossy(&o.stdout)))
            .is_some_and(|major| major >= 5);
        let argv = backend::mpi_argv(
            &path_str(&mpirun)?,
            raw_output,
            &path_str(&hostfile_path)?,
            cwd_arg,
            &env,
            &args.mpi_args,
            &args.command,
        )?;
        if args.verbose {
            eprintln!("mlx-launch: running {}", remote::quote_join(&argv));
        }
        let mut command = Command::new(&argv[0]);
        command.args(&argv[1..]);
        jobs = vec![Job {
            label: "mpirun".into(),
            command,
            remote_host: None,
            stdout: Output::Passthrough,
            stderr: Output::Passthrough,
            stdin: true,
        }];
        _temp = Some(temp);
    } else {
        if !args.mpi_args.is_empty() {
            return Err(LaunchError::Usage(
                "--mpi-arg only applies to --backend mpi".into(),
            ));
        }
        let opts = Options {
            starting_port: args.starting_port,
            connections_per_ip: args.connections_per_ip,
            nccl_port: args.nccl_port,
            verbose: args.verbose,
            env,
        };
        let mut picker = PortPicker::default();
        let plans =
            backend::plan_ranks(backend, &hostfile.hosts, &opts, &mut |ip| picker.pick(ip))?;
        drop(picker); // free the ports for the ranks
        let temp = if plans.iter().any(|p| p.local && !p.files.is_empty()) {
            Some(TempDir::new()?)
        } else {
            None
        };
        jobs = rank_jobs(&plans, temp.as_ref(), &cwd, args)?;
        _temp = temp;
    }

    let outcome = supervise::run(jobs, settings, &interrupted)?;
    Ok(outcome.exit_code())
}

/// The job of each rank: the command itself for a local rank, ssh for a remote one.
fn rank_jobs(
    plans: &[RankPlan],
    temp: Option<&TempDir>,
    cwd: &Cwd,
    args: &Args,
) -> Result<Vec<Job>, LaunchError> {
    // Local ranks share one file per distinct content.
    let mut written: HashMap<(String, String), PathBuf> = HashMap::new();
    let mut jobs = Vec::with_capacity(plans.len());
    for plan in plans {
        let label = format!("rank {} ({})", plan.rank, plan.host);
        let (stdout, stderr) = if plan.rank == 0 {
            (Output::Passthrough, Output::Passthrough)
        } else {
            let prefix = Output::Prefixed(format!("[rank {}] ", plan.rank));
            let stdout = if args.verbose {
                prefix.clone()
            } else {
                Output::Discard
            };
            (stdout, prefix)
        };
        let (command, remote_host) = if plan.local {
            let mut command = Command::new(&args.command[0]);
            command.args(&args.command[1..]);
            if let Cwd::Required(dir) = cwd {
                command.current_dir(dir);
            }
            command.envs(plan.env.iter().map(|(k, v)| (k, v)));
            for f in &plan.files {
                let key = (f.var.clone(), f.content.clone());
                let path = match written.get(&key) {
                    Some(p) => p.clone(),
                    None => {
                        let temp = temp.expect("a temporary directory for local files");
                        let p = temp.write(&format!("{}-{}", f.var, written.len()), &f.content)?;
                        written.insert(key, p.clone());
                        p
                    }
                };
                command.env(&f.var, path);
            }
            if args.verbose {
                let env: Vec<String> = command
                    .get_envs()
                    .filter_map(|(k, v)| Some(format!("{}={}", k.to_str()?, v?.to_str()?)))
                    .collect();
                eprintln!(
                    "mlx-launch: {label}: {} {}",
                    remote::quote_join(&env),
                    remote::quote_join(&args.command)
                );
            }
            (command, None)
        } else {
            let script = remote::remote_script(plan, cwd, &args.command);
            let argv = remote::ssh_argv(&plan.host, &script);
            if args.verbose {
                eprintln!("mlx-launch: {label}: {}", remote::quote_join(&argv));
            }
            let mut command = Command::new(&argv[0]);
            command.args(&argv[1..]);
            (command, Some(plan.host.clone()))
        };
        jobs.push(Job {
            label,
            command,
            remote_host,
            stdout,
            stderr,
            stdin: jobs.is_empty(),
        });
    }
    Ok(jobs)
}

fn path_str(p: &Path) -> Result<String, LaunchError> {
    p.to_str()
        .map(str::to_string)
        .ok_or_else(|| LaunchError::Usage(format!("path {} is not UTF-8", p.display())))
}

/// `program`'s path when an executable file of that name is on PATH.
fn find_in_path(program: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// A private directory for the launcher's files, removed on drop.
#[derive(Debug)]
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Result<Self, LaunchError> {
        use std::os::unix::fs::DirBuilderExt;
        let base = std::env::temp_dir();
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let mut last = None;
        for attempt in 0..100u32 {
            let dir = base.join(format!(
                "mlx-launch-{}-{:x}",
                std::process::id(),
                nanos.wrapping_add(attempt)
            ));
            match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
                Ok(()) => return Ok(TempDir(dir)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => last = Some(e),
                Err(e) => {
                    return Err(LaunchError::Failed(format!(
                        "cannot create a temporary directory in {}: {e}",
                        base.display()
                    )))
                }
            }
        }
        Err(LaunchError::Failed(format!(
            "cannot create a temporary directory in {}: {last:?}",
            base.display()
        )))
    }

    fn write(&self, name: &str, content: &str) -> Result<PathBuf, LaunchError> {
        let path = self.0.join(format!("{name}.json"));
        std::fs::write(&path, content)
            .map_err(|e| LaunchError::Failed(format!("cannot write {}: {e}", path.display())))?;
        Ok(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_parse_like_mlx_launch() {
        let a = Args::try_parse_from([
            "mlx-launch",
            "--hosts",
            "10.0.0.1,10.0.0.2",
            "-n",
            "2",
            "--backend",
            "nccl",
            "--env",
            "A=1",
            "--env",
            "B=2",
            "--cwd",
            "/tmp",
            "--",
            "python3",
            "-u",
            "x.py",
        ])
        .unwrap();
        assert_eq!(a.hosts.as_deref(), Some("10.0.0.1,10.0.0.2"));
        assert_eq!(a.repeat_hosts, Some(2));
        assert_eq!(a.backend, Some(Backend::Nccl));
        assert_eq!(a.env, ["A=1", "B=2"]);
        assert_eq!(a.command, ["python3", "-u", "x.py"]);

        // Without `--` the command starts at the first positional word, as in mlx.launch.
        let a = Args::try_parse_from(["mlx-launch", "-n", "2", "prog", "--flag"]).unwrap();
        assert_eq!(a.command, ["prog", "--flag"]);
        assert_eq!(a.starting_port, 32323);
        assert_eq!(a.nccl_port, 12345);
    }

    #[test]
    fn bad_flags_are_usage_errors() {
        for argv in [
            &["mlx-launch", "-n", "2"][..],
            &["mlx-launch", "--backend", "gloo", "--", "true"],
            &[
                "mlx-launch",
                "--hostfile",
                "h.json",
                "--hosts",
                "a",
                "--",
                "true",
            ],
            &[
                "mlx-launch",
                "--hostfile",
                "h.json",
                "-n",
                "2",
                "--",
                "true",
            ],
            &["mlx-launch", "-n", "x", "--", "true"],
        ] {
            let err = Args::try_parse_from(argv).unwrap_err();
            assert_eq!(err.exit_code(), 2, "{argv:?}");
        }
    }

    #[test]
    fn temp_dir_is_private_and_removed() {
        use std::os::unix::fs::PermissionsExt;
        let t = TempDir::new().unwrap();
        let p = t.write("X", "content").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "content");
        let mode = std::fs::metadata(&t.0).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let dir = t.0.clone();
        drop(t);
        assert!(!dir.exists());
    }
}
