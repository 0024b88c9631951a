//! Flows for Memberspot Hub: work the hub does on its own, as personas.
//!
//! - [`digest`]: the daily summary of a school's day, from the hub's records.
//! - [`schedule`]: cron expressions in a time zone, and which fires are due.

pub mod digest;
pub mod schedule;
