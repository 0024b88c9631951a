//! Slack against a local axum stand-in for hooks.slack.com, e-mail against a local SMTP
//! responder: real HTTP and real SMTP conversations, no network beyond 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod email;
mod slack;
mod smtp_server;
mod vectors;
