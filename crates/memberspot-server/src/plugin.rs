//! How events, flows and chat join the server: each is a [`Plugin`] handed to
//! [`crate::App::build`].

use std::net::SocketAddr;

use axum::Router;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// A part of the product served with the gateway: routes, background tasks and its lines
/// in the startup summary. Every method but [`Plugin::name`] has a default, so a plug-in
/// states only what it has.
pub trait Plugin: Send + Sync {
    /// Names the plug-in in logs (a task that does not stop, a panic).
    fn name(&self) -> &str;

    /// Documented REST routes and their OpenAPI document, merged into the REST API and
    /// `/openapi.json`: the API's body limit, request time-out and error shape apply. Use
    /// the shared extractors in [`crate::http`] (admin or persona authentication, JSON
    /// bodies, query times, [`crate::http::HttpError`]).
    fn routes(&self) -> Option<(Router, utoipa::openapi::OpenApi)> {
        None
    }

    /// Undocumented routes outside the REST API that read their bodies themselves and
    /// answer in the shape their callers expect (the webhook receivers). Only the request
    /// time-out and the body read time-out apply.
    fn raw_routes(&self) -> Option<Router> {
        None
    }

    /// Routes that carry credentials from browsers or providers (sign-in forms, OAuth,
    /// signed webhook deliveries), as shown to people (`/hooks/*`): `serve` refuses to
    /// answer them over plain HTTP off loopback (see [`crate::exposure`]).
    fn needs_https(&self) -> Vec<String> {
        Vec::new()
    }

    /// Starts the background tasks. Each must end soon after `cancel` is cancelled: the
    /// app waits for every one on shutdown.
    fn spawn(&self, cancel: CancellationToken) -> Vec<JoinHandle<()>> {
        let _ = cancel;
        Vec::new()
    }

    /// Lines for the startup summary; `addr` is where the app listens.
    fn summary(&self, addr: SocketAddr) -> Vec<String> {
        let _ = addr;
        Vec::new()
    }
}

/// A background task that runs `job` now and then every `period` until `cancel`, for a
/// plug-in's housekeeping (purging ended sessions, tokens, old records). A failed round
/// is logged and tried again next period.
pub fn spawn_periodic<F, Fut, E>(
    what: &'static str,
    period: std::time::Duration,
    cancel: CancellationToken,
    job: F,
) -> JoinHandle<()>
where
    F: Fn() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), E>> + Send,
    E: std::fmt::Display,
{
    tokio::spawn(async move {
        let mut every = tokio::time::interval(period);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = cancel.cancelled() => return,
                _ = every.tick() => {
                    if let Err(e) = job().await {
                        tracing::warn!(error = %e, "{what} failed; will retry");
                    }
                }
            }
        }
    })
}
