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
