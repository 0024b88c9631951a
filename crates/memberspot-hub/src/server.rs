//! The whole HTTP application of `memberspot serve`.

use std::time::Duration;

use axum::Router;
use axum::serve::{ListenerExt, TapIo};
use tokio_util::sync::CancellationToken;

use crate::Hub;

/// REST, OpenAPI, health, metrics and MCP at `/mcp`.
pub fn app(
    hub: Hub,
    request_timeout: Duration,
    extra_hosts: &[String],
    cancel: CancellationToken,
) -> Router {
    app_with(hub, request_timeout, extra_hosts, cancel, Vec::new(), None)
}

/// [`app`] plus documented REST routes from other parts of the product (merged into the
/// OpenAPI document) and undocumented ones with their own limits (the webhook receivers).
pub fn app_with(
    hub: Hub,
    request_timeout: Duration,
    extra_hosts: &[String],
    cancel: CancellationToken,
    extra_rest: Vec<(Router, utoipa::openapi::OpenApi)>,
    raw: Option<Router>,
) -> Router {
    let mcp = crate::mcp::http_router(hub.clone(), extra_hosts, cancel);
    // MCP and the receivers first: the REST app's fallback answers every other path.
    let front = match raw {
        Some(r) => mcp.merge(r),
        None => mcp,
    };
    front.merge(crate::http::app_with(hub, request_timeout, extra_rest))
}

/// `listener` with Nagle's algorithm off on every accepted connection. An MCP
/// answer is streamed in several small writes; with Nagle on, the last one
/// waits for the client's delayed ACK (about 40 ms per call).
pub fn low_latency(
    listener: tokio::net::TcpListener,
) -> TapIo<tokio::net::TcpListener, fn(&mut tokio::net::TcpStream)> {
    fn no_delay(tcp: &mut tokio::net::TcpStream) {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
    }
    listener.tap_io(no_delay as fn(&mut tokio::net::TcpStream))
}
