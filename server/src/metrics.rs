//! `/metrics`: Prometheus text exposition of the request counters, the scheduler's and
//! prefix cache's counters, and MLX's memory.

use crate::engine::EngineSnapshot;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// The endpoints counted by name; any other path counts as `other` (so that scanners cannot
/// grow the label set).
pub const ENDPOINTS: &[&str] = &[
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/models",
    "/api/chat",
    "/api/generate",
    "/api/tags",
    "/api/show",
    "/api/version",
    "/api/ps",
    "/metrics",
    "/health",
];

/// Requests answered, by endpoint and status.
#[derive(Debug, Default)]
pub struct RequestCounters {
    counts: Mutex<BTreeMap<(&'static str, u16), u64>>,
}

impl RequestCounters {
    /// Counts one request to `path` answered with `status`.
    ///
    /// ```
    /// use mlx_server::metrics::RequestCounters;
    /// let c = RequestCounters::default();
    /// c.record("/v1/models", 200);
    /// c.record("/wp-admin", 404);
    /// assert_eq!(c.get("/v1/models", 200), 1);
    /// assert_eq!(c.get("other", 404), 1);
    /// ```
    pub fn record(&self, path: &str, status: u16) {
        let endpoint = endpoint_label(path);
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        *counts.entry((endpoint, status)).or_default() += 1;
    }

    /// The count of `endpoint` (a label: a known path or `other`) with `status`.
    pub fn get(&self, endpoint: &str, status: u16) -> u64 {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts
            .iter()
            .find(|((e, s), _)| *e == endpoint && *s == status)
            .map_or(0, |(_, n)| *n)
    }

    fn snapshot(&self) -> Vec<((&'static str, u16), u64)> {
        let counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        counts.iter().map(|(k, v)| (*k, *v)).collect()
    }
}

/// The label of `path`: itself when it is one of [`ENDPOINTS`] (`/v1/models/<id>` counts as
/// `/v1/models`), else `other`.
fn endpoint_label(path: &str) -> &'static str {
    if path.starts_with("/v1/models/") {
        return "/v1/models";
    }
    ENDPOINTS
        .iter()
        .find(|e| **e == path)
        .copied()
        .unwrap_or("other")
}

/// Writes one metric family: `# HELP`, `# TYPE` and its samples.
fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, value) in samples {
        let _ = writeln!(out, "{name}{labels} {value}");
    }
}

/// The Prometheus text of `requests`, the engine's `snapshot` and the served `model` id.
///
/// ```
/// use mlx_server::metrics::{render, RequestCounters};
/// let c = RequestCounters::default();
/// c.record("/api/chat", 200);
/// let text = render(&c, None, "m");
/// assert!(text.contains("mlx_server_requests_total{endpoint=\"/api/chat\",status=\"200\"} 1"));
/// ```
pub fn render(requests: &RequestCounters, snapshot: Option<EngineSnapshot>, model: &str) -> String {
    let mut out = String::new();
    let requests: Vec<(String, f64)> = requests
        .snapshot()
        .into_iter()
        .map(|((endpoint, status), n)| {
            (
                format!("{{endpoint=\"{endpoint}\",status=\"{status}\"}}"),
                n as f64,
            )
        })
        .collect();
    family(
        &mut out,
        "mlx_server_requests_total",
        "counter",
        "HTTP requests answered, by endpoint and status.",
        &requests,
    );
    family(
        &mut out,
        "mlx_server_model_info",
        "gauge",
        "The served model (always 1).",
        &[(format!("{{model=\"{}\"}}", escape(model)), 1.0)],
    );
    let Some(s) = snapshot else {
        return out;
    };
    let p = &s.stats.prefix_cache;
    let rows: [(&str, &str, &str, f64); 16] = [
        (
            "running",
            "gauge",
            "Sequences decoding now.",
            s.stats.running as f64,
        ),
        (
            "waiting",
            "gauge",
            "Requests waiting (one may be in its prefill).",
            s.stats.waiting as f64,
        ),
        (
            "decode_steps_total",
            "counter",
            "Batched decode steps run.",
            s.stats.decode_steps as f64,
        ),
        (
            "generated_tokens_total",
            "counter",
            "Tokens generated over all requests.",
            s.stats.generated_tokens as f64,
        ),
        (
            "prefilled_tokens_total",
            "counter",
            "Prompt tokens prefilled (not served from the prefix cache).",
            s.stats.prefilled_tokens as f64,
        ),
        (
            "prefix_cache_lookups_total",
            "counter",
            "Prefix cache lookups.",
            p.lookups as f64,
        ),
        (
            "prefix_cache_hits_total",
            "counter",
            "Prefix cache lookups that reused at least one token.",
            p.hits as f64,
        ),
        (
            "prefix_cache_prompt_tokens_total",
            "counter",
            "Prompt tokens looked up in the prefix cache.",
            p.prompt_tokens as f64,
        ),
        (
            "prefix_cache_reused_tokens_total",
            "counter",
            "Prompt tokens served from the prefix cache.",
            p.reused_tokens as f64,
        ),
        (
            "prefix_cache_evictions_total",
            "counter",
            "Prefix cache entries evicted for the budget.",
            p.evictions as f64,
        ),
        (
            "prefix_cache_entries",
            "gauge",
            "Prefix cache entries held.",
            p.entries as f64,
        ),
        (
            "prefix_cache_bytes",
            "gauge",
            "Bytes of KV state the prefix cache holds.",
            p.bytes as f64,
        ),
        (
            "prefix_cache_budget_bytes",
            "gauge",
            "The prefix cache's byte budget.",
            p.budget as f64,
        ),
        (
            "mlx_active_memory_bytes",
            "gauge",
            "MLX's active memory.",
            s.active_memory as f64,
        ),
        (
            "mlx_peak_memory_bytes",
            "gauge",
            "MLX's peak memory since start.",
            s.peak_memory as f64,
        ),
        (
            "mlx_cache_memory_bytes",
            "gauge",
            "MLX's buffer cache.",
            s.cache_memory as f64,
        ),
    ];
    for (name, kind, help, value) in rows {
        family(
            &mut out,
            &format!("mlx_server_{name}"),
            kind,
            help,
            &[(String::new(), value)],
        );
    }
    out
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}
