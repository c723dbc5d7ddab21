//! What the benchmark figures depend on: the CPU, its last-level cache, and the read
//! bandwidth that bounds decode (every weight is read once per token).

use serde::Serialize;

/// The machine a benchmark ran on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// `model name` of /proc/cpuinfo (or `uname -m` elsewhere).
    pub cpu: String,
    /// Logical CPUs this process may use.
    pub cpus: usize,
    /// Size of the last-level cache, as the kernel reports it (`300 MiB`...), if known.
    pub llc: Option<String>,
}

impl Machine {
    /// Reads the CPU model and its last-level cache (Linux sysfs; other systems say less).
    pub fn detect() -> Machine {
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("model name"))
                    .and_then(|l| l.split_once(':'))
                    .map(|(_, v)| v.trim().to_string())
            })
            .unwrap_or_else(|| std::env::consts::ARCH.to_string());
        let llc = (1..=4).rev().find_map(|i| {
            let dir = format!("/sys/devices/system/cpu/cpu0/cache/index{i}");
            let level = std::fs::read_to_string(format!("{dir}/level")).ok()?;
            let size = std::fs::read_to_string(format!("{dir}/size")).ok()?;
            Some(format!("L{} {}", level.trim(), cache_size(size.trim())))
        });
        Machine {
            cpu,
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            llc,
        }
    }
}

/// sysfs's `307200K` as `300 MiB` (and `512K` as `512 KiB`).
fn cache_size(sysfs: &str) -> String {
    match sysfs.strip_suffix('K').and_then(|k| k.parse::<u64>().ok()) {
        Some(k) if k % 1024 == 0 => format!("{} MiB", k / 1024),
        Some(k) => format!("{k} KiB"),
        None => sysfs.to_string(),
    }
}

impl std::fmt::Display for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}, {} CPUs", self.cpu, self.cpus)?;
        if let Some(llc) = &self.llc {
            write!(f, ", {llc}")?;
        }
        Ok(())
    }
}

/// Page size the probe's buffer is backed by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Pages {
    /// The system's default pages (4 KiB on x86-64 Linux).
    Default,
    /// Transparent huge pages (2 MiB), advised before the buffer is first touched.
    Huge,
}

/// One probe result.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Bandwidth {
    /// Best GB/s (10^9 bytes) over the passes.
    pub gb_per_s: f64,
    /// Buffer size in MiB.
    pub mib: usize,
    /// Threads that read.
    pub threads: usize,
    /// What backed the buffer; `Default` also when huge pages were asked for but refused.
    pub pages: Pages,
}

/// Read bandwidth: `threads` threads read their share of a `mib`-MiB buffer (every cache
/// line, see [`sum`]), best of `passes`. For
/// the default 1024 MiB the buffer is far larger than any cache, so this is the memory
/// bandwidth that bounds decode. `Pages::Huge` advises transparent huge pages (Linux) before
/// the buffer is first written.
pub fn read_bandwidth(mib: usize, passes: usize, threads: usize, pages: Pages) -> Bandwidth {
    let words = (mib.max(1) << 20) / 8;
    // A large zeroed allocation is fresh anonymous memory: nothing is touched yet.
    let mut buffer = vec![0u64; words];
    let advised = pages == Pages::Huge
        && mlx_rs::memory::advise_huge_pages_host(&buffer).advised > words * 8 / 2;
    let threads = threads.max(1);
    let share = words.div_ceil(threads).div_ceil(64) * 64;
    std::thread::scope(|s| {
        for (t, part) in buffer.chunks_mut(share).enumerate() {
            s.spawn(move || {
                for (i, w) in part.iter_mut().enumerate() {
                    *w = ((t * share + i) % 251) as u64;
                }
            });
        }
    });
    let mut best = 0.0f64;
    let mut sink = 0u64;
    for _ in 0..passes.max(1) {
        let started = std::time::Instant::now();
        let total: u64 = std::thread::scope(|s| {
            let handles: Vec<_> = buffer
                .chunks(share)
                .map(|part| s.spawn(move || sum(part)))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap_or(0)).sum()
        });
        let secs = started.elapsed().as_secs_f64();
        best = best.max((words * 8) as f64 / secs / 1e9);
        sink = sink.wrapping_add(total);
    }
    std::hint::black_box(sink);
    Bandwidth {
        gb_per_s: best,
        mib,
        threads,
        pages: if advised { Pages::Huge } else { Pages::Default },
    }
}

/// The sum of the first word of every 64-byte cache line of `part`, with eight independent
/// accumulators. The memory system moves whole lines, so this reads every byte from DRAM; one
/// load per line lets the core keep many lines in flight, as a C probe's 64-byte vector loads
/// do (`scripts/read_bandwidth.c`, AVX-512: the same 34 GB/s here), where a sum of every word
/// in baseline x86-64 code stalls on instructions at about 25.
fn sum(part: &[u64]) -> u64 {
    let mut acc = [0u64; 8];
    let mut lines = part.chunks_exact(64);
    for c in &mut lines {
        for k in 0..8 {
            acc[k] = acc[k].wrapping_add(c[k * 8]);
        }
    }
    let tail: u64 = lines.remainder().iter().fold(0, |a, &b| a.wrapping_add(b));
    acc.iter().fold(tail, |a, &b| a.wrapping_add(b))
}

impl std::fmt::Display for Bandwidth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:.1} GB/s ({} MiB, {} threads, {})",
            self.gb_per_s,
            self.mib,
            self.threads,
            match self.pages {
                Pages::Default => "default pages",
                Pages::Huge => "2 MiB pages",
            }
        )
    }
}
