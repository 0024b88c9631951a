//! The HTTP server of Memberspot Hub, in front of the gateway in `memberspot-hub`: the
//! REST API (documented by the OpenAPI document at `/openapi.json`), MCP over streamable
//! HTTP at `/mcp` and over stdio, health, readiness and metrics.
//!
//! [`App`] assembles and runs it; events, flows and chat join through [`Plugin`] and use
//! the shared extractors in [`http`] (admin and persona authentication, JSON bodies, query
//! times, the error shape).

mod app;
pub mod exposure;
pub mod http;
pub mod mcp;
pub mod mcp_guard;
mod plugin;
pub mod public_url;
pub mod request;
pub mod retention;
mod server;

pub use app::App;
pub use plugin::{Plugin, spawn_periodic};
pub use request::{ClientAddr, ProxyHeader, RequestId, TrustedProxies};
pub use server::ServerSettings;
