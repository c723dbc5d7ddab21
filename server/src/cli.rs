//! The `mlx-server` command line: flags, model loading, listening.

use crate::engine::{Engine, EngineConfig};
use crate::model::ServedModel;
use crate::state::AppState;
use clap::Parser;
use mlx_models::cli::LoadArgs;
use mlx_models::runtime::scheduler::SchedulerOptions;
#[cfg(test)]
use std::time::Duration;

/// OpenAI- and Ollama-compatible HTTP server for one MLX model.
#[derive(Debug, Clone, Parser)]
#[command(name = "mlx-server", version, about)]
pub struct ServerArgs {
    /// Hugging Face repo id, local model folder, or .gguf file.
    #[arg(long)]
    pub model: String,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on.
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Require `Authorization: Bearer <KEY>` on every endpoint but /health.
    #[arg(long, env = "MLX_SERVER_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// The model's id in listings and responses (default: derived from --model).
    #[arg(long)]
    pub served_model_name: Option<String>,
    /// Another name requests may use for the model (repeatable).
    #[arg(long = "alias")]
    pub aliases: Vec<String>,
    /// Context length served, prompt plus generated tokens of one request (default: the
    /// model's, at most 8192).
    #[arg(long, value_name = "TOKENS")]
    pub ctx_size: Option<usize>,
    /// Sequences decoded together at most.
    #[arg(long, default_value_t = 16)]
    pub max_batch: usize,
    /// Requests waiting at most; more are refused with 503 and Retry-After.
    #[arg(long, default_value_t = 64)]
    pub max_waiting: usize,
    /// Prompt tokens per prefill forward pass.
    #[arg(long, default_value_t = mlx_models::runtime::engine::DEFAULT_PREFILL_CHUNK)]
    pub prefill_chunk: usize,
    /// Memory for KV states kept for prefix reuse, in MiB (0 turns reuse off).
    #[arg(long, value_name = "MIB", default_value_t = 1024)]
    pub prefix_cache_mib: usize,
    /// How to load the model (the examples' flags).
    #[command(flatten)]
    pub load: LoadArgs,
    /// Seconds of silence after which a streamed OpenAI answer sends an SSE keep-alive comment
    /// (while it waits in the queue or its prompt is prefilled); 0 turns them off.
    #[arg(long, value_name = "SECONDS", default_value_t = crate::streaming::DEFAULT_SSE_KEEP_ALIVE.as_secs_f64())]
    pub sse_keep_alive: f64,
    /// Seconds with no request to run after which the server hands freed memory back to the
    /// system (MLX's buffer cache, the C heap's free pages), once per idle spell; 0: never.
    #[arg(long, value_name = "SECONDS", default_value_t = crate::engine::DEFAULT_IDLE_RELEASE.as_secs_f64())]
    pub idle_release: f64,
}

/// A flag of seconds as a duration, `None` for 0. Errors: a negative or not finite value.
fn seconds_flag(flag: &str, seconds: f64) -> Result<Option<std::time::Duration>, StartError> {
    let every = std::time::Duration::try_from_secs_f64(seconds).map_err(|_| {
        StartError::Flag(format!(
            "{flag} must be 0 or a positive number of seconds, got {seconds}"
        ))
    })?;
    Ok(Some(every).filter(|d| !d.is_zero()))
}

/// A failure before the server listens.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// MLX failed.
    #[error(transparent)]
    Mlx(#[from] mlx_rs::Error),
    /// Loading the model failed.
    #[error(transparent)]
    Model(#[from] mlx_models::Error),
    /// A flag's value is out of range.
    #[error("{0}")]
    Flag(String),
    /// Binding or serving failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

impl ServerArgs {
    /// The engine configuration the flags describe (with load progress bars when stderr is a
    /// terminal).
    pub fn engine_config(&self) -> Result<EngineConfig, StartError> {
        Ok(EngineConfig {
            model: self.model.clone(),
            load: self.load.load_options(self.ctx_size)?,
            scheduler: SchedulerOptions {
                max_batch: self.max_batch,
                max_waiting: self.max_waiting,
                prefill_chunk: self.prefill_chunk,
                prefix_cache_bytes: self.prefix_cache_mib.saturating_mul(1 << 20),
            },
            context_length: self.ctx_size,
            chat_template: self.load.chat_template.clone(),
            idle_release: seconds_flag("--idle-release", self.idle_release)?,
        })
    }

    /// `--sse-keep-alive` as a duration (`None` for 0). Errors: a negative or not finite value.
    pub fn keep_alive(&self) -> Result<Option<std::time::Duration>, StartError> {
        seconds_flag("--sse-keep-alive", self.sse_keep_alive)
    }

    /// Loads the model (on the engine thread) and returns the server's state.
    pub fn start_state(&self) -> Result<AppState, StartError> {
        let keep_alive = self.keep_alive()?;
        let (engine, info) = Engine::start(self.engine_config()?)?;
        let model = ServedModel::new(
            &self.model,
            self.served_model_name.clone(),
            self.aliases.clone(),
            info,
        );
        Ok(AppState::new(engine, model, self.api_key.clone()).with_sse_keep_alive(keep_alive))
    }

    /// Loads the model, listens and serves until Ctrl-C.
    pub async fn run(self) -> Result<(), StartError> {
        tracing::info!(model = %self.model, "loading");
        let started = std::time::Instant::now();
        let args = self.clone();
        let state = tokio::task::spawn_blocking(move || args.start_state())
            .await
            .map_err(|e| StartError::Io(std::io::Error::other(e)))??;
        let listener = tokio::net::TcpListener::bind((self.host.as_str(), self.port)).await?;
        tracing::info!(
            model = %state.model().id,
            source = %state.model().info.source,
            context = state.model().info.context_length,
            load_s = started.elapsed().as_secs_f64(),
            address = %listener.local_addr()?,
            auth = state.api_key().is_some(),
            "listening"
        );
        crate::serve(listener, state).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> ServerArgs {
        let mut argv = vec!["mlx-server", "--model", "m.gguf"];
        argv.extend_from_slice(extra);
        ServerArgs::try_parse_from(argv).unwrap()
    }

    #[test]
    fn sse_keep_alive_flag() {
        assert_eq!(
            args(&[]).keep_alive().unwrap(),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            args(&["--sse-keep-alive", "0.25"]).keep_alive().unwrap(),
            Some(Duration::from_millis(250))
        );
        assert_eq!(args(&["--sse-keep-alive", "0"]).keep_alive().unwrap(), None);
        for bad in [
            "--sse-keep-alive=-1",
            "--sse-keep-alive=nan",
            "--sse-keep-alive=inf",
        ] {
            let err = args(&[bad]).keep_alive().unwrap_err();
            assert!(matches!(err, StartError::Flag(_)), "{bad}: {err}");
        }
        assert!(ServerArgs::try_parse_from([
            "mlx-server",
            "--model",
            "m",
            "--sse-keep-alive",
            "x"
        ])
        .is_err());
    }

    #[test]
    fn idle_release_flag() {
        let release = |extra: &[&str]| args(extra).engine_config().map(|c| c.idle_release);
        assert_eq!(release(&[]).unwrap(), Some(Duration::from_secs(2)));
        assert_eq!(
            release(&["--idle-release", "0.5"]).unwrap(),
            Some(Duration::from_millis(500))
        );
        assert_eq!(release(&["--idle-release", "0"]).unwrap(), None);
        let err = release(&["--idle-release=-3"]).unwrap_err();
        assert!(err.to_string().contains("--idle-release"), "{err}");
    }
}
