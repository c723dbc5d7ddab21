//! Spawning the ranks, streaming their output, and stopping them all when one fails.
//!
//! Every rank (or `ssh` to it) is started in its own process group, so that a signal to the
//! group also reaches whatever the rank started. The supervisor polls the ranks; when one
//! exits with a non-zero status or a signal, when the launcher receives SIGINT/SIGTERM/SIGHUP,
//! or when the time limit passes, it sends SIGTERM to every rank's group (and, for remote
//! ranks, to the remote process group through a second ssh), waits a grace period, then
//! sends SIGKILL.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::remote;
use crate::LaunchError;

/// What happens to one output stream of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Copied to the launcher's own stream as it arrives.
    Passthrough,
    /// Copied line by line, each line starting with this prefix.
    Prefixed(String),
    /// Dropped.
    Discard,
}

/// One process to supervise: a rank, or `mpirun`.
#[derive(Debug)]
pub struct Job {
    /// How messages name it, e.g. `rank 1 (127.0.0.1)`.
    pub label: String,
    /// The command, environment and directory already set.
    pub command: Command,
    /// For a remote rank, the ssh host: its first stdout line is then the remote process
    /// group (see [`remote::PGID_MARKER`]), which teardown signals through ssh.
    pub remote_host: Option<String>,
    /// Its stdout.
    pub stdout: Output,
    /// Its stderr.
    pub stderr: Output,
    /// Whether it reads the launcher's stdin (rank 0, so that an interactive program such as
    /// `qwen_chat` can be driven; copied through a pipe, since a rank in its own process
    /// group may not read the terminal); the others read nothing.
    pub stdin: bool,
}

/// How supervision ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Settings {
    /// Between SIGTERM and SIGKILL.
    pub grace: Duration,
    /// Stop everything after this long.
    pub timeout: Option<Duration>,
}

/// Why the launch ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every job exited with status 0.
    Success,
    /// Job `index` (its label attached) failed first with this status.
    Failed {
        /// Position of the job.
        index: usize,
        /// Its label.
        label: String,
        /// Its exit status.
        status: ExitStatus,
    },
    /// The time limit passed.
    TimedOut(Duration),
    /// The launcher received this signal.
    Interrupted(i32),
}

impl Outcome {
    /// The launcher's exit code: 0 on success, the failing job's exit code (1 when it was
    /// killed by a signal), 124 after the time limit, 128 + the signal when interrupted.
    ///
    /// ```
    /// use mlx_launch::supervise::Outcome;
    /// use std::os::unix::process::ExitStatusExt;
    /// use std::process::ExitStatus;
    /// let failed = |raw| Outcome::Failed { index: 1, label: "rank 1".into(), status: ExitStatus::from_raw(raw) };
    /// assert_eq!(failed(3 << 8).exit_code(), 3);
    /// assert_eq!(failed(9).exit_code(), 1); // killed by SIGKILL
    /// assert_eq!(Outcome::Interrupted(2).exit_code(), 130);
    /// ```
    pub fn exit_code(&self) -> i32 {
        match self {
            Outcome::Success => 0,
            Outcome::Failed { status, .. } => status.code().filter(|&c| c != 0).unwrap_or(1),
            Outcome::TimedOut(_) => 124,
            Outcome::Interrupted(sig) => 128 + sig,
        }
    }
}

/// Describes an exit status for messages: `exited with status 3`, `was killed by signal 9`.
///
/// ```
/// use std::os::unix::process::ExitStatusExt;
/// use std::process::ExitStatus;
/// let d = mlx_launch::supervise::describe(ExitStatus::from_raw(3 << 8));
/// assert_eq!(d, "exited with status 3");
/// ```
pub fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => format!("ended ({status})"),
    }
}

/// Installs flags for SIGINT, SIGTERM and SIGHUP: afterwards the launcher is not killed by
/// them; the returned cell holds the last one received (0 for none), which [`run`] watches.
pub fn catch_signals() -> Result<Arc<AtomicUsize>, LaunchError> {
    let caught = Arc::new(AtomicUsize::new(0));
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        signal_hook::flag::register_usize(sig, Arc::clone(&caught), sig as usize).map_err(|e| {
            LaunchError::Failed(format!("cannot install a handler for signal {sig}: {e}"))
        })?;
    }
    Ok(caught)
}

struct Running {
    label: String,
    child: Child,
    /// The local process group (the child's pid: it leads its own group).
    pgid: i32,
    remote_host: Option<String>,
    remote_pgid: Arc<Mutex<Option<u32>>>,
    status: Option<ExitStatus>,
    readers: Vec<JoinHandle<()>>,
}

/// Starts every job and supervises them to the end (see the module docs). A job that
/// cannot be started stops the ones already running and is an error.
pub fn run(
    jobs: Vec<Job>,
    settings: Settings,
    interrupted: &AtomicUsize,
) -> Result<Outcome, LaunchError> {
    let mut running: Vec<Running> = Vec::with_capacity(jobs.len());
    for job in jobs {
        match start(job) {
            Ok(r) => running.push(r),
            Err(e) => {
                terminate(&mut running, settings.grace);
                finish(&mut running);
                return Err(e);
            }
        }
    }

    let started = Instant::now();
    let outcome = loop {
        let sig = interrupted.load(Ordering::SeqCst);
        if sig != 0 {
            break Outcome::Interrupted(sig as i32);
        }
        if let Some(limit) = settings.timeout {
            if started.elapsed() >= limit {
                break Outcome::TimedOut(limit);
            }
        }
        let mut failed = None;
        for (index, r) in running.iter_mut().enumerate() {
            if r.status.is_some() {
                continue;
            }
            match r.child.try_wait() {
                Ok(Some(status)) => {
                    r.status = Some(status);
                    if !status.success() && failed.is_none() {
                        failed = Some(Outcome::Failed {
                            index,
                            label: r.label.clone(),
                            status,
                        });
                    }
                }
                Ok(None) => {}
                Err(e) => {
                    return Err(LaunchError::Failed(format!(
                        "cannot wait for {}: {e}",
                        r.label
                    )))
                }
            }
        }
        if let Some(f) = failed {
            break f;
        }
        if running.iter().all(|r| r.status.is_some()) {
            break Outcome::Success;
        }
        std::thread::sleep(Duration::from_millis(20));
    };

    if outcome != Outcome::Success {
        let others = if running.len() > 1 {
            "stopping the other ranks"
        } else {
            "stopping"
        };
        let msg = match &outcome {
            Outcome::Failed { label, status, .. } => {
                format!("{label} {}; {others}", describe(*status))
            }
            Outcome::TimedOut(limit) => {
                format!("time limit of {:?} reached; stopping all ranks", limit)
            }
            Outcome::Interrupted(sig) => {
                format!("received signal {sig}; stopping all ranks")
            }
            Outcome::Success => unreachable!(),
        };
        eprintln!("mlx-launch: {msg}");
        terminate(&mut running, settings.grace);
    }
    finish(&mut running);
    Ok(outcome)
}

fn start(mut job: Job) -> Result<Running, LaunchError> {
    let remote = job.remote_host.is_some();
    // Remote ranks need stdout for the process-group line even when it is discarded.
    let stdout = if job.stdout == Output::Discard && !remote {
        Stdio::null()
    } else {
        Stdio::piped()
    };
    let stderr = if job.stderr == Output::Discard {
        Stdio::null()
    } else {
        Stdio::piped()
    };
    job.command
        .stdin(if job.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    let mut child = job.command.spawn().map_err(|e| {
        let program = job.command.get_program().to_string_lossy().into_owned();
        LaunchError::Failed(format!("cannot start {} ({program}): {e}", job.label))
    })?;
    if let Some(mut input) = child.stdin.take() {
        // Ends with the launcher's stdin (EOF closes the pipe) or with the rank (a write
        // error); never joined.
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut std::io::stdin().lock(), &mut input);
        });
    }
    let pgid = i32::try_from(child.id()).expect("pids fit in pid_t");
    let remote_pgid = Arc::new(Mutex::new(None));
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        let cell = remote.then(|| Arc::clone(&remote_pgid));
        let mode = job.stdout.clone();
        readers.push(std::thread::spawn(move || {
            pump(out, mode, cell, || Box::new(std::io::stdout()))
        }));
    }
    if let Some(err) = child.stderr.take() {
        let mode = job.stderr.clone();
        readers.push(std::thread::spawn(move || {
            pump(err, mode, None, || Box::new(std::io::stderr()))
        }));
    }
    Ok(Running {
        label: job.label,
        child,
        pgid,
        remote_host: job.remote_host,
        remote_pgid,
        status: None,
        readers,
    })
}

/// Copies one child stream to the launcher's stream. Write errors (a closed launcher
/// stdout) are ignored so that the child never blocks on a full pipe.
fn pump(
    src: impl Read,
    mode: Output,
    pgid_cell: Option<Arc<Mutex<Option<u32>>>>,
    dst: impl Fn() -> Box<dyn Write>,
) {
    let mut src = BufReader::new(src);
    if let Some(cell) = pgid_cell {
        let mut first = Vec::new();
        if src.read_until(b'\n', &mut first).unwrap_or(0) == 0 {
            return;
        }
        match remote::parse_pgid_line(&String::from_utf8_lossy(&first)) {
            Some(pgid) => *cell.lock().unwrap_or_else(|p| p.into_inner()) = Some(pgid),
            // Not the marker (a login message?): it is output like any other.
            None => emit(&mode, &first, &dst),
        }
    }
    match mode {
        Output::Passthrough => {
            let mut buf = [0u8; 8192];
            loop {
                match src.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => emit(&mode, &buf[..n], &dst),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
        }
        Output::Prefixed(_) | Output::Discard => {
            let mut line = Vec::new();
            loop {
                line.clear();
                match src.read_until(b'\n', &mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => emit(&mode, &line, &dst),
                }
            }
        }
    }
}

fn emit(mode: &Output, data: &[u8], dst: &impl Fn() -> Box<dyn Write>) {
    let mut out = dst();
    let _ = match mode {
        Output::Discard => Ok(()),
        Output::Passthrough => out.write_all(data).and_then(|()| out.flush()),
        Output::Prefixed(prefix) => {
            // One write per line, so that lines of different ranks do not interleave.
            let mut line = Vec::with_capacity(prefix.len() + data.len() + 1);
            line.extend_from_slice(prefix.as_bytes());
            line.extend_from_slice(data);
            if !line.ends_with(b"\n") {
                line.push(b'\n');
            }
            out.write_all(&line).and_then(|()| out.flush())
        }
    };
}

/// Sends `sig` to every job's process group (exited ones too: what they started may still
/// run), and for remote jobs to the remote group through ssh. Returns the ssh processes.
fn signal_all(running: &[Running], sig: i32, name: &str) -> Vec<Child> {
    let mut helpers = Vec::new();
    for r in running {
        if let Some(host) = &r.remote_host {
            let pgid = *r.remote_pgid.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(pgid) = pgid {
                let argv = remote::kill_argv(host, pgid, name);
                let spawned = Command::new(&argv[0])
                    .args(&argv[1..])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .process_group(0)
                    .spawn();
                if let Ok(c) = spawned {
                    helpers.push(c);
                }
            }
        }
        // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names the
        // process group this launcher created for the job.
        unsafe {
            libc::kill(-r.pgid, sig);
        }
    }
    helpers
}

/// SIGTERM to everything, SIGKILL to what is left after `grace`.
fn terminate(running: &mut [Running], grace: Duration) {
    let mut helpers = signal_all(running, libc::SIGTERM, "TERM");
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        let mut all_done = true;
        for r in running.iter_mut().filter(|r| r.status.is_none()) {
            match r.child.try_wait() {
                Ok(Some(status)) => r.status = Some(status),
                Ok(None) => all_done = false,
                Err(_) => {}
            }
        }
        if all_done {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if running.iter().any(|r| r.status.is_none()) {
        eprintln!(
            "mlx-launch: ranks still running after {:?}; sending SIGKILL",
            grace
        );
    }
    // Also the groups whose leader is gone: a grandchild that ignored SIGTERM.
    helpers.extend(signal_all(running, libc::SIGKILL, "KILL"));
    reap_helpers(helpers, Duration::from_secs(5));
}

fn reap_helpers(mut helpers: Vec<Child>, within: Duration) {
    let deadline = Instant::now() + within;
    while !helpers.is_empty() && Instant::now() < deadline {
        helpers.retain_mut(|c| !matches!(c.try_wait(), Ok(Some(_)) | Err(_)));
        std::thread::sleep(Duration::from_millis(20));
    }
    for mut c in helpers {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Waits for every job and for its output to be copied (at most a moment more: a process
/// that escaped its group may hold a pipe open forever).
fn finish(running: &mut [Running]) {
    for r in running.iter_mut() {
        if r.status.is_none() {
            r.status = r.child.wait().ok();
        }
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let pending = running
            .iter()
            .flat_map(|r| r.readers.iter())
            .any(|h| !h.is_finished());
        if !pending || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    for r in running.iter_mut() {
        for h in std::mem::take(&mut r.readers) {
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}
