//! Runs the built `mlx-launch` on local commands (and, through a stand-in `ssh` on PATH, on
//! "remote" ones). Every run is bounded in time.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_mlx-launch");

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

fn kill_tree(child: &Child) {
    let pid = child.id() as i32;
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe {
        libc::kill(-pid, libc::SIGKILL);
        libc::kill(pid, libc::SIGKILL);
    }
}

/// Runs the launcher with `args` (and `env`), failing the test after `limit`.
fn launch_env(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Run {
    launch_with_input(args, env, None, limit)
}

/// [`launch_env`] with `input` on the launcher's stdin (then end of input).
fn launch_with_input(
    args: &[&str],
    env: &[(&str, &str)],
    input: Option<&[u8]>,
    limit: Duration,
) -> Run {
    let start = Instant::now();
    let mut cmd = Command::new(BIN);
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    let mut child = cmd.spawn().unwrap();
    if let (Some(mut stdin), Some(input)) = (child.stdin.take(), input) {
        use std::io::Write;
        stdin.write_all(input).unwrap();
    }
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let t_out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let t_err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let pid = child.id();
    std::thread::spawn(move || {
        let status = child.wait().unwrap();
        let _ = tx.send(status);
    });
    let status = match rx.recv_timeout(limit) {
        Ok(s) => s,
        Err(_) => {
            // SAFETY: kill(2) has no memory-safety preconditions.
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
            panic!("mlx-launch {args:?} still running after {limit:?}");
        }
    };
    let elapsed = start.elapsed();
    Run {
        code: status.code(),
        stdout: t_out.join().unwrap(),
        stderr: t_err.join().unwrap(),
        elapsed,
    }
}

fn launch(args: &[&str]) -> Run {
    launch_env(args, &[], Duration::from_secs(30))
}

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mlx-launch-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn alive(pid: i32) -> bool {
    // A zombie has been killed; only its parent has not collected it yet.
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        if let Some(state) = stat
            .rsplit(')')
            .next()
            .and_then(|s| s.split_whitespace().next())
        {
            if state == "Z" {
                return false;
            }
        }
    }
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    unsafe { libc::kill(pid, 0) == 0 }
}

/// Waits (briefly) for `pid` to be gone.
fn gone(pid: i32) -> bool {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

fn read_pid(path: &Path) -> i32 {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(s) = std::fs::read_to_string(path) {
            if let Ok(p) = s.trim().parse() {
                return p;
            }
        }
        assert!(
            Instant::now() < deadline,
            "{} never written",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Checks a ring run of two local ranks: rank 0's stdout only, a 2-entry loopback hostfile
/// with distinct ports, removed after the run.
fn check_two_local_ranks(host_args: &[&str]) {
    let script = r#"echo rank=$MLX_RANK size=$MLX_WORLD_SIZE; test -f "$MLX_HOSTFILE" || exit 9
if [ "$MLX_RANK" = 0 ]; then echo "path=$MLX_HOSTFILE"; cat "$MLX_HOSTFILE"; echo; fi"#;
    let mut args = host_args.to_vec();
    args.extend(["--", "sh", "-c", script]);
    let r = launch(&args);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.contains("rank=0 size=2\n"), "{}", r.stdout);
    assert!(
        !r.stdout.contains("rank=1"),
        "rank 1's stdout is not shown: {}",
        r.stdout
    );

    let path = r
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("path="))
        .unwrap();
    let json = r
        .stdout
        .lines()
        .skip_while(|l| !l.starts_with("path="))
        .nth(1)
        .unwrap();
    let ring: Vec<Vec<String>> = serde_json::from_str(json).unwrap();
    assert_eq!(ring.len(), 2, "{json}");
    let ports: Vec<u16> = ring
        .iter()
        .map(|node| {
            assert_eq!(node.len(), 1);
            let port = node[0].strip_prefix("127.0.0.1:").expect(&node[0]);
            port.parse().unwrap()
        })
        .collect();
    assert_ne!(ports[0], ports[1]);
    assert!(ports.iter().all(|&p| p > 0));
    assert!(
        !Path::new(path).exists(),
        "the launcher removes its hostfile"
    );
}

#[test]
fn two_local_ranks_get_rank_size_and_ring_hostfile() {
    check_two_local_ranks(&["-n", "2"]);
}

#[test]
fn hosts_list_of_loopbacks_works_like_n() {
    check_two_local_ranks(&["--hosts", "127.0.0.1,127.0.0.1"]);
    check_two_local_ranks(&["--hosts", "localhost", "-n", "2"]);
}

#[test]
fn failing_rank_stops_the_others() {
    let dir = scratch("teardown");
    let pidfile = dir.join("sleep.pid");
    let script = format!(
        r#"if [ "$MLX_RANK" = 1 ]; then while [ ! -s {0} ]; do sleep 0.05; done; exit 3; fi
sleep 60 & echo $! > {0}; wait"#,
        pidfile.display()
    );
    let r = launch(&["-n", "2", "--", "sh", "-c", &script]);
    assert_eq!(r.code, Some(3), "the failing rank's code: {}", r.stderr);
    assert!(r.elapsed < Duration::from_secs(10), "{:?}", r.elapsed);
    assert!(
        r.stderr.contains(
            "mlx-launch: rank 1 (127.0.0.1) exited with status 3; stopping the other ranks"
        ),
        "{}",
        r.stderr
    );
    let pid = read_pid(&pidfile);
    assert!(gone(pid), "rank 0's sleep {pid} survived");
}

#[test]
fn ranks_ignoring_sigterm_are_killed_after_the_grace_period() {
    let dir = scratch("sigkill");
    let pidfile = dir.join("sleep.pid");
    let script = format!(
        r#"if [ "$MLX_RANK" = 1 ]; then while [ ! -s {0} ]; do sleep 0.05; done; kill -9 $$; fi
trap '' TERM; sleep 60 & echo $! > {0}; wait"#,
        pidfile.display()
    );
    let r = launch(&["-n", "2", "--grace-period", "1", "--", "sh", "-c", &script]);
    assert_eq!(r.code, Some(1), "killed by a signal gives 1: {}", r.stderr);
    assert!(
        r.stderr
            .contains("rank 1 (127.0.0.1) was killed by signal 9"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("sending SIGKILL"), "{}", r.stderr);
    assert!(r.elapsed < Duration::from_secs(8), "{:?}", r.elapsed);
    assert!(gone(read_pid(&pidfile)));
}

#[test]
fn other_ranks_stderr_is_prefixed_and_stdout_shown_only_when_verbose() {
    let script = r#"echo "err of $MLX_RANK" >&2; echo "out of $MLX_RANK""#;
    let r = launch(&["-n", "3", "--", "sh", "-c", script]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stderr.lines().any(|l| l == "err of 0"), "{}", r.stderr);
    assert!(
        r.stderr.lines().any(|l| l == "[rank 1] err of 1"),
        "{}",
        r.stderr
    );
    assert!(
        r.stderr.lines().any(|l| l == "[rank 2] err of 2"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stdout, "out of 0\n");

    let r = launch(&["-n", "2", "--verbose", "--", "sh", "-c", script]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.stdout.lines().any(|l| l == "out of 0"), "{}", r.stdout);
    assert!(
        r.stdout.lines().any(|l| l == "[rank 1] out of 1"),
        "{}",
        r.stdout
    );
    // --verbose turns on the ring backend's own logging.
    let r = launch(&[
        "-n",
        "1",
        "--verbose",
        "--",
        "sh",
        "-c",
        "echo v=$MLX_RING_VERBOSE",
    ]);
    assert!(r.stdout.contains("v=1"), "{}", r.stdout);
}

#[test]
fn rank_0_output_streams_before_it_exits() {
    let mut child = Command::new(BIN)
        .args([
            "-n",
            "1",
            "--",
            "sh",
            "-c",
            "echo early; sleep 3; echo late",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = out.read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = rx.recv_timeout(Duration::from_secs(10));
    let streamed_in = start.elapsed();
    let still_running = child.try_wait().unwrap().is_none();
    // SIGTERM (not SIGKILL) lets the launcher stop the rank and remove its files.
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    assert_eq!(line.unwrap(), "early\n");
    assert!(
        still_running && streamed_in < Duration::from_secs(2),
        "{streamed_in:?}"
    );
}

#[test]
fn env_cwd_and_exit_codes() {
    let dir = scratch("cwd");
    let r = launch(&[
        "-n",
        "2",
        "--env",
        "FOO=a b $c",
        "--env",
        "MLX_RANK=ignored",
        "--cwd",
        dir.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        r#"echo "[$FOO] $MLX_RANK $(pwd)""#,
    ]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let want = format!(
        "[a b $c] 0 {}\n",
        std::fs::canonicalize(&dir).unwrap().display()
    );
    assert_eq!(r.stdout, want);

    // A single rank's own exit code is the launcher's.
    let r = launch(&["-n", "1", "--", "sh", "-c", "exit 42"]);
    assert_eq!(r.code, Some(42));
    assert!(
        r.stderr
            .contains("rank 0 (127.0.0.1) exited with status 42"),
        "{}",
        r.stderr
    );
}

#[test]
fn nccl_env_for_local_ranks() {
    let r = launch(&[
        "--backend",
        "nccl",
        "-n",
        "2",
        "--verbose",
        "--",
        "sh",
        "-c",
        "echo $MLX_RANK/$MLX_WORLD_SIZE $NCCL_HOST_IP:$NCCL_PORT gpu=$CUDA_VISIBLE_DEVICES",
    ]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout.lines().any(|l| l == "0/2 127.0.0.1:12345 gpu=0"),
        "{}",
        r.stdout
    );
    assert!(
        r.stdout
            .lines()
            .any(|l| l == "[rank 1] 1/2 127.0.0.1:12345 gpu=1"),
        "{}",
        r.stdout
    );
}

#[test]
fn timeout_stops_everything() {
    let r = launch(&["-n", "2", "--timeout", "1", "--", "sleep", "30"]);
    assert_eq!(r.code, Some(124), "{}", r.stderr);
    assert!(r.stderr.contains("time limit"), "{}", r.stderr);
    assert!(r.elapsed < Duration::from_secs(8), "{:?}", r.elapsed);
}

#[test]
fn sigterm_to_the_launcher_stops_the_ranks() {
    let dir = scratch("sigterm");
    let script = format!("sleep 60 & echo $! > {}/$MLX_RANK.pid; wait", dir.display());
    let mut child = Command::new(BIN)
        .args(["-n", "2", "--", "sh", "-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pids = [read_pid(&dir.join("0.pid")), read_pid(&dir.join("1.pid"))];
    // SAFETY: kill(2) has no memory-safety preconditions.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            kill_tree(&child);
            panic!("the launcher did not stop");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.code(), Some(128 + libc::SIGTERM), "{err}");
    assert!(err.contains("received signal 15"), "{err}");
    for pid in pids {
        assert!(gone(pid), "{pid} survived");
    }
}

#[test]
fn bad_input_exits_2_with_a_message() {
    let dir = scratch("bad");
    let bad_json = dir.join("bad.json");
    std::fs::write(&bad_json, "[{\"ssh\": \"a\",").unwrap();
    let no_hosts = dir.join("empty.json");
    std::fs::write(&no_hosts, "[]").unwrap();
    let bogus_backend = dir.join("bogus.json");
    std::fs::write(
        &bogus_backend,
        r#"{"backend": "gloo", "hosts": [{"ssh": "127.0.0.1"}]}"#,
    )
    .unwrap();
    let bad_env = dir.join("env.json");
    std::fs::write(
        &bad_env,
        r#"{"envs": ["NOPE"], "hosts": [{"ssh": "127.0.0.1"}]}"#,
    )
    .unwrap();
    let empty_path = dir.join("empty-path");
    std::fs::create_dir_all(&empty_path).unwrap();

    let missing = dir.join("missing.json");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["--hostfile", missing.to_str().unwrap(), "--", "true"],
            "cannot read hostfile",
        ),
        (
            vec!["--hostfile", bad_json.to_str().unwrap(), "--", "true"],
            "not an mlx.launch hostfile",
        ),
        (
            vec!["--hostfile", no_hosts.to_str().unwrap(), "--", "true"],
            "no hosts",
        ),
        (
            vec!["--hostfile", bogus_backend.to_str().unwrap(), "--", "true"],
            "unknown backend \"gloo\"",
        ),
        (
            vec!["--hostfile", bad_env.to_str().unwrap(), "--", "true"],
            "not of the form K=V",
        ),
        (vec!["-n", "2"], "required"),
        (vec!["-n", "2", "--"], "required"),
        (
            vec!["--backend", "gloo", "--", "true"],
            "invalid value 'gloo'",
        ),
        (vec!["-n", "0", "--", "true"], "-n must be at least 1"),
        (vec!["--hosts", "a,,b", "--", "true"], "empty host name"),
        (
            vec!["--env", "NOEQUALS", "--", "true"],
            "not of the form K=V",
        ),
        (
            vec!["--env", "BAD-NAME=1", "--", "true"],
            "not a valid environment variable name",
        ),
        (vec!["--timeout", "-1", "--", "true"], "--timeout"),
        (
            vec!["--cwd", "/nonexistent/dir", "--", "true"],
            "not a directory",
        ),
        (
            vec!["--connections-per-ip", "0", "--", "true"],
            "at least 1",
        ),
        (
            vec!["--hosts", "no-such-host-for-ring", "--", "true"],
            "needs IP addresses",
        ),
        (
            vec!["--mpi-arg", "-x", "--", "true"],
            "only applies to --backend mpi",
        ),
    ];
    for (args, message) in cases {
        let r = launch(&args);
        assert_eq!(r.code, Some(2), "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains(message), "{args:?}: {}", r.stderr);
        assert!(!r.stderr.contains("panicked"), "{args:?}: {}", r.stderr);
    }

    let r = launch_env(
        &["--backend", "mpi", "-n", "2", "--", "true"],
        &[("PATH", empty_path.to_str().unwrap())],
        Duration::from_secs(30),
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains("needs mpirun, which is not on PATH"),
        "{}",
        r.stderr
    );
}

#[test]
fn missing_program_is_reported() {
    let r = launch(&["-n", "2", "--", "/nonexistent/program"]);
    assert_eq!(r.code, Some(1), "{}", r.stderr);
    assert!(
        r.stderr.contains("cannot start rank 0 (127.0.0.1)"),
        "{}",
        r.stderr
    );
}

/// Writes a stand-in `ssh` that runs the remote command line locally in a new session (as
/// sshd does), logging its arguments.
fn fake_ssh(dir: &Path) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let setsid = if Path::new("/usr/bin/setsid").exists() {
        "setsid -w "
    } else {
        ""
    };
    let script = format!(
        "#!/bin/sh\nprintf '%s\\n' \"$*\" >> {}/ssh.log\nfor last; do :; done\nexec {setsid}sh -c \"$last\"\n",
        dir.display()
    );
    let path = bin.join("ssh");
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    bin
}

#[test]
fn remote_ranks_go_through_ssh_and_are_stopped_remotely() {
    let dir = scratch("remote");
    let bin = fake_ssh(&dir);
    let hostfile = dir.join("hosts.json");
    std::fs::write(
        &hostfile,
        r#"{"envs": ["GREETING=hello there"],
            "hosts": [{"ssh": "node-a.invalid", "ips": ["10.0.0.1"], "rdma": []},
                      {"ssh": "node-b.invalid", "ips": ["10.0.0.2"], "extra": 1}]}"#,
    )
    .unwrap();
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let env = [("PATH", path.as_str())];

    let script = r#"echo "$GREETING rank=$MLX_RANK"; cat "$MLX_HOSTFILE"; echo"#;
    let r = launch_env(
        &[
            "--hostfile",
            hostfile.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            script,
        ],
        &env,
        Duration::from_secs(30),
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    // The process-group line is consumed; the rest is rank 0's output.
    assert_eq!(
        r.stdout,
        "hello there rank=0\n[[\"10.0.0.1:32323\"],[\"10.0.0.2:32324\"]]\n"
    );
    let log = std::fs::read_to_string(dir.join("ssh.log")).unwrap();
    assert!(
        log.contains("-o BatchMode=yes -T -- node-a.invalid sh -c"),
        "{log}"
    );
    assert!(log.contains("-- node-b.invalid sh -c"), "{log}");

    // Teardown reaches the "remote" process group, outside the launcher's own groups.
    let pidfile = dir.join("sleep.pid");
    let script = format!(
        r#"if [ "$MLX_RANK" = 1 ]; then while [ ! -s {0} ]; do sleep 0.05; done; exit 5; fi
sleep 60 & echo $! > {0}; wait"#,
        pidfile.display()
    );
    let r = launch_env(
        &[
            "--hostfile",
            hostfile.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            &script,
        ],
        &env,
        Duration::from_secs(30),
    );
    assert_eq!(r.code, Some(5), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("rank 1 (node-b.invalid) exited with status 5"),
        "{}",
        r.stderr
    );
    assert!(gone(read_pid(&pidfile)), "the remote sleep survived");
    let log = std::fs::read_to_string(dir.join("ssh.log")).unwrap();
    assert!(log.contains("kill -s TERM -- -"), "{log}");
}

/// Rank 0 reads the launcher's stdin (an interactive program can be driven); the others read
/// nothing.
#[test]
fn rank_0_reads_the_launchers_stdin() {
    let r = launch_with_input(
        &[
            "-n",
            "2",
            "--verbose",
            "--",
            "sh",
            "-c",
            "read line; echo \"rank=$MLX_RANK line=[$line]\"",
        ],
        &[],
        Some(b"hello ranks\n"),
        Duration::from_secs(30),
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout.contains("rank=0 line=[hello ranks]"),
        "{}",
        r.stdout
    );
    // Rank 1's stdout (shown with --verbose, prefixed) saw an empty input.
    assert!(r.stdout.contains("rank=1 line=[]"), "{}", r.stdout);
}
