//! Remote ranks: POSIX shell quoting and the `ssh` command lines.
//!
//! A remote rank is `ssh -o BatchMode=yes -T -- HOST 'sh -c <script>'`, where the script
//! (see [`remote_script`]) prints its process group, changes directory, exports the
//! environment, writes the rank's files into `mktemp` files on the remote machine (as
//! `mlx.launch` does; the content travels inside the command line), runs the command and
//! removes the files. The process group it printed is what [`kill_argv`] signals on teardown.

use std::borrow::Cow;

use crate::backend::RankPlan;

/// The first stdout line of a remote rank: this marker, then its process group id.
pub const PGID_MARKER: &str = "MLX_LAUNCH_PGID=";

/// Quotes `word` for a POSIX shell: unchanged when it only has characters no shell treats
/// specially, else in single quotes (a `'` inside becomes `'\''`).
///
/// ```
/// use mlx_launch::remote::quote;
/// assert_eq!(quote("plain-word_1.py"), "plain-word_1.py");
/// assert_eq!(quote("two words"), "'two words'");
/// assert_eq!(quote("it's $HOME"), r#"'it'\''s $HOME'"#);
/// assert_eq!(quote(""), "''");
/// ```
pub fn quote(word: &str) -> Cow<'_, str> {
    let safe = |c: char| c.is_ascii_alphanumeric() || "@%+=:,./-_".contains(c);
    if !word.is_empty() && word.chars().all(safe) {
        Cow::Borrowed(word)
    } else {
        Cow::Owned(format!("'{}'", word.replace('\'', r"'\''")))
    }
}

/// Quotes each word and joins them with spaces: one shell command line.
///
/// ```
/// assert_eq!(mlx_launch::remote::quote_join(&["echo", "a b", "$X"]), "echo 'a b' '$X'");
/// ```
pub fn quote_join<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| quote(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Splits a string into words like a POSIX shell (quotes and backslashes, no expansion);
/// used for `--mpi-arg`, as `mlx.launch` uses `shlex.split`.
///
/// ```
/// use mlx_launch::remote::split_words;
/// assert_eq!(split_words(r#"--mca "a b" 'c d' e\ f"#).unwrap(), ["--mca", "a b", "c d", "e f"]);
/// assert!(split_words("'open").is_err());
/// ```
pub fn split_words(s: &str) -> Result<Vec<String>, &'static str> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err("unterminated single quote"),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$' | '`')) => word.push(c),
                            Some('\n') => {}
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err("unterminated double quote"),
                        },
                        Some(c) => word.push(c),
                        None => return Err("unterminated double quote"),
                    }
                }
            }
            '\\' => {
                in_word = true;
                match chars.next() {
                    Some('\n') => {}
                    Some(c) => word.push(c),
                    None => return Err("trailing backslash"),
                }
            }
            c if c.is_whitespace() => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

/// Where a remote rank runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cwd {
    /// `--cwd DIR`: the rank fails if it cannot change to it.
    Required(String),
    /// The launcher's own directory: used when it exists on the remote host, as in
    /// `mlx.launch`.
    IfExists(String),
}

/// The POSIX `sh` script a remote rank runs (see the module docs).
///
/// ```
/// use mlx_launch::backend::{FileVar, RankPlan};
/// use mlx_launch::remote::{remote_script, Cwd};
/// let plan = RankPlan {
///     rank: 1,
///     host: "node-b".into(),
///     local: false,
///     env: vec![("MLX_RANK".into(), "1".into())],
///     files: vec![FileVar { var: "MLX_HOSTFILE".into(), content: r#"[["10.0.0.1:1"]]"#.into() }],
/// };
/// let script = remote_script(&plan, &Cwd::Required("/srv/job".into()), &["./run", "a b"]);
/// assert!(script.contains("export MLX_RANK=1\n"));
/// assert!(script.contains(r#"printf '%s' '[["10.0.0.1:1"]]' >"$mlx_launch_f0""#));
/// assert!(script.contains("./run 'a b'\n"));
/// ```
pub fn remote_script<S: AsRef<str>>(plan: &RankPlan, cwd: &Cwd, command: &[S]) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "printf '{PGID_MARKER}%s\\n' \"$(ps -o pgid= -p $$ | tr -d ' ')\"\n"
    ));
    match cwd {
        Cwd::Required(dir) => {
            let q = quote(dir);
            s.push_str(&format!(
                "cd {q} || {{ echo \"mlx-launch: rank {} cannot change to directory \"{q}\" on \
                 $(hostname)\" >&2; exit 1; }}\n",
                plan.rank
            ));
        }
        Cwd::IfExists(dir) => {
            let q = quote(dir);
            s.push_str(&format!("if [ -d {q} ]; then cd {q}; fi\n"));
        }
    }
    for (k, v) in &plan.env {
        s.push_str(&format!("export {k}={}\n", quote(v)));
    }
    let mut created = Vec::new();
    for (i, f) in plan.files.iter().enumerate() {
        let name = format!("mlx_launch_f{i}");
        s.push_str(&format!("{name}=$(mktemp) || exit 1\n"));
        s.push_str(&format!(
            "printf '%s' {} >\"${name}\" || exit 1\n",
            quote(&f.content)
        ));
        s.push_str(&format!("export {}=\"${name}\"\n", f.var));
        created.push(format!("\"${name}\""));
    }
    s.push_str(&quote_join(command));
    s.push('\n');
    if created.is_empty() {
        s.push_str("exit $?\n");
    } else {
        s.push_str(&format!(
            "mlx_launch_status=$?\nrm -f {}\nexit $mlx_launch_status\n",
            created.join(" ")
        ));
    }
    s
}

/// The ssh invocation (program and arguments) that runs `script` on `host` under `sh`,
/// whatever the remote login shell.
///
/// ```
/// let argv = mlx_launch::remote::ssh_argv("node-b", "echo 'hi'");
/// assert_eq!(argv, ["ssh", "-o", "BatchMode=yes", "-T", "--", "node-b", r#"sh -c 'echo '\''hi'\'''"#]);
/// ```
pub fn ssh_argv(host: &str, script: &str) -> Vec<String> {
    vec![
        "ssh".into(),
        "-o".into(),
        "BatchMode=yes".into(),
        "-T".into(),
        "--".into(),
        host.into(),
        format!("sh -c {}", quote(script)),
    ]
}

/// The ssh invocation that sends `signal` (a name such as `TERM`) to process group `pgid`
/// on `host`.
///
/// ```
/// let argv = mlx_launch::remote::kill_argv("node-b", 4242, "TERM");
/// assert_eq!(argv.last().unwrap(), "sh -c 'kill -s TERM -- -4242'");
/// ```
pub fn kill_argv(host: &str, pgid: u32, signal: &str) -> Vec<String> {
    ssh_argv(host, &format!("kill -s {signal} -- -{pgid}"))
}

/// The process group id in a remote rank's first stdout line, if it is the marker line.
///
/// ```
/// use mlx_launch::remote::parse_pgid_line;
/// assert_eq!(parse_pgid_line("MLX_LAUNCH_PGID=123\n"), Some(123));
/// assert_eq!(parse_pgid_line("hello\n"), None);
/// ```
pub fn parse_pgid_line(line: &str) -> Option<u32> {
    line.trim_end()
        .strip_prefix(PGID_MARKER)?
        .trim()
        .parse()
        .ok()
        .filter(|&p| p > 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::FileVar;
    use std::process::Command;

    /// Runs a command line under `sh` and returns its stdout.
    fn sh(line: &str) -> String {
        let out = Command::new("sh").arg("-c").arg(line).output().unwrap();
        assert!(out.status.success(), "{line}: {out:?}");
        String::from_utf8(out.stdout).unwrap()
    }

    #[test]
    fn quoting_survives_a_real_shell() {
        let nasty = [
            "two words",
            "it's",
            "\"double\"",
            "$HOME",
            "`id`",
            "$(id)",
            "back\\slash",
            "semi;colon && |pipe|",
            "new\nline",
            "*",
            "",
            "'",
            "''",
            "tab\there",
            "~user",
            "#hash",
            "ünïcode",
        ];
        let line = format!("printf '%s\\0' {}", quote_join(&nasty));
        let out = sh(&line);
        let got: Vec<&str> = out.split('\0').collect();
        assert_eq!(&got[..nasty.len()], &nasty[..]);
        assert_eq!(got[nasty.len()], "");
    }

    #[test]
    fn split_words_inverts_quote_join() {
        let words = ["a b", "it's", "$X", "\"q\"", "back\\slash", ""];
        assert_eq!(split_words(&quote_join(&words)).unwrap(), words);
        assert_eq!(split_words("  a   b  ").unwrap(), ["a", "b"]);
        assert_eq!(split_words(r#""a\"b\n""#).unwrap(), [r#"a"b\n"#]);
    }

    fn plan(files: Vec<FileVar>) -> RankPlan {
        RankPlan {
            rank: 1,
            host: "far".into(),
            local: false,
            env: vec![
                ("A".into(), "it's $HOME".into()),
                ("MLX_RANK".into(), "1".into()),
            ],
            files,
        }
    }

    /// The script, run locally under `sh` the way sshd would, does what it says.
    #[test]
    fn remote_script_runs_under_sh() {
        let dir = std::env::temp_dir();
        let dir = dir.to_str().unwrap();
        let p = plan(vec![FileVar {
            var: "MLX_HOSTFILE".into(),
            content: r#"[["10.0.0.1:5000"],["10.0.0.2:5001"]] 'q' $X"#.into(),
        }]);
        let script = remote_script(
            &p,
            &Cwd::Required(dir.into()),
            &[
                "sh",
                "-c",
                r#"printf '%s|%s|%s|' "$A" "$MLX_RANK" "$(pwd)"; cat "$MLX_HOSTFILE"; echo "|$MLX_HOSTFILE""#,
            ],
        );
        let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
        assert!(out.status.success(), "{out:?}");
        let out = String::from_utf8(out.stdout).unwrap();
        let (first, rest) = out.split_once('\n').unwrap();
        let pgid = parse_pgid_line(first).expect(first);
        assert!(pgid > 1);
        let fields: Vec<&str> = rest.trim_end().split('|').collect();
        assert_eq!(fields[0], "it's $HOME");
        assert_eq!(fields[1], "1");
        assert_eq!(
            std::fs::canonicalize(fields[2]).unwrap(),
            std::fs::canonicalize(dir).unwrap()
        );
        assert_eq!(fields[3], r#"[["10.0.0.1:5000"],["10.0.0.2:5001"]] 'q' $X"#);
        // The temporary file is removed after the command.
        assert!(!std::path::Path::new(fields[4]).exists());
    }

    #[test]
    fn remote_script_keeps_the_exit_status_and_fails_on_a_missing_cwd() {
        let p = plan(vec![FileVar {
            var: "F".into(),
            content: String::new(),
        }]);
        let script = remote_script(&p, &Cwd::IfExists("/".into()), &["sh", "-c", "exit 7"]);
        let status = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap()
            .status;
        assert_eq!(status.code(), Some(7));

        let script = remote_script(&p, &Cwd::Required("/nonexistent/dir".into()), &["true"]);
        let out = Command::new("sh").arg("-c").arg(&script).output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("cannot change to directory"));

        // Without --cwd a missing directory is skipped, as in mlx.launch.
        let script = remote_script(&p, &Cwd::IfExists("/nonexistent/dir".into()), &["true"]);
        let status = Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .unwrap()
            .status;
        assert!(status.success());
    }

    #[test]
    fn ssh_command_line_is_one_quoted_word_for_the_remote_shell() {
        let p = plan(Vec::new());
        let script = remote_script(&p, &Cwd::IfExists("/a b".into()), &["echo", "x y"]);
        let argv = ssh_argv("-oProxyCommand=evil", &script);
        // The host can never be taken for an option.
        assert_eq!(argv[4], "--");
        // What the remote login shell receives, re-split, is `sh -c SCRIPT`.
        assert_eq!(
            split_words(&argv[6]).unwrap(),
            ["sh", "-c", script.as_str()]
        );
    }
}
