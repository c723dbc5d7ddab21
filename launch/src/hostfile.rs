//! The hosts to launch on: `mlx.launch`'s JSON hostfile, `--hosts a,b,...` and `-n N`.
//!
//! One [`Host`] is one rank. The hostfile has the shape `mlx.launch` (MLX v0.32) reads, so a
//! file written for it (or by `mlx.distributed_config`) works unchanged: either a JSON list
//! of host objects, or an object with `"hosts"` (that list) and optional `"backend"` and
//! `"envs"`. Each host object needs `"ssh"` (the name to ssh to) and may have `"ips"` (the
//! addresses the ring backend listens on) and `"rdma"` (JACCL's RDMA devices); other fields
//! are ignored.

use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;

use crate::LaunchError;

/// One rank's host.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Host {
    /// The name or address to ssh to (also the name `mpirun` is given).
    pub ssh: String,
    /// The addresses this rank communicates over (the ring backend listens on each).
    #[serde(default)]
    pub ips: Vec<String>,
    /// JACCL's RDMA device to every other rank (`null` for itself), kept as JSON because
    /// `mlx.launch` passes it through unchanged.
    #[serde(default)]
    pub rdma: Vec<serde_json::Value>,
}

impl Host {
    /// A host named on the command line: its IPs are the name itself when it is an IP
    /// address, none otherwise (as `mlx.launch` does).
    ///
    /// ```
    /// use mlx_launch::hostfile::Host;
    /// assert_eq!(Host::named("10.0.0.2").ips, ["10.0.0.2"]);
    /// assert!(Host::named("node-a").ips.is_empty());
    /// ```
    pub fn named(name: &str) -> Self {
        let ips = if name.parse::<IpAddr>().is_ok() {
            vec![name.to_string()]
        } else {
            Vec::new()
        };
        Host {
            ssh: name.to_string(),
            ips,
            rdma: Vec::new(),
        }
    }

    /// Whether this rank runs on this machine (no ssh): see [`is_local_name`].
    pub fn is_local(&self) -> bool {
        is_local_name(&self.ssh)
    }
}

/// The parsed host list, one entry per rank, with the hostfile's optional extras.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Hostfile {
    /// One entry per rank, in rank order.
    pub hosts: Vec<Host>,
    /// The backend the hostfile asks for (used when `--backend` is not given).
    pub backend: Option<String>,
    /// `K=V` environment variables for every rank (before the `--env` ones).
    pub envs: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum FileShape {
    List(Vec<Host>),
    Object {
        hosts: Vec<Host>,
        #[serde(default)]
        backend: Option<String>,
        #[serde(default)]
        envs: Vec<String>,
    },
}

impl Hostfile {
    /// Parses the JSON text of an `mlx.launch` hostfile.
    ///
    /// ```
    /// use mlx_launch::hostfile::Hostfile;
    /// let hf = Hostfile::parse(r#"{
    ///     "backend": "ring",
    ///     "envs": ["MLX_METAL_FAST_SYNCH=1"],
    ///     "hosts": [
    ///         {"ssh": "mac-1", "ips": ["10.0.0.1"]},
    ///         {"ssh": "mac-2", "ips": ["10.0.0.2"], "comment": "ignored"}
    ///     ]
    /// }"#).unwrap();
    /// assert_eq!(hf.hosts.len(), 2);
    /// assert_eq!(hf.hosts[1].ips, ["10.0.0.2"]);
    /// assert_eq!(hf.backend.as_deref(), Some("ring"));
    ///
    /// // The plain list form is accepted too.
    /// let hf = Hostfile::parse(r#"[{"ssh": "mac-1"}]"#).unwrap();
    /// assert!(hf.hosts[0].ips.is_empty());
    /// ```
    pub fn parse(text: &str) -> Result<Self, LaunchError> {
        let shape: FileShape = serde_json::from_str(text).map_err(|e| {
            LaunchError::Usage(format!(
                "not an mlx.launch hostfile ({e}); expected a JSON list of \
                 {{\"ssh\": ..., \"ips\": [...]}} objects or an object with \"hosts\""
            ))
        })?;
        let hostfile = match shape {
            FileShape::List(hosts) => Hostfile {
                hosts,
                ..Hostfile::default()
            },
            FileShape::Object {
                hosts,
                backend,
                envs,
            } => Hostfile {
                hosts,
                // mlx.launch treats "" as "not given".
                backend: backend.filter(|b| !b.is_empty()),
                envs,
            },
        };
        if hostfile.hosts.is_empty() {
            return Err(LaunchError::Usage("the hostfile lists no hosts".into()));
        }
        if let Some(i) = hostfile.hosts.iter().position(|h| h.ssh.is_empty()) {
            return Err(LaunchError::Usage(format!(
                "host {i} of the hostfile has an empty \"ssh\""
            )));
        }
        Ok(hostfile)
    }

    /// Reads and parses a hostfile; errors name the file.
    pub fn from_path(path: &Path) -> Result<Self, LaunchError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            LaunchError::Usage(format!("cannot read hostfile {}: {e}", path.display()))
        })?;
        Self::parse(&text).map_err(|e| match e {
            LaunchError::Usage(m) => LaunchError::Usage(format!("{}: {m}", path.display())),
            other => other,
        })
    }

    /// `--hosts a,b,...` with `-n` repeats: each host is repeated `repeats` times in place
    /// (`a,a,b,b`), as `mlx.launch`'s `--repeat-hosts` does.
    ///
    /// ```
    /// use mlx_launch::hostfile::Hostfile;
    /// let hf = Hostfile::from_list("127.0.0.1,node-b", 2).unwrap();
    /// let names: Vec<_> = hf.hosts.iter().map(|h| h.ssh.as_str()).collect();
    /// assert_eq!(names, ["127.0.0.1", "127.0.0.1", "node-b", "node-b"]);
    /// assert!(Hostfile::from_list("a,,b", 1).is_err());
    /// assert!(Hostfile::from_list("a", 0).is_err());
    /// ```
    pub fn from_list(list: &str, repeats: usize) -> Result<Self, LaunchError> {
        if repeats == 0 {
            return Err(LaunchError::Usage("-n must be at least 1".into()));
        }
        let mut hosts = Vec::new();
        for name in list.split(',') {
            let name = name.trim();
            if name.is_empty() {
                return Err(LaunchError::Usage(format!(
                    "empty host name in --hosts {list:?}"
                )));
            }
            for _ in 0..repeats {
                hosts.push(Host::named(name));
            }
        }
        Ok(Hostfile {
            hosts,
            ..Hostfile::default()
        })
    }
}

/// Whether `host` names this machine: `127.0.0.1`, `::1`, `localhost` or this machine's
/// host name (case-insensitively). Such ranks are started directly, not through ssh.
///
/// ```
/// use mlx_launch::hostfile::is_local_name;
/// assert!(is_local_name("127.0.0.1"));
/// assert!(is_local_name("localhost"));
/// assert!(!is_local_name("192.0.2.7"));
/// ```
pub fn is_local_name(host: &str) -> bool {
    let host = host.trim();
    if host.eq_ignore_ascii_case("localhost") || host == "127.0.0.1" || host == "::1" {
        return true;
    }
    match this_hostname() {
        Some(me) => {
            let short = me.split('.').next().unwrap_or(&me);
            host.eq_ignore_ascii_case(&me) || host.eq_ignore_ascii_case(short)
        }
        None => false,
    }
}

/// This machine's host name, from gethostname(2).
pub fn this_hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which outlives the call; gethostname
    // writes at most `len` bytes into it.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    let name = String::from_utf8_lossy(&buf[..end]).into_owned();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mlx_launch_shaped_file_with_rdma_and_envs() {
        // The example from mlx.launch's Hostfile.from_file docstring (JACCL).
        let text = r#"{
            "backend": "jaccl",
            "envs": ["MLX_METAL_FAST_SYNCH=1"],
            "hosts": [
                {"ssh": "hostname1", "ips": ["123.123.123.1"], "rdma": [null, "rdma_en2", "rdma_en3"]},
                {"ssh": "hostname2", "ips": ["123.123.123.2"], "rdma": ["rdma_en2", null, "rdma_en3"]},
                {"ssh": "hostname3", "ips": ["123.123.123.3"], "rdma": ["rdma_en2", "rdma_en3", null]}
            ]
        }"#;
        let hf = Hostfile::parse(text).unwrap();
        assert_eq!(hf.backend.as_deref(), Some("jaccl"));
        assert_eq!(hf.envs, ["MLX_METAL_FAST_SYNCH=1"]);
        assert_eq!(hf.hosts.len(), 3);
        assert_eq!(hf.hosts[2].ssh, "hostname3");
        assert_eq!(hf.hosts[2].ips, ["123.123.123.3"]);
        assert_eq!(hf.hosts[0].rdma[0], serde_json::Value::Null);
        assert_eq!(hf.hosts[0].rdma[1], "rdma_en2");
    }

    #[test]
    fn docs_list_form_with_two_ips() {
        let text = r#"[
            {"ssh": "hostname1", "ips": ["123.123.1.1", "123.123.2.1"]},
            {"ssh": "hostname2", "ips": ["123.123.1.2", "123.123.2.2"]}
        ]"#;
        let hf = Hostfile::parse(text).unwrap();
        assert_eq!(hf.backend, None);
        assert_eq!(hf.hosts[1].ips, ["123.123.1.2", "123.123.2.2"]);
    }

    #[test]
    fn empty_backend_means_unset() {
        let hf = Hostfile::parse(r#"{"backend": "", "hosts": [{"ssh": "a"}]}"#).unwrap();
        assert_eq!(hf.backend, None);
    }

    #[test]
    fn bad_files_are_usage_errors() {
        for text in [
            "",
            "{",
            "{}",
            "[]",
            r#"[{"ips": ["1.2.3.4"]}]"#,
            r#"[{"ssh": ""}]"#,
            r#"[{"ssh": "a", "ips": "1.2.3.4"}]"#,
            r#"{"hosts": [{"ssh": "a"}], "envs": "X=1"}"#,
        ] {
            match Hostfile::parse(text) {
                Err(LaunchError::Usage(_)) => {}
                other => panic!("{text:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn missing_file_names_the_path() {
        let err = Hostfile::from_path(Path::new("/nonexistent/hosts.json")).unwrap_err();
        assert!(err.to_string().contains("/nonexistent/hosts.json"), "{err}");
    }

    #[test]
    fn list_hosts_get_ips_only_when_addresses() {
        let hf = Hostfile::from_list("10.1.2.3,::1,box", 1).unwrap();
        assert_eq!(hf.hosts[0].ips, ["10.1.2.3"]);
        assert_eq!(hf.hosts[1].ips, ["::1"]);
        assert!(hf.hosts[2].ips.is_empty());
    }

    #[test]
    fn local_names() {
        assert!(is_local_name("::1"));
        assert!(is_local_name("LOCALHOST"));
        if let Some(me) = this_hostname() {
            assert!(is_local_name(&me));
        }
        assert!(!is_local_name("10.255.255.1"));
    }
}
