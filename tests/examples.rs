//! The examples as a user meets them:
//! - they draw their load progress bars only on a terminal: with stderr piped (scripts, CI,
//!   these tests) the `generate` example prints exactly its two load lines on stderr, with no
//!   carriage return or escape sequence, and its statistics line on stdout;
//! - without the Hugging Face Hub, `qwen_chat`'s default model fails with an error that says
//!   how to run on a local file and names the small model the tests fetched.
//!
//! The example binaries are the ones `cargo test` builds next to this test
//! (`target/<profile>/examples/generate`); `cargo test --test examples_quiet` alone does not
//! build examples, so that run skips (and fails under `CI=true`) when it is missing.

use std::path::PathBuf;
use std::process::Command;

/// `target/<profile>/examples/<name>`, next to this test's `target/<profile>/deps/`.
fn example(name: &str) -> Option<PathBuf> {
    built(
        &format!("examples/{name}{}", std::env::consts::EXE_SUFFIX),
        "`cargo test` (without --test) builds the examples",
    )
}

/// `target/<profile>/<relative>` if it exists; else `None` (the test skips) with a line saying
/// `how` it gets built, or a failure under `CI=true`.
fn built(relative: &str, how: &str) -> Option<PathBuf> {
    let exe = std::env::current_exe().unwrap();
    let profile = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = profile.join(relative);
    if path.is_file() {
        return Some(path);
    }
    let message = format!("{} is missing: {how}", path.display());
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("{message}");
    }
    eprintln!("skipping: {message}");
    None
}

#[test]
fn generate_piped_prints_no_progress_bars() {
    let Some(generate) = example("generate") else {
        return;
    };
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("models/tests/fixtures/load/tiny_qwen2.gguf");
    let output = Command::new(generate)
        .args([
            "--device",
            "cpu",
            "--greedy",
            "--max-tokens",
            "3",
            "--prompt",
            "hello",
        ])
        .arg("--model")
        .arg(&model)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout: {stdout}\nstderr: {stderr}"
    );
    assert!(
        !stderr.contains(['\r', '\x1b']),
        "control characters on a piped stderr: {stderr:?}"
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 2, "{stderr:?}");
    assert_eq!(lines[0], format!("loading {} ...", model.display()));
    assert!(lines[1].starts_with("loaded "), "{stderr:?}");
    assert!(
        stdout.lines().any(|l| l.starts_with("prompt: ")),
        "no statistics line: {stdout:?}"
    );
    assert!(!stdout.contains(['\r', '\x1b']), "{stdout:?}");
}

#[test]
fn qwen_chat_without_the_hub_names_the_local_test_model() {
    let Some(qwen_chat) = example("qwen_chat") else {
        return;
    };
    // The hint names the test model only once the tests have fetched it.
    let Some(model) = mlx_test_data::file("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    // An empty Hub cache and no network: the default Hub id cannot be resolved.
    let cache = std::env::temp_dir().join(format!("mlx-zoo-empty-hub-{}", std::process::id()));
    std::fs::create_dir_all(&cache).unwrap();
    let output = Command::new(qwen_chat)
        .args(["--device", "cpu", "--prompt", "hi"])
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HOME", &cache)
        .env("HF_HUB_CACHE", &cache)
        .output()
        .unwrap();
    let _ = std::fs::remove_dir_all(&cache);
    let stderr = String::from_utf8_lossy(&output.stderr);
    // An error exit (1), not a panic (101).
    assert_eq!(output.status.code(), Some(1), "stderr: {stderr}");
    let name = model.file_name().unwrap().to_str().unwrap();
    assert!(
        stderr
            .lines()
            .any(|l| l.contains("--model") && l.contains(name)),
        "no line with --model and the test model: {stderr}"
    );
}

/// `--backend ggml` in a build without the `ggml-baseline` feature: exit code 1 and an error
/// that names the feature (with it, the example runs llama.cpp: `models/tests/ggml_baseline.rs`
/// and the CI's comparison run cover that).
#[test]
#[cfg(not(feature = "ggml-baseline"))]
fn backend_ggml_without_the_feature_says_how_to_build_it() {
    let Some(generate) = example("generate") else {
        return;
    };
    let model = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("models/tests/fixtures/load/tiny_qwen2.gguf");
    let output = Command::new(generate)
        .args(["--backend", "ggml", "--prompt", "hello", "--model"])
        .arg(&model)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("--features ggml-baseline"),
        "stderr: {stderr}"
    );
}

/// Bad values of the new flags are refused by the parser (exit code 1), before any loading.
#[test]
fn bad_backend_and_threads_flags_are_refused() {
    let Some(bench) = example("bench") else {
        return;
    };
    for args in [
        &["--backend", "llama"][..],
        &["--threads", "0"],
        &["--backends", "mlx,onnx"],
        &["--plot", "x.svg"],
    ] {
        let output = Command::new(&bench).args(args).output().unwrap();
        assert_eq!(output.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("error"), "{args:?}: {stderr}");
    }
}

/// MLX's load-time flags are refused with the ggml backend (exit 1, the flag named), not
/// silently ignored.
#[test]
#[cfg(feature = "ggml-baseline")]
fn mlx_load_flags_are_refused_with_the_ggml_backend() {
    let Some(model) = mlx_test_data::file("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let Some(exe) = example("generate") else {
        return;
    };
    for flag in ["--no-gguf-blocks", "--no-huge-pages"] {
        let output = Command::new(&exe)
            .args(["--backend", "ggml", flag, "--prompt", "x", "--model"])
            .arg(&model)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{flag}: {stderr}");
        assert!(
            stderr.contains(&format!("{flag} applies to --backend mlx only")),
            "{flag}: {stderr}"
        );
    }
}

/// With the feature, the examples run llama.cpp on the real SmolLM2 file: `generate` answers
/// " Paris", `perplexity` prints its last line, `qwen_chat` completes one turn through the
/// chat template.
#[test]
#[cfg(feature = "ggml-baseline")]
fn the_examples_run_the_ggml_backend() {
    let Some(model) = mlx_test_data::file("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let text = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/tests/fixtures/ppl_text.txt");
    let runs: [(&str, Vec<&str>, &str); 3] = [
        (
            "generate",
            vec![
                "--prompt",
                "The capital of France is",
                "--greedy",
                "--max-tokens",
                "4",
            ],
            "Paris",
        ),
        (
            "perplexity",
            vec![
                "--file",
                text.to_str().unwrap(),
                "--ctx",
                "128",
                "--chunks",
                "1",
            ],
            "perplexity: ",
        ),
        (
            "qwen_chat",
            vec![
                "--prompt",
                "What is the capital of France?",
                "--max-tokens",
                "16",
                "--temp",
                "0",
            ],
            "generation: ",
        ),
    ];
    for (name, args, expected) in runs {
        let Some(exe) = example(name) else {
            return;
        };
        let output = Command::new(exe)
            .args(["--backend", "ggml", "--threads", "2", "--model"])
            .arg(&model)
            .args(&args)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(stdout.contains(expected), "{name}: {stdout}");
    }
}

/// `target/<profile>/mlx-launch` (`cargo test --workspace` builds it for its own tests).
fn launcher() -> Option<PathBuf> {
    built(
        &format!("mlx-launch{}", std::env::consts::EXE_SUFFIX),
        "`cargo test --workspace` builds it",
    )
}

/// The text `generate` prints (its statistics line, whose timings vary, left out).
fn generated_text(stdout: &[u8]) -> String {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.starts_with("prompt:"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `generate` under `mlx-launch` over two local ranks, tensor-parallel and pipelined over the
/// ring backend, and tensor-parallel over MPI, prints the greedy text one process prints
/// (rank 0's stdout; the launcher drops the others').
#[test]
fn generate_under_mlx_launch_says_what_one_process_says() {
    let (Some(generate), Some(launch)) = (example("generate"), launcher()) else {
        return;
    };
    let Some(model) = mlx_test_data::file("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let args = |extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = [
            "--device",
            "cpu",
            "--greedy",
            "--max-tokens",
            "12",
            "--prompt",
            "The capital of France is",
            "--model",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.push(model.display().to_string());
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    let alone = Command::new(&generate).args(args(&[])).output().unwrap();
    assert!(alone.status.success(), "{alone:?}");
    let want = generated_text(&alone.stdout);
    assert!(want.contains("Paris"), "{want}");
    // MLX's MPI backend too where Open MPI is installed (CI installs it): MLX opens
    // `libmpi.so`, which only the development package provides; name the runtime's.
    let libmpi = std::fs::read_dir("/usr/lib/x86_64-linux-gnu")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .find(|n| n.starts_with("libmpi.so."));
    let mpirun = Command::new("mpirun").arg("--version").output().is_ok();
    let mut runs = vec![("ring", "--tensor-parallel"), ("ring", "--pipeline")];
    match (&libmpi, mpirun) {
        (Some(_), true) => runs.push(("mpi", "--tensor-parallel")),
        _ if std::env::var("CI").is_ok_and(|v| v == "true") => panic!("CI installs Open MPI"),
        _ => eprintln!("skipping the MPI run: no mpirun or libmpi"),
    }
    for (backend, mode) in runs {
        let mut command = Command::new(&launch);
        command.args(["-n", "2", "--timeout", "300", "--backend", backend]);
        if backend == "mpi" {
            let lib = libmpi.as_deref().unwrap();
            command
                .args(["--env", &format!("MLX_MPI_LIBNAME={lib}")])
                // mpirun refuses root (CI's user) without these.
                .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
                .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
        }
        let out = command
            .arg("--")
            .arg(&generate)
            .args(args(&[mode, "--distributed-backend", backend]))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{backend} {mode}: {stderr}");
        assert_eq!(
            generated_text(&out.stdout),
            want,
            "{backend} {mode}: {stderr}"
        );
        // Both ranks loaded their share. Under mpirun the ranks' stderr reaches one pipe
        // unframed and their lines can interleave mid-line, so only the launcher's framed
        // (ring) output is read line by line.
        if backend == "ring" {
            assert!(stderr.contains("rank 0 of 2"), "{stderr}");
            assert!(
                stderr.contains("[rank 1] tensor parallel, rank 1 of 2")
                    || stderr.contains("[rank 1] pipeline, rank 1 of 2"),
                "{stderr}"
            );
        }
    }
}

/// `qwen_chat` under `mlx-launch` over two local ranks: rank 0 reads the conversation from the
/// launcher's stdin and shares each line with rank 1 (`parallel::broadcast_text`), so both run
/// the same turns; the replies are those of one process.
#[test]
fn qwen_chat_under_mlx_launch_answers_as_one_process() {
    use std::io::Write;
    use std::process::Stdio;
    let (Some(qwen_chat), Some(launch)) = (example("qwen_chat"), launcher()) else {
        return;
    };
    let Some(model) = mlx_test_data::file("smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };
    let input = "What is the capital of France?\n/reset\nAnd of Italy?\n";
    let run = |mut command: Command| -> (bool, String, String) {
        let mut child = command
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        (out.status.success(), text(&out.stdout), text(&out.stderr))
    };
    // The replies, without the statistics lines (timings vary).
    let replies = |stdout: &str| -> String {
        stdout
            .lines()
            .filter(|l| !l.starts_with("prompt:"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let args = [
        "--device",
        "cpu",
        "--temp",
        "0",
        "--max-tokens",
        "10",
        "--model",
        model.to_str().unwrap(),
    ];
    // In the exact mode (f32 activations): the chat's first answer is a near tie for SmolLM2
    // ("The" against "L", 0.04 apart in the logits), and the default mode's 8-bit prompt
    // activations round at boundaries that a rank's summation order, or the build's floating
    // point contraction, moves; the split itself is what this checks.
    let mut alone = Command::new(&qwen_chat);
    alone.args(args).env("MLX_RS_QMM_EXACT", "1");
    let (ok, want, stderr) = run(alone);
    assert!(ok, "{stderr}");
    assert!(want.contains("Paris"), "{want}");
    let mut launched = Command::new(&launch);
    launched
        .env("MLX_RS_QMM_EXACT", "1")
        .args(["-n", "2", "--timeout", "300", "--"])
        .arg(&qwen_chat)
        .args(args)
        .arg("--tensor-parallel");
    let (ok, found, stderr) = run(launched);
    assert!(ok, "{stderr}");
    assert_eq!(replies(&found), replies(&want), "{stderr}");
}
