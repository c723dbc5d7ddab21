//! Several processes on loopback as one MLX ring: a test starts its own test binary once per
//! rank, filtered to one worker test, with the ring backend's environment (`MLX_RANK`,
//! `MLX_HOSTFILE`) and its own variables, and waits for all of them within a time bound.
//!
//! ```no_run
//! use std::time::Duration;
//! // In the parent test: two ranks of the worker test `ring_worker`.
//! let ranks = mlx_test_data::ring::run("ring_worker", 2, &[("ROLE", "sum".into())],
//!     Duration::from_secs(60));
//! for r in &ranks {
//!     assert!(r.ended && r.status.success(), "{}", r.text());
//! }
//! ```

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// What one rank's process did.
#[derive(Debug)]
pub struct RankOutput {
    /// Its rank.
    pub rank: usize,
    /// Its exit status (after a kill, the kill's).
    pub status: ExitStatus,
    /// Whether it ended by itself within the bound (`false`: it was killed).
    pub ended: bool,
    /// Its stdout.
    pub stdout: String,
    /// Its stderr.
    pub stderr: String,
    /// How long it ran.
    pub elapsed: Duration,
}

impl RankOutput {
    /// Panics (with its output) unless it ended by itself with status 0.
    pub fn assert_succeeded(&self) {
        assert!(self.ended, "hung: {}", self.text());
        assert!(self.status.success(), "{}", self.text());
    }

    /// Stdout then stderr, for assertion messages.
    pub fn text(&self) -> String {
        format!("[rank {}]\n{}{}", self.rank, self.stdout, self.stderr)
    }
}

/// A ring hostfile for `n` ranks on 127.0.0.1, each on a port the OS just handed out (free
/// when this returns, barring a race), in a fresh file under the temporary folder.
pub fn hostfile(n: usize, tag: &str) -> PathBuf {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
        .collect();
    let entries: Vec<String> = listeners
        .iter()
        .map(|l| format!("[\"127.0.0.1:{}\"]", l.local_addr().unwrap().port()))
        .collect();
    let path = std::env::temp_dir().join(format!(
        "mlx-ring-{tag}-{}-{n}-{:?}.json",
        std::process::id(),
        Instant::now()
    ));
    std::fs::write(&path, format!("[{}]", entries.join(","))).expect("write the hostfile");
    path
}

/// Starts rank `rank` of the ring in `hostfile`: this test binary, filtered to `test`, with
/// `env` set.
pub fn spawn(test: &str, rank: usize, hostfile: &PathBuf, env: &[(&str, String)]) -> Child {
    let mut command = Command::new(std::env::current_exe().expect("the test binary"));
    command
        .args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env("MLX_RANK", rank.to_string())
        .env("MLX_HOSTFILE", hostfile)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        command.env(k, v);
    }
    command.spawn().expect("start a rank")
}

/// Waits for every child at most `limit` (from now), killing those still running then; the
/// outputs are read on threads so that no child blocks on a full pipe.
pub fn wait_all(children: Vec<Child>, limit: Duration) -> Vec<RankOutput> {
    let start = Instant::now();
    let running: Vec<_> = children
        .into_iter()
        .map(|mut child| {
            let stdout = child.stdout.take().map(read_on_thread);
            let stderr = child.stderr.take().map(read_on_thread);
            (child, stdout, stderr)
        })
        .collect();
    // Poll every child in one loop, so that each one's end time is its own.
    let mut ends: Vec<Option<(ExitStatus, bool, Duration)>> = vec![None; running.len()];
    let mut running = running;
    while ends.iter().any(Option::is_none) {
        for (i, (child, _, _)) in running.iter_mut().enumerate() {
            if ends[i].is_some() {
                continue;
            }
            if let Some(status) = child.try_wait().expect("wait") {
                ends[i] = Some((status, true, start.elapsed()));
            } else if start.elapsed() > limit {
                let _ = child.kill();
                ends[i] = Some((child.wait().expect("wait"), false, start.elapsed()));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    running
        .into_iter()
        .zip(ends)
        .enumerate()
        .map(|(rank, ((_, stdout, stderr), end))| {
            let (status, ended, elapsed) = end.expect("every child ended");
            let join = |h: Option<std::thread::JoinHandle<String>>| {
                h.map(|h| h.join().unwrap_or_default()).unwrap_or_default()
            };
            RankOutput {
                rank,
                status,
                ended,
                stdout: join(stdout),
                stderr: join(stderr),
                elapsed,
            }
        })
        .collect()
}

fn read_on_thread<R: std::io::Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = r.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs `n` ranks of the worker test `test` on a fresh loopback ring with `env`, and waits
/// for all of them at most `limit`.
pub fn run(test: &str, n: usize, env: &[(&str, String)], limit: Duration) -> Vec<RankOutput> {
    let file = hostfile(n, test);
    let children = (0..n).map(|r| spawn(test, r, &file, env)).collect();
    let outputs = wait_all(children, limit);
    let _ = std::fs::remove_file(&file);
    outputs
}
