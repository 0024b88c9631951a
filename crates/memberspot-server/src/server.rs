//! The server loop of `memberspot serve` and its settings.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use crate::mcp_guard::SessionLimits;
use crate::request::TrustedProxies;

/// Limits and exposure of the HTTP server (`memberspot serve`'s flags).
#[derive(Debug, Clone)]
pub struct ServerSettings {
    /// Time to answer a request (every route: REST, `/mcp`, the webhook receivers).
    pub request_timeout: Duration,
    /// Time a client has to send a request's headers; then the connection is closed.
    pub header_read_timeout: Duration,
    /// Longest pause while a request body arrives; then the request is refused.
    pub body_read_timeout: Duration,
    /// Connections served at once; further ones wait in the listen queue.
    pub max_connections: usize,
    /// `Host` headers `/mcp` accepts besides loopback.
    pub allowed_hosts: Vec<String>,
    /// Browser origins `/mcp` accepts besides loopback (`https://app.example.com[:port|:*]`).
    pub allowed_origins: Vec<String>,
    pub mcp_sessions: SessionLimits,
    /// Where clients reach the hub (`--public-url`): the OAuth issuer and the `/mcp`
    /// resource URL tokens are bound to. Without it only loopback requests can use OAuth.
    pub public_url: Option<url::Url>,
    /// The OAuth endpoints are served, so a `401` from `/mcp` points to them.
    pub oauth: bool,
    /// `/readyz` also checks that every school accepts its key (at most every 30 s).
    pub ready_checks_schools: bool,
    /// Reverse proxies whose forwarding header names the client (rate limits, logs).
    pub trusted_proxies: TrustedProxies,
}

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            request_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(10),
            max_connections: 512,
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            mcp_sessions: SessionLimits::default(),
            public_url: None,
            oauth: false,
            ready_checks_schools: false,
            trusted_proxies: TrustedProxies::default(),
        }
    }
}

/// Serves `app` on `listener` until `stop` is cancelled, then lets the open connections
/// finish (up to 30 s).
///
/// Unlike `axum::serve`, a client must send its request headers within
/// `header_read_timeout`, and at most `max_connections` connections are served at once:
/// the next one is accepted only when one closes (until then it waits in the kernel's
/// listen queue), so slow or idle clients cannot use up the process's file descriptors.
/// Nagle's algorithm is off on every connection: an MCP answer is streamed in several
/// small writes, and with Nagle on the last one waits for the client's delayed ACK.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    app: Router,
    settings: &ServerSettings,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let max = settings.max_connections.max(1);
    let slots = Arc::new(tokio::sync::Semaphore::new(max));
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(settings.header_read_timeout);
    let http = Arc::new(http);
    let mut full_logged = false;
    loop {
        if slots.available_permits() == 0 && !full_logged {
            tracing::warn!(
                max_connections = max,
                "connection limit reached; new connections wait until one closes"
            );
            full_logged = true;
        }
        let slot = tokio::select! {
            s = slots.clone().acquire_owned() => match s {
                Ok(s) => s,
                Err(_) => break,
            },
            _ = stop.cancelled() => break,
        };
        if slots.available_permits() > 0 {
            full_logged = false;
        }
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors or a connection reset before accept: go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "could not set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(
            app.clone()
                // The peer address as axum's `ConnectInfo`: `request::request_context`
                // resolves the client's address from it.
                .map_request(move |req: axum::http::Request<Incoming>| {
                    let mut req = req.map(Body::new);
                    req.extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    req
                }),
        );
        let http = http.clone();
        let stop = stop.clone();
        tokio::spawn(async move {
            let _slot = slot;
            let conn = http.serve_connection(TokioIo::new(tcp), service);
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::trace!(error = %e, "connection ended with an error");
                    }
                }
                _ = stop.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    // Every slot back means every connection closed.
    let drained = tokio::time::timeout(
        Duration::from_secs(30),
        slots.acquire_many(u32::try_from(max).unwrap_or(u32::MAX)),
    )
    .await;
    if drained.is_err() {
        tracing::warn!("connections still open 30 s after shutdown began; stopping anyway");
    }
    Ok(())
}
