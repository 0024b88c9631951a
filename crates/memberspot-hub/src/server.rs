//! The whole HTTP application of `memberspot serve`.

use std::time::Duration;

use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::Hub;

/// REST, OpenAPI, health, metrics and MCP at `/mcp`.
pub fn app(
    hub: Hub,
    request_timeout: Duration,
    extra_hosts: &[String],
    cancel: CancellationToken,
) -> Router {
    let mcp = crate::mcp::http_router(hub.clone(), extra_hosts, cancel);
    // MCP first: the REST app's fallback answers every other path.
    mcp.merge(crate::http::app(hub, request_timeout))
}
