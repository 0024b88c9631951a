//! Flows for Memberspot Hub: work the hub does on its own, as personas.
//!
//! - [`config`]: `flows.toml` — the daily summary, delivery targets, user flows.
//! - [`error`]: [`FlowsError`], why a sync, export, model question or delivery failed.
//! - [`digest`]: the daily summary of a school's day, from the hub's records.
//! - [`schedule`]: cron expressions in a time zone, and which fires are due.
//! - [`template`]: minijinja templates over a run's context.
//! - [`sync`]: records from another app into the school, writing only differences.
//! - [`export`]: members and their access out to a file or another app, incrementally.
//! - [`personas`]: acting as the personas flows create; a revoked one stops what runs as it.
//! - [`plugin`]: flows served by `memberspot serve` (routes, scheduler, triggers).

pub mod alerts;
pub mod config;
pub mod digest;
pub mod error;
pub mod export;
pub mod personas;
pub mod plugin;
pub mod rest;
pub mod runner;
pub mod schedule;
pub mod service;
pub mod sync;
pub mod template;

pub use config::FlowsConfig;
pub use error::FlowsError;
pub use plugin::FlowsPlugin;
pub use service::Flows;
