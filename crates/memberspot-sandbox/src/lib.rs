//! Local emulator of the Memberspot REST API v1.
//!
//! Serves a deterministic, seeded school behind the same routes, status
//! codes and NestJS-style error bodies as the real API, with a per-key rate
//! limit, seeded fault injection, an adjustable clock, a request log and
//! optional persistence. See `/_sandbox/*` for the admin surface.
//!
//! ```no_run
//! # async fn demo() -> Result<(), memberspot_sandbox::SandboxError> {
//! let sandbox = memberspot_sandbox::Sandbox::start_local(Default::default()).await?;
//! println!("{} with key {}", sandbox.base_url(), sandbox.api_key());
//! sandbox.shutdown().await
//! # }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

mod config;
mod errors;
mod faults;
mod http;
mod persist;
mod ratelimit;
mod render;
mod request_log;
mod routes;
mod school;
mod seed;
mod state;
mod validate;

pub use config::{Faults, SHAPES_ENV, SandboxConfig, SeedSize, Shapes};
pub use routes::router;
pub use state::SandboxState;

/// How often dirty state is written to the state file at most.
const FLUSH_EVERY: Duration = Duration::from_millis(250);
/// How long a graceful shutdown may wait for open connections.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Why a sandbox could not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("I/O error on {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bad sandbox state file {path}: {message}")]
    BadStateFile { path: PathBuf, message: String },
    #[error("invalid sandbox configuration: {0}")]
    Config(String),
    #[error("could not bind the sandbox listener: {0}")]
    Bind(#[source] std::io::Error),
    #[error("sandbox server failed: {0}")]
    Server(#[source] std::io::Error),
    #[error("sandbox background task failed: {0}")]
    Task(String),
}

/// A running sandbox server.
pub struct Sandbox {
    state: SandboxState,
    addr: SocketAddr,
    server: Option<JoinHandle<Result<(), std::io::Error>>>,
    flusher: Option<JoinHandle<Result<(), SandboxError>>>,
}

impl Sandbox {
    /// Serves a sandbox on an already bound listener.
    pub async fn spawn(
        config: SandboxConfig,
        listener: TcpListener,
    ) -> Result<Sandbox, SandboxError> {
        let addr = listener.local_addr().map_err(SandboxError::Bind)?;
        let state = SandboxState::new(config)?;
        let app = router(state.clone());
        let signal_state = state.clone();
        let server = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { signal_state.shutting_down().await })
                .await
        });
        let flusher = state
            .inner
            .state_file
            .is_some()
            .then(|| tokio::spawn(flush_loop(state.clone())));
        tracing::info!(%addr, "memberspot sandbox listening");
        Ok(Sandbox {
            state,
            addr,
            server: Some(server),
            flusher,
        })
    }

    /// Binds `127.0.0.1:0` and serves a sandbox there.
    pub async fn start_local(config: SandboxConfig) -> Result<Sandbox, SandboxError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(SandboxError::Bind)?;
        Self::spawn(config, listener).await
    }

    /// `http://127.0.0.1:PORT/v1`
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.root_url())
    }

    /// `http://127.0.0.1:PORT`
    pub fn root_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn api_key(&self) -> &str {
        self.state.api_key()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The shared state, e.g. to read the sandbox clock.
    pub fn state(&self) -> &SandboxState {
        &self.state
    }

    /// Stops accepting requests, lets open ones finish (hanging fault
    /// timeouts are cut short) and writes the state file one last time.
    pub async fn shutdown(mut self) -> Result<(), SandboxError> {
        self.state.signal_shutdown();
        let mut result = Ok(());
        if let Some(mut server) = self.server.take() {
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => result = Err(SandboxError::Server(e)),
                Ok(Err(e)) => result = Err(SandboxError::Task(e.to_string())),
                Err(_) => {
                    tracing::warn!("sandbox connections did not close in time; aborting them");
                    server.abort();
                }
            }
        }
        if let Some(flusher) = self.flusher.take() {
            let flushed = flusher
                .await
                .unwrap_or_else(|e| Err(SandboxError::Task(e.to_string())));
            result = result.and(flushed);
        }
        // The flusher may have run before the last in-flight request finished.
        result.and(self.state.flush().await)
    }
}

impl Drop for Sandbox {
    /// A dropped sandbox stops serving; its flusher still writes the last state.
    fn drop(&mut self) {
        self.state.signal_shutdown();
    }
}

/// Writes dirty state at most every [`FLUSH_EVERY`]; a final write on shutdown.
async fn flush_loop(state: SandboxState) -> Result<(), SandboxError> {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = state.flush().await {
                    tracing::warn!("could not write the sandbox state file: {e}");
                }
            }
            _ = state.shutting_down() => return state.flush().await,
        }
    }
}
