//! [`App`]: everything `memberspot serve` runs — the HTTP application (REST, `/mcp`,
//! operations routes, the plug-ins' routes) and the plug-ins' background tasks — started
//! together and stopped together.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use memberspot_hub::Hub;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::timeout::{RequestBodyTimeoutLayer, TimeoutLayer};

use crate::plugin::Plugin;
use crate::server::ServerSettings;

/// How long shutdown waits, in all, for background tasks to stop before it ends them.
const TASK_GRACE: Duration = Duration::from_secs(10);

/// The gateway served over HTTP, with its plug-ins.
pub struct App {
    hub: Hub,
    settings: ServerSettings,
    plugins: Vec<Box<dyn Plugin>>,
}

impl App {
    pub fn build(hub: Hub, settings: ServerSettings, plugins: Vec<Box<dyn Plugin>>) -> App {
        App {
            hub,
            settings,
            plugins,
        }
    }

    /// The HTTP application: REST with the plug-ins' routes and one OpenAPI document,
    /// health, metrics, MCP at `/mcp` and the plug-ins' raw routes. Cancelling `cancel`
    /// ends the open MCP sessions.
    pub fn router(&self, cancel: &CancellationToken) -> Router {
        let settings = &self.settings;
        let mut front = crate::mcp::http_router(self.hub.clone(), settings, cancel.clone());
        // MCP and the raw routes first: the REST app's fallback answers every other path.
        for raw in self.plugins.iter().filter_map(|p| p.raw_routes()) {
            // The raw routes get the request time-out too (REST and MCP have their own).
            front = front.merge(raw.layer(TimeoutLayer::with_status_code(
                StatusCode::SERVICE_UNAVAILABLE,
                settings.request_timeout,
            )));
        }
        let documented = self.plugins.iter().filter_map(|p| p.routes()).collect();
        front
            .merge(crate::http::rest_app(
                self.hub.clone(),
                settings.request_timeout,
                settings.ready_checks_schools,
                documented,
            ))
            // A body that stops arriving fails its read instead of holding the request.
            .layer(RequestBodyTimeoutLayer::new(settings.body_read_timeout))
            // Outermost: every route sees the client's address and the request id, and
            // every answer (errors from the layers above too) carries the id.
            .layer(axum::middleware::from_fn_with_state(
                Arc::new(settings.trusted_proxies.clone()),
                crate::request::request_context,
            ))
    }

    /// Refuses to serve the plug-ins' credential-carrying routes (sign-in, OAuth, webhook
    /// receivers) over plain HTTP on a non-loopback `listen`, unless `public_url` is
    /// `https://` (a proxy terminates TLS in front) or `insecure_http` is set.
    pub fn check_exposure(
        &self,
        listen: SocketAddr,
        public_url: Option<&url::Url>,
        insecure_http: bool,
    ) -> Result<(), crate::exposure::InsecureExposure> {
        let sensitive: Vec<String> = self.plugins.iter().flat_map(|p| p.needs_https()).collect();
        crate::exposure::check(listen, public_url, insecure_http, &sensitive)
    }

    /// What `serve` prints when it starts: where each surface answers, then each
    /// plug-in's lines.
    pub fn summary(&self, addr: SocketAddr) -> Vec<String> {
        let mut lines = vec![
            format!("memberspot hub listening on http://{addr}"),
            format!(
                "  REST    http://{addr}/v1/tools        (OpenAPI: http://{addr}/openapi.json)"
            ),
            format!(
                "  MCP     http://{addr}/mcp             (streamable HTTP: a persona token, or OAuth sign-in)"
            ),
            format!("  health  http://{addr}/healthz  /readyz  /metrics"),
        ];
        let proxies = &self.settings.trusted_proxies;
        if !proxies.is_empty() {
            lines.push(format!(
                "  proxies {} trusted to name the client ({})",
                proxies.ranges().join(", "),
                proxies.header().name()
            ));
        }
        for p in &self.plugins {
            lines.extend(p.summary(addr));
        }
        lines
    }

    /// Starts the plug-ins' background tasks and serves on `listener` until `cancel` is
    /// cancelled, which tells the tasks to stop too; then lets open connections finish
    /// (up to 30 s) and waits for every task.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        cancel: CancellationToken,
    ) -> std::io::Result<()> {
        // Routes first: merging them fails loudly on a clash, before any task runs.
        let router = self.router(&cancel);
        let tasks = cancel.child_token();
        let mut running = Vec::new();
        for p in &self.plugins {
            for handle in p.spawn(tasks.clone()) {
                running.push((p.name().to_owned(), handle));
            }
        }
        let served = crate::server::serve(listener, router, &self.settings, cancel).await;
        // The tasks' token is a child of `cancel`; this also stops them when the loop ended
        // on its own.
        tasks.cancel();
        join(running).await;
        served
    }

    /// [`App::serve`] until the process receives SIGINT or SIGTERM.
    pub async fn serve_until_signal(
        self,
        listener: tokio::net::TcpListener,
    ) -> std::io::Result<()> {
        let cancel = CancellationToken::new();
        let serving = self.serve(listener, cancel.clone());
        let mut serving = std::pin::pin!(serving);
        tokio::select! {
            r = serving.as_mut() => return r,
            _ = shutdown_signal() => {}
        }
        tracing::info!("shutting down: finishing in-flight calls");
        cancel.cancel();
        serving.await
    }
}

/// Waits for every task, within [`TASK_GRACE`] in all; a task still running then is
/// ended (an event worker re-checks an interrupted event on the next start).
async fn join(tasks: Vec<(String, JoinHandle<()>)>) {
    let deadline = tokio::time::Instant::now() + TASK_GRACE;
    for (plugin, mut task) in tasks {
        match tokio::time::timeout_at(deadline, &mut task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.is_panic() => {
                tracing::error!(plugin, "a background task panicked");
            }
            Ok(Err(_)) => {}
            Err(_) => {
                tracing::warn!(plugin, "a background task did not stop in time; ending it");
                task.abort();
                let _ = task.await;
            }
        }
    }
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = match signal(SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}
