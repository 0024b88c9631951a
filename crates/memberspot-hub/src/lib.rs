//! The gateway of Memberspot Hub: personas (AI agents) call the Memberspot tools on
//! connections whose API keys are encrypted at rest, within their scopes and limits, with
//! an audit record of every call. No transport lives here: REST and MCP are in
//! `memberspot-server`, the CLI in `memberspot-cli`.

pub mod admin;
mod audit_export;
mod audit_writer;
pub mod bootstrap;
pub mod config_file;
pub mod console;
mod directory;
mod error;
mod hub;
pub mod limits;
pub mod metrics;
pub mod oauth;
pub mod offer_names;
pub mod schools;
pub mod scopes;
pub mod secrets;
mod streams;
pub mod tokens;

pub use error::HubError;
pub use hub::{
    AUDIT_TEXT_CAP, CallContext, CallOutcome, EMBEDDED_BASE_URL, EmbeddedSandbox, Hub, Principal,
    SANDBOX_CONNECTION,
};
pub use memberspot_store as store;
/// Where a call came from (stored with its audit record).
pub use memberspot_store::Surface;
pub use streams::{ListOptions, PageHook};

/// This process's name in leases and run records (`host:pid:random`), so a stale lease
/// can be told from a live one.
pub fn worker_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "hub".into());
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}:{}:{}", std::process::id(), &random[..8])
}
