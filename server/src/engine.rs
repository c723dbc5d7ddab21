//! The engine thread: one OS thread that loads the model and owns the [`Scheduler`], so that
//! all MLX work stays on it.
//!
//! It blocks on its command channel while idle; otherwise it drains the commands (submit,
//! stop, cancel, clear the cache) between two [`Scheduler::step`] calls and sends each step's
//! events to the request they belong to. When a request's receiver is gone (the client went
//! away and its handler or response stream was dropped), the send fails and the sequence is
//! cancelled at once. After every round it publishes an [`EngineSnapshot`] for `/metrics`.

use mlx_models::load::{load, LoadOptions};
use mlx_models::runtime::scheduler::{
    Scheduler, SchedulerOptions, SchedulerStats, SequenceEvent, SequenceId, SequenceRequest,
};
use mlx_models::runtime::vocab_limit::VocabLimited;
use mlx_models::text::{ChatTemplate, Tokenizer};
use mlx_models::{Error, Result};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc as tmpsc, oneshot};

/// Where a request's events go.
pub type EventSender = tmpsc::UnboundedSender<SequenceEvent>;

/// What the engine thread is asked to do.
#[derive(Debug)]
enum Command {
    /// Queue a request; the reply says whether the scheduler took it.
    Submit {
        id: SequenceId,
        request: SequenceRequest,
        events: EventSender,
        reply: oneshot::Sender<Result<()>>,
    },
    /// End a request early (a stop string matched): it finishes with its summary.
    Stop(SequenceId),
    /// Drop a request (its client went away).
    Cancel(SequenceId),
    /// Drop the prefix cache and MLX's buffer cache.
    ClearCache,
}

/// How to load and run the model.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// A Hugging Face id, a model folder or a `.gguf` file.
    pub model: String,
    /// Device, dtype, quantization and memory budget.
    pub load: LoadOptions,
    /// Batch size, queue length, prefill chunk, prefix cache budget.
    pub scheduler: SchedulerOptions,
    /// The context length served (prompt plus generated tokens of one request); `None`: the
    /// model's, at most [`mlx_models::load::budget::DEFAULT_BUDGET_CONTEXT`].
    pub context_length: Option<usize>,
    /// A chat template file that replaces the model's.
    pub chat_template: Option<PathBuf>,
    /// After this long with nothing to run, the engine hands freed memory back to the system
    /// ([`mlx_rs::memory::release_to_system`]: MLX's buffer cache and the C heap's free pages),
    /// once per idle spell, so that the process's RSS falls back after a load; `None`: never.
    pub idle_release: Option<Duration>,
}

/// The default [`EngineConfig::idle_release`]: long enough not to fire between the requests
/// of one client's exchange, short enough that memory is back before anyone looks.
pub const DEFAULT_IDLE_RELEASE: Duration = Duration::from_secs(2);

/// What the loaded model is, for the request handlers.
#[derive(Debug, Clone)]
pub struct ModelInfo {
    /// The tokenizer (with its chat template), shared by the request handlers.
    pub tokenizer: Arc<Tokenizer>,
    /// The parsed config.
    pub config: mlx_models::config::ModelConfig,
    /// `generation_config.json` (defaults for GGUF files).
    pub generation: mlx_models::config::GenerationConfig,
    /// The ids that end generation.
    pub eos_token_ids: Vec<u32>,
    /// The context length served.
    pub context_length: usize,
    /// Where the model came from (path, or Hub id and snapshot folder).
    pub source: String,
    /// The compute dtype, as a word (`float32`, ...).
    pub dtype: String,
    /// The checkpoint's parameters (quantized matrices counted as dequantized).
    pub parameter_count: u64,
}

/// The engine's figures after its last round.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EngineSnapshot {
    /// The scheduler's counters.
    pub stats: SchedulerStats,
    /// MLX's active memory in bytes.
    pub active_memory: usize,
    /// MLX's peak memory in bytes.
    pub peak_memory: usize,
    /// MLX's buffer cache in bytes.
    pub cache_memory: usize,
}

/// The handlers' side of the engine thread: cheap to clone.
#[derive(Debug, Clone)]
pub struct Engine {
    commands: mpsc::Sender<Command>,
    snapshot: Arc<Mutex<Option<EngineSnapshot>>>,
    alive: Arc<AtomicBool>,
    next_id: Arc<AtomicU64>,
}

/// Sets `alive` to false when the engine thread ends, however it ends.
struct AliveGuard(Arc<AtomicBool>);

impl Drop for AliveGuard {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

impl Engine {
    /// Starts the engine thread, loads the model on it and returns once it is ready.
    ///
    /// Errors: whatever loading the model or the chat template returns; [`Error::Io`]-like
    /// failures to start the thread are reported as [`Error::InvalidArgument`].
    pub fn start(config: EngineConfig) -> Result<(Engine, ModelInfo)> {
        let (commands, receiver) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        let snapshot = Arc::new(Mutex::new(None));
        let alive = Arc::new(AtomicBool::new(true));
        let thread_snapshot = Arc::clone(&snapshot);
        let guard = AliveGuard(Arc::clone(&alive));
        std::thread::Builder::new()
            .name("mlx-engine".into())
            .spawn(move || {
                let _guard = guard;
                let scheduler = match load_scheduler(&config) {
                    Ok((scheduler, info)) => {
                        let _ = ready_tx.send(Ok(info));
                        scheduler
                    }
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                };
                let stream = match mlx_rs::Stream::new(config.load.device) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!("cannot create the engine's MLX stream: {e}");
                        return;
                    }
                };
                mlx_rs::with_stream(&stream, || {
                    EngineLoop::new(scheduler, thread_snapshot, config.idle_release).run(receiver)
                });
            })
            .map_err(|e| Error::InvalidArgument(format!("cannot start the engine thread: {e}")))?;
        let info = ready_rx.recv().map_err(|_| {
            Error::InvalidArgument("the engine thread ended while loading the model".into())
        })??;
        let engine = Engine {
            commands,
            snapshot,
            alive,
            next_id: Arc::new(AtomicU64::new(1)),
        };
        Ok((engine, info))
    }

    /// A fresh request id.
    pub fn next_id(&self) -> SequenceId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Whether the engine thread is running.
    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::SeqCst)
    }

    /// Queues `request` as `id`; its events will arrive on `events`. Errors: the scheduler's
    /// refusal ([`Error::Busy`], [`Error::ContextOverflow`], [`Error::InvalidArgument`]), or
    /// [`Error::StepFailed`] when the engine thread is gone.
    pub async fn submit(
        &self,
        id: SequenceId,
        request: SequenceRequest,
        events: EventSender,
    ) -> Result<()> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Submit {
            id,
            request,
            events,
            reply,
        })?;
        answer.await.map_err(|_| gone())?
    }

    /// Ends `id` early with its summary (see [`Scheduler::stop`]); the summary arrives as its
    /// last event.
    pub fn stop(&self, id: SequenceId) {
        let _ = self.send(Command::Stop(id));
    }

    /// Drops `id` at once.
    pub fn cancel(&self, id: SequenceId) {
        let _ = self.send(Command::Cancel(id));
    }

    /// Drops the prefix cache and MLX's buffer cache (the weights stay).
    pub fn clear_cache(&self) {
        let _ = self.send(Command::ClearCache);
    }

    /// The figures of the engine's last round (`None` before the first).
    pub fn snapshot(&self) -> Option<EngineSnapshot> {
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn send(&self, command: Command) -> Result<()> {
        self.commands.send(command).map_err(|_| gone())
    }
}

fn gone() -> Error {
    Error::StepFailed("the engine thread has stopped".into())
}

/// Loads the model, wraps it to the tokenizer's vocabulary and builds the scheduler.
fn load_scheduler(config: &EngineConfig) -> Result<(Scheduler, ModelInfo)> {
    mlx_rs::Device::set_default(config.load.device)?;
    let mut loaded = load(&config.model, &config.load)?;
    if let Some(path) = &config.chat_template {
        let template = ChatTemplate::from_file(path)?;
        loaded.tokenizer = loaded.tokenizer.with_chat_template(template);
    }
    let context_length = config.context_length.unwrap_or_else(|| {
        mlx_models::load::budget::budget_context(&loaded.config, config.load.context_length)
    });
    let info = ModelInfo {
        tokenizer: Arc::new(loaded.tokenizer.clone()),
        config: loaded.config.clone(),
        generation: loaded.generation_config.clone(),
        eos_token_ids: loaded.eos_token_ids.clone(),
        context_length,
        source: loaded.source.clone(),
        dtype: config.load.compute_dtype().to_string(),
        parameter_count: loaded.parameter_count,
    };
    let model = VocabLimited::wrap(loaded.model, loaded.tokenizer.vocab_size());
    let scheduler = Scheduler::new(
        model,
        loaded.eos_token_ids,
        context_length,
        config.scheduler,
    );
    Ok((scheduler, info))
}

/// The engine thread's state.
struct EngineLoop {
    scheduler: Scheduler,
    routes: HashMap<SequenceId, EventSender>,
    snapshot: Arc<Mutex<Option<EngineSnapshot>>>,
    idle_release: Option<Duration>,
}

impl EngineLoop {
    fn new(
        scheduler: Scheduler,
        snapshot: Arc<Mutex<Option<EngineSnapshot>>>,
        idle_release: Option<Duration>,
    ) -> EngineLoop {
        EngineLoop {
            scheduler,
            routes: HashMap::new(),
            snapshot,
            idle_release,
        }
    }

    /// Runs until every [`Engine`] handle is dropped.
    fn run(mut self, commands: mpsc::Receiver<Command>) {
        self.publish();
        // Whether memory was handed back since the last step or command (a command can free
        // memory with nothing to run: a cancel, or an unload that drops the prefix cache; the
        // next idle spell then hands that back too).
        let mut released = false;
        loop {
            if self.scheduler.is_idle() {
                let command = match self.idle_release.filter(|_| !released) {
                    Some(after) => match commands.recv_timeout(after) {
                        Ok(c) => c,
                        Err(mpsc::RecvTimeoutError::Timeout) => {
                            self.release_memory();
                            released = true;
                            continue;
                        }
                        Err(mpsc::RecvTimeoutError::Disconnected) => return,
                    },
                    None => match commands.recv() {
                        Ok(c) => c,
                        Err(_) => return,
                    },
                };
                self.handle(command);
                released = false;
            }
            loop {
                match commands.try_recv() {
                    Ok(c) => {
                        self.handle(c);
                        released = false;
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                    Err(mpsc::TryRecvError::Disconnected) => return,
                }
            }
            if !self.scheduler.is_idle() {
                self.step();
                released = false;
            }
            self.publish();
        }
    }

    fn handle(&mut self, command: Command) {
        match command {
            Command::Submit {
                id,
                request,
                events,
                reply,
            } => {
                let result = self.scheduler.submit(id, request);
                if result.is_ok() {
                    self.routes.insert(id, events);
                }
                if reply.send(result).is_err() {
                    // The handler is gone already.
                    self.drop_sequence(id);
                }
            }
            Command::Stop(id) => {
                if let Some(summary) = self.scheduler.stop(id) {
                    self.publish();
                    self.route(id, SequenceEvent::Finished(summary));
                } else {
                    self.routes.remove(&id);
                }
            }
            Command::Cancel(id) => self.drop_sequence(id),
            Command::ClearCache => {
                if let Err(e) = self.scheduler.clear_prefix_cache() {
                    tracing::warn!("clearing the prefix cache failed: {e}");
                }
            }
        }
    }

    /// Hands freed memory back to the system (the engine is idle).
    fn release_memory(&self) {
        match mlx_rs::memory::release_to_system() {
            Ok(cached) => tracing::debug!(mlx_cache_bytes = cached, "idle: memory released"),
            Err(e) => tracing::warn!("releasing memory failed: {e}"),
        }
        self.publish();
    }

    fn drop_sequence(&mut self, id: SequenceId) {
        self.scheduler.cancel(id);
        self.routes.remove(&id);
    }

    /// One scheduler round, its events routed.
    fn step(&mut self) {
        match self.scheduler.step() {
            Ok(events) => {
                // Before a request learns it has finished, the metrics count what finishing did
                // (its KV state in the prefix cache): a client that reads `/metrics` after its
                // reply sees it.
                self.publish();
                for (id, event) in events {
                    self.route(id, event);
                }
            }
            Err(e) => {
                // The scheduler says it cannot go on as it is: fail and drop everything.
                tracing::error!("scheduler step failed: {e}");
                let ids: Vec<SequenceId> = self.routes.keys().copied().collect();
                for id in ids {
                    self.route(id, SequenceEvent::Failed(Error::StepFailed(e.to_string())));
                    self.scheduler.cancel(id);
                }
            }
        }
    }

    /// Sends `event` to its request; a closed receiver cancels the sequence.
    fn route(&mut self, id: SequenceId, event: SequenceEvent) {
        let last = !matches!(event, SequenceEvent::Token(_));
        let delivered = self
            .routes
            .get(&id)
            .is_some_and(|tx| tx.send(event).is_ok());
        if !delivered {
            self.drop_sequence(id);
        } else if last {
            self.routes.remove(&id);
        }
    }

    fn publish(&self) {
        let memory = |f: fn() -> mlx_rs::Result<usize>| f().unwrap_or(0);
        let snapshot = EngineSnapshot {
            stats: self.scheduler.stats(),
            active_memory: memory(mlx_rs::memory::active_memory),
            peak_memory: memory(mlx_rs::memory::peak_memory),
            cache_memory: memory(mlx_rs::memory::cache_memory),
        };
        *self.snapshot.lock().unwrap_or_else(|e| e.into_inner()) = Some(snapshot);
    }
}
