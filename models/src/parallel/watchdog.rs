//! The bound on one step over the group: a rank whose peer died can wait for ever inside MLX
//! (see [`mlx_rs::distributed`]'s failure notes), so each parallel step runs under a
//! [`StepGuard`], and a watchdog thread ends the process with a message and status
//! [`EXIT_STATUS`] when a step outlasts [`step_timeout`]. Nothing else can end the wait: the
//! waiting thread is inside MLX, which cannot be interrupted, and returning an error would
//! leave it holding the model.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;
use std::time::{Duration, Instant};

/// How long one step over the group may take by default ([`set_step_timeout`]), plus
/// [`PER_TOKEN_ALLOWANCE`] for each token it processes.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// What a step may take per token it processes on top of [`step_timeout`]: a prefill chunk of
/// 512 tokens may run 4 minutes more than a decode step (a prefill at 2 tokens/s).
pub const PER_TOKEN_ALLOWANCE: Duration = Duration::from_millis(500);

/// The exit status of a process whose step outlasted the bound (`EX_UNAVAILABLE`).
pub const EXIT_STATUS: i32 = 69;

static TIMEOUT_MS: AtomicU64 = AtomicU64::new(DEFAULT_STEP_TIMEOUT.as_millis() as u64);
/// The running step's bound in milliseconds (the timeout plus its tokens' allowance).
static STEP_LIMIT: AtomicU64 = AtomicU64::new(0);
/// Milliseconds since [`epoch`] at which the running step began, plus one; 0: no step.
static STEP_STARTED: AtomicU64 = AtomicU64::new(0);
static WATCHDOG: Once = Once::new();

fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

/// Sets how long one step over the group (a forward pass with its transfers) may take before
/// the watchdog ends the process, besides [`PER_TOKEN_ALLOWANCE`] per token of the step. Raise
/// it for steps that are slow on their own (a large model on a slow machine).
///
/// ```
/// use mlx_models::parallel::{set_step_timeout, step_timeout, DEFAULT_STEP_TIMEOUT};
/// set_step_timeout(std::time::Duration::from_secs(90));
/// assert_eq!(step_timeout().as_secs(), 90);
/// set_step_timeout(DEFAULT_STEP_TIMEOUT);
/// ```
pub fn set_step_timeout(timeout: Duration) {
    TIMEOUT_MS.store(timeout.as_millis().max(1) as u64, Ordering::Relaxed);
}

/// The bound in force ([`set_step_timeout`]).
pub fn step_timeout() -> Duration {
    Duration::from_millis(TIMEOUT_MS.load(Ordering::Relaxed))
}

/// A step in progress; the watchdog watches it until the guard is dropped.
#[derive(Debug)]
pub struct StepGuard(());

impl StepGuard {
    /// Starts watching a step over `tokens` tokens (and the watchdog thread, the first time).
    pub fn start(tokens: usize) -> StepGuard {
        WATCHDOG.call_once(|| {
            let _ = std::thread::Builder::new()
                .name("mlx-parallel-watchdog".into())
                .spawn(watch);
        });
        let allowance = (tokens as u64).saturating_mul(PER_TOKEN_ALLOWANCE.as_millis() as u64);
        let limit = TIMEOUT_MS.load(Ordering::Relaxed).saturating_add(allowance);
        STEP_LIMIT.store(limit, Ordering::Relaxed);
        let now = epoch().elapsed().as_millis() as u64 + 1;
        STEP_STARTED.store(now, Ordering::Relaxed);
        StepGuard(())
    }
}

impl Drop for StepGuard {
    fn drop(&mut self) {
        STEP_STARTED.store(0, Ordering::Relaxed);
    }
}

fn watch() {
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let started = STEP_STARTED.load(Ordering::Relaxed);
        if started == 0 {
            continue;
        }
        let running = (epoch().elapsed().as_millis() as u64 + 1).saturating_sub(started);
        if running > STEP_LIMIT.load(Ordering::Relaxed) {
            eprintln!(
                "mlx-models: rank {}: a step over the distributed group made no progress in {:.1} s \
                 (a peer died, hangs or cannot be reached); ending this process",
                std::env::var("MLX_RANK").unwrap_or_else(|_| "?".into()),
                running as f64 / 1000.0
            );
            std::process::exit(EXIT_STATUS);
        }
    }
}
