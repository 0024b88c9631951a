//! Events for Memberspot Hub.
//!
//! - [`receiver`]: the `/hooks/{source}` HTTP receivers. A delivery is verified over its raw
//!   bytes, stored with the events it carries, and only then acknowledged.
//! - [`worker`]: takes events off the store's queue and applies the [`rules`] to them through
//!   the tool catalogue, as one persona per source, with retries and dead letters.
//! - [`access`]: the pure decision "given this order's stored state and this event, what
//!   changes" — the reason late or repeated deliveries never undo newer facts.
//! - [`poller`]: change detection over a school for events Memberspot cannot send.
//! - [`plugin`]: events served by `memberspot serve` (receivers, routes, background tasks).
//!
//! Everything shares one event store, so flows consume a single stream.

pub mod access;
pub mod config;
pub mod offers;
pub mod plugin;
pub mod poller;
pub mod postback;
pub mod receiver;
pub mod rest;
pub mod service;
pub mod stripe_lookup;
pub mod worker;

pub use config::{ConfigError, EventsConfig};
pub use plugin::EventsPlugin;
pub use service::{Events, replay_event};
